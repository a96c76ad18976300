//! Hostile backends, each a real HTTP server on 127.0.0.1 written here: one that floods
//! 50 MB of JSON (with and without a declared length), one that sends invalid UTF-8, one
//! with the wrong types, one that answers 500, one that asks to slow down with 429/503
//! and `Retry-After`, event streams that drop every few events (also mid-event) and one
//! that hangs mid-stream. For each: the engine stops within its limits, the backend is
//! degraded with an error that says what happened, a healthy reference server in the
//! same engine keeps syncing, and the store file is intact (integrity check, audit chain).
//!
//! `tests/degraded_backends.rs` covers a list that hangs mid-body, non-JSON and one
//! wrong-typed field for the open protocol; this file covers the rest, for every HTTP
//! kind where the fault is kind-independent.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use countersign_core::backends::{self, Limits};
use countersign_core::config::{BackendConfig, Config};
use countersign_core::model::{ActionKey, ActionKind, ActionSnapshot, ActionStatus, PendingAction};
use countersign_core::protocol::{WireAction, WireTimelineEvent};
use countersign_core::shutdown;
use countersign_core::store::Store;
use countersign_core::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const MB: usize = 1024 * 1024;

/// One request as the hostile server saw it, stamped by the server's own clock.
#[derive(Debug, Clone)]
struct Seen {
    n: usize,
    at: Instant,
    method: String,
    path: String,
    last_event_id: Option<String>,
    if_none_match: Option<String>,
    body: Vec<u8>,
}

/// What the server does with a request.
enum Reply {
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// `bytes` of valid JSON (an action list with one big title per item), chunked or
    /// with a declared `content-length`.
    Flood { bytes: usize, declare_length: bool },
    /// An event stream: these raw chunks, then close (`hang: false`) or go silent.
    Stream { chunks: Vec<Vec<u8>>, hang: bool },
    /// This answer, after holding the request for a while (a slow backend).
    Later(Duration, Box<Reply>),
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A raw HTTP/1.1 server (one request per connection, `connection: close`).
struct Hostile {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// When each request's answer had been handed to the kernel, by request number.
    replied: Arc<Mutex<BTreeMap<usize, Instant>>>,
    /// The most body bytes one connection accepted before the client hung up.
    written: Arc<AtomicU64>,
}

impl Hostile {
    async fn start(handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, seen) = mpsc::unbounded_channel();
        let replied = Arc::new(Mutex::new(BTreeMap::new()));
        let written = Arc::new(AtomicU64::new(0));
        let (r, w) = (replied.clone(), written.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((sock, _)) = listener.accept().await {
                n += 1;
                let (handler, tx, r, w) = (handler.clone(), tx.clone(), r.clone(), w.clone());
                tokio::spawn(serve(sock, n, handler, tx, r, w));
            }
        });
        Self {
            addr,
            seen,
            replied,
            written,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next request the server receives (awaited, with a deadline).
    async fn next(&mut self, within: Duration, what: &str) -> Seen {
        tokio::time::timeout(within, self.seen.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("server alive")
    }

    fn replied_at(&self, n: usize) -> Instant {
        *self.replied.lock().unwrap().get(&n).expect("answered")
    }
}

async fn serve(
    mut sock: TcpStream,
    n: usize,
    handler: Handler,
    tx: mpsc::UnboundedSender<Seen>,
    replied: Arc<Mutex<BTreeMap<usize, Instant>>>,
    written: Arc<AtomicU64>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(k) => head.extend_from_slice(&buf[..k]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
    let mut body = head.split_off(end);
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let header = |name: &str| {
        text.split("\r\n").find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(1024 * 1024);
    while body.len() < length {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(k) => body.extend_from_slice(&buf[..k]),
        }
    }
    let seen = Seen {
        n,
        at: Instant::now(),
        method,
        path,
        last_event_id: header("last-event-id"),
        if_none_match: header("if-none-match"),
        body,
    };
    let _ = tx.send(seen.clone());
    let mut reply = handler(&seen);
    while let Reply::Later(wait, then) = reply {
        tokio::time::sleep(wait).await;
        reply = *then;
    }
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut out = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(&body);
            if sock.write_all(&bytes).await.is_ok() {
                replied.lock().unwrap().insert(n, Instant::now());
            }
        }
        Reply::Flood {
            bytes,
            declare_length,
        } => flood(&mut sock, bytes, declare_length, &written).await,
        Reply::Later(..) => unreachable!("unwrapped above"),
        Reply::Stream { chunks, hang } => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
            if sock.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for c in chunks {
                if sock.write_all(&c).await.is_err() || sock.flush().await.is_err() {
                    return;
                }
            }
            replied.lock().unwrap().insert(n, Instant::now());
            if hang {
                // Silent but open until the client gives up on it.
                let _ = sock.read(&mut buf).await;
            }
        }
    }
}

/// Streams `total` bytes of JSON, counting what the client took before hanging up.
async fn flood(sock: &mut TcpStream, total: usize, declare_length: bool, written: &AtomicU64) {
    let open = br#"{"actions":["#;
    let item = format!(r#"{{"id":"x","title":"{}"}},"#, "a".repeat(1000)).into_bytes();
    let close = br#"{"id":"end"}]}"#;
    let items = (total - open.len() - close.len()) / item.len() + 1;
    let length = open.len() + items * item.len() + close.len();
    let head = if declare_length {
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n")
    } else {
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_owned()
    };
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut block = Vec::with_capacity(64 * 1024);
    let mut sent = 0u64;
    block.extend_from_slice(open);
    let mut left = items;
    loop {
        while left > 0 && block.len() + item.len() <= 64 * 1024 {
            block.extend_from_slice(&item);
            left -= 1;
        }
        if left == 0 {
            block.extend_from_slice(close);
        }
        let frame = if declare_length {
            block.clone()
        } else {
            let mut f = format!("{:x}\r\n", block.len()).into_bytes();
            f.extend_from_slice(&block);
            f.extend_from_slice(b"\r\n");
            f
        };
        if sock.write_all(&frame).await.is_err() {
            return; // the client hung up: it stopped reading
        }
        sent += block.len() as u64;
        written.fetch_max(sent, Ordering::SeqCst);
        block.clear();
        if left == 0 {
            break;
        }
    }
    if !declare_length {
        let _ = sock.write_all(b"0\r\n\r\n").await;
    }
}

fn full(status: u16, body: &[u8]) -> Reply {
    Reply::Full {
        status,
        headers: vec![],
        body: body.to_vec(),
    }
}

fn limits() -> Limits {
    Limits {
        // Generous: the machine is shared; the faults below end long before this.
        request_timeout: Duration::from_secs(15),
        stream_idle_timeout: Duration::from_secs(2),
        ..Limits::default()
    }
}

/// The reference server pings its streams less often than the hostile ones' idle limit.
fn good_limits() -> Limits {
    Limits {
        request_timeout: Duration::from_secs(15),
        ..Limits::default()
    }
}

fn config(name: &str, kind: &str, url: String) -> BackendConfig {
    // Written as a person would (the options table comes from the TOML).
    let repos = if kind == "github" {
        "[backend.options]\nrepos = [\"acme/app\"]\n"
    } else {
        ""
    };
    let text = format!(
        "[[backend]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}\"\n\
         poll_interval_secs = 1\nmax_backoff_secs = 1\n{repos}"
    );
    let mut config = Config::parse(std::path::Path::new("config.toml"), &text).expect("config");
    config.backends.remove(0)
}

fn add(engine: &mut Engine, config: BackendConfig, limits: Limits) {
    let backend = backends::build(&config, Some(TOKEN.into()), limits).unwrap();
    engine.add_backend(config, backend).unwrap();
}

/// The store file is intact and the audit chain verifies.
fn assert_store_intact(engine: &Engine) {
    let conn = rusqlite::Connection::open(engine.store().path()).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    engine.verify(None).expect("the audit chain verifies");
}

/// The test process's peak resident memory (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

const KINDS: [&str; 5] = ["countersign", "hoop", "github", "prefect", "airflow"];

/// Every HTTP kind, fed the same hostile bodies on every path, beside a healthy reference
/// server: each is degraded with the error its fault deserves, the good one syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_bad_utf8_wrong_types_and_500s_degrade_only_their_backend_for_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("server.db"), "127.0.0.1:0");
    Producer::new(&server.url())
        .create(&new_action("good-1", "A request from a healthy backend"))
        .await;
    let limits = Limits {
        max_body_bytes: 4 * MB,
        ..limits()
    };

    // (fault, expected code, text the error must contain, handler)
    let faults: Vec<(&str, &str, &str, Handler)> = vec![
        (
            "flood-chunked",
            "too_large",
            "over the 4194304-byte limit",
            Arc::new(|_: &Seen| Reply::Flood {
                bytes: 50 * MB,
                declare_length: false,
            }),
        ),
        (
            "flood-declared",
            "too_large",
            "over the 4194304-byte limit",
            Arc::new(|_: &Seen| Reply::Flood {
                bytes: 50 * MB,
                declare_length: true,
            }),
        ),
        (
            "utf8",
            "malformed",
            "malformed data",
            Arc::new(|_: &Seen| {
                full(
                    200,
                    b"[{\"id\":\"\xff\xfe\xc3\x28\",\"\xf0\x28\x8c\x28\":1}]",
                )
            }),
        ),
        (
            "types",
            "malformed",
            "sent malformed data at `",
            // Valid JSON, every likely field the wrong type, top level of either shape.
            Arc::new(|_: &Seen| {
                full(
                    200,
                    br#"[{"id":[1],"status":7,"actions":{"x":1},"access_token":5,"workflow_runs":"n","hitl_details":false,"state":3,"created_at":true}]"#,
                )
            }),
        ),
        (
            "err500",
            "http",
            "HTTP 500",
            Arc::new(|_: &Seen| full(500, b"{\"message\":\"database on fire\"}")),
        ),
    ];

    let mut engine = Engine::new(Store::open_in_dir(&dir.path().join("c")).unwrap(), "ana");
    add(
        &mut engine,
        config("good", "countersign", server.url()),
        limits,
    );
    let mut servers = Vec::new();
    let mut expected = Vec::new();
    for (fault, code, text, handler) in &faults {
        for kind in KINDS {
            let h = Hostile::start(handler.clone()).await;
            let name = format!("{kind}-{fault}");
            add(&mut engine, config(&name, kind, h.url()), limits);
            expected.push((name, *code, *text, h.url()));
            servers.push(h);
        }
    }

    let before = peak_rss();
    let reports = engine.sync_once(Utc::now()).await;
    let grown = peak_rss().saturating_sub(before);

    let by_name = |n: &str| reports.iter().find(|r| r.backend == n).unwrap();
    assert!(
        by_name("good").error.is_none(),
        "{:?}",
        by_name("good").error
    );
    let statuses = engine.backends().unwrap();
    for (name, code, text, url) in &expected {
        let report = by_name(name);
        assert_eq!(report.error_code, Some(*code), "{name}: {:?}", report.error);
        let status = statuses.iter().find(|s| &s.name == name).unwrap();
        assert_eq!(status.status, "degraded", "{name}");
        assert_eq!(status.last_error_code.as_deref(), Some(*code), "{name}");
        let error = status.last_error.clone().unwrap();
        assert!(
            error.contains(text) && error.contains(url.as_str()),
            "{name}: the error says what and where: {error}"
        );
        assert!(
            !error.chars().any(char::is_control),
            "{name}: hostile bytes stay out of the message: {error:?}"
        );
    }
    // The cap stops reading: no client took the whole 50 MB, only the cap plus what the
    // kernel's socket buffers held when it hung up.
    for h in &servers {
        let took = h.written.load(Ordering::SeqCst);
        assert!(
            took < 20 * MB as u64,
            "a client read {took} bytes of a 50 MB flood"
        );
    }
    // Ten floods at once: without the cap each would buffer 50 MB (500 MB in all).
    assert!(
        grown < 200 * MB as u64,
        "peak memory grew by {grown} bytes during the floods"
    );
    assert_eq!(engine.pending(Some("good")).unwrap().len(), 1);
    assert_eq!(engine.pending(None).unwrap().len(), 1);
    assert_store_intact(&engine);
}

/// The server's list refuses with 429 then 503 (each with `Retry-After: 3`) before
/// answering: the next request comes no sooner than asked, measured on the server's
/// clock, although the engine's own backoff cap is 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_measured_on_the_servers_clock() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("server.db"), "127.0.0.1:0");
    let producer = Producer::new(&server.url());
    let lists = Arc::new(AtomicU64::new(0));
    let l = lists.clone();
    let mut slow = Hostile::start(Arc::new(move |seen: &Seen| {
        if seen.path.starts_with("/v1/events") {
            return Reply::Stream {
                chunks: vec![b": hello\n\n".to_vec()],
                hang: true,
            };
        }
        match l.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::Full {
                status: 429,
                headers: vec![("retry-after", "3".into())],
                body: br#"{"error":{"code":"rate_limited","message":"slow down"}}"#.to_vec(),
            },
            1 => Reply::Full {
                status: 503,
                headers: vec![("retry-after", "3".into())],
                body: b"maintenance".to_vec(),
            },
            _ => full(200, br#"{"actions":[],"cursor":"0"}"#),
        }
    }))
    .await;

    let mut engine = Engine::new(Store::open_in_dir(&dir.path().join("c")).unwrap(), "ana");
    add(
        &mut engine,
        config("good", "countersign", server.url()),
        good_limits(),
    );
    add(
        &mut engine,
        config("slow", "countersign", slow.url()),
        limits(),
    );
    let store = engine.store().clone();
    let mut changes = engine.changes();
    let (trigger, listener) = shutdown::channel();
    let tasks = engine.spawn_sync(&listener);

    let first = slow.next(Duration::from_secs(15), "the first list").await;
    let s = store.clone();
    until(
        &mut changes,
        Duration::from_secs(15),
        "slow degraded as rate limited",
        move || {
            s.backend_statuses()
                .unwrap()
                .iter()
                .any(|b| b.name == "slow" && b.last_error_code.as_deref() == Some("rate_limited"))
        },
    )
    .await;
    let status = store
        .backend_statuses()
        .unwrap()
        .into_iter()
        .find(|b| b.name == "slow")
        .unwrap();
    assert_eq!(status.status, "degraded");
    let error = status.last_error.clone().unwrap();
    assert!(
        error.contains("slow down") && error.contains("retry in 3 s"),
        "{error}"
    );
    let planned = status.next_retry_at.unwrap() - status.last_error_at.unwrap();
    assert!(planned >= chrono::Duration::seconds(3), "{planned}");

    // The healthy backend syncs while the other waits.
    producer
        .create(&new_action("live-1", "Arrives while slow waits"))
        .await;
    let s = store.clone();
    until(
        &mut changes,
        Duration::from_secs(15),
        "the good backend's action",
        move || {
            s.actions(&Default::default())
                .unwrap()
                .iter()
                .any(|a| a.key.external_id == "live-1")
        },
    )
    .await;

    let second = slow.next(Duration::from_secs(15), "the second list").await;
    let third = slow.next(Duration::from_secs(15), "the third list").await;
    for (answered, next) in [(&first, &second), (&second, &third)] {
        let gap = next.at - slow.replied_at(answered.n);
        assert!(
            // Tokio's timers never fire early; 20 ms covers the two clocks' reads.
            gap + Duration::from_millis(20) >= Duration::from_secs(3),
            "request {} came {gap:?} after a Retry-After: 3 answer",
            next.n
        );
        assert!(next.path.starts_with("/v1/actions"), "{}", next.path);
    }
    let s = store.clone();
    until(
        &mut changes,
        Duration::from_secs(15),
        "slow ok again",
        move || {
            s.backend_statuses()
                .unwrap()
                .iter()
                .any(|b| b.name == "slow" && b.status == "ok")
        },
    )
    .await;
    trigger.trigger();
    for t in tasks {
        t.await.unwrap();
    }
    assert_store_intact(&engine);
}

fn wire(id: &str) -> WireAction {
    let snapshot = ActionSnapshot {
        kind: ActionKind::Command,
        title: format!("restart {id}"),
        summary: "from a stream that keeps dropping".into(),
        requester: "ops-bot".into(),
        // Whole seconds: the wire carries milliseconds, and the hash must survive it.
        requested_at: "2026-11-25T06:00:00Z".parse().unwrap(),
        expires_at: None,
        resource: "host-1".into(),
        details: vec![],
        approvals_required: 1,
        reviews: vec![],
        status: ActionStatus::Pending,
        web_url: None,
        form: None,
    };
    let action = PendingAction::new(ActionKey::new("x", id), snapshot.clone());
    WireAction {
        id: id.to_owned(),
        snapshot,
        snapshot_hash: action.snapshot_hash,
        timeline: vec![WireTimelineEvent {
            id: format!("{id}-requested"),
            at: "2026-11-25T06:00:00Z".parse().unwrap(),
            kind: "requested".into(),
            actor: Some("ops-bot".into()),
            text: "requested".into(),
        }],
    }
}

fn sse_event(id: u64, action: &WireAction) -> Vec<u8> {
    format!(
        "id: {id}\nevent: action.created\ndata: {}\n\n",
        serde_json::to_string(action).unwrap()
    )
    .into_bytes()
}

/// The event stream closes after every three events, the fourth time half-way through an
/// event: every action arrives exactly once, each reconnect resumes from the last
/// applied event id, and the half event is not applied until it arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_dropped_every_few_events_loses_and_repeats_nothing() {
    const TOTAL: u64 = 12;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("server.db"), "127.0.0.1:0");
    let producer = Producer::new(&server.url());
    let actions: Arc<Vec<WireAction>> =
        Arc::new((1..=TOTAL).map(|i| wire(&format!("s{i}"))).collect());
    let a = actions.clone();
    let mut flaky = Hostile::start(Arc::new(move |seen: &Seen| {
        if let Some(id) = seen.path.strip_prefix("/v1/actions/") {
            return match a.iter().find(|w| w.id == id) {
                Some(w) => full(200, &serde_json::to_vec(w).unwrap()),
                None => full(404, br#"{"error":{"code":"not_found","message":"no"}}"#),
            };
        }
        if !seen.path.starts_with("/v1/events") {
            // The list never changes (304 after the first): everything comes through the
            // stream, so every resume point is the stream's own.
            return if seen.if_none_match.is_some() {
                Reply::Full {
                    status: 304,
                    headers: vec![("etag", "\"e0\"".into())],
                    body: vec![],
                }
            } else {
                Reply::Full {
                    status: 200,
                    headers: vec![("etag", "\"e0\"".into())],
                    body: br#"{"actions":[],"cursor":"0"}"#.to_vec(),
                }
            };
        }
        let from: u64 = seen
            .last_event_id
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut chunks: Vec<Vec<u8>> = (from + 1..=(from + 3).min(TOTAL))
            .map(|i| sse_event(i, &a[(i - 1) as usize]))
            .collect();
        if from == 6 {
            // Event 10 cut in the middle of its data line.
            let next = sse_event(10, &a[9]);
            chunks.push(next[..next.len() / 2].to_vec());
        }
        Reply::Stream {
            chunks,
            hang: from + 3 >= TOTAL,
        }
    }))
    .await;

    let mut engine = Engine::new(Store::open_in_dir(&dir.path().join("c")).unwrap(), "ana");
    add(
        &mut engine,
        config("good", "countersign", server.url()),
        good_limits(),
    );
    add(
        &mut engine,
        config("flaky", "countersign", flaky.url()),
        limits(),
    );
    let store = engine.store().clone();
    let mut changes = engine.changes();
    let (trigger, listener) = shutdown::channel();
    let tasks = engine.spawn_sync(&listener);

    let s = store.clone();
    until(
        &mut changes,
        Duration::from_secs(40),
        "all streamed actions",
        move || {
            eprintln!(
                "DBG {} {:?}",
                s.actions(&Default::default()).unwrap().len(),
                s.backend_statuses()
                    .unwrap()
                    .iter()
                    .map(|b| (b.name.clone(), b.last_error.clone()))
                    .collect::<Vec<_>>()
            );
            s.actions(&Default::default()).unwrap().len() == TOTAL as usize
        },
    )
    .await;
    producer
        .create(&new_action("live-1", "Arrives beside a flaky stream"))
        .await;
    let s = store.clone();
    until(
        &mut changes,
        Duration::from_secs(15),
        "the good backend's action",
        move || s.actions(&Default::default()).unwrap().len() == TOTAL as usize + 1,
    )
    .await;
    trigger.trigger();
    for t in tasks {
        t.await.unwrap();
    }

    let mut resumed_from = Vec::new();
    while let Ok(seen) = flaky.seen.try_recv() {
        if seen.path.starts_with("/v1/events") {
            assert_eq!(seen.method, "GET");
            resumed_from.push(seen.last_event_id.clone());
        }
    }
    assert_eq!(
        resumed_from,
        vec![
            Some("0".into()),
            Some("3".into()),
            Some("6".into()),
            Some("9".into())
        ],
        "each reconnect resumes after the last whole event"
    );
    for w in actions.iter() {
        let key = ActionKey::new("flaky", &w.id);
        let timeline = store.timeline(&key).unwrap();
        let requested = timeline
            .iter()
            .filter(|e| e.external_id.as_deref() == Some(&format!("{}-requested", w.id)))
            .count();
        assert_eq!(requested, 1, "{key}: {timeline:?}");
    }
    let cursor = store.sync_cursor("flaky").unwrap();
    assert_eq!(cursor.last_event_id.as_deref(), Some("12"));
    assert_store_intact(&engine);
}

/// A stream that sends half an event and goes silent, and one that never sends a byte
/// after its headers, are cut off by the idle deadline and degraded as timeouts; the
/// healthy backend keeps receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_hangs_mid_event_times_out_and_degrades_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("server.db"), "127.0.0.1:0");
    let producer = Producer::new(&server.url());
    let one = Arc::new(wire("h1"));
    let mut hangs = Vec::new();
    for half in [true, false] {
        let one = one.clone();
        hangs.push(
            Hostile::start(Arc::new(move |seen: &Seen| {
                if !seen.path.starts_with("/v1/events") {
                    return full(200, br#"{"actions":[],"cursor":"0"}"#);
                }
                let event = sse_event(1, &one);
                let chunks = if half {
                    vec![event[..event.len() - 20].to_vec()]
                } else {
                    vec![]
                };
                Reply::Stream { chunks, hang: true }
            }))
            .await,
        );
    }
    let mut engine = Engine::new(Store::open_in_dir(&dir.path().join("c")).unwrap(), "ana");
    add(
        &mut engine,
        config("good", "countersign", server.url()),
        good_limits(),
    );
    add(
        &mut engine,
        config("half", "countersign", hangs[0].url()),
        limits(),
    );
    add(
        &mut engine,
        config("mute", "countersign", hangs[1].url()),
        limits(),
    );
    let store = engine.store().clone();
    let mut changes = engine.changes();
    let (trigger, listener) = shutdown::channel();
    let tasks = engine.spawn_sync(&listener);

    let s = store.clone();
    until(
        &mut changes,
        Duration::from_secs(20),
        "both hanging streams degraded as timeouts",
        move || {
            s.backend_statuses()
                .unwrap()
                .iter()
                .filter(|b| {
                    b.status == "degraded" && b.last_error_code.as_deref() == Some("timeout")
                })
                .count()
                == 2
        },
    )
    .await;
    for name in ["half", "mute"] {
        let status = store
            .backend_statuses()
            .unwrap()
            .into_iter()
            .find(|b| b.name == name)
            .unwrap();
        let error = status.last_error.unwrap();
        assert!(
            error.contains("/v1/events") && error.contains("within 2 s"),
            "{name}: {error}"
        );
    }
    // Each hanging stream was given up and re-opened (the engine does not wait forever).
    for h in &mut hangs {
        let mut events = 0;
        while events < 2 {
            if h.next(Duration::from_secs(20), "a re-opened stream")
                .await
                .path
                .starts_with("/v1/events")
            {
                events += 1;
            }
        }
    }
    producer
        .create(&new_action("live-1", "Arrives beside hanging streams"))
        .await;
    let s = store.clone();
    until(
        &mut changes,
        Duration::from_secs(15),
        "the good backend's action",
        move || {
            s.actions(&Default::default())
                .unwrap()
                .iter()
                .any(|a| a.key.external_id == "live-1")
        },
    )
    .await;
    // The half event never completed, so it was never applied.
    assert!(engine.pending(Some("half")).unwrap().is_empty());
    trigger.trigger();
    for t in tasks {
        t.await.unwrap();
    }
    assert_store_intact(&engine);
}

/// A decision whose delivery is answered 429 with `Retry-After: 3` is retried by the
/// outbox no sooner than that (server's clock), under the same idempotency key, and then
/// recorded as delivered. The sync loop (whose outbox pass runs every second) is running
/// while the decision is made and the backend holds that first POST for 2.5 s: the
/// outbox must not send the decision again while its own attempt is still under way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_answered_429_is_retried_after_retry_after_with_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let action = Arc::new(wire("d1"));
    let posts = Arc::new(AtomicU64::new(0));
    let (a, p) = (action.clone(), posts.clone());
    let mut server = Hostile::start(Arc::new(move |seen: &Seen| {
        if seen.path.starts_with("/v1/events") {
            return Reply::Stream {
                chunks: vec![b": hello\n\n".to_vec()],
                hang: true,
            };
        }
        if seen.method == "POST" {
            return if p.fetch_add(1, Ordering::SeqCst) == 0 {
                Reply::Later(
                    Duration::from_millis(2500),
                    Box::new(Reply::Full {
                        status: 429,
                        headers: vec![("retry-after", "3".into())],
                        body: br#"{"error":{"code":"rate_limited","message":"slow down"}}"#
                            .to_vec(),
                    }),
                )
            } else {
                let body = serde_json::json!({ "action": &*a });
                full(200, body.to_string().as_bytes())
            };
        }
        if seen.path.starts_with("/v1/actions/") {
            return full(200, &serde_json::to_vec(&*a).unwrap());
        }
        let list = serde_json::json!({ "actions": [&*a], "cursor": "0" });
        full(200, list.to_string().as_bytes())
    }))
    .await;

    let mut engine = Engine::new(Store::open_in_dir(&dir.path().join("c")).unwrap(), "ana")
        .with_key_store(Arc::new(countersign_core::signer::MemoryKeyStore::default()));
    add(
        &mut engine,
        config("slow", "countersign", server.url()),
        limits(),
    );
    let store = engine.store().clone();
    let mut changes = engine.changes();
    let key = ActionKey::new("slow", "d1");
    let (trigger, listener) = shutdown::channel();
    let tasks = engine.spawn_sync(&listener);
    let s = store.clone();
    let k = key.clone();
    until(
        &mut changes,
        Duration::from_secs(15),
        "the action",
        move || matches!(s.action(&k), Ok(Some(_))),
    )
    .await;
    let hash = engine.detail(&key).unwrap().action.snapshot_hash;
    let report = engine
        .decide(
            countersign_core::api::DecisionInput {
                action: key.clone(),
                verdict: countersign_core::model::Verdict::Approve,
                reason: "ok".into(),
                seen_snapshot_hash: hash,
                answer: None,
            },
            Utc::now(),
        )
        .await
        .unwrap();
    let queued = report.queued_because.expect("queued after the 429");
    assert!(queued.contains("retry in 3 s"), "{queued}");

    let mut decisions = Vec::new();
    while decisions.len() < 2 {
        let seen = server.next(Duration::from_secs(20), "a delivery").await;
        if seen.method == "POST" {
            decisions.push(seen);
        }
    }
    let gap = decisions[1].at - server.replied_at(decisions[0].n);
    assert!(
        gap + Duration::from_millis(20) >= Duration::from_secs(3),
        "the retry came {gap:?} after a Retry-After: 3 answer"
    );
    let idempotency = |s: &Seen| {
        serde_json::from_slice::<serde_json::Value>(&s.body).unwrap()["idempotency_key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(idempotency(&decisions[0]), idempotency(&decisions[1]));
    assert_eq!(idempotency(&decisions[0]), report.decision.idempotency_key);

    let s = store.clone();
    let k = key.clone();
    until(
        &mut changes,
        Duration::from_secs(15),
        "delivered",
        move || {
            s.decisions(&k)
                .unwrap()
                .iter()
                .any(|d| d.delivery == countersign_core::model::DeliveryState::Delivered)
        },
    )
    .await;
    trigger.trigger();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(posts.load(Ordering::SeqCst), 2, "one attempt, one retry");
    assert_store_intact(&engine);
}
