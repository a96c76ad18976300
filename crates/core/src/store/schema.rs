//! Versioned migrations. `PRAGMA user_version` is the number of migrations applied;
//! each runs in its own transaction with the version bump, so a crash leaves the file
//! at a whole version. Never edit a migration that has shipped: add one.
//!
//! Room left on purpose: every table has an integer rowid, so an FTS5 index with
//! `content=` over actions/timeline text and an append-only audit chain table can be
//! added by later migrations without rewriting these.

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
];
