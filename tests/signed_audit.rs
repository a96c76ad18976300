//! Signed decisions end to end through the `countersign` binary, against the reference
//! server as its own process, with the key in a real Secret Service (the test run's
//! gnome-keyring, see scripts/with-keyring.sh): the key never reaches a file, every
//! exported signature verifies with OpenSSH's own ssh-keygen, the chain catches every
//! kind of tampering, and a kill -9 at any step loses or doubles no decision.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use countersign_core::audit::{self, AuditEntry};
use countersign_core::export;
use countersign_core::signer::NAMESPACE;

const APPROVER: &str = "ana@example.com";

fn config_for(env: &CliEnv, url: &str) {
    env.write_config(&format!(
        "approver = \"{APPROVER}\"\n[[backend]]\nname = \"prod\"\nkind = \"countersign\"\nurl = \"{url}\"\ntoken_env = \"PROD_TOKEN\"\n"
    ));
}

/// `key show` → (public key, fingerprint, allowed_signers line).
fn key_show(env: &CliEnv) -> (String, String, String) {
    let out = env.ok(&["key", "show"]);
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    (
        field("public key"),
        field("fingerprint"),
        field("allowed_signers"),
    )
}

/// A server that only accepts decisions signed by this CLI's key.
fn signed_server(env: &CliEnv) -> ServerProcess {
    // The config (and so the approver) comes after the server's address is known.
    let (public, _, _) = key_show(env);
    let signers = env.dir.path().join("allowed_signers");
    std::fs::write(
        &signers,
        format!("{APPROVER} namespaces=\"{NAMESPACE}\" {public}\n"),
    )
    .unwrap();
    ServerProcess::start_with(
        &env.dir.path().join("server.db"),
        "127.0.0.1:0",
        &["--allowed-signers".as_ref(), signers.as_os_str()],
    )
}

fn every_file_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn the_key_lives_in_the_keyring_only_and_is_stable() {
    let env = CliEnv::new();
    let (public, fingerprint, line) = key_show(&env);
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    assert!(
        line.contains("namespaces=\"countersign-decision\""),
        "{line}"
    );
    assert_eq!(
        key_show(&env).1,
        fingerprint,
        "loaded again, not made again"
    );

    // The private key as the Secret Service holds it…
    let secret = Command::new("secret-tool")
        .args(["lookup", "service", "countersign", "username"])
        .arg(env.keyring_entry())
        .output()
        .expect("secret-tool (apt package libsecret-tools)");
    let secret = String::from_utf8(secret.stdout).unwrap();
    assert!(
        secret.contains("OPENSSH PRIVATE KEY"),
        "the keyring holds the key"
    );
    let body: String = secret
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    // …appears in no file Countersign wrote.
    for file in every_file_under(env.dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("PRIVATE KEY"), "{}", file.display());
        assert!(!text.contains(&body[..40]), "{}", file.display());
    }
}

#[test]
fn without_a_keyring_the_error_says_what_to_start() {
    let env = CliEnv::new();
    let out = env
        .cmd(&["key", "show"])
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keyring") && err.contains("gnome-keyring-daemon"),
        "{err}"
    );
    assert!(
        every_file_under(env.dir.path())
            .iter()
            .all(|f| !String::from_utf8_lossy(&std::fs::read(f).unwrap()).contains("PRIVATE KEY")),
        "no silent fallback to a key file"
    );
}

fn ssh_keygen_verify(
    dir: &Path,
    line: &str,
    principal: &str,
    payload: &str,
    signature: &str,
) -> bool {
    let sig = dir.join("row.sig");
    let signers = dir.join("row_allowed_signers");
    std::fs::write(&sig, signature).unwrap();
    std::fs::write(&signers, format!("{line}\n")).unwrap();
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-n", NAMESPACE, "-I", principal, "-f"])
        .arg(&signers)
        .arg("-s")
        .arg(&sig)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh-keygen (apt package openssh-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload.as_bytes())
        .unwrap();
    child.wait().unwrap().success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_decisions_export_to_a_csv_that_ssh_keygen_and_verify_accept() {
    let env = CliEnv::new();
    let server = signed_server(&env);
    let producer = Producer::new(&server.url());
    for id in ["db-1", "db-2", "db-3"] {
        producer
            .create(&new_action(id, "psql to prod-billing"))
            .await;
    }
    config_for(&env, &server.url());
    env.ok(&["sync"]);
    env.ok(&["approve", "db-1", "--reason", "=HYPERLINK(\"http://evil\")"]);
    env.ok(&["approve", "db-2", "--reason", "OPS-7"]);
    env.ok(&["deny", "db-3", "--reason", "not during the freeze"]);
    for id in ["db-1", "db-2", "db-3"] {
        assert_ne!(
            producer.get(id).await.snapshot.status.as_str(),
            "pending",
            "{id} was decided on the server (signature accepted)"
        );
    }
    let rotated = env.ok(&["key", "rotate"]);
    assert!(
        rotated.contains("rotation is in the audit chain"),
        "{rotated}"
    );

    let csv = env.dir.path().join("audit.csv");
    env.ok(&["export", "--output", csv.to_str().unwrap()]);
    let entries = export::read_csv(std::fs::File::open(&csv).unwrap()).unwrap();
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "decision",
            "delivery",
            "decision",
            "delivery",
            "decision",
            "delivery",
            "key_rotation"
        ]
    );
    // An auditor's check: every signed row with OpenSSH alone.
    for e in entries.iter().filter(|e| e.signature.is_some()) {
        let line = format!(
            "{APPROVER} namespaces=\"{NAMESPACE}\" {}",
            e.public_key.as_deref().unwrap()
        );
        assert!(
            ssh_keygen_verify(
                env.dir.path(),
                &line,
                APPROVER,
                &e.payload,
                e.signature.as_deref().unwrap()
            ),
            "ssh-keygen rejects row {}",
            e.seq
        );
    }
    // The hostile reason reaches no spreadsheet as a formula.
    let raw = std::fs::read_to_string(&csv).unwrap();
    assert!(!raw.contains(",=HYPERLINK"), "formula cell not neutralised");

    let signers = env.dir.path().join("allowed_signers");
    let ok = env.ok(&[
        "verify",
        csv.to_str().unwrap(),
        "--allowed-signers",
        signers.to_str().unwrap(),
    ]);
    assert!(
        ok.starts_with("OK: ") && ok.contains("7 entries, 4 signatures"),
        "{ok}"
    );
    assert!(env.ok(&["verify"]).starts_with("OK: the local audit chain"));

    // One byte changed in the file: named, non-zero exit.
    let tampered = raw.replacen("OPS-7", "OPS-8", 1);
    let bad = env.dir.path().join("tampered.csv");
    std::fs::write(&bad, tampered).unwrap();
    let err = env.fails(&["verify", bad.to_str().unwrap()]);
    assert!(err.contains("row 3"), "{err}");
}

fn mutations(chain: &[AuditEntry]) -> Vec<(String, usize, Vec<AuditEntry>)> {
    let mut out = Vec::new();
    for i in 0..chain.len() {
        let row = i + 1;
        let mut edited = chain.to_vec();
        edited[i].payload = edited[i].payload.replacen('"', "\" ", 1);
        out.push((format!("edit row {row}"), row, edited));

        let mut deleted = chain.to_vec();
        deleted.remove(i);
        if i < deleted.len() {
            // Removing the last row leaves a valid shorter chain: only the head hash
            // (kept elsewhere) can tell; every other removal breaks the next row.
            out.push((format!("delete row {row}"), row, deleted));
        }

        if i + 1 < chain.len() {
            let mut swapped = chain.to_vec();
            swapped.swap(i, i + 1);
            out.push((format!("swap rows {row},{}", row + 1), row, swapped));
        }

        let mut inserted = chain.to_vec();
        let mut forged = chain[i].clone();
        forged.payload.push(' ');
        forged.entry_hash = audit::entry_hash(&forged.prev_hash, &forged.payload);
        inserted.insert(i + 1, forged);
        out.push((format!("insert after row {row}"), row + 1, inserted));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_single_row_edit_delete_swap_and_insert_is_caught_and_named() {
    use countersign_core::api::DecisionInput;
    use countersign_core::backends::{self, Limits};
    use countersign_core::config::BackendConfig;
    use countersign_core::model::{ActionKey, Verdict};
    use countersign_core::signer::OsKeyring;
    use countersign_core::store::{AuditQuery, Store};

    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("server.db"), "127.0.0.1:0");
    let producer = Producer::new(&server.url());
    let n = 100; // 200 chain entries
    for i in 0..n {
        producer
            .create(&new_action(&format!("a{i}"), "Restart worker"))
            .await;
    }
    let config = BackendConfig {
        name: "prod".into(),
        kind: "countersign".into(),
        url: server.url(),
        token_env: None,
        poll_interval_secs: None,
        max_backoff_secs: None,
        timeout_secs: None,
        ..Default::default()
    };
    let data = dir.path().join("data");
    let mut engine =
        countersign_core::Engine::new(Store::open_in_dir(&data).unwrap(), APPROVER).with_key_store(
            std::sync::Arc::new(OsKeyring::with_names("countersign-test", "mutation")),
        );
    let backend = backends::build(&config, Some(TOKEN.into()), Limits::default()).unwrap();
    engine.add_backend(config, backend).unwrap();
    engine.sync_once(chrono::Utc::now()).await;
    for i in 0..n {
        let key = ActionKey::new("prod", format!("a{i}"));
        let seen = engine.detail(&key).unwrap().action.snapshot_hash;
        let input = DecisionInput {
            action: key,
            verdict: if i % 3 == 0 {
                Verdict::Deny
            } else {
                Verdict::Approve
            },
            reason: format!("reason {i}"),
            seen_snapshot_hash: seen,
            answer: None,
        };
        engine.decide(input, chrono::Utc::now()).await.unwrap();
    }
    let chain = engine.audit(&AuditQuery::default()).unwrap();
    assert_eq!(chain.len(), 2 * n);
    audit::verify_chain(&chain, None).unwrap();

    // In the CSV: every mutation of every row, written and read back as a file would be.
    for (what, row, mutated) in mutations(&chain) {
        let mut csv = Vec::new();
        export::write_csv(&mutated, &mut csv).unwrap();
        let read = export::read_csv(csv.as_slice()).unwrap();
        let err = audit::verify_chain(&read, None).expect_err(&what);
        assert_eq!(err.row(), row, "{what}: {err}");
    }

    // In the database: the same mutations applied with SQL to copies of the file.
    drop(engine);
    let db = data.join("countersign.db");
    // Every row: edit, delete, swap with the next, and insert a forged row after it
    // (a copy with its own entry hash recomputed, later rows renumbered).
    let sql_mutations: Vec<(String, String, usize)> = (1..=chain.len())
        .flat_map(|seq| {
            let next = seq + 1;
            let forged = &chain[seq - 1];
            let forged_payload = format!("{} ", forged.payload);
            let forged_hash = audit::entry_hash(&forged.prev_hash, &forged_payload);
            let mut m = vec![
                (
                    format!("edit {seq}"),
                    format!("UPDATE audit_entries SET payload = payload || ' ' WHERE seq = {seq}"),
                    seq,
                ),
                (
                    format!("insert after {seq}"),
                    format!(
                        "UPDATE audit_entries SET seq = seq + 1000000 WHERE seq > {seq};
                         UPDATE audit_entries SET seq = seq - 999999 WHERE seq > 1000000;
                         INSERT INTO audit_entries (seq, at, kind, action_id, decision_id, payload,
                             signature, public_key, key_fingerprint, prev_hash, entry_hash)
                         SELECT {next}, at, kind, action_id, decision_id, '{}', signature,
                             public_key, key_fingerprint, prev_hash, '{forged_hash}'
                         FROM audit_entries WHERE seq = {seq};",
                        forged_payload.replace('\'', "''")
                    ),
                    next,
                ),
            ];
            if seq < chain.len() {
                m.push((
                    format!("delete {seq}"),
                    format!("DELETE FROM audit_entries WHERE seq = {seq}"),
                    seq,
                ));
                m.push((
                    format!("swap {seq},{next}"),
                    format!(
                        "UPDATE audit_entries SET seq = -1 WHERE seq = {seq};
                         UPDATE audit_entries SET seq = {seq} WHERE seq = {next};
                         UPDATE audit_entries SET seq = {next} WHERE seq = -1;"
                    ),
                    seq,
                ));
            }
            m
        })
        .collect();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    drop(conn);
    for (what, sql, row) in sql_mutations {
        let copy = dir.path().join("copy.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        drop(conn);
        std::fs::copy(&db, &copy).unwrap();
        let conn = rusqlite::Connection::open(&copy).unwrap();
        conn.execute_batch(&format!(
            "DROP TRIGGER audit_entries_no_update; DROP TRIGGER audit_entries_no_delete; {sql}"
        ))
        .unwrap();
        drop(conn);
        let store = Store::open(&copy).unwrap();
        let entries = store.audit_entries(&AuditQuery::default()).unwrap();
        let err = audit::verify_chain(&entries, None).expect_err(&what);
        assert_eq!(err.row(), row, "{what}: {err}");
        drop(store);
        std::fs::remove_file(&copy).unwrap();
    }
}

/// Runs `countersign approve` with a failpoint, kills it -9 when it reaches it.
fn approve_killed_at(env: &CliEnv, id: &str, step: &str) {
    let mut child = env
        .cmd(&["approve", id, "--reason", "crash test"])
        .env("COUNTERSIGN_FAILPOINT", step)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let reached = loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line == format!("failpoint {step}") => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(reached, "the CLI never reached failpoint {step}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_each_step_loses_nothing_and_delivers_once() {
    let env = CliEnv::new();
    let server = signed_server(&env);
    let producer = Producer::new(&server.url());
    for id in ["s1", "s2", "s3"] {
        producer
            .create(&new_action(id, "Deploy payments-api"))
            .await;
    }
    config_for(&env, &server.url());
    env.ok(&["sync"]);

    approve_killed_at(&env, "s1", "after-sign");
    approve_killed_at(&env, "s2", "after-commit");
    approve_killed_at(&env, "s3", "delivered-unrecorded");

    let decisions = |id: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&env.ok(&["show", id, "--json"])).unwrap()
            ["decisions"]
            .clone()
    };
    // Signed but never committed: as if it never happened.
    assert_eq!(decisions("s1").as_array().unwrap().len(), 0);
    // Committed: queued, and not yet at the server.
    assert_eq!(decisions("s2")[0]["delivery"]["state"], "queued");
    assert!(producer.get("s2").await.snapshot.reviews.is_empty());
    // Delivered, but the answer was never recorded: queued locally, applied remotely.
    assert_eq!(decisions("s3")[0]["delivery"]["state"], "queued");
    assert_eq!(producer.get("s3").await.snapshot.reviews.len(), 1);
    assert!(env.ok(&["verify"]).starts_with("OK:"));

    // Restart: the outbox delivers with the same keys; the server applies each once.
    // (Retries are due after their backoff; the next sync picks them up.)
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        env.ok(&["sync"]);
        let done = ["s2", "s3"]
            .iter()
            .all(|id| decisions(id)[0]["delivery"]["state"] == "delivered");
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queued decisions never delivered"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for id in ["s2", "s3"] {
        assert_eq!(
            producer.get(id).await.snapshot.reviews.len(),
            1,
            "{id} applied once"
        );
    }
    // s1 can still be decided, once.
    env.ok(&["approve", "s1", "--reason", "again"]);
    assert_eq!(producer.get("s1").await.snapshot.reviews.len(), 1);
    assert!(env.ok(&["verify"]).starts_with("OK:"));
}
