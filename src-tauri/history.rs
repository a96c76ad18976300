//! History commands: every action ever seen, from the local cache (also offline).

use countersign_core::api::ApiError;
use countersign_core::model::ActionKey;
use countersign_core::snapshot::{diff, FieldChange, SnapshotHash};
use countersign_core::store::{HistoryPage, HistoryQuery, SnapshotVersion};
use tauri::State;

use crate::state::AppState;

/// One page of history: full-text search and filters, newest first.
#[tauri::command]
#[specta::specta]
pub async fn history_page(
    state: State<'_, AppState>,
    query: HistoryQuery,
) -> Result<HistoryPage, ApiError> {
    Ok(state.engine().await?.history_page(&query)?)
}

/// Every stored version of an action, oldest first (for "what changed").
#[tauri::command]
#[specta::specta]
pub async fn snapshot_versions(
    state: State<'_, AppState>,
    key: ActionKey,
) -> Result<Vec<SnapshotVersion>, ApiError> {
    Ok(state.engine().await?.snapshot_versions(&key)?)
}

/// What changed between two stored versions of an action, field by field (the engine's
/// diff rules, so the window never re-implements them). `before` and `after` are
/// snapshot hashes from [`snapshot_versions`]; either order is allowed.
#[tauri::command]
#[specta::specta]
pub async fn snapshot_diff(
    state: State<'_, AppState>,
    key: ActionKey,
    before: SnapshotHash,
    after: SnapshotHash,
) -> Result<Vec<FieldChange>, ApiError> {
    let versions = state.engine().await?.snapshot_versions(&key)?;
    let find = |hash: &SnapshotHash| {
        versions
            .iter()
            .find(|v| &v.snapshot_hash == hash)
            .map(|v| &v.snapshot)
            .ok_or_else(|| {
                ApiError::new(
                    "unknown_snapshot",
                    format!("{key} has no stored version {}", hash.as_str()),
                )
            })
    };
    Ok(diff(find(&before)?, find(&after)?))
}
