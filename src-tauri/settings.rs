//! Settings commands: backends (add, edit, test, remove), the approver and notification
//! preferences. Each is a call into `countersign_core::admin` (the logic the CLI's
//! `backend` commands share) followed, when the config changed, by [`crate::reload`], so
//! changes apply without restarting. Tokens go from the form straight to the OS keyring
//! and are never returned.

use countersign_core::admin::{
    self, AdminError, BackendInput, FieldError, Preferences, Removed, Saved, SettingsView,
    TestReport,
};
use countersign_core::api::ApiError;
use countersign_core::secrets::OsTokenStore;
use serde::Serialize;
use tauri::{AppHandle, State};
use zeroize::Zeroizing;

use crate::state::AppState;

/// A save either happened or was refused field by field (nothing written or stored).
#[derive(Debug, Clone, Serialize, specta::Type)]
pub struct SaveResult {
    pub saved: Option<Saved>,
    pub errors: Vec<FieldError>,
}

fn api_error(e: AdminError) -> ApiError {
    ApiError::new(e.code(), e.to_string())
}

/// Runs keyring and file work off the main thread (the keyring is a D-Bus round trip).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AdminError> + Send + 'static,
) -> Result<Result<T, AdminError>, ApiError> {
    tauri::async_runtime::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new("internal", e.to_string()))
}

/// A save's outcome; on success the engine is rebuilt from the new config.
async fn saved(app: &AppHandle, result: Result<Saved, AdminError>) -> Result<SaveResult, ApiError> {
    match result {
        Ok(saved) => {
            crate::reload(app, &saved.name).await?;
            Ok(SaveResult {
                saved: Some(saved),
                errors: Vec::new(),
            })
        }
        Err(AdminError::Invalid(errors)) => Ok(SaveResult {
            saved: None,
            errors,
        }),
        Err(e) => Err(api_error(e)),
    }
}

/// The config as it is on disk (backends, approver, notifications); never a token.
#[tauri::command]
#[specta::specta]
pub async fn settings_view(state: State<'_, AppState>) -> Result<SettingsView, ApiError> {
    let path = state.config_path()?;
    blocking(move || admin::settings(&path, &OsTokenStore::from_env()))
        .await?
        .map_err(api_error)
}

/// Adds a backend (creating the config file when the embedded demo ran); `token`, when
/// given, goes to the OS keyring.
#[tauri::command]
#[specta::specta]
pub async fn add_backend(
    app: AppHandle,
    state: State<'_, AppState>,
    input: BackendInput,
    token: Option<String>,
) -> Result<SaveResult, ApiError> {
    let path = state.config_path()?;
    let token = token.map(Zeroizing::new);
    let result = blocking(move || {
        admin::add_backend(
            &path,
            &input,
            token.as_deref().map(String::as_str),
            &OsTokenStore::from_env(),
        )
    })
    .await?;
    saved(&app, result).await
}

/// Changes an existing backend (name and kind stay); `token` replaces its keyring token.
#[tauri::command]
#[specta::specta]
pub async fn edit_backend(
    app: AppHandle,
    state: State<'_, AppState>,
    input: BackendInput,
    token: Option<String>,
) -> Result<SaveResult, ApiError> {
    let path = state.config_path()?;
    let token = token.map(Zeroizing::new);
    let result = blocking(move || {
        admin::edit_backend(
            &path,
            &input,
            token.as_deref().map(String::as_str),
            &OsTokenStore::from_env(),
        )
    })
    .await?;
    saved(&app, result).await
}

/// Connects, authenticates and lists once: the count or the error.
#[tauri::command]
#[specta::specta]
pub async fn test_backend(
    state: State<'_, AppState>,
    name: String,
) -> Result<TestReport, ApiError> {
    let path = state.config_path()?;
    admin::test_backend(&path, &name, &OsTokenStore::from_env())
        .await
        .map_err(api_error)
}

/// Removes a backend and its keyring token; its sync stops, its history stays.
#[tauri::command]
#[specta::specta]
pub async fn remove_backend(
    app: AppHandle,
    state: State<'_, AppState>,
    name: String,
) -> Result<Removed, ApiError> {
    let path = state.config_path()?;
    let removed = blocking(move || admin::remove_backend(&path, &name, &OsTokenStore::from_env()))
        .await?
        .map_err(api_error)?;
    crate::reload(&app, &removed.name).await?;
    Ok(removed)
}

/// Saves the approver and `[notifications]`; the engine and notifier restart with them.
#[tauri::command]
#[specta::specta]
pub async fn save_preferences(
    app: AppHandle,
    state: State<'_, AppState>,
    preferences: Preferences,
) -> Result<SaveResult, ApiError> {
    let path = state.config_path()?;
    match blocking(move || admin::save_preferences(&path, &preferences)).await? {
        Ok(written) => {
            if written {
                crate::reload(&app, "").await?;
            }
            Ok(SaveResult {
                saved: None,
                errors: Vec::new(),
            })
        }
        Err(AdminError::Invalid(errors)) => Ok(SaveResult {
            saved: None,
            errors,
        }),
        Err(e) => Err(api_error(e)),
    }
}
