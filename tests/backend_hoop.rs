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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use common::Proxy;
use countersign_core::api::DecisionInput;
use countersign_core::backends::{self, Limits};
use countersign_core::config::BackendConfig;
use countersign_core::model::{ActionKey, DeliveryState, TimelineKind, Verdict};
use countersign_core::signer::OsKeyring;
use countersign_core::store::Store;
use countersign_core::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;

const TOKEN: &str = "hpk_test_0123456789";
/// The hoop user behind TOKEN (also Countersign's approver name here).
const ME: &str = "ana@example.com";
const MY_GROUPS: &[&str] = &["dba"];

const R1: &str = "9f9745b4-c77b-4d52-84d3-e24f67e36231"; // onetime, 2 of 3 groups, 1 approved
const R2: &str = "9f9745b4-c77b-4d52-84d3-e24f67e36232"; // jit, 30 min, time window
const R5: &str = "9f9745b4-c77b-4d52-84d3-e24f67e36235"; // requested by ME

// ---- Strict mirrors of hoop's wire types, field by field from types.go ----
// Go pointers and non-omitempty fields are always present (null when nil), so each
// field here is required to be present; `omitempty` fields are skipped when absent.
// A fixture must deserialize (no unknown field) and serialize back to itself (no
// missing field).

/// types.go `Review`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct MirrorReview {
    id: String,
    session: String,
    #[serde(rename = "type")]
    kind: String,
    access_duration: i64,
    status: String,
    revoke_at: Option<String>,
    created_at: String,
    review_groups_data: Vec<MirrorReviewGroup>,
    time_window: Option<MirrorTimeWindow>,
    access_request_rule_name: Option<String>,
    min_approvals: Option<i64>,
    force_approval_groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rejection_reason: Option<String>,
}

/// types.go `SessionReview`: `Review` without `session`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct MirrorSessionReview {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    access_duration: i64,
    status: String,
    revoke_at: Option<String>,
    created_at: String,
    review_groups_data: Vec<MirrorReviewGroup>,
    time_window: Option<MirrorTimeWindow>,
    access_request_rule_name: Option<String>,
    min_approvals: Option<i64>,
    force_approval_groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rejection_reason: Option<String>,
}

/// types.go `ReviewGroup`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct MirrorReviewGroup {
    id: String,
    group: String,
    status: String,
    reviewed_by: Option<MirrorReviewOwner>,
    review_date: Option<String>,
    forced_review: bool,
}

/// types.go `ReviewOwner` (`id` and `name` are omitempty).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct MirrorReviewOwner {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    email: String,
    slack_id: String,
}

/// types.go `ReviewSessionTimeWindow`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct MirrorTimeWindow {
    #[serde(rename = "type")]
    kind: String,
    configuration: HashMap<String, String>,
}

/// types.go `ReviewRequest` (the PUT body; `status` is `binding:"required"`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct MirrorReviewRequest {
    status: String,
    #[serde(default)]
    time_window: Option<MirrorTimeWindow>,
    #[serde(default)]
    force_review: bool,
    #[serde(default)]
    rejection_reason: String,
}

/// types.go `Session`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct MirrorSession {
    id: String,
    org_id: String,
    script: HashMap<String, String>,
    script_size: i64,
    labels: Option<HashMap<String, String>>,
    integrations_metadata: Option<serde_json::Map<String, Value>>,
    metadata: Option<serde_json::Map<String, Value>>,
    metrics: Option<serde_json::Map<String, Value>>,
    user: String,
    user_id: String,
    user_name: String,
    #[serde(rename = "type")]
    kind: String,
    connection_subtype: String,
    connection: String,
    resource_name: String,
    role_name: String,
    connection_tags: Option<HashMap<String, String>>,
    review: Option<MirrorSessionReview>,
    verb: String,
    status: String,
    exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_stream: Option<Value>,
    event_size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_batch_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    start_date: String,
    end_date: Option<String>,
    ai_analysis: Option<Value>,
    guardrails_info: Option<Vec<Value>>,
    identity_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    machine_identity_id: Option<String>,
}

const REVIEW_STATUSES: &[&str] = &[
    "PENDING",
    "APPROVED",
    "REJECTED",
    "REVOKED",
    "PROCESSING",
    "EXECUTED",
    "UNKNOWN",
];

/// Deserializes strictly and checks the value serializes back unchanged.
fn conforms<T: serde::de::DeserializeOwned + Serialize>(what: &str, value: &Value) -> T {
    let typed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{what} does not match hoop's types.go: {e}\n{value:#}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, value,
        "{what}: a field of hoop's types.go is missing"
    );
    typed
}

fn check_review(value: &Value) {
    let r: MirrorReview = conforms("Review", value);
    assert!(REVIEW_STATUSES.contains(&r.status.as_str()), "{}", r.status);
    assert!(["onetime", "jit"].contains(&r.kind.as_str()), "{}", r.kind);
    for g in &r.review_groups_data {
        assert!(
            ["PENDING", "APPROVED", "REJECTED", "REVOKED"].contains(&g.status.as_str()),
            "{}",
            g.status
        );
    }
}

fn check_session(value: &Value) {
    let s: MirrorSession = conforms("Session", value);
    assert!(["exec", "connect"].contains(&s.verb.as_str()), "{}", s.verb);
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/hoop/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path)
}

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

// ---- The stand-in gateway ----

struct Gateway {
    reviews: Mutex<Vec<Value>>,
    sessions: HashMap<String, Value>,
    /// Every PUT body received, with the review id.
    puts: Mutex<Vec<(String, Value)>>,
    /// When set, the next PUT is applied and its answer lost (the proxy's `swallow`).
    lose_next_answer: Mutex<Option<Arc<AtomicBool>>>,
    malformed: bool,
}

type Shared = Arc<Gateway>;

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

/// The 401 hoop gives a request without the right bearer token, if this is one.
fn unauthorized(headers: &HeaderMap) -> Option<Response> {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    // apiroutes/auth.go answers a bad token like this.
    (!ok).then(|| message(StatusCode::UNAUTHORIZED, "access denied"))
}

async fn list_reviews(State(g): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&headers) {
        return r;
    }
    let reviews = g.reviews.lock().unwrap().clone();
    // The malformed fixture is served as-is on purpose; everything else must conform.
    if !g.malformed {
        reviews.iter().for_each(check_review);
    }
    Json(Value::Array(reviews)).into_response()
}

async fn get_review(
    State(g): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&headers) {
        return r;
    }
    let reviews = g.reviews.lock().unwrap();
    match reviews.iter().find(|r| r["id"] == id || r["session"] == id) {
        Some(r) => {
            check_review(r);
            Json(r.clone()).into_response()
        }
        None => message(StatusCode::NOT_FOUND, "review not found"),
    }
}

async fn get_session(
    State(g): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&headers) {
        return r;
    }
    let Some(mut session) = g.sessions.get(&id).cloned() else {
        return message(StatusCode::NOT_FOUND, "not found");
    };
    // The session embeds the review's current state (SessionReview).
    if let Some(review) = g
        .reviews
        .lock()
        .unwrap()
        .iter()
        .find(|r| r["session"] == id)
    {
        let mut embedded = review.clone();
        embedded.as_object_mut().unwrap().remove("session");
        session["review"] = embedded;
    }
    check_session(&session);
    Json(session).into_response()
}

async fn userinfo(headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&headers) {
        return r;
    }
    Json(json!({
        "id": "user-ana", "name": "Ana", "email": ME, "groups": MY_GROUPS,
        "is_admin": false, "org_id": "0cd7f941-2bb8-4f9f-93b0-11620d4652ab"
    }))
    .into_response()
}

/// review.go `ReviewByIdOrSid` → `DoReview` → `doIndividualReview`, for the user ME.
async fn put_review(
    State(g): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Some(r) = unauthorized(&headers) {
        return r;
    }
    let body: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return message(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let request: MirrorReviewRequest = serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("PUT body does not match ReviewRequest: {e}: {body}"));
    g.puts.lock().unwrap().push((id.clone(), body));
    let status = request.status.to_uppercase();
    let mut reviews = g.reviews.lock().unwrap();
    let Some(review) = reviews
        .iter_mut()
        .find(|r| r["id"] == id || r["session"] == id)
    else {
        return message(StatusCode::NOT_FOUND, "review not found");
    };
    if !["APPROVED", "REJECTED", "REVOKED"].contains(&status.as_str()) {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "unknown status");
    }
    if review["status"] != "PENDING" && review["status"] != "APPROVED" {
        return message(StatusCode::BAD_REQUEST, "review is in wrong state");
    }
    let owner = g.sessions[review["session"].as_str().unwrap()]["user"].clone();
    if status == "APPROVED" && owner == ME {
        return message(StatusCode::BAD_REQUEST, "unable to self approve review");
    }
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut eligible = false;
    let mut approved = 0;
    let groups = review["review_groups_data"].as_array_mut().unwrap();
    let count = groups.len() as i64;
    for group in groups.iter_mut() {
        if MY_GROUPS.contains(&group["group"].as_str().unwrap()) {
            eligible = true;
            group["status"] = status.clone().into();
            group["reviewed_by"] =
                json!({"id": "user-ana", "name": "Ana", "email": ME, "slack_id": ""});
            group["review_date"] = now.clone().into();
        }
        if group["status"] == "APPROVED" {
            approved += 1;
        }
    }
    if !eligible {
        return message(StatusCode::BAD_REQUEST, "not eligible for review");
    }
    let needed = match (
        review["access_request_rule_name"].is_string(),
        review["min_approvals"].as_i64(),
    ) {
        (true, Some(min)) => count.min(min),
        _ => count,
    };
    if status == "APPROVED" {
        if approved == needed {
            review["status"] = "APPROVED".into();
            review["revoke_at"] = now.into();
        }
    } else {
        review["status"] = status.into();
        if !request.rejection_reason.is_empty() {
            review["rejection_reason"] = request.rejection_reason.into();
        }
    }
    check_review(review);
    let answer = review.clone();
    drop(reviews);
    if let Some(swallow) = g.lose_next_answer.lock().unwrap().take() {
        swallow.store(true, Ordering::SeqCst);
    }
    Json(answer).into_response()
}

async fn start_gateway(fixture_name: &str) -> (Shared, std::net::SocketAddr) {
    let reviews = fixture(fixture_name);
    let sessions = fixture("sessions.json")
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_owned(), s.clone()))
        .collect();
    let gateway = Arc::new(Gateway {
        reviews: Mutex::new(reviews.as_array().unwrap().clone()),
        sessions,
        puts: Mutex::new(Vec::new()),
        lose_next_answer: Mutex::new(None),
        malformed: fixture_name.contains("malformed"),
    });
    let app = Router::new()
        .route("/api/reviews", get(list_reviews))
        .route("/api/reviews/{id}", get(get_review).put(put_review))
        .route("/api/sessions/{id}", get(get_session))
        .route("/api/userinfo", get(userinfo))
        .with_state(gateway.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (gateway, addr)
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
