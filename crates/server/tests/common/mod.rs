//! Shared helpers: an in-process server on 127.0.0.1:0 with a temporary state file, an
//! authenticated reqwest client and a small `text/event-stream` reader.
#![allow(dead_code)]

use std::pin::Pin;
use std::time::Duration;

use countersign_server::{bind, start, RunningServer, ServerConfig};
use futures_util::{Stream, StreamExt};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

pub const TOKEN: &str = "test-token-1234";
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub server: RunningServer,
    pub base: String,
    pub client: Client,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ServerConfig::new(dir.path().join("state.db"), TOKEN);
        config.expiry_tick = Duration::from_millis(100);
        configure(&mut config);
        let listener = bind("127.0.0.1:0").await.expect("bind");
        let server = start(listener, config).await.expect("start");
        let base = server.url();
        Self {
            server,
            base,
            client: Client::new(),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(TOKEN)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(TOKEN)
    }

    /// `POST /v1/actions`; returns the status and the JSON body.
    pub async fn create(&self, body: Value) -> (StatusCode, Value) {
        json_of(
            self.post("/v1/actions")
                .json(&body)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// Creates a simple pending command action and returns it.
    pub async fn create_simple(
        &self,
        id: &str,
        approvals: u32,
        expires_in_secs: Option<u64>,
    ) -> Value {
        let (status, body) = self
            .create(new_action(id, approvals, expires_in_secs))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    pub async fn action(&self, id: &str) -> Value {
        let (status, body) = json_of(
            self.get(&format!("/v1/actions/{id}"))
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// `POST /v1/actions/{id}/decision` with a JSON body; status and raw body text.
    pub async fn decide_raw(&self, id: &str, body: &Value) -> (StatusCode, String) {
        let response = self
            .post(&format!("/v1/actions/{id}/decision"))
            .json(body)
            .send()
            .await
            .expect("send");
        let status = response.status();
        (status, response.text().await.expect("body"))
    }

    pub async fn decide(&self, id: &str, body: &Value) -> (StatusCode, Value) {
        let (status, text) = self.decide_raw(id, body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn events(&self, last_event_id: Option<i64>) -> Sse {
        Sse::connect(&self.client, &self.base, last_event_id).await
    }
}

pub fn new_action(id: &str, approvals: u32, expires_in_secs: Option<u64>) -> Value {
    json!({
        "id": id,
        "kind": "command",
        "title": format!("Restart nginx ({id})"),
        "summary": "502s after a config reload",
        "requester": "dana@example.com",
        "resource": "web-7.prod",
        "details": [{"key": "Command", "value": "sudo systemctl restart nginx"}],
        "approvals_required": approvals,
        "expires_in_secs": expires_in_secs,
    })
}

pub fn decision(verdict: &str, hash: &str, approver: &str, key: &str) -> Value {
    json!({
        "verdict": verdict,
        "reason": "looks right",
        "snapshot_hash": hash,
        "decided_at": "2026-01-02T03:04:05.678Z",
        "approver": approver,
        "idempotency_key": key,
    })
}

pub async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn hash_of(action: &Value) -> String {
    action["snapshot_hash"]
        .as_str()
        .expect("snapshot_hash")
        .to_owned()
}

/// One item of an event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum SseItem {
    Comment(String),
    Event(SseEvent),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: i64,
    pub event: String,
    pub data: Value,
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// A minimal `text/event-stream` reader over a reqwest body.
pub struct Sse {
    body: ByteStream,
    buf: String,
}

impl Sse {
    pub async fn connect(client: &Client, base: &str, last_event_id: Option<i64>) -> Self {
        let mut request = client.get(format!("{base}/v1/events")).bearer_auth(TOKEN);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("connect to /v1/events");
        Self::from_response(response)
    }

    pub fn from_response(response: Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self {
            body: Box::pin(response.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next comment or event; `None` when the stream ended (or broke).
    pub async fn next_item(&mut self) -> Option<SseItem> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                return Some(parse_block(&block));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self
                    .buf
                    .push_str(std::str::from_utf8(&chunk).expect("utf-8")),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next event (comments skipped), failing the test after `WAIT`.
    pub async fn next_event(&mut self) -> SseEvent {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.next_item().await {
                    Some(SseItem::Event(e)) => return e,
                    Some(SseItem::Comment(_)) => continue,
                    None => panic!("event stream ended"),
                }
            }
        })
        .await
        .expect("an event in time")
    }

    /// Events until one matches `pred` (returned with everything before it).
    pub async fn until(&mut self, pred: impl Fn(&SseEvent) -> bool) -> Vec<SseEvent> {
        let mut seen = Vec::new();
        loop {
            let e = self.next_event().await;
            let done = pred(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

fn parse_block(block: &str) -> SseItem {
    let mut id = None;
    let mut event = None;
    let mut data = None;
    let mut comment = None;
    for line in block.lines() {
        if let Some(c) = line.strip_prefix(':') {
            comment = Some(c.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse::<i64>().expect("integer id"));
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("data: ") {
            assert!(data.is_none(), "one data line per event");
            data = Some(serde_json::from_str(v).expect("data is JSON"));
        } else if !line.is_empty() {
            panic!("unexpected line {line:?}");
        }
    }
    match (id, event, data) {
        (Some(id), Some(event), Some(data)) => SseItem::Event(SseEvent { id, event, data }),
        (None, None, None) => SseItem::Comment(comment.unwrap_or_default()),
        other => panic!("incomplete event {other:?} in {block:?}"),
    }
}
