//! Versioned migrations. `PRAGMA user_version` is the number of migrations applied;
//! each runs in its own transaction with the version bump, so a crash leaves the file
//! at a whole version. Never edit a migration that has shipped: add one.
//!
//! Room left on purpose: every table has an integer rowid, so later migrations can add
//! indexes over them without rewriting these.

/// Fills `actions.history_key` for rows that have none and indexes those rows in
/// `action_search`: used by migration 5 for an existing store, and by bulk loaders (the
/// bench generator) that write rows with plain SQL. A macro so that migration 5 can
/// `concat!` it; [`FILL_SEARCH`] is the same text.
///
/// The key is `(requested_at in epoch ms, clamped to [0, 2^43)) << 20 | slot`, the slot
/// being the row's rank by id among the actions requested in the same millisecond (what
/// `Store::next_history_key` hands out one at a time). More than 2^20 actions in one
/// millisecond cannot be keyed: those rows keep NULL (and stay out of history pages)
/// rather than making the migration fail on a file a hostile backend filled.
/// `notes` must hold the same words as `Store::write_search_doc` writes.
macro_rules! fill_search_sql {
    () => {
        r#"
CREATE TEMP TABLE search_fill AS
SELECT id, ms * 1048576 + slot AS key
FROM (
    SELECT id, ms, row_number() OVER (PARTITION BY ms ORDER BY id) - 1 AS slot
    FROM (
        SELECT id, coalesce(
                max(0, min(8796093022207,
                    CAST(strftime('%s', requested_at) AS INTEGER) * 1000
                    + CAST(substr(strftime('%f', requested_at), 4, 3) AS INTEGER))),
                CASE WHEN substr(requested_at, 1, 1) = '-' THEN 0 ELSE 8796093022207 END
            ) AS ms
        FROM actions WHERE history_key IS NULL
    )
)
WHERE slot < 1048576;
-- Keys already taken (rows keyed before) are not handed out twice.
DELETE FROM temp.search_fill
WHERE key IN (SELECT history_key FROM actions WHERE history_key IS NOT NULL);

UPDATE actions SET history_key = f.key FROM temp.search_fill AS f WHERE actions.id = f.id;

INSERT INTO action_search (rowid, title, summary, requester, resource, details, notes)
SELECT f.key, a.title, a.summary, a.requester, a.resource, a.details_json,
    coalesce((SELECT group_concat(coalesce(e.actor, '') || ' ' || e.text, char(10))
              FROM timeline_events e WHERE e.action_id = a.id), '')
    || char(10) ||
    coalesce((SELECT group_concat(d.approver || ' ' || d.reason, char(10))
              FROM decisions d WHERE d.action_id = a.id), '')
FROM temp.search_fill AS f JOIN actions a ON a.id = f.id
ORDER BY f.key;

DROP TABLE temp.search_fill;
"#
    };
}

/// See [`fill_search_sql`]: keys and search documents for rows written without them.
pub const FILL_SEARCH: &str = fill_search_sql!();

pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
CREATE TABLE backends (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    url             TEXT NOT NULL,
    etag            TEXT,
    cursor          TEXT,
    last_event_id   TEXT,
    status          TEXT NOT NULL DEFAULT 'starting' CHECK (status IN ('starting', 'ok', 'degraded')),
    last_error      TEXT,
    last_error_code TEXT,
    last_error_at   TEXT,
    next_retry_at   TEXT,
    last_ok_at      TEXT
);

CREATE TABLE actions (
    id                 INTEGER PRIMARY KEY,
    backend_id         INTEGER NOT NULL REFERENCES backends(id),
    external_id        TEXT NOT NULL,
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
    snapshot_hash      TEXT NOT NULL,
    first_seen_at      TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    UNIQUE (backend_id, external_id)
);
CREATE INDEX actions_by_status_expiry ON actions (status, expires_at);
CREATE INDEX actions_by_requested_at ON actions (requested_at);

-- Every version of an action that was on screen, so a refusal can say what changed
-- between what the person saw and what is there now.
CREATE TABLE snapshots (
    action_id     INTEGER NOT NULL REFERENCES actions(id),
    snapshot_hash TEXT NOT NULL,
    snapshot_json TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    PRIMARY KEY (action_id, snapshot_hash)
) WITHOUT ROWID;

CREATE TABLE timeline_events (
    id          INTEGER PRIMARY KEY,
    action_id   INTEGER NOT NULL REFERENCES actions(id),
    at          TEXT NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('backend', 'local')),
    kind        TEXT NOT NULL,
    actor       TEXT,
    text        TEXT NOT NULL,
    external_id TEXT
);
-- A backend event is stored once however often it is reported.
CREATE UNIQUE INDEX timeline_backend_once ON timeline_events (action_id, external_id)
    WHERE external_id IS NOT NULL;
CREATE INDEX timeline_by_action ON timeline_events (action_id, at, id);

CREATE TABLE decisions (
    id              INTEGER PRIMARY KEY,
    action_id       INTEGER NOT NULL REFERENCES actions(id),
    verdict         TEXT NOT NULL CHECK (verdict IN ('approve', 'deny')),
    reason          TEXT NOT NULL,
    decided_at      TEXT NOT NULL,
    approver        TEXT NOT NULL,
    snapshot_hash   TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    key_fingerprint TEXT,
    signature       TEXT,
    delivery_state  TEXT NOT NULL DEFAULT 'queued',
    delivery_detail TEXT,
    delivered_at    TEXT
);
CREATE INDEX decisions_by_action ON decisions (action_id);

-- Decisions not yet acknowledged by their backend. A row leaves only together with
-- the final delivery state, in one transaction.
CREATE TABLE outbox (
    decision_id     INTEGER PRIMARY KEY REFERENCES decisions(id),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT
);
"#,
    // 2: signed decisions and the audit chain.
    r#"
ALTER TABLE decisions ADD COLUMN public_key TEXT;
-- The signed bytes (RFC 8785 JSON), as delivered.
ALTER TABLE decisions ADD COLUMN payload TEXT;

-- Append-only. entry_hash = SHA-256(prev_hash || "\n" || payload); see audit.rs.
CREATE TABLE audit_entries (
    seq             INTEGER PRIMARY KEY,
    at              TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('decision', 'delivery', 'key_rotation')),
    action_id       INTEGER REFERENCES actions(id),
    decision_id     INTEGER REFERENCES decisions(id),
    payload         TEXT NOT NULL,
    signature       TEXT,
    public_key      TEXT,
    key_fingerprint TEXT,
    prev_hash       TEXT NOT NULL,
    entry_hash      TEXT NOT NULL UNIQUE
);
CREATE INDEX audit_by_at ON audit_entries (at);
CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'the audit chain is append-only'); END;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'the audit chain is append-only'); END;
"#,
    // 3: forms and the `choose` verdict. SQLite cannot change a CHECK in place, so
    // decisions is rebuilt (ids kept: the outbox and the audit chain point at them).
    r#"
CREATE TABLE decisions_v3 (
    id              INTEGER PRIMARY KEY,
    action_id       INTEGER NOT NULL REFERENCES actions(id),
    verdict         TEXT NOT NULL CHECK (verdict IN ('approve', 'deny', 'choose')),
    reason          TEXT NOT NULL,
    decided_at      TEXT NOT NULL,
    approver        TEXT NOT NULL,
    snapshot_hash   TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    key_fingerprint TEXT,
    signature       TEXT,
    delivery_state  TEXT NOT NULL DEFAULT 'queued',
    delivery_detail TEXT,
    delivered_at    TEXT,
    public_key      TEXT,
    payload         TEXT,
    -- Chosen options and filled-in fields (model::Answer), signed within `payload`.
    answer_json     TEXT
);
INSERT INTO decisions_v3 (id, action_id, verdict, reason, decided_at, approver, snapshot_hash,
        idempotency_key, key_fingerprint, signature, delivery_state, delivery_detail,
        delivered_at, public_key, payload)
    SELECT id, action_id, verdict, reason, decided_at, approver, snapshot_hash,
        idempotency_key, key_fingerprint, signature, delivery_state, delivery_detail,
        delivered_at, public_key, payload
    FROM decisions;
DROP TABLE decisions;
ALTER TABLE decisions_v3 RENAME TO decisions;
CREATE INDEX decisions_by_action ON decisions (action_id);

-- The form a backend asks to be answered (model::InputForm), part of the snapshot.
ALTER TABLE actions ADD COLUMN form_json TEXT;
"#,
    // 4: history search. Full-text indexes kept in step with the tables by triggers —
    // by the store, whoever writes — one per source so that adding a timeline line is
    // one small insert, never a rewrite of the action's document. Plus the indexes the
    // history filters page by (newest first).
    r#"
CREATE VIRTUAL TABLE action_fts USING fts5(
    title, summary, requester, resource, details, tokenize = 'unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE event_fts USING fts5(
    text, actor, action_id UNINDEXED, tokenize = 'unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE decision_fts USING fts5(
    reason, approver, action_id UNINDEXED, tokenize = 'unicode61 remove_diacritics 2'
);

INSERT INTO action_fts (rowid, title, summary, requester, resource, details)
    SELECT id, title, summary, requester, resource, details_json FROM actions;
INSERT INTO event_fts (rowid, text, actor, action_id)
    SELECT id, text, actor, action_id FROM timeline_events;
INSERT INTO decision_fts (rowid, reason, approver, action_id)
    SELECT id, reason, approver, action_id FROM decisions;

CREATE TRIGGER actions_fts_insert AFTER INSERT ON actions BEGIN
    INSERT INTO action_fts (rowid, title, summary, requester, resource, details)
    VALUES (new.id, new.title, new.summary, new.requester, new.resource, new.details_json);
END;
CREATE TRIGGER actions_fts_update AFTER UPDATE OF title, summary, requester, resource,
        details_json ON actions BEGIN
    DELETE FROM action_fts WHERE rowid = old.id;
    INSERT INTO action_fts (rowid, title, summary, requester, resource, details)
    VALUES (new.id, new.title, new.summary, new.requester, new.resource, new.details_json);
END;
CREATE TRIGGER timeline_fts_insert AFTER INSERT ON timeline_events BEGIN
    INSERT INTO event_fts (rowid, text, actor, action_id)
    VALUES (new.id, new.text, new.actor, new.action_id);
END;
CREATE TRIGGER decisions_fts_insert AFTER INSERT ON decisions BEGIN
    INSERT INTO decision_fts (rowid, reason, approver, action_id)
    VALUES (new.id, new.reason, new.approver, new.action_id);
END;

CREATE INDEX actions_by_backend_requested ON actions (backend_id, requested_at);
CREATE INDEX actions_by_status_requested ON actions (status, requested_at);
CREATE INDEX actions_by_requester_requested ON actions (requester, requested_at);
CREATE INDEX decisions_by_verdict ON decisions (verdict, action_id);
"#,
    // 5: one search document per action, keyed in history order. Migration 4's three
    // indexes answered "deploy" by collecting every matching row of three indexes (5M
    // timeline rows at scale) and sorting them to take 100: seconds for common words.
    // Now each action has one FTS5 document (title … details, plus `notes`: its
    // timeline lines with their actors and its decisions' approvers and reasons) whose
    // rowid is `history_key`, an integer that sorts like the history (newest request
    // first, see FILL_SEARCH), so a search walks the index newest-first and stops
    // after a page. The store writes the documents itself, once per transaction for
    // each action touched (store::Store::write_search_doc): the triggers wrote a tiny
    // index segment per row and flushed it at every statement.
    concat!(
        r#"
DROP TRIGGER actions_fts_insert;
DROP TRIGGER actions_fts_update;
DROP TRIGGER timeline_fts_insert;
DROP TRIGGER decisions_fts_insert;
DROP TABLE action_fts;
DROP TABLE event_fts;
DROP TABLE decision_fts;
DROP INDEX actions_by_requested_at;
DROP INDEX actions_by_backend_requested;
DROP INDEX actions_by_status_requested;
DROP INDEX actions_by_requester_requested;

ALTER TABLE actions ADD COLUMN history_key INTEGER;
CREATE VIRTUAL TABLE action_search USING fts5(
    title, summary, requester, resource, details, notes,
    tokenize = 'unicode61 remove_diacritics 2'
);
"#,
        fill_search_sql!(),
        r#"
CREATE UNIQUE INDEX actions_by_history ON actions (history_key);
CREATE INDEX actions_by_backend_history ON actions (backend_id, history_key);
CREATE INDEX actions_by_status_history ON actions (status, history_key);
CREATE INDEX actions_by_requester_history ON actions (requester, history_key);
"#
    ),
];
