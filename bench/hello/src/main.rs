//! A window showing one static page, nothing else: what any Tauri v2 app costs.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    if let Err(e) = tauri::Builder::default().run(tauri::generate_context!()) {
        eprintln!("hello: {e}");
        std::process::exit(1);
    }
}
