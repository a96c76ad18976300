use chrono::{Duration, TimeZone};

use super::*;
use crate::model::{Detail, ReviewVerdict};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap() + Duration::seconds(secs)
}

fn remote(id: &str, title: &str, events: &[(&str, &str)]) -> RemoteAction {
    let snapshot = ActionSnapshot {
        kind: ActionKind::Deployment,
        title: title.into(),
        summary: String::new(),
        requester: "rui@example.com".into(),
        requested_at: t(0),
        expires_at: Some(t(600)),
        resource: "payments-api".into(),
        details: vec![Detail {
            key: "version".into(),
            value: "v1.2.3".into(),
        }],
        approvals_required: 1,
        reviews: vec![],
        status: ActionStatus::Pending,
        web_url: None,
        form: None,
    };
    RemoteAction {
        action: PendingAction::new(ActionKey::new("prod", id), snapshot),
        timeline: events
            .iter()
            .map(|(eid, text)| TimelineEvent {
                at: t(1),
                source: EventSource::Backend,
                kind: TimelineKind::Requested,
                actor: None,
                text: (*text).into(),
                external_id: Some((*eid).into()),
            })
            .collect(),
    }
}

fn file_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_dir(dir.path()).unwrap();
    store
        .register_backend("prod", "countersign", "http://127.0.0.1:1")
        .unwrap();
    (dir, store)
}

#[test]
fn opens_with_wal_foreign_keys_and_current_schema() {
    let (_dir, store) = file_store();
    let conn = store.conn();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let fk: i64 = conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(fk, 1);
    assert_eq!(version, schema::MIGRATIONS.len() as i64);
}

#[test]
fn reopening_keeps_data_and_does_not_migrate_twice() {
    let (dir, store) = file_store();
    store
        .apply_remote("prod", &[remote("a1", "Deploy", &[])], t(0))
        .unwrap();
    drop(store);
    let store = Store::open_in_dir(dir.path()).unwrap();
    assert!(store
        .action(&ActionKey::new("prod", "a1"))
        .unwrap()
        .is_some());
}

#[test]
fn a_newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&path)
        .err()
        .expect("newer schema must be refused");
    assert!(
        matches!(err, StoreError::NewerSchema { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let junk = b"this is a text file, not a database ........".repeat(100);
    std::fs::write(&path, &junk).unwrap();
    let Err(err) = Store::open(&path) else {
        panic!("junk must be refused")
    };
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(std::fs::read(&path).unwrap(), junk);
}

#[test]
fn a_damaged_database_is_reported_as_corrupt_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let store = Store::open(&path).unwrap();
        store.register_backend("prod", "countersign", "u").unwrap();
        let many: Vec<_> = (0..200)
            .map(|i| remote(&format!("a{i}"), &"x".repeat(500), &[]))
            .collect();
        store.apply_remote("prod", &many, t(0)).unwrap();
        store
            .conn()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    // Keep the valid header, overwrite the pages after it with garbage.
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().skip(4096).take(64 * 1024) {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let result = Store::open(&path).and_then(|s| s.history(1000).map(|_| ()));
    let Err(err) = result else {
        panic!("a damaged file must give an error")
    };
    assert!(
        matches!(
            err,
            StoreError::Corrupt { .. } | StoreError::NotADatabase { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn apply_remote_reports_created_updated_unchanged_and_stores_events_once() {
    let (_dir, store) = file_store();
    let first = store
        .apply_remote("prod", &[remote("a1", "Deploy", &[("e1", "asked")])], t(0))
        .unwrap();
    assert_eq!(first[0].change, ActionChange::Created);
    assert_eq!(first[0].new_events, 1);

    let again = store
        .apply_remote("prod", &[remote("a1", "Deploy", &[("e1", "asked")])], t(1))
        .unwrap();
    assert_eq!(again[0].change, ActionChange::Unchanged);
    assert_eq!(again[0].new_events, 0);

    let changed = store
        .apply_remote(
            "prod",
            &[remote(
                "a1",
                "Deploy v2",
                &[("e1", "asked"), ("e2", "policy ok")],
            )],
            t(2),
        )
        .unwrap();
    assert_eq!(changed[0].change, ActionChange::Updated);
    assert_eq!(changed[0].new_events, 1);

    let key = ActionKey::new("prod", "a1");
    let timeline = store.timeline(&key).unwrap();
    assert_eq!(timeline.len(), 2);
    assert_eq!(
        store.action(&key).unwrap().unwrap().snapshot.title,
        "Deploy v2"
    );
    // Both versions were kept for "what changed".
    let old = remote("a1", "Deploy", &[]).action;
    assert_eq!(
        store
            .snapshot(&key, &old.snapshot_hash)
            .unwrap()
            .unwrap()
            .title,
        "Deploy"
    );
}

#[test]
fn pending_list_orders_by_expiry_and_filters_status() {
    let (_dir, store) = file_store();
    let mut late = remote("late", "Late", &[]);
    late.action.snapshot.expires_at = Some(t(900));
    let mut never = remote("never", "Never", &[]);
    never.action.snapshot.expires_at = None;
    let mut done = remote("done", "Done", &[]);
    done.action.snapshot.status = ActionStatus::Approved;
    done.action.snapshot.reviews.push(crate::model::Review {
        reviewer: "x".into(),
        verdict: ReviewVerdict::Approved,
        at: t(3),
        comment: None,
    });
    let soon = remote("soon", "Soon", &[]);
    let all: Vec<_> = [late, never, done, soon]
        .into_iter()
        .map(|mut r| {
            r.action = PendingAction::new(r.action.key, r.action.snapshot);
            r
        })
        .collect();
    store.apply_remote("prod", &all, t(0)).unwrap();
    let pending = store
        .actions(&ActionQuery {
            status: Some(ActionStatus::Pending),
            ..Default::default()
        })
        .unwrap();
    let ids: Vec<_> = pending.iter().map(|a| a.key.external_id.as_str()).collect();
    assert_eq!(ids, ["soon", "late", "never"]);
    assert_eq!(store.history(10).unwrap().len(), 4);
    let stored_done = store
        .action(&ActionKey::new("prod", "done"))
        .unwrap()
        .unwrap();
    assert_eq!(
        stored_done, all[2].action,
        "round trip keeps every field and the hash"
    );
}

fn decision(key: &ActionKey, idem: &str, hash: &SnapshotHash) -> Decision {
    Decision {
        action: key.clone(),
        verdict: Verdict::Approve,
        reason: "looks right".into(),
        decided_at: t(10),
        approver: "ana@example.com".into(),
        snapshot_hash: hash.clone(),
        idempotency_key: idem.into(),
        key_fingerprint: None,
        public_key: None,
        signature: None,
        delivery: DeliveryState::Queued,
        answer: None,
    }
}

#[test]
fn a_decision_is_queued_with_its_event_and_delivered_once() {
    let (_dir, store) = file_store();
    let r = remote("a1", "Deploy", &[]);
    store
        .apply_remote("prod", std::slice::from_ref(&r), t(0))
        .unwrap();
    let key = r.action.key.clone();
    let d = decision(&key, "k1", &r.action.snapshot_hash);
    let decided = TimelineEvent::local(t(10), TimelineKind::Decided, None, "approved");
    let claim = store
        .record_decision(&d, std::slice::from_ref(&decided), t(10))
        .unwrap();
    let id = claim.decision_id();

    assert_eq!(store.due_deliveries(None, t(9)).unwrap().len(), 0);
    let due = store.due_deliveries(Some("prod"), t(10)).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].decision, d);
    assert!(
        store.claim_delivery(id, t(10)).unwrap().is_none(),
        "the decision's own attempt holds it: the outbox pass must not send it too"
    );

    store
        .record_delivery_retry(id, "unreachable", t(20))
        .unwrap();
    drop(claim);
    assert!(store.due_deliveries(None, t(15)).unwrap().is_empty());
    assert!(
        store.claim_delivery(id, t(15)).unwrap().is_none(),
        "a listing taken before the retry was recorded must not send it early"
    );
    assert_eq!(store.due_deliveries(None, t(20)).unwrap()[0].attempts, 1);
    let claim = store.claim_delivery(id, t(20)).unwrap().expect("due again");
    assert!(
        store.claim_delivery(id, t(20)).unwrap().is_none(),
        "claimed once"
    );
    drop(claim);
    assert!(
        store.claim_delivery(id, t(20)).unwrap().is_some(),
        "released on drop"
    );

    let delivered = TimelineEvent::local(t(21), TimelineKind::Delivered, None, "delivered");
    assert!(store
        .record_delivery(id, &DeliveryState::Delivered, &delivered, t(21))
        .unwrap());
    assert!(
        !store
            .record_delivery(id, &DeliveryState::Delivered, &delivered, t(22))
            .unwrap(),
        "a second result for the same decision changes nothing"
    );
    assert!(store.due_deliveries(None, t(99)).unwrap().is_empty());
    let decisions = store.decisions(&key).unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].delivery, DeliveryState::Delivered);
    let kinds: Vec<_> = store
        .timeline(&key)
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [TimelineKind::Decided, TimelineKind::Delivered]);

    let dup = store.record_decision(&d, std::slice::from_ref(&decided), t(30));
    assert!(dup.is_err(), "an idempotency key is recorded once");
}

#[test]
fn backend_status_tracks_ok_and_degraded() {
    let (_dir, store) = file_store();
    assert!(store.mark_backend_ok("prod", t(0)).unwrap());
    assert!(!store.mark_backend_ok("prod", t(1)).unwrap());
    store
        .mark_backend_degraded("prod", "malformed", "bad `actions[0].title`", t(9), t(2))
        .unwrap();
    let s = &store.backend_statuses().unwrap()[0];
    assert_eq!(s.status, "degraded");
    assert_eq!(s.last_error_code.as_deref(), Some("malformed"));
    assert_eq!(s.next_retry_at, Some(t(9)));
    assert_eq!(s.last_ok_at, Some(t(1)));
}

#[test]
fn a_form_and_a_choice_round_trip_with_the_snapshot_and_the_decision() {
    let (_dir, store) = file_store();
    let mut r = remote("f1", "Pick a region", &[]);
    r.action.snapshot.form = Some(crate::model::InputForm {
        options: vec!["eu".into(), "us".into()],
        multiple: false,
        default_options: vec![],
        fields: vec![],
        approve_option: None,
        deny_option: None,
    });
    r.action = PendingAction::new(r.action.key.clone(), r.action.snapshot.clone());
    store
        .apply_remote("prod", std::slice::from_ref(&r), t(0))
        .unwrap();
    let key = r.action.key.clone();
    assert_eq!(store.action(&key).unwrap().unwrap(), r.action);

    let mut d = decision(&key, "k-choose", &r.action.snapshot_hash);
    d.verdict = Verdict::Choose;
    d.answer = Some(crate::model::Answer {
        options: vec!["us".into()],
        params: [("replicas".to_owned(), serde_json::json!(3))].into(),
    });
    drop(store.record_decision(&d, &[], t(10)).unwrap());
    assert_eq!(store.decisions(&key).unwrap(), [d.clone()]);
    assert_eq!(store.due_deliveries(None, t(10)).unwrap()[0].decision, d);
}

/// A store written by the previous release (schema 2) opens with its decisions, their
/// ids (the outbox and the audit chain point at them) and its chain intact.
#[test]
fn a_version_2_store_migrates_keeping_decision_ids_outbox_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.db");
    {
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
        for (i, sql) in schema::MIGRATIONS[..2].iter().enumerate() {
            let tx = conn.transaction().unwrap();
            tx.execute_batch(sql).unwrap();
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .unwrap();
            tx.commit().unwrap();
        }
        conn.execute_batch(
            "INSERT INTO backends (id, name, kind, url) VALUES (1, 'prod', 'countersign', 'x');
             INSERT INTO actions (id, backend_id, external_id, kind, title, summary, requester,
                 requested_at, resource, details_json, approvals_required, reviews_json, status,
                 snapshot_hash, first_seen_at, updated_at)
             VALUES (7, 1, 'a1', 'deployment', 'Deploy', '', 'rui', '2026-11-25T09:00:00.000Z',
                 'api', '[]', 1, '[]', 'pending', 'aa', '2026-11-25T09:00:00.000Z',
                 '2026-11-25T09:00:00.000Z');
             INSERT INTO decisions (id, action_id, verdict, reason, decided_at, approver,
                 snapshot_hash, idempotency_key, payload)
             VALUES (42, 7, 'approve', 'ok', '2026-11-25T09:00:10.000Z', 'ana', 'aa', 'k1', '{}');
             INSERT INTO outbox (decision_id, next_attempt_at)
             VALUES (42, '2026-11-25T09:00:10.000Z');",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let key = ActionKey::new("prod", "a1");
    let decisions = store.decisions(&key).unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].idempotency_key, "k1");
    assert_eq!(decisions[0].answer, None);
    let due = store.due_deliveries(None, t(3600)).unwrap();
    assert_eq!(due.len(), 1, "the outbox still points at decision 42");
    assert_eq!(due[0].id, 42);
    let conn = store.conn();
    let fk_on: i64 = conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fk_on, 1, "foreign keys are back on after migrating");
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'outbox'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(sql.contains("REFERENCES decisions(id)"), "{sql}");
}

#[test]
fn an_action_closed_locally_reopens_when_listed_again_unchanged() {
    let (_dir, store) = file_store();
    let r = remote("c1", "Deploy", &[]);
    store
        .apply_remote("prod", std::slice::from_ref(&r), t(0))
        .unwrap();
    let key = r.action.key.clone();
    let gone = TimelineEvent::local(t(5), TimelineKind::Cancelled, None, "left the list");
    store
        .set_status(&key, ActionStatus::Cancelled, &gone, t(5))
        .unwrap();
    assert_eq!(
        store.action(&key).unwrap().unwrap().snapshot.status,
        ActionStatus::Cancelled
    );
    let changes = store
        .apply_remote("prod", std::slice::from_ref(&r), t(10))
        .unwrap();
    assert_eq!(changes[0].change, ActionChange::Updated);
    assert_eq!(store.action(&key).unwrap().unwrap(), r.action);
}

// ---- history: full-text search, filters, paging (migration 4) ----

fn history_ids(store: &Store, q: &HistoryQuery) -> Vec<String> {
    store
        .history_page(q)
        .unwrap()
        .actions
        .into_iter()
        .map(|a| a.key.external_id)
        .collect()
}

fn text(t: &str) -> HistoryQuery {
    HistoryQuery {
        text: Some(t.into()),
        ..HistoryQuery::default()
    }
}

#[test]
fn history_search_finds_words_in_details_timeline_and_reasons_as_prefixes() {
    let (_dir, store) = file_store();
    let mut a = remote(
        "h1",
        "Deploy payments",
        &[("e1", "canary passed in eu-west")],
    );
    a.action.snapshot.details[0].value = "image registry.example.com/payments:2.31".into();
    a.action = PendingAction::new(a.action.key.clone(), a.action.snapshot.clone());
    let b = remote("h2", "Restart nginx", &[("e2", "requested by the on-call")]);
    store
        .apply_remote("prod", &[a.clone(), b.clone()], t(0))
        .unwrap();
    let mut d = decision(&b.action.key, "k-h2", &b.action.snapshot_hash);
    d.reason = "Incident INC-4471 needs it".into();
    drop(store.record_decision(&d, &[], t(10)).unwrap());

    assert_eq!(history_ids(&store, &text("registry")), ["h1"]);
    assert_eq!(history_ids(&store, &text("canar")), ["h1"], "prefix");
    assert_eq!(history_ids(&store, &text("INC-4471")), ["h2"], "reason");
    assert_eq!(history_ids(&store, &text("on-call")), ["h2"], "timeline");
    assert_eq!(
        history_ids(&store, &text("deploy canary")),
        ["h1"],
        "all words"
    );
    assert!(history_ids(&store, &text("deploy nginx")).is_empty());
    // Query syntax in the person's words is text, never an error or an operator.
    for hostile in ["\"", "AND", "NOT payments", "title:x", "(", "*", "-"] {
        store.history_page(&text(hostile)).unwrap();
    }
    assert_eq!(
        history_ids(&store, &text("   ")).len(),
        2,
        "no words: no filter"
    );

    // The index follows the table: a changed title is found by its new words only.
    let mut renamed = a.clone();
    renamed.action.snapshot.title = "Roll back payments".into();
    renamed.action = PendingAction::new(renamed.action.key.clone(), renamed.action.snapshot);
    store.apply_remote("prod", &[renamed], t(20)).unwrap();
    assert_eq!(history_ids(&store, &text("roll back")), ["h1"]);
    assert!(history_ids(&store, &text("deploy")).is_empty());
}

#[test]
fn history_filters_combine_and_pages_never_repeat_or_skip() {
    let (_dir, store) = file_store();
    store
        .register_backend("stage", "countersign", "http://127.0.0.1:2")
        .unwrap();
    let mut prod = Vec::new();
    for i in 0..250 {
        let mut r = remote(&format!("p{i:03}"), "Deploy", &[]);
        r.action.snapshot.requested_at = t(i64::from(i / 2)); // pairs share a time
        r.action.snapshot.requester = if i % 5 == 0 {
            "bo".into()
        } else {
            "rui".into()
        };
        r.action = PendingAction::new(r.action.key.clone(), r.action.snapshot);
        prod.push(r);
    }
    store.apply_remote("prod", &prod, t(0)).unwrap();
    let mut staged = remote("s1", "Deploy", &[]);
    staged.action.key = ActionKey::new("stage", "s1");
    store.apply_remote("stage", &[staged], t(0)).unwrap();
    let key = prod[7].action.key.clone();
    let d = decision(&key, "k-p7", &prod[7].action.snapshot_hash);
    drop(store.record_decision(&d, &[], t(10)).unwrap());

    // Pages of 100, newest first, then by row: 251 rows, no repeats, none skipped.
    let mut seen = Vec::new();
    let mut q = HistoryQuery {
        limit: Some(100),
        ..HistoryQuery::default()
    };
    loop {
        let page = store.history_page(&q).unwrap();
        seen.extend(page.actions.iter().map(|a| a.key.to_string()));
        match page.next {
            Some(next) => q.after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 251);
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 251);
    assert_eq!(seen[0], "prod/p249");

    let only = |q: HistoryQuery| {
        history_ids(
            &store,
            &HistoryQuery {
                limit: Some(500),
                ..q
            },
        )
    };
    assert_eq!(
        only(HistoryQuery {
            backend: Some("stage".into()),
            ..HistoryQuery::default()
        }),
        ["s1"]
    );
    assert_eq!(
        only(HistoryQuery {
            verdict: Some(Verdict::Approve),
            ..HistoryQuery::default()
        }),
        ["p007"]
    );
    assert_eq!(
        only(HistoryQuery {
            requester: Some("bo".into()),
            ..HistoryQuery::default()
        })
        .len(),
        50
    );
    let window = only(HistoryQuery {
        from: Some(t(10)),
        to: Some(t(12)),
        requester: Some("rui".into()),
        ..HistoryQuery::default()
    });
    // Times 10 and 11 hold p020..p023, of which p020 is bo's.
    assert_eq!(window, ["p023", "p022", "p021"]);
    assert!(only(HistoryQuery {
        status: Some(ActionStatus::Approved),
        ..HistoryQuery::default()
    })
    .is_empty());
}

#[test]
fn snapshot_versions_keep_every_stored_version_oldest_first() {
    let (_dir, store) = file_store();
    let first = remote("v1", "Deploy v1", &[]);
    store
        .apply_remote("prod", std::slice::from_ref(&first), t(0))
        .unwrap();
    let mut second = first.clone();
    second.action.snapshot.title = "Deploy v2".into();
    second.action = PendingAction::new(second.action.key.clone(), second.action.snapshot);
    store.apply_remote("prod", &[second.clone()], t(5)).unwrap();
    let versions = store.snapshot_versions(&first.action.key).unwrap();
    let hashes: Vec<_> = versions.iter().map(|v| v.snapshot_hash.clone()).collect();
    assert_eq!(
        hashes,
        [first.action.snapshot_hash, second.action.snapshot_hash]
    );
    assert_eq!(versions[1].snapshot.title, "Deploy v2");
}

// ---- history keys and the search document (migration 5) ----

/// FTS5's own consistency check of `action_search` against its content.
fn search_index_is_consistent(store: &Store) {
    store
        .conn()
        .execute_batch("INSERT INTO action_search (action_search) VALUES ('integrity-check');")
        .unwrap();
}

fn search_docs(store: &Store) -> i64 {
    store
        .conn()
        .query_row("SELECT count(*) FROM action_search", [], |r| r.get(0))
        .unwrap()
}

fn history_key_of(store: &Store, external_id: &str) -> Option<i64> {
    store
        .conn()
        .query_row(
            "SELECT history_key FROM actions WHERE external_id = ?1",
            [external_id],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn the_search_document_follows_later_timeline_lines_reasons_details_and_renames() {
    let (_dir, store) = file_store();
    let mut a = remote("d1", "Deploy payments", &[("e1", "requested")]);
    a.action.snapshot.details[0].value = "zebrafish-7".into();
    a.action = PendingAction::new(a.action.key.clone(), a.action.snapshot.clone());
    let other = remote("d2", "Restart nginx", &[]);
    store
        .apply_remote("prod", &[a.clone(), other.clone()], t(0))
        .unwrap();
    let key = a.action.key.clone();
    assert_eq!(history_ids(&store, &text("zebrafish")), ["d1"], "details");

    // A timeline line added later, by the engine or by a backend.
    assert!(history_ids(&store, &text("flaky")).is_empty());
    let later = TimelineEvent::local(
        t(5),
        TimelineKind::Viewed,
        Some("mia".into()),
        "smoke tests flaky",
    );
    assert_eq!(store.append_timeline(&key, &[later]).unwrap(), 1);
    assert_eq!(
        history_ids(&store, &text("flaky")),
        ["d1"],
        "later timeline line"
    );
    assert_eq!(history_ids(&store, &text("mia smoke")), ["d1"], "its actor");
    let mut seen_again = a.clone();
    seen_again
        .timeline
        .push(remote("d1", "", &[("e2", "quorum reached by ops")]).timeline[0].clone());
    store.apply_remote("prod", &[seen_again], t(6)).unwrap();
    assert_eq!(history_ids(&store, &text("quorum")), ["d1"], "backend line");

    // A decision's reason and approver.
    let mut d = decision(&key, "k-d1", &a.action.snapshot_hash);
    d.reason = "quokka window approved".into();
    d.approver = "zoe@example.com".into();
    drop(store.record_decision(&d, &[], t(10)).unwrap());
    assert_eq!(history_ids(&store, &text("quokka")), ["d1"], "reason");
    assert_eq!(history_ids(&store, &text("zoe")), ["d1"], "approver");
    // Words from the row, a line and a reason together: one document.
    assert_eq!(
        history_ids(&store, &text("zebrafish flaky quokka payments")),
        ["d1"]
    );

    // A status set locally with its event.
    let gone = TimelineEvent::local(t(11), TimelineKind::Cancelled, None, "vanished upstream");
    store
        .set_status(&other.action.key, ActionStatus::Cancelled, &gone, t(11))
        .unwrap();
    assert_eq!(history_ids(&store, &text("vanished")), ["d2"]);

    // A new title is found under its new words, not the old, and the older words of
    // the action (its details, its timeline) still find it.
    let mut renamed = a.clone();
    renamed.action.snapshot.title = "Roll back payments".into();
    renamed.action = PendingAction::new(key.clone(), renamed.action.snapshot);
    store.apply_remote("prod", &[renamed], t(20)).unwrap();
    assert_eq!(history_ids(&store, &text("roll")), ["d1"]);
    assert!(history_ids(&store, &text("deploy")).is_empty());
    assert_eq!(history_ids(&store, &text("flaky quokka")), ["d1"]);
    assert_eq!(search_docs(&store), 2, "one document per action");
    search_index_is_consistent(&store);
}

#[test]
fn a_failed_write_leaves_the_search_index_as_it_was() {
    let (_dir, store) = file_store();
    let a = remote("f1", "Deploy payments", &[]);
    store
        .apply_remote("prod", std::slice::from_ref(&a), t(0))
        .unwrap();
    // A batch naming an unknown backend fails after nothing; one whose second action
    // cannot be keyed fails after the first was written: both roll back whole.
    let base = history_key_base(&t(0));
    store
        .conn()
        .execute(
            "UPDATE actions SET history_key = ?1 WHERE external_id = 'f1'",
            [base | history::SLOT_MASK],
        )
        .unwrap();
    store
        .conn()
        .execute(
            "UPDATE action_search SET rowid = ?1",
            [base | history::SLOT_MASK],
        )
        .unwrap();
    let mut fine = remote("f2", "Rotate walrus keys", &[("x", "walrus line")]);
    fine.action.snapshot.requested_at = t(60);
    fine.action = PendingAction::new(fine.action.key.clone(), fine.action.snapshot);
    let full = remote("f3", "Deploy walrus", &[]); // requested at t(0): block full
    let err = store
        .apply_remote("prod", &[fine.clone(), full], t(1))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::HistoryFull { action, .. } if action == "prod/f3"),
        "{err:?}"
    );
    assert!(err.to_string().contains("same millisecond"), "{err}");
    assert!(
        store.action(&fine.action.key).unwrap().is_none(),
        "rolled back"
    );
    assert!(history_ids(&store, &text("walrus")).is_empty());
    assert_eq!(search_docs(&store), 1);
    // The next write indexes what it wrote, and only that.
    store.apply_remote("prod", &[fine], t(2)).unwrap();
    assert_eq!(history_ids(&store, &text("walrus")), ["f2"]);
    assert_eq!(history_ids(&store, &text("deploy")), ["f1"]);
    search_index_is_consistent(&store);
}

#[test]
fn history_keys_order_by_request_time_then_arrival_and_follow_a_changed_time() {
    let (_dir, store) = file_store();
    let at = |id: &str, secs: i64| {
        let mut r = remote(id, "Deploy kiwi", &[]);
        r.action.snapshot.requested_at = t(secs);
        r.action = PendingAction::new(r.action.key.clone(), r.action.snapshot);
        r
    };
    // Same millisecond: slots in arrival order; an earlier time sorts below.
    store
        .apply_remote("prod", &[at("k1", 10), at("k2", 10), at("k0", 5)], t(0))
        .unwrap();
    let base = history_key_base(&t(10));
    assert_eq!(history_key_of(&store, "k1"), Some(base));
    assert_eq!(history_key_of(&store, "k2"), Some(base + 1));
    assert_eq!(history_key_of(&store, "k0"), Some(history_key_base(&t(5))));
    let browse = |q: HistoryQuery| history_ids(&store, &q);
    assert_eq!(browse(HistoryQuery::default()), ["k2", "k1", "k0"]);
    assert_eq!(browse(text("kiwi")), ["k2", "k1", "k0"]);
    // A slot freed in the block is not reused: the next one goes after the highest.
    store.apply_remote("prod", &[at("k3", 10)], t(1)).unwrap();
    assert_eq!(history_key_of(&store, "k3"), Some(base + 2));

    // A backend moves k0's request time past the others: it moves in history (browse
    // and search) and its document moves with it.
    store.apply_remote("prod", &[at("k0", 30)], t(2)).unwrap();
    assert_eq!(history_key_of(&store, "k0"), Some(history_key_base(&t(30))));
    assert_eq!(browse(HistoryQuery::default()), ["k0", "k3", "k2", "k1"]);
    assert_eq!(browse(text("kiwi")), ["k0", "k3", "k2", "k1"]);
    assert_eq!(store.history(10).unwrap()[0].key.external_id, "k0");
    // Only its title changed: the key stays.
    let mut retitled = at("k0", 30);
    retitled.action.snapshot.title = "Deploy kiwi twice".into();
    retitled.action = PendingAction::new(retitled.action.key.clone(), retitled.action.snapshot);
    store.apply_remote("prod", &[retitled], t(3)).unwrap();
    assert_eq!(history_key_of(&store, "k0"), Some(history_key_base(&t(30))));
    assert_eq!(browse(text("twice")), ["k0"]);
    assert_eq!(search_docs(&store), 4);
    search_index_is_consistent(&store);

    // Times outside 1970..2248 are clamped to the ends, not refused.
    let mut old = at("k-old", 0);
    old.action.snapshot.requested_at = Utc.with_ymd_and_hms(1960, 1, 1, 0, 0, 0).unwrap();
    old.action = PendingAction::new(old.action.key.clone(), old.action.snapshot);
    store.apply_remote("prod", &[old], t(4)).unwrap();
    assert_eq!(history_key_of(&store, "k-old"), Some(0));
    assert_eq!(
        browse(text("kiwi")).last().map(String::as_str),
        Some("k-old")
    );
}

#[test]
fn search_pages_by_the_history_key_without_repeats_or_gaps() {
    let (_dir, store) = file_store();
    let mut all = Vec::new();
    for i in 0..230 {
        let mut r = remote(&format!("s{i:03}"), "Deploy otter", &[]);
        r.action.snapshot.requested_at = t(i64::from(i / 3)); // threes share a time
        if i % 4 == 0 {
            r.action.snapshot.title = "Deploy otter canary".into();
        }
        r.action = PendingAction::new(r.action.key.clone(), r.action.snapshot);
        all.push(r);
    }
    store.apply_remote("prod", &all, t(0)).unwrap();
    let collect = |mut q: HistoryQuery| {
        let mut seen = Vec::new();
        loop {
            let page = store.history_page(&q).unwrap();
            assert!(page.actions.len() <= 50);
            seen.extend(page.actions.into_iter().map(|a| a.key.external_id));
            match page.next {
                Some(next) => q.after = Some(next),
                None => return seen,
            }
        }
    };
    let browse = collect(HistoryQuery {
        limit: Some(50),
        ..HistoryQuery::default()
    });
    let search = collect(HistoryQuery {
        limit: Some(50),
        text: Some("otter".into()),
        ..HistoryQuery::default()
    });
    assert_eq!(browse.len(), 230);
    assert_eq!(search, browse, "search walks the same order as browsing");
    let canary = collect(HistoryQuery {
        limit: Some(50),
        text: Some("canary otter".into()),
        from: Some(t(10)),
        to: Some(t(70)),
        ..HistoryQuery::default()
    });
    let expected: Vec<String> = (30..210)
        .rev()
        .filter(|i| i % 4 == 0)
        .map(|i| format!("s{i:03}"))
        .collect();
    assert_eq!(canary, expected);
    // A cursor this store did not hand out is a typed error, not a panic.
    let bad = HistoryQuery {
        after: Some(HistoryCursor {
            requested_at: "yesterday".into(),
            row: 1,
        }),
        ..HistoryQuery::default()
    };
    assert!(matches!(
        store.history_page(&bad),
        Err(StoreError::BadCursor(_))
    ));
}

/// What FTS5 itself finds for the words as prefix terms (`"word"*` each, quotes taken
/// out), newest first: what a search must find however it asks.
fn prefix_search_ids(store: &Store, text: &str) -> Vec<String> {
    let expr: Vec<String> = text
        .split_whitespace()
        .map(|w| w.replace('"', ""))
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .map(|w| format!("\"{w}\"*"))
        .collect();
    let conn = store.conn();
    let mut stmt = conn
        .prepare(
            "SELECT a.external_id FROM action_search s JOIN actions a ON a.history_key = s.rowid
             WHERE action_search MATCH ?1 ORDER BY s.rowid DESC",
        )
        .unwrap();
    stmt.query_map([expr.join(" ")], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every page of `q`, in order.
fn all_pages(store: &Store, mut q: HistoryQuery) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let page = store.history_page(&q).unwrap();
        seen.extend(page.actions.into_iter().map(|a| a.key.external_id));
        match page.next {
            Some(next) => q.after = Some(next),
            None => return seen,
        }
    }
}

/// Prefixes are expanded into the index's terms (`history::word_match`); a search must
/// find exactly what the prefix terms find, across pages, for words of one token or
/// several, any case, words with quotes, words that are not ASCII, and prefixes of more
/// terms than are expanded.
#[test]
fn expanded_prefixes_find_what_prefix_terms_find() {
    let (_dir, store) = file_store();
    let mut all = Vec::new();
    let titles = [
        "Deploy kiwi",
        "Deploy kiwis to eu",
        "Kiwifruit backfill",
        "Rotate OPS-4471 keys",
        "OPS 4471 spare, ops-5544",
        "Zürich failover",
        "zurich dry run",
        "Restart kiwi-api",
        "ki\"wi quoted",
    ];
    for (i, title) in titles.iter().enumerate() {
        let mut r = remote(&format!("w{i}"), title, &[]);
        r.action.snapshot.requested_at = t(i as i64);
        r.action = PendingAction::new(r.action.key.clone(), r.action.snapshot);
        all.push(r);
    }
    // More terms with one prefix than are expanded: "zeta000" … ("zeta"* stays a prefix
    // term), each in one action, interleaved with the others in history.
    for i in 0..history::MAX_EXPANSION + 6 {
        let mut r = remote(&format!("z{i:03}"), &format!("Tune zeta{i:03}"), &[]);
        r.action.snapshot.requested_at = t(100 + i as i64);
        r.action = PendingAction::new(r.action.key.clone(), r.action.snapshot);
        all.push(r);
    }
    store.apply_remote("prod", &all, t(0)).unwrap();

    for words in [
        "kiwi",
        "KIW",
        "ki",
        "kiwif",
        "deploy kiw",
        "kiwi-",
        "-kiwi",
        "kiwi-a",
        "ki\"wi",
        "ops-44",
        "OPS-4471",
        "ops 4471",
        "ops-5544 spare",
        "zür",
        "zur",
        "zeta",
        "zeta0",
        "zeta06",
        "tune zeta00",
        "nosuch",
        "kiwi nosuch",
    ] {
        let expected = prefix_search_ids(&store, words);
        let q = HistoryQuery {
            text: Some(words.into()),
            limit: Some(4),
            ..HistoryQuery::default()
        };
        assert_eq!(all_pages(&store, q), expected, "{words:?}");
    }
    // The cases that show the expansion is what is sent, and where it is not.
    let conn = store.conn();
    let expr = |t: &str| Store::fts_match(&conn, t).unwrap().unwrap();
    assert_eq!(expr("KIW"), r#"("kiwi" OR "kiwifruit" OR "kiwis")"#);
    assert_eq!(expr("ops-44 kiwis"), r#""ops 4471" AND "kiwis""#);
    assert_eq!(expr("zeta"), r#""zeta"*"#, "more terms than expanded");
    assert_eq!(expr("zeta00"), "(\"zeta000\" OR \"zeta001\" OR \"zeta002\" OR \"zeta003\" OR \"zeta004\" OR \"zeta005\" OR \"zeta006\" OR \"zeta007\" OR \"zeta008\" OR \"zeta009\")");
    assert_eq!(expr("zür"), r#""zür"*"#, "not ASCII: FTS5 folds it");
    assert_eq!(expr("nosuch"), r#""nosuch"*"#);
    assert_eq!(Store::fts_match(&conn, " \" * - ").unwrap(), None);
}

/// A word found only far back in history, under pages of newer matches of the same
/// prefix, is found, on the last page, without repeats or gaps.
#[test]
fn an_expanded_search_pages_down_to_old_history() {
    let (_dir, store) = file_store();
    let mut all = Vec::new();
    for i in 0..120 {
        let title = match i {
            0 => "Deploy walrusfish",
            _ if i % 2 == 0 => "Deploy walrus",
            _ => "Deploy walruses",
        };
        let mut r = remote(&format!("p{i:03}"), title, &[]);
        r.action.snapshot.requested_at = t(i64::from(i) / 2); // twos share a time
        r.action = PendingAction::new(r.action.key.clone(), r.action.snapshot);
        all.push(r);
    }
    store.apply_remote("prod", &all, t(0)).unwrap();
    let search = |words: &str| {
        all_pages(
            &store,
            HistoryQuery {
                text: Some(words.into()),
                limit: Some(7),
                ..HistoryQuery::default()
            },
        )
    };
    let walrus = search("walr");
    assert_eq!(walrus.len(), 120);
    assert_eq!(walrus, prefix_search_ids(&store, "walr"));
    assert_eq!(walrus.last().map(String::as_str), Some("p000"));
    assert_eq!(search("walrusf"), ["p000"]);
    assert_eq!(search("deploy walrusf"), ["p000"]);
    assert_eq!(search("walruse").len(), 60);
}

/// Every filter shape the window sends reads an index in history order: no sorting of
/// all matches, no per-row MATCH.
#[test]
fn history_queries_read_indexes_in_order_without_sorting() {
    let (_dir, store) = file_store();
    let q = |f: &dyn Fn(&mut HistoryQuery)| {
        let mut q = HistoryQuery::default();
        f(&mut q);
        q
    };
    let cases = [
        q(&|_| {}),
        q(&|q| q.backend = Some("prod".into())),
        q(&|q| q.status = Some(ActionStatus::Denied)),
        q(&|q| q.requester = Some("ana".into())),
        q(&|q| q.verdict = Some(Verdict::Deny)),
        q(&|q| {
            q.backend = Some("prod".into());
            q.status = Some(ActionStatus::Expired);
        }),
        q(&|q| {
            q.from = Some(t(0));
            q.to = Some(t(600));
        }),
        q(&|q| {
            q.requester = Some("ana".into());
            q.status = Some(ActionStatus::Approved);
            q.from = Some(t(0));
            q.to = Some(t(600));
        }),
        q(&|q| {
            q.to = Some(t(600));
            q.after = Some(HistoryCursor {
                requested_at: "2026-11-25T09:05:00.000Z".into(),
                row: 3,
            });
        }),
        q(&|q| q.text = Some("canary".into())),
        q(&|q| {
            q.text = Some("canary deploy".into());
            q.to = Some(t(600));
            q.status = Some(ActionStatus::Approved);
            q.requester = Some("ana".into());
            q.backend = Some("prod".into());
        }),
    ];
    let conn = store.conn();
    for case in &cases {
        let text = case
            .text
            .as_deref()
            .and_then(|t| Store::fts_match(&conn, t).unwrap());
        let (sql, args) = history::history_sql(case, 100, text).unwrap();
        // One upper bound (the lower of cursor and end date): of two `<` terms SQLite
        // would start the range at one and filter every newer row by the other.
        assert_eq!(sql.matches(" < ?").count(), 1, "{case:?}: {sql}");
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(args), |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join(" | ");
        assert!(!plan.contains("TEMP B-TREE"), "{case:?}: {plan}");
        if case.text.is_some() {
            assert!(
                plan.starts_with("SCAN s VIRTUAL TABLE"),
                "{case:?}: FTS5 first: {plan}"
            );
        } else {
            assert!(
                plan.contains("USING INDEX actions_by_")
                    && plan.contains("history")
                    && !plan.contains("SCAN b"),
                "{case:?}: {plan}"
            );
        }
    }
}

#[test]
fn a_version_4_store_migrates_into_one_search_document_per_action() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.db");
    {
        let mut conn = Connection::open(&path).unwrap();
        for (i, sql) in schema::MIGRATIONS[..4].iter().enumerate() {
            let tx = conn.transaction().unwrap();
            tx.execute_batch(sql).unwrap();
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .unwrap();
            tx.commit().unwrap();
        }
        let action = |id: i64, ext: &str, title: &str, at: &str| {
            format!(
                "INSERT INTO actions (id, backend_id, external_id, kind, title, summary,
                     requester, requested_at, resource, details_json, approvals_required,
                     reviews_json, status, snapshot_hash, first_seen_at, updated_at)
                 VALUES ({id}, 1, '{ext}', 'deployment', '{title}', '', 'rui', '{at}', 'api',
                     '[{{\"key\":\"image\",\"value\":\"pelican:{id}\"}}]', 1, '[]',
                     'approved', 'h{id}', '{at}', '{at}');"
            )
        };
        conn.execute_batch(&format!(
            "INSERT INTO backends (id, name, kind, url) VALUES (1, 'prod', 'countersign', 'x');
             {} {} {} {}
             INSERT INTO timeline_events (action_id, at, source, kind, actor, text)
             VALUES (7, '2026-11-25T09:00:01.000Z', 'backend', 'viewed', 'mia',
                 'heron sighted');
             INSERT INTO decisions (action_id, verdict, reason, decided_at, approver,
                 snapshot_hash, idempotency_key, payload)
             VALUES (8, 'deny', 'egret season', '2026-11-25T09:00:10.000Z', 'ana', 'h8',
                 'k1', '{{}}');",
            action(7, "a7", "Deploy one", "2026-11-25T09:00:00.000Z"),
            action(8, "a8", "Deploy two", "2026-11-25T09:00:00.000Z"),
            action(3, "a3", "Deploy three", "2026-11-25T10:00:00.000Z"),
            action(9, "a9", "Deploy old", "1969-07-20T20:17:00.000Z"),
        ))
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let base = history_key_base(&t(0));
    assert_eq!(history_key_of(&store, "a7"), Some(base), "same ms: by id");
    assert_eq!(history_key_of(&store, "a8"), Some(base + 1));
    assert_eq!(
        history_key_of(&store, "a3"),
        Some(history_key_base(&t(3600)))
    );
    assert_eq!(history_key_of(&store, "a9"), Some(0), "clamped");
    assert_eq!(
        history_ids(&store, &HistoryQuery::default()),
        ["a3", "a8", "a7", "a9"]
    );
    assert_eq!(
        history_ids(&store, &text("deploy")),
        ["a3", "a8", "a7", "a9"]
    );
    assert_eq!(history_ids(&store, &text("heron mia")), ["a7"], "timeline");
    assert_eq!(history_ids(&store, &text("egret ana")), ["a8"], "decision");
    assert_eq!(history_ids(&store, &text("pelican")).len(), 4, "details");
    assert_eq!(search_docs(&store), 4);
    search_index_is_consistent(&store);
    {
        let conn = store.conn();
        let left: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name LIKE '%_fts%'
                    OR name LIKE 'actions_by_%requested%' OR name = 'search_fill'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "the old indexes and triggers are gone");
    }
    // The migrated store keeps writing documents itself.
    let key = ActionKey::new("prod", "a9");
    let line = TimelineEvent::local(t(5), TimelineKind::Viewed, None, "ibis");
    store.append_timeline(&key, &[line]).unwrap();
    assert_eq!(history_ids(&store, &text("ibis")), ["a9"]);
    drop(store);
    // Reopening does not migrate (or fill) again.
    let store = Store::open(&path).unwrap();
    assert_eq!(search_docs(&store), 4);
}
