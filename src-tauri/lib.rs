//! Countersign desktop shell (Tauri v2): thin glue around the engine in `crates/core`.
//!
//! - `commands`: the window's commands, each a few lines calling `Engine`.
//! - `settings`: the settings view's commands (`countersign_core::admin`); each change
//!   is followed by [`reload`].
//! - `state`: the engine (swappable), the embedded server and the sync tasks' lifetime.
//! - [`bindings`]: the typed IPC surface; `ui/src/bindings.ts` is generated from it.
//!
//! On start the shell shows the window first, then opens the engine like the CLI does
//! (config file, or the embedded demo server when there is none; commands wait for
//! it), starts one sync task per backend, and forwards the
//! engine's change broadcast to the window as the `changed` event. A settings change
//! rebuilds all of that from the config ([`reload`]) without restarting the app.
//!
//! Native notifications (`countersign-notify`) start with the engine: their Open brings
//! the window forward and sends `open-action`; the tray (`tray`) shows the pending count.

mod audit;
mod commands;
mod history;
mod settings;
mod state;
mod tray;

use std::sync::Arc;

use countersign_core::api::ApiError;
use countersign_core::config::{self, Config, NotificationsConfig};
use countersign_core::model::ActionKey;
use countersign_core::shutdown;
use countersign_core::sync::Change;
use countersign_notify::{NotificationStatus, Notifier, OpenAction as OpenCallback, Settings};
use countersign_server::launch::{self, Embedded, Paths};
use serde::Serialize;
use tauri::Manager;
use tauri_specta::Event;

use state::{AppInfo, AppState, Current, Running};

/// Something changed in the store: re-read what is on screen.
#[derive(Debug, Clone, Serialize, specta::Type, tauri_specta::Event)]
pub struct Changed(pub Change);

/// Open this action: a notification's Open (or body click, or Deny without a default
/// reason). The window is already brought forward; it selects the action.
#[derive(Debug, Clone, Serialize, specta::Type, tauri_specta::Event)]
pub struct OpenAction {
    pub key: ActionKey,
}

/// Native notifications became available or unavailable.
#[derive(Debug, Clone, Serialize, specta::Type, tauri_specta::Event)]
pub struct NotificationStatusChanged(pub NotificationStatus);

/// The typed IPC surface: every command and event the window uses.
pub fn bindings() -> tauri_specta::Builder<tauri::Wry> {
    tauri_specta::Builder::<tauri::Wry>::new()
        .commands(tauri_specta::collect_commands![
            commands::inbox,
            commands::action_detail,
            commands::open_action,
            commands::decide,
            commands::open_in_browser,
            commands::app_info,
            commands::notification_status,
            // History view
            history::history_page,
            history::snapshot_versions,
            history::snapshot_diff,
            // Audit view
            audit::audit_status,
            audit::export_audit_csv,
            audit::key_info,
            audit::rotate_key,
            audit::copy_key_text,
            // Settings view
            settings::settings_view,
            settings::add_backend,
            settings::edit_backend,
            settings::test_backend,
            settings::remove_backend,
            settings::save_preferences,
        ])
        .events(tauri_specta::collect_events![
            Changed,
            OpenAction,
            NotificationStatusChanged
        ])
}

/// Where the generated TypeScript lives, relative to the repository root.
pub const BINDINGS_PATH: &str = "ui/src/bindings.ts";

/// Renders the TypeScript bindings (for the freshness test and the generator).
pub fn export_bindings(path: &std::path::Path) -> Result<(), String> {
    bindings()
        .export(
            specta_typescript::Typescript::default()
                .header("// Generated from the Rust types by `cargo test -p countersign-app --lib bindings`. Do not edit.\n/* eslint-disable */"),
            path,
        )
        .map_err(|e| e.to_string())
}

/// Build and run the Countersign desktop app; returns when the app exits.
///
/// # Panics
///
/// Panics if the Tauri runtime cannot start (no display, no webview): there is nothing
/// useful the app can do then, and the message says so.
pub fn run() {
    let bindings = bindings();
    tauri::Builder::default()
        .plugin(tauri_plugin_opener::init())
        .plugin(tauri_plugin_dialog::init())
        // Used from the shell only (copy_key_text); the page has no clipboard permission.
        .plugin(tauri_plugin_clipboard_manager::init())
        // Reopens the window where and as large as the person left it.
        .plugin(tauri_plugin_window_state::Builder::default().build())
        .invoke_handler(bindings.invoke_handler())
        .on_window_event(|window, event| {
            if let tauri::WindowEvent::CloseRequested { api, .. } = event {
                let to_tray = window
                    .try_state::<AppState>()
                    .is_some_and(|s| s.close_to_tray());
                // Only with a tray to come back from.
                if to_tray && tray::exists(window.app_handle()) {
                    api.prevent_close();
                    let _ = window.hide();
                }
            }
        })
        .setup(move |app| {
            bindings.mount_events(app);
            let paths = Paths::from_env();
            let config_path = paths.config.clone().or_else(config::default_config_path);
            app.manage(AppState::new(config_path));
            // The window exists already, but its page cannot load until `setup` returns
            // (the main loop serves its assets). Opening the store, the keyring and the
            // embedded demo server therefore runs beside the page's own start instead
            // of before it; commands wait for the engine (`AppState::running`).
            let app = app.handle().clone();
            tauri::async_runtime::spawn(async move { start_first_engine(app).await });
            Ok(())
        })
        .run(tauri::generate_context!())
        .expect("failed to start the Countersign window (is a display available?)");
}

/// Starts the engine the app opens with and its tray. Holds `reloading`, so a settings
/// change saved while it starts applies after it.
async fn start_first_engine(app: tauri::AppHandle) {
    let state = app.state::<AppState>();
    let _one_at_a_time = state.reloading.lock().await;
    let started = std::time::Instant::now();
    let current = start_engine(app.clone()).await;
    tracing::info!("engine started in {} ms", started.elapsed().as_millis());
    state.replace(current.clone());
    if let Current::Running(running) = current {
        // Tray icons are made on the main thread (GTK).
        let handle = app.clone();
        let built = app.run_on_main_thread(move || {
            // A desktop without a tray is no reason not to start.
            if let Err(e) = tray::build(&handle, &running) {
                tracing::warn!("no tray icon: {e}");
            }
        });
        if let Err(e) = built {
            tracing::warn!("no tray icon: {e}");
        }
    }
}

/// Opens the engine, starts syncing and forwards changes to the window. A failure is
/// kept as the app's state so the window can say what is wrong.
async fn start_engine(app: tauri::AppHandle) -> Current {
    let paths = Paths::from_env();
    let launched = match launch::open(&paths, Embedded::Demo, chrono::Utc::now()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot start the engine: {e}");
            return Current::Failed(ApiError::new(e.code(), e.to_string()));
        }
    };
    let engine = Arc::new(launched.engine);
    let (trigger, listener) = shutdown::channel();
    let notifications = notifications_config(&paths);
    let (settings, warnings) = Settings::from_config(&notifications);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let notifier = Notifier::spawn(
        engine.clone(),
        settings,
        open_callback(app.clone()),
        listener.clone(),
    );
    forward_notification_status(app.clone(), &notifier, listener.clone());
    engine.spawn_sync(&listener);
    forward_changes(app, &engine, listener);
    Current::Running(Arc::new(Running {
        info: AppInfo {
            approver: engine.approver().to_owned(),
            embedded: launched.embedded,
            data_dir: launched.data_dir.display().to_string(),
        },
        engine,
        notifier,
        close_to_tray: notifications.close_to_tray,
        server: std::sync::Mutex::new(launched.server),
        sync: trigger,
    }))
}

/// Sends the engine's changes to the window as `changed` until `shutdown`.
fn forward_changes(
    app: tauri::AppHandle,
    engine: &countersign_core::Engine,
    mut shutdown: shutdown::Shutdown,
) {
    let mut changes = engine.changes();
    tauri::async_runtime::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let change = tokio::select! {
                _ = shutdown.wait() => break,
                change = changes.recv() => change,
            };
            match change {
                Ok(change) => {
                    let _ = Changed(change).emit(&app);
                }
                // The window re-reads the store on any change, so a skipped one is harmless.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
    });
}

/// Rebuilds the engine from the config after a settings change, without restarting the
/// app: the new engine (same store file) starts syncing, takes the old one's place, the
/// old one's sync tasks, notifier and embedded server stop, the tray follows the new one
/// and the window gets `changed` to re-read everything. `changed_backend` names what
/// changed (it is the event's payload).
pub(crate) async fn reload(app: &tauri::AppHandle, changed_backend: &str) -> Result<(), ApiError> {
    let state = app.state::<AppState>();
    let _one_at_a_time = state.reloading.lock().await;
    let next = start_engine(app.clone()).await;
    let previous = state.replace(next.clone());
    if let Current::Running(old) = previous {
        old.stop().await;
    }
    match next {
        Current::Running(running) => {
            state.keep_pause(&running, chrono::Utc::now());
            tray::follow(app, &running);
            let _ = Changed(Change::Backend {
                name: changed_backend.to_owned(),
            })
            .emit(app);
            Ok(())
        }
        // The window shows this like a failed start; fixing the config and saving again
        // reloads once more.
        Current::Failed(e) => Err(e),
        // `start_engine` never returns it.
        Current::Starting => Err(ApiError::new("internal", "the engine did not start")),
    }
}

/// The `[notifications]` table; defaults without a config file. A config that does not
/// parse has already stopped the engine, so its error is not repeated here.
fn notifications_config(paths: &Paths) -> NotificationsConfig {
    let Some(path) = paths.config.clone().or_else(config::default_config_path) else {
        return NotificationsConfig::default();
    };
    match Config::load(&path) {
        Ok(Some(c)) => c.notifications,
        Ok(None) => NotificationsConfig::default(),
        Err(e) => {
            tracing::warn!("notifications use their defaults: {e}");
            NotificationsConfig::default()
        }
    }
}

/// A notification's Open: bring the window forward and have it select the action.
fn open_callback(app: tauri::AppHandle) -> OpenCallback {
    Arc::new(move |key: ActionKey| {
        tray::show_window(&app);
        let _ = OpenAction { key }.emit(&app);
    })
}

/// Tells the window (header) whenever notifications become (un)available.
fn forward_notification_status(
    app: tauri::AppHandle,
    notifier: &Notifier,
    mut shutdown: shutdown::Shutdown,
) {
    let mut status = notifier.status_changes();
    tauri::async_runtime::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                changed = status.changed() => if changed.is_err() { break },
            }
            let current = status.borrow_and_update().clone();
            let _ = NotificationStatusChanged(current).emit(&app);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Fails when `ui/src/bindings.ts` does not match the Rust types; set
    /// `COUNTERSIGN_WRITE_BINDINGS=1` to regenerate it.
    #[test]
    fn bindings_are_fresh() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let committed = root.join(super::BINDINGS_PATH);
        let fresh = tempfile::tempdir().unwrap().keep().join("bindings.ts");
        super::export_bindings(&fresh).unwrap();
        let fresh_text = std::fs::read_to_string(&fresh).unwrap();
        if std::env::var_os("COUNTERSIGN_WRITE_BINDINGS").is_some() {
            std::fs::write(&committed, &fresh_text).unwrap();
        }
        let committed_text = std::fs::read_to_string(&committed).unwrap_or_default();
        assert!(
            committed_text == fresh_text,
            "{} is stale: run `COUNTERSIGN_WRITE_BINDINGS=1 cargo test -p countersign-app --lib bindings`",
            super::BINDINGS_PATH
        );
    }
}
