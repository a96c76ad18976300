//! The `github` backend against a loopback stand-in for GitHub's REST API (deployment
//! reviews). Every body the stand-in serves, every body it receives and every error it
//! answers with is first checked against the trimmed schemas in
//! tests/fixtures/github/schema.json (from github/rest-api-description, see the README
//! there): each `required` property present with the published JSON type, enums
//! respected, request bodies without unknown fields.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
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
use serde_json::{json, Value};
use sha2::Digest;

const TOKEN: &str = "ghp_test_0123456789";
const ME: &str = "ana";

// ---- A small checker for the trimmed OpenAPI schemas ----

fn schemas() -> &'static Value {
    static SCHEMAS: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let path = format!(
            "{}/tests/fixtures/github/schema.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let all: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path);
        all["schemas"].clone()
    })
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

/// Every problem of `v` against `schema`, as `path: problem`.
fn problems(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(name) = schema.get("$ref").and_then(Value::as_str) {
        let target = schemas()
            .get(name)
            .unwrap_or_else(|| panic!("no schema {name}"));
        return problems(target, v, path, out);
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        if !any.iter().any(|s| {
            let mut p = Vec::new();
            problems(s, v, path, &mut p);
            p.is_empty()
        }) {
            out.push(format!("{path}: matches none of anyOf"));
        }
        return;
    }
    if let Some(ty) = schema.get("type") {
        let ok = match ty {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)),
            _ => true,
        };
        if !ok {
            out.push(format!("{path}: expected {ty}, got {v}"));
            return;
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        if !values.contains(v) {
            out.push(format!("{path}: {v} not in {values:?}"));
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        if format == "date-time"
            && v.is_string()
            && chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).is_err()
        {
            out.push(format!("{path}: not a date-time: {v}"));
        }
    }
    if let Value::Object(map) = v {
        for key in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !map.contains_key(key.as_str().unwrap()) {
                out.push(format!(
                    "{path}: missing required `{}`",
                    key.as_str().unwrap()
                ));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, child) in map {
            match props.and_then(|p| p.get(k)) {
                Some(s) => problems(s, child, &format!("{path}.{k}"), out),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    out.push(format!("{path}: unknown property `{k}`"))
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(item)) = (v, schema.get("items")) {
        for (i, child) in items.iter().enumerate() {
            problems(item, child, &format!("{path}[{i}]"), out);
        }
    }
}

fn conforms(name: &str, v: &Value) {
    let mut out = Vec::new();
    problems(&json!({ "$ref": name }), v, name, &mut out);
    assert!(
        out.is_empty(),
        "does not match GitHub's `{name}`: {out:#?}\n{v:#}"
    );
}

// ---- Fixtures, built to the published schemas ----

fn user(login: &str, id: u64) -> Value {
    let u = format!("https://api.github.com/users/{login}");
    json!({
        "login": login, "id": id, "node_id": format!("MDQ6VXNlcn{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "", "url": u, "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("{u}/followers"),
        "following_url": format!("{u}/following{{/other_user}}"),
        "gists_url": format!("{u}/gists{{/gist_id}}"),
        "starred_url": format!("{u}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{u}/subscriptions"),
        "organizations_url": format!("{u}/orgs"), "repos_url": format!("{u}/repos"),
        "events_url": format!("{u}/events{{/privacy}}"),
        "received_events_url": format!("{u}/received_events"), "type": "User",
        "site_admin": false
    })
}

fn team(slug: &str, id: u64) -> Value {
    json!({
        "id": id, "node_id": format!("MDQ6VGVhbT{id}"), "name": slug.to_uppercase(),
        "slug": slug, "description": null, "permission": "pull",
        "url": format!("https://api.github.com/teams/{id}"),
        "html_url": format!("https://github.com/orgs/octo/teams/{slug}"),
        "members_url": format!("https://api.github.com/teams/{id}/members{{/member}}"),
        "repositories_url": format!("https://api.github.com/teams/{id}/repos"),
        "parent": null
    })
}

fn repository(full: &str, id: u64) -> Value {
    let (owner, name) = full.split_once('/').unwrap();
    json!({
        "id": id, "node_id": format!("MDEwOlJlcG9zaXRvcnk{id}"), "name": name,
        "full_name": full, "owner": user(owner, 9000 + id), "private": true,
        "html_url": format!("https://github.com/{full}"),
        "url": format!("https://api.github.com/repos/{full}"), "archived": false
    })
}

fn run(repo: &str, id: u64, number: u64, workflow: &str, branch: &str, actor: &str) -> Value {
    let api = format!("https://api.github.com/repos/{repo}/actions/runs/{id}");
    json!({
        "id": id, "name": workflow, "node_id": format!("WFR_{id}"), "head_branch": branch,
        "head_sha": format!("{:040x}", id), "path": ".github/workflows/deploy.yml",
        "display_title": format!("Release {number}"), "run_number": number, "run_attempt": 1,
        "event": "push", "status": "waiting", "conclusion": null, "workflow_id": 161335,
        "url": api, "html_url": format!("https://github.com/{repo}/actions/runs/{id}"),
        "pull_requests": [], "created_at": "2026-11-25T09:00:00Z",
        "updated_at": "2026-11-25T09:01:00Z", "run_started_at": "2026-11-25T09:00:00Z",
        "actor": user("octocat", 1), "triggering_actor": user(actor, 7),
        "jobs_url": format!("{api}/jobs"), "logs_url": format!("{api}/logs"),
        "check_suite_url": "https://api.github.com/repos/x/check-suites/1",
        "artifacts_url": format!("{api}/artifacts"), "cancel_url": format!("{api}/cancel"),
        "rerun_url": format!("{api}/rerun"),
        "workflow_url": "https://api.github.com/repos/x/actions/workflows/161335",
        "head_commit": null, "repository": repository(repo, 1), "head_repository": repository(repo, 1)
    })
}

fn pending(env_id: u64, env: &str, wait: i64, can_approve: bool) -> Value {
    json!({
        "environment": {
            "id": env_id, "node_id": format!("EN_{env_id}"), "name": env,
            "url": format!("https://api.github.com/repos/x/environments/{env}"),
            "html_url": format!("https://github.com/x/deployments/activity_log?environments_filter={env}")
        },
        "wait_timer": wait,
        "wait_timer_started_at": if wait > 0 { json!("2026-11-25T09:01:00Z") } else { Value::Null },
        "current_user_can_approve": can_approve,
        "reviewers": [
            {"type": "User", "reviewer": user(ME, 42)},
            {"type": "Team", "reviewer": team("sre", 5)}
        ]
    })
}

const RUN_A: u64 = 30433642; // octo/app: production (ours) + staging (not a reviewer)
const RUN_B: u64 = 30433700; // octo/api: production
const ENV_PROD: u64 = 161088068;
const ENV_STAGING: u64 = 161088069;
const ENV_API: u64 = 161088070;
const ENV_QA: u64 = 161088071; // octo/app's run: approved before the run reached production

/// One entry of a run's approvals log (`environment-approvals`).
fn approval(env_id: u64, env: &str, state: &str, login: &str, id: u64, comment: &str) -> Value {
    json!({
        "environments": [{
            "id": env_id, "node_id": format!("EN_{env_id}"), "name": env,
            "url": format!("https://api.github.com/repos/x/environments/{env}"),
            "html_url": format!("https://github.com/x/deployments/activity_log?environments_filter={env}"),
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        }],
        "state": state, "user": user(login, id), "comment": comment
    })
}

fn id_a() -> String {
    format!("octo/app/runs/{RUN_A}/env/{ENV_PROD}")
}

// ---- The stand-in ----

#[derive(Default)]
struct Hub {
    runs: HashMap<String, Vec<Value>>,
    pending: Mutex<HashMap<u64, Vec<Value>>>,
    approvals: Mutex<HashMap<u64, Vec<Value>>>,
    /// Environments where GitHub refuses ME with 422 although it lists them approvable.
    refuse: Vec<u64>,
    posts: Mutex<Vec<(u64, Value)>>,
    /// (path and query, If-None-Match sent, status answered).
    seen: Mutex<Vec<(String, Option<String>, u16)>>,
    in_flight: AtomicUsize,
    org_pages: AtomicUsize,
    max_in_flight: AtomicUsize,
    lose_next_answer: Mutex<Option<Arc<AtomicBool>>>,
    /// Answer every request with this (status, headers, schema name, body) once set.
    fail_with: Mutex<Option<Failure>>,
    /// Repositories answering 404 (gone) or 403 (not accessible to the token).
    unreadable: Mutex<HashMap<String, u16>>,
}

type Shared = Arc<Hub>;

/// (status, headers, schema name, body) answered to every request.
type Failure = (u16, Vec<(&'static str, String)>, &'static str, Value);

fn error_body(message: &str) -> Value {
    json!({"message": message, "documentation_url": "https://docs.github.com/rest"})
}

fn answer(status: u16, schema: &str, body: &Value, headers: &[(&str, String)]) -> Response {
    conforms(schema, body);
    let mut r = (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response();
    for (k, v) in headers {
        r.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    r
}

/// A 200 with an ETag, or a 304 when the client already has it.
fn cached(req_headers: &HeaderMap, schema: &str, body: &Value) -> Response {
    conforms(schema, body);
    let etag = format!(
        "W/\"{}\"",
        &hex::encode(sha2::Sha256::digest(body.to_string().as_bytes()))[..32]
    );
    let limits = [
        ("x-ratelimit-limit", "5000".to_owned()),
        ("x-ratelimit-remaining", "4990".to_owned()),
        (
            "x-ratelimit-reset",
            (Utc::now().timestamp() + 3600).to_string(),
        ),
        ("etag", etag.clone()),
    ];
    if req_headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        for (k, v) in limits {
            r.headers_mut()
                .insert(k, HeaderValue::from_str(&v).unwrap());
        }
        return r;
    }
    answer(200, schema, body, &limits)
}

async fn handle(
    State(hub): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let now = hub.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    hub.max_in_flight.fetch_max(now, Ordering::SeqCst);
    // Long enough that two overlapping requests would be seen overlapping.
    tokio::time::sleep(Duration::from_millis(15)).await;
    let mut response = route(&hub, &method, &uri, &headers, body);
    with_rate_limit_headers(&mut response);
    check_headers(&response);
    hub.in_flight.fetch_sub(1, Ordering::SeqCst);
    hub.seen.lock().unwrap().push((
        uri.path_and_query().unwrap().to_string(),
        headers
            .get("if-none-match")
            .map(|v| v.to_str().unwrap().to_owned()),
        response.status().as_u16(),
    ));
    if method == Method::POST {
        if let Some(swallow) = hub.lose_next_answer.lock().unwrap().take() {
            swallow.store(true, Ordering::SeqCst);
        }
    }
    response
}

/// GitHub sends its rate-limit headers on every answer (errors and 304s included); an
/// answer that did not set them gets a healthy budget.
fn with_rate_limit_headers(response: &mut Response) {
    let reset = (Utc::now().timestamp() + 3600).to_string();
    let defaults = [
        ("x-ratelimit-limit", "5000".to_owned()),
        ("x-ratelimit-remaining", "4990".to_owned()),
        ("x-ratelimit-used", "10".to_owned()),
        ("x-ratelimit-reset", reset),
        ("x-ratelimit-resource", "core".to_owned()),
    ];
    for (name, value) in defaults {
        if !response.headers().contains_key(name) {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_str(&value).unwrap());
        }
    }
}

/// The headers GitHub documents for every answer ("Rate limits for the REST API",
/// "Best practices": `retry-after`, conditional requests), checked on each one sent.
/// The OpenAPI description does not model these headers, so they are checked here.
fn check_headers(response: &Response) {
    let h = response.headers();
    let int = |name: &str| -> i64 {
        h.get(name)
            .unwrap_or_else(|| panic!("answer without {name}"))
            .to_str()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not an integer"))
    };
    let (limit, remaining, used) = (
        int("x-ratelimit-limit"),
        int("x-ratelimit-remaining"),
        int("x-ratelimit-used"),
    );
    assert!(remaining >= 0 && used >= 0 && limit >= remaining, "{h:?}");
    assert!(
        int("x-ratelimit-reset") > 1_600_000_000,
        "epoch seconds: {h:?}"
    );
    if h.contains_key("retry-after") {
        assert!(int("retry-after") >= 0);
    }
    if response.status() == StatusCode::NOT_MODIFIED {
        // The description's `not_modified` answer has no content; the ETag still comes.
        assert!(h.contains_key("etag"), "a 304 repeats the ETag");
        assert!(!h.contains_key("content-type"), "a 304 has no body");
    }
}

fn route(hub: &Hub, method: &Method, uri: &Uri, headers: &HeaderMap, body: String) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&*format!("Bearer {TOKEN}"))
    {
        return answer(401, "basic-error", &error_body("Bad credentials"), &[]);
    }
    assert_eq!(
        headers.get("accept").unwrap(),
        "application/vnd.github+json"
    );
    assert_eq!(headers.get("x-github-api-version").unwrap(), "2022-11-28");
    if let Some((status, h, schema, body)) = hub.fail_with.lock().unwrap().clone() {
        return answer(status, schema, &body, &h);
    }
    let path = uri.path();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let ["repos", o, r, ..] = parts.as_slice() {
        let gone = hub
            .unreadable
            .lock()
            .unwrap()
            .get(&format!("{o}/{r}"))
            .copied();
        // GitHub sends its rate-limit headers on error answers too; with requests left,
        // a 403 is about access, not the rate limit.
        let limits = [
            ("x-ratelimit-limit", "5000".to_owned()),
            ("x-ratelimit-remaining", "4990".to_owned()),
            (
                "x-ratelimit-reset",
                (Utc::now().timestamp() + 3600).to_string(),
            ),
        ];
        match gone {
            Some(404) => return answer(404, "basic-error", &error_body("Not Found"), &limits),
            Some(403) => {
                return answer(
                    403,
                    "basic-error",
                    &error_body("Resource not accessible by integration"),
                    &limits,
                )
            }
            _ => {}
        }
    }
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["orgs", "octo", "repos"]) => {
            hub.org_pages.fetch_add(1, Ordering::SeqCst);
            let repos = json!([repository("octo/app", 1), repository("octo/api", 2)]);
            cached(headers, "minimal-repository-list", &repos)
        }
        ("GET", ["repos", o, r, "actions", "runs"]) => {
            assert_eq!(uri.query(), Some("status=waiting&per_page=100"));
            let runs = hub
                .runs
                .get(&format!("{o}/{r}"))
                .cloned()
                .unwrap_or_default();
            // A run stays `waiting` while any of its environments is pending.
            let pending = hub.pending.lock().unwrap();
            let runs: Vec<Value> = runs
                .into_iter()
                .filter(|run| {
                    pending
                        .get(&run["id"].as_u64().unwrap())
                        .is_some_and(|p| !p.is_empty())
                })
                .collect();
            cached(
                headers,
                "workflow-run-list",
                &json!({"total_count": runs.len(), "workflow_runs": runs}),
            )
        }
        ("GET", ["repos", o, r, "actions", "runs", id]) => {
            let id: u64 = id.parse().unwrap();
            match hub
                .runs
                .get(&format!("{o}/{r}"))
                .and_then(|runs| runs.iter().find(|run| run["id"] == id))
            {
                Some(run) => cached(headers, "workflow-run", run),
                None => answer(404, "basic-error", &error_body("Not Found"), &[]),
            }
        }
        ("GET", ["repos", _, _, "actions", "runs", id, "pending_deployments"]) => {
            let id: u64 = id.parse().unwrap();
            let list = hub
                .pending
                .lock()
                .unwrap()
                .get(&id)
                .cloned()
                .unwrap_or_default();
            cached(headers, "pending-deployment-list", &Value::Array(list))
        }
        ("GET", ["repos", _, _, "actions", "runs", id, "approvals"]) => {
            let id: u64 = id.parse().unwrap();
            let list = hub
                .approvals
                .lock()
                .unwrap()
                .get(&id)
                .cloned()
                .unwrap_or_default();
            cached(headers, "environment-approvals-list", &Value::Array(list))
        }
        ("POST", ["repos", o, r, "actions", "runs", id, "pending_deployments"]) => {
            let id: u64 = id.parse().unwrap();
            let request: Value = serde_json::from_str(&body).unwrap();
            conforms("review-pending-deployments-request", &request);
            hub.posts.lock().unwrap().push((id, request.clone()));
            let envs: Vec<u64> = request["environment_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_u64().unwrap())
                .collect();
            let mut pending = hub.pending.lock().unwrap();
            let list = pending.entry(id).or_default();
            let mut matched = Vec::new();
            for env in &envs {
                if hub.refuse.contains(env) {
                    return answer(
                        422,
                        "validation-error-simple",
                        &json!({"message": "You are not a required reviewer for this environment",
                                "documentation_url": "https://docs.github.com/rest/actions/workflow-runs#review-pending-deployments-for-a-workflow-run"}),
                        &[],
                    );
                }
                let Some(i) = list.iter().position(|p| p["environment"]["id"] == *env) else {
                    return answer(
                        422,
                        "validation-error-simple",
                        &json!({"message": "No pending deployment requests to approve or reject",
                                "documentation_url": "https://docs.github.com/rest"}),
                        &[],
                    );
                };
                matched.push(list.remove(i));
            }
            let environments: Vec<Value> = matched
                .iter()
                .map(|p| {
                    let mut e = p["environment"].clone();
                    e["created_at"] = "2026-01-01T00:00:00Z".into();
                    e["updated_at"] = "2026-01-01T00:00:00Z".into();
                    e
                })
                .collect();
            hub.approvals
                .lock()
                .unwrap()
                .entry(id)
                .or_default()
                .push(json!({
                    "environments": environments, "state": request["state"],
                    "user": user(ME, 42), "comment": request["comment"]
                }));
            let deployments: Vec<Value> = matched
                .iter()
                .map(|p| {
                    json!({
                        "url": format!("https://api.github.com/repos/{o}/{r}/deployments/1"),
                        "id": 1, "node_id": "MDEwOkRlcGxveW1lbnQx",
                        "sha": format!("{:040x}", id), "ref": "main", "task": "deploy",
                        "payload": {}, "environment": p["environment"]["name"],
                        "description": null, "creator": user(ME, 42),
                        "created_at": "2026-11-25T09:05:00Z", "updated_at": "2026-11-25T09:05:00Z",
                        "statuses_url": "https://api.github.com/repos/x/deployments/1/statuses",
                        "repository_url": format!("https://api.github.com/repos/{o}/{r}")
                    })
                })
                .collect();
            answer(200, "deployment-list", &Value::Array(deployments), &[])
        }
        _ => answer(404, "basic-error", &error_body("Not Found"), &[]),
    }
}

async fn start_hub() -> (Shared, std::net::SocketAddr) {
    let mut runs = HashMap::new();
    runs.insert(
        "octo/app".to_owned(),
        vec![run("octo/app", RUN_A, 562, "Deploy", "main", "dana")],
    );
    runs.insert(
        "octo/api".to_owned(),
        vec![run(
            "octo/api",
            RUN_B,
            17,
            "Release API",
            "release/2",
            "bob",
        )],
    );
    let mut pending_map = HashMap::new();
    pending_map.insert(
        RUN_A,
        vec![
            pending(ENV_PROD, "production", 30, true),
            pending(ENV_STAGING, "staging", 0, true),
        ],
    );
    pending_map.insert(RUN_B, vec![pending(ENV_API, "production", 0, false)]);
    // Review history: QA passed on octo/app's run; octo/api's production was rejected
    // once (the run was re-run and waits again).
    let mut approvals = HashMap::new();
    approvals.insert(
        RUN_A,
        vec![approval(ENV_QA, "qa", "approved", "bob", 8, "qa green")],
    );
    approvals.insert(
        RUN_B,
        vec![approval(
            ENV_API,
            "production",
            "rejected",
            "carol",
            9,
            "flaky tests",
        )],
    );
    let hub = Arc::new(Hub {
        runs,
        pending: Mutex::new(pending_map),
        approvals: Mutex::new(approvals),
        refuse: vec![ENV_STAGING],
        ..Default::default()
    });
    let app = Router::new().fallback(handle).with_state(hub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (hub, addr)
}

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
