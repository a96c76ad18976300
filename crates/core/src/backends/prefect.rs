//! Prefect 3 paused and suspended flow runs (kind `prefect`). A run that calls
//! `pause_flow_run(wait_for_input=…)` / `suspend_flow_run(…)` sits in a PAUSED-type state
//! whose `state_details.run_input_keyset` names the keys of its input form (a JSON
//! Schema), its description and the answer. Approving or denying is one call, `POST
//! /api/flow_runs/{id}/resume {"run_input": …}`, with the positive or negative answer;
//! Prefect answers `ACCEPT`, `REJECT` (input failed validation) or `ABORT` (not paused)
//! in the body, which is what counts, not the HTTP code.
//!
//! Changes arrive through Prefect's events websocket (`/api/events/out`) where it is
//! reachable: every flow-run state change is an event named `prefect.flow-run.<state
//! name>` whose id is the new state's id; a run that pauses, or one we know to be
//! paused, is re-read (`fetch`) and pushed to the engine. Where the websocket is refused
//! (a proxy without websocket support, an auth string it rejects, …) the same stream
//! polls `POST /api/flow_runs/filter` instead and tries the websocket again now and then.
//! Two faults are the subscription's error instead, so the engine shows the backend
//! degraded and waits before it lists and subscribes again: a socket that never answers
//! the auth message (live updates are off; each reconnect lists) and a 429 on the upgrade
//! (the wait honours `Retry-After`, capped).
//! Prefect has no idempotency key: `decide` re-reads the run first, and a run already
//! resumed counts as delivered only when its stored answer
//! (`GET /api/flow_runs/{id}/input/{response key}`) carries our proof reference.
//!
//! API facts checked against prefect 3.9.1 (`prefect server start`, /api/openapi.json).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::http::{self, Answer};
use super::{
    Backend, BackendError, BackendEvent, BuildError, Capabilities, DecisionDelivery,
    DeliveryOutcome, EventStream, Limits, ListOutcome, SyncCursor,
};
use crate::config::BackendConfig;
use crate::form;
use crate::model::{
    ActionKey, ActionKind, ActionSnapshot, ActionStatus, Decision, Detail, EventSource, InputForm,
    PendingAction, RemoteAction, TimelineEvent, TimelineKind, Verdict,
};

pub const KIND: &str = "prefect";

/// Settings read from `[backends.options]`.
const OPTIONS: &[&str] = &["web_url", "approve_input", "deny_input", "reason_field"];

const PAUSED: &str = "PAUSED";

/// Flow-run events: the resource id is `prefect.flow-run.<uuid>`.
const FLOW_RUN_PREFIX: &str = "prefect.flow-run.";
/// While polling because the websocket was refused, how often to try it again.
const WEBSOCKET_RETRY: Duration = Duration::from_secs(300);
/// The longest `Retry-After` on the websocket upgrade we wait out: a proxy asking for a
/// day must not stop the backend syncing for a day; the next 429 asks again.
const MAX_UPGRADE_RETRY_AFTER: Duration = Duration::from_secs(600);
/// How far back the server replays events when we subscribe: covers the moment
/// between the engine's list and the subscription, so no pause falls in between.
const BACKFILL_SECS: i64 = 60;
/// Reads of a run that may still predate the state its event announced (~6 s in all).
const STALE_READS: usize = 10;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

// Cloned into the task behind `subscribe`: the HTTP client and the shared set are
// reference-counted, the rest is small.
#[derive(Clone)]
pub struct Prefect {
    name: String,
    /// Server root without `/api`.
    base: String,
    web_base: String,
    token: Option<String>,
    limits: Limits,
    client: reqwest::Client,
    approve_input: Option<Map<String, Value>>,
    deny_input: Option<Map<String, Value>>,
    reason_field: Option<String>,
    /// How often the stream polls when the websocket is refused.
    poll_interval: Duration,
    /// The engine's longest wait between reconnects (`max_backoff_secs`): how far apart
    /// its lists are while the socket leaves the backend degraded.
    max_backoff: Duration,
    /// Runs last seen paused: their events matter even when the new state is not a pause.
    known: Arc<Mutex<HashSet<String>>>,
}

impl Prefect {
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
        // Accept both the server root and PREFECT_API_URL (`…/api`).
        let base = url.strip_suffix("/api").unwrap_or(&url).to_owned();
        http::known_options(&config.name, KIND, &config.options, OPTIONS)?;
        let string_option = |key: &str| http::string_option(&config.name, &config.options, key);
        let table_option = |key: &str| -> Result<Option<Map<String, Value>>, BuildError> {
            match config.options.get(key) {
                None => Ok(None),
                Some(toml::Value::Table(t)) => match serde_json::to_value(t) {
                    Ok(Value::Object(map)) => Ok(Some(map)),
                    _ => Err(invalid(format!("option `{key}` must be a table"))),
                },
                Some(_) => Err(invalid(format!("option `{key}` must be a table"))),
            }
        };
        let web_base = string_option("web_url")?
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| base.clone());
        Ok(Self {
            name: config.name.clone(),
            base,
            web_base,
            token,
            client: http::client(&limits).map_err(invalid)?,
            limits,
            approve_input: table_option("approve_input")?,
            deny_input: table_option("deny_input")?,
            reason_field: string_option("reason_field")?,
            poll_interval: config.poll_interval(),
            max_backoff: config.max_backoff(),
            known: Arc::default(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api{path}", self.base)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        http::bearer(request, self.token.as_deref())
    }

    fn error(&self, url: &str, answer: &Answer) -> BackendError {
        if let Some(e) = http::common_error(url, answer) {
            return e;
        }
        http::status_error(url, answer, prefect_message(&answer.body))
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        body: Option<&Value>,
    ) -> Result<T, BackendError> {
        let request = match body {
            Some(body) => self.client.post(url).json(body),
            None => self.client.get(url),
        };
        let answer = http::send(url, &self.limits, self.authorized(request)).await?;
        if !answer.status.is_success() {
            return Err(self.error(url, &answer));
        }
        http::decode(url, &answer.body)
    }

    async fn run(&self, id: &str) -> Result<FlowRun, BackendError> {
        self.call(
            &self.url(&format!("/flow_runs/{}", http::path_segment(id))),
            None,
        )
        .await
    }

    /// A stored run input (schema, description, response); `None` when absent (404).
    async fn input(&self, id: &str, key: &str) -> Result<Option<Value>, BackendError> {
        let url = self.url(&format!(
            "/flow_runs/{}/input/{}",
            http::path_segment(id),
            http::path_segment(key)
        ));
        match self.call(&url, None).await {
            Ok(v) => Ok(Some(v)),
            Err(BackendError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn states(&self, id: &str) -> Result<Vec<State>, BackendError> {
        let url = self.url(&format!(
            "/flow_run_states/?flow_run_id={}",
            http::path_segment(id)
        ));
        let mut states: Vec<State> = self.call(&url, None).await?;
        states.sort_by_key(|s| s.timestamp);
        Ok(states)
    }

    async fn name_of(&self, path: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        self.call::<Named>(&self.url(path), None)
            .await
            .ok()
            .map(|n| n.name)
    }

    /// Everything a reviewer sees about one run.
    async fn enrich(&self, run: FlowRun) -> Result<RemoteAction, BackendError> {
        let flow = self
            .name_of(&format!("/flows/{}", http::path_segment(&run.flow_id)))
            .await
            .unwrap_or_else(|| run.flow_id.clone());
        let deployment = match &run.deployment_id {
            Some(d) => Some(
                self.name_of(&format!("/deployments/{}", http::path_segment(d)))
                    .await
                    .unwrap_or_else(|| d.clone()),
            ),
            None => None,
        };
        let (mut description, mut schema) = (None, None);
        if let Some(keys) = run.keyset() {
            if let Some(v) = self.input(&run.id, &keys.description).await? {
                description = Some(match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                });
            }
            schema = self.input(&run.id, &keys.schema).await?;
        }
        let states = self.states(&run.id).await?;
        let info = RunInfo {
            flow,
            deployment,
            description,
            schema,
        };
        Ok(to_remote(&self.name, &self.web_base, &run, &info, &states))
    }

    /// The answer this decision sends, from the form and the backend's options.
    fn answer(&self, d: &Decision, schema: Option<&Value>) -> Map<String, Value> {
        // The form's defaults, then what the person filled in (checked against the form
        // by the engine), then what the verdict means (the configured or the form's own
        // yes/no), then the reason with the proof reference.
        let mut input: Map<String, Value> = schema
            .map(|s| {
                form::defaults(&InputForm {
                    fields: form::fields_from_object_schema(s),
                    ..InputForm::default()
                })
            })
            .unwrap_or_default();
        if let Some(answer) = &d.answer {
            input.extend(answer.params.clone());
        }
        let configured = match d.verdict {
            Verdict::Approve => self.approve_input.clone(),
            Verdict::Deny => self.deny_input.clone(),
            // Prefect forms offer no options (the engine refuses `choose` for them).
            Verdict::Choose => None,
        };
        let overlay = configured.unwrap_or_else(|| {
            let mut m = Map::new();
            if schema.is_some_and(|s| field_type(s, "approved") == Some("boolean")) {
                m.insert(
                    "approved".into(),
                    Value::Bool(d.verdict == Verdict::Approve),
                );
            }
            m
        });
        input.extend(overlay);
        let reason_field = self.reason_field.clone().or_else(|| {
            schema
                .filter(|s| field_type(s, "reason") == Some("string"))
                .map(|_| "reason".to_owned())
        });
        if let Some(field) = reason_field {
            input.insert(field, Value::String(reason_text(d)));
        }
        input
    }
}

/// Why the events websocket cannot be followed now.
#[derive(Debug)]
enum Unusable {
    /// Refused outright (no websocket upgrade, e.g. a proxy without websocket support; an
    /// auth rejection; no handshake in time): the stream polls instead and the backend
    /// stays `ok`, as it has been documented to (docs/backends.md).
    Refused(String),
    /// A fault the person must see and the engine must wait out, returned as the
    /// subscription's error (the engine marks the backend degraded, waits, lists and
    /// subscribes again): the socket opened but never answered auth, so live updates are
    /// off while every reconnect lists; or the upgrade was answered 429 (`Retry-After`).
    Degraded(BackendError),
}

/// What one websocket message means for us.
enum Seen {
    /// A state change of a run that pauses or that we know paused.
    Run {
        event_id: String,
        run_id: String,
        /// When the state the event announces began, to tell a stale read from it.
        state_at: Option<DateTime<Utc>>,
    },
    /// Anything else: other runs' changes, other message types.
    Nothing,
}

impl Prefect {
    /// `ws(s)://…/api/events/out` for the configured server.
    fn events_url(&self) -> String {
        let rest = self
            .base
            .strip_prefix("https://")
            .map(|r| format!("wss://{r}"))
            .or_else(|| {
                self.base
                    .strip_prefix("http://")
                    .map(|r| format!("ws://{r}"))
            })
            .unwrap_or_else(|| self.base.clone());
        format!("{rest}/api/events/out")
    }

    fn remember(&self, action: &RemoteAction) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let id = action.action.key.external_id.clone();
        if action.action.snapshot.status == ActionStatus::Pending {
            known.insert(id);
        } else {
            known.remove(&id);
        }
    }

    fn is_known(&self, id: &str) -> bool {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    /// The error shown while the socket takes the auth message and never answers it.
    fn auth_unanswered(&self, url: &str) -> BackendError {
        let auth = self.limits.request_timeout.as_secs();
        // The engine lists on each reconnect, and reconnects at most `max_backoff` after
        // a failure, plus the auth wait of the attempt itself.
        let every = self.max_backoff.as_secs() + auth;
        BackendError::Unreachable {
            url: url.to_owned(),
            detail: format!(
                "live updates off for {}, polling at least every {every} s instead: the \
                 events socket did not answer auth within {auth} s",
                self.name
            ),
        }
    }

    /// Opens the events websocket: the `prefect` subprotocol, the auth message (our
    /// token, or none for Prefect OSS without an auth string) and a filter on flow-run
    /// events since a minute ago. Most failures are a reason to poll instead; an auth
    /// message never answered and a 429 are [`Unusable::Degraded`].
    async fn connect_events(&self) -> Result<Socket, Unusable> {
        let refused = Unusable::Refused;
        let url = self.events_url();
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| refused(format!("bad websocket address {url}: {e}")))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("prefect"),
        );
        let max = self.limits.max_event_bytes;
        let config = WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        let (mut socket, _) = tokio::time::timeout(self.limits.connect_timeout, connect)
            .await
            .map_err(|_| {
                refused(format!(
                    "{url}: no websocket handshake within {} s",
                    self.limits.connect_timeout.as_secs()
                ))
            })?
            .map_err(|e| match e {
                tungstenite::Error::Http(response) => self.upgrade_refused(&url, *response),
                e => refused(format!("{url}: {e}")),
            })?;
        // The token travels only inside the socket; it is never logged.
        let auth = serde_json::json!({"type": "auth", "token": self.token});
        let handshake = async {
            socket
                .send(Message::text(auth.to_string()))
                .await
                .map_err(|e| e.to_string())?;
            loop {
                match socket.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let reply: Value = serde_json::from_str(text.as_str())
                            .map_err(|e| format!("unreadable auth reply: {e}"))?;
                        return match reply.get("type").and_then(Value::as_str) {
                            Some("auth_success") => Ok(()),
                            other => Err(format!("auth answered {other:?}")),
                        };
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Err(format!("closed at auth: {}", close_reason(frame.as_ref())))
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("closed at auth".into()),
                }
            }
        };
        tokio::time::timeout(self.limits.request_timeout, handshake)
            .await
            .map_err(|_| Unusable::Degraded(self.auth_unanswered(&url)))?
            .map_err(|e| refused(format!("{url}: {e}")))?;
        let now = Utc::now();
        let filter = serde_json::json!({
            "type": "filter",
            "backfill": true,
            "filter": {
                "occurred": {
                    "since": (now - chrono::Duration::seconds(BACKFILL_SECS)).to_rfc3339(),
                    // The server drops live events after `until`: far ahead.
                    "until": (now + chrono::Duration::days(3650)).to_rfc3339(),
                },
                "event": {"prefix": [FLOW_RUN_PREFIX]},
                "resource": {"id_prefix": [FLOW_RUN_PREFIX]},
            },
        });
        socket
            .send(Message::text(filter.to_string()))
            .await
            .map_err(|e| refused(format!("{url}: {e}")))?;
        Ok(socket)
    }

    /// An upgrade answered with an HTTP status instead of 101. A 429 (or a 503 with
    /// `Retry-After`) is read as every backend's HTTP answers are ([`http::common_error`]),
    /// its wait capped; any other status means no websocket here: poll instead.
    fn upgrade_refused(
        &self,
        url: &str,
        response: tungstenite::http::Response<Option<Vec<u8>>>,
    ) -> Unusable {
        let (head, body) = response.into_parts();
        let answer = Answer {
            status: head.status,
            headers: head.headers,
            body: body.unwrap_or_default().into(),
        };
        match http::common_error(url, &answer) {
            Some(BackendError::RateLimited { url, retry_after }) => {
                Unusable::Degraded(BackendError::RateLimited {
                    url,
                    retry_after: retry_after.min(MAX_UPGRADE_RETRY_AFTER),
                })
            }
            _ => Unusable::Refused(format!("{url} answered HTTP {}", answer.status)),
        }
    }

    /// The run as of an event about it. Prefect announces a state change before the
    /// change is visible to readers, so a read that still shows an older state is
    /// repeated a few times; if it stays stale, the error ends the stream and the
    /// engine's list on reconnecting settles the run.
    async fn fetch_after(
        &self,
        id: &str,
        state_id: &str,
        state_at: Option<DateTime<Utc>>,
    ) -> Result<RemoteAction, BackendError> {
        let mut wait = Duration::from_millis(50);
        for _ in 0..STALE_READS {
            let run = self.run(id).await?;
            let current = run.state.as_ref();
            let fresh = current.is_some_and(|s| {
                s.id.as_deref() == Some(state_id) || state_at.is_none_or(|at| s.timestamp >= at)
            });
            if fresh {
                return self.enrich(run).await;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
        Err(BackendError::Unreachable {
            url: self.url(&format!("/flow_runs/{}", http::path_segment(id))),
            detail: format!("the run still does not show state {state_id} its event announced"),
        })
    }

    /// What a text message from the websocket is about.
    fn classify(&self, url: &str, text: &str) -> Result<Seen, BackendError> {
        #[derive(Deserialize)]
        struct Envelope {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            event: Option<Event>,
        }
        #[derive(Deserialize)]
        struct Event {
            id: String,
            event: String,
            #[serde(default)]
            resource: Map<String, Value>,
        }
        let envelope: Envelope = http::decode(url, text.as_bytes())?;
        let Some(event) = envelope.event.filter(|_| envelope.kind == "event") else {
            return Ok(Seen::Nothing);
        };
        let label = |key: &str| event.resource.get(key).and_then(Value::as_str);
        let run_id = label("prefect.resource.id").and_then(|r| r.strip_prefix(FLOW_RUN_PREFIX));
        // Only state changes carry a state type; other flow-run events do not move it.
        let state_type = label("prefect.state-type");
        match (run_id, state_type) {
            (Some(run_id), Some(state_type))
                if event.event.starts_with(FLOW_RUN_PREFIX)
                    && (state_type == PAUSED || self.is_known(run_id)) =>
            {
                Ok(Seen::Run {
                    state_at: label("prefect.state-timestamp")
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc)),
                    event_id: event.id,
                    run_id: run_id.to_owned(),
                })
            }
            _ => Ok(Seen::Nothing),
        }
    }

    /// Follows the websocket until it fails or the engine stops listening. Pings keep a
    /// quiet stream provably alive; silence longer than the idle limit ends it.
    async fn follow(
        self,
        mut socket: Socket,
        tx: mpsc::Sender<Result<BackendEvent, BackendError>>,
    ) {
        let url = self.events_url();
        let idle = self.limits.stream_idle_timeout;
        let every = (idle / 3).max(Duration::from_millis(100));
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // After a slow fetch, one ping is enough, not a burst of the missed ones.
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut deadline = tokio::time::Instant::now() + idle;
        let failure = loop {
            tokio::select! {
                _ = tx.closed() => {
                    let _ = socket.close(None).await;
                    return;
                }
                _ = ping.tick() => {
                    if let Err(e) = socket.send(Message::Ping(Default::default())).await {
                        break ws_error(&url, &self.limits, e);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    break BackendError::Timeout { url, secs: idle.as_secs() };
                }
                message = socket.next() => {
                    deadline = tokio::time::Instant::now() + idle;
                    let text = match message {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(frame))) => break BackendError::Unreachable {
                            url,
                            detail: format!(
                                "the server closed the event stream: {}",
                                close_reason(frame.as_ref())
                            ),
                        },
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => break ws_error(&url, &self.limits, e),
                        None => break BackendError::Unreachable {
                            url,
                            detail: "the event stream ended".into(),
                        },
                    };
                    let (event_id, run_id, state_at) =
                        match self.classify(&url, text.as_str()) {
                            Ok(Seen::Run {
                                event_id,
                                run_id,
                                state_at,
                            }) => (event_id, run_id, state_at),
                            Ok(Seen::Nothing) => continue,
                            Err(e) => break e,
                        };
                    let item = match self.fetch_after(&run_id, &event_id, state_at).await {
                        Ok(action) => {
                            self.remember(&action);
                            BackendEvent::Upsert { event_id: Some(event_id), action }
                        }
                        // Deleted since: the engine's next list settles it.
                        Err(BackendError::NotFound(_)) => continue,
                        Err(e) => break e,
                    };
                    if tx.send(Ok(item)).await.is_err() {
                        return;
                    }
                    // The fetch and the send took time the server did not spend silent.
                    deadline = tokio::time::Instant::now() + idle;
                }
            }
        };
        let _ = tx.send(Err(failure)).await;
    }

    /// The stream where the websocket is refused: a list every poll interval, each
    /// pending run pushed, and runs that left the list re-read. Tries the websocket
    /// again every few minutes and follows it once it answers.
    async fn poll_instead(self, why: String, tx: mpsc::Sender<Result<BackendEvent, BackendError>>) {
        tracing::warn!(
            backend = %self.name,
            "Prefect events websocket not usable ({why}); polling every {:?}",
            self.poll_interval
        );
        let mut tried = Instant::now();
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
            if tried.elapsed() >= WEBSOCKET_RETRY {
                tried = Instant::now();
                match self.connect_events().await {
                    Ok(socket) => {
                        tracing::info!(
                            backend = %self.name,
                            "Prefect events websocket reachable again"
                        );
                        // One more list covers what changed before the socket opened.
                        if self.poll_pass(&tx).await {
                            self.follow(socket, tx).await;
                        }
                        return;
                    }
                    Err(Unusable::Refused(why)) => tracing::debug!(
                        backend = %self.name,
                        "events websocket still not usable: {why}"
                    ),
                    // Now a fault to show and wait out: the engine takes it from here.
                    Err(Unusable::Degraded(e)) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            if !self.poll_pass(&tx).await {
                return;
            }
        }
    }

    /// One polling pass into the stream; false once the stream is over.
    async fn poll_pass(&self, tx: &mpsc::Sender<Result<BackendEvent, BackendError>>) -> bool {
        let before: HashSet<String> = self.known.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let actions = match self.list_pending(&SyncCursor::default()).await {
            Ok(ListOutcome::Listed { actions, .. }) => actions,
            Ok(ListOutcome::NotModified) => Vec::new(),
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return false;
            }
        };
        let listed: HashSet<&str> = actions
            .iter()
            .map(|a| a.action.key.external_id.as_str())
            .collect();
        let mut gone: Vec<String> = before
            .into_iter()
            .filter(|id| !listed.contains(id.as_str()))
            .collect();
        gone.sort();
        for action in actions {
            let item = BackendEvent::Upsert {
                event_id: None,
                action,
            };
            if tx.send(Ok(item)).await.is_err() {
                return false;
            }
        }
        for id in gone {
            let item = match self.fetch(&id).await {
                Ok(action) => Ok(BackendEvent::Upsert {
                    event_id: None,
                    action,
                }),
                // Deleted: ending the stream makes the engine list again, and its list
                // is what marks a vanished run cancelled.
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return false;
            }
        }
        true
    }
}

/// A websocket failure as a backend error: what the server sent that no websocket server
/// may send (bad frames, text that is not UTF-8) is malformed data, not a network fault.
fn ws_error(url: &str, limits: &Limits, e: tungstenite::Error) -> BackendError {
    use tungstenite::error::ProtocolError;
    let malformed = |detail: String| BackendError::Malformed {
        url: url.to_owned(),
        field: "(frame)".into(),
        detail,
    };
    match e {
        tungstenite::Error::Capacity(_) => BackendError::TooLarge {
            url: url.to_owned(),
            limit: limits.max_event_bytes,
        },
        tungstenite::Error::Utf8(detail) => {
            malformed(format!("a text message is not UTF-8: {detail}"))
        }
        tungstenite::Error::AttackAttempt => malformed(e.to_string()),
        // The connection ended or broke: the network's doing, not the data's.
        tungstenite::Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake
            | ProtocolError::SendAfterClosing
            | ProtocolError::HandshakeIncomplete,
        ) => BackendError::Unreachable {
            url: url.to_owned(),
            detail: e.to_string(),
        },
        tungstenite::Error::Protocol(p) => malformed(p.to_string()),
        e => BackendError::Unreachable {
            url: url.to_owned(),
            detail: e.to_string(),
        },
    }
}

fn close_reason(frame: Option<&tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        Some(f) if !f.reason.is_empty() => format!("{} ({})", f.reason.as_str(), f.code),
        Some(f) => f.code.to_string(),
        None => "no reason given".into(),
    }
}

#[async_trait]
impl Backend for Prefect {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list: true,
            fetch: true,
            decide: true,
            subscribe: true,
        }
    }

    async fn list_pending(&self, _cursor: &SyncCursor) -> Result<ListOutcome, BackendError> {
        // PAUSED covers suspended runs too (their state name is "Suspended").
        let url = self.url("/flow_runs/filter");
        let mut actions = Vec::new();
        let mut offset = 0usize;
        const PAGE: usize = 200;
        loop {
            let body = serde_json::json!({
                "flow_runs": {"state": {"type": {"any_": [PAUSED]}}},
                "sort": "EXPECTED_START_TIME_ASC",
                "limit": PAGE,
                "offset": offset,
            });
            let runs: Vec<FlowRun> = self.call(&url, Some(&body)).await?;
            let n = runs.len();
            for run in runs {
                match self.enrich(run).await {
                    Ok(a) => actions.push(a),
                    // Deleted between the list and its details: gone, not an error.
                    Err(BackendError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            if n < PAGE {
                break;
            }
            offset += n;
        }
        // The pending set as of now: events about these runs matter from here on.
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = actions
            .iter()
            .map(|a| a.action.key.external_id.clone())
            .collect();
        Ok(ListOutcome::Listed {
            actions,
            etag: None,
            cursor: None,
        })
    }

    async fn fetch(&self, external_id: &str) -> Result<RemoteAction, BackendError> {
        let run = self.run(external_id).await?;
        self.enrich(run).await
    }

    /// Prefect keeps no resume point we could use (`last_event_id`): the engine lists
    /// right before subscribing, and the subscription replays the last minute. An error
    /// here is an [`Unusable::Degraded`] socket: the engine shows it and retries.
    async fn subscribe(&self, _last_event_id: Option<String>) -> Result<EventStream, BackendError> {
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        match self.connect_events().await {
            Ok(socket) => {
                tokio::spawn(this.follow(socket, tx));
            }
            Err(Unusable::Refused(why)) => {
                tokio::spawn(this.poll_instead(why, tx));
            }
            Err(Unusable::Degraded(e)) => return Err(e),
        }
        Ok(rx)
    }

    async fn decide(&self, delivery: &DecisionDelivery) -> Result<DeliveryOutcome, BackendError> {
        let d = &delivery.decision;
        let id = &d.action.external_id;
        // No idempotency key at Prefect: look before resuming.
        let run = self.run(id).await?;
        if !run.is_paused() {
            // Our own earlier resume whose answer was lost? Its stored input says so.
            let states = self.states(id).await?;
            let response_key = states
                .iter()
                .rev()
                .find_map(|s| s.state_details.as_ref()?.run_input_keyset.clone())
                .map(|k| k.response);
            if let Some(key) = response_key {
                if let Some(stored) = self.input(id, &key).await? {
                    if stored
                        .to_string()
                        .contains(&crate::audit::proof_reference(d))
                    {
                        let action = self.enrich(run).await.ok().map(Box::new);
                        return Ok(DeliveryOutcome::Delivered { action });
                    }
                }
            }
            return Ok(DeliveryOutcome::NotPending {
                status: map_status(&run).as_str().to_owned(),
            });
        }
        let body = match run.keyset() {
            Some(keys) => {
                let schema = self.input(id, &keys.schema).await?;
                let input = self.answer(d, schema.as_ref());
                serde_json::json!({ "run_input": input })
            }
            // A plain pause has no form: resuming is the only answer it understands.
            None if d.verdict == Verdict::Approve => serde_json::json!({}),
            None => {
                return Ok(DeliveryOutcome::Rejected {
                    reason: "this run paused without an input form, so it cannot be told \
                             \"no\"; cancel it in Prefect instead"
                        .into(),
                })
            }
        };
        let url = self.url(&format!("/flow_runs/{}/resume", http::path_segment(id)));
        let result: OrchestrationResult = self.call(&url, Some(&body)).await?;
        let reason = || {
            result
                .details
                .as_ref()
                .and_then(|d| d.get("reason"))
                .and_then(Value::as_str)
                .map_or_else(
                    || result.details.clone().unwrap_or(Value::Null).to_string(),
                    str::to_owned,
                )
        };
        match result.status.as_str() {
            "ACCEPT" => {
                let action = match self.run(id).await {
                    Ok(run) => self.enrich(run).await.ok().map(Box::new),
                    Err(_) => None,
                };
                Ok(DeliveryOutcome::Delivered { action })
            }
            "REJECT" => Ok(DeliveryOutcome::Rejected {
                reason: format!("Prefect rejected the input: {}", reason()),
            }),
            "ABORT" => Ok(DeliveryOutcome::NotPending {
                status: format!("not paused ({})", reason()),
            }),
            other => Err(BackendError::Malformed {
                url,
                field: "status".into(),
                detail: format!("unknown orchestration status `{other}` ({})", reason()),
            }),
        }
    }
}

/// `schemas/core.py` `FlowRun`, the parts read here.
#[derive(Debug, Clone, Deserialize)]
struct FlowRun {
    id: String,
    #[serde(default)]
    name: String,
    flow_id: String,
    #[serde(default)]
    deployment_id: Option<String>,
    #[serde(default)]
    parameters: Value,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    created_by: Option<CreatedBy>,
    #[serde(default)]
    created: Option<DateTime<Utc>>,
    #[serde(default)]
    state: Option<State>,
}

impl FlowRun {
    fn is_paused(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.kind == PAUSED)
    }

    fn keyset(&self) -> Option<&Keyset> {
        self.state
            .as_ref()?
            .state_details
            .as_ref()?
            .run_input_keyset
            .as_ref()
    }
}

#[derive(Debug, Clone, Deserialize)]
struct CreatedBy {
    #[serde(default)]
    display_value: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct State {
    #[serde(default)]
    id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    timestamp: DateTime<Utc>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    state_details: Option<StateDetails>,
}

#[derive(Debug, Clone, Deserialize)]
struct StateDetails {
    #[serde(default)]
    pause_timeout: Option<DateTime<Utc>>,
    #[serde(default)]
    run_input_keyset: Option<Keyset>,
}

#[derive(Debug, Clone, Deserialize)]
struct Keyset {
    description: String,
    response: String,
    schema: String,
}

#[derive(Debug, Deserialize)]
struct OrchestrationResult {
    status: String,
    #[serde(default)]
    details: Option<Value>,
}

struct RunInfo {
    flow: String,
    deployment: Option<String>,
    description: Option<String>,
    schema: Option<Value>,
}

/// FastAPI errors are `{"detail": …}`.
fn prefect_message(body: &[u8]) -> String {
    http::message_field(body, "detail")
}

fn map_status(run: &FlowRun) -> ActionStatus {
    match run.state.as_ref().map(|s| s.kind.as_str()) {
        Some(PAUSED) => ActionStatus::Pending,
        Some("CANCELLED" | "CANCELLING") => ActionStatus::Cancelled,
        Some("FAILED" | "CRASHED") => ActionStatus::Failed,
        // Resumed: running again or done.
        _ => ActionStatus::Executed,
    }
}

/// The `type` of one property of a JSON Schema form.
fn field_type<'a>(schema: &'a Value, field: &str) -> Option<&'a str> {
    schema.get("properties")?.get(field)?.get("type")?.as_str()
}

/// The free text sent with an answer: the reason, then the proof reference.
fn reason_text(d: &Decision) -> String {
    let proof = crate::audit::proof_reference(d);
    let reason = d.reason.trim();
    if reason.is_empty() {
        proof
    } else {
        format!("{reason} {proof}")
    }
}

fn requester(run: &FlowRun) -> String {
    if let Some(by) = &run.created_by {
        if let Some(v) = by.display_value.as_deref().filter(|v| !v.trim().is_empty()) {
            return match by.kind.as_deref() {
                Some(k) if !k.is_empty() => format!("{v} ({})", k.to_lowercase()),
                _ => v.to_owned(),
            };
        }
    }
    if run.tags.is_empty() {
        "prefect".into()
    } else {
        format!("prefect ({})", run.tags.join(", "))
    }
}

fn to_remote(
    backend: &str,
    web_base: &str,
    run: &FlowRun,
    info: &RunInfo,
    states: &[State],
) -> RemoteAction {
    let state = run.state.as_ref();
    let details_of = state.and_then(|s| s.state_details.as_ref());
    let requester = requester(run);
    let mut details = Vec::new();
    let mut add = |key: &str, value: String| {
        details.push(Detail {
            key: key.into(),
            value,
        })
    };
    add("flow", info.flow.clone());
    if let Some(dep) = &info.deployment {
        add("deployment", dep.clone());
    }
    add("flow run", format!("{} ({})", run.name, run.id));
    if let Some(s) = state {
        add(
            "state",
            s.name.clone().unwrap_or_else(|| s.kind.to_lowercase()),
        );
    }
    let params = match &run.parameters {
        Value::Null => "{}".to_owned(),
        p => serde_json::to_string_pretty(p).unwrap_or_default(),
    };
    add("parameters", params);
    if let Some(description) = &info.description {
        add("input description", description.clone());
    }
    if !run.tags.is_empty() {
        add("tags", run.tags.join(", "));
    }
    let requested_at = state
        .map(|s| s.timestamp)
        .or(run.created)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let summary = info
        .description
        .as_deref()
        .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()))
        .map(|l| l.chars().take(160).collect())
        .unwrap_or_default();
    let snapshot = ActionSnapshot {
        kind: ActionKind::FlowRun,
        title: format!("{} / {} waits for input", info.flow, run.name),
        summary,
        requester: requester.clone(),
        requested_at,
        expires_at: details_of.and_then(|d| d.pause_timeout),
        resource: match &info.deployment {
            Some(dep) => format!("{}/{dep}", info.flow),
            None => info.flow.clone(),
        },
        details,
        approvals_required: 1,
        reviews: Vec::new(),
        status: map_status(run),
        web_url: Some(format!(
            "{web_base}/runs/flow-run/{}",
            http::path_segment(&run.id)
        )),
        form: info.schema.as_ref().map(|schema| InputForm {
            fields: form::fields_from_object_schema(schema),
            ..InputForm::default()
        }),
    };
    RemoteAction {
        action: PendingAction::new(ActionKey::new(backend, &run.id), snapshot),
        timeline: timeline(run, states),
    }
}

/// The run's state history, one backend event per state.
fn timeline(run: &FlowRun, states: &[State]) -> Vec<TimelineEvent> {
    let mut previous_paused = false;
    states
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = s.name.clone().unwrap_or_else(|| s.kind.to_lowercase());
            let (kind, mut text) = match s.kind.as_str() {
                PAUSED => (TimelineKind::Requested, format!("{name}: waits for input")),
                "RUNNING" if previous_paused => (TimelineKind::Updated, "Resumed".to_owned()),
                "COMPLETED" => (TimelineKind::Executed, name.clone()),
                "CANCELLED" | "CANCELLING" => (TimelineKind::Cancelled, name.clone()),
                "FAILED" | "CRASHED" => (TimelineKind::Other, name.clone()),
                _ => (TimelineKind::Updated, name.clone()),
            };
            previous_paused = s.kind == PAUSED;
            if let Some(m) = s.message.as_deref().filter(|m| !m.trim().is_empty()) {
                text = format!("{text} — {}", m.trim());
            }
            let id = s.id.clone().unwrap_or_else(|| format!("{i}:{}", s.kind));
            TimelineEvent {
                at: s.timestamp,
                source: EventSource::Backend,
                kind,
                actor: None,
                text,
                external_id: Some(format!("prefect:{}:{id}", run.id)),
            }
        })
        .collect()
}

/// Fuzzing entry (see [`super::fuzzing`]): `flow runs \n states \n input schema`,
/// through decoding and the mapping to actions (forms from the schema included).
pub(super) fn fuzz_parse(data: &[u8]) {
    let (runs, rest) = super::fuzzing::split(data);
    let (states, schema) = super::fuzzing::split(rest);
    let states: Vec<State> = serde_json::from_slice(states).unwrap_or_default();
    let info = RunInfo {
        flow: "flow".into(),
        deployment: None,
        description: Some(String::from_utf8_lossy(schema).into_owned()),
        schema: serde_json::from_slice(schema).ok(),
    };
    if let Ok(runs) = http::decode::<Vec<FlowRun>>("http://fuzz", runs) {
        for run in &runs {
            let _ = to_remote("fuzz", "http://prefect", run, &info, &states);
            let _ = map_status(run);
        }
    }
    let _ = prefect_message(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "title": "ApprovalInput", "type": "object",
            "properties": {
                "reason": {"title": "Reason", "type": "string", "default": "", "position": 1},
                "approved": {"title": "Approved", "type": "boolean", "position": 0}
            },
            "required": ["approved"]
        })
    }

    fn run() -> FlowRun {
        serde_json::from_value(json!({
            "id": "0b7e0a3c-1111-2222-3333-444455556666",
            "name": "brave-otter",
            "flow_id": "f1",
            "deployment_id": null,
            "parameters": {"target": "prod"},
            "tags": [],
            "created_by": null,
            "created": "2026-11-25T02:00:00Z",
            "state": {
                "id": "s2", "type": "PAUSED", "name": "Paused",
                "timestamp": "2026-11-25T02:00:05Z", "message": null,
                "state_details": {
                    "pause_timeout": "2026-11-25T02:10:05Z",
                    "run_input_keyset": {"description": "paused-1-description",
                        "response": "paused-1-response", "schema": "paused-1-schema"}
                }
            }
        }))
        .unwrap()
    }

    fn states() -> Vec<State> {
        serde_json::from_value(json!([
            {"id": "s1", "type": "RUNNING", "name": "Running", "timestamp": "2026-11-25T02:00:01Z"},
            {"id": "s2", "type": "PAUSED", "name": "Paused", "timestamp": "2026-11-25T02:00:05Z"}
        ]))
        .unwrap()
    }

    #[test]
    fn a_paused_run_maps_to_a_pending_flow_run_with_its_form() {
        let info = RunInfo {
            flow: "deploy".into(),
            deployment: Some("nightly".into()),
            description: Some("Ship **v2**?\nSecond line".into()),
            schema: Some(schema()),
        };
        let r = to_remote("pf", "http://ui", &run(), &info, &states());
        let s = &r.action.snapshot;
        assert_eq!(s.kind, ActionKind::FlowRun);
        assert_eq!(s.title, "deploy / brave-otter waits for input");
        assert_eq!(s.requester, "prefect");
        assert_eq!(s.status, ActionStatus::Pending);
        assert_eq!(s.summary, "Ship **v2**?");
        assert_eq!(
            s.expires_at.unwrap().to_rfc3339(),
            "2026-11-25T02:10:05+00:00"
        );
        assert_eq!(
            s.web_url.as_deref(),
            Some("http://ui/runs/flow-run/0b7e0a3c-1111-2222-3333-444455556666")
        );
        let get = |k: &str| s.details.iter().find(|d| d.key == k).unwrap().value.clone();
        assert_eq!(
            s.form
                .as_ref()
                .unwrap()
                .fields
                .iter()
                .map(|f| (f.name.as_str(), f.field_type, f.required))
                .collect::<Vec<_>>(),
            [
                ("approved", crate::model::FieldType::Boolean, true),
                ("reason", crate::model::FieldType::Text, false)
            ]
        );
        assert_eq!(get("input description"), "Ship **v2**?\nSecond line");
        assert_eq!(get("deployment"), "nightly");
        assert!(get("parameters").contains("\"target\": \"prod\""));
        assert_eq!(r.timeline.len(), 2);
        assert_eq!(r.timeline[1].kind, TimelineKind::Requested);
        assert_eq!(
            r.timeline[1].external_id.as_deref(),
            Some("prefect:0b7e0a3c-1111-2222-3333-444455556666:s2")
        );
    }

    #[test]
    fn the_requester_comes_from_created_by_or_tags() {
        let mut r = run();
        r.tags = vec!["ops".into()];
        assert_eq!(requester(&r), "prefect (ops)");
        r.created_by = Some(CreatedBy {
            display_value: Some("nightly".into()),
            kind: Some("DEPLOYMENT".into()),
        });
        assert_eq!(requester(&r), "nightly (deployment)");
    }

    fn backend(options: toml::Table) -> Prefect {
        let config = BackendConfig {
            name: "pf".into(),
            kind: KIND.into(),
            url: "http://127.0.0.1:4200/api/".into(),
            options,
            ..Default::default()
        };
        Prefect::new(&config, None, Limits::default()).unwrap()
    }

    fn decision(verdict: Verdict, reason: &str) -> Decision {
        Decision {
            action: ActionKey::new("pf", "x"),
            verdict,
            reason: reason.into(),
            decided_at: Utc::now(),
            approver: "ana".into(),
            snapshot_hash: crate::snapshot::SnapshotHash("00".repeat(32)),
            idempotency_key: "k".into(),
            key_fingerprint: Some("SHA256:abc".into()),
            public_key: None,
            signature: None,
            delivery: crate::model::DeliveryState::Queued,
            answer: None,
        }
    }

    #[test]
    fn answers_merge_defaults_options_and_the_reason_with_its_proof() {
        let b = backend(toml::Table::new());
        assert_eq!(b.base, "http://127.0.0.1:4200");
        let yes = b.answer(&decision(Verdict::Approve, ""), Some(&schema()));
        assert_eq!(yes["approved"], json!(true));
        assert!(yes["reason"]
            .as_str()
            .unwrap()
            .starts_with("[countersign SHA256:abc"));
        let no = b.answer(&decision(Verdict::Deny, "not tonight"), Some(&schema()));
        assert_eq!(no["approved"], json!(false));
        assert!(no["reason"]
            .as_str()
            .unwrap()
            .starts_with("not tonight [countersign"));

        let options: toml::Table =
            toml::from_str("deny_input = { decision = \"reject\" }\nreason_field = \"comment\"")
                .unwrap();
        let b = backend(options);
        let no = b.answer(&decision(Verdict::Deny, "no"), Some(&schema()));
        assert_eq!(no["decision"], json!("reject"));
        assert!(no.get("approved").is_none());
        assert!(no["comment"]
            .as_str()
            .unwrap()
            .starts_with("no [countersign"));
        assert_eq!(no["reason"], json!(""), "the form's default stays");
    }

    #[test]
    fn unknown_options_and_wrong_types_are_refused() {
        let config = |options: &str| BackendConfig {
            name: "pf".into(),
            kind: KIND.into(),
            url: "http://x".into(),
            options: toml::from_str(options).unwrap(),
            ..Default::default()
        };
        assert!(Prefect::new(&config("approve_inputs = {}"), None, Limits::default()).is_err());
        assert!(Prefect::new(&config("approve_input = 1"), None, Limits::default()).is_err());
        assert!(Prefect::new(&config("web_url = \"http://ui/\""), None, Limits::default()).is_ok());
    }

    #[test]
    fn the_events_websocket_lives_beside_the_api() {
        assert_eq!(
            backend(toml::Table::new()).events_url(),
            "ws://127.0.0.1:4200/api/events/out"
        );
        let config = BackendConfig {
            name: "pf".into(),
            kind: KIND.into(),
            url: "https://prefect.example.com/team/api".into(),
            ..Default::default()
        };
        let b = Prefect::new(&config, None, Limits::default()).unwrap();
        assert_eq!(
            b.events_url(),
            "wss://prefect.example.com/team/api/events/out"
        );
    }

    fn event(name: &str, state_type: Option<&str>) -> String {
        let mut resource = json!({
            "prefect.resource.id": "prefect.flow-run.0b7e0a3c-1111-2222-3333-444455556666",
            "prefect.resource.name": "brave-otter",
        });
        if let Some(t) = state_type {
            resource["prefect.state-type"] = json!(t);
            resource["prefect.state-timestamp"] = json!("2026-11-25T02:00:05.5+00:00");
        }
        json!({"type": "event", "event": {
            "id": "s3", "event": name, "occurred": "2026-11-25T02:00:05.5Z",
            "resource": resource, "related": [], "payload": {}
        }})
        .to_string()
    }

    #[test]
    fn only_state_events_of_pausing_or_known_runs_are_followed() {
        let b = backend(toml::Table::new());
        let seen = |text: &str| match b.classify("ws://x", text).unwrap() {
            Seen::Run {
                event_id,
                run_id,
                state_at,
            } => Some((event_id, run_id, state_at.map(|t| t.to_rfc3339()))),
            Seen::Nothing => None,
        };
        assert_eq!(
            seen(&event("prefect.flow-run.Paused", Some("PAUSED"))),
            Some((
                "s3".into(),
                "0b7e0a3c-1111-2222-3333-444455556666".into(),
                Some("2026-11-25T02:00:05.500+00:00".into())
            ))
        );
        // A run we never saw paused going to Running, and heartbeats: not ours.
        assert_eq!(
            seen(&event("prefect.flow-run.Running", Some("RUNNING"))),
            None
        );
        assert_eq!(seen(&event("prefect.flow-run.heartbeat", None)), None);
        assert_eq!(seen(r#"{"type":"auth_success"}"#), None);
        // Once it was seen paused, its next state matters.
        b.known
            .lock()
            .unwrap()
            .insert("0b7e0a3c-1111-2222-3333-444455556666".into());
        assert!(seen(&event("prefect.flow-run.Running", Some("RUNNING"))).is_some());
        assert!(matches!(
            b.classify("ws://x", "not json"),
            Err(BackendError::Malformed { .. })
        ));
    }

    #[test]
    fn socket_failures_say_whether_the_data_or_the_connection_was_at_fault() {
        use tungstenite::error::{CapacityError, ProtocolError};
        let code = |e: tungstenite::Error| ws_error("ws://x", &Limits::default(), e).code();
        assert_eq!(code(tungstenite::Error::Utf8("bad".into())), "malformed");
        assert_eq!(
            code(tungstenite::Error::Protocol(
                ProtocolError::NonZeroReservedBits
            )),
            "malformed"
        );
        assert_eq!(
            code(tungstenite::Error::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
            )),
            "unreachable"
        );
        assert_eq!(
            code(tungstenite::Error::Capacity(
                CapacityError::MessageTooLong {
                    size: 2,
                    max_size: 1
                }
            )),
            "too_large"
        );
        assert_eq!(code(tungstenite::Error::ConnectionClosed), "unreachable");
    }

    #[test]
    fn a_429_upgrade_waits_its_retry_after_capped_and_other_statuses_poll() {
        let b = backend(toml::Table::new());
        let upgrade = |status: u16, retry_after: Option<&str>| {
            let mut response = tungstenite::http::Response::builder().status(status);
            if let Some(r) = retry_after {
                response = response.header("retry-after", r);
            }
            b.upgrade_refused("ws://x", response.body(None).unwrap())
        };
        let wait = |u: Unusable| match u {
            Unusable::Degraded(e @ BackendError::RateLimited { .. }) => e.retry_after(),
            other => panic!("not rate limited: {other:?}"),
        };
        assert_eq!(wait(upgrade(429, Some("2"))), Some(Duration::from_secs(2)));
        assert_eq!(wait(upgrade(503, Some("7"))), Some(Duration::from_secs(7)));
        assert_eq!(
            wait(upgrade(429, Some("86400"))),
            Some(MAX_UPGRADE_RETRY_AFTER)
        );
        assert!(matches!(upgrade(404, None), Unusable::Refused(m) if m.contains("404")));
        assert!(matches!(upgrade(503, None), Unusable::Refused(_)));
    }

    #[test]
    fn unanswered_auth_says_live_updates_are_off_and_how_it_polls() {
        let b = backend(toml::Table::new());
        let e = b.auth_unanswered("ws://x/api/events/out");
        assert_eq!(e.code(), "unreachable");
        // Limits::default(): 20 s for auth; max_backoff_secs defaults to 60.
        assert_eq!(
            e.to_string(),
            "cannot reach ws://x/api/events/out: live updates off for pf, polling at least \
             every 80 s instead: the events socket did not answer auth within 20 s"
        );
    }

    #[test]
    fn prefect_errors_name_the_detail() {
        assert_eq!(
            prefect_message(br#"{"detail":"Flow run not found"}"#),
            "Flow run not found"
        );
    }
}
