//! The `countersign` binary as a person or a script uses it: against the reference
//! server as its own process, with a real config file and data directory, and on the
//! embedded default when there is no config.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;

use common::*;

#[test]
fn every_command_has_help() {
    let env = CliEnv::new();
    for cmd in [
        vec!["--help"],
        vec!["list", "--help"],
        vec!["show", "--help"],
        vec!["approve", "--help"],
        vec!["deny", "--help"],
        vec!["history", "--help"],
        vec!["sync", "--help"],
        vec!["backends", "--help"],
        vec!["inbox", "--help"],
    ] {
        let out = env.ok(&cmd);
        assert!(out.contains("Usage: countersign"), "{cmd:?}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_list_show_approve_deny_history_backends() {
    let env = CliEnv::new();
    let server = ServerProcess::start(&env.dir.path().join("server.db"), "127.0.0.1:0");
    let producer = Producer::new(&server.url());
    producer
        .create(&new_action("db-1", "psql to prod-billing"))
        .await;
    producer
        .create(&new_action("db-2", "psql to prod-ledger"))
        .await;
    env.write_config(&format!(
        "approver = \"ana@example.com\"\n[[backend]]\nname = \"prod\"\nkind = \"countersign\"\nurl = \"{}\"\ntoken_env = \"PROD_TOKEN\"\n",
        server.url()
    ));

    let sync = env.ok(&["sync"]);
    assert!(sync.contains("prod: 2 new"), "{sync}");

    let list: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let table = env.ok(&["list"]);
    assert!(
        table.contains("prod/db-1") && table.contains("psql to prod-billing"),
        "{table}"
    );

    let show = env.ok(&["show", "db-1"]);
    assert!(show.contains("SELECT count(*) FROM invoices"), "{show}");
    assert!(
        show.contains("Timeline") && show.contains("requested"),
        "{show}"
    );

    let deny = env.fails(&["deny", "db-2"]);
    assert!(deny.contains("a deny needs a reason"), "{deny}");

    let approved = env.ok(&["approve", "prod/db-1", "--reason", "OPS-1234"]);
    assert!(approved.starts_with("Approved prod/db-1"), "{approved}");
    assert!(approved.contains("delivered"), "{approved}");
    let denied = env.ok(&["deny", "db-2", "--reason", "not during the freeze"]);
    assert!(denied.contains("delivered"), "{denied}");
    assert_eq!(
        producer.get("db-2").await.snapshot.status.as_str(),
        "denied"
    );

    let again = env.fails(&["approve", "db-1"]);
    assert!(
        again.contains("no longer pending") || again.contains("already"),
        "{again}"
    );

    let history: serde_json::Value = serde_json::from_str(&env.ok(&["history", "--json"])).unwrap();
    let statuses: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.contains(&"approved") && statuses.contains(&"denied"),
        "{statuses:?}"
    );

    // History search and filters, from the local cache: a word of the reason, a word
    // of the details, a verdict.
    let found = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["history", "--json"];
        all.extend_from_slice(args);
        let v: serde_json::Value = serde_json::from_str(&env.ok(&all)).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["key"]["external_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(found(&["--search", "freeze"]), ["db-2"]);
    assert_eq!(found(&["--search", "ledger"]), ["db-2"]);
    assert_eq!(found(&["--verdict", "approve"]), ["db-1"]);
    assert_eq!(found(&["--status", "denied", "--search", "psql"]), ["db-2"]);
    assert!(found(&["--search", "nothing-like-this"]).is_empty());
    let bad = env.run(&["history", "--status", "maybe"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`maybe` is not a status"));

    let show = env.ok(&["show", "db-1", "--json"]);
    let detail: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(detail["decisions"][0]["delivery"]["state"], "delivered");

    let backends: serde_json::Value =
        serde_json::from_str(&env.ok(&["backends", "--json"])).unwrap();
    assert_eq!(backends[0]["status"], "ok");
    assert_eq!(
        env.fails(&["show", "nope"]),
        "countersign: no action `nope` (use `backend/id`, or an id that only one backend has)"
    );
}

#[test]
fn a_token_in_the_config_file_is_refused_without_echoing_it() {
    let env = CliEnv::new();
    env.write_config("[[backend]]\nname = \"prod\"\nkind = \"countersign\"\nurl = \"http://127.0.0.1:9\"\ntoken = \"s3cr3t-value\"\n");
    let err = env.fails(&["list"]);
    assert!(err.contains("has a token in the file"), "{err}");
    assert!(!err.contains("s3cr3t-value"), "{err}");
}

#[test]
fn a_missing_token_variable_is_named() {
    let env = CliEnv::new();
    env.write_config("[[backend]]\nname = \"prod\"\nkind = \"countersign\"\nurl = \"http://127.0.0.1:9\"\ntoken_env = \"NOT_SET_ANYWHERE\"\n");
    // Only that backend is affected: the engine starts, and sync reports it by name.
    let out = env.run(&["sync"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("prod: error:") && text.contains("NOT_SET_ANYWHERE"),
        "{text}"
    );
    let backends = env.ok(&["backends"]);
    assert!(
        backends.contains("degraded") && backends.contains("NOT_SET_ANYWHERE"),
        "{backends}"
    );
}

#[test]
fn a_corrupt_database_is_named_and_left_alone() {
    let env = CliEnv::new();
    std::fs::create_dir_all(env.data()).unwrap();
    let db = env.data().join("countersign.db");
    std::fs::write(&db, b"definitely not sqlite").unwrap();
    let err = env.fails(&["list"]);
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), b"definitely not sqlite");
}

#[test]
fn an_unreachable_backend_fails_sync_with_its_name() {
    let env = CliEnv::new();
    env.write_config(
        "[[backend]]\nname = \"gone\"\nkind = \"countersign\"\nurl = \"http://127.0.0.1:9\"\n",
    );
    let out = env.run(&["sync"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("gone: error: cannot reach"), "{text}");
}

/// The README's run path when there is no display: no config → the embedded demo
/// server in-process, and the live inbox fills up by itself.
#[test]
fn the_inbox_runs_on_the_embedded_demo_with_no_config() {
    let env = CliEnv::new();
    assert!(!Path::new(&env.config()).exists());
    let mut child = env
        .cmd(&["inbox"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    // Read frames on a thread so the test can give up after a deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = false;
    while let Ok(line) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        // Frame header: "Countersign — N pending (embedded demo)   HH:MM:SS"
        let pending = line
            .split(" pending (embedded demo)")
            .next()
            .filter(|_| line.contains(" pending (embedded demo)"))
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse::<usize>().ok());
        if pending.is_some_and(|n| n >= 3) {
            seen = true;
            break;
        }
    }
    if !seen {
        let _ = child.kill();
    }
    assert!(seen, "the embedded demo shows pending requests");
    writeln!(stdin, "q").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
}
