//! The engine against the reference server running as its own process, over real HTTP
//! on loopback: listing with ETags, auth, the event stream across a server kill -9,
//! and the decision pipeline (delivery, idempotent retry, stale, expired).

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use countersign_core::api::DecisionInput;
use countersign_core::backends::{self, Limits};
use countersign_core::config::BackendConfig;
use countersign_core::decide::DecideError;
use countersign_core::model::{ActionKey, DeliveryState, TimelineKind, Verdict};
use countersign_core::shutdown;
use countersign_core::signer::{OsKeyring, Signer};
use countersign_core::store::Store;
use countersign_core::{Engine, EngineError};
use std::sync::Arc;

const APPROVER: &str = "ana@example.com";

fn backend_config(name: &str, url: &str) -> BackendConfig {
    BackendConfig {
        name: name.into(),
        kind: "countersign".into(),
        url: url.into(),
        token_env: None,
        poll_interval_secs: Some(1),
        max_backoff_secs: Some(1),
        timeout_secs: Some(5),
        ..Default::default()
    }
}

fn engine_for(dir: &std::path::Path, backends_: &[(&str, String, &str)]) -> Engine {
    let store = Store::open_in_dir(dir).expect("store");
    let mut engine = Engine::new(store, APPROVER);
    for (name, url, token) in backends_ {
        let config = backend_config(name, url);
        let limits = Limits {
            request_timeout: Duration::from_secs(2),
            ..Limits::default()
        };
        let backend = backends::build(&config, Some((*token).to_owned()), limits).expect("backend");
        engine.add_backend(config, backend).expect("register");
    }
    engine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_lists_pending_and_then_gets_304() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("server.db"), "127.0.0.1:0");
    let producer = Producer::new(&server.url());
    producer
        .create(&new_action("db-1", "psql to prod-billing"))
        .await;
    producer
        .create(&new_action("db-2", "psql to prod-ledger"))
        .await;

    let engine = engine_for(&dir.path().join("client"), &[("prod", server.url(), TOKEN)]);
    let first = engine.sync_once(Utc::now()).await;
    let summary = first[0].summary.as_ref().expect("first sync succeeds");
    assert_eq!((summary.created, summary.not_modified), (2, false));

    let again = engine.sync_once(Utc::now()).await;
    assert!(
        again[0].summary.as_ref().unwrap().not_modified,
        "an unchanged list answers 304 to If-None-Match"
    );

    let pending = engine.pending(None).unwrap();
    assert_eq!(pending.len(), 2);
    let detail = engine.detail(&ActionKey::new("prod", "db-1")).unwrap();
    assert_eq!(detail.timeline[0].kind, TimelineKind::Requested);
    assert_eq!(detail.action.snapshot.details[0].key, "query");
    assert_eq!(engine.backends().unwrap()[0].status, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_degrades_the_backend_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("server.db"), "127.0.0.1:0");
    let engine = engine_for(
        &dir.path().join("client"),
        &[("prod", server.url(), "wrong")],
    );
    let report = engine.sync_once(Utc::now()).await;
    assert_eq!(report[0].error_code, Some("unauthorized"));
    let status = &engine.backends().unwrap()[0];
    assert_eq!(status.status, "degraded");
    let error = status.last_error.as_deref().unwrap();
    assert!(error.contains("401") && error.contains("token"), "{error}");
    assert!(
        !error.contains("wrong"),
        "the token itself is never echoed: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_survives_a_server_kill_and_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("server.db");
    let mut server = ServerProcess::start(&state, "127.0.0.1:0");
    let addr = server.addr;
    let producer = Producer::new(&server.url());
    producer
        .create(&new_action("before", "Before the crash"))
        .await;

    let engine = engine_for(&dir.path().join("client"), &[("prod", server.url(), TOKEN)]);
    let store = engine.store().clone();
    let mut changes = engine.changes();
    let (trigger, listener) = shutdown::channel();
    let tasks = engine.spawn_sync(&listener);

    let has = |id: &'static str| {
        let store = store.clone();
        move || store.action(&ActionKey::new("prod", id)).unwrap().is_some()
    };
    until(
        &mut changes,
        Duration::from_secs(10),
        "first action",
        has("before"),
    )
    .await;
    producer
        .create(&new_action("live", "Arrives over SSE"))
        .await;
    until(
        &mut changes,
        Duration::from_secs(10),
        "live action",
        has("live"),
    )
    .await;

    server.kill9();
    let degraded = {
        let store = store.clone();
        move || store.backend_statuses().unwrap()[0].status == "degraded"
    };
    until(
        &mut changes,
        Duration::from_secs(10),
        "degraded status",
        degraded,
    )
    .await;

    // Same state file, same address: the client reconnects by itself.
    let server = ServerProcess::start(&state, &addr.to_string());
    producer
        .create(&new_action("after", "Created after the restart"))
        .await;
    until(
        &mut changes,
        Duration::from_secs(15),
        "action after restart",
        has("after"),
    )
    .await;

    // Every action's timeline matches the server's, each event exactly once.
    for id in ["before", "live", "after"] {
        let theirs: Vec<String> = producer
            .get(id)
            .await
            .timeline
            .into_iter()
            .map(|e| e.id)
            .collect();
        let key = ActionKey::new("prod", id);
        let ours: Vec<String> = store
            .timeline(&key)
            .unwrap()
            .into_iter()
            .filter_map(|e| e.external_id)
            .collect();
        assert_eq!(ours, theirs, "timeline of {id}");
    }
    let ok = {
        let store = store.clone();
        move || store.backend_statuses().unwrap()[0].status == "ok"
    };
    until(&mut changes, Duration::from_secs(10), "ok status", ok).await;
    trigger.trigger();
    for t in tasks {
        t.await.unwrap();
    }
    drop(server);
}

async fn synced_engine(dir: &std::path::Path, url: String) -> Engine {
    let engine = engine_for(dir, &[("prod", url, TOKEN)]);
    let report = engine.sync_once(Utc::now()).await;
    assert!(report[0].error.is_none(), "{:?}", report[0].error);
    engine
}

fn approve(key: &ActionKey, seen: &countersign_core::snapshot::SnapshotHash) -> DecisionInput {
    DecisionInput {
        action: key.clone(),
        verdict: Verdict::Approve,
        reason: "ticket OPS-1234".into(),
        seen_snapshot_hash: seen.clone(),
        answer: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_is_rechecked_delivered_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("server.db"), "127.0.0.1:0");
    let producer = Producer::new(&server.url());
    producer
        .create(&new_action("db-1", "psql to prod-billing"))
        .await;
    let engine = synced_engine(&dir.path().join("client"), server.url()).await;
    let key = ActionKey::new("prod", "db-1");
    let seen = engine.detail(&key).unwrap().action.snapshot_hash;

    let report = engine
        .decide(approve(&key, &seen), Utc::now())
        .await
        .unwrap();
    assert_eq!(report.decision.delivery, DeliveryState::Delivered);

    let theirs = producer.get("db-1").await;
    assert_eq!(theirs.snapshot.reviews.len(), 1);
    assert_eq!(theirs.snapshot.reviews[0].reviewer, APPROVER);
    assert_eq!(theirs.snapshot.status.as_str(), "approved");

    let detail = engine.detail(&key).unwrap();
    assert_eq!(detail.action.snapshot.status.as_str(), "approved");
    let local: Vec<_> = detail
        .timeline
        .iter()
        .filter(|e| e.source == countersign_core::model::EventSource::Local)
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        local,
        [
            TimelineKind::Decided,
            TimelineKind::Signed,
            TimelineKind::Delivered
        ]
    );
    // The decision carries a signature over its canonical payload, made by our key.
    let d = &detail.decisions[0];
    countersign_core::signer::verify(
        d.public_key.as_deref().unwrap(),
        countersign_core::audit::decision_payload(d).as_bytes(),
        d.signature.as_deref().unwrap(),
    )
    .expect("the stored signature verifies");
    assert_eq!(
        d.key_fingerprint.as_deref(),
        Some(engine.key_info().unwrap().fingerprint.as_str())
    );

    // Deciding twice on the same action is refused locally.
    let again = engine.decide(approve(&key, &seen), Utc::now()).await;
    assert!(
        matches!(
            again,
            Err(EngineError::Decide(DecideError::NotPending { .. })
                | EngineError::Decide(DecideError::AlreadyDecided { .. }))
        ),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_retried_with_the_same_key_and_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("server.db"), "127.0.0.1:0");
    let producer = Producer::new(&server.url());
    let mut two = new_action("db-2", "psql to prod-ledger");
    two.approvals_required = Some(2);
    producer.create(&two).await;
    let proxy = Proxy::start(server.addr).await;
    let engine = synced_engine(&dir.path().join("client"), proxy.url()).await;
    let key = ActionKey::new("prod", "db-2");
    let seen = engine.detail(&key).unwrap().action.snapshot_hash;

    // The server applies the decision but its answer never arrives.
    proxy
        .swallow
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let report = engine
        .decide(approve(&key, &seen), Utc::now())
        .await
        .unwrap();
    assert_eq!(report.decision.delivery, DeliveryState::Queued);
    assert!(report.queued_because.is_some());
    assert_eq!(
        producer.get("db-2").await.snapshot.reviews.len(),
        1,
        "applied once already"
    );

    // The outbox retries (due after its backoff) with the same idempotency key.
    proxy
        .swallow
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let later = Utc::now() + chrono::Duration::seconds(5);
    engine.sync_once(later).await;
    let decisions = engine.detail(&key).unwrap().decisions;
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].delivery, DeliveryState::Delivered);
    assert_eq!(
        producer.get("db-2").await.snapshot.reviews.len(),
        1,
        "the retry returned the first answer and applied nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_action_is_refused_with_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("server.db"), "127.0.0.1:0");
    let producer = Producer::new(&server.url());
    let mut two = new_action("db-3", "psql to prod-billing");
    two.approvals_required = Some(2);
    producer.create(&two).await;
    let engine = synced_engine(&dir.path().join("client"), server.url()).await;
    let key = ActionKey::new("prod", "db-3");
    let seen = engine.detail(&key).unwrap().action.snapshot_hash;

    // Someone else reviews it meanwhile, straight on the server.
    producer
        .decide_as("db-3", "sam@example.com", seen.as_str(), "other-reviewer-1")
        .await;

    let refused = engine.decide(approve(&key, &seen), Utc::now()).await;
    let Err(EngineError::Decide(DecideError::Changed {
        changes, current, ..
    })) = refused
    else {
        panic!("expected a refusal naming the changes, got {refused:?}");
    };
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].field, "reviews");
    assert!(changes[0].after.contains("sam@example.com"));
    assert_ne!(current.snapshot_hash, seen);
    assert!(
        engine.detail(&key).unwrap().decisions.is_empty(),
        "nothing was decided"
    );

    // Asked again on the fresh snapshot, it goes through.
    let report = engine
        .decide(approve(&key, &current.snapshot_hash), Utc::now())
        .await
        .unwrap();
    assert_eq!(report.decision.delivery, DeliveryState::Delivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_decision_meets_409_and_410_from_the_server_on_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("server.db"), "127.0.0.1:0");
    let producer = Producer::new(&server.url());
    let mut changing = new_action("chg", "Deploy payments-api v2.4.1");
    changing.approvals_required = Some(2);
    producer.create(&changing).await;
    let mut expiring = new_action("exp", "Shell on bastion-1");
    expiring.expires_in_secs = Some(2);
    producer.create(&expiring).await;
    let proxy = Proxy::start(server.addr).await;
    let engine = synced_engine(&dir.path().join("client"), proxy.url()).await;

    // Offline: the backend cannot be reached, so decisions are queued on what was seen.
    proxy
        .refuse
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let chg = ActionKey::new("prod", "chg");
    let exp = ActionKey::new("prod", "exp");
    for key in [&chg, &exp] {
        let seen = engine.detail(key).unwrap().action.snapshot_hash;
        let report = engine
            .decide(approve(key, &seen), Utc::now())
            .await
            .unwrap();
        assert!(report.offline);
        assert_eq!(report.decision.delivery, DeliveryState::Queued);
    }

    // Meanwhile: another reviewer changes one; the other expires.
    let seen = engine.detail(&chg).unwrap().action.snapshot_hash;
    producer
        .decide_as("chg", "sam@example.com", seen.as_str(), "sam-1")
        .await;
    let expired = async {
        loop {
            if producer.get("exp").await.snapshot.status.as_str() == "expired" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), expired)
        .await
        .expect("server expires it");

    // Back online: delivery meets 409 stale and 410 expired; both are final and recorded.
    proxy
        .refuse
        .store(false, std::sync::atomic::Ordering::SeqCst);
    engine
        .sync_once(Utc::now() + chrono::Duration::seconds(5))
        .await;
    let chg_d = &engine.detail(&chg).unwrap().decisions[0];
    assert!(
        matches!(chg_d.delivery, DeliveryState::Stale { .. }),
        "{:?}",
        chg_d.delivery
    );
    let exp_d = &engine.detail(&exp).unwrap().decisions[0];
    assert_eq!(exp_d.delivery, DeliveryState::Expired);
    assert_eq!(
        producer.get("chg").await.snapshot.reviews.len(),
        1,
        "only sam's review"
    );
    let last = engine
        .detail(&chg)
        .unwrap()
        .timeline
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last.kind, TimelineKind::DeliveryFailed);
    assert!(last.text.contains("changed"), "{}", last.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_allowed_signers_takes_our_signature_and_refuses_a_stranger() {
    let dir = tempfile::tempdir().unwrap();
    // Keys live in the test session's real Secret Service, under entries of their own.
    let ours = Arc::new(OsKeyring::with_names("countersign-test", "allowed-ours"));
    let stranger = Arc::new(OsKeyring::with_names(
        "countersign-test",
        "allowed-stranger",
    ));
    let (signer, _) = Signer::load_or_create(&*ours).unwrap();
    let signers = dir.path().join("allowed_signers");
    std::fs::write(&signers, signer.allowed_signers_line(APPROVER) + "\n").unwrap();

    let server = ServerProcess::start_with(
        &dir.path().join("server.db"),
        "127.0.0.1:0",
        &["--allowed-signers".as_ref(), signers.as_os_str()],
    );
    let producer = Producer::new(&server.url());
    producer
        .create(&new_action("ok-1", "Signed by a known key"))
        .await;
    producer
        .create(&new_action("no-1", "Signed by a stranger"))
        .await;

    for (who, keys, id) in [("a", ours, "ok-1"), ("b", stranger, "no-1")] {
        let engine = engine_for(&dir.path().join(who), &[("prod", server.url(), TOKEN)])
            .with_key_store(keys);
        engine.sync_once(Utc::now()).await;
        let key = ActionKey::new("prod", id);
        let seen = engine.detail(&key).unwrap().action.snapshot_hash;
        let report = engine
            .decide(approve(&key, &seen), Utc::now())
            .await
            .unwrap();
        match (id, &report.decision.delivery) {
            ("ok-1", DeliveryState::Delivered) => {}
            ("no-1", DeliveryState::Rejected { reason }) => {
                assert!(reason.contains("not in allowed_signers"), "{reason}");
            }
            other => panic!("unexpected delivery {other:?}"),
        }
    }
    assert_eq!(producer.get("ok-1").await.snapshot.reviews.len(), 1);
    assert!(producer.get("no-1").await.snapshot.reviews.is_empty());
}

/// A step that offers options: a wrong choice is refused before anything is signed, a
/// right one is signed with the options and fields (defaults filled in), and the server
/// — checking the signature against allowed_signers — records exactly that answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_choice_is_checked_signed_with_its_answer_and_recorded() {
    use countersign_core::model::{Answer, FieldType, FormField, InputForm};
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(OsKeyring::with_names("countersign-test", "choose"));
    let (signer, _) = Signer::load_or_create(&*keys).unwrap();
    let signers = dir.path().join("allowed_signers");
    std::fs::write(&signers, signer.allowed_signers_line(APPROVER) + "\n").unwrap();
    let server = ServerProcess::start_with(
        &dir.path().join("server.db"),
        "127.0.0.1:0",
        &["--allowed-signers".as_ref(), signers.as_os_str()],
    );
    let producer = Producer::new(&server.url());
    let mut new = new_action("hitl-1", "Where should v2 go?");
    new.form = Some(InputForm {
        options: vec!["Deploy EU".into(), "Deploy US".into(), "Skip".into()],
        multiple: false,
        default_options: vec!["Skip".into()],
        approve_option: None,
        deny_option: None,
        fields: vec![
            FormField {
                name: "replicas".into(),
                label: "Replicas".into(),
                description: String::new(),
                field_type: FieldType::Integer,
                choices: vec![],
                required: true,
                default: None,
            },
            FormField {
                name: "note".into(),
                label: "Note".into(),
                description: String::new(),
                field_type: FieldType::Text,
                choices: vec![],
                required: false,
                default: Some(serde_json::json!("")),
            },
        ],
    });
    producer.create(&new).await;
    let engine = engine_for(&dir.path().join("client"), &[("prod", server.url(), TOKEN)])
        .with_key_store(keys);
    engine.sync_once(Utc::now()).await;
    let key = ActionKey::new("prod", "hitl-1");
    let action = engine.detail(&key).unwrap().action;
    assert_eq!(
        action.snapshot.form, new.form,
        "the form arrives as the producer sent it"
    );
    let choose = |options: &[&str], replicas: serde_json::Value| DecisionInput {
        action: key.clone(),
        verdict: Verdict::Choose,
        reason: String::new(),
        seen_snapshot_hash: action.snapshot_hash.clone(),
        answer: Some(Answer {
            options: options.iter().map(|o| o.to_string()).collect(),
            params: [("replicas".to_owned(), replicas)].into(),
        }),
    };

    for (options, replicas, code) in [
        (&["Deploy Mars"][..], serde_json::json!(2), "invalid_answer"),
        (
            &["Deploy EU", "Deploy US"][..],
            serde_json::json!(2),
            "invalid_answer",
        ),
        (
            &["Deploy US"][..],
            serde_json::json!("two"),
            "invalid_answer",
        ),
    ] {
        let err = engine
            .decide(choose(options, replicas), Utc::now())
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{err}");
    }
    assert!(
        engine.detail(&key).unwrap().decisions.is_empty(),
        "a refused answer leaves no decision and no signature"
    );

    let report = engine
        .decide(choose(&["Deploy US"], serde_json::json!(3)), Utc::now())
        .await
        .unwrap();
    assert_eq!(report.decision.delivery, DeliveryState::Delivered);
    let answer = report.decision.answer.clone().unwrap();
    assert_eq!(answer.options, ["Deploy US"]);
    assert_eq!(answer.params["replicas"], serde_json::json!(3));
    assert_eq!(
        answer.params["note"],
        serde_json::json!(""),
        "default filled in"
    );
    let payload = countersign_core::audit::decision_payload(&report.decision);
    assert!(
        payload.contains(r#""answer":{"options":["Deploy US"]"#),
        "{payload}"
    );
    countersign_core::signer::verify(
        report.decision.public_key.as_deref().unwrap(),
        payload.as_bytes(),
        report.decision.signature.as_deref().unwrap(),
    )
    .expect("the answer is covered by the signature");

    let theirs = producer.get("hitl-1").await;
    assert_eq!(theirs.snapshot.status.as_str(), "approved");
    assert_eq!(
        theirs.snapshot.reviews[0].comment.as_deref(),
        Some("chose Deploy US")
    );
    let chain = engine.verify(None).unwrap();
    assert!(chain.entries >= 2);
}
