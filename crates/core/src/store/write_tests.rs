//! The write path of a sync: durability modes, history keys given at insert, and the
//! search documents staying in step with the tables.

use chrono::{Duration, TimeZone};

use super::*;
use crate::model::Detail;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap() + Duration::seconds(secs)
}

fn remote(id: &str, title: &str, requested_at: DateTime<Utc>) -> RemoteAction {
    let snapshot = ActionSnapshot {
        kind: ActionKind::Deployment,
        title: title.into(),
        summary: format!("summary of {id}"),
        requester: "rui@example.com".into(),
        requested_at,
        expires_at: Some(requested_at + Duration::seconds(600)),
        resource: "payments-api".into(),
        details: vec![Detail {
            key: "ticket".into(),
            value: format!("OPS-{id}"),
        }],
        approvals_required: 1,
        reviews: vec![],
        status: ActionStatus::Pending,
        web_url: None,
        form: None,
    };
    RemoteAction {
        action: PendingAction::new(ActionKey::new("prod", id), snapshot),
        timeline: vec![TimelineEvent {
            at: requested_at,
            source: EventSource::Backend,
            kind: TimelineKind::Requested,
            actor: Some("rui@example.com".into()),
            text: format!("requested {id}"),
            external_id: Some(format!("{id}-requested")),
        }],
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

/// `PRAGMA synchronous` as the next writer would find it: 2 is FULL, 1 NORMAL.
fn synchronous(store: &Store) -> i64 {
    store
        .conn()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap()
}

fn search_index_is_consistent(store: &Store) {
    store
        .conn()
        .execute_batch("INSERT INTO action_search (action_search) VALUES ('integrity-check');")
        .unwrap();
}

fn history_keys(store: &Store) -> Vec<(String, Option<i64>)> {
    let conn = store.conn();
    let mut stmt = conn
        .prepare("SELECT external_id, history_key FROM actions ORDER BY external_id")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

/// Rowids of the search documents whose title matches `word`.
fn search(store: &Store, word: &str) -> Vec<i64> {
    let conn = store.conn();
    let mut stmt = conn
        .prepare("SELECT rowid FROM action_search WHERE title MATCH ?1 ORDER BY rowid")
        .unwrap();
    let rows = stmt
        .query_map([word], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

#[test]
fn a_sync_write_leaves_the_connection_durable_for_the_next_writer() {
    let (_dir, store) = file_store();
    assert_eq!(synchronous(&store), 2);
    store
        .apply_remote("prod", &[remote("a1", "Deploy", t(0))], t(1))
        .unwrap();
    assert_eq!(synchronous(&store), 2);
    store
        .save_sync_cursor(
            "prod",
            &SyncCursor {
                etag: Some("\"e1\"".into()),
                cursor: None,
                last_event_id: None,
            },
        )
        .unwrap();
    assert_eq!(synchronous(&store), 2);
    // A failed sync write (unknown backend) puts FULL back too.
    assert!(matches!(
        store.apply_remote("nope", &[remote("a2", "Deploy", t(0))], t(1)),
        Err(StoreError::UnknownBackend(_))
    ));
    assert_eq!(synchronous(&store), 2);
}

#[test]
fn a_connection_left_relaxed_is_made_durable_before_anyone_else_writes() {
    let (_dir, store) = file_store();
    {
        // As if a relaxed write had panicked between its switch and its restore.
        let conn = store.conn.lock().unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        store.relaxed.store(true, Ordering::Release);
    }
    assert_eq!(synchronous(&store), 2);
    assert!(!store.relaxed.load(Ordering::Acquire));
}

#[test]
fn new_actions_get_their_history_keys_at_insert_in_order_and_each_one_document() {
    let (_dir, store) = file_store();
    // Three in the same millisecond, one a second later: consecutive slots of one block.
    let batch = [
        remote("a1", "alpha", t(0)),
        remote("a2", "bravo", t(0)),
        remote("a3", "charlie", t(0)),
        remote("a4", "delta", t(1)),
    ];
    store.apply_remote("prod", &batch, t(2)).unwrap();
    let base = history_key_base(&t(0));
    assert_eq!(
        history_keys(&store),
        vec![
            ("a1".into(), Some(base)),
            ("a2".into(), Some(base + 1)),
            ("a3".into(), Some(base + 2)),
            ("a4".into(), Some(history_key_base(&t(1)))),
        ]
    );
    search_index_is_consistent(&store);
    assert_eq!(search(&store, "bravo"), vec![base + 1]);

    // A later list moves a2 to a new request time and renames it: its document leaves
    // the old key and is found under the new one only.
    let mut moved = remote("a2", "zulu", t(5));
    moved.timeline.clear();
    let changes = store.apply_remote("prod", &[moved], t(6)).unwrap();
    assert_eq!(changes[0].change, ActionChange::Updated);
    let new_key = history_key_base(&t(5));
    assert_eq!(history_keys(&store)[1], ("a2".into(), Some(new_key)));
    assert_eq!(search(&store, "bravo"), Vec::<i64>::new());
    assert_eq!(search(&store, "zulu"), vec![new_key]);
    search_index_is_consistent(&store);
    let docs: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM action_search", [], |r| r.get(0))
        .unwrap();
    assert_eq!(docs, 4);

    // The same list again changes nothing and keeps every key.
    let before = history_keys(&store);
    let again = store.apply_remote("prod", &batch[2..], t(7)).unwrap();
    assert!(again
        .iter()
        .all(|c| c.change == ActionChange::Unchanged && c.new_events == 0));
    assert_eq!(history_keys(&store), before);
    search_index_is_consistent(&store);
}

/// Not a test of behaviour: times storing 5 lists of 2,000 new actions (as the ingest
/// benchmark's sync does) into a file store, for A/B comparisons of the write path
/// without servers. `cargo nextest run -p countersign-core --run-ignored only
/// ingest_timing --no-capture`.
#[test]
#[ignore]
fn ingest_timing() {
    let (_dir, store) = file_store();
    for b in 1..5 {
        store
            .register_backend(&format!("prod{b}"), "countersign", "http://127.0.0.1:1")
            .unwrap();
    }
    let lists: Vec<(String, Vec<RemoteAction>)> = (0..5)
        .map(|b| {
            let name = if b == 0 {
                "prod".to_owned()
            } else {
                format!("prod{b}")
            };
            let actions = (0..2000)
                .map(|i| {
                    let mut r = remote(&format!("x{b}-{i}"), "deploy payments", t(i));
                    r.action.key.backend = name.clone();
                    r
                })
                .collect();
            (name, actions)
        })
        .collect();
    let started = std::time::Instant::now();
    for (name, actions) in &lists {
        store.apply_remote(name, actions, t(3000)).unwrap();
    }
    eprintln!(
        "ingest_timing: 10000 actions stored in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    search_index_is_consistent(&store);
}
