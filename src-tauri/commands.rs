//! The window's commands: each one a call into the engine. DTOs and errors come from
//! `countersign_core::api`; nothing here decides anything.

use chrono::Utc;
use countersign_core::api::{ActionDetail, ApiError, DecisionInput, InboxView};
use countersign_core::decide::DecisionReport;
use countersign_core::model::ActionKey;
use tauri::State;
use tauri_plugin_opener::OpenerExt;

use crate::state::{AppInfo, AppState};

/// Pending actions and backend health.
#[tauri::command]
#[specta::specta]
pub async fn inbox(state: State<'_, AppState>) -> Result<InboxView, ApiError> {
    Ok(state.engine().await?.inbox(Utc::now())?)
}

/// One action with its timeline and decisions (no side effect: for refreshes).
#[tauri::command]
#[specta::specta]
pub async fn action_detail(
    state: State<'_, AppState>,
    key: ActionKey,
) -> Result<ActionDetail, ApiError> {
    Ok(state.engine().await?.detail(&key)?)
}

/// The person opened an action: record a local "viewed" event, then return it.
#[tauri::command]
#[specta::specta]
pub async fn open_action(
    state: State<'_, AppState>,
    key: ActionKey,
) -> Result<ActionDetail, ApiError> {
    let engine = state.engine().await?;
    engine.record_viewed(&key, Utc::now())?;
    Ok(engine.detail(&key)?)
}

/// Approve or deny through the just-in-time pipeline.
#[tauri::command]
#[specta::specta]
pub async fn decide(
    state: State<'_, AppState>,
    input: DecisionInput,
) -> Result<DecisionReport, ApiError> {
    Ok(state.engine().await?.decide(input, Utc::now()).await?)
}

/// Opens the action's own page in the system browser. Takes the key, not a URL, so the
/// page can only open links the engine stored, and only http(s) ones.
#[tauri::command]
#[specta::specta]
pub async fn open_in_browser(
    app: tauri::AppHandle,
    state: State<'_, AppState>,
    key: ActionKey,
) -> Result<(), ApiError> {
    let url = state
        .engine()
        .await?
        .detail(&key)?
        .action
        .snapshot
        .web_url
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .ok_or_else(|| ApiError::new("no_link", format!("{key} has no web link")))?;
    app.opener()
        .open_url(url, None::<&str>)
        .map_err(|e| ApiError::new("open_failed", e.to_string()))
}

/// Who is deciding, and whether this is the embedded demo.
#[tauri::command]
#[specta::specta]
pub async fn app_info(state: State<'_, AppState>) -> Result<AppInfo, ApiError> {
    state.info().await
}

/// Whether native notifications can be shown (the header says when they cannot).
#[tauri::command]
#[specta::specta]
pub async fn notification_status(
    state: State<'_, AppState>,
) -> Result<countersign_notify::NotificationStatus, ApiError> {
    state.notification_status().await
}
