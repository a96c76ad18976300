//! The `exec` backend against real plugin processes (tests/plugins/, run with
//! `python3`): a well-behaved plugin lists, fetches and takes decisions through the
//! engine; the Teleport example reviews through a fake `tsh`; and plugins that hang,
//! crash or print garbage degrade only their own backend, within their deadline.

mod common;

use common::until;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use countersign_core::api::DecisionInput;
use countersign_core::backends::{self, DecisionDelivery, DeliveryOutcome, Limits};
use countersign_core::config::Config;
use countersign_core::model::{
    ActionKey, ActionStatus, Decision, DeliveryState, TimelineKind, Verdict,
};
use countersign_core::signer::OsKeyring;
use countersign_core::store::Store;
use countersign_core::Engine;
use serde_json::{json, Value};

const APPROVER: &str = "ana@example.com";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn plugin(name: &str) -> String {
    root()
        .join("tests/plugins")
        .join(name)
        .display()
        .to_string()
}

fn engine(dir: &Path, keyring_user: &str) -> Engine {
    Engine::new(Store::open_in_dir(&dir.join("client")).unwrap(), APPROVER).with_key_store(
        Arc::new(OsKeyring::with_names("countersign-test", keyring_user)),
    )
}

/// Adds an exec backend, configured the way a person would in config.toml.
fn add(engine: &mut Engine, name: &str, command: &[&str], timeout_secs: u64) {
    let command: Vec<String> = command.iter().map(|c| format!("{c:?}")).collect();
    let text = format!(
        "[[backend]]\nname = {name:?}\nkind = \"exec\"\ncommand = [{}]\n\
         poll_interval_secs = 1\nmax_backoff_secs = 1\n\
         [backend.options]\ntimeout_secs = {timeout_secs}\n",
        command.join(", ")
    );
    let config = Config::parse(Path::new("config.toml"), &text)
        .expect("config")
        .backends
        .remove(0);
    let backend = backends::build(&config, None, Limits::default()).expect("backend");
    engine.add_backend(config, backend).expect("register");
}

fn action(id: &str, title: &str) -> Value {
    json!({
        "id": id,
        "kind": "command",
        "title": title,
        "summary": "from the exec test plugin",
        "requester": "dana@example.com",
        "requested_at": "2026-11-25T01:02:03.456Z",
        "expires_at": "2099-01-01T00:00:00Z",
        "resource": "prod-billing",
        "details": [{"key": "command", "value": "systemctl restart billing"}],
        "approvals_required": 1,
        "status": "pending",
        "timeline": [{"id": "t1", "at": "2026-11-25T01:02:03Z", "kind": "requested",
                      "actor": "dana@example.com", "text": "Requested by dana"}]
    })
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_lists_fetches_and_takes_a_signed_decision_through_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let state_arg = state.display().to_string();
    let write_state = |actions: Vec<Value>, decisions: Value| {
        std::fs::write(
            &state,
            json!({"actions": actions, "decisions": decisions}).to_string(),
        )
        .unwrap()
    };
    write_state(
        vec![
            action("a1", "Restart billing"),
            action("a2", "Restart ledger"),
        ],
        json!([]),
    );
    let mut engine = engine(dir.path(), "exec-good");
    add(
        &mut engine,
        "plug",
        &["python3", &plugin("good.py"), &state_arg],
        10,
    );

    let reports = engine.sync_once(Utc::now()).await;
    assert_eq!(reports[0].error, None);
    assert_eq!(reports[0].summary.as_ref().unwrap().created, 2);
    let key = ActionKey::new("plug", "a1");
    let detail = engine.detail(&key).unwrap();
    assert_eq!(detail.action.snapshot.title, "Restart billing");
    assert_eq!(detail.action.snapshot_hash, detail.action.snapshot.hash());
    assert_eq!(detail.timeline[0].kind, TimelineKind::Requested);
    assert_eq!(engine.backends().unwrap()[0].status, "ok");

    // The decision re-fetches the action (op `fetch`), is signed and delivered.
    let report = engine
        .decide(
            DecisionInput {
                action: key.clone(),
                verdict: Verdict::Approve,
                reason: "looked at the diff".into(),
                seen_snapshot_hash: detail.action.snapshot_hash.clone(),
                answer: None,
            },
            Utc::now(),
        )
        .await
        .expect("decide");
    assert_eq!(report.decision.delivery, DeliveryState::Delivered);
    assert!(!report.offline);
    let received = read_json(&state)["decisions"].clone();
    assert_eq!(received.as_array().unwrap().len(), 1, "{received}");
    let d = &received[0];
    assert_eq!(d["id"], "a1");
    assert_eq!(d["verdict"], "approve");
    assert_eq!(d["approver"], APPROVER);
    assert_eq!(
        d["idempotency_key"],
        report.decision.idempotency_key.as_str()
    );
    assert_eq!(d["snapshot_hash"], detail.action.snapshot_hash.as_str());
    assert!(d["signature"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN SSH SIGNATURE-----"));
    assert!(d["payload"]
        .as_str()
        .unwrap()
        .contains("looked at the diff"));
    assert!(d["public_key"]
        .as_str()
        .unwrap()
        .starts_with("ssh-ed25519 "));
    assert_eq!(
        engine.detail(&key).unwrap().action.snapshot.status,
        ActionStatus::Approved,
        "the plugin's answer carries the action's new state"
    );

    // An action the plugin no longer knows (fetch answers `not_found`) is closed.
    let mut current = read_json(&state);
    current["actions"]
        .as_array_mut()
        .unwrap()
        .retain(|a| a["id"] != "a2");
    std::fs::write(&state, current.to_string()).unwrap();
    let reports = engine.sync_once(Utc::now()).await;
    assert_eq!(reports[0].error, None);
    assert_eq!(
        engine
            .detail(&ActionKey::new("plug", "a2"))
            .unwrap()
            .action
            .snapshot
            .status,
        ActionStatus::Cancelled
    );
    assert!(engine.pending(None).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_a_changed_action_is_stale_and_never_reaches_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        json!({"actions": [action("a1", "Restart billing")], "decisions": []}).to_string(),
    )
    .unwrap();
    let mut engine = engine(dir.path(), "exec-stale");
    add(
        &mut engine,
        "plug",
        &["python3", &plugin("good.py"), &state.display().to_string()],
        10,
    );
    engine.sync_once(Utc::now()).await;
    let seen = engine.pending(None).unwrap().remove(0);

    // Queued offline on what the person saw; meanwhile the action changed.
    let mut changed = read_json(&state);
    changed["actions"][0]["details"][0]["value"] = json!("systemctl stop billing");
    std::fs::write(&state, changed.to_string()).unwrap();
    let config = Config::parse(
        Path::new("c.toml"),
        &format!(
            "[[backend]]\nname = \"plug\"\nkind = \"exec\"\ncommand = [\"python3\", {:?}, {:?}]\n",
            plugin("good.py"),
            state.display().to_string()
        ),
    )
    .unwrap()
    .backends
    .remove(0);
    let backend = backends::build(&config, None, Limits::default()).unwrap();
    let decision = Decision {
        action: seen.key.clone(),
        verdict: Verdict::Approve,
        reason: String::new(),
        decided_at: Utc::now(),
        approver: APPROVER.into(),
        snapshot_hash: seen.snapshot_hash.clone(),
        idempotency_key: "cs-stale-1".into(),
        key_fingerprint: None,
        public_key: None,
        signature: None,
        delivery: DeliveryState::Queued,
        answer: None,
    };
    let outcome = backend
        .decide(&DecisionDelivery { decision })
        .await
        .expect("delivery answers");
    match outcome {
        DeliveryOutcome::Stale {
            current_snapshot_hash,
        } => assert_ne!(current_snapshot_hash, seen.snapshot_hash.0),
        other => panic!("expected stale, got {other:?}"),
    }
    assert_eq!(read_json(&state)["decisions"], json!([]));
}

/// Teleport's `tsh request ls --format=json` output: AccessRequest resources.
fn teleport_requests() -> Value {
    json!([
        {
            "kind": "access_request",
            "version": "v3",
            "metadata": {"name": "0f9ab3c2-6d41-4f1e-9c35-2b7d8e1a4c60", "expires": "2099-01-01T08:00:00Z"},
            "spec": {
                "user": "dana",
                "roles": ["db-admin"],
                "state": 1,
                "created": "2026-11-25T01:02:03.123456789Z",
                "expires": "2099-01-01T08:00:00Z",
                "request_reason": "INC-4412: fix stuck invoices",
                "thresholds": [{"name": "default", "approve": 1, "deny": 1}],
                "suggested_reviewers": ["ana"],
                "resource_ids": [{"kind": "db", "name": "prod-billing", "cluster": "teleport.example.com"}],
                "reviews": []
            }
        },
        {
            "kind": "access_request",
            "version": "v3",
            "metadata": {"name": "5b2e1d7a-0c8f-4a93-b6e4-91d3f0a7c2e8", "expires": "2099-01-01T08:00:00Z"},
            "spec": {
                "user": "sam",
                "roles": ["auditor"],
                "state": 2,
                "created": "2026-11-24T10:00:00Z",
                "expires": "2099-01-01T08:00:00Z",
                "request_reason": "quarterly review",
                "thresholds": [{"name": "default", "approve": 1, "deny": 1}],
                "reviews": [{"author": "ana", "roles": ["reviewer"], "proposed_state": 2,
                             "reason": "ok", "created": "2026-11-24T10:05:00Z"}]
            }
        }
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_teleport_example_lists_requests_and_reviews_them_through_tsh() {
    let dir = tempfile::tempdir().unwrap();
    let tsh = dir.path().join("tsh");
    std::fs::copy(root().join("tests/plugins/fake_tsh.py"), &tsh).unwrap();
    std::fs::write(
        dir.path().join("requests.json"),
        teleport_requests().to_string(),
    )
    .unwrap();
    let example = root().join("examples/teleport/countersign-teleport");
    let mut engine = engine(dir.path(), "exec-teleport");
    add(
        &mut engine,
        "teleport",
        &[
            "python3",
            &example.display().to_string(),
            "--tsh",
            &tsh.display().to_string(),
        ],
        10,
    );

    let reports = engine.sync_once(Utc::now()).await;
    assert_eq!(reports[0].error, None, "{:?}", reports[0].error);
    let pending = engine.pending(None).unwrap();
    assert_eq!(pending.len(), 1, "only the pending request is listed");
    let id = "0f9ab3c2-6d41-4f1e-9c35-2b7d8e1a4c60";
    let a = &pending[0];
    assert_eq!(a.key, ActionKey::new("teleport", id));
    assert_eq!(a.snapshot.requester, "dana");
    assert_eq!(
        a.snapshot.title,
        "dana requests teleport.example.com/db/prod-billing"
    );
    assert_eq!(a.snapshot.summary, "INC-4412: fix stuck invoices");
    assert!(a
        .snapshot
        .details
        .iter()
        .any(|d| d.key == "Roles" && d.value == "db-admin"));

    let report = engine
        .decide(
            DecisionInput {
                action: a.key.clone(),
                verdict: Verdict::Approve,
                reason: "INC-4412 checked".into(),
                seen_snapshot_hash: a.snapshot_hash.clone(),
                answer: None,
            },
            Utc::now(),
        )
        .await
        .expect("decide");
    assert_eq!(
        report.decision.delivery,
        DeliveryState::Delivered,
        "{:?}",
        report.queued_because
    );
    let calls: Vec<Vec<String>> = std::fs::read_to_string(dir.path().join("calls.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reviews: Vec<&Vec<String>> = calls.iter().filter(|c| c[1] == "review").collect();
    let expected_reason = format!(
        "INC-4412 checked [countersign {}]",
        report.decision.idempotency_key
    );
    assert_eq!(
        reviews,
        [&vec![
            "request".to_owned(),
            "review".into(),
            "--approve".into(),
            "--reason".into(),
            expected_reason,
            id.into(),
        ]],
        "exactly one review, approving with the reason: {calls:?}"
    );
    assert_eq!(
        engine.detail(&a.key).unwrap().action.snapshot.status,
        ActionStatus::Approved
    );
}

fn is_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // Field 3 is the state; a zombie has already been killed.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_that_hang_crash_or_print_garbage_degrade_only_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        json!({"actions": [action("ok-1", "From the good plugin")], "decisions": []}).to_string(),
    )
    .unwrap();
    let pidfile = dir.path().join("hang-child.pid");
    let mut engine = engine(dir.path(), "exec-faults");
    add(
        &mut engine,
        "good",
        &["python3", &plugin("good.py"), &state.display().to_string()],
        2,
    );
    add(
        &mut engine,
        "hangs",
        &[
            "python3",
            &plugin("hang.py"),
            &pidfile.display().to_string(),
        ],
        2,
    );
    add(&mut engine, "crashes", &["python3", &plugin("crash.py")], 2);
    add(
        &mut engine,
        "garbage",
        &["python3", &plugin("garbage.py"), "truncated"],
        2,
    );
    add(
        &mut engine,
        "types",
        &["python3", &plugin("garbage.py"), "types"],
        2,
    );

    let started = Instant::now();
    let reports = engine.sync_once(Utc::now()).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the hanging plugin is cut off at its 2 s deadline: {:?}",
        started.elapsed()
    );
    let by_name = |n: &str| reports.iter().find(|r| r.backend == n).unwrap();
    let error = |n: &str| by_name(n).error.clone().unwrap_or_default();
    assert_eq!(by_name("good").error, None);

    assert_eq!(by_name("hangs").error_code, Some("timeout"));
    assert!(
        error("hangs").contains("exec plugin `hangs`") && error("hangs").contains("2 s"),
        "{}",
        error("hangs")
    );
    assert_eq!(by_name("crashes").error_code, Some("unreachable"));
    assert!(
        error("crashes").contains("exited with status 3")
            && error("crashes").contains("upstream refused the connection"),
        "the error quotes the plugin's stderr: {}",
        error("crashes")
    );
    assert_eq!(by_name("garbage").error_code, Some("malformed"));
    assert!(
        error("garbage").contains("not JSON"),
        "{}",
        error("garbage")
    );
    assert_eq!(by_name("types").error_code, Some("malformed"));
    assert!(
        error("types").contains("`actions[0].title`"),
        "the error names the field: {}",
        error("types")
    );

    for s in engine.backends().unwrap() {
        let expected = if s.name == "good" { "ok" } else { "degraded" };
        assert_eq!(s.status, expected, "{}: {:?}", s.name, s.last_error);
    }
    let pending = engine.pending(None).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].key, ActionKey::new("good", "ok-1"));

    // The whole process group went: the hanging plugin's child, which held stdout
    // open, was killed too.
    let child = std::fs::read_to_string(&pidfile).expect("the hanging plugin started");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_gone(child.trim()) {
        assert!(
            Instant::now() < deadline,
            "the hanging plugin's child {child} survived its group's kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- watch: the optional event stream ----

/// A backend running tests/plugins/watch.py on `dir`, with `watch = true` and a poll
/// interval of an hour: once the first list is done, only the watch brings changes.
fn add_watching(engine: &mut Engine, name: &str, dir: &Path) {
    std::fs::create_dir_all(dir.join("emit")).unwrap();
    let text = format!(
        "[[backend]]\nname = {name:?}\nkind = \"exec\"\ncommand = [\"python3\", {:?}, {:?}]\n\
         poll_interval_secs = 3600\nmax_backoff_secs = 1\n\
         [backend.options]\ntimeout_secs = 10\nwatch = true\n",
        plugin("watch.py"),
        dir.display().to_string()
    );
    let config = Config::parse(Path::new("config.toml"), &text)
        .expect("config")
        .backends
        .remove(0);
    let backend = backends::build(&config, None, Limits::default()).expect("backend");
    assert!(backend.capabilities().subscribe);
    engine.add_backend(config, backend).expect("register");
}

/// Makes the watch plugin print `line`: written under a dot name, then renamed, so the
/// plugin never reads half a file.
fn emit(dir: &Path, name: &str, line: &str) {
    let hidden = dir.join("emit").join(format!(".{name}"));
    std::fs::write(&hidden, line).unwrap();
    std::fs::rename(&hidden, dir.join("emit").join(name)).unwrap();
}

fn watch_starts(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("watch-starts"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn status_of(store: &Store, name: &str) -> countersign_core::store::BackendStatus {
    store
        .backend_statuses()
        .unwrap()
        .into_iter()
        .find(|b| b.name == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watching_plugin_pushes_changes_into_the_inbox_without_a_poll() {
    let dir = tempfile::tempdir().unwrap();
    let plug = dir.path().join("plug");
    std::fs::create_dir_all(&plug).unwrap();
    std::fs::write(
        plug.join("actions.json"),
        json!([action("a1", "Listed at start")]).to_string(),
    )
    .unwrap();
    let mut engine = engine(dir.path(), "exec-watch");
    add_watching(&mut engine, "w", &plug);
    let store = engine.store().clone();
    let mut changes = engine.changes();
    let (trigger, listener) = countersign_core::shutdown::channel();
    let tasks = engine.spawn_sync(&listener);

    let s = store.clone();
    let p = plug.clone();
    until(
        &mut changes,
        Duration::from_secs(20),
        "list, then watch",
        move || s.actions(&Default::default()).unwrap().len() == 1 && watch_starts(&p).len() == 1,
    )
    .await;

    // Only in the watch's output, never in `list`: nothing but the watch can explain it.
    emit(
        &plug,
        "01-upsert",
        &json!({"type": "upsert", "action": action("w2", "Pushed by the watch")}).to_string(),
    );
    emit(&plug, "02-heartbeat", r#"{"type":"heartbeat"}"#);
    emit(
        &plug,
        "03-timeline",
        &json!({"type": "timeline", "action_id": "a1", "event": {
            "id": "t2", "at": "2026-11-25T01:03:00Z", "kind": "reviewed",
            "actor": "sam@example.com", "text": "sam looked at it"}})
        .to_string(),
    );
    let s = store.clone();
    until(
        &mut changes,
        Duration::from_secs(20),
        "the pushed action",
        move || {
            s.actions(&Default::default())
                .unwrap()
                .iter()
                .any(|a| a.key.external_id == "w2")
        },
    )
    .await;
    let pushed = engine.detail(&ActionKey::new("w", "w2")).unwrap();
    assert_eq!(pushed.action.snapshot.title, "Pushed by the watch");
    assert_eq!(pushed.action.snapshot.status, ActionStatus::Pending);
    assert_eq!(pushed.action.snapshot_hash, pushed.action.snapshot.hash());
    let key = ActionKey::new("w", "a1");
    until(
        &mut changes,
        Duration::from_secs(20),
        "the pushed timeline event",
        || {
            engine
                .detail(&key)
                .unwrap()
                .timeline
                .iter()
                .any(|e| e.kind == TimelineKind::Reviewed && e.text == "sam looked at it")
        },
    )
    .await;
    assert_eq!(
        watch_starts(&plug).len(),
        1,
        "one watch all along, so no reconnect (and no list) happened"
    );
    let status = status_of(&store, "w");
    assert_eq!(status.status, "ok");
    assert_eq!(status.last_error, None);

    // Shutting down drops the stream, which kills the watch process.
    trigger.trigger();
    for t in tasks {
        t.await.unwrap();
    }
    let pid = watch_starts(&plug).remove(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_gone(&pid) {
        assert!(
            Instant::now() < deadline,
            "the watch {pid} outlived its stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_watch_degrades_its_backend_and_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let plug = dir.path().join("plug");
    std::fs::create_dir_all(&plug).unwrap();
    std::fs::write(plug.join("actions.json"), "[]").unwrap();
    let mut engine = engine(dir.path(), "exec-watch-crash");
    add_watching(&mut engine, "w", &plug);
    let store = engine.store().clone();
    let mut changes = engine.changes();
    let (trigger, listener) = countersign_core::shutdown::channel();
    let tasks = engine.spawn_sync(&listener);
    let p = plug.clone();
    until(
        &mut changes,
        Duration::from_secs(20),
        "a watch",
        move || watch_starts(&p).len() == 1,
    )
    .await;

    emit(&plug, "crash", "");
    let s = store.clone();
    until(
        &mut changes,
        Duration::from_secs(20),
        "degraded by the crash",
        move || {
            let b = status_of(&s, "w");
            b.status == "degraded"
                && b.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("exited with status 3"))
        },
    )
    .await;
    let error = status_of(&store, "w").last_error.unwrap();
    assert_eq!(
        status_of(&store, "w").last_error_code.as_deref(),
        Some("unreachable")
    );
    assert!(
        error.contains("exec plugin `w`")
            && error.contains("watch ended")
            && error.contains("fatal: lost the upstream event feed"),
        "the error names the plugin and quotes its stderr: {error}"
    );

    // After its backoff the engine lists again and starts a new watch, which works.
    let s = store.clone();
    let p = plug.clone();
    until(
        &mut changes,
        Duration::from_secs(20),
        "a restarted watch",
        move || watch_starts(&p).len() == 2 && status_of(&s, "w").status == "ok",
    )
    .await;
    emit(
        &plug,
        "01-upsert",
        &json!({"type": "upsert", "action": action("w3", "After the restart")}).to_string(),
    );
    let s = store.clone();
    until(
        &mut changes,
        Duration::from_secs(20),
        "an action from the new watch",
        move || {
            s.actions(&Default::default())
                .unwrap()
                .iter()
                .any(|a| a.key.external_id == "w3")
        },
    )
    .await;
    trigger.trigger();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_printing_garbage_degrades_only_its_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (good, noisy) = (dir.path().join("good"), dir.path().join("noisy"));
    for d in [&good, &noisy] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("actions.json"), "[]").unwrap();
    }
    let mut engine = engine(dir.path(), "exec-watch-garbage");
    add_watching(&mut engine, "good", &good);
    add_watching(&mut engine, "noisy", &noisy);
    let store = engine.store().clone();
    let mut changes = engine.changes();
    let (trigger, listener) = countersign_core::shutdown::channel();
    let tasks = engine.spawn_sync(&listener);
    let (g, n) = (good.clone(), noisy.clone());
    until(
        &mut changes,
        Duration::from_secs(20),
        "both watches",
        move || watch_starts(&g).len() == 1 && watch_starts(&n).len() == 1,
    )
    .await;

    emit(&noisy, "01-garbage", "Traceback (most recent call last): {");
    let s = store.clone();
    until(
        &mut changes,
        Duration::from_secs(20),
        "noisy degraded",
        move || {
            let b = status_of(&s, "noisy");
            b.status == "degraded" && b.last_error_code.as_deref() == Some("malformed")
        },
    )
    .await;
    let error = status_of(&store, "noisy").last_error.unwrap();
    assert!(
        error.contains("exec plugin `noisy`")
            && error.contains("`(watch)`")
            && error.contains("not JSON")
            && error.contains("Traceback"),
        "a clear error that quotes the line: {error}"
    );

    // The other watch keeps delivering and never saw an error.
    emit(
        &good,
        "01-upsert",
        &json!({"type": "upsert", "action": action("g1", "Still flowing")}).to_string(),
    );
    let s = store.clone();
    until(
        &mut changes,
        Duration::from_secs(20),
        "the good watch's action",
        move || {
            s.actions(&Default::default())
                .unwrap()
                .iter()
                .any(|a| a.key == ActionKey::new("good", "g1"))
        },
    )
    .await;
    let b = status_of(&store, "good");
    assert_eq!((b.status.as_str(), b.last_error), ("ok", None));
    assert_eq!(watch_starts(&good).len(), 1);
    trigger.trigger();
    for t in tasks {
        t.await.unwrap();
    }
}
