//! Countersign desktop shell (Tauri v2).
//!
//! This crate is deliberately thin: it only builds and runs the Tauri
//! application that hosts the frontend in `ui/`. The approval engine lives in
//! `crates/core` (`countersign-core`); the Tauri commands that expose it to the
//! window arrive in a later issue. Keep business logic out of this crate.

/// Build and run the Countersign desktop app.
///
/// Blocks until the last window is closed and the event loop exits.
///
/// # Panics
///
/// Panics if the Tauri runtime cannot be started (for example when no
/// display is available or the webview cannot be created); there is nothing
/// useful the app can do in that case.
pub fn run() {
    tauri::Builder::default()
        .run(tauri::generate_context!())
        .expect("failed to start the Countersign window (is a display available?)");
}
