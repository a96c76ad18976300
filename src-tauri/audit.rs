//! Audit commands: the chain's status and the signing key.

use chrono::Utc;
use countersign_core::api::{ApiError, KeyInfo};
use tauri::State;

use crate::state::AppState;

/// The signing key's public half, fingerprint and `allowed_signers` line.
#[tauri::command]
#[specta::specta]
pub fn key_info(state: State<'_, AppState>) -> Result<KeyInfo, ApiError> {
    Ok(state.engine()?.key_info()?)
}

/// Makes a new signing key (recorded in the chain, signed by the old one).
#[tauri::command]
#[specta::specta]
pub fn rotate_key(state: State<'_, AppState>) -> Result<KeyInfo, ApiError> {
    Ok(state.engine()?.rotate_key(Utc::now())?)
}
