//! The state file: actions, their timelines, the event log and the decisions (with the
//! answer given under each idempotency key), in one SQLite database.
//!
//! Every change runs in one `IMMEDIATE` transaction that also appends the change's
//! events to the `events` table; after the commit the events are broadcast while the
//! connection lock is still held, so live subscribers see them in id order and only
//! once they are durable.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, SubsecRound, Utc};
use countersign_core::form;
use countersign_core::model::{
    ActionKind, ActionSnapshot, ActionStatus, Detail, Review, ReviewVerdict, TimelineKind, Verdict,
};
use countersign_core::protocol::{
    AcceptedDecision, ActionList, DecisionAnswer, DecisionBody, NewAction, TimelineAppended,
    WireAction, WireTimelineEvent, EVENT_ACTION_CREATED, EVENT_ACTION_UPDATED,
    EVENT_TIMELINE_APPENDED,
};
use countersign_core::snapshot::{format_millis, SnapshotHash};
use rusqlite::{
    params, Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior,
};
use tokio::sync::broadcast;

use crate::error::{ApiError, ServerError};

/// `PRAGMA application_id` of a state file ("CSV1").
const APPLICATION_ID: i64 = 0x4353_5631;

/// One entry per schema version; entry `n` migrates version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE actions (
    id                 TEXT PRIMARY KEY NOT NULL,
    kind               TEXT NOT NULL,
    title              TEXT NOT NULL,
    summary            TEXT NOT NULL,
    requester          TEXT NOT NULL,
    requested_at       TEXT NOT NULL,
    expires_at         TEXT,
    resource           TEXT NOT NULL,
    details_json       TEXT NOT NULL,
    approvals_required INTEGER NOT NULL,
    reviews_json       TEXT NOT NULL,
    status             TEXT NOT NULL,
    web_url            TEXT,
    snapshot_hash      TEXT NOT NULL
);
CREATE INDEX actions_by_status ON actions (status, expires_at);

CREATE TABLE timeline (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id TEXT NOT NULL REFERENCES actions (id),
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT,
    text      TEXT NOT NULL
);
CREATE INDEX timeline_by_action ON timeline (action_id, id);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event      TEXT NOT NULL,
    action_id  TEXT NOT NULL REFERENCES actions (id),
    data       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE decisions (
    action_id       TEXT NOT NULL REFERENCES actions (id),
    idempotency_key TEXT NOT NULL,
    verdict         TEXT NOT NULL,
    approver        TEXT NOT NULL,
    reason          TEXT NOT NULL,
    decided_at      TEXT NOT NULL,
    snapshot_hash   TEXT NOT NULL,
    public_key      TEXT,
    signature       TEXT,
    accepted_at     TEXT NOT NULL,
    answer_status   INTEGER NOT NULL,
    answer_body     TEXT NOT NULL,
    PRIMARY KEY (action_id, idempotency_key)
);
"#,
    r#"
ALTER TABLE actions ADD COLUMN form_json TEXT;
ALTER TABLE decisions ADD COLUMN answer_json TEXT;
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Longest accepted `expires_in_secs` (ten years).
const MAX_EXPIRES_IN_SECS: u64 = 10 * 365 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state JSON error: {0}")]
    Json(#[from] serde_json::Error),
    #[error("state file holds an invalid value: {0}")]
    Corrupt(String),
    #[error("state task failed: {0}")]
    Task(String),
}

/// One entry of the event log, as stored and as streamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: i64,
    pub event: String,
    pub data: String,
}

impl StoredEvent {
    /// The event in `text/event-stream` framing.
    pub fn to_sse(&self) -> String {
        format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            self.id, self.event, self.data
        )
    }
}

/// A stored HTTP answer (status and exact body), replayed for a repeated idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: String,
}

/// A scripted change to an action (used by the demo scenario).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Timeline {
        kind: TimelineKind,
        actor: Option<String>,
        text: String,
    },
    Review(Review),
}

/// Server time, truncated to what the wire format carries (milliseconds).
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

pub struct Store {
    conn: Mutex<Connection>,
    events: broadcast::Sender<Arc<StoredEvent>>,
}

impl Store {
    /// Opens (creating if needed) and migrates a state file. A file that is not a
    /// SQLite database, belongs to another application or was written by a newer
    /// schema is refused before anything is written to it.
    pub(crate) fn open(path: &Path) -> Result<Self, ServerError> {
        Self::open_with_capacity(path, 1024)
    }

    /// [`Store::open`] with a given live-broadcast buffer (small in tests, to force lag).
    pub(crate) fn open_with_capacity(path: &Path, capacity: usize) -> Result<Self, ServerError> {
        let open_err = |reason: String| ServerError::OpenState {
            path: path.to_owned(),
            reason,
        };
        let not_state = |reason: String| ServerError::NotAStateFile {
            path: path.to_owned(),
            reason,
        };
        let classify = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => not_state(e.to_string()),
            _ => open_err(e.to_string()),
        };
        if path.is_dir() {
            return Err(open_err("it is a directory".into()));
        }
        let mut conn = Connection::open(path).map_err(classify)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(classify)?;

        // Read-only probes first.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(classify)?;
        let app_id: i64 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(classify)?;
        if version > SCHEMA_VERSION {
            return Err(ServerError::NewerSchema {
                path: path.to_owned(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == 0 {
            let tables: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(classify)?;
            if tables > 0 {
                return Err(not_state("it holds another application's tables".into()));
            }
        } else if app_id != APPLICATION_ID {
            return Err(not_state(format!(
                "application id {app_id:#x}, expected {APPLICATION_ID:#x}"
            )));
        }
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(classify)?;
        if check != "ok" {
            return Err(not_state(format!("integrity check failed: {check}")));
        }

        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(classify)?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")
            .map_err(classify)?;
        migrate(&mut conn, version).map_err(classify)?;

        let (events, _) = broadcast::channel(capacity.max(1));
        Ok(Self {
            conn: Mutex::new(conn),
            events,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock rolled its transaction back; the connection
        // itself is still usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Live events, in id order, from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.events.subscribe()
    }

    fn publish(&self, events: Vec<StoredEvent>) {
        for event in events {
            // An error only means nobody is listening right now.
            let _ = self.events.send(Arc::new(event));
        }
    }

    /// Runs blocking store work off the async runtime.
    pub(crate) async fn call<R, E>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let store = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| E::from(StoreError::Task(e.to_string())))?
    }

    /// Creates an action; `Ok((action, false))` when an action with the requested id
    /// already exists (it is returned unchanged).
    pub(crate) fn create(
        &self,
        new: NewAction,
        now: DateTime<Utc>,
    ) -> Result<(WireAction, bool), ApiError> {
        validate_new(&new)?;
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let id = match &new.id {
            Some(id) => {
                if let Some(existing) = load_action(&tx, id)? {
                    return Ok((existing, false));
                }
                id.clone()
            }
            None => loop {
                let id = format!("act_{:016x}", rand::random::<u64>());
                if load_action(&tx, &id)?.is_none() {
                    break id;
                }
            },
        };
        let expires_at = match new.expires_in_secs {
            None => None,
            Some(secs) => Some(
                i64::try_from(secs)
                    .ok()
                    .and_then(chrono::Duration::try_seconds)
                    .and_then(|d| now.checked_add_signed(d))
                    .ok_or_else(|| ApiError::malformed("expires_in_secs", "out of range"))?,
            ),
        };
        let snapshot = ActionSnapshot {
            kind: new.kind,
            title: new.title,
            summary: new.summary,
            requester: new.requester,
            requested_at: now,
            expires_at,
            resource: new.resource,
            details: new.details,
            approvals_required: new.approvals_required.unwrap_or(1),
            reviews: Vec::new(),
            status: ActionStatus::Pending,
            web_url: new.web_url,
            form: new.form,
        };
        let mut action = WireAction {
            id,
            snapshot_hash: snapshot.hash(),
            snapshot,
            timeline: Vec::new(),
        };
        let mut w = Writer::new(tx, now);
        w.insert_action(&action)?;
        let text = format!("Requested by {}", action.snapshot.requester);
        let actor = Some(action.snapshot.requester.clone());
        w.append(&mut action, TimelineKind::Requested, actor, text, false)?;
        let data = serde_json::to_string(&action).map_err(StoreError::from)?;
        w.log(EVENT_ACTION_CREATED, &action.id, data)?;
        let events = w.commit()?;
        self.publish(events);
        Ok((action, true))
    }

    pub(crate) fn get(&self, id: &str) -> Result<Option<WireAction>, StoreError> {
        load_action(&self.lock(), id)
    }

    /// All actions (oldest first), optionally with one status, and the newest event id.
    pub(crate) fn list(&self, status: Option<ActionStatus>) -> Result<ActionList, StoreError> {
        let conn = self.lock();
        let ids: Vec<String> = {
            let mut stmt = conn.prepare_cached(
                "SELECT id FROM actions WHERE (?1 IS NULL OR status = ?1) ORDER BY rowid",
            )?;
            let rows = stmt.query_map([status.map(|s| s.as_str())], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut actions = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(action) = load_action(&conn, &id)? {
                actions.push(action);
            }
        }
        let cursor = latest_event_id(&conn)?;
        Ok(ActionList {
            actions,
            // Always present: "0" before the first event means "resume from the start",
            // so nothing created between this list and the subscription is missed.
            cursor: Some(cursor.to_string()),
        })
    }

    /// Handles one decision; see docs/protocol.md for the order of the checks.
    pub(crate) fn decide(
        &self,
        id: &str,
        body: &DecisionBody,
        now: DateTime<Utc>,
    ) -> Result<Answer, ApiError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let Some(mut action) = load_action(&tx, id)? else {
            return Err(ApiError::NotFound(format!("no action with id {id:?}")));
        };
        if let Some(answer) = load_answer(&tx, id, &body.idempotency_key)? {
            return Ok(answer);
        }
        let status = action.snapshot.status;
        if status == ActionStatus::Expired {
            return Err(ApiError::Expired("the action has expired".into()));
        }
        if status == ActionStatus::Pending && is_due(&action, now) {
            let mut w = Writer::new(tx, now);
            expire(&mut w, &mut action)?;
            let events = w.commit()?;
            self.publish(events);
            return Err(ApiError::Expired("the action has expired".into()));
        }
        if status != ActionStatus::Pending {
            return Err(ApiError::NotPending(status));
        }
        if body.snapshot_hash != action.snapshot_hash {
            return Err(ApiError::Stale {
                expected: body.snapshot_hash.0.clone(),
                current: action.snapshot_hash.0.clone(),
            });
        }
        if action
            .snapshot
            .reviews
            .iter()
            .any(|r| r.reviewer == body.approver)
        {
            return Err(ApiError::Forbidden(format!(
                "{} has already reviewed this action",
                body.approver
            )));
        }
        // The server checks an answer itself: a client that skipped the engine's check
        // must not get an unknown option recorded.
        let checked = form::check_answer(
            action.snapshot.form.as_ref(),
            body.verdict,
            body.answer.clone(),
        )
        .map_err(|e| ApiError::malformed("answer", e.to_string()))?;
        if checked != body.answer {
            // Defaults the client left out are not filled in behind its signature.
            return Err(ApiError::malformed(
                "answer",
                "must state every field of the form (defaults included), as signed",
            ));
        }
        // A choice settles the step like an approval; the options chosen go with it.
        let comment = match (&body.answer, body.reason.trim().is_empty()) {
            (Some(a), _) if !a.options.is_empty() => Some(format!(
                "chose {}{}",
                a.options.join(", "),
                if body.reason.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", body.reason)
                }
            )),
            (_, false) => Some(body.reason.clone()),
            (_, true) => None,
        };
        let review = Review {
            reviewer: body.approver.clone(),
            verdict: match body.verdict {
                Verdict::Approve | Verdict::Choose => ReviewVerdict::Approved,
                Verdict::Deny => ReviewVerdict::Denied,
            },
            at: body.decided_at,
            comment,
        };
        let mut w = Writer::new(tx, now);
        apply_review(&mut w, &mut action, review)?;
        let answer = DecisionAnswer {
            decision: AcceptedDecision {
                idempotency_key: body.idempotency_key.clone(),
                verdict: body.verdict,
                approver: body.approver.clone(),
                accepted_at: now,
            },
            action,
        };
        let json = serde_json::to_string(&answer).map_err(StoreError::from)?;
        w.insert_decision(id, body, 200, &json)?;
        let events = w.commit()?;
        self.publish(events);
        Ok(Answer {
            status: 200,
            body: json,
        })
    }

    /// Expires every pending action whose `expires_at` has passed. Returns how many.
    pub(crate) fn expire_due(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<String> = {
            let mut stmt = tx.prepare_cached(
                "SELECT id FROM actions WHERE status = 'pending' AND expires_at IS NOT NULL \
                 AND expires_at <= ?1 ORDER BY expires_at, rowid",
            )?;
            let rows = stmt.query_map([format_millis(&now)], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        if ids.is_empty() {
            return Ok(0);
        }
        let mut w = Writer::new(tx, now);
        for id in &ids {
            if let Some(mut action) = load_action(&w.tx, id)? {
                expire(&mut w, &mut action)?;
            }
        }
        let events = w.commit()?;
        self.publish(events);
        Ok(ids.len())
    }

    /// Applies a scripted step if the action is still pending (and not past expiry).
    /// Returns whether it was applied.
    pub(crate) fn apply_step(
        &self,
        id: &str,
        step: Step,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(mut action) = load_action(&tx, id)? else {
            return Ok(false);
        };
        if action.snapshot.status != ActionStatus::Pending || is_due(&action, now) {
            return Ok(false);
        }
        let mut w = Writer::new(tx, now);
        match step {
            Step::Timeline { kind, actor, text } => {
                w.append(&mut action, kind, actor, text, true)?;
            }
            Step::Review(review) => {
                if action
                    .snapshot
                    .reviews
                    .iter()
                    .any(|r| r.reviewer == review.reviewer)
                {
                    return Ok(false);
                }
                apply_review(&mut w, &mut action, review)?;
            }
        }
        let events = w.commit()?;
        self.publish(events);
        Ok(true)
    }

    /// Up to `limit` stored events with an id greater than `after`, in id order.
    pub(crate) fn events_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Arc<StoredEvent>>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, event, data FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok(Arc::new(StoredEvent {
                    id: r.get(0)?,
                    event: r.get(1)?,
                    data: r.get(2)?,
                }))
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest event id, 0 when there is none.
    pub(crate) fn latest_event_id(&self) -> Result<i64, StoreError> {
        latest_event_id(&self.lock())
    }
}

fn migrate(conn: &mut Connection, from: i64) -> rusqlite::Result<()> {
    for (done, sql) in MIGRATIONS.iter().enumerate() {
        let version = done as i64 + 1;
        if version <= from {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.commit()?;
    }
    Ok(())
}

fn latest_event_id(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?)
}

fn is_due(action: &WireAction, now: DateTime<Utc>) -> bool {
    action.snapshot.expires_at.is_some_and(|at| at <= now)
}

/// Checks what serde cannot: non-empty strings, sane numbers, a safe id and link.
pub(crate) fn validate_new(new: &NewAction) -> Result<(), ApiError> {
    if let Some(id) = &new.id {
        let ok_char =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '~');
        if id.is_empty() || id.len() > 128 || !id.chars().all(ok_char) {
            return Err(ApiError::malformed(
                "id",
                "id must be 1-128 characters of A-Z a-z 0-9 . _ - : ~",
            ));
        }
    }
    if new.title.trim().is_empty() {
        return Err(ApiError::malformed("title", "title must not be empty"));
    }
    if new.requester.trim().is_empty() {
        return Err(ApiError::malformed(
            "requester",
            "requester must not be empty",
        ));
    }
    if let Some(n) = new.approvals_required {
        if !(1..=100).contains(&n) {
            return Err(ApiError::malformed(
                "approvals_required",
                "approvals_required must be between 1 and 100",
            ));
        }
    }
    if new.expires_in_secs.is_some_and(|s| s > MAX_EXPIRES_IN_SECS) {
        return Err(ApiError::malformed(
            "expires_in_secs",
            format!("expires_in_secs must be at most {MAX_EXPIRES_IN_SECS}"),
        ));
    }
    for (i, detail) in new.details.iter().enumerate() {
        if detail.key.trim().is_empty() {
            return Err(ApiError::malformed(
                format!("details[{i}].key"),
                "detail keys must not be empty",
            ));
        }
    }
    if let Some(url) = &new.web_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ApiError::malformed(
                "web_url",
                "web_url must be an http:// or https:// URL",
            ));
        }
    }
    Ok(())
}

/// Adds a review and moves the status on when it settles the action.
fn apply_review(
    w: &mut Writer<'_>,
    action: &mut WireAction,
    review: Review,
) -> Result<(), StoreError> {
    let reviewer = review.reviewer.clone();
    let verdict = review.verdict;
    let comment = review.comment.clone();
    action.snapshot.reviews.push(review);
    let required = action.snapshot.approvals_required;
    let approvals = action
        .snapshot
        .reviews
        .iter()
        .filter(|r| r.verdict == ReviewVerdict::Approved)
        .count();
    let mut text = match verdict {
        ReviewVerdict::Approved => format!("{reviewer} approved ({approvals} of {required})"),
        ReviewVerdict::Denied => format!("{reviewer} denied"),
    };
    if let Some(comment) = comment {
        text.push_str(": ");
        text.push_str(&comment);
    }
    w.append(
        action,
        TimelineKind::Reviewed,
        Some(reviewer.clone()),
        text,
        true,
    )?;
    match verdict {
        ReviewVerdict::Denied => {
            action.snapshot.status = ActionStatus::Denied;
            let text = format!("Denied by {reviewer}");
            w.append(action, TimelineKind::Denied, Some(reviewer), text, true)?;
        }
        ReviewVerdict::Approved if approvals >= required as usize => {
            action.snapshot.status = ActionStatus::Approved;
            let text = format!("Approved ({approvals} of {required} approvals)");
            w.append(action, TimelineKind::Approved, Some(reviewer), text, true)?;
        }
        ReviewVerdict::Approved => {}
    }
    w.save(action)
}

fn expire(w: &mut Writer<'_>, action: &mut WireAction) -> Result<(), StoreError> {
    action.snapshot.status = ActionStatus::Expired;
    let approvals = action
        .snapshot
        .reviews
        .iter()
        .filter(|r| r.verdict == ReviewVerdict::Approved)
        .count();
    let text = if approvals == 0 {
        "Expired without a decision".to_owned()
    } else {
        format!(
            "Expired with {approvals} of {} approvals",
            action.snapshot.approvals_required
        )
    };
    w.append(action, TimelineKind::Expired, None, text, true)?;
    w.save(action)
}

/// One write transaction plus the events it logs.
struct Writer<'c> {
    tx: Transaction<'c>,
    events: Vec<StoredEvent>,
    now: DateTime<Utc>,
}

impl<'c> Writer<'c> {
    fn new(tx: Transaction<'c>, now: DateTime<Utc>) -> Self {
        Self {
            tx,
            events: Vec::new(),
            now,
        }
    }

    fn insert_action(&mut self, a: &WireAction) -> Result<(), StoreError> {
        let s = &a.snapshot;
        self.tx.execute(
            "INSERT INTO actions (id, kind, title, summary, requester, requested_at, expires_at, \
             resource, details_json, approvals_required, reviews_json, status, web_url, snapshot_hash, \
             form_json) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                a.id,
                s.kind.as_str(),
                s.title,
                s.summary,
                s.requester,
                format_millis(&s.requested_at),
                s.expires_at.as_ref().map(format_millis),
                s.resource,
                serde_json::to_string(&s.details)?,
                s.approvals_required,
                serde_json::to_string(&s.reviews)?,
                s.status.as_str(),
                s.web_url,
                a.snapshot_hash.0,
                s.form.as_ref().map(serde_json::to_string).transpose()?,
            ],
        )?;
        Ok(())
    }

    /// Writes the mutable parts of an action (recomputing its hash) and logs
    /// `action.updated` with the whole action.
    fn save(&mut self, a: &mut WireAction) -> Result<(), StoreError> {
        a.snapshot_hash = a.snapshot.hash();
        let s = &a.snapshot;
        self.tx.execute(
            "UPDATE actions SET expires_at = ?2, approvals_required = ?3, reviews_json = ?4, \
             status = ?5, snapshot_hash = ?6 WHERE id = ?1",
            params![
                a.id,
                s.expires_at.as_ref().map(format_millis),
                s.approvals_required,
                serde_json::to_string(&s.reviews)?,
                s.status.as_str(),
                a.snapshot_hash.0,
            ],
        )?;
        let data = serde_json::to_string(&*a)?;
        self.log(EVENT_ACTION_UPDATED, &a.id, data)
    }

    /// Appends a timeline event (and, when `announce`, logs `timeline.appended`).
    fn append(
        &mut self,
        a: &mut WireAction,
        kind: TimelineKind,
        actor: Option<String>,
        text: String,
        announce: bool,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO timeline (action_id, at, kind, actor, text) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![a.id, format_millis(&self.now), kind.as_str(), actor, text],
        )?;
        let event = WireTimelineEvent {
            id: self.tx.last_insert_rowid().to_string(),
            at: self.now,
            kind: kind.as_str().to_owned(),
            actor,
            text,
        };
        a.timeline.push(event.clone());
        if announce {
            let data = serde_json::to_string(&TimelineAppended {
                action_id: a.id.clone(),
                event,
            })?;
            self.log(EVENT_TIMELINE_APPENDED, &a.id, data)?;
        }
        Ok(())
    }

    fn log(&mut self, event: &str, action_id: &str, data: String) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO events (event, action_id, data, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![event, action_id, data, format_millis(&self.now)],
        )?;
        self.events.push(StoredEvent {
            id: self.tx.last_insert_rowid(),
            event: event.to_owned(),
            data,
        });
        Ok(())
    }

    fn insert_decision(
        &mut self,
        action_id: &str,
        body: &DecisionBody,
        status: u16,
        answer: &str,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO decisions (action_id, idempotency_key, verdict, approver, reason, \
             decided_at, snapshot_hash, public_key, signature, accepted_at, answer_status, answer_body, \
             answer_json) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                action_id,
                body.idempotency_key,
                body.verdict.as_str(),
                body.approver,
                body.reason,
                format_millis(&body.decided_at),
                body.snapshot_hash.0,
                body.public_key,
                body.signature,
                format_millis(&self.now),
                status,
                answer,
                body.answer.as_ref().map(serde_json::to_string).transpose()?,
            ],
        )?;
        Ok(())
    }

    fn commit(self) -> Result<Vec<StoredEvent>, StoreError> {
        self.tx.commit()?;
        Ok(self.events)
    }
}

fn load_answer(
    conn: &Connection,
    action_id: &str,
    key: &str,
) -> Result<Option<Answer>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT answer_status, answer_body FROM decisions WHERE action_id = ?1 AND idempotency_key = ?2",
    )?;
    Ok(stmt
        .query_row([action_id, key], |r| {
            Ok(Answer {
                status: r.get(0)?,
                body: r.get(1)?,
            })
        })
        .optional()?)
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("timestamp {s:?}: {e}")))
}

fn load_action(conn: &Connection, id: &str) -> Result<Option<WireAction>, StoreError> {
    struct Raw {
        id: String,
        kind: String,
        title: String,
        summary: String,
        requester: String,
        requested_at: String,
        expires_at: Option<String>,
        resource: String,
        details: String,
        approvals_required: i64,
        reviews: String,
        status: String,
        web_url: Option<String>,
        snapshot_hash: String,
        form: Option<String>,
    }
    let raw = {
        let mut stmt = conn.prepare_cached(
            "SELECT id, kind, title, summary, requester, requested_at, expires_at, resource, \
             details_json, approvals_required, reviews_json, status, web_url, snapshot_hash, \
             form_json FROM actions WHERE id = ?1",
        )?;
        stmt.query_row([id], |r| {
            Ok(Raw {
                id: r.get(0)?,
                kind: r.get(1)?,
                title: r.get(2)?,
                summary: r.get(3)?,
                requester: r.get(4)?,
                requested_at: r.get(5)?,
                expires_at: r.get(6)?,
                resource: r.get(7)?,
                details: r.get(8)?,
                approvals_required: r.get(9)?,
                reviews: r.get(10)?,
                status: r.get(11)?,
                web_url: r.get(12)?,
                snapshot_hash: r.get(13)?,
                form: r.get(14)?,
            })
        })
        .optional()?
    };
    let Some(raw) = raw else {
        return Ok(None);
    };
    let details: Vec<Detail> = serde_json::from_str(&raw.details)?;
    let reviews: Vec<Review> = serde_json::from_str(&raw.reviews)?;
    let snapshot = ActionSnapshot {
        kind: ActionKind::parse(&raw.kind),
        title: raw.title,
        summary: raw.summary,
        requester: raw.requester,
        requested_at: parse_time(&raw.requested_at)?,
        expires_at: raw.expires_at.as_deref().map(parse_time).transpose()?,
        resource: raw.resource,
        details,
        approvals_required: u32::try_from(raw.approvals_required).map_err(|_| {
            StoreError::Corrupt(format!("approvals_required {}", raw.approvals_required))
        })?,
        reviews,
        status: ActionStatus::parse(&raw.status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {:?}", raw.status)))?,
        web_url: raw.web_url,
        form: raw.form.as_deref().map(serde_json::from_str).transpose()?,
    };
    let timeline = {
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, kind, actor, text FROM timeline WHERE action_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut timeline = Vec::new();
        for row in rows {
            let (tid, at, kind, actor, text) = row?;
            timeline.push(WireTimelineEvent {
                id: tid.to_string(),
                at: parse_time(&at)?,
                kind,
                actor,
                text,
            });
        }
        timeline
    };
    Ok(Some(WireAction {
        id: raw.id,
        snapshot,
        snapshot_hash: SnapshotHash(raw.snapshot_hash),
        timeline,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_action(id: &str) -> NewAction {
        NewAction {
            id: Some(id.into()),
            kind: ActionKind::Command,
            title: "restart nginx".into(),
            summary: String::new(),
            requester: "dana".into(),
            resource: "web-1".into(),
            details: vec![],
            approvals_required: Some(2),
            expires_in_secs: Some(600),
            web_url: None,
            form: None,
        }
    }

    fn decision(hash: &SnapshotHash, approver: &str, key: &str) -> DecisionBody {
        DecisionBody {
            verdict: Verdict::Approve,
            reason: "ok".into(),
            snapshot_hash: hash.clone(),
            decided_at: now(),
            approver: approver.into(),
            idempotency_key: key.into(),
            public_key: None,
            signature: None,
            payload: None,
            answer: None,
        }
    }

    #[test]
    fn open_refuses_a_file_that_is_not_a_database_and_leaves_it_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let garbage =
            b"this is not a database, just some text that is long enough..........".repeat(20);
        std::fs::write(&path, &garbage).unwrap();
        let err = Store::open(&path).err().expect("refused");
        assert!(matches!(err, ServerError::NotAStateFile { .. }), "{err}");
        assert!(err.to_string().contains("state.db"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
    }

    #[test]
    fn open_refuses_a_newer_schema_and_another_applications_database() {
        let dir = tempfile::tempdir().unwrap();
        let newer = dir.path().join("newer.db");
        {
            let c = Connection::open(&newer).unwrap();
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let before = std::fs::read(&newer).unwrap();
        let err = Store::open(&newer).err().expect("refused");
        assert!(
            matches!(err, ServerError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1)
        );
        assert_eq!(std::fs::read(&newer).unwrap(), before);

        let foreign = dir.path().join("foreign.db");
        {
            let c = Connection::open(&foreign).unwrap();
            c.execute_batch("CREATE TABLE t (x)").unwrap();
        }
        let err = Store::open(&foreign).err().expect("refused");
        assert!(matches!(err, ServerError::NotAStateFile { .. }), "{err}");
    }

    #[test]
    fn reopen_keeps_actions_events_and_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (action, created) = {
            let store = Store::open(&path).unwrap();
            store.create(new_action("a1"), now()).unwrap()
        };
        assert!(created);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.get("a1").unwrap(), Some(action.clone()));
        assert_eq!(store.latest_event_id().unwrap(), 1);
        let answer = store
            .decide("a1", &decision(&action.snapshot_hash, "sam", "k1"), now())
            .unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        // Same key after a restart: the stored answer, nothing applied again.
        let again = store
            .decide("a1", &decision(&action.snapshot_hash, "sam", "k1"), now())
            .unwrap();
        assert_eq!(again, answer);
        assert_eq!(store.get("a1").unwrap().unwrap().snapshot.reviews.len(), 1);
    }

    #[test]
    fn two_approvals_settle_the_action_and_each_changes_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let (a, _) = store.create(new_action("a"), now()).unwrap();
        store
            .decide("a", &decision(&a.snapshot_hash, "sam", "k1"), now())
            .unwrap();
        let b = store.get("a").unwrap().unwrap();
        assert_eq!(b.snapshot.status, ActionStatus::Pending);
        assert_ne!(a.snapshot_hash, b.snapshot_hash);
        assert_eq!(b.snapshot_hash, b.snapshot.hash());
        // The same person cannot provide the second approval.
        let err = store
            .decide("a", &decision(&b.snapshot_hash, "sam", "k2"), now())
            .unwrap_err();
        assert!(matches!(err, ApiError::Forbidden(_)));
        store
            .decide("a", &decision(&b.snapshot_hash, "kim", "k3"), now())
            .unwrap();
        let c = store.get("a").unwrap().unwrap();
        assert_eq!(c.snapshot.status, ActionStatus::Approved);
        let kinds: Vec<_> = c.timeline.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["requested", "reviewed", "reviewed", "approved"]);
    }

    #[test]
    fn expire_due_expires_only_what_is_due_and_logs_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let t0 = now();
        store.create(new_action("soon"), t0).unwrap();
        let mut later = new_action("later");
        later.expires_in_secs = Some(6000);
        store.create(later, t0).unwrap();
        assert_eq!(store.expire_due(t0).unwrap(), 0);
        assert_eq!(
            store
                .expire_due(t0 + chrono::Duration::seconds(600))
                .unwrap(),
            1
        );
        assert_eq!(
            store.get("soon").unwrap().unwrap().snapshot.status,
            ActionStatus::Expired
        );
        assert_eq!(
            store.get("later").unwrap().unwrap().snapshot.status,
            ActionStatus::Pending
        );
        let names: Vec<_> = store
            .events_after(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.event.clone())
            .collect();
        assert_eq!(
            names,
            [
                "action.created",
                "action.created",
                "timeline.appended",
                "action.updated"
            ]
        );
    }

    #[test]
    fn validate_new_names_the_offending_field() {
        let field = |n: NewAction| match validate_new(&n) {
            Err(ApiError::Malformed { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let mut n = new_action("x");
        n.id = Some("a/b".into());
        assert_eq!(field(n).as_deref(), Some("id"));
        let mut n = new_action("x");
        n.title = " ".into();
        assert_eq!(field(n).as_deref(), Some("title"));
        let mut n = new_action("x");
        n.approvals_required = Some(0);
        assert_eq!(field(n).as_deref(), Some("approvals_required"));
        let mut n = new_action("x");
        n.web_url = Some("javascript:alert(1)".into());
        assert_eq!(field(n).as_deref(), Some("web_url"));
        let mut n = new_action("x");
        n.details = vec![Detail {
            key: String::new(),
            value: "v".into(),
        }];
        assert_eq!(field(n).as_deref(), Some("details[0].key"));
        assert!(validate_new(&new_action("ok-id_1.2:3")).is_ok());
    }
}
