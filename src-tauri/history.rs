//! History commands: every action ever seen, from the local cache (also offline).

use countersign_core::api::ApiError;
use countersign_core::model::ActionKey;
use countersign_core::store::{HistoryPage, HistoryQuery, SnapshotVersion};
use tauri::State;

use crate::state::AppState;

/// One page of history: full-text search and filters, newest first.
#[tauri::command]
#[specta::specta]
pub fn history_page(
    state: State<'_, AppState>,
    query: HistoryQuery,
) -> Result<HistoryPage, ApiError> {
    Ok(state.engine()?.history_page(&query)?)
}

/// Every stored version of an action, oldest first (for "what changed").
#[tauri::command]
#[specta::specta]
pub fn snapshot_versions(
    state: State<'_, AppState>,
    key: ActionKey,
) -> Result<Vec<SnapshotVersion>, ApiError> {
    Ok(state.engine()?.snapshot_versions(&key)?)
}
