//! History: every action ever seen, searchable offline, newest request first.
//!
//! The order is `actions.history_key` (migration 5): the request time in epoch
//! milliseconds shifted left by 20 bits, plus a slot handed out in arrival order within
//! that millisecond ([`history_key_base`], `Store::next_history_key`). Browsing pages by
//! the indexes that end with it; searching walks the FTS5 table `action_search`, whose
//! rowid is the same key, from the newest match down and stops after a page, so a word
//! that matches half the history costs a page, not half the history (for that, each
//! word's prefix is sent as the exact terms it expands to, see `word_match`). A cursor is a
//! key, the same for both (keyset paging, never OFFSET).

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, ACTION_COLUMNS, ACTION_SELECT};
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

/// Where a page ended, newest first: the last row's place in history. Opaque to its
/// holder (pass it back as it came): the two parts of the row's history key, kept apart
/// because the whole key does not fit a JavaScript number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct HistoryCursor {
    /// The millisecond of the row's history key (its request time, clamped to the
    /// range keys cover).
    pub requested_at: String,
    /// The row's place among the actions of that millisecond (0 .. 2^20).
    #[cfg_attr(feature = "specta", specta(type = f64))]
    pub row: i64,
}

/// The low bits of a history key: the slot within a millisecond.
pub(super) const SLOT_MASK: i64 = (1 << SLOT_BITS) - 1;
const SLOT_BITS: u32 = 20;
/// Keys cover request times from 1970 to the year 2248 (2^43 ms); earlier or later
/// times are clamped to the ends (their order among themselves is then arrival).
const MAX_MILLIS: i64 = (1 << 43) - 1;

/// The first history key of the millisecond `at` falls in (clamped to the key range).
pub fn history_key_base(at: &DateTime<Utc>) -> i64 {
    millis_key(at.timestamp_millis())
}

fn millis_key(ms: i64) -> i64 {
    ms.clamp(0, MAX_MILLIS) << SLOT_BITS
}

/// The first key at or after `at`: `history_key >= ceil(at)` holds exactly for the
/// actions requested at or after `at` (request times are stored to the millisecond).
fn key_at_or_after(at: &DateTime<Utc>) -> i64 {
    let ms = at.timestamp_millis();
    let ceil = if !at.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        ms.saturating_add(1)
    } else {
        ms
    };
    millis_key(ceil)
}

impl HistoryCursor {
    fn of_key(key: i64) -> Self {
        let ms = key >> SLOT_BITS;
        let at = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        Self {
            requested_at: format_millis(&at),
            row: key & SLOT_MASK,
        }
    }

    fn key(&self) -> Result<i64, StoreError> {
        let at = DateTime::parse_from_rfc3339(&self.requested_at)
            .map_err(|e| StoreError::BadCursor(format!("{:?}: {e}", self.requested_at)))?;
        if !(0..=SLOT_MASK).contains(&self.row) {
            return Err(StoreError::BadCursor(format!(
                "row {} out of range",
                self.row
            )));
        }
        Ok(history_key_base(&at.with_timezone(&Utc)) | self.row)
    }
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

/// One of the person's words as an FTS5 prefix term, `"word"*`: quoted (so `AND`, `-`,
/// `:` or quotes in it are plain text, never query syntax) and matched as a prefix.
/// Words joined with spaces are one MATCH expression in which every word must match
/// somewhere in the action's document, so "deploy canary" finds a title with one word
/// and a timeline line with the other. None for a word with nothing to search by.
/// `word_match` sends most words in another form that finds the same documents faster.
fn prefix_term(word: &str) -> Option<String> {
    let w = word.replace('"', "");
    w.chars()
        .any(char::is_alphanumeric)
        .then(|| format!("\"{w}\"*"))
}

/// A prefix that expands into more index terms than this is sent as a prefix term
/// (FTS5's own expansion). This bounds the size of the query and what enumerating the
/// terms costs: one seek each, measured at 1M documents from under 1 ms for a rare
/// term to about 10 ms for one in every document ("a", 12 terms: 62 ms in all, against
/// more than a second for `"a"*`).
pub(super) const MAX_EXPANSION: usize = 64;

/// The index's own term list, read lazily: one row per instance of a term, in term
/// order, so the first row at or after a string is one seek (the `row` and `col`
/// kinds count a term's documents before returning it: a read of its whole doclist).
/// A TEMP table: it lives in the connection, needs no migration, and is created on a
/// read-only connection too.
const TERMS_TABLE: &str =
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.search_terms USING fts5vocab(main, action_search, instance)";

/// How unicode61 (the `action_search` tokenizer) splits and folds a word made of ASCII
/// only: runs of letters and digits, lowercased; every other ASCII character separates.
/// None for a word with other characters (their folding is the tokenizer's business,
/// with its own Unicode tables), or without letters or digits.
fn ascii_tokens(word: &str) -> Option<Vec<String>> {
    if !word.is_ascii() {
        return None;
    }
    let tokens: Vec<String> = word
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    (!tokens.is_empty()).then_some(tokens)
}

/// The index terms that begin with `prefix` (ASCII, folded), in order; None if there
/// are more than [`MAX_EXPANSION`] or one is not UTF-8 text.
fn terms_with_prefix(
    conn: &rusqlite::Connection,
    prefix: &str,
) -> rusqlite::Result<Option<Vec<String>>> {
    // Every term that begins with an ASCII prefix sorts (bytewise, as FTS5 orders them)
    // at or after it and before the prefix with its last byte raised by one.
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1; // ASCII alphanumeric: stays below 0x80.
    }
    let end = String::from_utf8(end).unwrap_or_default();
    let mut stmt = conn.prepare_cached(
        "SELECT term FROM temp.search_terms WHERE term >= ?1 AND term < ?2 LIMIT 1",
    )?;
    let mut terms: Vec<String> = Vec::new();
    let mut from = prefix.to_owned();
    loop {
        let term: Option<Vec<u8>> = stmt
            .query_row([from.as_str(), end.as_str()], |r| {
                Ok(r.get_ref(0)?.as_bytes().ok().map(<[u8]>::to_vec))
            })
            .optional()?
            .flatten();
        let Some(term) = term else {
            return Ok(Some(terms));
        };
        let Ok(term) = String::from_utf8(term) else {
            return Ok(None);
        };
        if !term.starts_with(prefix) {
            return Ok(Some(terms));
        }
        if terms.len() == MAX_EXPANSION {
            return Ok(None);
        }
        // The next term after `term`: the smallest string above it is `term` followed by
        // the lowest byte, and the tokenizer never puts a control character in a term
        // (they separate words), so no term lies between `term` and `term + U+0001`.
        from = format!("{term}\u{1}");
        terms.push(term);
    }
}

/// One word as a MATCH expression that finds the documents `"word"*` finds. FTS5
/// answers a prefix term by first merging the whole document list of every term it
/// matches (at 1M actions "prod"* merges 570,000 entries, 100+ ms) and only then
/// walking it newest-first, with or without a rowid range. So the prefix is expanded
/// here, through the index's term list, into exact terms, `("prod" OR "producer")`:
/// exact terms are read lazily, newest first, and the walk stops after a page. A word
/// of several tokens ("bench@countersign", "OPS-4471") is a phrase whose last token is
/// the prefix, as FTS5 reads `"bench@countersign"*`. Words that are not plain ASCII,
/// or whose prefix matches too many terms, stay prefix terms.
fn word_match(conn: &rusqlite::Connection, word: &str) -> rusqlite::Result<Option<String>> {
    let Some(fallback) = prefix_term(word) else {
        return Ok(None);
    };
    let Some(mut tokens) = ascii_tokens(&word.replace('"', "")) else {
        return Ok(Some(fallback));
    };
    let prefix = tokens.pop().unwrap_or_default();
    let Some(terms) = terms_with_prefix(conn, &prefix)? else {
        return Ok(Some(fallback));
    };
    if terms.is_empty() {
        // Nothing in the index begins with it: the prefix term matches nothing, at once.
        return Ok(Some(fallback));
    }
    let head: String = tokens.iter().map(|t| format!("{t} ")).collect();
    // Terms are letters and digits (ASCII or not) from the tokenizer; a quote doubled
    // all the same, so that no term can end the string.
    let phrases: Vec<String> = terms
        .iter()
        .map(|t| format!("\"{head}{}\"", t.replace('"', "\"\"")))
        .collect();
    Ok(Some(if phrases.len() == 1 {
        phrases.concat()
    } else {
        format!("({})", phrases.join(" OR "))
    }))
}

/// The statement for one page of `q` (at most `limit` rows, plus one that tells whether
/// there is more) and its parameters. `text` is `q.text` as a MATCH expression
/// ([`Store::fts_match`]), None to browse.
pub(super) fn history_sql(
    q: &HistoryQuery,
    limit: u32,
    text: Option<String>,
) -> Result<(String, Vec<SqlValue>), StoreError> {
    // Searching: rows come from the FTS5 table in rowid (= history key) order, and the
    // actions are looked up by key. Browsing: the actions' key indexes.
    let key = if text.is_none() {
        "a.history_key"
    } else {
        "s.rowid"
    };
    let mut args: Vec<SqlValue> = Vec::new();
    let mut arg = |v: SqlValue| {
        args.push(v);
        args.len()
    };
    let mut sql_clauses: Vec<String> = Vec::new();
    let searching = text.is_some();
    if let Some(text) = text {
        let n = arg(SqlValue::Text(text));
        sql_clauses.push(format!("s.action_search MATCH ?{n}"));
    }
    // Always bounded above, once: the range is what lets each index (…, history_key)
    // be read newest-first from the cursor or the end date, and it leaves out rows
    // without a key. One bound, the lower of the two: SQLite starts a range at one of
    // two `<` terms and filters by the other, so `< cursor AND < to` would read every
    // newer row down to `to` (measured: a mid-history week took 14 ms of 200,000).
    let mut below = match &q.after {
        Some(after) => after.key()?,
        None => i64::MAX,
    };
    if let Some(to) = &q.to {
        below = below.min(key_at_or_after(to));
    }
    let n = arg(SqlValue::Integer(below));
    sql_clauses.push(format!("{key} < ?{n}"));
    if let Some(backend) = &q.backend {
        // By id, so that the (backend_id, history_key) index answers it.
        let n = arg(SqlValue::Text(backend.clone()));
        sql_clauses.push(format!(
            "a.backend_id = (SELECT id FROM backends WHERE name = ?{n})"
        ));
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
        let n = arg(SqlValue::Integer(key_at_or_after(from)));
        sql_clauses.push(format!("{key} >= ?{n}"));
    }
    let n = arg(SqlValue::Integer(i64::from(limit) + 1));
    let filter = sql_clauses.join(" AND ");
    let sql = if !searching {
        format!("{ACTION_SELECT} WHERE {filter} ORDER BY a.history_key DESC LIMIT ?{n}")
    } else {
        // CROSS JOIN keeps the FTS5 table outermost: SQLite must not start from an
        // actions index and ask FTS5 "does row k match?" once per action.
        format!(
            "SELECT {ACTION_COLUMNS} FROM action_search s
             CROSS JOIN actions a ON a.history_key = s.rowid
             JOIN backends b ON b.id = a.backend_id
             WHERE {filter} ORDER BY s.rowid DESC LIMIT ?{n}"
        )
    };
    Ok((sql, args))
}

impl Store {
    /// The person's words as one FTS5 MATCH expression for `action_search` on `conn`:
    /// every word must match, each as a prefix (see `prefix_term` and `word_match`).
    /// None when there are no words to search by. Public, as a function of a
    /// connection, for the benchmark's bare-SQL floor.
    pub fn fts_match(conn: &rusqlite::Connection, text: &str) -> rusqlite::Result<Option<String>> {
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.iter().all(|w| prefix_term(w).is_none()) {
            return Ok(None);
        }
        conn.execute_batch(TERMS_TABLE)?;
        let mut parts = Vec::new();
        for word in words {
            if let Some(part) = word_match(conn, word)? {
                parts.push(part);
            }
        }
        // Explicit AND: FTS5 reads two phrases side by side as AND, but not a
        // parenthesised OR next to a phrase (a syntax error).
        Ok(Some(parts.join(" AND ")))
    }

    /// One page of history, newest request first.
    pub fn history_page(&self, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
        let conn = self.conn();
        // One read transaction: the terms a prefix expands into and the page are read
        // from the same state of the index (another process may write between them).
        let tx = conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let text = match q.text.as_deref() {
            Some(text) => Self::fts_match(&tx, text).map_err(|e| self.err(e))?,
            None => None,
        };
        let (sql, args) = history_sql(q, limit, text)?;
        let mut stmt = tx.prepare_cached(&sql).map_err(|e| self.err(e))?;
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
            let key: i64 = row.get(17).map_err(|e| self.err(e))?;
            last = Some(HistoryCursor::of_key(key));
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
