//! The open protocol v1 backend (docs/protocol.md): list with ETag, fetch, decide with
//! an idempotency key, and an SSE event stream resumed by `Last-Event-ID`.

use async_trait::async_trait;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::http::{self, Answer};
use super::{
    Backend, BackendError, BackendEvent, BuildError, Capabilities, DecisionDelivery,
    DeliveryOutcome, EventStream, Limits, ListOutcome, SyncCursor,
};
use crate::model::ActionSnapshot;
use crate::model::{
    ActionKey, EventSource, PendingAction, RemoteAction, TimelineEvent, TimelineKind,
};
use crate::protocol::{
    DecisionBody, ErrorBody, TimelineAppended, WireAction, WireTimelineEvent, EVENT_ACTION_CREATED,
    EVENT_ACTION_UPDATED, EVENT_TIMELINE_APPENDED,
};
use crate::sse::SseParser;

pub const KIND: &str = "countersign";

/// Lists being decoded in this process at once (see `list_pending`).
static LIST_DECODES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

pub struct OpenProtocol {
    name: String,
    base: String,
    token: Option<String>,
    limits: Limits,
    client: reqwest::Client,
}

impl OpenProtocol {
    pub fn new(
        name: &str,
        url: &str,
        token: Option<String>,
        limits: Limits,
    ) -> Result<Self, BuildError> {
        let base = http::base_url(name, url)?;
        let client = http::client(&limits).map_err(|detail| BuildError::Invalid {
            name: name.to_owned(),
            detail,
        })?;
        Ok(Self {
            name: name.to_owned(),
            base,
            token,
            limits,
            client,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.base)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        http::bearer(request, self.token.as_deref())
    }

    /// Maps a non-2xx answer to an error, reading the protocol's error body if present.
    fn error(&self, url: &str, answer: &Answer) -> BackendError {
        if let Some(e) = http::common_error(url, answer) {
            return e;
        }
        let message = serde_json::from_slice::<ErrorBody>(&answer.body)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| http::snippet(&answer.body));
        http::status_error(url, answer, message)
    }
}

/// Converts a wire action, checking that the server's hash is the one we compute.
fn to_remote(backend: &str, url: &str, wire: WireAction) -> Result<RemoteAction, BackendError> {
    let action = PendingAction::new(ActionKey::new(backend, &wire.id), wire.snapshot);
    // The server's hash must be ours: otherwise a decision would bind something
    // other than what the person saw.
    if action.snapshot_hash != wire.snapshot_hash {
        return Err(BackendError::Malformed {
            url: url.to_owned(),
            field: "snapshot_hash".into(),
            detail: format!(
                "server says {} but the fields hash to {}",
                wire.snapshot_hash.short(),
                action.snapshot_hash.short()
            ),
        });
    }
    let timeline = wire.timeline.into_iter().map(timeline_event).collect();
    Ok(RemoteAction { action, timeline })
}

pub(super) fn timeline_event(e: WireTimelineEvent) -> TimelineEvent {
    TimelineEvent {
        at: e.at,
        source: EventSource::Backend,
        kind: TimelineKind::parse(&e.kind),
        actor: e.actor,
        text: e.text,
        external_id: Some(e.id),
    }
}

#[async_trait]
impl Backend for OpenProtocol {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list: true,
            fetch: true,
            decide: true,
            subscribe: true,
        }
    }

    async fn list_pending(&self, cursor: &SyncCursor) -> Result<ListOutcome, BackendError> {
        let url = self.url("/actions?status=pending");
        let mut request = self.authorized(self.client.get(&url));
        if let Some(etag) = &cursor.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let answer = http::send(&url, &self.limits, request).await?;
        if answer.status == StatusCode::NOT_MODIFIED {
            return Ok(ListOutcome::NotModified);
        }
        if !answer.status.is_success() {
            return Err(self.error(&url, &answer));
        }
        let etag = answer
            .headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Decoding and hashing a few thousand actions takes a while: off the async
        // thread, so other backends' lists and store writes proceed meanwhile. One list
        // at a time: five decoded at once on a small machine all finish late and crowd
        // out the store write of the first (`countersign sync` of 5 servers, profiled);
        // one by one, the first is stored while the next decodes.
        let (actions, cursor) = {
            // The semaphore is never closed; without a permit the list decodes anyway.
            let _turn = LIST_DECODES.acquire().await.ok();
            let (name, url, body) = (self.name.clone(), url.clone(), answer.body.clone());
            super::blocking(move || decode_list(&name, &url, &body)).await?
        };
        Ok(ListOutcome::Listed {
            actions,
            etag,
            cursor,
        })
    }

    async fn fetch(&self, external_id: &str) -> Result<RemoteAction, BackendError> {
        let url = self.url(&format!("/actions/{}", http::path_segment(external_id)));
        let answer = http::send(&url, &self.limits, self.authorized(self.client.get(&url))).await?;
        if !answer.status.is_success() {
            return Err(self.error(&url, &answer));
        }
        let value: serde_json::Value = http::decode(&url, &answer.body)?;
        to_remote(&self.name, &url, decode_action(&url, "", &value)?)
    }

    async fn decide(&self, delivery: &DecisionDelivery) -> Result<DeliveryOutcome, BackendError> {
        let d = &delivery.decision;
        let url = self.url(&format!(
            "/actions/{}/decision",
            http::path_segment(&d.action.external_id)
        ));
        let body = DecisionBody::from_decision(d);
        let request = self.authorized(self.client.post(&url)).json(&body);
        let answer = http::send(&url, &self.limits, request).await?;
        if answer.status.is_success() {
            let answer: RawDecisionAnswer = http::decode(&url, &answer.body)?;
            let wire = decode_action(&url, "action", &answer.action)?;
            let action = to_remote(&self.name, &url, wire)?;
            return Ok(DeliveryOutcome::Delivered {
                action: Some(Box::new(action)),
            });
        }
        let error = serde_json::from_slice::<ErrorBody>(&answer.body).ok();
        match (answer.status, error) {
            (StatusCode::CONFLICT, Some(body)) if body.error.code == "stale_snapshot" => {
                Ok(DeliveryOutcome::Stale {
                    current_snapshot_hash: body.error.current_snapshot_hash.unwrap_or_default(),
                })
            }
            (StatusCode::CONFLICT, Some(body)) if body.error.code == "not_pending" => {
                Ok(DeliveryOutcome::NotPending {
                    status: body.error.status.unwrap_or_else(|| "unknown".into()),
                })
            }
            (StatusCode::GONE, _) => Ok(DeliveryOutcome::Expired),
            (status, Some(body))
                if status.is_client_error()
                    && status != StatusCode::UNAUTHORIZED
                    && status != StatusCode::TOO_MANY_REQUESTS
                    && status != StatusCode::REQUEST_TIMEOUT =>
            {
                Ok(DeliveryOutcome::Rejected {
                    reason: format!("{} ({})", body.error.message, body.error.code),
                })
            }
            _ => Err(self.error(&url, &answer)),
        }
    }

    async fn subscribe(&self, last_event_id: Option<String>) -> Result<EventStream, BackendError> {
        let url = self.url("/events");
        let mut request = self
            .authorized(self.client.get(&url))
            .header(ACCEPT, "text/event-stream");
        if let Some(id) = &last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = tokio::time::timeout(self.limits.request_timeout, request.send())
            .await
            .map_err(|_| BackendError::Timeout {
                url: url.clone(),
                secs: self.limits.request_timeout.as_secs(),
            })?
            .map_err(|e| http::transport_error(&url, &self.limits, &e))?;
        if !response.status().is_success() {
            let status = response.status();
            let headers = response.headers().clone();
            let body = tokio::time::timeout(self.limits.request_timeout, response.bytes())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(self.error(
                &url,
                &Answer {
                    status,
                    headers,
                    body,
                },
            ));
        }
        let (tx, rx) = mpsc::channel(256);
        let limits = self.limits;
        let backend = self.name.clone();
        tokio::spawn(async move {
            let mut parser = SseParser::new(limits.max_event_bytes);
            let mut body = response.bytes_stream();
            loop {
                let chunk =
                    match tokio::time::timeout(limits.stream_idle_timeout, body.next()).await {
                        Err(_) => Err(BackendError::Timeout {
                            url: url.clone(),
                            secs: limits.stream_idle_timeout.as_secs(),
                        }),
                        Ok(None) => Err(BackendError::Unreachable {
                            url: url.clone(),
                            detail: "event stream closed by the server".into(),
                        }),
                        Ok(Some(Err(e))) => Err(http::transport_error(&url, &limits, &e)),
                        Ok(Some(Ok(chunk))) => Ok(chunk),
                    };
                let events = chunk.and_then(|chunk| {
                    parser.feed(&chunk).map_err(|e| BackendError::Malformed {
                        url: url.clone(),
                        field: "(event stream)".into(),
                        detail: e.to_string(),
                    })
                });
                let events = match events {
                    Ok(events) => events,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                for event in events {
                    let item = parse_event(&backend, &url, event);
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

fn parse_event(
    backend: &str,
    url: &str,
    event: crate::sse::SseEvent,
) -> Result<BackendEvent, BackendError> {
    let event_id = event.id;
    match event.event.as_str() {
        EVENT_ACTION_CREATED | EVENT_ACTION_UPDATED => {
            let value: serde_json::Value = http::decode(url, event.data.as_bytes())?;
            let wire = decode_action(url, "(event)", &value)?;
            Ok(BackendEvent::Upsert {
                event_id,
                action: to_remote(backend, url, wire)?,
            })
        }
        EVENT_TIMELINE_APPENDED => {
            let appended: TimelineAppended = http::decode(url, event.data.as_bytes())?;
            Ok(BackendEvent::TimelineAppended {
                event_id,
                external_id: appended.action_id,
                event: timeline_event(appended.event),
            })
        }
        _ => Ok(BackendEvent::Ignored { event_id }),
    }
}

/// A pending list, checked action by action (`to_remote`).
///
/// The happy path decodes the body straight into wire actions: going through a
/// `serde_json::Value` per action and tracking every field's path was most of the
/// decoding time of a large list (profiled). A body that does not decode so is decoded
/// again the slow way, which names the bad field (`actions[3].title`); both read the
/// same fields with the same types, so they accept the same bodies, and the slow way
/// gives the error exactly as before.
fn decode_list(
    backend: &str,
    url: &str,
    body: &[u8],
) -> Result<(Vec<RemoteAction>, Option<String>), BackendError> {
    // Like `http::decode`, trailing bytes after the value are not checked.
    if let Ok(list) = WireList::deserialize(&mut serde_json::Deserializer::from_slice(body)) {
        let actions = list
            .actions
            .into_iter()
            .map(|wire| to_remote(backend, url, wire))
            .collect::<Result<_, _>>()?;
        return Ok((actions, list.cursor));
    }
    decode_list_tracked(backend, url, body)
}

/// The slow way of [`decode_list`]: every action through a `serde_json::Value`, with
/// paths tracked, so an error names its field.
fn decode_list_tracked(
    backend: &str,
    url: &str,
    body: &[u8],
) -> Result<(Vec<RemoteAction>, Option<String>), BackendError> {
    let list: RawList = http::decode(url, body)?;
    // Action by action, so the first bad one (undecodable or with a wrong hash) is the
    // one reported.
    let actions = list
        .actions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let wire = decode_action(url, &format!("actions[{i}]"), v)?;
            to_remote(backend, url, wire)
        })
        .collect::<Result<_, _>>()?;
    Ok((actions, list.cursor))
}

/// The list as [`RawList`] reads it, with the actions decoded.
#[derive(serde::Deserialize)]
struct WireList {
    actions: Vec<WireAction>,
    #[serde(default)]
    cursor: Option<String>,
}

/// An action list with the actions still undecoded, so each can be decoded on its own
/// and a bad field reported with its full path.
#[derive(serde::Deserialize)]
struct RawList {
    actions: Vec<serde_json::Value>,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawDecisionAnswer {
    action: serde_json::Value,
}

/// Decodes one wire action, naming the bad field. `WireAction` flattens the snapshot,
/// which hides the inner field from the error path; on failure the snapshot is decoded
/// alone to find it.
fn decode_action(
    url: &str,
    prefix: &str,
    value: &serde_json::Value,
) -> Result<WireAction, BackendError> {
    let join = |path: String| match (prefix.is_empty(), path.as_str()) {
        (true, _) => path,
        (false, ".") => prefix.to_owned(),
        (false, _) => format!("{prefix}.{path}"),
    };
    // Plain serde first; the path is tracked only to explain a failure (as `http::decode`).
    if let Ok(wire) = WireAction::deserialize(value) {
        return Ok(wire);
    }
    serde_path_to_error::deserialize::<_, WireAction>(value).map_err(|outer| {
        let (path, detail) = match serde_path_to_error::deserialize::<_, ActionSnapshot>(value) {
            Err(inner) => (inner.path().to_string(), inner.into_inner().to_string()),
            Ok(_) => (outer.path().to_string(), outer.into_inner().to_string()),
        };
        BackendError::Malformed {
            url: url.to_owned(),
            field: join(path),
            detail,
        }
    })
}

/// Fuzzing entry (see [`super::fuzzing`]): a list body, then the same bytes as an event
/// stream fed in two chunks, each through the decoders and checks a response takes.
pub(super) fn fuzz_parse(data: &[u8]) {
    let url = "http://fuzz/v1/actions";
    if let Ok(list) = http::decode::<RawList>(url, data) {
        for (i, v) in list.actions.iter().enumerate() {
            if let Ok(wire) = decode_action(url, &format!("actions[{i}]"), v) {
                let _ = to_remote("fuzz", url, wire);
            }
        }
    }
    // The fast list decoding must accept exactly what the tracked one accepts, with the
    // same result, and refuse with the tracked one's error.
    match (
        decode_list("fuzz", url, data),
        decode_list_tracked("fuzz", url, data),
    ) {
        (Ok(fast), Ok(tracked)) => assert_eq!(fast, tracked, "fast and tracked lists differ"),
        (Err(fast), Err(tracked)) => assert_eq!(fast.to_string(), tracked.to_string()),
        (fast, tracked) => panic!("fast {fast:?} vs tracked {tracked:?}"),
    }
    if let Ok(answer) = http::decode::<RawDecisionAnswer>(url, data) {
        let _ = decode_action(url, "action", &answer.action);
    }
    let mut parser = SseParser::new(64 * 1024);
    let (a, b) = data.split_at(data.len() / 2);
    for chunk in [a, b] {
        match parser.feed(chunk) {
            Ok(events) => {
                for event in events {
                    let _ = parse_event("fuzz", url, event);
                }
            }
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ActionKind, ActionStatus, Detail};

    const URL: &str = "http://backend/v1/actions?status=pending";

    fn wire(id: &str) -> serde_json::Value {
        let snapshot = ActionSnapshot {
            kind: ActionKind::Command,
            title: format!("restart {id}"),
            summary: "a \"quoted\" summary\nwith a second line".into(),
            requester: "dana@example.com".into(),
            requested_at: "2026-11-25T06:00:00.123Z".parse().unwrap(),
            expires_at: Some("2026-11-25T07:00:00Z".parse().unwrap()),
            resource: "prod/api".into(),
            details: vec![Detail {
                key: "ticket".into(),
                value: "OPS-1".into(),
            }],
            approvals_required: 2,
            reviews: vec![],
            status: ActionStatus::Pending,
            web_url: None,
            form: None,
        };
        let hash = PendingAction::new(ActionKey::new("b", id), snapshot.clone()).snapshot_hash;
        serde_json::to_value(WireAction {
            id: id.to_owned(),
            snapshot,
            snapshot_hash: hash,
            timeline: vec![WireTimelineEvent {
                id: format!("{id}-e1"),
                at: "2026-11-25T06:00:01Z".parse().unwrap(),
                kind: "requested".into(),
                actor: Some("dana@example.com".into()),
                text: "requested".into(),
            }],
        })
        .unwrap()
    }

    fn body(actions: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "actions": actions, "cursor": "42" })).unwrap()
    }

    #[test]
    fn a_good_list_decodes_the_fast_way_to_what_the_tracked_way_gives() {
        let body = body(vec![wire("a1"), wire("a2"), wire("a3")]);
        let (fast, cursor) = decode_list("b", URL, &body).unwrap();
        assert_eq!(cursor.as_deref(), Some("42"));
        assert_eq!(fast.len(), 3);
        assert_eq!(fast[1].action.key, ActionKey::new("b", "a2"));
        assert_eq!(fast[1].timeline[0].external_id.as_deref(), Some("a2-e1"));
        assert_eq!(
            (fast, cursor),
            decode_list_tracked("b", URL, &body).unwrap()
        );
    }

    #[test]
    fn a_bad_field_is_named_with_its_path_in_the_list() {
        let mut bad = wire("a2");
        bad["title"] = serde_json::json!(7);
        let err = decode_list("b", URL, &body(vec![wire("a1"), bad])).unwrap_err();
        assert_eq!(err.code(), "malformed");
        match &err {
            BackendError::Malformed { field, url, .. } => {
                assert_eq!(field, "actions[1].title");
                assert_eq!(url, URL);
            }
            other => panic!("expected malformed, got {other:?}"),
        }
        let mut late = wire("a1");
        late["timeline"][0]["at"] = serde_json::json!("yesterday");
        match decode_list("b", URL, &body(vec![late])).unwrap_err() {
            BackendError::Malformed { field, .. } => assert_eq!(field, "actions[0].timeline[0].at"),
            other => panic!("expected malformed, got {other:?}"),
        }
        match decode_list("b", URL, br#"{"actions":{"x":1}}"#).unwrap_err() {
            BackendError::Malformed { field, .. } => assert_eq!(field, "actions"),
            other => panic!("expected malformed, got {other:?}"),
        }
    }

    #[test]
    fn the_first_bad_action_is_reported_whether_its_hash_or_a_field_is_wrong() {
        // Action 0 decodes but its hash is not ours; action 1 does not decode. As before
        // the fast path existed, the list is checked in order: action 0's hash is the
        // error.
        let mut wrong_hash = wire("a1");
        wrong_hash["title"] = serde_json::json!("changed after hashing");
        let mut bad = wire("a2");
        bad["status"] = serde_json::json!(false);
        match decode_list("b", URL, &body(vec![wrong_hash.clone(), bad])).unwrap_err() {
            BackendError::Malformed { field, .. } => assert_eq!(field, "snapshot_hash"),
            other => panic!("expected malformed, got {other:?}"),
        }
        // Alone (every action decodes): the same error, found the fast way.
        match decode_list("b", URL, &body(vec![wire("a0"), wrong_hash])).unwrap_err() {
            BackendError::Malformed { field, detail, .. } => {
                assert_eq!(field, "snapshot_hash");
                assert!(detail.contains("the fields hash to"), "{detail}");
            }
            other => panic!("expected malformed, got {other:?}"),
        }
    }

    #[test]
    fn plain_decoding_accepts_and_refuses_as_the_tracked_decoding() {
        // Trailing bytes were never checked; the fast path must not start refusing them.
        let mut trailing = body(vec![wire("a1")]);
        trailing.extend_from_slice(b" trailing");
        assert_eq!(decode_list("b", URL, &trailing).unwrap().0.len(), 1);
        let Err(err) = http::decode::<RawList>(URL, b"{\"actions\": [1, 2") else {
            panic!("a cut-off body decoded");
        };
        assert_eq!(err.code(), "malformed");
        assert!(err.to_string().contains("malformed data at `"), "{err}");
    }
}
