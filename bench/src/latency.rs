//! Benchmark 1: event → notification latency. A reference server streams its events
//! over loopback SSE; `countersign notify` follows the stream and raises a native
//! notification through D-Bus, where this process owns `org.freedesktop.Notifications`
//! and notes when each `Notify` call arrives. The floor: `curl -N` reading the same
//! stream at the same time. Both are measured from the moment the bench sends the
//! `POST /v1/actions` that makes the server emit the event, so both include the
//! server's own work, and the difference is what Countersign adds.
//!
//! Needs a session bus (run under `dbus-run-session` or `scripts/with-keyring.sh`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use zbus::zvariant::OwnedValue;

use crate::servers::{self, Server, TOKEN};
use crate::table::{self, percentiles, Row};
use crate::words::Rng;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const TOKEN_VAR: &str = "COUNTERSIGN_BENCH_TOKEN";
/// Longest wait for one probe's notification before giving up on the run.
const PROBE_DEADLINE: Duration = Duration::from_secs(15);
/// Longer than the notifier's coalescing window (1 s).
const QUIET_BETWEEN_PROBES: Duration = Duration::from_millis(1200);

/// The notification server's side: every `Notify` call, timestamped on arrival.
struct Recorder {
    calls: mpsc::UnboundedSender<(Instant, String)>,
    next_id: std::sync::atomic::AtomicU32,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Recorder {
    #[allow(clippy::too_many_arguments)]
    async fn notify(
        &self,
        _app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        _body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let at = Instant::now();
        let _ = self.calls.send((at, summary));
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    async fn close_notification(&self, _id: u32) {}

    async fn get_capabilities(&self) -> Vec<String> {
        vec!["actions".into(), "body".into()]
    }

    async fn get_server_information(&self) -> (String, String, String, String) {
        (
            "countersign-bench".into(),
            "countersign".into(),
            "1.0".into(),
            "1.2".into(),
        )
    }
}

/// A child whose stdout lines arrive, timestamped, on a channel.
struct Lines {
    child: Child,
    rx: mpsc::UnboundedReceiver<(Instant, String)>,
}

impl Lines {
    fn spawn(cmd: &mut Command) -> Result<Self, BoxError> {
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, rx })
    }

    /// Waits for a line containing `needle`; when it arrived.
    async fn until(&mut self, needle: &str, deadline: Duration) -> Result<Instant, BoxError> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            match tokio::time::timeout_at(end, self.rx.recv()).await {
                Ok(Some((at, line))) if line.contains(needle) => return Ok(at),
                Ok(Some(_)) => {}
                Ok(None) => return Err(format!("the stream ended before {needle:?}").into()),
                Err(_) => return Err(format!("no line with {needle:?} in {deadline:?}").into()),
            }
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(
    server_bin: &Path,
    cli: &Path,
    curl: &str,
    work: &Path,
    probes: usize,
) -> Result<Vec<Row>, BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(measure(server_bin, cli, curl, work, probes))
}

async fn measure(
    server_bin: &Path,
    cli: &Path,
    curl: &str,
    work: &Path,
    probes: usize,
) -> Result<Vec<Row>, BoxError> {
    std::fs::create_dir_all(work)?;
    let (tx, mut notified) = mpsc::unbounded_channel();
    let _bus = zbus::connection::Builder::session()?
        .serve_at(
            "/org/freedesktop/Notifications",
            Recorder {
                calls: tx,
                next_id: std::sync::atomic::AtomicU32::new(1),
            },
        )?
        .name("org.freedesktop.Notifications")?
        .build()
        .await
        .map_err(|e| format!("cannot own org.freedesktop.Notifications (no session bus?): {e}"))?;

    let state = work.join("latency-server.db");
    let _ = std::fs::remove_file(&state);
    let server = Server::start(server_bin, &state)?;
    let config = work.join("latency-config.toml");
    std::fs::write(
        &config,
        format!(
            "approver = \"bench@countersign\"\n\n[[backend]]\nname = \"lat\"\nkind = \"countersign\"\nurl = \"{}\"\ntoken_env = \"{TOKEN_VAR}\"\n",
            server.url
        ),
    )?;
    let data = work.join("latency-data");
    let _ = std::fs::remove_dir_all(&data);
    let mut notify = Lines::spawn(
        Command::new(cli)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .arg("notify")
            .env(TOKEN_VAR, TOKEN)
            .env_remove("DISPLAY")
            .stderr(Stdio::null()),
    )?;
    notify
        .until("notifications: available", PROBE_DEADLINE)
        .await?;
    let mut sse = Lines::spawn(
        Command::new(curl)
            .args(["-sN", "-H"])
            .arg(format!("Authorization: Bearer {TOKEN}"))
            .arg(format!("{}/v1/events", server.url))
            .stderr(Stdio::null()),
    )?;
    // The server greets a subscriber with a comment; events before it are not replayed.
    sse.until(": connected", PROBE_DEADLINE).await?;

    let http = reqwest::Client::new();
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    // Probe 0 warms both paths up (connections, first store write); it is not counted.
    for i in 0..=probes {
        let mut new = servers::new_action(i as u64, &mut Rng::new(i as u64));
        let id = format!("lat-{i:05}");
        let title = format!("latency probe {i}");
        new.id = Some(id.clone());
        new.title = title.clone();
        let sent = Instant::now();
        let response = http
            .post(format!("{}/v1/actions", server.url))
            .bearer_auth(TOKEN)
            .json(&new)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("create {id}: {}", response.status()).into());
        }
        let seen = sse.until(&format!("\"{id}\""), PROBE_DEADLINE).await?;
        let end = tokio::time::Instant::now() + PROBE_DEADLINE;
        let shown = loop {
            match tokio::time::timeout_at(end, notified.recv()).await {
                Ok(Some((at, summary))) if summary == title => break at,
                Ok(Some(_)) => {}
                _ => return Err(format!("no notification for {id}").into()),
            }
        };
        if i > 0 {
            ours.push(shown.saturating_duration_since(sent));
            floor.push(seen.saturating_duration_since(sent));
        }
        // A lone request is what is measured: the notifier shows one at once, but a
        // request within its coalescing window after the last notification
        // (notify::policy::COALESCE_WINDOW, 1 s) joins a burst that waits for the window
        // to close. So the next probe comes after that window (the window itself is
        // measured by the burst tests, not here).
        tokio::time::sleep(QUIET_BETWEEN_PROBES).await;
    }
    drop(notify);
    drop(sse);
    drop(server);
    let _ = std::fs::remove_dir_all(&data);

    let p = percentiles(&ours);
    let f = percentiles(&floor);
    let goal = f.p99.mul_f64(1.2) + Duration::from_millis(20);
    Ok(vec![Row {
        name: format!("event → notification, {} probes over loopback SSE", p.n),
        // A lone request after a quiet spell: the notifier shows it at once (leading-
        // edge coalescing, notify::policy).
        ours: format!("{} (`countersign notify`)", table::p50_p99(&p)),
        reference: format!("{} (curl -N, same stream)", table::p50_p99(&f)),
        ratio: table::ratio(p.p99, f.p99),
        goal: format!("p99 ≤ 1.2× floor + 20 ms = {}", table::ms(goal)),
        met: Some(p.p99 <= goal),
    }])
}
