//! The tray icon: how many actions wait, and Open / Pause notifications for 1 h / Quit.
//! Closing the window hides it here when `[notifications] close_to_tray` is on (the
//! default); see `lib.rs`. After a settings change the count follows the new engine.

use std::sync::Arc;

use countersign_core::Engine;
use tauri::menu::{Menu, MenuItem};
use tauri::tray::{MouseButton, MouseButtonState, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Manager};
use tokio::sync::broadcast::error::RecvError;

use crate::state::{AppState, Running};

pub const TRAY_ID: &str = "main";

/// Builds the tray icon and keeps its pending count current.
pub fn build(app: &AppHandle, running: &Running) -> tauri::Result<()> {
    let open = MenuItem::with_id(app, "open", "Open", true, None::<&str>)?;
    let pause = MenuItem::with_id(
        app,
        "pause",
        "Pause notifications for 1 h",
        true,
        None::<&str>,
    )?;
    let quit = MenuItem::with_id(app, "quit", "Quit", true, None::<&str>)?;
    let menu = Menu::with_items(app, &[&open, &pause, &quit])?;
    let mut tray = TrayIconBuilder::with_id(TRAY_ID)
        .menu(&menu)
        .tooltip("Countersign")
        .on_menu_event(|app, event| match event.id.as_ref() {
            "open" => show_window(app),
            "pause" => pause_notifications(app),
            "quit" => app.exit(0),
            _ => {}
        })
        .on_tray_icon_event(|tray, event| {
            // Where the platform reports clicks (not Linux appindicator): left opens.
            if let TrayIconEvent::Click {
                button: MouseButton::Left,
                button_state: MouseButtonState::Up,
                ..
            } = event
            {
                show_window(tray.app_handle());
            }
        });
    if let Some(icon) = app.default_window_icon() {
        tray = tray.icon(icon.clone());
    }
    tray.build(app)?;
    follow(app, running);
    Ok(())
}

/// Whether the tray exists (hiding the window without one would lose it).
pub fn exists(app: &AppHandle) -> bool {
    app.tray_by_id(TRAY_ID).is_some()
}

/// Shows, restores and focuses the main window.
pub fn show_window(app: &AppHandle) {
    if let Some(window) = app.get_webview_window("main") {
        let _ = window.show();
        let _ = window.unminimize();
        let _ = window.set_focus();
    }
}

fn pause_notifications(app: &AppHandle) {
    let until = chrono::Utc::now() + chrono::Duration::hours(1);
    app.state::<AppState>().pause_notifications(until);
    tracing::info!("notifications paused until {until}");
}

/// Re-counts pending actions on every change of `running`'s engine, until it stops
/// (a settings change replaces it, and this is called again with the new one).
pub fn follow(app: &AppHandle, running: &Running) {
    let app = app.clone();
    let engine: Arc<Engine> = running.engine.clone();
    let mut shutdown = running.shutdown_listener();
    let mut changes = engine.changes();
    tauri::async_runtime::spawn(async move {
        loop {
            show_count(&app, &engine);
            let change = tokio::select! {
                _ = shutdown.wait() => break,
                change = changes.recv() => change,
            };
            match change {
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
    });
}

fn show_count(app: &AppHandle, engine: &Engine) {
    let Some(tray) = app.tray_by_id(TRAY_ID) else {
        return;
    };
    let pending = match engine.pending(None) {
        Ok(actions) => actions.len(),
        Err(e) => {
            tracing::warn!("tray: cannot count pending actions: {e}");
            return;
        }
    };
    let (tooltip, title) = match pending {
        0 => ("Countersign: nothing waiting".to_owned(), None),
        n => (format!("Countersign: {n} pending"), Some(n.to_string())),
    };
    let _ = tray.set_tooltip(Some(tooltip));
    let _ = tray.set_title(title);
}
