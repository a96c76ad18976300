//! Apache Airflow 3.1 human-in-the-loop steps (kind `airflow`). A task built on the
//! standard provider's `HITLOperator` (`ApprovalOperator`, `HITLBranchOperator`,
//! `HITLEntryOperator`, …) defers and leaves a "HITL detail" behind: a subject, a
//! markdown body, options to choose from (one or several), and typed params. Answering is
//! one call, `PATCH /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/{map_index}/
//! hitlDetails {"chosen_options", "params_input"}`; the task then resumes in Airflow's
//! triggerer and checks the answer itself.
//!
//! Auth: `POST /auth/token {"username","password"}` gives a JWT, sent as a bearer; it
//! expires, so a 401 triggers one fresh login and one retry. Airflow has no event stream
//! and no idempotency key: steps are polled (`hitlDetails?response_received=false`), and
//! `decide` re-reads the step first; an answered step counts as ours only when the answer
//! carries our proof reference.
//!
//! Where the proof goes (checked against a real 3.1.8 server): Airflow stores any
//! `params_input`, but the operator fails the task unless its keys are exactly the step's
//! params — so the proof can ride in `params_input` (`countersign_proof`) only for steps
//! without params. Every answer also writes it into the task instance's note (`PATCH
//! …/taskInstances/{task}/{map_index}?update_mask=note`), which the Airflow UI shows.
//!
//! API facts read from apache-airflow-core 3.1.8 (api_fastapi/core_api/routes/public/
//! hitl.py, task_instances.py; datamodels/hitl.py, task_instances.py, dag_run.py,
//! tasks.py) and apache-airflow-providers-standard 1.12.0 (operators/hitl.py).

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::http::{self, Answer};
use super::{
    Backend, BackendError, BuildError, Capabilities, DecisionDelivery, DeliveryOutcome, Limits,
    ListOutcome, SyncCursor,
};
use crate::config::BackendConfig;
use crate::model::{
    ActionKey, ActionKind, ActionSnapshot, ActionStatus, Decision, Detail, EventSource, FieldType,
    FormField, InputForm, PendingAction, RemoteAction, Review, ReviewVerdict, TimelineEvent,
    TimelineKind, Verdict,
};

pub const KIND: &str = "airflow";

/// Settings read from `[backends.options]`.
const OPTIONS: &[&str] = &["username", "web_url"];

/// The `params_input` key that carries the proof reference on steps without params.
pub const PROOF_PARAM: &str = "countersign_proof";

/// Airflow caps a task instance note at 1000 characters.
const NOTE_LIMIT: usize = 1000;

/// Option names that read as "yes" / "no", so approve and deny can answer them.
const YES: &[&str] = &["approve", "approved", "accept", "yes", "ok"];
const NO: &[&str] = &["reject", "rejected", "deny", "denied", "decline", "no"];

pub struct Airflow {
    name: String,
    /// Server root, without `/api/v2`.
    base: String,
    web_base: String,
    /// Login for `/auth/token` (username, password); `None` when the token is used as
    /// a bearer token as it is, or the server needs none.
    login: Option<(String, String)>,
    limits: Limits,
    client: reqwest::Client,
    /// The current JWT (or the configured bearer token); replaced after a fresh login
    /// when Airflow says it expired.
    jwt: Mutex<Option<String>>,
}

/// One HITL step: the task instance it belongs to. Printed as
/// `dag_id/dag_run_id/task_id/map_index`, each part with `%` and `/` escaped, so the
/// id stays one path-safe string however the run id is spelled.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StepId {
    dag_id: String,
    run_id: String,
    task_id: String,
    map_index: i64,
}

impl StepId {
    fn format(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            escape(&self.dag_id),
            escape(&self.run_id),
            escape(&self.task_id),
            self.map_index
        )
    }

    fn parse(s: &str) -> Result<Self, BackendError> {
        let bad = || {
            BackendError::NotFound(format!(
                "`{s}` is not an Airflow step id (dag_id/dag_run_id/task_id/map_index)"
            ))
        };
        let parts: Vec<&str> = s.split('/').collect();
        let [dag, run, task, index] = parts[..] else {
            return Err(bad());
        };
        Ok(Self {
            dag_id: unescape(dag).ok_or_else(bad)?,
            run_id: unescape(run).ok_or_else(bad)?,
            task_id: unescape(task).ok_or_else(bad)?,
            map_index: index.parse().map_err(|_| bad())?,
        })
    }

    /// `/dags/{dag}/dagRuns/{run}/taskInstances/{task}/{map_index}` under `/api/v2`.
    fn ti_path(&self) -> String {
        format!(
            "/dags/{}/dagRuns/{}/taskInstances/{}/{}",
            http::path_segment(&self.dag_id),
            http::path_segment(&self.run_id),
            http::path_segment(&self.task_id),
            self.map_index
        )
    }
}

fn escape(part: &str) -> String {
    part.replace('%', "%25").replace('/', "%2F")
}

fn unescape(part: &str) -> Option<String> {
    if part.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(part.len());
    let mut rest = part;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("%25") => out.push('%'),
            Some("%2F") | Some("%2f") => out.push('/'),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

impl Airflow {
    pub fn new(
        config: &BackendConfig,
        token: Option<String>,
        limits: Limits,
    ) -> Result<Self, BuildError> {
        let invalid = |detail: String| BuildError::Invalid {
            name: config.name.clone(),
            detail,
        };
        let url = http::base_url(&config.name, &config.url)?;
        // Accept the server root as well as the API root people copy from the docs.
        let base = url
            .strip_suffix("/api/v2")
            .unwrap_or(&url)
            .trim_end_matches('/')
            .to_owned();
        http::known_options(&config.name, KIND, &config.options, OPTIONS)?;
        let string_option = |key: &str| http::string_option(&config.name, &config.options, key);
        let web_base = string_option("web_url")?
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| base.clone());
        let username = string_option("username")?.filter(|u| !u.trim().is_empty());
        let (login, bearer) = match (username, token) {
            (Some(user), Some(password)) => (Some((user, password)), None),
            // No username: the token is a ready bearer token (a JWT from `/auth/token`,
            // or a managed Airflow's API token), sent as it is.
            (None, token) => (None, token),
            (Some(_), None) => {
                return Err(invalid(
                    "option `username` is set but no password: set `token_env` or \
                     `token_keyring` to the Airflow password"
                        .into(),
                ))
            }
        };
        Ok(Self {
            name: config.name.clone(),
            base,
            web_base,
            login,
            client: http::client(&limits).map_err(invalid)?,
            limits,
            jwt: Mutex::new(bearer),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v2{path}", self.base)
    }

    fn cached_jwt(&self) -> Option<String> {
        self.jwt.lock().ok().and_then(|j| j.clone())
    }

    fn set_jwt(&self, jwt: Option<String>) {
        if let Ok(mut slot) = self.jwt.lock() {
            *slot = jwt;
        }
    }

    /// Logs in and keeps the JWT; `None` when no login is configured.
    async fn log_in(&self) -> Result<Option<String>, BackendError> {
        let Some((username, password)) = &self.login else {
            return Ok(None);
        };
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
        }
        let url = format!("{}/auth/token", self.base);
        let body = serde_json::json!({ "username": username, "password": password });
        let answer = http::send(&url, &self.limits, self.client.post(&url).json(&body)).await?;
        if answer.status == StatusCode::UNAUTHORIZED || answer.status == StatusCode::FORBIDDEN {
            return Err(BackendError::Unauthorized {
                url,
                status: answer.status.as_u16(),
            });
        }
        if !answer.status.is_success() {
            return Err(self.error(&url, &answer));
        }
        let token: Token = http::decode(&url, &answer.body)?;
        self.set_jwt(Some(token.access_token.clone()));
        Ok(Some(token.access_token))
    }

    /// One API call with the current JWT; on a 401 logs in again once and retries (the
    /// JWT expires, by default after a day). Returns every answer, success or not.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, BackendError> {
        let build = |jwt: Option<&str>| {
            let request = self.client.request(method.clone(), url);
            let request = match body {
                Some(b) => request.json(b),
                None => request,
            };
            http::bearer(request, jwt)
        };
        let jwt = match self.cached_jwt() {
            Some(j) => Some(j),
            None => self.log_in().await?,
        };
        let answer = http::send(url, &self.limits, build(jwt.as_deref())).await?;
        if answer.status == StatusCode::UNAUTHORIZED && self.login.is_some() {
            self.set_jwt(None);
            let fresh = self.log_in().await?;
            return http::send(url, &self.limits, build(fresh.as_deref())).await;
        }
        Ok(answer)
    }

    fn error(&self, url: &str, answer: &Answer) -> BackendError {
        if let Some(e) = http::common_error(url, answer) {
            return e;
        }
        http::status_error(url, answer, airflow_message(&answer.body))
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, BackendError> {
        let answer = self.send(Method::GET, url, None).await?;
        if !answer.status.is_success() {
            return Err(self.error(url, &answer));
        }
        http::decode(url, &answer.body)
    }

    /// Like [`get`](Self::get), but a 404 is `None`: for the extras around a step.
    async fn get_opt<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<Option<T>, BackendError> {
        match self.get(url).await {
            Ok(v) => Ok(Some(v)),
            Err(BackendError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn step(&self, id: &StepId) -> Result<HitlDetail, BackendError> {
        self.get(&self.url(&format!("{}/hitlDetails", id.ti_path())))
            .await
    }

    /// Everything a reviewer sees about one step: the run, the task, the tries.
    async fn enrich(&self, detail: HitlDetail) -> Result<RemoteAction, BackendError> {
        let ti = &detail.task_instance;
        let id = ti.step_id();
        let run: Option<DagRun> = self
            .get_opt(&self.url(&format!(
                "/dags/{}/dagRuns/{}",
                http::path_segment(&id.dag_id),
                http::path_segment(&id.run_id)
            )))
            .await?;
        let task: Option<Task> = self
            .get_opt(&self.url(&format!(
                "/dags/{}/tasks/{}",
                http::path_segment(&id.dag_id),
                http::path_segment(&id.task_id)
            )))
            .await?;
        let tries: Option<Tries> = self
            .get_opt(&self.url(&format!("{}/tries", id.ti_path())))
            .await?;
        let info = StepInfo {
            run,
            task,
            tries: tries.map(|t| t.task_instances).unwrap_or_default(),
        };
        Ok(to_remote(&self.name, &self.web_base, &detail, &info))
    }

    /// Records the proof where Airflow's UI shows it: the task instance's note (kept
    /// after what was already there). Best effort: the answer itself is already in.
    async fn write_note(&self, id: &StepId, current: Option<&str>, line: &str) {
        let note = match current.map(str::trim).filter(|n| !n.is_empty()) {
            Some(existing) if existing.contains(line) => return,
            Some(existing) => format!("{existing}\n{line}"),
            None => line.to_owned(),
        };
        let note: String = if note.chars().count() > NOTE_LIMIT {
            // Keep the end: the proof is the newest line.
            let skip = note.chars().count() - NOTE_LIMIT;
            note.chars().skip(skip).collect()
        } else {
            note
        };
        let url = self.url(&format!("{}?update_mask=note", id.ti_path()));
        let body = serde_json::json!({ "note": note });
        match self.send(Method::PATCH, &url, Some(&body)).await {
            Ok(answer) if answer.status.is_success() => {}
            Ok(answer) => tracing::warn!(
                backend = %self.name,
                status = answer.status.as_u16(),
                "could not write the proof into the task instance note"
            ),
            Err(e) => tracing::warn!(
                backend = %self.name,
                error = %e,
                "could not write the proof into the task instance note"
            ),
        }
    }

    /// The answered step as the result of a delivery, re-read; `None` if that fails.
    async fn delivered(&self, id: &StepId) -> DeliveryOutcome {
        let action = match self.step(id).await {
            Ok(detail) => self.enrich(detail).await.ok().map(Box::new),
            Err(_) => None,
        };
        DeliveryOutcome::Delivered { action }
    }

    /// A step someone answered: ours (a retried delivery whose first answer was lost)
    /// or someone else's.
    async fn answered(
        &self,
        id: &StepId,
        detail: &HitlDetail,
        d: &Decision,
        sent: &(Vec<String>, Map<String, Value>),
    ) -> DeliveryOutcome {
        let proof = crate::audit::proof_reference(d);
        let proof_in_answer =
            detail.params_input.get(PROOF_PARAM).and_then(Value::as_str) == Some(proof.as_str());
        let proof_in_note = detail
            .task_instance
            .note
            .as_deref()
            .is_some_and(|n| n.contains(&proof));
        // Steps with params cannot carry the proof in the answer: there, the same
        // account giving the very same answer is taken as our own lost delivery.
        let same_answer = !detail.params.is_empty()
            && detail.chosen_options.as_deref() == Some(sent.0.as_slice())
            && detail.params_input == sent.1
            && self.login.as_ref().map(|(u, _)| u.as_str())
                == detail.responded_by_user.as_ref().map(|u| u.name.as_str());
        if proof_in_answer || proof_in_note || same_answer {
            if !proof_in_note {
                self.write_note(id, detail.task_instance.note.as_deref(), &note_line(d))
                    .await;
            }
            return self.delivered(id).await;
        }
        DeliveryOutcome::NotPending {
            status: already_answered(detail),
        }
    }
}

#[async_trait]
impl Backend for Airflow {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list: true,
            fetch: true,
            decide: true,
            subscribe: false,
        }
    }

    async fn list_pending(&self, _cursor: &SyncCursor) -> Result<ListOutcome, BackendError> {
        // Filtered on the answer, not on the task state: a deferred task is how 3.1 waits,
        // and later versions wait in a state of their own.
        const PAGE: usize = 100;
        let mut actions = Vec::new();
        let mut offset = 0usize;
        loop {
            let url = self.url(&format!(
                "/dags/~/dagRuns/~/hitlDetails?response_received=false&order_by=created_at\
                 &limit={PAGE}&offset={offset}"
            ));
            let page: HitlCollection = self.get(&url).await?;
            let n = page.hitl_details.len();
            for detail in page.hitl_details {
                match self.enrich(detail).await {
                    Ok(a) => actions.push(a),
                    // Deleted between the list and its details: gone, not an error.
                    Err(BackendError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            offset += n;
            if n < PAGE || offset >= page.total_entries {
                break;
            }
        }
        Ok(ListOutcome::Listed {
            actions,
            etag: None,
            cursor: None,
        })
    }

    async fn fetch(&self, external_id: &str) -> Result<RemoteAction, BackendError> {
        let id = StepId::parse(external_id)?;
        let detail = self.step(&id).await?;
        self.enrich(detail).await
    }

    async fn decide(&self, delivery: &DecisionDelivery) -> Result<DeliveryOutcome, BackendError> {
        let d = &delivery.decision;
        let id = match StepId::parse(&d.action.external_id) {
            Ok(id) => id,
            Err(e) => {
                return Ok(DeliveryOutcome::Rejected {
                    reason: e.to_string(),
                })
            }
        };
        // No idempotency key at Airflow: look before answering.
        let detail = match self.step(&id).await {
            Ok(detail) => detail,
            Err(BackendError::NotFound(_)) => {
                return Ok(DeliveryOutcome::NotPending {
                    status: "gone (the task instance or its question no longer exists)".into(),
                })
            }
            Err(e) => return Err(e),
        };
        let options = match chosen_options(&detail, d) {
            Ok(options) => options,
            Err(reason) => return Ok(DeliveryOutcome::Rejected { reason }),
        };
        let params = params_input(&detail, d);
        let sent = (options, params);
        if detail.response_received {
            return Ok(self.answered(&id, &detail, d, &sent).await);
        }
        // A decision binds the snapshot it was made on. One delivered late (queued while
        // offline) must not answer a question that changed since (a new DAG version with
        // other options or params, a new expiry): Airflow would take any options.
        let current = self.enrich(detail.clone()).await?;
        if current.action.snapshot_hash != d.snapshot_hash {
            return Ok(DeliveryOutcome::Stale {
                current_snapshot_hash: current.action.snapshot_hash.as_str().to_owned(),
            });
        }
        let url = self.url(&format!("{}/hitlDetails", id.ti_path()));
        let body = serde_json::json!({ "chosen_options": sent.0, "params_input": sent.1 });
        let answer = self.send(Method::PATCH, &url, Some(&body)).await?;
        let message = || airflow_message(&answer.body);
        match answer.status {
            s if s.is_success() => {
                self.write_note(&id, detail.task_instance.note.as_deref(), &note_line(d))
                    .await;
                Ok(self.delivered(&id).await)
            }
            StatusCode::CONFLICT => {
                // Answered between our look and our answer: by us (a lost earlier try)?
                match self.step(&id).await {
                    Ok(now) => Ok(self.answered(&id, &now, d, &sent).await),
                    Err(_) => Ok(DeliveryOutcome::NotPending {
                        status: format!("already answered in Airflow ({})", message()),
                    }),
                }
            }
            StatusCode::FORBIDDEN => Ok(DeliveryOutcome::Rejected {
                reason: format!(
                    "Airflow refused the answer: this account is not assigned to the step \
                     ({})",
                    message()
                ),
            }),
            StatusCode::UNPROCESSABLE_ENTITY => Ok(DeliveryOutcome::Rejected {
                reason: format!(
                    "Airflow refused the answer: {}",
                    validation_message(&answer.body)
                ),
            }),
            StatusCode::NOT_FOUND => Ok(DeliveryOutcome::NotPending {
                status: format!("gone ({})", message()),
            }),
            _ => Err(self.error(&url, &answer)),
        }
    }
}

/// The options a decision answers with, or why it cannot answer this step.
fn chosen_options(detail: &HitlDetail, d: &Decision) -> Result<Vec<String>, String> {
    let pick = |words: &[&str]| option_meaning(detail, words);
    let cannot = |verb: &str| {
        format!(
            "this step asks to choose among {}; it has no option meaning \"{verb}\", so use \
             choose with one of them",
            quoted(&detail.options)
        )
    };
    match d.verdict {
        Verdict::Choose => match &d.answer {
            Some(a) if !a.options.is_empty() => Ok(a.options.clone()),
            _ => Err(format!(
                "choose needs at least one option (offered: {})",
                quoted(&detail.options)
            )),
        },
        Verdict::Approve => pick(YES).map(|o| vec![o]).ok_or_else(|| cannot("approve")),
        Verdict::Deny => pick(NO).map(|o| vec![o]).ok_or_else(|| cannot("deny")),
    }
}

/// The `params_input` sent: every param of the step (Airflow's operator fails the task
/// unless the keys match exactly), from the answer or else the param's own value; for a
/// step without params, the proof reference.
fn params_input(detail: &HitlDetail, d: &Decision) -> Map<String, Value> {
    let mut out = Map::new();
    if detail.params.is_empty() {
        out.insert(
            PROOF_PARAM.into(),
            Value::String(crate::audit::proof_reference(d)),
        );
        return out;
    }
    for (name, param) in &detail.params {
        let given = d.answer.as_ref().and_then(|a| a.params.get(name)).cloned();
        out.insert(
            name.clone(),
            given.unwrap_or_else(|| param_value(param).clone()),
        );
    }
    out
}

/// The line the task instance note gets: who decided what here, and the proof.
fn note_line(d: &Decision) -> String {
    let what = match (d.verdict, &d.answer) {
        (Verdict::Choose, Some(a)) => format!("chose {}", a.options.join(", ")),
        (Verdict::Approve, _) => "approved".to_owned(),
        (Verdict::Deny, _) => "denied".to_owned(),
        (Verdict::Choose, None) => "answered".to_owned(),
    };
    let reason = d.reason.trim();
    let reason = if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    };
    format!(
        "{} {what} in Countersign{reason} {}",
        d.approver,
        crate::audit::proof_reference(d)
    )
}

fn already_answered(detail: &HitlDetail) -> String {
    let by = detail
        .responded_by_user
        .as_ref()
        .map(|u| format!(" by {}", u.name))
        .unwrap_or_default();
    let chose = detail
        .chosen_options
        .as_ref()
        .map(|o| format!(": {}", o.join(", ")))
        .unwrap_or_default();
    format!("already answered in Airflow{by}{chose}")
}

fn quoted(options: &[String]) -> String {
    options
        .iter()
        .map(|o| format!("\"{o}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// FastAPI errors are `{"detail": "…"}`, or for validation a list of `{loc, msg}`.
fn airflow_message(body: &[u8]) -> String {
    http::message_field(body, "detail")
}

/// A 422's `detail` list as "`field`: message; …", naming each field.
fn validation_message(body: &[u8]) -> String {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
        return http::snippet(body);
    };
    match m.get("detail") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let loc = item
                    .get("loc")
                    .and_then(Value::as_array)
                    .map(|l| {
                        l.iter()
                            // "body" / "path" say where, not which field.
                            .filter(|p| !matches!(p.as_str(), Some("body" | "path" | "query")))
                            .map(|p| match p {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join(".")
                    })
                    .unwrap_or_default();
                let msg = item.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                format!("`{loc}`: {msg}")
            })
            .collect::<Vec<_>>()
            .join("; "),
        Some(Value::String(s)) => s.clone(),
        _ => http::snippet(body),
    }
}

// --- wire types (datamodels/hitl.py, task_instances.py, dag_run.py, tasks.py) --------

#[derive(Debug, Deserialize)]
struct HitlCollection {
    hitl_details: Vec<HitlDetail>,
    #[serde(default)]
    total_entries: usize,
}

#[derive(Debug, Clone, Deserialize)]
struct HitlDetail {
    task_instance: TaskInstance,
    options: Vec<String>,
    subject: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    defaults: Option<Vec<String>>,
    #[serde(default)]
    multiple: bool,
    /// `{name: {value, description, schema}}`.
    #[serde(default)]
    params: Map<String, Value>,
    #[serde(default)]
    assigned_users: Vec<User>,
    created_at: DateTime<Utc>,
    #[serde(default)]
    responded_by_user: Option<User>,
    #[serde(default)]
    responded_at: Option<DateTime<Utc>>,
    #[serde(default)]
    chosen_options: Option<Vec<String>>,
    #[serde(default)]
    params_input: Map<String, Value>,
    #[serde(default)]
    response_received: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct User {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
struct TaskInstance {
    dag_id: String,
    dag_run_id: String,
    task_id: String,
    #[serde(default = "unmapped")]
    map_index: i64,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    dag_display_name: Option<String>,
    #[serde(default)]
    task_display_name: Option<String>,
    #[serde(default)]
    operator: Option<String>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    rendered_map_index: Option<String>,
}

fn unmapped() -> i64 {
    -1
}

impl TaskInstance {
    fn step_id(&self) -> StepId {
        StepId {
            dag_id: self.dag_id.clone(),
            run_id: self.dag_run_id.clone(),
            task_id: self.task_id.clone(),
            map_index: self.map_index,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct DagRun {
    #[serde(default)]
    triggering_user_name: Option<String>,
    #[serde(default)]
    triggered_by: Option<String>,
    #[serde(default)]
    run_type: Option<String>,
    #[serde(default)]
    conf: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct Task {
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    execution_timeout: Option<TimeDelta>,
}

#[derive(Debug, Clone, Deserialize)]
struct TimeDelta {
    #[serde(default)]
    days: i64,
    #[serde(default)]
    seconds: i64,
    #[serde(default)]
    microseconds: i64,
}

impl TimeDelta {
    fn duration(&self) -> Option<Duration> {
        Duration::try_days(self.days)?
            .checked_add(&Duration::try_seconds(self.seconds)?)?
            .checked_add(&Duration::microseconds(self.microseconds))
    }
}

#[derive(Debug, Deserialize)]
struct Tries {
    #[serde(default)]
    task_instances: Vec<Try>,
}

#[derive(Debug, Clone, Deserialize)]
struct Try {
    try_number: i64,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    start_date: Option<DateTime<Utc>>,
    #[serde(default)]
    end_date: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct StepInfo {
    run: Option<DagRun>,
    task: Option<Task>,
    tries: Vec<Try>,
}

// --- mapping -------------------------------------------------------------------------

fn param_value(param: &Value) -> &Value {
    param.get("value").unwrap_or(&Value::Null)
}

/// A param (`{value, description, schema}`, JSON Schema as Airflow's `Param` keeps it)
/// as a typed form field.
fn form_field(name: &str, param: &Value) -> FormField {
    let schema = param.get("schema").cloned().unwrap_or(Value::Null);
    let value = param_value(param);
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(plain_text);
    // `type` may be a list (`["null", "string"]`): the first non-null one counts.
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let nullable = types.contains(&"null");
    let main = types.iter().find(|t| **t != "null").copied();
    let string_enum: Option<Vec<String>> =
        schema
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|values| {
                values
                    .iter()
                    .filter(|v| !v.is_null())
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect()
            });
    let (field_type, choices) = match (string_enum, main) {
        (Some(choices), _) if !choices.is_empty() => (FieldType::Choice, choices),
        (_, Some("string")) => (FieldType::Text, Vec::new()),
        (_, Some("integer")) => (FieldType::Integer, Vec::new()),
        (_, Some("number")) => (FieldType::Number, Vec::new()),
        (_, Some("boolean")) => (FieldType::Boolean, Vec::new()),
        (_, Some(_)) => (FieldType::Json, Vec::new()),
        // No schema type: what the default value is.
        (_, None) => (
            match value {
                Value::String(_) => FieldType::Text,
                Value::Bool(_) => FieldType::Boolean,
                Value::Number(n) if n.is_i64() || n.is_u64() => FieldType::Integer,
                Value::Number(_) => FieldType::Number,
                _ => FieldType::Json,
            },
            Vec::new(),
        ),
    };
    FormField {
        name: name.to_owned(),
        label: text(schema.get("title"))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| name.to_owned()),
        description: text(param.get("description"))
            .or_else(|| text(schema.get("description")))
            .unwrap_or_default(),
        field_type,
        choices,
        // Airflow's rule: a param without a value is required unless null is allowed.
        required: value.is_null() && !nullable && !types.is_empty(),
        default: (!value.is_null()).then(|| value.clone()),
    }
}

/// The step's option that means one of `words` (yes-like or no-like), if any.
fn option_meaning(detail: &HitlDetail, words: &[&str]) -> Option<String> {
    detail
        .options
        .iter()
        .find(|o| words.contains(&o.trim().to_lowercase().as_str()))
        .cloned()
}

fn form(detail: &HitlDetail) -> InputForm {
    let pick = |words: &[&str]| option_meaning(detail, words);
    InputForm {
        // Which options approve and deny stand for, so the engine refuses an approve on
        // a step that only takes a choice before anything is signed.
        approve_option: pick(YES),
        deny_option: pick(NO),
        options: detail.options.clone(),
        multiple: detail.multiple,
        default_options: detail.defaults.clone().unwrap_or_default(),
        fields: detail
            .params
            .iter()
            .map(|(name, p)| form_field(name, p))
            .collect(),
    }
}

/// Markdown as plain text: the window shows text only, and request text is hostile.
/// Keeps the words and link targets, drops the markup and control characters.
fn plain_text(markdown: &str) -> String {
    let mut lines = Vec::new();
    let mut in_fence = false;
    for raw in markdown.lines() {
        let line = raw.trim_end();
        if line.trim_start().starts_with("```") || line.trim_start().starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            lines.push(line.to_owned());
            continue;
        }
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let body = trimmed.trim_start_matches('#');
        let body = if body.len() != trimmed.len() && (body.is_empty() || body.starts_with(' ')) {
            body.trim_start()
        } else {
            trimmed
        };
        let body = body.strip_prefix("> ").unwrap_or(body);
        let body = match body.strip_prefix("* ").or_else(|| body.strip_prefix("+ ")) {
            Some(rest) => format!("- {rest}"),
            None => body.to_owned(),
        };
        lines.push(format!("{indent}{}", inline_text(&body)));
    }
    let text = lines.join("\n");
    text.chars()
        .filter(|c| *c == '\n' || *c == '\t' || !c.is_control())
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Inline markdown: `[text](url)` → `text (url)`, `![alt](url)` → `alt`, emphasis and
/// code markers removed.
fn inline_text(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let image = c == '!' && chars.get(i + 1) == Some(&'[');
        if c == '[' || image {
            let start = if image { i + 2 } else { i + 1 };
            if let Some(close) = find(&chars, start, ']') {
                if chars.get(close + 1) == Some(&'(') {
                    if let Some(end) = find(&chars, close + 2, ')') {
                        let label: String = chars[start..close].iter().collect();
                        let target: String = chars[close + 2..end].iter().collect();
                        out.push_str(&inline_text(&label));
                        if !image && !target.is_empty() && target != label {
                            out.push_str(&format!(" ({target})"));
                        }
                        i = end + 1;
                        continue;
                    }
                }
            }
        }
        match c {
            '`' => {}
            '*' | '_' if emphasis(&chars, i) => {}
            '~' if chars.get(i + 1) == Some(&'~') || (i > 0 && chars[i - 1] == '~') => {}
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

fn find(chars: &[char], from: usize, target: char) -> Option<usize> {
    (from..chars.len()).find(|&j| chars[j] == target)
}

/// Whether the `*` / `_` at `i` is emphasis markup rather than text (`a * b`,
/// `snake_case`, `manual__2026`): a run of `_` inside a word is text.
fn emphasis(chars: &[char], i: usize) -> bool {
    let c = chars[i];
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
    if c == '_' {
        let start = (0..=i)
            .rev()
            .take_while(|&j| chars[j] == '_')
            .last()
            .unwrap_or(i);
        let end = (i..chars.len())
            .take_while(|&j| chars[j] == '_')
            .last()
            .unwrap_or(i);
        let before = start.checked_sub(1).map(|j| chars[j]);
        if word(before) && word(chars.get(end + 1).copied()) {
            return false;
        }
    }
    let before = i.checked_sub(1).map(|j| chars[j]);
    let after = chars.get(i + 1).copied();
    let space = |c: Option<char>| c.is_none_or(char::is_whitespace);
    !(space(before) && space(after))
}

/// Text from Airflow shown as it is (names, options, conf): no control characters, so
/// nothing in a request can move a terminal's cursor or colour what follows.
fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| *c == '\n' || *c == '\t' || !c.is_control())
        .collect()
}

fn map_status(detail: &HitlDetail) -> ActionStatus {
    if detail.response_received {
        let chosen = detail.chosen_options.clone().unwrap_or_default();
        let no = |o: &String| NO.contains(&o.trim().to_lowercase().as_str());
        return if !chosen.is_empty() && chosen.iter().all(no) {
            ActionStatus::Denied
        } else {
            ActionStatus::Approved
        };
    }
    match detail.task_instance.state.as_deref() {
        // Deferred (3.1) or any waiting state: the question stands.
        None | Some("deferred" | "running" | "queued" | "scheduled" | "up_for_reschedule") => {
            ActionStatus::Pending
        }
        Some("skipped" | "removed" | "upstream_failed") => ActionStatus::Cancelled,
        Some("failed") => ActionStatus::Failed,
        // Finished without an answer: the operator's timeout took its defaults.
        Some("success") => ActionStatus::Expired,
        Some(_) => ActionStatus::Pending,
    }
}

fn requester(detail: &HitlDetail, info: &StepInfo) -> String {
    let run = info.run.as_ref();
    if let Some(user) = run
        .and_then(|r| r.triggering_user_name.as_deref())
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        return user.to_owned();
    }
    let owner = info
        .task
        .as_ref()
        .and_then(|t| t.owner.as_deref())
        .map(str::trim)
        .filter(|o| !o.is_empty());
    match (owner, run.and_then(|r| r.run_type.as_deref())) {
        (Some(owner), Some(kind)) => format!("{owner} ({kind} run)"),
        (Some(owner), None) => owner.to_owned(),
        (None, _) => format!("airflow ({})", detail.task_instance.dag_id),
    }
}

fn to_remote(backend: &str, web_base: &str, detail: &HitlDetail, info: &StepInfo) -> RemoteAction {
    let ti = &detail.task_instance;
    let id = ti.step_id();
    let body = detail.body.as_deref().map(plain_text).unwrap_or_default();
    let mut details = Vec::new();
    let mut add = |key: &str, value: String| {
        details.push(Detail {
            key: key.into(),
            value: clean(&value),
        })
    };
    if !body.is_empty() {
        add("question", body.clone());
    }
    add("options", detail.options.join("\n"));
    if detail.multiple {
        add("choice", "one or more options".into());
    }
    if let Some(defaults) = detail.defaults.as_ref().filter(|d| !d.is_empty()) {
        add("default (taken on timeout)", defaults.join(", "));
    }
    let dag = match ti.dag_display_name.as_deref() {
        Some(name) if name != ti.dag_id => format!("{name} ({})", ti.dag_id),
        _ => ti.dag_id.clone(),
    };
    add("DAG", dag);
    add("DAG run", ti.dag_run_id.clone());
    let mut task = match ti.task_display_name.as_deref() {
        Some(name) if name != ti.task_id => format!("{name} ({})", ti.task_id),
        _ => ti.task_id.clone(),
    };
    if ti.map_index >= 0 {
        let label = ti
            .rendered_map_index
            .clone()
            .unwrap_or_else(|| ti.map_index.to_string());
        task = format!("{task} [{label}]");
    }
    add("task", task);
    if let Some(op) = &ti.operator {
        add("operator", op.clone());
    }
    if !detail.assigned_users.is_empty() {
        let users: Vec<String> = detail
            .assigned_users
            .iter()
            .map(|u| {
                if u.name == u.id || u.id.is_empty() {
                    u.name.clone()
                } else {
                    format!("{} ({})", u.name, u.id)
                }
            })
            .collect();
        add("assigned to", users.join(", "));
    }
    if let Some(run) = &info.run {
        if let Some(by) = &run.triggered_by {
            add("triggered by", by.clone());
        }
        if let Some(conf) = run
            .conf
            .as_ref()
            .filter(|c| !c.is_null() && c.as_object().is_none_or(|m| !m.is_empty()))
        {
            add(
                "run conf",
                serde_json::to_string_pretty(conf).unwrap_or_default(),
            );
        }
    }
    let expires_at = info
        .task
        .as_ref()
        .and_then(|t| t.execution_timeout.as_ref())
        .and_then(TimeDelta::duration)
        .and_then(|d| detail.created_at.checked_add_signed(d));
    let title: String = plain_text(&detail.subject).chars().take(200).collect();
    let summary: String = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(160).collect())
        .unwrap_or_default();
    let reviews = match (&detail.responded_by_user, detail.responded_at) {
        (Some(user), Some(at)) if detail.response_received => vec![Review {
            reviewer: user.name.clone(),
            verdict: if map_status(detail) == ActionStatus::Denied {
                ReviewVerdict::Denied
            } else {
                ReviewVerdict::Approved
            },
            at,
            comment: detail.chosen_options.as_ref().map(|o| o.join(", ")),
        }],
        _ => Vec::new(),
    };
    let mut web_url = format!(
        "{web_base}/dags/{}/runs/{}/tasks/{}/required_actions",
        http::path_segment(&ti.dag_id),
        http::path_segment(&ti.dag_run_id),
        http::path_segment(&ti.task_id)
    );
    if ti.map_index >= 0 {
        web_url.push_str(&format!("?map_index={}", ti.map_index));
    }
    let snapshot = ActionSnapshot {
        kind: ActionKind::HitlStep,
        title: if title.is_empty() {
            format!("{} / {} waits for input", ti.dag_id, ti.task_id)
        } else {
            title
        },
        summary,
        requester: clean(&requester(detail, info)),
        requested_at: detail.created_at,
        expires_at,
        resource: ti.dag_id.clone(),
        details,
        approvals_required: 1,
        reviews,
        status: map_status(detail),
        web_url: Some(web_url),
        form: Some(form(detail)),
    };
    RemoteAction {
        action: PendingAction::new(ActionKey::new(backend, id.format()), snapshot),
        timeline: timeline(&id, detail, &info.tries),
    }
}

/// The question, the task's tries (start and end of each) and the answer, each with an
/// id of its own so a poll stores it once.
fn timeline(id: &StepId, detail: &HitlDetail, tries: &[Try]) -> Vec<TimelineEvent> {
    let prefix = format!("airflow:{}", id.format());
    let event = |at, kind, actor: Option<String>, text: String, key: String| TimelineEvent {
        at,
        source: EventSource::Backend,
        kind,
        actor: actor.map(|a| clean(&a)),
        text: clean(&text),
        external_id: Some(format!("{prefix}:{key}")),
    };
    let mut events = Vec::new();
    for t in tries {
        if let Some(start) = t.start_date {
            events.push(event(
                start,
                TimelineKind::Updated,
                None,
                format!("Task try {} started", t.try_number),
                format!("try{}:start", t.try_number),
            ));
        }
        if let Some(end) = t.end_date {
            let state = t.state.clone().unwrap_or_else(|| "ended".into());
            let kind = match state.as_str() {
                "success" => TimelineKind::Executed,
                "skipped" | "removed" | "upstream_failed" => TimelineKind::Cancelled,
                _ => TimelineKind::Other,
            };
            events.push(event(
                end,
                kind,
                None,
                format!("Task try {} ended: {state}", t.try_number),
                format!("try{}:end", t.try_number),
            ));
        }
    }
    let subject: String = plain_text(&detail.subject).chars().take(200).collect();
    events.push(event(
        detail.created_at,
        TimelineKind::Requested,
        None,
        format!(
            "Asks \"{subject}\" — options: {}",
            detail.options.join(", ")
        ),
        "requested".into(),
    ));
    if let (true, Some(at)) = (detail.response_received, detail.responded_at) {
        let chosen = detail.chosen_options.clone().unwrap_or_default();
        let mut text = format!("Answered: {}", chosen.join(", "));
        let shown: Vec<String> = detail
            .params_input
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        if !shown.is_empty() {
            text = format!("{text} ({})", shown.join(", "));
        }
        let kind = match map_status(detail) {
            ActionStatus::Denied => TimelineKind::Denied,
            _ => TimelineKind::Approved,
        };
        events.push(event(
            at,
            kind,
            detail.responded_by_user.as_ref().map(|u| u.name.clone()),
            text,
            "answered".into(),
        ));
    }
    events.sort_by_key(|e| e.at);
    events
}

/// Fuzzing entry (see [`super::fuzzing`]): `hitlDetails \n dag run \n tries`, through
/// decoding and the mapping to actions (markdown to text, forms from params).
pub(super) fn fuzz_parse(data: &[u8]) {
    let (list, rest) = super::fuzzing::split(data);
    let (run, tries) = super::fuzzing::split(rest);
    let info = StepInfo {
        run: serde_json::from_slice(run).ok(),
        task: None,
        tries: serde_json::from_slice::<Tries>(tries)
            .map(|t| t.task_instances)
            .unwrap_or_default(),
    };
    if let Ok(list) = http::decode::<HitlCollection>("http://fuzz", list) {
        for detail in &list.hitl_details {
            let _ = to_remote("fuzz", "http://airflow", detail, &info);
        }
    }
    let _ = plain_text(&String::from_utf8_lossy(data));
    let _ = airflow_message(data);
    let _ = validation_message(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Answer as FormAnswer;
    use serde_json::json;

    fn detail(options: &[&str], params: Value) -> HitlDetail {
        serde_json::from_value(json!({
            "task_instance": {
                "id": "01a2", "task_id": "choose_region", "dag_id": "release",
                "dag_run_id": "manual__2026-11-25T03:52:32+00:00", "map_index": -1,
                "state": "deferred", "task_display_name": "choose_region",
                "dag_display_name": "Release train", "operator": "HITLBranchOperator",
                "note": null
            },
            "options": options,
            "subject": "Where should **v2** go?",
            "body": "## Pick\nShips *v2* to `prod`.\n\n* see [the log](https://x.invalid/log)",
            "defaults": ["Skip"],
            "multiple": true,
            "params": params,
            "assigned_users": [],
            "created_at": "2026-11-25T03:53:59.112447Z",
            "responded_by_user": null, "responded_at": null, "chosen_options": null,
            "params_input": {}, "response_received": false
        }))
        .unwrap()
    }

    fn params() -> Value {
        json!({
            "replicas": {"value": 2, "description": "Pods per region",
                "schema": {"type": "integer", "minimum": 1, "title": "Replicas"}},
            "note": {"value": "", "description": null, "schema": {"type": "string"}},
            "tier": {"value": null, "description": null,
                "schema": {"type": "string", "enum": ["gold", "silver"]}},
            "extra": {"value": null, "description": null, "schema": {"type": ["null", "object"]}}
        })
    }

    fn decision(verdict: Verdict, answer: Option<FormAnswer>) -> Decision {
        Decision {
            action: ActionKey::new("af", "release/run/choose_region/-1"),
            verdict,
            reason: "ship it".into(),
            decided_at: Utc::now(),
            approver: "ana@example.com".into(),
            snapshot_hash: crate::snapshot::SnapshotHash("00".repeat(32)),
            idempotency_key: "k".into(),
            key_fingerprint: Some("SHA256:abc".into()),
            public_key: None,
            signature: None,
            delivery: crate::model::DeliveryState::Queued,
            answer,
        }
    }

    #[test]
    fn step_ids_round_trip_and_stay_one_path() {
        let id = StepId {
            dag_id: "release".into(),
            run_id: "weird/run%id+00:00".into(),
            task_id: "approve".into(),
            map_index: 3,
        };
        let s = id.format();
        assert_eq!(s, "release/weird%2Frun%25id+00:00/approve/3");
        assert_eq!(StepId::parse(&s).unwrap(), id);
        assert!(StepId::parse("release/run/approve").is_err());
        assert!(StepId::parse("release/run/approve/x").is_err());
        assert!(StepId::parse("release/r%zz/approve/-1").is_err());
        assert_eq!(
            id.ti_path(),
            "/dags/release/dagRuns/weird%2Frun%25id%2B00%3A00/taskInstances/approve/3"
        );
    }

    #[test]
    fn a_step_maps_to_a_hitl_action_with_its_form() {
        let d = detail(&["Deploy EU", "Deploy US", "Skip"], params());
        let info = StepInfo {
            run: Some(DagRun {
                triggering_user_name: Some("dana".into()),
                triggered_by: Some("rest_api".into()),
                run_type: Some("manual".into()),
                conf: Some(json!({})),
            }),
            task: Some(Task {
                owner: Some("release-team".into()),
                execution_timeout: Some(TimeDelta {
                    days: 0,
                    seconds: 7200,
                    microseconds: 0,
                }),
            }),
            tries: vec![Try {
                try_number: 1,
                state: Some("deferred".into()),
                start_date: Some("2026-11-25T03:53:55Z".parse().unwrap()),
                end_date: None,
            }],
        };
        let r = to_remote("af", "http://ui", &d, &info);
        let s = &r.action.snapshot;
        assert_eq!(s.kind, ActionKind::HitlStep);
        assert_eq!(s.title, "Where should v2 go?");
        assert_eq!(s.summary, "Pick");
        assert_eq!(s.requester, "dana");
        assert_eq!(s.resource, "release");
        assert_eq!(s.status, ActionStatus::Pending);
        assert_eq!(
            s.expires_at.unwrap().to_rfc3339(),
            "2026-11-25T05:53:59.112447+00:00"
        );
        assert_eq!(
            r.action.key.external_id,
            "release/manual__2026-11-25T03:52:32+00:00/choose_region/-1"
        );
        assert_eq!(
            s.web_url.as_deref(),
            Some(
                "http://ui/dags/release/runs/manual__2026-11-25T03%3A52%3A32%2B00%3A00/tasks/\
                 choose_region/required_actions"
            )
        );
        let get = |k: &str| s.details.iter().find(|d| d.key == k).unwrap().value.clone();
        assert_eq!(
            get("question"),
            "Pick\nShips v2 to prod.\n\n- see the log (https://x.invalid/log)"
        );
        assert_eq!(get("DAG"), "Release train (release)");
        assert!(s.details.iter().all(|d| d.key != "run conf"));
        let form = s.form.as_ref().unwrap();
        assert_eq!(form.options, ["Deploy EU", "Deploy US", "Skip"]);
        assert!(form.multiple);
        assert_eq!(form.default_options, ["Skip"]);
        let field = |n: &str| form.fields.iter().find(|f| f.name == n).unwrap();
        let replicas = field("replicas");
        assert_eq!(replicas.field_type, FieldType::Integer);
        assert_eq!(replicas.label, "Replicas");
        assert_eq!(replicas.description, "Pods per region");
        assert_eq!(replicas.default, Some(json!(2)));
        assert!(!replicas.required);
        assert_eq!(field("note").field_type, FieldType::Text);
        let tier = field("tier");
        assert_eq!(tier.field_type, FieldType::Choice);
        assert_eq!(tier.choices, ["gold", "silver"]);
        assert!(tier.required, "no value and null not allowed");
        let extra = field("extra");
        assert_eq!(extra.field_type, FieldType::Json);
        assert!(!extra.required);
        let kinds: Vec<TimelineKind> = r.timeline.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [TimelineKind::Updated, TimelineKind::Requested]);
        assert_eq!(
            r.timeline[1].external_id.as_deref(),
            Some("airflow:release/manual__2026-11-25T03:52:32+00:00/choose_region/-1:requested")
        );
    }

    #[test]
    fn an_answered_step_shows_who_answered_what() {
        let mut d = detail(&["Approve", "Reject"], json!({}));
        d.response_received = true;
        d.responded_by_user = Some(User {
            id: "admin".into(),
            name: "admin".into(),
        });
        d.responded_at = Some("2026-11-25T04:00:00Z".parse().unwrap());
        d.chosen_options = Some(vec!["Reject".into()]);
        d.params_input = serde_json::from_value(json!({"countersign_proof": "[p]"})).unwrap();
        let r = to_remote("af", "http://ui", &d, &StepInfo::default());
        assert_eq!(r.action.snapshot.status, ActionStatus::Denied);
        assert_eq!(r.action.snapshot.reviews[0].verdict, ReviewVerdict::Denied);
        assert_eq!(r.action.snapshot.requester, "airflow (release)");
        let last = r.timeline.last().unwrap();
        assert_eq!(last.kind, TimelineKind::Denied);
        assert_eq!(last.actor.as_deref(), Some("admin"));
        assert_eq!(last.text, "Answered: Reject (countersign_proof=[p])");
    }

    #[test]
    fn approve_and_deny_answer_yes_no_steps_only() {
        let approval = detail(&["Approve", "Reject"], json!({}));
        assert_eq!(
            chosen_options(&approval, &decision(Verdict::Approve, None)).unwrap(),
            ["Approve"]
        );
        assert_eq!(
            chosen_options(&approval, &decision(Verdict::Deny, None)).unwrap(),
            ["Reject"]
        );
        let choice = detail(&["Deploy EU", "Deploy US", "Skip"], params());
        let err = chosen_options(&choice, &decision(Verdict::Approve, None)).unwrap_err();
        assert!(
            err.starts_with("this step asks to choose among \"Deploy EU\", \"Deploy US\""),
            "{err}"
        );
        assert!(err.contains("use choose"), "{err}");
        let chosen = FormAnswer {
            options: vec!["Deploy US".into()],
            params: Default::default(),
        };
        assert_eq!(
            chosen_options(&choice, &decision(Verdict::Choose, Some(chosen))).unwrap(),
            ["Deploy US"]
        );
    }

    #[test]
    fn params_input_has_every_param_or_else_the_proof() {
        let choice = detail(&["Deploy EU"], params());
        let answer = FormAnswer {
            options: vec!["Deploy EU".into()],
            params: [("replicas".to_owned(), json!(5))].into_iter().collect(),
        };
        let sent = params_input(&choice, &decision(Verdict::Choose, Some(answer)));
        assert_eq!(
            Value::Object(sent),
            json!({"replicas": 5, "note": "", "tier": null, "extra": null})
        );
        let approval = detail(&["Approve", "Reject"], json!({}));
        let d = decision(Verdict::Approve, None);
        let sent = params_input(&approval, &d);
        assert_eq!(
            sent[PROOF_PARAM],
            json!(crate::audit::proof_reference(&d)),
            "{sent:?}"
        );
        assert!(note_line(&d).starts_with(
            "ana@example.com approved in Countersign: ship it [countersign SHA256:abc"
        ));
        assert!(note_line(&decision(Verdict::Deny, None)).contains(" denied in Countersign"));
    }

    #[test]
    fn validation_errors_name_the_field() {
        let body = br#"{"detail":[{"type":"too_short","loc":["body","chosen_options"],"msg":"List should have at least 1 item"}]}"#;
        assert_eq!(
            validation_message(body),
            "`chosen_options`: List should have at least 1 item"
        );
        assert_eq!(
            airflow_message(br#"{"detail":"Invalid credentials"}"#),
            "Invalid credentials"
        );
    }

    #[test]
    fn markdown_becomes_plain_text() {
        assert_eq!(
            plain_text("# Title\n**bold** and _it_ `code`"),
            "Title\nbold and it code"
        );
        assert_eq!(
            plain_text("a * b and snake_case_name"),
            "a * b and snake_case_name"
        );
        assert_eq!(
            plain_text("Release manual__2026 now"),
            "Release manual__2026 now"
        );
        assert_eq!(plain_text("__strong__ and _em_"), "strong and em");
        assert_eq!(
            plain_text("![logo](x.png) [docs](http://d)"),
            "logo docs (http://d)"
        );
        assert_eq!(plain_text("```\nrm -rf /\n```"), "rm -rf /");
        assert_eq!(plain_text("evil\u{1b}[31m red"), "evil[31m red");
        assert_eq!(clean("Deploy\u{1b}[2J EU\nnext"), "Deploy[2J EU\nnext");
    }

    #[test]
    fn options_need_a_login_that_is_whole() {
        let config = |options: &str| BackendConfig {
            name: "af".into(),
            kind: KIND.into(),
            url: "http://127.0.0.1:8080/api/v2/".into(),
            options: toml::from_str(options).unwrap(),
            ..Default::default()
        };
        let b = Airflow::new(
            &config("username = \"admin\""),
            Some("pw".into()),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(b.base, "http://127.0.0.1:8080");
        assert!(Airflow::new(&config("username = \"admin\""), None, Limits::default()).is_err());
        let bearer = Airflow::new(&config(""), Some("jwt".into()), Limits::default()).unwrap();
        assert!(bearer.login.is_none());
        assert_eq!(bearer.cached_jwt().as_deref(), Some("jwt"));
        assert!(Airflow::new(&config(""), None, Limits::default()).is_ok());
        assert!(Airflow::new(&config("user = \"x\""), None, Limits::default()).is_err());
    }

    /// A loopback stand-in for Airflow's auth: JWTs `jwt-1`, `jwt-2`, … where only the
    /// newest is valid, so the first is "expired" once a second login happened.
    async fn auth_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut logins = 0;
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // The head, then as much body as content-length says.
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len || n == 0 {
                            break;
                        }
                    } else if n == 0 {
                        break;
                    }
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                let line = text.lines().next().unwrap_or_default().to_owned();
                let auth = text
                    .lines()
                    .find_map(|l| {
                        l.to_lowercase()
                            .strip_prefix("authorization: bearer ")
                            .map(str::to_owned)
                    })
                    .unwrap_or_default();
                log.lock().unwrap().push(format!("{line} [{auth}]"));
                let (status, body) = if line.starts_with("POST /auth/token") {
                    logins += 1;
                    (
                        "201 Created",
                        format!("{{\"access_token\":\"jwt-{logins}\"}}"),
                    )
                } else if auth == format!("jwt-{logins}") {
                    (
                        "200 OK",
                        "{\"hitl_details\":[],\"total_entries\":0}".to_owned(),
                    )
                } else {
                    (
                        "401 Unauthorized",
                        "{\"detail\":\"Token expired\"}".to_owned(),
                    )
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn an_expired_jwt_means_one_fresh_login_and_one_retry() {
        let (url, seen) = auth_server().await;
        let config = BackendConfig {
            name: "af".into(),
            kind: KIND.into(),
            url,
            options: toml::from_str("username = \"admin\"").unwrap(),
            ..Default::default()
        };
        let b = Airflow::new(&config, Some("pw".into()), Limits::default()).unwrap();
        b.list_pending(&SyncCursor::default()).await.unwrap();
        // The JWT expired: the server refuses it, so one fresh login and one retry.
        b.set_jwt(Some("jwt-0".into()));
        b.list_pending(&SyncCursor::default()).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        let kinds: Vec<String> = seen
            .iter()
            .map(|l| {
                let path = l.split(' ').nth(1).unwrap_or_default();
                let auth = l
                    .rsplit('[')
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches(']');
                format!("{} {auth}", path.split('?').next().unwrap_or_default())
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "/auth/token ",
                "/api/v2/dags/~/dagRuns/~/hitlDetails jwt-1",
                "/api/v2/dags/~/dagRuns/~/hitlDetails jwt-0",
                "/auth/token ",
                "/api/v2/dags/~/dagRuns/~/hitlDetails jwt-2",
            ]
        );
    }
}
