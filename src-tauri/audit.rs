//! Audit commands: the chain's status, exports, and the signing key.
//!
//! Verification walks every row and checks every signature, and the key lives in the
//! OS keyring (a D-Bus round trip), so these commands run on the blocking pool rather
//! than on the window's main thread.

use chrono::Utc;
use countersign_core::api::{ApiError, AuditExport, AuditRange, ChainStatus, Engine, KeyInfo};
use serde::Deserialize;
use std::sync::Arc;
use tauri::State;
use tauri_plugin_clipboard_manager::ClipboardExt;
use tauri_plugin_dialog::DialogExt;

use crate::state::AppState;

/// Runs `f` with the engine off the main thread.
async fn blocking<T: Send + 'static>(
    state: State<'_, AppState>,
    f: impl FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let engine: Arc<Engine> = state.engine().await?;
    tauri::async_runtime::spawn_blocking(move || f(&engine))
        .await
        .map_err(|e| ApiError::new("internal", e.to_string()))?
}

/// The chain re-walked now: verified up to its head, or the first row that breaks it.
#[tauri::command]
#[specta::specta]
pub async fn audit_status(state: State<'_, AppState>) -> Result<ChainStatus, ApiError> {
    blocking(state, |engine| Ok(engine.audit_status()?)).await
}

/// Exports the audit chain, or the part of it `range` picks, as CSV to where the
/// person says in the system's save dialog. The whole chain is verified and the
/// selection read before the dialog opens, so a broken chain or an empty range is
/// said at once instead of after choosing a file. `None` when the person cancelled.
///
/// A filtered export is an excerpt of the chain: `countersign verify --excerpt`
/// checks it (every row's hash and signature, the links between chain neighbours);
/// only a complete export can prove that nothing is missing (docs/audit-csv.md).
#[tauri::command]
#[specta::specta]
pub async fn export_audit_csv(
    app: tauri::AppHandle,
    state: State<'_, AppState>,
    range: AuditRange,
) -> Result<Option<AuditExport>, ApiError> {
    let suggested = suggested_name(&range);
    let selection = blocking(state, move |engine| Ok(engine.select_audit(&range)?)).await?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    app.dialog()
        .file()
        .set_title("Export the audit log")
        .add_filter("CSV", &["csv"])
        .set_file_name(suggested)
        .save_file(move |path| {
            let _ = tx.send(path);
        });
    let Some(path) = rx.await.ok().flatten() else {
        return Ok(None);
    };
    let path = path
        .into_path()
        .map_err(|e| ApiError::new("export_failed", e.to_string()))?;
    let written = tauri::async_runtime::spawn_blocking(move || selection.write_csv(&path))
        .await
        .map_err(|e| ApiError::new("internal", e.to_string()))??;
    Ok(Some(written))
}

/// `countersign-audit[-backend][-from][-to].csv`, from what was picked.
fn suggested_name(range: &AuditRange) -> String {
    let mut name = String::from("countersign-audit");
    if let Some(b) = &range.backend {
        // Backend names are the config's; keep the file name to safe characters.
        let safe: String = b
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        name.push('-');
        name.push_str(&safe);
    }
    // `to` is exclusive (the start of the day after the last one picked): name the
    // last day the file covers.
    let last = range.to.map(|t| t - chrono::Duration::seconds(1));
    for t in [range.from, last].into_iter().flatten() {
        name.push('-');
        name.push_str(&t.format("%Y%m%d").to_string());
    }
    name.push_str(".csv");
    name
}

/// The signing key's public half, fingerprint and `allowed_signers` line.
#[tauri::command]
#[specta::specta]
pub async fn key_info(state: State<'_, AppState>) -> Result<KeyInfo, ApiError> {
    blocking(state, |engine| Ok(engine.key_info()?)).await
}

/// Makes a new signing key (recorded in the chain, signed by the old one).
#[tauri::command]
#[specta::specta]
pub async fn rotate_key(state: State<'_, AppState>) -> Result<KeyInfo, ApiError> {
    blocking(state, |engine| Ok(engine.rotate_key(Utc::now())?)).await
}

/// Which part of the signing key a copy button copies.
#[derive(Debug, Clone, Copy, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum KeyText {
    Fingerprint,
    AllowedSigners,
}

/// Puts the current key's fingerprint or `allowed_signers` line on the clipboard and
/// returns what was copied. The shell writes it (through the clipboard plugin's Rust
/// side), so the page needs no clipboard permission and can copy nothing else.
#[tauri::command]
#[specta::specta]
pub async fn copy_key_text(
    app: tauri::AppHandle,
    state: State<'_, AppState>,
    what: KeyText,
) -> Result<String, ApiError> {
    let info = blocking(state, |engine| Ok(engine.key_info()?)).await?;
    let text = match what {
        KeyText::Fingerprint => info.fingerprint,
        KeyText::AllowedSigners => info.allowed_signers,
    };
    app.clipboard()
        .write_text(text.clone())
        .map_err(|e| ApiError::new("clipboard", e.to_string()))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_suggested_name_says_what_was_picked_in_safe_characters() {
        assert_eq!(
            suggested_name(&AuditRange::default()),
            "countersign-audit.csv"
        );
        let range = AuditRange {
            from: Some(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()),
            to: Some(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()),
            backend: Some("../prod west".into()),
        };
        assert_eq!(
            suggested_name(&range),
            "countersign-audit-___prod_west-20261101-20261130.csv"
        );
    }
}
