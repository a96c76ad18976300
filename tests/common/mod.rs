//! Real parts for the integration tests: the reference server as its own process, a
//! loopback proxy that can swallow answers (a network that fails at the worst moment),
//! and raw TCP servers that misbehave on purpose.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use countersign_core::protocol::{NewAction, WireAction};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const TOKEN: &str = "test-token-0123456789";

/// A workspace binary, built by `cargo test --workspace` next to the test executables.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir of the test binary");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

/// The reference server running as its own process.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub state: PathBuf,
}

impl ServerProcess {
    /// Starts `countersign-server` on `addr` (port 0 for any) with its state in `state`.
    pub fn start(state: &Path, addr: &str) -> Self {
        Self::start_with(state, addr, &[])
    }

    /// Same, with extra command-line arguments.
    pub fn start_with(state: &Path, addr: &str, extra: &[&std::ffi::OsStr]) -> Self {
        let mut child = Command::new(bin("countersign-server"))
            .args(["--addr", addr, "--state"])
            .arg(state)
            .args(extra)
            .env("COUNTERSIGN_SERVER_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn countersign-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("read the listening line");
        let addr = first
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
            .parse()
            .expect("address");
        Self {
            child,
            addr,
            state: state.to_owned(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A client for the reference server's HTTP API, for producers' side of the tests.
pub struct Producer {
    pub base: String,
    pub http: reqwest::Client,
}

impl Producer {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn create(&self, new: &NewAction) -> WireAction {
        let response = self
            .http
            .post(format!("{}/v1/actions", self.base))
            .bearer_auth(TOKEN)
            .json(new)
            .send()
            .await
            .expect("create request");
        assert!(
            response.status().is_success(),
            "create: {}",
            response.status()
        );
        response.json().await.expect("created action")
    }

    pub async fn get(&self, id: &str) -> WireAction {
        let response = self
            .http
            .get(format!("{}/v1/actions/{id}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("get request");
        assert!(response.status().is_success(), "get: {}", response.status());
        response.json().await.expect("action")
    }
}

impl Producer {
    /// Another reviewer decides straight on the server (not through Countersign).
    pub async fn decide_as(&self, id: &str, approver: &str, snapshot_hash: &str, key: &str) {
        let body = serde_json::json!({
            "verdict": "approve", "reason": "", "snapshot_hash": snapshot_hash,
            "decided_at": chrono::Utc::now().to_rfc3339(), "approver": approver,
            "idempotency_key": key
        });
        let response = self
            .http
            .post(format!("{}/v1/actions/{id}/decision", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("decision request");
        assert_eq!(response.status(), 200, "decision by {approver}");
    }
}

pub fn new_action(id: &str, title: &str) -> NewAction {
    NewAction {
        id: Some(id.to_owned()),
        kind: countersign_core::model::ActionKind::DbSession,
        title: title.to_owned(),
        summary: "Read-only session for the invoice reconciliation".into(),
        requester: "dana@example.com".into(),
        resource: "prod-billing".into(),
        details: vec![countersign_core::model::Detail {
            key: "query".into(),
            value: "SELECT count(*) FROM invoices WHERE paid = false".into(),
        }],
        approvals_required: Some(1),
        expires_in_secs: Some(600),
        web_url: None,
        form: None,
    }
}

/// A TCP proxy on loopback. While `swallow` is set it forwards requests upstream but
/// drops every answer and closes the connection: the backend acted, the client never
/// heard — the case idempotency keys exist for. While `refuse` is set it closes every
/// connection at once (the backend is unreachable).
pub struct Proxy {
    pub addr: SocketAddr,
    pub swallow: Arc<AtomicBool>,
    pub refuse: Arc<AtomicBool>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let swallow = Arc::new(AtomicBool::new(false));
        let refuse = Arc::new(AtomicBool::new(false));
        let (s, r) = (swallow.clone(), refuse.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if r.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let (s, r) = (s.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let r_up = r.clone();
                    // Pooled keep-alive connections must fail too once `refuse` is set.
                    let up = tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if r_up.load(Ordering::SeqCst) || sw.write_all(&buf[..n]).await.is_err()
                            {
                                break;
                            }
                        }
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = tokio::select! {
                            read = sr.read(&mut buf) => match read {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            },
                            _ = wait_flag(&r) => break,
                        };
                        if s.load(Ordering::SeqCst) || r.load(Ordering::SeqCst) {
                            break; // drop the answer and the connection
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    up.abort();
                });
            }
        });
        Self {
            addr,
            swallow,
            refuse,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Resolves once `flag` is set (checked every 20 ms; test-only plumbing).
async fn wait_flag(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How a deliberately broken backend misbehaves.
#[derive(Clone, Copy, Debug)]
pub enum Misbehaviour {
    /// Sends headers and half a body, then goes silent.
    HangMidBody,
    /// A 200 whose body is not JSON.
    MalformedJson,
    /// Valid JSON with a number where the title should be.
    WrongTypes,
}

/// A raw HTTP/1.1 server that answers every request the same broken way.
pub async fn broken_server(how: Misbehaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = sock.read(&mut buf).await;
                let body: &[u8] = match how {
                    Misbehaviour::HangMidBody => br#"{"actions":[{"id":"a1","#,
                    Misbehaviour::MalformedJson => b"<html>upstream error</html>",
                    Misbehaviour::WrongTypes => {
                        br#"{"actions":[{"id":"x1","kind":"command","title":42,"requester":"r","requested_at":"2026-11-25T00:00:00Z","status":"pending","snapshot_hash":"00"}],"cursor":"1"}"#
                    }
                };
                let declared = match how {
                    Misbehaviour::HangMidBody => body.len() + 1000,
                    _ => body.len(),
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body).await;
                if let Misbehaviour::HangMidBody = how {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            });
        }
    });
    addr
}

/// Waits for `cond` with a deadline, re-checking on every change the engine reports.
pub async fn until<F: FnMut() -> bool>(
    changes: &mut tokio::sync::broadcast::Receiver<countersign_core::sync::Change>,
    deadline: Duration,
    what: &str,
    mut cond: F,
) {
    let end = tokio::time::Instant::now() + deadline;
    while !cond() {
        // Wake on a change, or every 200 ms to re-check state that has no change event.
        let wait = tokio::time::timeout(Duration::from_millis(200), changes.recv());
        if tokio::time::Instant::now() > end {
            panic!("timed out waiting for {what}");
        }
        let _ = wait.await;
    }
}

/// A `countersign` CLI with its own config file and data directory.
pub struct CliEnv {
    pub dir: tempfile::TempDir,
}

impl CliEnv {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// This environment's own signing-key entry in the (test session's) keyring.
    pub fn keyring_entry(&self) -> String {
        let name = self.dir.path().file_name().unwrap_or_default();
        format!("test-{}", name.to_string_lossy())
    }

    pub fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config(), text).unwrap();
    }

    pub fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("countersign"));
        c.arg("--config")
            .arg(self.config())
            .arg("--data-dir")
            .arg(self.data())
            .args(args)
            .env("PROD_TOKEN", TOKEN)
            .env("COUNTERSIGN_KEYRING_ENTRY", self.keyring_entry())
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "countersign {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its one-line error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "countersign {args:?} should fail");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("countersign: "), "{err}");
        err.lines().next().unwrap().to_owned()
    }
}
