//! GitHub deployment reviews (kind `github`). A job that targets an environment with
//! required reviewers leaves its workflow run `waiting`; each waiting environment of such
//! a run becomes one action here (`owner/name/runs/<run_id>/env/<environment_id>`).
//! GitHub has no event stream for this and no idempotency key: runs are polled with
//! ETags (a 304 costs no rate limit), and a decision re-reads the run's pending
//! deployments (and, when ours is gone, the run's approvals log) before it POSTs.
//!
//! API facts from github/rest-api-description, descriptions/api.github.com/
//! api.github.com.json: `GET /repos/{owner}/{repo}/actions/runs?status=waiting`
//! (`workflow-run`), `GET|POST /repos/{owner}/{repo}/actions/runs/{run_id}/
//! pending_deployments` (`pending-deployment`; body `environment_ids`, `state`, `comment`,
//! all required), `GET /repos/{owner}/{repo}/actions/runs/{run_id}/approvals`
//! (`environment-approvals`), `GET /orgs/{org}/repos`. The trimmed schemas the tests
//! check against are in tests/fixtures/github/.
//!
//! One repository that is gone (404) or not readable (403 without a rate limit) does not
//! stop the others: its runs are left out, the rest is listed, and the failure is handed
//! to the engine through [`Backend::take_partial_failure`], which reports it as this
//! backend's error.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, ACCEPT, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use serde::Deserialize;

use super::http::{self, Answer};
use super::{
    Backend, BackendError, BuildError, Capabilities, DecisionDelivery, DeliveryOutcome, Limits,
    ListOutcome, SyncCursor,
};
use crate::config::BackendConfig;
use crate::model::{
    ActionKey, ActionKind, ActionSnapshot, ActionStatus, Decision, Detail, EventSource,
    PendingAction, RemoteAction, Review, ReviewVerdict, TimelineEvent, TimelineKind, Verdict,
};

pub const KIND: &str = "github";

const DEFAULT_API: &str = "https://api.github.com";
const OPTIONS: &[&str] = &["repos", "org"];
const API_VERSION: &str = "2022-11-28";
/// How long an org's repository list is reused before it is listed again.
const ORG_REPOS_TTL: Duration = Duration::from_secs(600);
/// Least time between two writes (GitHub's guidance for content-creating requests).
const POST_SPACING: Duration = Duration::from_secs(1);
/// ETag cache entries kept before the cache starts over.
const ETAG_CACHE_MAX: usize = 512;

pub struct GitHub {
    name: String,
    base: String,
    token: Option<String>,
    limits: Limits,
    client: reqwest::Client,
    repos: Vec<String>,
    org: Option<String>,
    /// One request at a time per backend (and so per token); holds the ETag cache.
    conn: tokio::sync::Mutex<Conn>,
    org_repos: std::sync::Mutex<Option<(Instant, Vec<String>)>>,
    /// Repositories the last list had to leave out, as the error to report.
    partial: std::sync::Mutex<Option<BackendError>>,
}

#[derive(Default)]
struct Conn {
    /// URL → (ETag, body last served with it).
    etags: HashMap<String, (String, Bytes)>,
    last_post: Option<Instant>,
}

impl GitHub {
    pub fn new(
        config: &BackendConfig,
        token: Option<String>,
        limits: Limits,
    ) -> Result<Self, BuildError> {
        let invalid = |detail: String| BuildError::Invalid {
            name: config.name.clone(),
            detail,
        };
        let url = if config.url.trim().is_empty() {
            DEFAULT_API
        } else {
            config.url.trim()
        };
        let base = http::base_url(&config.name, url)?;
        http::known_options(&config.name, KIND, &config.options, OPTIONS)?;
        let mut repos = Vec::new();
        match config.options.get("repos") {
            None => {}
            Some(toml::Value::Array(items)) => {
                for item in items {
                    let Some(repo) = item.as_str() else {
                        return Err(invalid("option `repos` must list strings".into()));
                    };
                    if !valid_repo(repo) {
                        return Err(invalid(format!(
                            "repository `{repo}` must look like `owner/name`"
                        )));
                    }
                    repos.push(repo.to_owned());
                }
            }
            Some(_) => return Err(invalid("option `repos` must be a list of strings".into())),
        }
        let org = match config.options.get("org") {
            None => None,
            Some(toml::Value::String(s)) if valid_name(s) => Some(s.clone()),
            Some(_) => return Err(invalid("option `org` must be an organisation name".into())),
        };
        if repos.is_empty() && org.is_none() {
            return Err(invalid(
                "kind github needs `repos = [\"owner/name\", …]` or `org = \"name\"` in options"
                    .into(),
            ));
        }
        let client = http::client(&limits).map_err(invalid)?;
        Ok(Self {
            name: config.name.clone(),
            base,
            token,
            limits,
            client,
            repos,
            org,
            conn: tokio::sync::Mutex::new(Conn::default()),
            org_repos: std::sync::Mutex::new(None),
            partial: std::sync::Mutex::new(None),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self
            .client
            .request(method, url)
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION);
        http::bearer(request, self.token.as_deref())
    }

    /// A GET through the ETag cache: a 304 answers with the body last seen.
    async fn get_bytes(&self, url: &str) -> Result<Bytes, BackendError> {
        let mut conn = self.conn.lock().await;
        let mut request = self.request(reqwest::Method::GET, url);
        if let Some((etag, _)) = conn.etags.get(url) {
            request = request.header(IF_NONE_MATCH, etag.clone());
        }
        let answer = http::send(url, &self.limits, request).await?;
        if answer.status == StatusCode::NOT_MODIFIED {
            if let Some((_, body)) = conn.etags.get(url) {
                return Ok(body.clone());
            }
            return Err(BackendError::Malformed {
                url: url.to_owned(),
                field: "(status)".into(),
                detail: "304 Not Modified to a request without If-None-Match".into(),
            });
        }
        if !answer.status.is_success() {
            return Err(gh_error(url, &answer, Utc::now()));
        }
        if let Some(etag) = answer.headers.get(ETAG).and_then(|v| v.to_str().ok()) {
            if conn.etags.len() >= ETAG_CACHE_MAX {
                conn.etags.clear();
            }
            conn.etags
                .insert(url.to_owned(), (etag.to_owned(), answer.body.clone()));
        }
        Ok(answer.body)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, BackendError> {
        let body = self.get_bytes(url).await?;
        http::decode(url, &body)
    }

    /// Every repository to watch: the configured ones and the org's (cached a while).
    async fn all_repos(&self) -> Result<Vec<String>, BackendError> {
        let mut repos = self.repos.clone();
        if let Some(org) = &self.org {
            let cached = self
                .org_repos
                .lock()
                .expect("github org cache")
                .as_ref()
                .filter(|(at, _)| at.elapsed() < ORG_REPOS_TTL)
                .map(|(_, r)| r.clone());
            let listed = match cached {
                Some(r) => r,
                None => {
                    let mut listed = Vec::new();
                    for page in 1..=50 {
                        let url = self.url(&format!("/orgs/{org}/repos?per_page=100&page={page}"));
                        let batch: Vec<RepoRef> = self.get_json(&url).await?;
                        let n = batch.len();
                        listed.extend(
                            batch
                                .into_iter()
                                .filter(|r| !r.archived)
                                .map(|r| r.full_name),
                        );
                        if n < 100 {
                            break;
                        }
                    }
                    *self.org_repos.lock().expect("github org cache") =
                        Some((Instant::now(), listed.clone()));
                    listed
                }
            };
            for r in listed {
                if !repos.contains(&r) {
                    repos.push(r);
                }
            }
        }
        Ok(repos)
    }

    async fn waiting_runs(&self, repo: &str) -> Result<Vec<Run>, BackendError> {
        let url = self.url(&format!(
            "/repos/{repo}/actions/runs?status=waiting&per_page=100"
        ));
        let list: RunList = self.get_json(&url).await?;
        Ok(list.workflow_runs)
    }

    async fn run(&self, repo: &str, run_id: u64) -> Result<Run, BackendError> {
        self.get_json(&self.url(&format!("/repos/{repo}/actions/runs/{run_id}")))
            .await
    }

    async fn pending(&self, repo: &str, run_id: u64) -> Result<Vec<Pending>, BackendError> {
        self.get_json(&self.url(&format!(
            "/repos/{repo}/actions/runs/{run_id}/pending_deployments"
        )))
        .await
    }

    async fn approvals(&self, repo: &str, run_id: u64) -> Result<Vec<Approval>, BackendError> {
        self.get_json(&self.url(&format!("/repos/{repo}/actions/runs/{run_id}/approvals")))
            .await
    }

    /// One repository's waiting deployments, each with its run's review history.
    async fn repo_pending(
        &self,
        repo: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<RemoteAction>, BackendError> {
        let mut actions = Vec::new();
        for run in self.waiting_runs(repo).await? {
            let pending = self.pending(repo, run.id).await?;
            if pending.iter().all(|p| p.environment.id.is_none()) {
                continue;
            }
            // Reviews already given on this run (other environments, earlier attempts).
            let approvals = self.approvals(repo, run.id).await?;
            for p in &pending {
                if p.environment.id.is_none() {
                    continue;
                }
                actions.push(to_remote(
                    &self.name,
                    repo,
                    &run,
                    p,
                    ActionStatus::Pending,
                    &approvals,
                    now,
                ));
            }
        }
        Ok(actions)
    }
}

/// A repository GitHub says is gone (404) or closed to this token (403 that is not a
/// rate limit): leave it out rather than fail every other repository.
fn repo_unreadable(e: &BackendError) -> bool {
    matches!(
        e,
        BackendError::NotFound(_) | BackendError::Http { status: 403, .. }
    )
}

/// Why repositories were left out, as one error for the backend's status.
fn partial_error(base: &str, failed: &[(String, BackendError)], total: usize) -> BackendError {
    let status = match &failed[0].1 {
        BackendError::Http { status, .. } => *status,
        _ => 404,
    };
    let each: Vec<String> = failed
        .iter()
        .map(|(repo, e)| match e {
            BackendError::NotFound(_) => format!("{repo} (404: gone or not visible to the token)"),
            BackendError::Http {
                status, message, ..
            } => format!("{repo} ({status}: {message})"),
            other => format!("{repo} ({other})"),
        })
        .collect();
    BackendError::Http {
        url: base.to_owned(),
        status,
        message: format!(
            "{} of {total} repositories left out, the others are listed: {}",
            failed.len(),
            each.join("; ")
        ),
    }
}

#[async_trait]
impl Backend for GitHub {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list: true,
            fetch: true,
            decide: true,
            subscribe: false,
        }
    }

    async fn list_pending(&self, _cursor: &SyncCursor) -> Result<ListOutcome, BackendError> {
        let now = Utc::now();
        let mut actions = Vec::new();
        let repos = self.all_repos().await?;
        let mut failed = Vec::new();
        for repo in &repos {
            match self.repo_pending(repo, now).await {
                Ok(mut listed) => actions.append(&mut listed),
                Err(e) if repo_unreadable(&e) => {
                    tracing::warn!(backend = %self.name, "repository {repo} left out: {e}");
                    failed.push((repo.clone(), e));
                }
                Err(e) => return Err(e),
            }
        }
        *self.partial.lock().unwrap_or_else(|p| p.into_inner()) =
            (!failed.is_empty()).then(|| partial_error(&self.base, &failed, repos.len()));
        Ok(ListOutcome::Listed {
            actions,
            etag: None,
            cursor: None,
        })
    }

    fn take_partial_failure(&self) -> Option<BackendError> {
        self.partial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    async fn fetch(&self, external_id: &str) -> Result<RemoteAction, BackendError> {
        let id = ExternalId::parse(external_id)?;
        let run = match self.run(&id.repo, id.run_id).await {
            // The repository closed to us: as far as we can know, the request is gone.
            Err(BackendError::Http {
                status: 403,
                message,
                ..
            }) => {
                return Err(BackendError::NotFound(format!(
                    "{}: repository no longer readable: {message}",
                    id.repo
                )))
            }
            other => other?,
        };
        let now = Utc::now();
        if let Some(p) = self
            .pending(&id.repo, id.run_id)
            .await?
            .into_iter()
            .find(|p| p.environment.id == Some(id.env_id))
        {
            let approvals = self.approvals(&id.repo, id.run_id).await?;
            return Ok(to_remote(
                &self.name,
                &id.repo,
                &run,
                &p,
                ActionStatus::Pending,
                &approvals,
                now,
            ));
        }
        // No longer waiting: the approvals log says how it ended.
        let approvals = self.approvals(&id.repo, id.run_id).await?;
        let mine: Vec<&Approval> = approvals.iter().filter(|a| a.covers(id.env_id)).collect();
        let status = match mine.last().map(|a| a.state.as_str()) {
            Some("approved") => ActionStatus::Approved,
            Some("rejected") => ActionStatus::Denied,
            _ if run.status.as_deref() == Some("completed") => ActionStatus::Cancelled,
            _ => ActionStatus::Executed,
        };
        let env_name = mine
            .iter()
            .flat_map(|a| &a.environments)
            .find(|e| e.id == Some(id.env_id))
            .and_then(|e| e.name.clone());
        let p = Pending {
            environment: Environment {
                id: Some(id.env_id),
                name: env_name,
            },
            wait_timer: 0,
            wait_timer_started_at: None,
            current_user_can_approve: false,
            reviewers: Vec::new(),
        };
        Ok(to_remote(
            &self.name, &id.repo, &run, &p, status, &approvals, now,
        ))
    }

    async fn decide(&self, delivery: &DecisionDelivery) -> Result<DeliveryOutcome, BackendError> {
        let d = &delivery.decision;
        let id = ExternalId::parse(&d.action.external_id)?;
        let state = match d.verdict {
            Verdict::Approve => "approved",
            Verdict::Deny => "rejected",
            // Deployment reviews have no options; the engine refuses `choose` before this.
            Verdict::Choose => return Ok(super::hoop::choose_refused()),
        };
        let proof = crate::audit::proof_reference(d);
        // No idempotency key at GitHub: look before writing.
        let pending = self.pending(&id.repo, id.run_id).await?;
        let Some(ours) = pending.iter().find(|p| p.environment.id == Some(id.env_id)) else {
            let approvals = self.approvals(&id.repo, id.run_id).await?;
            let recorded = approvals
                .iter()
                .any(|a| a.covers(id.env_id) && a.state == state && a.comment.contains(&proof));
            if recorded {
                return Ok(DeliveryOutcome::Delivered { action: None });
            }
            let status = match approvals
                .iter()
                .rfind(|a| a.covers(id.env_id))
                .map(|a| a.state.as_str())
            {
                Some("approved") => ActionStatus::Approved,
                Some("rejected") => ActionStatus::Denied,
                _ => ActionStatus::Cancelled,
            };
            return Ok(DeliveryOutcome::NotPending {
                status: status.as_str().to_owned(),
            });
        };
        if !ours.current_user_can_approve {
            return Ok(DeliveryOutcome::Rejected {
                reason: "you cannot approve this environment".into(),
            });
        }
        let url = self.url(&format!(
            "/repos/{}/actions/runs/{}/pending_deployments",
            id.repo, id.run_id
        ));
        let body = serde_json::json!({
            "environment_ids": [id.env_id],
            "state": state,
            "comment": comment(d),
        });
        let answer = {
            let mut conn = self.conn.lock().await;
            if let Some(last) = conn.last_post {
                let since = last.elapsed();
                if since < POST_SPACING {
                    tokio::time::sleep(POST_SPACING - since).await;
                }
            }
            let request = self.request(reqwest::Method::POST, &url).json(&body);
            let answer = http::send(&url, &self.limits, request).await;
            conn.last_post = Some(Instant::now());
            answer?
        };
        if answer.status.is_success() {
            return Ok(DeliveryOutcome::Delivered { action: None });
        }
        let error = gh_error(&url, &answer, Utc::now());
        match (answer.status, &error) {
            (_, BackendError::RateLimited { .. } | BackendError::Unauthorized { .. }) => Err(error),
            (StatusCode::UNPROCESSABLE_ENTITY | StatusCode::FORBIDDEN, _) => {
                Ok(DeliveryOutcome::Rejected {
                    reason: format!("GitHub refused: {}", gh_message(&answer.body)),
                })
            }
            _ => Err(error),
        }
    }
}

/// The comment sent with a review: the reason, then the proof reference.
fn comment(d: &Decision) -> String {
    let proof = crate::audit::proof_reference(d);
    let reason = d.reason.trim();
    if reason.is_empty() {
        proof
    } else {
        format!("{reason} {proof}")
    }
}

/// GitHub's answers mapped to ours: rate limits (403/429 with `retry-after` or an empty
/// `x-ratelimit-remaining`) wait as long as GitHub says.
fn gh_error(url: &str, answer: &Answer, now: DateTime<Utc>) -> BackendError {
    let status = answer.status;
    if status == StatusCode::UNAUTHORIZED {
        return BackendError::Unauthorized {
            url: url.to_owned(),
            status: status.as_u16(),
        };
    }
    if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
        if let Some(wait) = rate_limit_wait(&answer.headers, now) {
            return BackendError::RateLimited {
                url: url.to_owned(),
                retry_after: wait,
            };
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return BackendError::RateLimited {
                url: url.to_owned(),
                retry_after: Duration::from_secs(60),
            };
        }
    }
    http::status_error(url, answer, gh_message(&answer.body))
}

/// `retry-after` first; else, when `x-ratelimit-remaining` is 0, until `x-ratelimit-reset`.
fn rate_limit_wait(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    if let Some(wait) = http::retry_after(headers) {
        return Some(wait);
    }
    let header = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<i64>().ok();
    if header("x-ratelimit-remaining") != Some(0) {
        return None;
    }
    let wait = match header("x-ratelimit-reset") {
        Some(reset) => (reset - now.timestamp()).max(1) as u64,
        None => 60,
    };
    Some(Duration::from_secs(wait))
}

/// GitHub's error body is `{"message": "…", "documentation_url": "…"}` (`basic-error`).
fn gh_message(body: &[u8]) -> String {
    http::message_field(body, "message")
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn valid_repo(s: &str) -> bool {
    matches!(s.split_once('/'), Some((o, r)) if valid_name(o) && valid_name(r))
}

/// `owner/name/runs/<run_id>/env/<environment_id>`.
#[derive(Debug, PartialEq, Eq)]
struct ExternalId {
    repo: String,
    run_id: u64,
    env_id: u64,
}

impl ExternalId {
    fn format(repo: &str, run_id: u64, env_id: u64) -> String {
        format!("{repo}/runs/{run_id}/env/{env_id}")
    }

    fn parse(id: &str) -> Result<Self, BackendError> {
        let bad = || BackendError::NotFound(format!("`{id}` is not a GitHub deployment id"));
        let parts: Vec<&str> = id.split('/').collect();
        let [owner, name, "runs", run, "env", env] = parts.as_slice() else {
            return Err(bad());
        };
        let repo = format!("{owner}/{name}");
        if !valid_repo(&repo) {
            return Err(bad());
        }
        Ok(Self {
            repo,
            run_id: run.parse().map_err(|_| bad())?,
            env_id: env.parse().map_err(|_| bad())?,
        })
    }
}

// ---- Wire types (decoded leniently; the strict checks live in tests/backend_github.rs) ----

#[derive(Debug, Deserialize)]
struct RepoRef {
    full_name: String,
    #[serde(default)]
    archived: bool,
}

#[derive(Debug, Deserialize)]
struct RunList {
    workflow_runs: Vec<Run>,
}

/// `workflow-run`.
#[derive(Debug, Clone, Deserialize)]
struct Run {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    display_title: Option<String>,
    #[serde(default)]
    head_branch: Option<String>,
    #[serde(default)]
    head_sha: String,
    #[serde(default)]
    run_number: u64,
    #[serde(default)]
    event: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    status: Option<String>,
    html_url: String,
    created_at: DateTime<Utc>,
    #[serde(default)]
    actor: Option<User>,
    #[serde(default)]
    triggering_actor: Option<User>,
}

#[derive(Debug, Clone, Deserialize)]
struct User {
    login: String,
}

/// `pending-deployment`.
#[derive(Debug, Clone, Deserialize)]
struct Pending {
    environment: Environment,
    #[serde(default)]
    wait_timer: i64,
    #[serde(default)]
    wait_timer_started_at: Option<DateTime<Utc>>,
    current_user_can_approve: bool,
    #[serde(default)]
    reviewers: Vec<Reviewer>,
}

#[derive(Debug, Clone, Deserialize)]
struct Environment {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Reviewer {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    reviewer: Option<serde_json::Value>,
}

impl Reviewer {
    fn label(&self) -> String {
        let r = self.reviewer.as_ref();
        let field = |k: &str| r.and_then(|v| v.get(k)).and_then(|v| v.as_str());
        match self.kind.as_deref() {
            Some("Team") => format!("team {}", field("slug").or(field("name")).unwrap_or("?")),
            _ => format!("user {}", field("login").unwrap_or("?")),
        }
    }
}

/// `environment-approvals`.
#[derive(Debug, Clone, Deserialize)]
struct Approval {
    environments: Vec<Environment>,
    state: String,
    user: User,
    #[serde(default)]
    comment: String,
}

impl Approval {
    fn covers(&self, env_id: u64) -> bool {
        self.environments.iter().any(|e| e.id == Some(env_id))
    }
}

fn minutes(m: i64) -> String {
    match m {
        m if m <= 0 => "none".into(),
        m if m % 60 == 0 => format!("{}h", m / 60),
        m if m > 60 => format!("{}h {}m", m / 60, m % 60),
        m => format!("{m}m"),
    }
}

/// One environment of a run as an action. `approvals` is the run's whole approvals log:
/// the reviews of this environment go into the snapshot, all of them into the timeline.
fn to_remote(
    backend: &str,
    repo: &str,
    run: &Run,
    p: &Pending,
    status: ActionStatus,
    approvals: &[Approval],
    now: DateTime<Utc>,
) -> RemoteAction {
    let env_id = p.environment.id.unwrap_or_default();
    let env = p
        .environment
        .name
        .clone()
        .unwrap_or_else(|| format!("environment {env_id}"));
    let workflow = run
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| run.path.clone());
    let requester = run
        .triggering_actor
        .as_ref()
        .or(run.actor.as_ref())
        .map_or_else(|| "unknown".to_owned(), |u| u.login.clone());
    let mut reviewers: Vec<String> = p.reviewers.iter().map(Reviewer::label).collect();
    reviewers.sort_unstable();

    let mut details = Vec::new();
    let mut add = |key: &str, value: String| {
        details.push(Detail {
            key: key.into(),
            value,
        })
    };
    add("workflow", workflow.clone());
    if let Some(branch) = &run.head_branch {
        add("branch", branch.clone());
    }
    add("commit", run.head_sha.clone());
    add("run number", run.run_number.to_string());
    if !run.event.is_empty() {
        add("event", run.event.clone());
    }
    add("environment", env.clone());
    add("wait timer", minutes(p.wait_timer));
    if !reviewers.is_empty() {
        add("reviewers", reviewers.join(", "));
    }
    add(
        "current user can approve",
        if p.current_user_can_approve {
            "yes"
        } else {
            "no"
        }
        .into(),
    );

    // GitHub's approvals log has no times; a review is placed at the run's creation (the
    // only time GitHub gives that is surely before it), which also keeps the hash stable.
    let reviews: Vec<Review> = approvals
        .iter()
        .filter(|a| a.covers(env_id))
        .filter_map(|a| {
            let verdict = match a.state.as_str() {
                "approved" => ReviewVerdict::Approved,
                "rejected" => ReviewVerdict::Denied,
                _ => return None,
            };
            Some(Review {
                reviewer: a.user.login.clone(),
                verdict,
                at: run.created_at,
                comment: (!a.comment.is_empty()).then(|| a.comment.clone()),
            })
        })
        .collect();

    let snapshot = ActionSnapshot {
        kind: ActionKind::Deployment,
        title: format!("Deploy {workflow} to {env}"),
        summary: run.display_title.clone().unwrap_or_default(),
        requester: requester.clone(),
        requested_at: run.created_at,
        expires_at: None,
        resource: format!("{repo} ({env})"),
        details,
        approvals_required: 1,
        reviews,
        status,
        web_url: Some(run.html_url.clone()),
        form: None,
    };
    let external_id = ExternalId::format(repo, run.id, env_id);
    let timeline = timeline(&Facts {
        id: &external_id,
        run,
        p,
        env: &env,
        requester: &requester,
        workflow: &workflow,
        approvals,
        now,
    });
    RemoteAction {
        action: PendingAction::new(ActionKey::new(backend, external_id), snapshot),
        timeline,
    }
}

/// What a backend timeline is built from.
struct Facts<'a> {
    id: &'a str,
    run: &'a Run,
    p: &'a Pending,
    env: &'a str,
    requester: &'a str,
    workflow: &'a str,
    approvals: &'a [Approval],
    now: DateTime<Utc>,
}

/// Backend timeline: the run's creation, the environment's wait (and its timer's end once
/// passed), and every review in the run's approvals log, whichever environments it covers.
fn timeline(f: &Facts<'_>) -> Vec<TimelineEvent> {
    let Facts {
        id,
        run,
        p,
        env,
        requester,
        workflow,
        approvals,
        now,
    } = *f;
    let event = |at, kind, actor: Option<String>, text: String, suffix: String| TimelineEvent {
        at,
        source: EventSource::Backend,
        kind,
        actor,
        text,
        external_id: Some(format!("github:{id}:{suffix}")),
    };
    let mut out = vec![event(
        run.created_at,
        TimelineKind::Requested,
        Some(requester.to_owned()),
        format!("Run #{} of {workflow} created", run.run_number),
        "created".into(),
    )];
    if let Some(at) = p.wait_timer_started_at {
        let text = if p.wait_timer > 0 {
            format!("Wait timer of {} started for {env}", minutes(p.wait_timer))
        } else {
            format!("Waiting for review to deploy to {env}")
        };
        out.push(event(
            at,
            TimelineKind::ReviewerAssigned,
            None,
            text,
            "wait_timer".into(),
        ));
        let end = at + chrono::Duration::minutes(p.wait_timer.max(0));
        if p.wait_timer > 0 && end <= now {
            out.push(event(
                end,
                TimelineKind::Updated,
                None,
                format!("Wait timer of {} ended for {env}", minutes(p.wait_timer)),
                "wait_timer_end".into(),
            ));
        }
    }
    // The log only grows, so an entry's position is a stable id for it.
    for (i, a) in approvals.iter().enumerate() {
        let (kind, verb) = match a.state.as_str() {
            "approved" => (TimelineKind::Approved, "approved"),
            "rejected" => (TimelineKind::Denied, "rejected"),
            _ => continue,
        };
        // A verdict on another environment of the run is context, not this one's outcome.
        let kind = match p.environment.id {
            Some(env_id) if a.covers(env_id) => kind,
            _ => TimelineKind::Reviewed,
        };
        let mut names: Vec<String> = a
            .environments
            .iter()
            .map(|e| {
                e.name
                    .clone()
                    .unwrap_or_else(|| format!("environment {}", e.id.unwrap_or_default()))
            })
            .collect();
        names.sort_unstable();
        let comment = a.comment.trim();
        let text = format!(
            "{} {verb} {}{}",
            a.user.login,
            if names.is_empty() {
                "the deployment".to_owned()
            } else {
                names.join(", ")
            },
            if comment.is_empty() {
                String::new()
            } else {
                format!(": {comment}")
            }
        );
        out.push(event(
            run.created_at,
            kind,
            Some(a.user.login.clone()),
            text,
            format!("approval:{i}"),
        ));
    }
    out
}

/// Fuzzing entry (see [`super::fuzzing`]): `runs \n pending deployments`, then
/// `approvals` after a second newline, through decoding and the mapping to actions.
pub(super) fn fuzz_parse(data: &[u8]) {
    let (runs, rest) = super::fuzzing::split(data);
    let (pending, approvals) = super::fuzzing::split(rest);
    let pending: Vec<Pending> = serde_json::from_slice(pending).unwrap_or_default();
    let approvals: Vec<Approval> = serde_json::from_slice(approvals).unwrap_or_default();
    if let Ok(list) = http::decode::<RunList>("http://fuzz", runs) {
        for run in &list.workflow_runs {
            for p in &pending {
                let _ = to_remote(
                    "fuzz",
                    "o/r",
                    run,
                    p,
                    ActionStatus::Pending,
                    &approvals,
                    Utc::now(),
                );
            }
        }
    }
    let _ = gh_message(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Run {
        serde_json::from_value(serde_json::json!({
            "id": 30433642, "name": "Deploy", "display_title": "Release v1.2",
            "head_branch": "main", "head_sha": "acb5820ced9479c074f688cc328bf03f341a511d",
            "run_number": 562, "event": "push", "path": ".github/workflows/deploy.yml",
            "status": "waiting", "html_url": "https://github.com/octo/app/actions/runs/30433642",
            "created_at": "2026-11-25T09:00:00Z",
            "actor": {"login": "octocat"}, "triggering_actor": {"login": "hubot"}
        }))
        .unwrap()
    }

    fn pending() -> Pending {
        serde_json::from_value(serde_json::json!({
            "environment": {"id": 161088068, "name": "production",
                            "html_url": "https://github.com/octo/app/deployments/activity_log?environments_filter=production"},
            "wait_timer": 30, "wait_timer_started_at": "2026-11-25T09:01:00Z",
            "current_user_can_approve": true,
            "reviewers": [
                {"type": "User", "reviewer": {"login": "octocat", "id": 1}},
                {"type": "Team", "reviewer": {"slug": "sre", "name": "SRE", "id": 2}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn a_pending_deployment_maps_to_one_action() {
        let r = to_remote(
            "gh",
            "octo/app",
            &run(),
            &pending(),
            ActionStatus::Pending,
            &[],
            now(),
        );
        let a = &r.action;
        assert_eq!(a.key.external_id, "octo/app/runs/30433642/env/161088068");
        let s = &a.snapshot;
        assert_eq!(s.kind, ActionKind::Deployment);
        assert_eq!(s.title, "Deploy Deploy to production");
        assert_eq!(s.requester, "hubot");
        assert_eq!(s.resource, "octo/app (production)");
        assert_eq!(s.approvals_required, 1);
        assert_eq!(
            s.web_url.as_deref(),
            Some("https://github.com/octo/app/actions/runs/30433642")
        );
        let get = |k: &str| s.details.iter().find(|d| d.key == k).unwrap().value.clone();
        assert_eq!(get("reviewers"), "team sre, user octocat");
        assert_eq!(get("wait timer"), "30m");
        assert_eq!(get("branch"), "main");
        assert_eq!(get("run number"), "562");
        assert_eq!(get("current user can approve"), "yes");
        let kinds: Vec<_> = r.timeline.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [TimelineKind::Requested, TimelineKind::ReviewerAssigned]
        );
        assert_eq!(
            r.timeline[1].text,
            "Wait timer of 30m started for production"
        );
    }

    /// Before the 30-minute wait timer of `pending()` ends.
    fn now() -> DateTime<Utc> {
        "2026-11-25T09:10:00Z".parse().unwrap()
    }

    fn approval(env: u64, name: &str, state: &str, login: &str, comment: &str) -> Approval {
        serde_json::from_value(serde_json::json!({
            "environments": [{"id": env, "name": name}], "state": state,
            "user": {"login": login}, "comment": comment
        }))
        .unwrap()
    }

    #[test]
    fn the_runs_reviews_and_wait_timer_become_history() {
        let log = [
            approval(7, "qa", "approved", "bob", "qa green"),
            approval(161088068, "production", "rejected", "carol", "flaky"),
            approval(161088068, "production", "pending", "dave", ""),
        ];
        let later: DateTime<Utc> = "2026-11-25T10:00:00Z".parse().unwrap();
        let r = to_remote(
            "gh",
            "octo/app",
            &run(),
            &pending(),
            ActionStatus::Pending,
            &log,
            later,
        );
        let reviews = &r.action.snapshot.reviews;
        assert_eq!(
            reviews.len(),
            1,
            "only this environment's verdicts: {reviews:?}"
        );
        assert_eq!(reviews[0].reviewer, "carol");
        assert_eq!(reviews[0].verdict, ReviewVerdict::Denied);
        assert_eq!(reviews[0].comment.as_deref(), Some("flaky"));
        let lines: Vec<(TimelineKind, &str, &str)> = r
            .timeline
            .iter()
            .map(|e| (e.kind, e.text.as_str(), e.external_id.as_deref().unwrap()))
            .collect();
        let id = "github:octo/app/runs/30433642/env/161088068";
        assert_eq!(
            lines,
            [
                (
                    TimelineKind::Requested,
                    "Run #562 of Deploy created",
                    &*format!("{id}:created")
                ),
                (
                    TimelineKind::ReviewerAssigned,
                    "Wait timer of 30m started for production",
                    &*format!("{id}:wait_timer")
                ),
                (
                    TimelineKind::Updated,
                    "Wait timer of 30m ended for production",
                    &*format!("{id}:wait_timer_end")
                ),
                (
                    TimelineKind::Reviewed,
                    "bob approved qa: qa green",
                    &*format!("{id}:approval:0")
                ),
                (
                    TimelineKind::Denied,
                    "carol rejected production: flaky",
                    &*format!("{id}:approval:1")
                ),
            ]
        );
        let end = &r.timeline[2];
        assert_eq!(
            end.at,
            "2026-11-25T09:31:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        // Before the timer runs out there is no end event, and the snapshot is the same.
        let early = to_remote(
            "gh",
            "octo/app",
            &run(),
            &pending(),
            ActionStatus::Pending,
            &log,
            now(),
        );
        assert_eq!(early.timeline.len(), 4);
        assert_eq!(early.action.snapshot_hash, r.action.snapshot_hash);
    }

    #[test]
    fn unreadable_repositories_are_named_in_one_error() {
        assert!(repo_unreadable(&BackendError::NotFound("x".into())));
        let forbidden = BackendError::Http {
            url: "u".into(),
            status: 403,
            message: "Resource not accessible by integration".into(),
        };
        assert!(repo_unreadable(&forbidden));
        assert!(!repo_unreadable(&BackendError::Http {
            url: "u".into(),
            status: 500,
            message: "boom".into()
        }));
        assert!(!repo_unreadable(&BackendError::RateLimited {
            url: "u".into(),
            retry_after: Duration::from_secs(1)
        }));
        let e = partial_error(
            "https://api.github.com",
            &[
                ("octo/gone".into(), BackendError::NotFound("x".into())),
                ("octo/secret".into(), forbidden),
            ],
            3,
        );
        let text = e.to_string();
        assert!(
            text.contains("2 of 3 repositories left out")
                && text.contains("octo/gone (404")
                && text.contains("octo/secret (403: Resource not accessible by integration)"),
            "{text}"
        );
    }

    #[test]
    fn reviewer_order_does_not_change_the_hash() {
        let a = pending();
        let mut b = pending();
        b.reviewers.reverse();
        let ha = to_remote("g", "o/r", &run(), &a, ActionStatus::Pending, &[], now())
            .action
            .snapshot_hash;
        let hb = to_remote("g", "o/r", &run(), &b, ActionStatus::Pending, &[], now())
            .action
            .snapshot_hash;
        assert_eq!(ha, hb);
    }

    #[test]
    fn external_ids_round_trip_and_reject_junk() {
        let id = ExternalId::parse("octo/app/runs/5/env/7").unwrap();
        assert_eq!(
            id,
            ExternalId {
                repo: "octo/app".into(),
                run_id: 5,
                env_id: 7
            }
        );
        assert_eq!(
            ExternalId::format("octo/app", 5, 7),
            "octo/app/runs/5/env/7"
        );
        for bad in [
            "octo/app/runs/x/env/7",
            "octo/runs/5/env/7",
            "../a/runs/1/env/2",
            "o/r/runs/1/env/2/x",
        ] {
            assert!(ExternalId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_limits_wait_for_retry_after_or_reset() {
        let now: DateTime<Utc> = "2026-11-25T10:00:00Z".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(rate_limit_wait(&h, now), None);
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        h.insert(
            "x-ratelimit-reset",
            (now.timestamp() + 120).to_string().parse().unwrap(),
        );
        assert_eq!(rate_limit_wait(&h, now), Some(Duration::from_secs(120)));
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(rate_limit_wait(&h, now), Some(Duration::from_secs(7)));
        let mut ok = HeaderMap::new();
        ok.insert("x-ratelimit-remaining", "4999".parse().unwrap());
        assert_eq!(rate_limit_wait(&ok, now), None);
    }

    #[test]
    fn options_are_checked() {
        let mut config = BackendConfig {
            name: "gh".into(),
            kind: KIND.into(),
            ..Default::default()
        };
        assert!(GitHub::new(&config, None, Limits::default()).is_err());
        config
            .options
            .insert("repos".into(), toml::Value::Array(vec!["octo/app".into()]));
        let gh = GitHub::new(&config, None, Limits::default()).unwrap();
        assert_eq!(gh.base, DEFAULT_API);
        config.options.insert(
            "repos".into(),
            toml::Value::Array(vec!["not a repo".into()]),
        );
        assert!(GitHub::new(&config, None, Limits::default()).is_err());
        config.options.remove("repos");
        config.options.insert("org".into(), "octo".into());
        assert!(GitHub::new(&config, None, Limits::default()).is_ok());
        config.options.insert("colour".into(), "red".into());
        assert!(GitHub::new(&config, None, Limits::default()).is_err());
    }

    #[test]
    fn minutes_read_naturally() {
        assert_eq!(minutes(0), "none");
        assert_eq!(minutes(45), "45m");
        assert_eq!(minutes(120), "2h");
        assert_eq!(minutes(90), "1h 30m");
    }
}
