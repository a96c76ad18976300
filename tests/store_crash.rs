//! A writer process is killed with SIGKILL in the middle of its transactions; the file
//! reopens with every committed row intact and no partial transaction.
//!
//! The writer is this same test binary, re-run with `--ignored --exact writer_child`
//! and the database path in an environment variable.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use chrono::Utc;
use countersign_core::model::{
    ActionKey, ActionKind, ActionSnapshot, ActionStatus, EventSource, PendingAction, RemoteAction,
    TimelineEvent, TimelineKind,
};
use countersign_core::store::Store;

const ENV: &str = "COUNTERSIGN_TEST_WRITER_DB";
const BATCH: usize = 25;

fn batch(n: usize) -> Vec<RemoteAction> {
    (0..BATCH)
        .map(|i| {
            let id = format!("b{n}-{i}");
            let snapshot = ActionSnapshot {
                kind: ActionKind::Command,
                title: format!("restart worker {id}"),
                summary: "x".repeat(200),
                requester: "ops-bot".into(),
                requested_at: Utc::now(),
                expires_at: None,
                resource: "host-1".into(),
                details: vec![],
                approvals_required: 1,
                reviews: vec![],
                status: ActionStatus::Pending,
                web_url: None,
                form: None,
            };
            RemoteAction {
                action: PendingAction::new(ActionKey::new("crash", &id), snapshot),
                timeline: vec![TimelineEvent {
                    at: Utc::now(),
                    source: EventSource::Backend,
                    kind: TimelineKind::Requested,
                    actor: None,
                    text: "requested".into(),
                    external_id: Some(format!("{id}-e")),
                }],
            }
        })
        .collect()
}

/// The writer: commits batches forever, printing each batch number after its commit.
#[test]
#[ignore = "run by kill_9_mid_transaction_keeps_every_committed_row as a child process"]
fn writer_child() {
    let Ok(path) = std::env::var(ENV) else {
        return;
    };
    let store = Store::open(std::path::Path::new(&path)).unwrap();
    store
        .register_backend("crash", "countersign", "http://x")
        .unwrap();
    let mut out = std::io::stdout().lock();
    for n in 0.. {
        store.apply_remote("crash", &batch(n), Utc::now()).unwrap();
        use std::io::Write;
        writeln!(out, "committed {n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_mid_transaction_keeps_every_committed_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    for round in 0..5u32 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let target = 3 + 7 * round as usize;
        let mut last = None;
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("committed ") {
                last = Some(n.parse::<usize>().unwrap());
                if last.unwrap() + 1 >= target {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL, while it is writing the next batch
        child.wait().unwrap();
        let committed = last.expect("writer committed something") + 1;

        let store = Store::open(&path).expect("the file reopens after kill -9");
        let rows = store.history(u32::MAX).unwrap();
        let from_this_round = rows
            .iter()
            .filter(|a| a.key.external_id.starts_with('b'))
            .count();
        // Every round restarts at batch 0 (upserts), so the table holds the largest round.
        assert!(
            from_this_round >= committed * BATCH,
            "round {round}: {from_this_round} rows < {committed} committed batches"
        );
        assert_eq!(
            from_this_round % BATCH,
            0,
            "round {round}: a partial transaction is visible"
        );
        for a in rows.iter().take(50) {
            assert_eq!(store.timeline(&a.key).unwrap().len(), 1, "{}", a.key);
        }
        drop(store);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
}
