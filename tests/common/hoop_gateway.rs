//! A loopback stand-in for hoop.dev's gateway API (hoop cannot run here): it serves JSON
//! fixtures (tests/fixtures/hoop/) and emulates the review rules of
//! gateway/api/review/review.go; every body it serves is first checked against strict
//! mirrors of hoop's published wire types, so a fixture or emulated answer that drifts
//! from the real API fails the test that uses it.
//!
//! Source of truth: github.com/hoophq/hoop at commit
//! e939597dc425d78dbd146d98fad21b7171ccaaf5, gateway/api/openapi/types.go (`Review`,
//! `ReviewGroup`, `ReviewOwner`, `ReviewSessionTimeWindow`, `ReviewRequest`, `Session`,
//! `SessionReview`); routes in gateway/api/server.go; errors in gateway/api/review/review.go.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const TOKEN: &str = "hpk_test_0123456789";
/// The hoop user behind TOKEN (also Countersign's approver name here).
pub const ME: &str = "ana@example.com";
pub const MY_GROUPS: &[&str] = &["dba"];

pub const R1: &str = "9f9745b4-c77b-4d52-84d3-e24f67e36231"; // onetime, 2 of 3 groups, 1 approved
pub const R2: &str = "9f9745b4-c77b-4d52-84d3-e24f67e36232"; // jit, 30 min, time window
pub const R5: &str = "9f9745b4-c77b-4d52-84d3-e24f67e36235"; // requested by ME

// ---- Strict mirrors of hoop's wire types, field by field from types.go ----
// Go pointers and non-omitempty fields are always present (null when nil), so each
// field here is required to be present; `omitempty` fields are skipped when absent.
// A fixture must deserialize (no unknown field) and serialize back to itself (no
// missing field).

/// types.go `Review`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorReview {
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
pub struct MirrorSessionReview {
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
pub struct MirrorReviewGroup {
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
pub struct MirrorReviewOwner {
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
pub struct MirrorTimeWindow {
    #[serde(rename = "type")]
    kind: String,
    configuration: HashMap<String, String>,
}

/// types.go `ReviewRequest` (the PUT body; `status` is `binding:"required"`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct MirrorReviewRequest {
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
pub struct MirrorSession {
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

pub const REVIEW_STATUSES: &[&str] = &[
    "PENDING",
    "APPROVED",
    "REJECTED",
    "REVOKED",
    "PROCESSING",
    "EXECUTED",
    "UNKNOWN",
];

/// Deserializes strictly and checks the value serializes back unchanged.
pub fn conforms<T: serde::de::DeserializeOwned + Serialize>(what: &str, value: &Value) -> T {
    let typed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{what} does not match hoop's types.go: {e}\n{value:#}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, value,
        "{what}: a field of hoop's types.go is missing"
    );
    typed
}

pub fn check_review(value: &Value) {
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

pub fn check_session(value: &Value) {
    let s: MirrorSession = conforms("Session", value);
    assert!(["exec", "connect"].contains(&s.verb.as_str()), "{}", s.verb);
}

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/hoop/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path)
}

// ---- The stand-in gateway ----

pub struct Gateway {
    pub reviews: Mutex<Vec<Value>>,
    pub sessions: HashMap<String, Value>,
    /// Every PUT body received, with the review id.
    pub puts: Mutex<Vec<(String, Value)>>,
    /// When set, the next PUT is applied and its answer lost (the proxy's `swallow`).
    pub lose_next_answer: Mutex<Option<Arc<AtomicBool>>>,
    pub malformed: bool,
}

pub type Shared = Arc<Gateway>;

pub fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

/// The 401 hoop gives a request without the right bearer token, if this is one.
pub fn unauthorized(headers: &HeaderMap) -> Option<Response> {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    // apiroutes/auth.go answers a bad token like this.
    (!ok).then(|| message(StatusCode::UNAUTHORIZED, "access denied"))
}

pub async fn list_reviews(State(g): State<Shared>, headers: HeaderMap) -> Response {
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

pub async fn get_review(
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

pub async fn get_session(
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

pub async fn userinfo(headers: HeaderMap) -> Response {
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
pub async fn put_review(
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

pub async fn start_gateway(fixture_name: &str) -> (Shared, std::net::SocketAddr) {
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

/// Someone else settles review `id` in hoop (status `APPROVED`, `REJECTED`, …).
pub fn settle_externally(gateway: &Gateway, id: &str, status: &str) {
    let mut reviews = gateway.reviews.lock().unwrap();
    let review = reviews
        .iter_mut()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no review {id}"));
    review["status"] = status.into();
    check_review(review);
}
