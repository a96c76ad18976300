//! Countersign desktop shell (Tauri v2): thin glue around the engine in `crates/core`.
//!
//! - `commands`: the window's commands, each a few lines calling `Engine`.
//! - `state`: the engine, the embedded server and the sync tasks' lifetime.
//! - [`bindings`]: the typed IPC surface; `ui/src/bindings.ts` is generated from it.
//!
//! On start the shell opens the engine like the CLI does (config file, or the embedded
//! demo server when there is none), starts one sync task per backend, and forwards the
//! engine's change broadcast to the window as the `changed` event.

mod commands;
mod state;

use std::sync::Arc;

use countersign_core::api::ApiError;
use countersign_core::shutdown;
use countersign_core::sync::Change;
use countersign_server::launch::{self, Embedded, Paths};
use serde::Serialize;
use tauri::Manager;
use tauri_specta::Event;

use state::{AppInfo, AppState, Running};

/// Something changed in the store: re-read what is on screen.
#[derive(Debug, Clone, Serialize, specta::Type, tauri_specta::Event)]
pub struct Changed(pub Change);

/// The typed IPC surface: every command and event the window uses.
pub fn bindings() -> tauri_specta::Builder<tauri::Wry> {
    tauri_specta::Builder::<tauri::Wry>::new()
        .commands(tauri_specta::collect_commands![
            commands::inbox,
            commands::action_detail,
            commands::open_action,
            commands::decide,
            commands::open_in_browser,
            commands::export_audit,
            commands::app_info,
        ])
        .events(tauri_specta::collect_events![Changed])
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
        // Reopens the window where and as large as the person left it.
        .plugin(tauri_plugin_window_state::Builder::default().build())
        .invoke_handler(bindings.invoke_handler())
        .setup(move |app| {
            bindings.mount_events(app);
            let state = tauri::async_runtime::block_on(start_engine(app.handle().clone()));
            app.manage(state);
            Ok(())
        })
        .run(tauri::generate_context!())
        .expect("failed to start the Countersign window (is a display available?)");
}

/// Opens the engine, starts syncing and forwards changes to the window. A failure is
/// kept as the app's state so the window can say what is wrong.
async fn start_engine(app: tauri::AppHandle) -> AppState {
    let launched = match launch::open(&Paths::from_env(), Embedded::Demo, chrono::Utc::now()).await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot start the engine: {e}");
            return AppState::Failed(ApiError::new(e.code(), e.to_string()));
        }
    };
    let engine = Arc::new(launched.engine);
    let (trigger, listener) = shutdown::channel();
    engine.spawn_sync(&listener);
    let mut changes = engine.changes();
    tauri::async_runtime::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match changes.recv().await {
                Ok(change) => {
                    let _ = Changed(change).emit(&app);
                }
                // The window re-reads the store on any change, so a skipped one is harmless.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
    });
    AppState::Running(Running {
        info: AppInfo {
            approver: engine.approver().to_owned(),
            embedded: launched.embedded,
            data_dir: launched.data_dir.display().to_string(),
        },
        engine,
        _server: launched.server,
        _sync: trigger,
    })
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
