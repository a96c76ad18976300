//! The local cache and log: one SQLite file (WAL, foreign keys on, versioned schema).
//!
//! Writers hold one connection behind a mutex; SQLite calls are short, so callers on
//! async tasks call straight in. Every method that records something a person did
//! writes it together with its timeline event in one transaction.

mod audit_rows;
mod history;
mod schema;

pub use audit_rows::AuditRows;
pub use history::{history_key_base, HistoryCursor, HistoryPage, HistoryQuery, SnapshotVersion};
pub use schema::FILL_SEARCH;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use serde::Serialize;
use thiserror::Error;

use crate::audit::{self, AuditEntry, EntryKind};
use crate::backends::SyncCursor;
use crate::model::{
    ActionKey, ActionKind, ActionSnapshot, ActionStatus, Decision, DeliveryState, EventSource,
    PendingAction, RemoteAction, TimelineEvent, TimelineKind, Verdict,
};
use crate::snapshot::{format_millis, SnapshotHash};

pub const DB_FILE: &str = "countersign.db";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("{path} is not a Countersign database (not SQLite); it was left untouched")]
    NotADatabase { path: PathBuf },
    #[error(
        "{path} was written by a newer Countersign (schema {found}, this build knows {supported}); \
         it was left untouched: upgrade Countersign or point --data-dir elsewhere"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("database {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("database {path} is busy (another process holds a lock): {detail}")]
    Busy { path: PathBuf, detail: String },
    #[error("database {path}: {detail}")]
    Sqlite { path: PathBuf, detail: String },
    #[error("database {path}: bad value in {column}: {detail}")]
    Decode {
        path: PathBuf,
        column: &'static str,
        detail: String,
    },
    #[error("unknown backend `{0}`")]
    UnknownBackend(String),
    #[error("unknown action `{0}`")]
    UnknownAction(String),
    /// More actions than fit the history order (2^20) claim the same request
    /// millisecond: only a backend sending them on purpose gets here.
    #[error(
        "action `{action}` was refused: over a million actions claim to be requested at \
         the same millisecond ({requested_at}), more than history can order"
    )]
    HistoryFull {
        action: String,
        requested_at: String,
    },
    /// A history cursor this store did not hand out.
    #[error("bad history cursor: {0}")]
    BadCursor(String),
}

/// One open database.
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Outbox entries a task of this process is delivering right now (see
    /// [`DeliveryClaim`]). Lock order: `conn`, then `in_flight`.
    in_flight: Mutex<HashSet<i64>>,
    /// Actions whose search document is out of date in the open write transaction
    /// (their row, a timeline line or a decision was written). Rewritten once each just
    /// before commit ([`Store::commit`]), so a sync batch writes one document per action
    /// instead of an index segment per row. Lock order: `conn`, then `touched`; only
    /// filled while `conn` is held inside a transaction.
    touched: Mutex<BTreeSet<i64>>,
    /// True while the connection runs with `synchronous = NORMAL` (see
    /// [`Store::write_relaxed`]). Only changed with `conn` held; every other write
    /// finds it false ([`Store::conn`] puts FULL back first).
    relaxed: AtomicBool,
    /// Copies the WAL into the database on its own connection and thread (file stores
    /// only; see [`Checkpointer`]).
    checkpointer: Option<Checkpointer>,
}

/// WAL pages (of 4 KiB) past which a commit asks for a checkpoint: SQLite's own
/// automatic threshold.
const CHECKPOINT_PAGES: u64 = 1000;

/// Checkpoints the WAL from a second connection on a thread of its own, when a commit
/// has left the log past [`CHECKPOINT_PAGES`].
///
/// SQLite's automatic checkpoint runs inside the committing call, so after every large
/// sync list the writer held the store lock through two fsyncs (the log, then the
/// database: 20-40 ms each, profiled) while the next list waited. A PASSIVE checkpoint
/// on another connection neither takes nor waits for the writer's lock: writes go on
/// meanwhile, and SQLite restarts the log from its start once a checkpoint has caught
/// up. Durability is unchanged: a commit is durable by its own WAL fsync (or, relaxed,
/// as [`Store::write_relaxed`] says), never by a checkpoint. The last connection to
/// close still checkpoints the rest, as before.
struct Checkpointer {
    wal: PathBuf,
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Option<Self> {
        let conn = match Connection::open(path) {
            Ok(c) => c,
            Err(e) => {
                // Without it the writer's automatic checkpoints stay on (see `init`).
                tracing::warn!("cannot open a checkpoint connection: {e}");
                return None;
            }
        };
        // One pending wake-up is enough: a checkpoint copies whatever is in the log.
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                        tracing::warn!("WAL checkpoint failed: {e}");
                    }
                }
            })
            .ok()?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Some(Self {
            wal: PathBuf::from(wal),
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint if the log has grown past the threshold.
    fn after_commit(&self) {
        let Ok(meta) = std::fs::metadata(&self.wal) else {
            return;
        };
        if meta.len() > CHECKPOINT_PAGES * 4096 {
            if let Some(wake) = &self.wake {
                // Full: one is already asked for; it will copy this commit too.
                let _ = wake.try_send(());
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Closing the channel ends the thread after the checkpoint it may be running.
        self.wake = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The right to deliver one queued decision: while it is held, no other task of this
/// process sends that decision. A decision's own first attempt and the sync task's
/// outbox pass would otherwise POST it at the same moment; the idempotency key keeps it
/// applied once, but a second request could land inside a backend's Retry-After.
/// Released on drop. (Two processes on one data dir can still both send it; the
/// idempotency key covers that.)
#[must_use = "the claim is released when dropped"]
pub struct DeliveryClaim<'a> {
    store: &'a Store,
    decision_id: i64,
}

impl DeliveryClaim<'_> {
    pub fn decision_id(&self) -> i64 {
        self.decision_id
    }
}

impl Drop for DeliveryClaim<'_> {
    fn drop(&mut self) {
        self.store.in_flight().remove(&self.decision_id);
    }
}

/// What storing an action from a backend changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum ActionChange {
    Created,
    /// Its snapshot (what a person sees) changed.
    Updated,
    /// Same snapshot; maybe new timeline events.
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChange {
    pub key: ActionKey,
    pub change: ActionChange,
    pub new_events: usize,
}

/// A backend's health as the sync task last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct BackendStatus {
    pub name: String,
    pub kind: String,
    pub url: String,
    /// `starting`, `ok` or `degraded`.
    pub status: String,
    pub last_error: Option<String>,
    pub last_error_code: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub last_ok_at: Option<DateTime<Utc>>,
    pub pending: u32,
}

/// A decision waiting in the outbox.
#[derive(Debug, Clone)]
pub struct QueuedDecision {
    pub id: i64,
    pub attempts: u32,
    pub decision: Decision,
}

/// Which audit entries to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub backend: Option<String>,
}

/// An audit entry about to be appended (the store computes the hashes).
struct NewEntry<'a> {
    at: DateTime<Utc>,
    kind: EntryKind,
    action_id: Option<i64>,
    decision_id: Option<i64>,
    payload: &'a str,
    signature: Option<&'a str>,
    public_key: Option<&'a str>,
    key_fingerprint: Option<&'a str>,
}

/// Filter for listing actions.
#[derive(Debug, Clone, Default)]
pub struct ActionQuery {
    pub backend: Option<String>,
    /// `None` lists every status (history).
    pub status: Option<ActionStatus>,
    pub limit: Option<u32>,
}

impl Store {
    /// Opens (creating if needed) `countersign.db` in `data_dir`.
    pub fn open_in_dir(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
            path: data_dir.to_owned(),
            detail: e.to_string(),
        })?;
        Self::open(&data_dir.join(DB_FILE))
    }

    /// Opens a database file. A file that is not SQLite, or that a newer version wrote,
    /// is refused before anything is written to it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        check_header(path)?;
        let conn = Connection::open(path).map_err(|e| StoreError::Open {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        Self::init(path.to_owned(), conn)
    }

    /// A private in-memory database, for tests and dry runs.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| StoreError::Open {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        Self::init(path, conn)
    }

    fn init(path: PathBuf, mut conn: Connection) -> Result<Self, StoreError> {
        let err = |e: rusqlite::Error| map_err(&path, e);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        let supported = schema::MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::NewerSchema {
                path,
                found: version,
                supported,
            });
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        // FULL: a decision acknowledged to the person survives power loss, not only a crash.
        // Foreign keys are off while migrating: a migration that rebuilds a table (the
        // only way to change a CHECK in SQLite) must drop the old one while other tables
        // still point at it. Each migration proves the keys hold before it commits.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;",
        )
        .map_err(err)?;
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            let dangling: i64 = tx
                .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                    r.get(0)
                })
                .map_err(err)?;
            if dangling != 0 {
                return Err(StoreError::Decode {
                    path,
                    column: "foreign keys",
                    detail: format!("migration {} left {dangling} dangling references", i + 1),
                });
            }
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .map_err(err)?;
            tx.commit().map_err(err)?;
        }
        conn.execute_batch("PRAGMA foreign_keys = ON;")
            .map_err(err)?;
        // Every hot statement stays prepared (rusqlite keeps 16 by default; the store
        // has more than that in regular use).
        conn.set_prepared_statement_cache_capacity(64);
        // File stores checkpoint off the writer's lock (see `Checkpointer`); only then
        // are the writer's automatic checkpoints turned off.
        let checkpointer = if path.as_os_str() == ":memory:" {
            None
        } else {
            Checkpointer::start(&path)
        };
        if checkpointer.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(err)?;
            // When the log restarts, cut it back to the threshold: its file size then
            // tells `Checkpointer::after_commit` how much is waiting.
            conn.pragma_update(None, "journal_size_limit", CHECKPOINT_PAGES * 4096)
                .map_err(err)?;
        }
        Ok(Self {
            path,
            conn: Mutex::new(conn),
            in_flight: Mutex::new(HashSet::new()),
            touched: Mutex::new(BTreeSet::new()),
            relaxed: AtomicBool::new(false),
            checkpointer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions
        // roll back on drop), so a poisoned lock is safe to keep using.
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if self.relaxed.load(Ordering::Acquire) {
            // A relaxed write could not put FULL back (or panicked): do it before anyone
            // else writes. Should that fail too, `begin` refuses durable transactions.
            self.set_relaxed(&conn, false);
        }
        conn
    }

    /// Switches the connection between `synchronous = NORMAL` (`relaxed`) and FULL.
    /// Only called with `conn` held, outside a transaction. Returns whether the
    /// connection is now in the wanted mode.
    fn set_relaxed(&self, conn: &Connection, relaxed: bool) -> bool {
        let level = if relaxed { "NORMAL" } else { "FULL" };
        match conn.pragma_update(None, "synchronous", level) {
            Ok(()) => {
                self.relaxed.store(relaxed, Ordering::Release);
                true
            }
            Err(e) => {
                tracing::warn!("cannot set synchronous = {level}: {e}");
                false
            }
        }
    }

    fn in_flight(&self) -> MutexGuard<'_, HashSet<i64>> {
        // Held only to insert or remove one id: a poisoned set is still consistent.
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn touched(&self) -> MutexGuard<'_, BTreeSet<i64>> {
        // Held only to insert or take ids: a poisoned set is still consistent.
        self.touched.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        map_err(&self.path, e)
    }

    /// Runs `f` in one transaction and commits it with the search documents it made
    /// stale rewritten ([`Store::commit`]).
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn();
        let tx = self.begin(&mut conn)?;
        let out = f(&tx);
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                // The transaction rolls back on drop: so do its marks.
                self.touched().clear();
                return Err(e);
            }
        };
        self.commit(tx)?;
        Ok(out)
    }

    /// Runs `f` in one transaction committed with `synchronous = NORMAL`: for what the
    /// sync task copies from a backend (actions, timelines, cursors, backend health),
    /// never for what a person did.
    ///
    /// Why that is safe: in WAL mode NORMAL skips only the fsync of the log at each
    /// commit. A crash of the process (SIGKILL, panic: `tests/power_loss.rs`) loses
    /// nothing, since the log is in the OS's cache; a power cut or OS crash can lose
    /// the last few commits, but only a suffix of them (the log is replayed in order,
    /// up to its last intact commit), and the database stays consistent. A lost suffix
    /// of sync writes is a sync that has not happened yet: the cursor is written after
    /// (or with) the data it covers, so the next pass fetches the same list again and
    /// stores it idempotently. Decisions, deliveries and the audit chain are written by
    /// [`Store::write`] with FULL, whose fsync of the log also makes every earlier
    /// relaxed commit durable, so a decision can never survive without the action rows
    /// it points at. The saving: the fsync of several MB of log per list (tens of ms
    /// each, with the store locked).
    fn write_relaxed<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn();
        // Not switched: the write still goes ahead, durably (FULL).
        self.set_relaxed(&conn, true);
        let out = self.begin_in_mode(&mut conn).and_then(|tx| match f(&tx) {
            Ok(out) => self.commit(tx).map(|()| out),
            Err(e) => {
                self.touched().clear();
                Err(e)
            }
        });
        // If this fails, the flag stays set and the next `conn()` retries.
        self.set_relaxed(&conn, false);
        out
    }

    /// Runs one autocommit statement under `synchronous = NORMAL` (see
    /// [`Store::write_relaxed`] for why that is safe for sync bookkeeping).
    fn execute_relaxed(&self, sql: &str, p: impl rusqlite::Params) -> Result<usize, StoreError> {
        let conn = self.conn();
        self.set_relaxed(&conn, true);
        let out = conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute(p))
            .map_err(|e| self.err(e));
        self.set_relaxed(&conn, false);
        out
    }

    /// Opens a write transaction. Every write transaction ends in [`Store::commit`].
    /// Refused while the connection is stuck in relaxed mode: such a transaction would
    /// not be durable against power loss.
    fn begin<'c>(&self, conn: &'c mut Connection) -> Result<Transaction<'c>, StoreError> {
        if self.relaxed.load(Ordering::Acquire) && !self.set_relaxed(conn, false) {
            return Err(StoreError::Sqlite {
                path: self.path.clone(),
                detail:
                    "cannot make the connection durable again (PRAGMA synchronous = FULL failed)"
                        .into(),
            });
        }
        self.begin_in_mode(conn)
    }

    /// Opens a write transaction in whatever durability mode the connection is in.
    fn begin_in_mode<'c>(&self, conn: &'c mut Connection) -> Result<Transaction<'c>, StoreError> {
        // Marks left by a transaction that failed before its commit are moot (it
        // rolled back); rewriting them would be harmless, but they are not ours.
        self.touched().clear();
        conn.transaction().map_err(|e| self.err(e))
    }

    /// Rewrites the search document of every action marked in this transaction, then
    /// commits: the index never shows a state the tables do not have.
    fn commit(&self, tx: Transaction<'_>) -> Result<(), StoreError> {
        let touched = std::mem::take(&mut *self.touched());
        for id in touched {
            if let Err(e) = self.write_search_doc(&tx, id) {
                self.touched().clear();
                return Err(e);
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        if let Some(c) = &self.checkpointer {
            c.after_commit();
        }
        Ok(())
    }

    /// Marks an action's search document stale in the open transaction.
    fn touch(&self, _tx: &Transaction<'_>, action_id: i64) {
        // `_tx`: proof that a transaction is open, so the mark is taken by its commit.
        self.touched().insert(action_id);
    }

    /// Writes one action's search document (see migration 5) from its row, timeline
    /// and decisions, replacing the one under its history key.
    fn write_search_doc(&self, tx: &Transaction<'_>, action_id: i64) -> Result<(), StoreError> {
        let row: Option<(Option<i64>, String, String, String, String, String)> = tx
            .prepare_cached(
                "SELECT history_key, title, summary, requester, resource, details_json
                 FROM actions WHERE id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([action_id], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
            })
            .optional()
            .map_err(|e| self.err(e))?;
        // No row, or no key (never: only a migrated row beyond 2^20 in one millisecond):
        // nothing to index.
        let Some((Some(key), title, summary, requester, resource, details)) = row else {
            return Ok(());
        };
        // The same words as the migration's fill (schema::FILL_SEARCH): each timeline line
        // with its actor, then each decision's approver and reason.
        let mut notes = String::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT coalesce(actor, ''), text FROM timeline_events
                     WHERE action_id = ?1 ORDER BY id",
                )
                .map_err(|e| self.err(e))?;
            let mut rows = stmt.query([action_id]).map_err(|e| self.err(e))?;
            while let Some(r) = rows.next().map_err(|e| self.err(e))? {
                push_note(&mut notes, r).map_err(|e| self.err(e))?;
            }
        }
        notes.push('\n');
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT approver, reason FROM decisions WHERE action_id = ?1 ORDER BY id",
                )
                .map_err(|e| self.err(e))?;
            let mut rows = stmt.query([action_id]).map_err(|e| self.err(e))?;
            while let Some(r) = rows.next().map_err(|e| self.err(e))? {
                push_note(&mut notes, r).map_err(|e| self.err(e))?;
            }
        }
        // Single-row statements: FTS5 keeps them in its pending buffer until commit
        // (an INSERT … SELECT would open a statement savepoint, which flushes it).
        tx.prepare_cached("DELETE FROM action_search WHERE rowid = ?1")
            .and_then(|mut stmt| stmt.execute([key]))
            .map_err(|e| self.err(e))?;
        tx.prepare_cached(
            "INSERT INTO action_search (rowid, title, summary, requester, resource, details, notes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                key, title, summary, requester, resource, details, notes
            ])
        })
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The next free history key for an action requested at `at`: the first slot after
    /// the highest one taken in that millisecond's block.
    fn next_history_key(
        &self,
        tx: &Transaction<'_>,
        action: &ActionKey,
        at: &DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let base = history_key_base(at);
        let last = base | history::SLOT_MASK;
        let highest: Option<i64> = tx
            .prepare_cached(
                "SELECT max(history_key) FROM actions WHERE history_key BETWEEN ?1 AND ?2",
            )
            .and_then(|mut stmt| stmt.query_row(params![base, last], |r| r.get(0)))
            .map_err(|e| self.err(e))?;
        match highest {
            None => Ok(base),
            Some(h) if h < last => Ok(h + 1),
            Some(_) => Err(StoreError::HistoryFull {
                action: action.to_string(),
                requested_at: format_millis(at),
            }),
        }
    }

    // ---- backends -------------------------------------------------------------------

    /// Registers (or updates) a configured backend; returns its row id.
    pub fn register_backend(&self, name: &str, kind: &str, url: &str) -> Result<i64, StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO backends (name, kind, url) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, url = excluded.url",
                params![name, kind, url],
            )
            .map_err(|e| self.err(e))?;
            backend_id(tx, name)
                .map_err(|e| self.err(e))?
                .ok_or_else(|| StoreError::UnknownBackend(name.into()))
        })
    }

    pub fn sync_cursor(&self, backend: &str) -> Result<SyncCursor, StoreError> {
        self.conn()
            .query_row(
                "SELECT etag, cursor, last_event_id FROM backends WHERE name = ?1",
                [backend],
                |r| {
                    Ok(SyncCursor {
                        etag: r.get(0)?,
                        cursor: r.get(1)?,
                        last_event_id: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::UnknownBackend(backend.into()))
    }

    pub fn save_sync_cursor(&self, backend: &str, cursor: &SyncCursor) -> Result<(), StoreError> {
        // Relaxed: a cursor lost to a power cut only makes the next pass fetch again,
        // and it is written after the data it covers (so never survives without it).
        self.execute_relaxed(
            "UPDATE backends SET etag = ?2, cursor = ?3, last_event_id = ?4 WHERE name = ?1",
            params![backend, cursor.etag, cursor.cursor, cursor.last_event_id],
        )?;
        Ok(())
    }

    /// Records a successful exchange; returns true when the backend was not `ok` before.
    pub fn mark_backend_ok(&self, backend: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let conn = self.conn();
        let was: Option<String> = conn
            .query_row(
                "SELECT status FROM backends WHERE name = ?1",
                [backend],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        conn.execute(
            "UPDATE backends SET status = 'ok', last_ok_at = ?2, next_retry_at = NULL WHERE name = ?1",
            params![backend, format_millis(&now)],
        )
        .map_err(|e| self.err(e))?;
        Ok(was.as_deref() != Some("ok"))
    }

    pub fn mark_backend_degraded(
        &self,
        backend: &str,
        code: &str,
        error: &str,
        next_retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE backends SET status = 'degraded', last_error = ?2, last_error_code = ?3,
                 last_error_at = ?4, next_retry_at = ?5 WHERE name = ?1",
                params![
                    backend,
                    error,
                    code,
                    format_millis(&now),
                    format_millis(&next_retry_at)
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn backend_statuses(&self) -> Result<Vec<BackendStatus>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT b.name, b.kind, b.url, b.status, b.last_error, b.last_error_code,
                        b.last_error_at, b.next_retry_at, b.last_ok_at,
                        (SELECT count(*) FROM actions a WHERE a.backend_id = b.id AND a.status = 'pending')
                 FROM backends b ORDER BY b.name",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(BackendStatus {
                    name: r.get(0)?,
                    kind: r.get(1)?,
                    url: r.get(2)?,
                    status: r.get(3)?,
                    last_error: r.get(4)?,
                    last_error_code: r.get(5)?,
                    last_error_at: opt_time(r, 6)?,
                    next_retry_at: opt_time(r, 7)?,
                    last_ok_at: opt_time(r, 8)?,
                    pending: r.get(9)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    // ---- actions and their timeline ---------------------------------------------------

    /// Stores what a backend reported, all in one transaction: the actions (a new
    /// snapshot is kept for later diffs) and any timeline events not seen before.
    pub fn apply_remote(
        &self,
        backend: &str,
        actions: &[RemoteAction],
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredChange>, StoreError> {
        // Copied from the backend, which keeps the truth: relaxed durability.
        self.write_relaxed(|tx| {
            let backend_id = backend_id(tx, backend)
                .map_err(|e| self.err(e))?
                .ok_or_else(|| StoreError::UnknownBackend(backend.into()))?;
            let mut out = Vec::with_capacity(actions.len());
            for remote in actions {
                let (action_id, change) =
                    self.upsert_action(tx, backend_id, &remote.action, now)?;
                let mut new_events = 0;
                for event in &remote.timeline {
                    new_events += self.insert_event(tx, action_id, event)?;
                }
                out.push(StoredChange {
                    key: remote.action.key.clone(),
                    change,
                    new_events,
                });
            }
            Ok(out)
        })
    }

    fn upsert_action(
        &self,
        tx: &Transaction<'_>,
        backend_id: i64,
        action: &PendingAction,
        now: DateTime<Utc>,
    ) -> Result<(i64, ActionChange), StoreError> {
        let s = &action.snapshot;
        // Cached statements: a sync stores thousands of actions per transaction, and
        // parsing each statement anew was a third of the time (profiled).
        let existing: Option<(i64, String, String, Option<i64>)> = tx
            .prepare_cached(
                "SELECT id, snapshot_hash, status, history_key FROM actions
                 WHERE backend_id = ?1 AND external_id = ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![backend_id, action.key.external_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
            })
            .optional()
            .map_err(|e| self.err(e))?;
        let details = serde_json::to_string(&s.details).unwrap_or_default();
        let reviews = serde_json::to_string(&s.reviews).unwrap_or_default();
        let form = s
            .form
            .as_ref()
            .map(|f| serde_json::to_string(f).unwrap_or_default());
        let now_s = format_millis(&now);
        let change = match &existing {
            // The status is compared too: the engine closes an action it no longer sees
            // listed (`set_status`) without a new snapshot, and a backend that lists it
            // again, unchanged, must reopen it.
            Some((_, hash, status, _))
                if *hash == action.snapshot_hash.0 && status == s.status.as_str() =>
            {
                ActionChange::Unchanged
            }
            Some(_) => ActionChange::Updated,
            None => ActionChange::Created,
        };
        let old_key = existing.as_ref().and_then(|e| e.3);
        // A new action gets its history key in its INSERT: setting it afterwards rewrote
        // the row and the four history indexes a second time (profiled: the UPDATE was a
        // tenth of an ingest). NULL on the update path, where it is not used (the DO
        // UPDATE leaves the key alone) and can collide with no other row.
        let new_key = match change {
            ActionChange::Created => {
                Some(self.next_history_key(tx, &action.key, &s.requested_at)?)
            }
            _ => None,
        };
        let id = match existing {
            Some((id, _, _, _)) if change == ActionChange::Unchanged => id,
            _ => tx
                .prepare_cached(
                    "INSERT INTO actions (backend_id, external_id, kind, title, summary, requester,
                        requested_at, expires_at, resource, details_json, approvals_required,
                        reviews_json, status, web_url, snapshot_hash, first_seen_at, updated_at,
                        form_json, history_key)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16, ?17, ?18)
                     ON CONFLICT (backend_id, external_id) DO UPDATE SET
                        kind = excluded.kind, title = excluded.title, summary = excluded.summary,
                        requester = excluded.requester, requested_at = excluded.requested_at,
                        expires_at = excluded.expires_at, resource = excluded.resource,
                        details_json = excluded.details_json,
                        approvals_required = excluded.approvals_required,
                        reviews_json = excluded.reviews_json, status = excluded.status,
                        web_url = excluded.web_url, snapshot_hash = excluded.snapshot_hash,
                        updated_at = excluded.updated_at, form_json = excluded.form_json
                     RETURNING id",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![
                        backend_id,
                        action.key.external_id,
                        s.kind.as_str(),
                        s.title,
                        s.summary,
                        s.requester,
                        format_millis(&s.requested_at),
                        s.expires_at.as_ref().map(format_millis),
                        s.resource,
                        details,
                        s.approvals_required,
                        reviews,
                        s.status.as_str(),
                        s.web_url,
                        action.snapshot_hash.0,
                        now_s,
                        form,
                        new_key,
                    ],
                    |r| r.get(0),
                )
                })
                .map_err(|e| self.err(e))?,
        };
        if change != ActionChange::Unchanged {
            // A changed request time moves an action to its new place (its document
            // leaves the old key now and is written under the new one at commit). A new
            // action has its key already; one without a key (only a migrated row beyond
            // 2^20 in one millisecond) gets one here.
            let in_block = new_key.is_some()
                || old_key
                    .is_some_and(|k| k & !history::SLOT_MASK == history_key_base(&s.requested_at));
            if !in_block {
                let key = self.next_history_key(tx, &action.key, &s.requested_at)?;
                if let Some(old) = old_key {
                    tx.prepare_cached("DELETE FROM action_search WHERE rowid = ?1")
                        .and_then(|mut stmt| stmt.execute([old]))
                        .map_err(|e| self.err(e))?;
                }
                tx.prepare_cached("UPDATE actions SET history_key = ?2 WHERE id = ?1")
                    .and_then(|mut stmt| stmt.execute(params![id, key]))
                    .map_err(|e| self.err(e))?;
            }
            self.touch(tx, id);
            tx.prepare_cached(
                "INSERT OR IGNORE INTO snapshots (action_id, snapshot_hash, snapshot_json, first_seen_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id,
                    action.snapshot_hash.0,
                    serde_json::to_string(s).unwrap_or_default(),
                    now_s
                ])
            })
            .map_err(|e| self.err(e))?;
        }
        Ok((id, change))
    }

    /// Inserts one timeline event; 0 when a backend event with that id is already stored.
    fn insert_event(
        &self,
        tx: &Transaction<'_>,
        action_id: i64,
        event: &TimelineEvent,
    ) -> Result<usize, StoreError> {
        let n = tx.prepare_cached(
            "INSERT OR IGNORE INTO timeline_events (action_id, at, source, kind, actor, text, external_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                action_id,
                format_millis(&event.at),
                event.source.as_str(),
                event.kind.as_str(),
                event.actor,
                event.text,
                event.external_id,
            ])
        })
        .map_err(|e| self.err(e))?;
        if n > 0 {
            self.touch(tx, action_id);
        }
        Ok(n)
    }

    /// Appends timeline events to a stored action. Unknown action → `UnknownAction`.
    pub fn append_timeline(
        &self,
        key: &ActionKey,
        events: &[TimelineEvent],
    ) -> Result<usize, StoreError> {
        self.write(|tx| {
            let id = self.action_id(tx, key)?;
            let mut n = 0;
            for e in events {
                n += self.insert_event(tx, id, e)?;
            }
            Ok(n)
        })
    }

    fn action_id(&self, conn: &Connection, key: &ActionKey) -> Result<i64, StoreError> {
        conn.query_row(
            "SELECT a.id FROM actions a JOIN backends b ON b.id = a.backend_id
             WHERE b.name = ?1 AND a.external_id = ?2",
            params![key.backend, key.external_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.err(e))?
        .ok_or_else(|| StoreError::UnknownAction(key.to_string()))
    }

    pub fn action(&self, key: &ActionKey) -> Result<Option<PendingAction>, StoreError> {
        let conn = self.conn();
        let sql = format!("{ACTION_SELECT} WHERE b.name = ?1 AND a.external_id = ?2");
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(params![key.backend, key.external_id])
            .map_err(|e| self.err(e))?;
        match rows.next().map_err(|e| self.err(e))? {
            Some(row) => Ok(Some(self.action_from_row(row)?)),
            None => Ok(None),
        }
    }

    /// Actions matching `query`, soonest expiry first (never-expiring ones last).
    pub fn actions(&self, query: &ActionQuery) -> Result<Vec<PendingAction>, StoreError> {
        let conn = self.conn();
        // Only the filters given: `(?2 IS NULL OR a.status = ?2)` would keep SQLite from
        // the status index, and the inbox would read every action ever seen (the bench
        // measured 0.5 s at 1,000,000). Parameters keep their numbers (SQLite counts up
        // to the highest, ?3), so the same three are bound whichever filters are used.
        let mut filters = vec!["1"];
        if query.backend.is_some() {
            filters.push("b.name = ?1");
        }
        if query.status.is_some() {
            filters.push("a.status = ?2");
        }
        let sql = format!(
            "{ACTION_SELECT} WHERE {}
             ORDER BY a.expires_at IS NULL, a.expires_at, a.requested_at, a.id LIMIT ?3",
            filters.join(" AND ")
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(params![
                query.backend,
                query.status.map(ActionStatus::as_str),
                query.limit.map_or(-1, i64::from)
            ])
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            out.push(self.action_from_row(row)?);
        }
        Ok(out)
    }

    /// Every action ever seen, newest request first.
    pub fn history(&self, limit: u32) -> Result<Vec<PendingAction>, StoreError> {
        let conn = self.conn();
        let sql = format!(
            "{ACTION_SELECT} WHERE a.history_key IS NOT NULL ORDER BY a.history_key DESC LIMIT ?1"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query([limit]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            out.push(self.action_from_row(row)?);
        }
        Ok(out)
    }

    /// External ids of this backend's actions that the store still thinks are pending.
    pub fn open_external_ids(&self, backend: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT a.external_id FROM actions a JOIN backends b ON b.id = a.backend_id
                 WHERE b.name = ?1 AND a.status = 'pending' ORDER BY a.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([backend], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Marks an action with a status the backend no longer reports (it vanished).
    pub fn set_status(
        &self,
        key: &ActionKey,
        status: ActionStatus,
        event: &TimelineEvent,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let id = self.action_id(tx, key)?;
            tx.execute(
                "UPDATE actions SET status = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, status.as_str(), format_millis(&now)],
            )
            .map_err(|e| self.err(e))?;
            self.insert_event(tx, id, event)?;
            Ok(())
        })
    }

    /// The timeline: backend and local events merged in time order.
    pub fn timeline(&self, key: &ActionKey) -> Result<Vec<TimelineEvent>, StoreError> {
        let conn = self.conn();
        let id = self.action_id(&conn, key)?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT at, source, kind, actor, text, external_id FROM timeline_events
                 WHERE action_id = ?1 ORDER BY at, id",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([id]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let source: String = r.get(1).map_err(|e| self.err(e))?;
            let kind: String = r.get(2).map_err(|e| self.err(e))?;
            out.push(TimelineEvent {
                at: self.time(r, 0, "timeline_events.at")?,
                source: if source == "local" {
                    EventSource::Local
                } else {
                    EventSource::Backend
                },
                kind: TimelineKind::parse(&kind),
                actor: r.get(3).map_err(|e| self.err(e))?,
                text: r.get(4).map_err(|e| self.err(e))?,
                external_id: r.get(5).map_err(|e| self.err(e))?,
            });
        }
        Ok(out)
    }

    /// A snapshot of this action that was seen before, by its hash.
    pub fn snapshot(
        &self,
        key: &ActionKey,
        hash: &SnapshotHash,
    ) -> Result<Option<ActionSnapshot>, StoreError> {
        let conn = self.conn();
        let id = self.action_id(&conn, key)?;
        let json: Option<String> = conn
            .query_row(
                "SELECT snapshot_json FROM snapshots WHERE action_id = ?1 AND snapshot_hash = ?2",
                params![id, hash.0],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| StoreError::Decode {
                path: self.path.clone(),
                column: "snapshots.snapshot_json",
                detail: e.to_string(),
            })
        })
        .transpose()
    }

    fn action_from_row(&self, r: &Row<'_>) -> Result<PendingAction, StoreError> {
        let get_s = |i: usize| -> Result<String, StoreError> { r.get(i).map_err(|e| self.err(e)) };
        let status_s = get_s(10)?;
        let snapshot = ActionSnapshot {
            kind: ActionKind::parse(&get_s(2)?),
            title: get_s(3)?,
            summary: get_s(4)?,
            requester: get_s(5)?,
            requested_at: self.time(r, 6, "actions.requested_at")?,
            expires_at: self.opt_time(r, 7, "actions.expires_at")?,
            resource: get_s(8)?,
            details: self.json(r, 9, "actions.details_json")?,
            approvals_required: r.get(11).map_err(|e| self.err(e))?,
            reviews: self.json(r, 12, "actions.reviews_json")?,
            status: ActionStatus::parse(&status_s).ok_or_else(|| StoreError::Decode {
                path: self.path.clone(),
                column: "actions.status",
                detail: format!("unknown status `{status_s}`"),
            })?,
            web_url: r.get(13).map_err(|e| self.err(e))?,
            form: self.opt_json(r, 15, "actions.form_json")?,
        };
        Ok(PendingAction {
            key: ActionKey::new(get_s(0)?, get_s(1)?),
            snapshot,
            snapshot_hash: SnapshotHash(get_s(14)?),
        })
    }

    fn opt_json<T: serde::de::DeserializeOwned>(
        &self,
        r: &Row<'_>,
        i: usize,
        column: &'static str,
    ) -> Result<Option<T>, StoreError> {
        let text: Option<String> = r.get(i).map_err(|e| self.err(e))?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StoreError::Decode {
                path: self.path.clone(),
                column,
                detail: e.to_string(),
            })
        })
        .transpose()
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        r: &Row<'_>,
        i: usize,
        column: &'static str,
    ) -> Result<T, StoreError> {
        let s: String = r.get(i).map_err(|e| self.err(e))?;
        serde_json::from_str(&s).map_err(|e| StoreError::Decode {
            path: self.path.clone(),
            column,
            detail: e.to_string(),
        })
    }

    fn time(
        &self,
        r: &Row<'_>,
        i: usize,
        column: &'static str,
    ) -> Result<DateTime<Utc>, StoreError> {
        self.opt_time(r, i, column)?
            .ok_or_else(|| StoreError::Decode {
                path: self.path.clone(),
                column,
                detail: "missing timestamp".into(),
            })
    }

    fn opt_time(
        &self,
        r: &Row<'_>,
        i: usize,
        column: &'static str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let s: Option<String> = r.get(i).map_err(|e| self.err(e))?;
        s.map(|s| {
            parse_time(&s).ok_or_else(|| StoreError::Decode {
                path: self.path.clone(),
                column,
                detail: format!("`{s}` is not an RFC 3339 time"),
            })
        })
        .transpose()
    }

    // ---- decisions and the outbox -----------------------------------------------------

    /// Records a decision, queues it for delivery and notes it on the timeline, atomically.
    /// Returns the claim to deliver it, taken before any other task can see the queued
    /// entry (the connection stays locked until the claim exists).
    pub fn record_decision(
        &self,
        decision: &Decision,
        events: &[TimelineEvent],
        now: DateTime<Utc>,
    ) -> Result<DeliveryClaim<'_>, StoreError> {
        let mut conn = self.conn();
        let tx = self.begin(&mut conn)?;
        let id = match self.insert_decision(&tx, decision, events, now) {
            Ok(id) => id,
            Err(e) => {
                self.touched().clear();
                return Err(e);
            }
        };
        self.commit(tx)?;
        self.in_flight().insert(id);
        Ok(DeliveryClaim {
            store: self,
            decision_id: id,
        })
    }

    fn insert_decision(
        &self,
        tx: &Transaction<'_>,
        decision: &Decision,
        events: &[TimelineEvent],
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let action_id = self.action_id(tx, &decision.action)?;
        let payload = audit::decision_payload(decision);
        let answer = decision
            .answer
            .as_ref()
            .map(|a| serde_json::to_string(a).unwrap_or_default());
        tx.execute(
                "INSERT INTO decisions (action_id, verdict, reason, decided_at, approver, snapshot_hash,
                    idempotency_key, key_fingerprint, signature, public_key, payload, answer_json,
                    delivery_state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'queued')",
                params![
                    action_id,
                    decision.verdict.as_str(),
                    decision.reason,
                    format_millis(&decision.decided_at),
                    decision.approver,
                    decision.snapshot_hash.0,
                    decision.idempotency_key,
                    decision.key_fingerprint,
                    decision.signature,
                    decision.public_key,
                    payload,
                    answer,
                ],
            )
            .map_err(|e| self.err(e))?;
        let id = tx.last_insert_rowid();
        self.touch(tx, action_id);
        self.append_audit(
            tx,
            &NewEntry {
                at: decision.decided_at,
                kind: EntryKind::Decision,
                action_id: Some(action_id),
                decision_id: Some(id),
                payload: &payload,
                signature: decision.signature.as_deref(),
                public_key: decision.public_key.as_deref(),
                key_fingerprint: decision.key_fingerprint.as_deref(),
            },
        )?;
        tx.execute(
            "INSERT INTO outbox (decision_id, next_attempt_at) VALUES (?1, ?2)",
            params![id, format_millis(&now)],
        )
        .map_err(|e| self.err(e))?;
        for event in events {
            self.insert_event(tx, action_id, event)?;
        }
        Ok(id)
    }

    /// Claims a queued decision for delivery if it is still due at `now` and no other
    /// task of this process is delivering it; `None` otherwise. Checked under the
    /// connection lock, so an attempt that just recorded a retry (and pushed
    /// `next_attempt_at` past `now`) is seen before a stale outbox listing acts on it.
    pub fn claim_delivery(
        &self,
        decision_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<DeliveryClaim<'_>>, StoreError> {
        let conn = self.conn();
        let due: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE decision_id = ?1 AND next_attempt_at <= ?2)",
                params![decision_id, format_millis(&now)],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if !due || !self.in_flight().insert(decision_id) {
            return Ok(None);
        }
        Ok(Some(DeliveryClaim {
            store: self,
            decision_id,
        }))
    }

    /// Decisions on one action, oldest first.
    pub fn decisions(&self, key: &ActionKey) -> Result<Vec<Decision>, StoreError> {
        let conn = self.conn();
        let id = self.action_id(&conn, key)?;
        let sql = format!(
            "SELECT {DECISION_COLUMNS} {DECISION_FROM} WHERE d.action_id = ?1 ORDER BY d.id"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query([id]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            out.push(self.decision_from_row(r)?.1);
        }
        Ok(out)
    }

    /// Outbox entries due at `now`, for one backend or all, oldest first.
    pub fn due_deliveries(
        &self,
        backend: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueuedDecision>, StoreError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {DECISION_COLUMNS}, o.attempts {DECISION_FROM}
             JOIN outbox o ON o.decision_id = d.id
             WHERE (?1 IS NULL OR b.name = ?1) AND o.next_attempt_at <= ?2 ORDER BY d.id"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(params![backend, format_millis(&now)])
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let (id, decision) = self.decision_from_row(r)?;
            out.push(QueuedDecision {
                id,
                attempts: r.get(DECISION_COLUMN_COUNT).map_err(|e| self.err(e))?,
                decision,
            });
        }
        Ok(out)
    }

    /// Records a final delivery result: the decision's state, out of the outbox, and a
    /// timeline event, in one transaction. Returns false (and changes nothing) when the
    /// decision was no longer queued, so a result is never recorded twice.
    pub fn record_delivery(
        &self,
        decision_id: i64,
        state: &DeliveryState,
        event: &TimelineEvent,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let action_id: Option<i64> = tx
                .query_row(
                    "SELECT d.action_id FROM decisions d JOIN outbox o ON o.decision_id = d.id
                     WHERE d.id = ?1",
                    [decision_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            let Some(action_id) = action_id else {
                return Ok(false);
            };
            let decision = self.decision_by_id(tx, decision_id)?;
            let payload = audit::delivery_payload(&decision, state, now);
            self.append_audit(
                tx,
                &NewEntry {
                    at: now,
                    kind: EntryKind::Delivery,
                    action_id: Some(action_id),
                    decision_id: Some(decision_id),
                    payload: &payload,
                    signature: None,
                    public_key: None,
                    key_fingerprint: None,
                },
            )?;
            let detail = match state {
                DeliveryState::Rejected { reason } => Some(reason.clone()),
                DeliveryState::Stale {
                    current_snapshot_hash,
                } => Some(current_snapshot_hash.clone()),
                _ => None,
            };
            tx.execute(
                "UPDATE decisions SET delivery_state = ?2, delivery_detail = ?3, delivered_at = ?4 WHERE id = ?1",
                params![decision_id, state.as_str(), detail, format_millis(&now)],
            )
            .map_err(|e| self.err(e))?;
            tx.execute("DELETE FROM outbox WHERE decision_id = ?1", [decision_id])
                .map_err(|e| self.err(e))?;
            self.insert_event(tx, action_id, event)?;
            Ok(true)
        })
    }

    /// Notes a failed attempt; the entry stays queued until `next_attempt_at`.
    pub fn record_delivery_retry(
        &self,
        decision_id: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3
                 WHERE decision_id = ?1",
                params![decision_id, error, format_millis(&next_attempt_at)],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn decision_by_id(&self, conn: &Connection, id: i64) -> Result<Decision, StoreError> {
        let sql = format!("SELECT {DECISION_COLUMNS} {DECISION_FROM} WHERE d.id = ?1");
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query([id]).map_err(|e| self.err(e))?;
        let row = rows
            .next()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::UnknownAction(format!("decision #{id}")))?;
        Ok(self.decision_from_row(row)?.1)
    }

    // ---- the audit chain --------------------------------------------------------------

    /// Appends one entry, linked to the current head, inside the caller's transaction.
    fn append_audit(&self, tx: &Transaction<'_>, e: &NewEntry<'_>) -> Result<(), StoreError> {
        let prev: String = tx
            .query_row(
                "SELECT entry_hash FROM audit_entries ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .unwrap_or_else(|| audit::GENESIS_HASH.to_owned());
        let hash = audit::entry_hash(&prev, e.payload);
        tx.execute(
            "INSERT INTO audit_entries (at, kind, action_id, decision_id, payload, signature,
                public_key, key_fingerprint, prev_hash, entry_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                format_millis(&e.at),
                e.kind.as_str(),
                e.action_id,
                e.decision_id,
                e.payload,
                e.signature,
                e.public_key,
                e.key_fingerprint,
                prev,
                hash
            ],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records a signing-key rotation in the chain.
    pub fn record_key_rotation(
        &self,
        payload: &str,
        signature: Option<&str>,
        public_key: Option<&str>,
        key_fingerprint: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            self.append_audit(
                tx,
                &NewEntry {
                    at,
                    kind: EntryKind::KeyRotation,
                    action_id: None,
                    decision_id: None,
                    payload,
                    signature,
                    public_key,
                    key_fingerprint,
                },
            )
        })
    }

    /// Audit entries in chain order, optionally within a time range and for one backend,
    /// all in memory (a long chain is better read as a stream: [`Store::audit_rows`]).
    pub fn audit_entries(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_rows(query).collect()
    }

    fn decision_from_row(&self, r: &Row<'_>) -> Result<(i64, Decision), StoreError> {
        let get_s = |i: usize| -> Result<String, StoreError> { r.get(i).map_err(|e| self.err(e)) };
        let verdict_s = get_s(3)?;
        let state = get_s(11)?;
        let detail: Option<String> = r.get(12).map_err(|e| self.err(e))?;
        let delivery = match state.as_str() {
            "queued" => DeliveryState::Queued,
            "delivered" => DeliveryState::Delivered,
            "rejected" => DeliveryState::Rejected {
                reason: detail.unwrap_or_default(),
            },
            "stale" => DeliveryState::Stale {
                current_snapshot_hash: detail.unwrap_or_default(),
            },
            "expired" => DeliveryState::Expired,
            other => {
                return Err(StoreError::Decode {
                    path: self.path.clone(),
                    column: "decisions.delivery_state",
                    detail: format!("unknown state `{other}`"),
                })
            }
        };
        Ok((
            r.get(0).map_err(|e| self.err(e))?,
            Decision {
                action: ActionKey::new(get_s(1)?, get_s(2)?),
                verdict: Verdict::parse(&verdict_s).ok_or_else(|| StoreError::Decode {
                    path: self.path.clone(),
                    column: "decisions.verdict",
                    detail: format!("unknown verdict `{verdict_s}`"),
                })?,
                reason: get_s(4)?,
                decided_at: self.time(r, 5, "decisions.decided_at")?,
                approver: get_s(6)?,
                snapshot_hash: SnapshotHash(get_s(7)?),
                idempotency_key: get_s(8)?,
                key_fingerprint: r.get(9).map_err(|e| self.err(e))?,
                signature: r.get(10).map_err(|e| self.err(e))?,
                public_key: r.get(13).map_err(|e| self.err(e))?,
                delivery,
                answer: self.opt_json(r, 14, "decisions.answer_json")?,
            },
        ))
    }
}

/// The columns `action_from_row` reads, in its order (then `a.id` at 16 and
/// `a.history_key` at 17), from `actions a` joined with `backends b`.
macro_rules! action_columns {
    () => {
        "b.name, a.external_id, a.kind, a.title, a.summary, a.requester,
        a.requested_at, a.expires_at, a.resource, a.details_json, a.status, a.approvals_required,
        a.reviews_json, a.web_url, a.snapshot_hash, a.form_json, a.id, a.history_key"
    };
}
const ACTION_COLUMNS: &str = action_columns!();
const ACTION_SELECT: &str = concat!(
    "SELECT ",
    action_columns!(),
    " FROM actions a JOIN backends b ON b.id = a.backend_id"
);

/// Columns read by `decision_from_row`, in its order.
const DECISION_COLUMNS: &str = "d.id, b.name, a.external_id, d.verdict, d.reason, d.decided_at,
        d.approver, d.snapshot_hash, d.idempotency_key, d.key_fingerprint, d.signature,
        d.delivery_state, d.delivery_detail, d.public_key, d.answer_json";
const DECISION_COLUMN_COUNT: usize = 15;
const DECISION_FROM: &str = "FROM decisions d
    JOIN actions a ON a.id = d.action_id JOIN backends b ON b.id = a.backend_id";

fn backend_id(conn: &Connection, name: &str) -> Result<Option<i64>, rusqlite::Error> {
    conn.query_row("SELECT id FROM backends WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()
}

/// Appends "first second" and a line break to a search document's notes.
fn push_note(notes: &mut String, r: &Row<'_>) -> rusqlite::Result<()> {
    let first: String = r.get(0)?;
    let second: String = r.get(1)?;
    notes.push_str(&first);
    notes.push(' ');
    notes.push_str(&second);
    notes.push('\n');
    Ok(())
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn opt_time(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let s: Option<String> = r.get(i)?;
    Ok(s.as_deref().and_then(parse_time))
}

/// Refuses a non-empty file that does not start with SQLite's magic, without opening it.
fn check_header(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Open {
                path: path.to_owned(),
                detail: e.to_string(),
            })
        }
    };
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => {
                return Err(StoreError::Open {
                    path: path.to_owned(),
                    detail: e.to_string(),
                })
            }
        }
    }
    if n == 0 || (n == head.len() && head == *b"SQLite format 3\0") {
        return Ok(());
    }
    Err(StoreError::NotADatabase {
        path: path.to_owned(),
    })
}

fn map_err(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    let code = e.sqlite_error_code();
    let path = path.to_owned();
    let detail = e.to_string();
    match code {
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt { path, detail },
        Some(ErrorCode::NotADatabase) => StoreError::NotADatabase { path },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Busy { path, detail }
        }
        _ => StoreError::Sqlite { path, detail },
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod write_tests;
