//! Writes a large, plausible history straight into a Countersign store file.
//!
//! The file is created (or opened) with the engine's own `Store::open`, so it carries the
//! real schema and migrations; the rows are then written with plain SQL on a second
//! connection to that file, in large transactions, because going through `apply_remote`
//! one action at a time (an upsert, a lookup and a transaction each) would take an hour
//! for a million actions. Every row goes into the same tables the engine writes; the
//! history keys and search documents the store would write are filled at the end by the
//! store's own statement (`store::FILL_SEARCH`, as migration 5 fills an existing store),
//! and everything derived is computed by the engine's own functions: snapshot hashes
//! (`snapshot::hash`), decision payloads and signatures (`audit::decision_payload`,
//! `Signer::sign`) and the audit chain's hashes (`audit::entry_hash`). The result
//! verifies with `countersign verify`.
//!
//! A second thread builds the rows (JSON, hashes, signatures) while the first writes
//! them, so the two cores of a small machine are both busy.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use countersign_core::audit::{self, GENESIS_HASH};
use countersign_core::model::{
    ActionKey, ActionKind, ActionSnapshot, ActionStatus, Decision, DeliveryState, Detail, Verdict,
};
use countersign_core::signer::{MemoryKeyStore, Signer, SignerError};
use countersign_core::snapshot::{self, format_millis};
use countersign_core::store::{Store, StoreError};
use rusqlite::{params, Connection};
use thiserror::Error;

use crate::words::{self, Rng};

#[derive(Debug, Error)]
pub enum GenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("signing: {0}")]
    Sign(#[from] SignerError),
    #[error("{0} already holds actions; generate into a new file")]
    NotEmpty(PathBuf),
    #[error("the row builder thread stopped early")]
    Builder,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub actions: u64,
    pub events_per_action: u32,
    pub backends: u32,
    /// Share of the closed actions decided on this machine (signed decision, audit
    /// entries for the decision and its delivery), in percent.
    pub decided_percent: u32,
    /// How many of the newest actions are still pending (the inbox).
    pub pending: u64,
    pub seed: u64,
    /// Actions per transaction.
    pub batch: usize,
    pub quiet: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            actions: 10_000,
            events_per_action: 5,
            backends: 5,
            decided_percent: 50,
            pending: 1_000,
            seed: 1,
            batch: 5_000,
            quiet: false,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenReport {
    pub actions: u64,
    pub events: u64,
    pub decisions: u64,
    pub audit_entries: u64,
    pub pending: u64,
    pub seconds: f64,
    /// Of `seconds`, how long the writer waited for the row builder.
    pub waited_for_rows: f64,
}

/// The approver the generated decisions are signed for.
pub const APPROVER: &str = "bench@countersign";

/// The names the generated backends get: `backend_name(0)`, `backend_name(1)`, …
pub fn backend_name(i: u32) -> String {
    let base = words::BACKENDS[i as usize % words::BACKENDS.len()].0;
    if (i as usize) < words::BACKENDS.len() {
        base.to_owned()
    } else {
        format!("{base}-{}", i as usize / words::BACKENDS.len())
    }
}

struct Row {
    backend: usize,
    external_id: String,
    kind: &'static str,
    title: String,
    summary: String,
    requester: &'static str,
    requested_at: String,
    expires_at: Option<String>,
    resource: String,
    details_json: String,
    status: &'static str,
    web_url: Option<String>,
    snapshot_hash: String,
    snapshot_json: String,
    first_seen_at: String,
    events: Vec<Event>,
    decision: Option<DecisionRow>,
}

struct Event {
    at: String,
    source: &'static str,
    kind: &'static str,
    actor: Option<String>,
    text: String,
    external_id: Option<String>,
}

struct DecisionRow {
    verdict: &'static str,
    reason: String,
    decided_at: String,
    idempotency_key: String,
    signature: String,
    payload: String,
    delivered_at: String,
    delivery_payload: String,
}

pub fn generate(path: &Path, opts: &GenOptions) -> Result<GenReport, GenError> {
    let started = Instant::now();
    // The engine creates the file and runs every migration; then it lets go of it.
    drop(Store::open(path)?);
    let sql = |source| GenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let mut conn = Connection::open(path).map_err(sql)?;
    // A generated file is disposable: if the generator dies it is regenerated, so the
    // bulk load skips fsyncs (the store's own connections keep synchronous = FULL).
    conn.execute_batch(
        "PRAGMA synchronous = OFF; PRAGMA cache_size = -262144; PRAGMA temp_store = MEMORY;
         PRAGMA foreign_keys = ON;",
    )
    .map_err(sql)?;
    let existing: i64 = conn
        .query_row("SELECT count(*) FROM actions", [], |r| r.get(0))
        .map_err(sql)?;
    if existing != 0 {
        return Err(GenError::NotEmpty(path.to_owned()));
    }
    // History keys and the full-text index are filled once at the end, the way
    // migration 5 fills them for an existing store (store::FILL_SEARCH): one pass builds
    // large index segments instead of merging thousands of small ones.
    let backends = opts.backends.max(1);
    let mut backend_ids = Vec::new();
    {
        let tx = conn.transaction().map_err(sql)?;
        for i in 0..backends {
            let kind = words::BACKENDS[i as usize % words::BACKENDS.len()].1;
            tx.execute(
                "INSERT INTO backends (name, kind, url, status, last_ok_at)
                 VALUES (?1, ?2, ?3, 'ok', ?4)
                 ON CONFLICT (name) DO UPDATE SET kind = excluded.kind",
                params![
                    backend_name(i),
                    kind,
                    format!("http://127.0.0.1:{}/", 17000 + i),
                    format_millis(&Utc::now())
                ],
            )
            .map_err(sql)?;
            backend_ids.push(
                tx.query_row(
                    "SELECT id FROM backends WHERE name = ?1",
                    [backend_name(i)],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(sql)?,
            );
        }
        tx.commit().map_err(sql)?;
    }

    // One key for the whole history; each builder thread loads it from the same store.
    let keys = std::sync::Arc::new(MemoryKeyStore::default());
    let (signer, _) = Signer::load_or_create(&*keys)?;
    let public_key = signer.public_key_openssh();
    let fingerprint = signer.fingerprint();
    drop(signer);

    // Rows are built on other threads (batch b by thread b % BUILDERS, each batch from
    // its own seeded random source, so the output does not depend on the thread
    // count); small bounded queues keep memory flat and the writer takes the batches
    // in order.
    let now = Utc::now();
    let batch_len = opts.batch.max(1) as u64;
    let batches = opts.actions.div_ceil(batch_len);
    let mut queues = Vec::new();
    let mut builders = Vec::new();
    for t in 0..BUILDERS {
        let (tx_rows, rx_rows) = mpsc::sync_channel::<Result<Vec<Row>, SignerError>>(2);
        queues.push(rx_rows);
        let build_opts = opts.clone();
        let keys = keys.clone();
        builders.push(std::thread::spawn(move || {
            let signer = match Signer::load_or_create(&*keys) {
                Ok((s, _)) => s,
                Err(e) => {
                    let _ = tx_rows.send(Err(e));
                    return;
                }
            };
            let mut b = Builder::new(&build_opts, signer, now);
            let mut batch = t as u64;
            while batch < batches {
                let first = batch * batch_len;
                let end = (first + batch_len).min(build_opts.actions);
                // A mixed (not merely offset) seed: splitmix streams whose seeds differ
                // by a multiple of its increment would repeat each other.
                let mut mix = Rng::new(build_opts.seed ^ batch.wrapping_mul(0xd1b5_4a32_d192_ed03));
                b.rng = Rng::new(mix.next());
                let rows: Result<Vec<Row>, SignerError> = (first..end).map(|n| b.row(n)).collect();
                let failed = rows.is_err();
                if tx_rows.send(rows).is_err() || failed {
                    return;
                }
                batch += BUILDERS as u64;
            }
        }));
    }

    let mut report = GenReport::default();
    let mut prev_hash: String = conn
        .query_row(
            "SELECT entry_hash FROM audit_entries ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap_or_else(|_| GENESIS_HASH.to_owned());
    let mut last_note = Instant::now();
    let mut waited = std::time::Duration::ZERO;
    for b in 0..batches {
        let t = Instant::now();
        let batch = queues[(b % BUILDERS as u64) as usize]
            .recv()
            .map_err(|_| GenError::Builder)?;
        waited += t.elapsed();
        let batch = batch?;
        let tx = conn.transaction().map_err(sql)?;
        {
            let mut ins_action = tx
                .prepare_cached(
                    "INSERT INTO actions (backend_id, external_id, kind, title, summary, requester,
                        requested_at, expires_at, resource, details_json, approvals_required,
                        reviews_json, status, web_url, snapshot_hash, first_seen_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1, '[]', ?11, ?12, ?13, ?14, ?14)",
                )
                .map_err(sql)?;
            let mut ins_snapshot = tx
                .prepare_cached(
                    "INSERT INTO snapshots (action_id, snapshot_hash, snapshot_json, first_seen_at)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sql)?;
            let mut ins_event = tx
                .prepare_cached(
                    "INSERT INTO timeline_events (action_id, at, source, kind, actor, text, external_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql)?;
            let mut ins_decision = tx
                .prepare_cached(
                    "INSERT INTO decisions (action_id, verdict, reason, decided_at, approver,
                        snapshot_hash, idempotency_key, key_fingerprint, signature, public_key,
                        payload, delivery_state, delivered_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'delivered', ?12)",
                )
                .map_err(sql)?;
            let mut ins_audit = tx
                .prepare_cached(
                    "INSERT INTO audit_entries (at, kind, action_id, decision_id, payload, signature,
                        public_key, key_fingerprint, prev_hash, entry_hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(sql)?;
            for row in &batch {
                let action_id = ins_action
                    .insert(params![
                        backend_ids[row.backend],
                        row.external_id,
                        row.kind,
                        row.title,
                        row.summary,
                        row.requester,
                        row.requested_at,
                        row.expires_at,
                        row.resource,
                        row.details_json,
                        row.status,
                        row.web_url,
                        row.snapshot_hash,
                        row.first_seen_at,
                    ])
                    .map_err(sql)?;
                ins_snapshot
                    .execute(params![
                        action_id,
                        row.snapshot_hash,
                        row.snapshot_json,
                        row.first_seen_at
                    ])
                    .map_err(sql)?;
                for e in &row.events {
                    ins_event
                        .execute(params![
                            action_id,
                            e.at,
                            e.source,
                            e.kind,
                            e.actor,
                            e.text,
                            e.external_id
                        ])
                        .map_err(sql)?;
                }
                report.events += row.events.len() as u64;
                if row.status == "pending" {
                    report.pending += 1;
                }
                let Some(d) = &row.decision else { continue };
                let decision_id = ins_decision
                    .insert(params![
                        action_id,
                        d.verdict,
                        d.reason,
                        d.decided_at,
                        APPROVER,
                        row.snapshot_hash,
                        d.idempotency_key,
                        fingerprint,
                        d.signature,
                        public_key,
                        d.payload,
                        d.delivered_at,
                    ])
                    .map_err(sql)?;
                let hash = audit::entry_hash(&prev_hash, &d.payload);
                ins_audit
                    .execute(params![
                        d.decided_at,
                        "decision",
                        action_id,
                        decision_id,
                        d.payload,
                        d.signature,
                        public_key,
                        fingerprint,
                        prev_hash,
                        hash
                    ])
                    .map_err(sql)?;
                prev_hash = hash;
                let hash = audit::entry_hash(&prev_hash, &d.delivery_payload);
                ins_audit
                    .execute(params![
                        d.delivered_at,
                        "delivery",
                        action_id,
                        decision_id,
                        d.delivery_payload,
                        None::<String>,
                        None::<String>,
                        None::<String>,
                        prev_hash,
                        hash
                    ])
                    .map_err(sql)?;
                prev_hash = hash;
                report.decisions += 1;
                report.audit_entries += 2;
            }
        }
        tx.commit().map_err(sql)?;
        report.actions += batch.len() as u64;
        if !opts.quiet && last_note.elapsed().as_secs() >= 5 {
            last_note = Instant::now();
            eprintln!(
                "generate: {} / {} actions ({:.0} actions/s)",
                report.actions,
                opts.actions,
                report.actions as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    drop(queues);
    for b in builders {
        b.join().map_err(|_| GenError::Builder)?;
    }
    if report.actions != opts.actions {
        return Err(GenError::Builder);
    }
    let started_fts = Instant::now();
    fill_search(&mut conn).map_err(sql)?;
    if !opts.quiet {
        eprintln!(
            "generate: history keys and search index filled in {:.1} s",
            started_fts.elapsed().as_secs_f64()
        );
    }
    // Leave one file behind (no -wal to carry around), as the app would after a while.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .map_err(sql)?;
    report.seconds = started.elapsed().as_secs_f64();
    report.waited_for_rows = waited.as_secs_f64();
    Ok(report)
}

/// Threads building rows; with the full-text indexes filled at the end, building rows
/// (JSON, hashes, signatures) costs more than writing them.
const BUILDERS: usize = 2;

/// Gives every action written here its history key and search document, atomically.
fn fill_search(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(countersign_core::store::FILL_SEARCH)?;
    tx.commit()
}

/// Builds the rows of one action after another, deterministically from the seed.
struct Builder {
    rng: Rng,
    signer: Signer,
    fingerprint: String,
    public_key: String,
    opts: GenOptions,
    /// The newest action is requested one minute before `now`, the others one minute
    /// apart before it (a million actions span about two years).
    start: DateTime<Utc>,
    now: DateTime<Utc>,
}

impl Builder {
    fn new(opts: &GenOptions, signer: Signer, now: DateTime<Utc>) -> Self {
        let now = now - Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos()));
        Self {
            rng: Rng::new(opts.seed),
            fingerprint: signer.fingerprint(),
            public_key: signer.public_key_openssh(),
            signer,
            opts: opts.clone(),
            start: now - Duration::minutes(opts.actions as i64 + 1),
            now,
        }
    }

    fn row(&mut self, n: u64) -> Result<Row, SignerError> {
        let r = &mut self.rng;
        let backend = (n % u64::from(self.opts.backends.max(1))) as usize;
        let backend_name = backend_name(backend as u32);
        let external_id = format!("act-{n:07}");
        let requested_at = self.start + Duration::minutes(n as i64);
        let pending = n + self.opts.pending >= self.opts.actions;
        let decided = !pending && r.below(100) < u64::from(self.opts.decided_percent);
        let verdict = if r.below(100) < 85 {
            Verdict::Approve
        } else {
            Verdict::Deny
        };
        let status = if pending {
            ActionStatus::Pending
        } else if decided {
            match verdict {
                Verdict::Deny => ActionStatus::Denied,
                _ if r.below(10) < 6 => ActionStatus::Executed,
                _ => ActionStatus::Approved,
            }
        } else {
            match r.below(100) {
                0..40 => ActionStatus::Expired,
                40..60 => ActionStatus::Cancelled,
                60..85 => ActionStatus::Approved,
                _ => ActionStatus::Failed,
            }
        };
        let kind = words::KINDS[r.pick(words::KINDS.len())];
        let requester = words::PEOPLE[r.pick(words::PEOPLE.len())];
        let verb = words::VERBS[r.pick(words::VERBS.len())];
        let service = words::SERVICES[r.pick(words::SERVICES.len())];
        let env = words::ENVS[r.pick(words::ENVS.len())];
        let ticket = format!("OPS-{}", 10_000 + n);
        let title = format!("{verb} {service} in {env}");
        let summary = format!("{} ({ticket})", words::sentence(r, 8));
        let resource = format!("{env}/{service}");
        let details = vec![
            Detail {
                key: "ticket".into(),
                value: ticket.clone(),
            },
            Detail {
                key: "change".into(),
                value: words::sentence(r, 5),
            },
            Detail {
                key: "host".into(),
                value: format!("{service}-{}.{env}.internal", r.below(40)),
            },
        ];
        let expires_at = if pending {
            Some(self.now + Duration::minutes(10 + r.below(48 * 60) as i64))
        } else if r.below(2) == 0 {
            Some(requested_at + Duration::hours(1))
        } else {
            None
        };
        let snapshot = ActionSnapshot {
            kind: ActionKind::parse(kind),
            title,
            summary,
            requester: requester.to_owned(),
            requested_at,
            expires_at,
            resource,
            details,
            approvals_required: 1,
            reviews: Vec::new(),
            status,
            web_url: Some(format!("https://{backend_name}.example/requests/{n}")),
            form: None,
        };
        let snapshot_hash = snapshot::hash(&snapshot);
        let snapshot_json = serde_json::to_string(&snapshot).unwrap_or_default();
        let details_json = serde_json::to_string(&snapshot.details).unwrap_or_default();

        // Timeline: what the backend and this machine reported, in order.
        let m = self.opts.events_per_action as usize;
        let mut events = Vec::with_capacity(m);
        let at = |k: i64| format_millis(&(requested_at + Duration::seconds(20 * k)));
        let mut j = 0i64;
        let mut push = |events: &mut Vec<Event>,
                        source: &'static str,
                        kind: &'static str,
                        actor: Option<String>,
                        text: String| {
            let external_id = (source == "backend").then(|| format!("ev-{j}"));
            events.push(Event {
                at: at(j),
                source,
                kind,
                actor,
                text,
                external_id,
            });
            j += 1;
        };
        let closing = usize::from(!pending);
        let middle = m.saturating_sub(1 + closing);
        if m > 0 {
            push(
                &mut events,
                "backend",
                "requested",
                Some(requester.to_owned()),
                format!("{requester} requested: {}", snapshot.title),
            );
        }
        for k in 0..middle {
            let r = &mut self.rng;
            match k % 4 {
                0 => push(
                    &mut events,
                    "backend",
                    "policy_evaluated",
                    None,
                    format!(
                        "policy {} matched: one approval required",
                        words::POLICIES[r.pick(words::POLICIES.len())]
                    ),
                ),
                1 => push(
                    &mut events,
                    "local",
                    "notified",
                    None,
                    format!("notified on {}", words::HOSTS[r.pick(words::HOSTS.len())]),
                ),
                2 => push(
                    &mut events,
                    "local",
                    "viewed",
                    Some(APPROVER.to_owned()),
                    format!("viewed by {APPROVER}"),
                ),
                _ => {
                    let who = words::PEOPLE[r.pick(words::PEOPLE.len())];
                    push(
                        &mut events,
                        "backend",
                        "reviewed",
                        Some(who.to_owned()),
                        format!("{who} commented: {}", words::sentence(r, 7)),
                    )
                }
            }
        }
        let r = &mut self.rng;
        let mut decision = None;
        if decided {
            let decided_at = requested_at + Duration::seconds(20 * m as i64 + 30);
            let delivered_at = decided_at + Duration::milliseconds(200 + r.below(800) as i64);
            let reason = words::sentence(r, 6);
            let d = Decision {
                action: ActionKey::new(backend_name.clone(), external_id.clone()),
                verdict,
                reason: reason.clone(),
                decided_at,
                approver: APPROVER.to_owned(),
                snapshot_hash: snapshot_hash.clone(),
                // Unique by construction (the action number), random-looking after it.
                idempotency_key: format!("{n:08x}{:024x}", u128::from(r.next()) << 32),
                key_fingerprint: Some(self.fingerprint.clone()),
                public_key: Some(self.public_key.clone()),
                signature: None,
                delivery: DeliveryState::Delivered,
                answer: None,
            };
            let payload = audit::decision_payload(&d);
            let signature = self.signer.sign(payload.as_bytes())?;
            let delivery_payload =
                audit::delivery_payload(&d, &DeliveryState::Delivered, delivered_at);
            if m > 1 {
                push(
                    &mut events,
                    "local",
                    "decided",
                    Some(APPROVER.to_owned()),
                    format!("{} by {APPROVER}: {reason}", verdict.as_str()),
                );
            }
            decision = Some(DecisionRow {
                verdict: verdict.as_str(),
                reason,
                decided_at: format_millis(&decided_at),
                idempotency_key: d.idempotency_key,
                signature,
                payload,
                delivered_at: format_millis(&delivered_at),
                delivery_payload,
            });
        } else if !pending && m > 1 {
            push(
                &mut events,
                "backend",
                match status {
                    ActionStatus::Expired => "expired",
                    ActionStatus::Cancelled => "cancelled",
                    ActionStatus::Approved => "approved",
                    _ => "other",
                },
                None,
                format!("{} on {backend_name}", status.as_str()),
            );
        }
        Ok(Row {
            backend,
            external_id,
            kind,
            title: snapshot.title,
            summary: snapshot.summary,
            requester,
            requested_at: format_millis(&requested_at),
            expires_at: snapshot.expires_at.as_ref().map(format_millis),
            resource: snapshot.resource,
            details_json,
            status: status.as_str(),
            web_url: snapshot.web_url,
            snapshot_hash: snapshot_hash.0,
            snapshot_json,
            first_seen_at: format_millis(&requested_at),
            events,
            decision,
        })
    }
}
