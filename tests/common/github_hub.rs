//! A loopback stand-in for GitHub's REST API (deployment reviews; GitHub cannot run
//! here). Every body it serves, every body it receives and every error it answers with
//! is first checked against the trimmed schemas in tests/fixtures/github/schema.json
//! (from github/rest-api-description, see the README there): each `required` property
//! present with the published JSON type, enums respected, request bodies without
//! unknown fields; every answer carries GitHub's rate-limit headers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::Utc;
use serde_json::{json, Value};
use sha2::Digest;

pub const TOKEN: &str = "ghp_test_0123456789";
pub const ME: &str = "ana";

// ---- A small checker for the trimmed OpenAPI schemas ----

pub fn schemas() -> &'static Value {
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

pub fn type_ok(ty: &str, v: &Value) -> bool {
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
pub fn problems(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
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

pub fn conforms(name: &str, v: &Value) {
    let mut out = Vec::new();
    problems(&json!({ "$ref": name }), v, name, &mut out);
    assert!(
        out.is_empty(),
        "does not match GitHub's `{name}`: {out:#?}\n{v:#}"
    );
}

// ---- Fixtures, built to the published schemas ----

pub fn user(login: &str, id: u64) -> Value {
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

pub fn team(slug: &str, id: u64) -> Value {
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

pub fn repository(full: &str, id: u64) -> Value {
    let (owner, name) = full.split_once('/').unwrap();
    json!({
        "id": id, "node_id": format!("MDEwOlJlcG9zaXRvcnk{id}"), "name": name,
        "full_name": full, "owner": user(owner, 9000 + id), "private": true,
        "html_url": format!("https://github.com/{full}"),
        "url": format!("https://api.github.com/repos/{full}"), "archived": false
    })
}

pub fn run(repo: &str, id: u64, number: u64, workflow: &str, branch: &str, actor: &str) -> Value {
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

pub fn pending(env_id: u64, env: &str, wait: i64, can_approve: bool) -> Value {
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

pub const RUN_A: u64 = 30433642; // octo/app: production (ours) + staging (not a reviewer)
pub const RUN_B: u64 = 30433700; // octo/api: production
pub const ENV_PROD: u64 = 161088068;
pub const ENV_STAGING: u64 = 161088069;
pub const ENV_API: u64 = 161088070;
pub const ENV_QA: u64 = 161088071; // octo/app's run: approved before the run reached production

/// One entry of a run's approvals log (`environment-approvals`).
pub fn approval(env_id: u64, env: &str, state: &str, login: &str, id: u64, comment: &str) -> Value {
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

pub fn id_a() -> String {
    format!("octo/app/runs/{RUN_A}/env/{ENV_PROD}")
}

// ---- The stand-in ----

#[derive(Default)]
pub struct Hub {
    pub runs: HashMap<String, Vec<Value>>,
    pub pending: Mutex<HashMap<u64, Vec<Value>>>,
    pub approvals: Mutex<HashMap<u64, Vec<Value>>>,
    /// Environments where GitHub refuses ME with 422 although it lists them approvable.
    pub refuse: Vec<u64>,
    pub posts: Mutex<Vec<(u64, Value)>>,
    /// (path and query, If-None-Match sent, status answered).
    pub seen: Mutex<Vec<(String, Option<String>, u16)>>,
    pub in_flight: AtomicUsize,
    pub org_pages: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub lose_next_answer: Mutex<Option<Arc<AtomicBool>>>,
    /// Answer every request with this (status, headers, schema name, body) once set.
    pub fail_with: Mutex<Option<Failure>>,
    /// Repositories answering 404 (gone) or 403 (not accessible to the token).
    pub unreadable: Mutex<HashMap<String, u16>>,
}

pub type Shared = Arc<Hub>;

/// (status, headers, schema name, body) answered to every request.
pub type Failure = (u16, Vec<(&'static str, String)>, &'static str, Value);

pub fn error_body(message: &str) -> Value {
    json!({"message": message, "documentation_url": "https://docs.github.com/rest"})
}

pub fn answer(status: u16, schema: &str, body: &Value, headers: &[(&str, String)]) -> Response {
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
pub fn cached(req_headers: &HeaderMap, schema: &str, body: &Value) -> Response {
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

pub async fn handle(
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
pub fn with_rate_limit_headers(response: &mut Response) {
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
pub fn check_headers(response: &Response) {
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

pub fn route(hub: &Hub, method: &Method, uri: &Uri, headers: &HeaderMap, body: String) -> Response {
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

pub async fn start_hub() -> (Shared, std::net::SocketAddr) {
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

/// The action ids the `github` backend should list now: one per waiting environment of
/// every waiting run (`owner/name/runs/<run>/env/<environment>`).
pub fn waiting_ids(hub: &Hub) -> Vec<String> {
    let pending = hub.pending.lock().unwrap();
    let mut ids = Vec::new();
    for (repo, runs) in &hub.runs {
        for run in runs {
            let run_id = run["id"].as_u64().unwrap();
            for p in pending.get(&run_id).into_iter().flatten() {
                let env_id = p["environment"]["id"].as_u64().unwrap();
                ids.push(format!("{repo}/runs/{run_id}/env/{env_id}"));
            }
        }
    }
    ids.sort();
    ids
}

pub fn waiting_environments(hub: &Hub) -> usize {
    waiting_ids(hub).len()
}

/// A new environment of octo/app's run starts waiting (as when a job reaches it).
pub fn add_waiting_environment(hub: &Hub, name: &str) {
    let env_id = 161_089_000 + hub.pending.lock().unwrap().values().flatten().count() as u64;
    hub.pending
        .lock()
        .unwrap()
        .entry(RUN_A)
        .or_default()
        .push(pending(env_id, name, 0, true));
}
