//! The `github` backend against a loopback stand-in for GitHub's REST API (deployment
//! reviews). Every body the stand-in serves, every body it receives and every error it
//! answers with is first checked against the trimmed schemas in
//! tests/fixtures/github/schema.json (from github/rest-api-description, see the README
//! there): each `required` property present with the published JSON type, enums
//! respected, request bodies without unknown fields.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::Proxy;
use countersign_core::api::DecisionInput;
use countersign_core::backends::{self, Limits};
use countersign_core::config::BackendConfig;
use countersign_core::model::{
    ActionKey, DeliveryState, EventSource, ReviewVerdict, TimelineKind, Verdict,
};
use countersign_core::signer::OsKeyring;
use countersign_core::store::Store;
use countersign_core::Engine;
use serde_json::json;
use sha2::Digest;

#[path = "common/github_hub.rs"]
mod github_hub;

use github_hub::*;

fn engine_for(dir: &std::path::Path, url: &str, keyring: &str) -> Engine {
    engine_with_repos(dir, url, keyring, &["octo/app", "octo/api"])
}

fn engine_with_repos(dir: &std::path::Path, url: &str, keyring: &str, repos: &[&str]) -> Engine {
    let store = Store::open_in_dir(dir).expect("store");
    let options = serde_json::from_value(json!({ "repos": repos })).unwrap();
    let config = BackendConfig {
        name: "gh".into(),
        kind: "github".into(),
        url: url.into(),
        poll_interval_secs: Some(1),
        max_backoff_secs: Some(1),
        timeout_secs: Some(5),
        options,
        ..Default::default()
    };
    let limits = Limits {
        request_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let backend = backends::build(&config, Some(TOKEN.to_owned()), limits).expect("backend");
    let mut engine = Engine::new(store, ME)
        .with_key_store(Arc::new(OsKeyring::with_names("countersign-test", keyring)));
    engine.add_backend(config, backend).expect("register");
    engine
}

async fn synced(dir: &std::path::Path, url: &str, keyring: &str) -> Engine {
    let engine = engine_for(dir, url, keyring);
    let report = engine.sync_once(Utc::now()).await;
    assert!(report[0].error.is_none(), "{:?}", report[0].error);
    engine
}

fn input(id: &str, engine: &Engine, verdict: Verdict, reason: &str) -> DecisionInput {
    let key = ActionKey::new("gh", id);
    let seen = engine.detail(&key).unwrap().action.snapshot_hash;
    DecisionInput {
        action: key,
        verdict,
        reason: reason.into(),
        seen_snapshot_hash: seen,
        answer: None,
    }
}

fn proof(engine: &Engine, id: &str) -> String {
    let d = &engine.detail(&ActionKey::new("gh", id)).unwrap().decisions[0];
    let sha = hex::encode(sha2::Sha256::digest(
        countersign_core::audit::decision_payload(d).as_bytes(),
    ));
    format!(
        "[countersign {} payload-sha256:{}]",
        d.key_fingerprint.clone().expect("signed"),
        &sha[..12]
    )
}

#[test]
fn the_schema_checker_catches_drift() {
    let good = pending(1, "production", 0, true);
    conforms("pending-deployment", &good);
    let mut bad = good.clone();
    bad.as_object_mut()
        .unwrap()
        .remove("current_user_can_approve");
    let mut out = Vec::new();
    problems(&json!({"$ref": "pending-deployment"}), &bad, "", &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    let mut bad = good;
    bad["reviewers"][0]["type"] = "Robot".into();
    let mut out = Vec::new();
    problems(&json!({"$ref": "pending-deployment"}), &bad, "", &mut out);
    assert!(!out.is_empty());
    let mut out = Vec::new();
    problems(
        &json!({"$ref": "review-pending-deployments-request"}),
        &json!({"environment_ids": [1], "state": "approved"}),
        "",
        &mut out,
    );
    assert!(out[0].contains("comment"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_runs_across_two_repos_become_one_action_per_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, addr) = start_hub().await;
    let engine = synced(dir.path(), &format!("http://{addr}"), "github-list").await;

    let mut ids: Vec<String> = engine
        .pending(Some("gh"))
        .unwrap()
        .into_iter()
        .map(|a| a.key.external_id)
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            format!("octo/api/runs/{RUN_B}/env/{ENV_API}"),
            id_a(),
            format!("octo/app/runs/{RUN_A}/env/{ENV_STAGING}"),
        ]
    );
    let one = engine.detail(&ActionKey::new("gh", id_a())).unwrap();
    let s = &one.action.snapshot;
    assert_eq!(s.kind.as_str(), "deployment");
    assert_eq!(s.title, "Deploy Deploy to production");
    assert_eq!(s.requester, "dana");
    assert_eq!(s.resource, "octo/app (production)");
    assert_eq!(s.approvals_required, 1);
    assert_eq!(
        s.web_url.as_deref(),
        Some(&*format!(
            "https://github.com/octo/app/actions/runs/{RUN_A}"
        ))
    );
    let get = |k: &str| {
        s.details
            .iter()
            .find(|d| d.key == k)
            .unwrap_or_else(|| panic!("no {k}: {:?}", s.details))
            .value
            .clone()
    };
    assert_eq!(get("workflow"), "Deploy");
    assert_eq!(get("branch"), "main");
    assert_eq!(get("commit"), format!("{RUN_A:040x}"));
    assert_eq!(get("run number"), "562");
    assert_eq!(get("environment"), "production");
    assert_eq!(get("wait timer"), "30m");
    assert_eq!(get("reviewers"), "team sre, user ana");
    assert_eq!(get("current user can approve"), "yes");
    let backend: Vec<_> = one
        .timeline
        .iter()
        .filter(|e| e.source == EventSource::Backend)
        .collect();
    assert_eq!(backend[0].kind, TimelineKind::Requested);
    assert_eq!(backend[0].text, "Run #562 of Deploy created");
    assert!(
        backend
            .iter()
            .any(|e| e.text == "Wait timer of 30m started for production"),
        "{backend:#?}"
    );
    // The run's approvals log: QA's approval is context on production's timeline, not a
    // review of production.
    assert!(
        backend
            .iter()
            .any(|e| e.kind == TimelineKind::Reviewed && e.text == "bob approved qa: qa green"),
        "{backend:#?}"
    );
    assert!(s.reviews.is_empty(), "{:?}", s.reviews);
    // octo/api's production was rejected once before: a review of this environment.
    let api = engine
        .detail(&ActionKey::new(
            "gh",
            format!("octo/api/runs/{RUN_B}/env/{ENV_API}"),
        ))
        .unwrap();
    let reviews = &api.action.snapshot.reviews;
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert_eq!(reviews[0].reviewer, "carol");
    assert_eq!(reviews[0].verdict, ReviewVerdict::Denied);
    assert_eq!(reviews[0].comment.as_deref(), Some("flaky tests"));
    assert!(api.timeline.iter().any(|e| e.kind == TimelineKind::Denied
        && e.source == EventSource::Backend
        && e.text == "carol rejected production: flaky tests"
        && e.actor.as_deref() == Some("carol")));

    // Second poll: If-None-Match on every GET, 304 answers, nothing changes.
    let before = hub.seen.lock().unwrap().len();
    let again = engine.sync_once(Utc::now()).await;
    assert!(again[0].error.is_none(), "{:?}", again[0].error);
    let summary = again[0].summary.as_ref().unwrap();
    assert_eq!((summary.created, summary.updated), (0, 0));
    let seen = hub.seen.lock().unwrap()[before..].to_vec();
    // Per repository: waiting runs; per run: pending deployments and approvals.
    assert_eq!(seen.len(), 6, "{seen:?}");
    for (path, inm, status) in &seen {
        assert!(inm.is_some(), "{path} sent no If-None-Match");
        assert_eq!(*status, 304, "{path}");
    }
    assert_eq!(hub.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_posted_once_with_its_proof_even_when_the_answer_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, addr) = start_hub().await;
    let proxy = Proxy::start(addr).await;
    let engine = synced(dir.path(), &proxy.url(), "github-approve").await;

    *hub.lose_next_answer.lock().unwrap() = Some(proxy.swallow.clone());
    let report = engine
        .decide(
            input(&id_a(), &engine, Verdict::Approve, "CHG-7"),
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(report.decision.delivery, DeliveryState::Queued);
    proxy.swallow.store(false, Ordering::SeqCst);

    engine
        .sync_once(Utc::now() + chrono::Duration::seconds(5))
        .await;
    let decisions = engine
        .detail(&ActionKey::new("gh", id_a()))
        .unwrap()
        .decisions;
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].delivery, DeliveryState::Delivered);
    let posts = hub.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 1, "exactly one POST: {posts:?}");
    assert_eq!(posts[0].0, RUN_A);
    assert_eq!(
        posts[0].1,
        json!({"environment_ids": [ENV_PROD], "state": "approved",
               "comment": format!("CHG-7 {}", proof(&engine, &id_a()))})
    );
    assert_eq!(hub.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_carries_the_reason_and_the_proof() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, addr) = start_hub().await;
    let engine = synced(dir.path(), &format!("http://{addr}"), "github-reject").await;
    let report = engine
        .decide(
            input(&id_a(), &engine, Verdict::Deny, "freeze until Monday"),
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(report.decision.delivery, DeliveryState::Delivered);
    let posts = hub.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].1["state"], "rejected");
    assert_eq!(
        posts[0].1["comment"],
        format!("freeze until Monday {}", proof(&engine, &id_a()))
    );
    // Gone from the waiting list on the next poll.
    engine.sync_once(Utc::now()).await;
    let ids: Vec<String> = engine
        .pending(Some("gh"))
        .unwrap()
        .into_iter()
        .map(|a| a.key.external_id)
        .collect();
    assert!(!ids.contains(&id_a()), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_review_and_an_unapprovable_environment_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, addr) = start_hub().await;
    let engine = synced(dir.path(), &format!("http://{addr}"), "github-refused").await;

    let staging = format!("octo/app/runs/{RUN_A}/env/{ENV_STAGING}");
    let report = engine
        .decide(input(&staging, &engine, Verdict::Approve, ""), Utc::now())
        .await
        .unwrap();
    match &report.decision.delivery {
        DeliveryState::Rejected { reason } => assert!(
            reason.contains("You are not a required reviewer for this environment"),
            "{reason}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let timeline = engine
        .detail(&ActionKey::new("gh", &staging))
        .unwrap()
        .timeline;
    assert!(
        timeline
            .iter()
            .any(|e| e.text.contains("not a required reviewer")),
        "{timeline:#?}"
    );

    // current_user_can_approve false: refused without a POST.
    let api = format!("octo/api/runs/{RUN_B}/env/{ENV_API}");
    let report = engine
        .decide(input(&api, &engine, Verdict::Approve, ""), Utc::now())
        .await
        .unwrap();
    match &report.decision.delivery {
        DeliveryState::Rejected { reason } => {
            assert_eq!(reason, "you cannot approve this environment")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(hub.posts.lock().unwrap().len(), 1, "only the staging POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, addr) = start_hub().await;
    let engine = engine_for(dir.path(), &format!("http://{addr}"), "github-429");
    *hub.fail_with.lock().unwrap() = Some((
        429,
        vec![("retry-after", "120".to_owned())],
        "basic-error",
        error_body("You have exceeded a secondary rate limit."),
    ));
    let (trigger, listener) = countersign_core::shutdown::channel();
    let tasks = engine.spawn_sync(&listener);
    let store = engine.store().clone();
    let mut changes = engine.changes();
    common::until(&mut changes, Duration::from_secs(10), "degraded", || {
        store.backend_statuses().unwrap()[0].status == "degraded"
    })
    .await;
    trigger.trigger();
    for t in tasks {
        let _ = t.await;
    }
    let status = &store.backend_statuses().unwrap()[0];
    assert_eq!(status.last_error_code.as_deref(), Some("rate_limited"));
    let wait = status.next_retry_at.unwrap() - status.last_error_at.unwrap();
    assert!(wait >= chrono::Duration::seconds(119), "{wait:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_rate_limit_waits_for_the_reset_and_a_bad_token_is_unauthorized() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, addr) = start_hub().await;
    let engine = engine_for(dir.path(), &format!("http://{addr}"), "github-403");
    let reset = Utc::now().timestamp() + 600;
    *hub.fail_with.lock().unwrap() = Some((
        403,
        vec![
            ("x-ratelimit-remaining", "0".to_owned()),
            ("x-ratelimit-limit", "5000".to_owned()),
            ("x-ratelimit-reset", reset.to_string()),
        ],
        "basic-error",
        error_body("API rate limit exceeded for user ID 42."),
    ));
    let report = engine.sync_once(Utc::now()).await;
    assert_eq!(report[0].error_code, Some("rate_limited"));
    let error = report[0].error.clone().unwrap();
    assert!(
        error.contains("retry in 5") || error.contains("retry in 6"),
        "{error}"
    );

    let dir2 = tempfile::tempdir().unwrap();
    let store = Store::open_in_dir(dir2.path()).expect("store");
    let options = serde_json::from_value(json!({"repos": ["octo/app"]})).unwrap();
    let config = BackendConfig {
        name: "gh".into(),
        kind: "github".into(),
        url: format!("http://{addr}"),
        options,
        ..Default::default()
    };
    let backend = backends::build(&config, Some("wrong".into()), Limits::default()).unwrap();
    let mut engine = Engine::new(store, ME);
    engine.add_backend(config, backend).unwrap();
    *hub.fail_with.lock().unwrap() = None;
    let report = engine.sync_once(Utc::now()).await;
    assert_eq!(report[0].error_code, Some("unauthorized"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_still_send_one_request_at_a_time() {
    let (hub, addr) = start_hub().await;
    let config = BackendConfig {
        name: "gh".into(),
        kind: "github".into(),
        url: format!("http://{addr}"),
        options: serde_json::from_value(json!({"repos": ["octo/app", "octo/api"]})).unwrap(),
        ..Default::default()
    };
    let backend = backends::build(&config, Some(TOKEN.to_owned()), Limits::default()).unwrap();
    let cursor = backends::SyncCursor::default();
    let calls = (0..4).map(|i| {
        let (backend, cursor) = (backend.clone(), cursor.clone());
        tokio::spawn(async move {
            if i % 2 == 0 {
                backend.list_pending(&cursor).await.map(|_| ())
            } else {
                backend.fetch(&id_a()).await.map(|_| ())
            }
        })
    });
    for call in futures_util::future::join_all(calls).await {
        call.unwrap().unwrap();
    }
    assert!(hub.seen.lock().unwrap().len() >= 12);
    assert_eq!(hub.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_lists_its_repositories_once_and_reuses_them() {
    let (hub, addr) = start_hub().await;
    let config = BackendConfig {
        name: "gh".into(),
        kind: "github".into(),
        url: format!("http://{addr}"),
        options: serde_json::from_value(json!({"org": "octo"})).unwrap(),
        ..Default::default()
    };
    let backend = backends::build(&config, Some(TOKEN.to_owned()), Limits::default()).unwrap();
    for _ in 0..2 {
        let listed = backend
            .list_pending(&backends::SyncCursor::default())
            .await
            .unwrap();
        let backends::ListOutcome::Listed { actions, .. } = listed else {
            panic!("expected a list");
        };
        assert_eq!(actions.len(), 3);
    }
    assert_eq!(
        hub.org_pages.load(Ordering::SeqCst),
        1,
        "cached for a while"
    );
    let seen = hub.seen.lock().unwrap().clone();
    assert_eq!(seen[0].0, "/orgs/octo/repos?per_page=100&page=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_or_forbidden_repository_leaves_the_others_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, addr) = start_hub().await;
    hub.unreadable
        .lock()
        .unwrap()
        .insert("octo/gone".into(), 404);
    let engine = engine_with_repos(
        dir.path(),
        &format!("http://{addr}"),
        "github-partial",
        &["octo/app", "octo/gone", "octo/api"],
    );
    let report = engine.sync_once(Utc::now()).await;
    let error = report[0]
        .error
        .clone()
        .expect("the gone repository is reported");
    assert!(
        error.contains("1 of 3 repositories left out") && error.contains("octo/gone (404"),
        "{error}"
    );
    let pending = |engine: &Engine| {
        let mut ids: Vec<String> = engine
            .pending(Some("gh"))
            .unwrap()
            .into_iter()
            .map(|a| a.key.external_id)
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        pending(&engine).len(),
        3,
        "both readable repositories are listed"
    );
    let status = &engine.backends().unwrap()[0];
    assert_eq!(status.status, "degraded");
    assert!(status.last_error.as_deref().unwrap().contains("octo/gone"));

    // octo/api stops being readable: its request is dropped, octo/app's stay.
    hub.unreadable
        .lock()
        .unwrap()
        .insert("octo/api".into(), 403);
    let report = engine.sync_once(Utc::now()).await;
    let error = report[0].error.clone().unwrap();
    assert!(
        error.contains("2 of 3 repositories left out")
            && error.contains("octo/api (403: Resource not accessible by integration)")
            && error.contains("octo/gone (404"),
        "{error}"
    );
    assert_eq!(
        pending(&engine),
        [id_a(), format!("octo/app/runs/{RUN_A}/env/{ENV_STAGING}")]
    );
    let dropped = engine
        .detail(&ActionKey::new(
            "gh",
            format!("octo/api/runs/{RUN_B}/env/{ENV_API}"),
        ))
        .unwrap();
    assert_eq!(dropped.action.snapshot.status.as_str(), "cancelled");

    // Once every repository answers again, the backend is healthy.
    hub.unreadable.lock().unwrap().clear();
    let report = engine.sync_once(Utc::now()).await;
    assert_eq!(report[0].error, None);
    assert_eq!(engine.backends().unwrap()[0].status, "ok");
}
