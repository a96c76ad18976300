//! The `hoop` backend against a loopback stand-in for hoop.dev's gateway API. hoop cannot
//! run here, so the stand-in serves JSON fixtures (tests/fixtures/hoop/) and emulates the
//! review rules of gateway/api/review/review.go; every body it serves is first checked
//! against strict mirrors of hoop's published wire types, so a fixture or emulated
//! answer that drifts from the real API fails the test.
//!
//! Source of truth: github.com/hoophq/hoop at commit
//! e939597dc425d78dbd146d98fad21b7171ccaaf5, gateway/api/openapi/types.go (`Review`,
//! `ReviewGroup`, `ReviewOwner`, `ReviewSessionTimeWindow`, `ReviewRequest`, `Session`,
//! `SessionReview`); routes in gateway/api/server.go; errors in gateway/api/review/review.go.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::Proxy;
use countersign_core::api::DecisionInput;
use countersign_core::backends::{self, Limits};
use countersign_core::config::BackendConfig;
use countersign_core::model::{ActionKey, DeliveryState, TimelineKind, Verdict};
use countersign_core::signer::OsKeyring;
use countersign_core::store::Store;
use countersign_core::Engine;
use serde_json::json;
use sha2::Digest;

#[path = "common/hoop_gateway.rs"]
mod hoop_gateway;

use hoop_gateway::*;

#[test]
fn fixtures_match_hoops_published_types() {
    for r in fixture("reviews.json").as_array().unwrap() {
        check_review(r);
    }
    for s in fixture("sessions.json").as_array().unwrap() {
        check_session(s);
    }
    // The malformed fixture really is malformed (so the degraded test tests something).
    let bad = fixture("reviews_malformed.json");
    assert!(serde_json::from_value::<Vec<MirrorReview>>(bad).is_err());
}

fn engine_for(dir: &std::path::Path, url: &str, token: &str, keyring: &str) -> Engine {
    let store = Store::open_in_dir(dir).expect("store");
    let config = BackendConfig {
        name: "hoop".into(),
        kind: "hoop".into(),
        url: url.into(),
        poll_interval_secs: Some(1),
        max_backoff_secs: Some(1),
        timeout_secs: Some(5),
        ..Default::default()
    };
    let limits = Limits {
        request_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let backend = backends::build(&config, Some(token.to_owned()), limits).expect("backend");
    let mut engine = Engine::new(store, ME)
        .with_key_store(Arc::new(OsKeyring::with_names("countersign-test", keyring)));
    engine.add_backend(config, backend).expect("register");
    engine
}

async fn synced(dir: &std::path::Path, url: &str, keyring: &str) -> Engine {
    let engine = engine_for(dir, url, TOKEN, keyring);
    let report = engine.sync_once(Utc::now()).await;
    assert!(report[0].error.is_none(), "{:?}", report[0].error);
    engine
}

fn input(id: &str, engine: &Engine, verdict: Verdict, reason: &str) -> DecisionInput {
    let key = ActionKey::new("hoop", id);
    let seen = engine.detail(&key).unwrap().action.snapshot_hash;
    DecisionInput {
        action: key,
        verdict,
        reason: reason.into(),
        seen_snapshot_hash: seen,
        answer: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_reviews_are_listed_and_enriched_from_their_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (_g, addr) = start_gateway("reviews.json").await;
    let url = format!("http://{addr}");
    let engine = synced(dir.path(), &url, "hoop-list").await;

    let mut ids: Vec<String> = engine
        .pending(Some("hoop"))
        .unwrap()
        .into_iter()
        .map(|a| a.key.external_id)
        .collect();
    ids.sort();
    assert_eq!(ids, [R1, R2, R5], "only PENDING reviews");

    let one = engine.detail(&ActionKey::new("hoop", R1)).unwrap();
    let s = &one.action.snapshot;
    assert_eq!(s.kind.as_str(), "command");
    assert_eq!(s.requester, "Dana Dev <dana@example.com>");
    assert_eq!(s.resource, "pg-billing-prod");
    assert_eq!(s.web_url.as_deref(), Some(&*format!("{url}/reviews/{R1}")));
    let detail = |k: &str| {
        s.details
            .iter()
            .find(|d| d.key == k)
            .unwrap_or_else(|| panic!("no detail {k}: {:?}", s.details))
            .value
            .clone()
    };
    // The exact script, byte for byte.
    assert_eq!(
        detail("script"),
        "UPDATE invoices\n   SET paid = true\n WHERE id = 42;  -- OPS-1234\n"
    );
    assert_eq!(detail("connection"), "pg-billing-prod (postgres)");
    assert_eq!(detail("access request rule"), "prod-db-writes");
    assert_eq!(detail("force-approval groups"), "sre-leads");
    assert_eq!(detail("review groups"), "dba, security, sre");
    // k of n: 3 groups, the rule's min_approvals 2, one given.
    assert_eq!(s.approvals_required, 2);
    assert_eq!(one.action.approvals_so_far(), 1);
    assert_eq!(s.reviews[0].reviewer, "Bob Ops <bob@example.com>");
    let backend_events: Vec<_> = one
        .timeline
        .iter()
        .filter(|e| e.source == countersign_core::model::EventSource::Backend)
        .collect();
    assert_eq!(backend_events[0].kind, TimelineKind::Requested);
    assert_eq!(backend_events[1].kind, TimelineKind::Reviewed);
    assert_eq!(
        backend_events[1].text,
        "Group sre approved by Bob Ops <bob@example.com>"
    );
    assert_eq!(
        backend_events[1].at,
        "2026-11-25T09:05:41Z"
            .parse::<chrono::DateTime<Utc>>()
            .unwrap()
    );

    let two = engine.detail(&ActionKey::new("hoop", R2)).unwrap();
    let s = &two.action.snapshot;
    assert_eq!(s.kind.as_str(), "db_session");
    assert_eq!(s.title, "Access to mysql-ledger for 30m");
    assert_eq!(s.approvals_required, 1);
    let get = |k: &str| s.details.iter().find(|d| d.key == k).unwrap().value.clone();
    assert_eq!(get("access duration"), "30m");
    assert_eq!(get("time window"), "09:00–18:00 (time_range)");
    assert_eq!(get("access type"), "just-in-time access");

    // A second poll changes nothing: the snapshot is stable.
    let again = engine.sync_once(Utc::now()).await;
    let summary = again[0].summary.as_ref().unwrap();
    assert_eq!((summary.created, summary.updated), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_put_once_even_when_its_answer_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start_gateway("reviews.json").await;
    let proxy = Proxy::start(addr).await;
    let engine = synced(dir.path(), &proxy.url(), "hoop-approve").await;
    let key = ActionKey::new("hoop", R1);

    // hoop applies the PUT, then its answer is lost on the way back.
    *g.lose_next_answer.lock().unwrap() = Some(proxy.swallow.clone());
    let report = engine
        .decide(input(R1, &engine, Verdict::Approve, "OPS-1234"), Utc::now())
        .await
        .unwrap();
    assert_eq!(report.decision.delivery, DeliveryState::Queued);
    assert_eq!(g.puts.lock().unwrap().len(), 1);
    proxy.swallow.store(false, Ordering::SeqCst);

    // The outbox retries; the review already carries our group's approval.
    engine
        .sync_once(Utc::now() + chrono::Duration::seconds(5))
        .await;
    let decisions = engine.detail(&key).unwrap().decisions;
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].delivery, DeliveryState::Delivered);
    let puts = g.puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 1, "applied exactly once: {puts:?}");
    assert_eq!(puts[0].0, R1);
    assert_eq!(puts[0].1, json!({"status": "APPROVED"}));
    // Second of two required approvals: hoop now says APPROVED.
    let review = g.reviews.lock().unwrap()[0].clone();
    assert_eq!(review["status"], "APPROVED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_sends_the_reason_with_a_reference_to_the_signed_decision() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start_gateway("reviews.json").await;
    let engine = synced(dir.path(), &format!("http://{addr}"), "hoop-deny").await;
    let key = ActionKey::new("hoop", R2);

    let report = engine
        .decide(
            input(R2, &engine, Verdict::Deny, "outside the change window"),
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(report.decision.delivery, DeliveryState::Delivered);

    let d = &engine.detail(&key).unwrap().decisions[0];
    let payload_sha = hex::encode(sha2::Sha256::digest(
        countersign_core::audit::decision_payload(d).as_bytes(),
    ));
    let fingerprint = d.key_fingerprint.clone().expect("signed");
    let puts = g.puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 1);
    assert_eq!(
        puts[0].1,
        json!({
            "status": "REJECTED",
            "rejection_reason": format!(
                "outside the change window [countersign {fingerprint} payload-sha256:{}]",
                &payload_sha[..12]
            ),
        })
    );
    // hoop's record now carries the reference; the backend timeline shows the verdict.
    engine.sync_once(Utc::now()).await;
    let fetched = engine.detail(&key).unwrap();
    assert_eq!(fetched.action.snapshot.status.as_str(), "denied");
    assert!(
        fetched
            .timeline
            .iter()
            .any(|e| e.kind == TimelineKind::Denied
                && e.text.contains("outside the change window")
                && e.text.contains(&payload_sha[..12])),
        "{:#?}",
        fetched.timeline
    );
    assert!(fetched
        .timeline
        .iter()
        .any(|e| e.text == "Group dba rejected by Ana <ana@example.com>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_approval_is_refused_with_hoops_message_in_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start_gateway("reviews.json").await;
    let engine = synced(dir.path(), &format!("http://{addr}"), "hoop-self").await;
    let key = ActionKey::new("hoop", R5);

    let report = engine
        .decide(input(R5, &engine, Verdict::Approve, ""), Utc::now())
        .await
        .unwrap();
    match &report.decision.delivery {
        DeliveryState::Rejected { reason } => assert_eq!(
            reason, "self-approval: unable to self approve review",
            "{reason}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(g.puts.lock().unwrap().len(), 1);
    let timeline = engine.detail(&key).unwrap().timeline;
    assert!(
        timeline
            .iter()
            .any(|e| e.text.contains("unable to self approve review")),
        "{timeline:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_degrades_the_backend_as_unauthorized() {
    let dir = tempfile::tempdir().unwrap();
    let (_g, addr) = start_gateway("reviews.json").await;
    let engine = engine_for(dir.path(), &format!("http://{addr}"), "wrong", "hoop-401");
    let report = engine.sync_once(Utc::now()).await;
    assert_eq!(report[0].error_code, Some("unauthorized"));
    let status = &engine.backends().unwrap()[0];
    assert_eq!(status.status, "degraded");
    let error = status.last_error.as_deref().unwrap();
    assert!(error.contains("401"), "{error}");
    assert!(!error.contains("wrong"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_review_degrades_the_backend_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (_g, addr) = start_gateway("reviews_malformed.json").await;
    let engine = engine_for(dir.path(), &format!("http://{addr}"), TOKEN, "hoop-bad");
    let report = engine.sync_once(Utc::now()).await;
    assert_eq!(report[0].error_code, Some("malformed"));
    let status = &engine.backends().unwrap()[0];
    assert_eq!(status.status, "degraded");
    let error = status.last_error.as_deref().unwrap();
    assert!(error.contains("[1].review_groups_data[0].group"), "{error}");
}
