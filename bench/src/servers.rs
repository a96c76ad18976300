//! Reference servers (`countersign-server`) as child processes, and filling them with
//! pending actions through their HTTP API, as producers do.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use countersign_core::model::{ActionKind, Detail};
use countersign_core::protocol::NewAction;

use crate::words::{self, Rng};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bearer token the bench's servers accept (loopback only, thrown away after).
pub const TOKEN: &str = "bench-token-0123456789";

pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    /// Starts a server on a free loopback port with its state in `state`.
    pub fn start(bin: &Path, state: &Path) -> Result<Self, BoxError> {
        let mut child = Command::new(bin)
            .args(["--addr", "127.0.0.1:0", "--state"])
            .arg(state)
            .env("COUNTERSIGN_SERVER_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line from the server: {first:?}"))?
            .trim_end_matches('/')
            .to_owned();
        Ok(Self { child, url })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plausible pending request, numbered.
pub fn new_action(n: u64, rng: &mut Rng) -> NewAction {
    let service = words::SERVICES[rng.pick(words::SERVICES.len())];
    let env = words::ENVS[rng.pick(words::ENVS.len())];
    NewAction {
        id: Some(format!("ingest-{n:06}")),
        kind: ActionKind::Command,
        title: format!(
            "{} {service} in {env}",
            words::VERBS[rng.pick(words::VERBS.len())]
        ),
        summary: words::sentence(rng, 10),
        requester: words::PEOPLE[rng.pick(words::PEOPLE.len())].to_owned(),
        resource: format!("{env}/{service}"),
        details: vec![
            Detail {
                key: "ticket".into(),
                value: format!("OPS-{n}"),
            },
            Detail {
                key: "change".into(),
                value: words::sentence(rng, 6),
            },
        ],
        approvals_required: Some(1),
        expires_in_secs: Some(3600),
        web_url: None,
        form: None,
    }
}

/// Creates `count` actions on `base` with `parallel` requests in flight.
pub async fn fill(
    http: &reqwest::Client,
    base: &str,
    first: u64,
    count: u64,
    parallel: usize,
) -> Result<(), BoxError> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(first));
    let end = first + count;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..parallel.max(1) {
        let next = next.clone();
        let http = http.clone();
        let url = format!("{base}/v1/actions");
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= end {
                    return Ok::<(), BoxError>(());
                }
                let mut rng = Rng::new(n);
                let response = http
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&new_action(n, &mut rng))
                    .send()
                    .await?;
                if !response.status().is_success() {
                    return Err(format!("create on {url}: {}", response.status()).into());
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
