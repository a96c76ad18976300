//! History: every action ever seen, searchable offline. Full-text search runs on the
//! FTS5 indexes the schema keeps in step with the tables (migration 4); filters and
//! pages use indexes on `requested_at`, so a page costs the same at row 50 as at row
//! 1,000,000 (keyset paging, never OFFSET).

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, ACTION_SELECT};
use crate::model::{ActionKey, ActionSnapshot, ActionStatus, PendingAction, Verdict};
use crate::snapshot::{format_millis, SnapshotHash};

/// The most rows one page returns, whatever is asked.
pub const MAX_PAGE: u32 = 500;

/// What to find in history. Every filter is optional; they combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(default)]
pub struct HistoryQuery {
    /// Words to find in title, summary, requester, resource, details, timeline text
    /// and reasons; each word matches as a prefix, all words must match.
    pub text: Option<String>,
    pub backend: Option<String>,
    pub status: Option<ActionStatus>,
    /// Only actions this machine decided with this verdict.
    pub verdict: Option<Verdict>,
    pub requester: Option<String>,
    /// Requested at or after.
    #[cfg_attr(feature = "specta", specta(type = Option<String>))]
    pub from: Option<DateTime<Utc>>,
    /// Requested before.
    #[cfg_attr(feature = "specta", specta(type = Option<String>))]
    pub to: Option<DateTime<Utc>>,
    /// Page size (default 100, at most [`MAX_PAGE`]).
    pub limit: Option<u32>,
    /// Continue after this row: the `next` of the previous page.
    pub after: Option<HistoryCursor>,
}

/// Where a page ended, newest first: the last row's request time and row id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct HistoryCursor {
    pub requested_at: String,
    /// The row id; ties on `requested_at` are ordered by it.
    #[cfg_attr(feature = "specta", specta(type = f64))]
    pub row: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct HistoryPage {
    pub actions: Vec<PendingAction>,
    /// Present when there may be more rows.
    pub next: Option<HistoryCursor>,
}

/// One version of an action as it was stored (and could be shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct SnapshotVersion {
    pub snapshot_hash: SnapshotHash,
    #[cfg_attr(feature = "specta", specta(type = String))]
    pub first_seen_at: DateTime<Utc>,
    pub snapshot: ActionSnapshot,
}

/// The person's words as FTS5 terms: each word quoted (so `AND`, `-`, `:` or quotes in
/// it are plain text, never query syntax) and matched as a prefix. Each term is matched
/// on its own, so "deploy canary" finds a title with one word and a timeline line with
/// the other.
pub fn fts_terms(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| w.replace('"', ""))
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .map(|w| format!("\"{w}\"*"))
        .collect()
}

impl Store {
    /// One page of history, newest request first.
    pub fn history_page(&self, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
        let mut args: Vec<SqlValue> = Vec::new();
        let mut arg = |v: SqlValue| {
            args.push(v);
            args.len()
        };
        let mut sql_clauses: Vec<String> = Vec::new();
        for term in fts_terms(q.text.as_deref().unwrap_or_default()) {
            let n = arg(SqlValue::Text(term));
            sql_clauses.push(format!(
                "a.id IN (SELECT rowid FROM action_fts WHERE action_fts MATCH ?{n}
                          UNION SELECT action_id FROM event_fts WHERE event_fts MATCH ?{n}
                          UNION SELECT action_id FROM decision_fts WHERE decision_fts MATCH ?{n})"
            ));
        }
        if let Some(backend) = &q.backend {
            let n = arg(SqlValue::Text(backend.clone()));
            sql_clauses.push(format!("b.name = ?{n}"));
        }
        if let Some(status) = q.status {
            let n = arg(SqlValue::Text(status.as_str().to_owned()));
            sql_clauses.push(format!("a.status = ?{n}"));
        }
        if let Some(verdict) = q.verdict {
            let n = arg(SqlValue::Text(verdict.as_str().to_owned()));
            sql_clauses.push(format!(
                "EXISTS (SELECT 1 FROM decisions d WHERE d.action_id = a.id AND d.verdict = ?{n})"
            ));
        }
        if let Some(requester) = &q.requester {
            let n = arg(SqlValue::Text(requester.clone()));
            sql_clauses.push(format!("a.requester = ?{n}"));
        }
        if let Some(from) = &q.from {
            let n = arg(SqlValue::Text(format_millis(from)));
            sql_clauses.push(format!("a.requested_at >= ?{n}"));
        }
        if let Some(to) = &q.to {
            let n = arg(SqlValue::Text(format_millis(to)));
            sql_clauses.push(format!("a.requested_at < ?{n}"));
        }
        if let Some(after) = &q.after {
            let t = arg(SqlValue::Text(after.requested_at.clone()));
            let r = arg(SqlValue::Integer(after.row));
            sql_clauses.push(format!(
                "(a.requested_at < ?{t} OR (a.requested_at = ?{t} AND a.id < ?{r}))"
            ));
        }
        let n = arg(SqlValue::Integer(i64::from(limit) + 1));
        let sql = format!(
            "{ACTION_SELECT}{} ORDER BY a.requested_at DESC, a.id DESC LIMIT ?{n}",
            if sql_clauses.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", sql_clauses.join(" AND "))
            }
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(args))
            .map_err(|e| self.err(e))?;
        let mut actions = Vec::new();
        let mut last: Option<HistoryCursor> = None;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            if actions.len() == limit as usize {
                // One row more than the page: there is a next page, from the last row.
                return Ok(HistoryPage {
                    actions,
                    next: last,
                });
            }
            let action = self.action_from_row(row)?;
            last = Some(HistoryCursor {
                requested_at: format_millis(&action.snapshot.requested_at),
                row: row.get(16).map_err(|e| self.err(e))?,
            });
            actions.push(action);
        }
        Ok(HistoryPage {
            actions,
            next: None,
        })
    }

    /// Every version of the action that was stored, oldest first.
    pub fn snapshot_versions(&self, key: &ActionKey) -> Result<Vec<SnapshotVersion>, StoreError> {
        let conn = self.conn();
        let id = self.action_id(&conn, key)?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT snapshot_hash, first_seen_at, snapshot_json FROM snapshots
                 WHERE action_id = ?1 ORDER BY first_seen_at, snapshot_hash",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([id]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let json: String = r.get(2).map_err(|e| self.err(e))?;
            out.push(SnapshotVersion {
                snapshot_hash: SnapshotHash(r.get(0).map_err(|e| self.err(e))?),
                first_seen_at: self.time(r, 1, "snapshots.first_seen_at")?,
                snapshot: serde_json::from_str(&json).map_err(|e| StoreError::Decode {
                    path: self.path.clone(),
                    column: "snapshots.snapshot_json",
                    detail: e.to_string(),
                })?,
            });
        }
        Ok(out)
    }
}
