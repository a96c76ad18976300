//! The real `countersign-server` binary: the `listening on` line, resuming the event
//! stream across a kill -9 and restart, and clear startup errors.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use reqwest::{Client, StatusCode};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_countersign-server");

fn command(state: &Path) -> Command {
    command_at("127.0.0.1:0", state)
}

fn command_at(addr: &str, state: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--addr", addr, "--state"])
        .arg(state)
        .env("COUNTERSIGN_SERVER_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Starts the binary and returns it with the base URL from its first stdout line.
async fn spawn(state: &Path) -> (Child, String) {
    let mut child = command(state).spawn().expect("spawn countersign-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(WAIT, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("listening line in time")
        .expect("read stdout");
    let base = line
        .strip_suffix('\n')
        .and_then(|l| l.strip_prefix("listening on "))
        .unwrap_or_else(|| panic!("first line was {line:?}"))
        .to_owned();
    assert!(
        base.starts_with("http://127.0.0.1:") && !base.ends_with(":0"),
        "{base}"
    );
    (child, base)
}

async fn create(client: &Client, base: &str, id: &str) -> serde_json::Value {
    let response = client
        .post(format!("{base}/v1/actions"))
        .bearer_auth(TOKEN)
        .json(&new_action(id, 1, None))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

#[tokio::test]
async fn events_resume_across_a_kill_and_restart_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let client = Client::new();

    let (mut first, base) = spawn(&state).await;
    let mut events = Sse::connect(&client, &base, Some(0)).await;
    let a1 = create(&client, &base, "a1").await;
    create(&client, &base, "a2").await;
    let mut seen = vec![events.next_event().await, events.next_event().await];
    drop(events); // the client goes away...
                  // ...and misses these, which the server still commits before it dies.
    let decision_body = decision("approve", &hash_of(&a1), "sam", "before-crash");
    let decided = client
        .post(format!("{base}/v1/actions/a1/decision"))
        .bearer_auth(TOKEN)
        .json(&decision_body)
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), StatusCode::OK);
    let first_answer = decided.text().await.unwrap();
    create(&client, &base, "a3").await;
    first.kill().await.expect("kill -9");

    let (mut second, base) = spawn(&state).await;
    create(&client, &base, "a4").await; // also while disconnected
    let last = seen.last().unwrap().id;
    let mut events = Sse::connect(&client, &base, Some(last)).await;
    // Backlog: the decision (3 events), a3, a4.
    for _ in 0..5 {
        seen.push(events.next_event().await);
    }
    create(&client, &base, "a5").await; // live after the replay
    seen.push(events.next_event().await);

    let ids: Vec<i64> = seen.iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        (1..=8).collect::<Vec<i64>>(),
        "contiguous, no gap, no duplicate"
    );
    let names: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "action.created",
            "action.created",
            "timeline.appended",
            "timeline.appended",
            "action.updated",
            "action.created",
            "action.created",
            "action.created"
        ]
    );
    let created: Vec<&str> = seen
        .iter()
        .filter(|e| e.event == "action.created")
        .map(|e| e.data["id"].as_str().unwrap())
        .collect();
    assert_eq!(created, ["a1", "a2", "a3", "a4", "a5"]);

    // The idempotency record survived the crash too.
    let again = client
        .post(format!("{base}/v1/actions/a1/decision"))
        .bearer_auth(TOKEN)
        .json(&decision_body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.text().await.unwrap(), first_answer);

    second.start_kill().unwrap();
    let _ = second.wait().await;
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_with_an_open_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn(&dir.path().join("s.db")).await;
    let client = Client::new();
    let mut events = Sse::connect(&client, &base, None).await;
    let pid = child.id().expect("pid");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match events.next_item().await {
                Some(SseItem::Comment(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("stream ends");
    assert_eq!(end, None);
}

async fn run_to_exit(mut cmd: Command) -> (bool, String, String) {
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("exits in time")
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn startup_errors_are_one_clear_line_and_a_failure_exit() {
    let dir = tempfile::tempdir().unwrap();

    // No token.
    let mut cmd = command(&dir.path().join("a.db"));
    cmd.env_remove("COUNTERSIGN_SERVER_TOKEN");
    let (ok, stdout, stderr) = run_to_exit(cmd).await;
    assert!(!ok);
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("COUNTERSIGN_SERVER_TOKEN"), "{stderr}");
    let mut cmd = command(&dir.path().join("a.db"));
    cmd.env("COUNTERSIGN_SERVER_TOKEN", "");
    assert!(!run_to_exit(cmd).await.0);

    // A file that is not a database: named, untouched.
    let bad = dir.path().join("notes.db");
    let garbage = "not a database at all\n".repeat(100);
    std::fs::write(&bad, &garbage).unwrap();
    let (ok, _, stderr) = run_to_exit(command(&bad)).await;
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("notes.db"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&bad).unwrap(), garbage);

    // A newer schema: named, untouched.
    let newer = dir.path().join("future.db");
    {
        let conn = rusqlite::Connection::open(&newer).unwrap();
        conn.pragma_update(None, "user_version", countersign_server::SCHEMA_VERSION + 1)
            .unwrap();
    }
    let before = std::fs::read(&newer).unwrap();
    let (ok, _, stderr) = run_to_exit(command(&newer)).await;
    assert!(!ok);
    assert!(
        stderr.contains("future.db") && stderr.contains("newer"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&newer).unwrap(), before);

    // An address already in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, _, stderr) = run_to_exit(command_at(&addr, &dir.path().join("b.db"))).await;
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");

    // Bad arguments.
    let mut cmd = command(&dir.path().join("c.db"));
    cmd.args(["--rate", "fast"]);
    let (ok, _, stderr) = run_to_exit(cmd).await;
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
