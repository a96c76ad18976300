//! Build script for the Tauri shell.
//!
//! `tauri.conf.json` sits at the repository root (next to the package's
//! Cargo.toml), but the capability files live in `src-tauri/capabilities/`,
//! so point tauri-build at them explicitly. Only the capabilities listed in
//! `app.security.capabilities` of `tauri.conf.json` are active.

fn main() {
    // tauri-build does not watch a custom capabilities path by itself.
    println!("cargo:rerun-if-changed=src-tauri/capabilities");
    let attributes =
        tauri_build::Attributes::new().capabilities_path_pattern("./src-tauri/capabilities/**/*");
    tauri_build::try_build(attributes).expect("tauri-build failed (see the error above)");
}
