//! Build script for the Tauri shell.
//!
//! `tauri.conf.json` sits at the repository root, but the capability files live in
//! `src-tauri/capabilities/`. The app manifest lists the shell's own commands so that
//! each needs an explicit `allow-…` permission: a command the capability does not name
//! cannot be called from the window.

/// Every `#[tauri::command]` of the shell (commands.rs, history.rs, audit.rs, settings.rs).
const COMMANDS: &[&str] = &[
    "inbox",
    "action_detail",
    "open_action",
    "decide",
    "open_in_browser",
    "app_info",
    "notification_status",
    // history.rs
    "history_page",
    "snapshot_versions",
    "snapshot_diff",
    // audit.rs
    "audit_status",
    "export_audit_csv",
    "key_info",
    "rotate_key",
    "copy_key_text",
    // settings.rs
    "settings_view",
    "add_backend",
    "edit_backend",
    "test_backend",
    "remove_backend",
    "save_preferences",
];

fn main() {
    println!("cargo:rerun-if-changed=src-tauri/capabilities");
    let attributes = tauri_build::Attributes::new()
        .capabilities_path_pattern("./src-tauri/capabilities/**/*")
        .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS));
    tauri_build::try_build(attributes).expect("tauri-build failed (see the error above)");
}
