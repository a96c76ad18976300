//! Hostile backends for the fault tests (`tests/faults_*.rs`): a raw HTTP/1.1 server on
//! 127.0.0.1 whose every answer the test chooses (floods, raw event streams, slow
//! answers, websockets that misbehave), and [`Rig`]: an engine with a healthy reference
//! server beside the backends under test, its sync tasks, and the checks every fault test
//! ends with. Included by path (`#[path = "common/faults.rs"] mod faults;`) beside
//! `mod common;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use countersign_core::backends::{self, Limits};
use countersign_core::config::{BackendConfig, Config};
use countersign_core::shutdown::{self, ShutdownTrigger};
use countersign_core::store::{BackendStatus, Store};
use countersign_core::sync::Change;
use countersign_core::Engine;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::common::{new_action, until, Producer, ServerProcess, TOKEN};

pub const MB: usize = 1024 * 1024;

/// The server side of an accepted websocket.
pub type Ws = WebSocketStream<TcpStream>;

/// What a websocket does once accepted: the test's script, run on the socket.
pub type Script = Box<dyn FnOnce(Ws) -> BoxFuture<'static, ()> + Send>;

/// One request as the hostile server saw it, stamped by the server's own clock.
#[derive(Debug, Clone)]
pub struct Seen {
    pub n: usize,
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub last_event_id: Option<String>,
    pub if_none_match: Option<String>,
    /// `Sec-WebSocket-Key` of an upgrade request.
    pub websocket_key: Option<String>,
    pub body: Vec<u8>,
}

/// What the server does with a request.
pub enum Reply {
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
    /// This answer once the future resolves (a backend held until the test lets it go).
    After(BoxFuture<'static, ()>, Box<Reply>),
    /// Accepts a websocket upgrade (choosing `protocol`, as the client asked), then runs
    /// `script` on the socket.
    Socket {
        protocol: &'static str,
        script: Script,
    },
}

pub type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A raw HTTP/1.1 server (one request per connection, `connection: close`).
pub struct Hostile {
    pub addr: SocketAddr,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    /// When each request's answer had been handed to the kernel, by request number.
    replied: Arc<Mutex<BTreeMap<usize, Instant>>>,
    /// The most body bytes one connection accepted before the client hung up.
    pub written: Arc<AtomicU64>,
}

impl Hostile {
    pub async fn start(handler: Handler) -> Self {
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

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next request the server receives (awaited, with a deadline).
    pub async fn next(&mut self, within: Duration, what: &str) -> Seen {
        tokio::time::timeout(within, self.seen.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("server alive")
    }

    pub fn replied_at(&self, n: usize) -> Instant {
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
        websocket_key: header("sec-websocket-key"),
        body,
    };
    let _ = tx.send(seen.clone());
    let mut reply = handler(&seen);
    let reply = loop {
        reply = match reply {
            Reply::Later(wait, then) => {
                tokio::time::sleep(wait).await;
                *then
            }
            Reply::After(ready, then) => {
                ready.await;
                *then
            }
            other => break other,
        };
    };
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
        Reply::Later(..) | Reply::After(..) => unreachable!("unwrapped above"),
        Reply::Socket { protocol, script } => {
            let Some(key) = &seen.websocket_key else {
                let _ = sock
                    .write_all(b"HTTP/1.1 400 X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                return;
            };
            let head = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
                 sec-websocket-accept: {}\r\nsec-websocket-protocol: {protocol}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            if sock.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            replied.lock().unwrap().insert(n, Instant::now());
            script(WebSocketStream::from_raw_socket(sock, Role::Server, None).await).await;
        }
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

pub fn full(status: u16, body: &[u8]) -> Reply {
    Reply::Full {
        status,
        headers: vec![],
        body: body.to_vec(),
    }
}

pub fn limits() -> Limits {
    Limits {
        // Generous: the machine is shared; the faults below end long before this.
        request_timeout: Duration::from_secs(15),
        stream_idle_timeout: Duration::from_secs(2),
        ..Limits::default()
    }
}

/// The reference server pings its streams less often than the hostile ones' idle limit.
pub fn good_limits() -> Limits {
    Limits {
        request_timeout: Duration::from_secs(15),
        ..Limits::default()
    }
}

pub fn config(name: &str, kind: &str, url: String) -> BackendConfig {
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

pub fn add(engine: &mut Engine, config: BackendConfig, limits: Limits) {
    let backend = backends::build(&config, Some(TOKEN.into()), limits).unwrap();
    engine.add_backend(config, backend).unwrap();
}

/// The store file is intact and the audit chain verifies.
pub fn assert_store_intact(engine: &Engine) {
    let conn = rusqlite::Connection::open(engine.store().path()).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    engine.verify(None).expect("the audit chain verifies");
}

/// An engine in a temporary directory, with (unless [`Rig::alone`]) a healthy reference
/// server as backend `good` beside the backends the test adds.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub good: Option<(ServerProcess, Producer)>,
    pub engine: Engine,
}

impl Rig {
    pub fn new() -> Self {
        let mut rig = Self::alone();
        let server = ServerProcess::start(&rig.dir.path().join("server.db"), "127.0.0.1:0");
        // The reference server pings its streams less often than the hostile ones' limit.
        rig.add(config("good", "countersign", server.url()), good_limits());
        let producer = Producer::new(&server.url());
        rig.good = Some((server, producer));
        rig
    }

    /// Without the healthy backend.
    pub fn alone() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(Store::open_in_dir(&dir.path().join("c")).unwrap(), "ana");
        Self {
            dir,
            good: None,
            engine,
        }
    }

    pub fn add(&mut self, config: BackendConfig, limits: Limits) {
        add(&mut self.engine, config, limits);
    }

    /// The healthy server's producer side.
    pub fn producer(&self) -> &Producer {
        &self.good.as_ref().expect("a rig with the good backend").1
    }

    /// Starts one sync task per backend.
    pub fn start(self) -> Running {
        let store = self.engine.store().clone();
        let changes = self.engine.changes();
        let (trigger, listener) = shutdown::channel();
        let tasks = self.engine.spawn_sync(&listener);
        Running {
            rig: self,
            store,
            changes,
            trigger,
            tasks,
        }
    }
}

/// A [`Rig`] whose sync tasks run.
pub struct Running {
    pub rig: Rig,
    pub store: Arc<Store>,
    pub changes: broadcast::Receiver<Change>,
    trigger: ShutdownTrigger,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn engine(&self) -> &Engine {
        &self.rig.engine
    }

    /// Waits (with a deadline) until `cond` holds of the store, re-checked on each change.
    pub async fn until(&mut self, within: Duration, what: &str, cond: impl Fn(&Store) -> bool) {
        let store = &self.store;
        until(&mut self.changes, within, what, || cond(store)).await;
    }

    /// Waits (with a deadline) until backend `name` has `status` (`ok`, `degraded`).
    pub async fn until_status(&mut self, within: Duration, name: &str, status: &str) {
        let what = format!("{name} {status}");
        self.until(within, &what, |s| {
            s.backend_statuses()
                .unwrap()
                .iter()
                .any(|b| b.name == name && b.status == status)
        })
        .await;
    }

    /// One backend's health as the store has it.
    pub fn status(&self, name: &str) -> BackendStatus {
        self.store
            .backend_statuses()
            .unwrap()
            .into_iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("no backend {name}"))
    }

    /// A new request on the healthy server reaches the store: whatever the hostile
    /// backends do, the good one keeps syncing.
    pub async fn good_backend_syncs(&mut self, id: &str) {
        self.rig
            .producer()
            .create(&new_action(id, "Arrives beside a hostile backend"))
            .await;
        self.until(
            Duration::from_secs(15),
            &format!("the good backend's action {id}"),
            |s| {
                s.actions(&Default::default())
                    .unwrap()
                    .iter()
                    .any(|a| a.key.backend == "good" && a.key.external_id == id)
            },
        )
        .await;
    }

    /// Stops the sync tasks, waits for them to end, and checks the store file: intact,
    /// its audit chain verifies. Returns the engine for what the test checks after.
    pub async fn stop(self) -> Rig {
        self.trigger.trigger();
        for t in self.tasks {
            t.await.unwrap();
        }
        assert_store_intact(&self.rig.engine);
        self.rig
    }
}
