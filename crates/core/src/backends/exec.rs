//! The `exec` backend kind: any program that speaks the JSON-lines protocol of
//! docs/exec-plugins.md on stdin/stdout is a backend.
//!
//! One plugin process per request, in its own process group: Countersign writes one
//! request line to its stdin, closes it, and reads one answer line from its stdout. Every
//! call has a deadline (the whole group is killed when it passes), stdout a size cap and
//! stderr a bounded tail that is quoted in errors. A crash therefore costs one call and
//! degrades only this backend.
//!
//! A plugin that says it can (`watch = true` in its options) is also run once as a
//! long-lived `watch` process whose stdout is a stream of change lines, mapped to
//! [`Backend::subscribe`]. That process is bounded too: each line has a size cap, a
//! silence longer than the idle limit ends it, and it is killed (with its group) when the
//! stream ends for any reason, including the engine dropping the stream. The engine then
//! lists again and starts a new watch after its backoff, so a watch that crashes or
//! prints garbage costs only this backend's freshness, never another's.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{
    Backend, BackendError, BackendEvent, BuildError, Capabilities, DecisionDelivery,
    DeliveryOutcome, EventStream, Limits, ListOutcome, SyncCursor,
};
use crate::config::BackendConfig;
use crate::model::{ActionKey, ActionSnapshot, PendingAction, RemoteAction};
use crate::protocol::{DecisionBody, ErrorBody, TimelineAppended, WireTimelineEvent};

pub const KIND: &str = "exec";
/// The protocol version sent as `v` in every request.
pub const PROTOCOL_VERSION: u32 = 1;
/// How much of the end of a plugin's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 2048;
/// How much of a bad answer line is quoted back.
const SNIPPET_CHARS: usize = 120;

pub struct Exec {
    name: String,
    /// How errors name this backend: "exec plugin `name`".
    label: String,
    program: String,
    args: Vec<String>,
    token: Option<String>,
    timeout: Duration,
    max_output_bytes: usize,
    /// Whether the plugin answers `watch` (option `watch = true`).
    watch: bool,
    /// Longest silence of a watch before it is taken as dead and restarted.
    watch_idle: Duration,
    /// Cap on one watch line.
    max_line_bytes: usize,
    /// Idempotency keys already sent to the plugin by this process (see `decide`).
    sent: std::sync::Mutex<HashSet<String>>,
}

impl Exec {
    /// `command` is required; `[backend.options] timeout_secs` overrides the request
    /// deadline in `limits`, `watch = true` turns on the event stream and
    /// `watch_idle_secs` its silence limit; a token (`token_env`) reaches the plugin as
    /// `$COUNTERSIGN_TOKEN`.
    pub fn new(
        config: &BackendConfig,
        token: Option<String>,
        limits: Limits,
    ) -> Result<Self, BuildError> {
        let invalid = |detail: String| BuildError::Invalid {
            name: config.name.clone(),
            detail,
        };
        let (program, args) = match config.command.split_first() {
            Some((program, args)) if !program.trim().is_empty() => (program.clone(), args),
            _ => {
                return Err(invalid(
                    "kind `exec` needs `command = [\"program\", \"arg\", …]`".into(),
                ))
            }
        };
        let mut timeout = limits.request_timeout;
        let mut watch = false;
        let mut watch_idle = limits.stream_idle_timeout;
        let positive = |key: &str, value: &toml::Value| {
            value
                .as_integer()
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
                .ok_or_else(|| invalid(format!("options.{key} must be a positive integer")))
        };
        for (key, value) in &config.options {
            match key.as_str() {
                "timeout_secs" => timeout = positive(key, value)?,
                "watch_idle_secs" => watch_idle = positive(key, value)?,
                "watch" => {
                    watch = value
                        .as_bool()
                        .ok_or_else(|| invalid("options.watch must be true or false".into()))?;
                }
                other => {
                    return Err(invalid(format!(
                        "unknown option `{other}` for kind `exec` \
                         (known: timeout_secs, watch, watch_idle_secs)"
                    )))
                }
            }
        }
        Ok(Self {
            name: config.name.clone(),
            label: format!("exec plugin `{}`", config.name),
            program,
            args: args.to_vec(),
            token,
            timeout,
            max_output_bytes: limits.max_body_bytes,
            watch,
            watch_idle,
            max_line_bytes: limits.max_event_bytes,
            sent: std::sync::Mutex::new(HashSet::new()),
        })
    }

    fn malformed(&self, field: impl Into<String>, detail: impl Into<String>) -> BackendError {
        BackendError::Malformed {
            url: self.label.clone(),
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// Runs the plugin once for `request` and returns its answer object (an `error`
    /// answer already turned into a [`BackendError`]).
    async fn call(&self, request: &Request<'_>) -> Result<serde_json::Value, BackendError> {
        let run = self.run(request).await?;
        let answer = parse_answer_line(&run.stdout);
        // A plugin may exit non-zero after printing a proper error answer: that answer
        // says more than the status does.
        if let Ok(value) = &answer {
            if let Some(error) = value.get("error") {
                return Err(self.plugin_error(error, &run.stderr_tail));
            }
        }
        if !run.status.success() {
            return Err(BackendError::Unreachable {
                url: self.label.clone(),
                detail: exit_detail(&run.status, &run.stderr_tail),
            });
        }
        answer.map_err(|(field, detail)| self.malformed(field, detail))
    }

    fn plugin_error(&self, error: &serde_json::Value, stderr_tail: &str) -> BackendError {
        plugin_error(&self.label, error, stderr_tail)
    }

    fn request_line(&self, request: &Request<'_>) -> Result<Vec<u8>, BackendError> {
        let mut line =
            serde_json::to_vec(request).map_err(|e| self.malformed("(request)", e.to_string()))?;
        line.push(b'\n');
        Ok(line)
    }

    /// Starts the plugin in its own process group with all three pipes.
    fn spawn(&self) -> Result<tokio::process::Child, BackendError> {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .env("COUNTERSIGN_BACKEND", &self.name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(token) = &self.token {
            command.env("COUNTERSIGN_TOKEN", token);
        }
        #[cfg(unix)]
        command.process_group(0);
        command.spawn().map_err(|e| BackendError::Unreachable {
            url: self.label.clone(),
            detail: format!("cannot start `{}`: {e}", self.program),
        })
    }

    async fn run(&self, request: &Request<'_>) -> Result<Run, BackendError> {
        let line = self.request_line(request)?;
        let mut child = self.spawn()?;
        // From here on, leaving early (deadline, size cap, the caller giving up) kills
        // the plugin and everything it started.
        let mut group = GroupGuard(child.id());
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let write = async move {
            if let Some(mut stdin) = stdin {
                // A plugin that exits without reading is judged by its answer, not EPIPE.
                let _ = stdin.write_all(&line).await;
                let _ = stdin.shutdown().await;
            }
            Ok::<_, BackendError>(())
        };
        let read_out = async {
            match stdout {
                Some(out) => read_bounded(out, self.max_output_bytes)
                    .await
                    .map_err(|over| match over {
                        ReadError::TooLarge => BackendError::TooLarge {
                            url: self.label.clone(),
                            limit: self.max_output_bytes,
                        },
                        ReadError::Io(e) => BackendError::Unreachable {
                            url: self.label.clone(),
                            detail: format!("cannot read its output: {e}"),
                        },
                    }),
                None => Ok(Vec::new()),
            }
        };
        let read_err = async {
            Ok::<_, BackendError>(match stderr {
                Some(err) => read_tail(err, STDERR_TAIL_BYTES).await,
                None => String::new(),
            })
        };
        let wait = async {
            child.wait().await.map_err(|e| BackendError::Unreachable {
                url: self.label.clone(),
                detail: format!("cannot wait for it: {e}"),
            })
        };
        let work = async { tokio::try_join!(write, read_out, read_err, wait) };
        let (_, stdout, stderr_tail, status) = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| BackendError::Timeout {
                url: self.label.clone(),
                secs: self.timeout.as_secs(),
            })??;
        group.disarm();
        Ok(Run {
            status,
            stdout,
            stderr_tail,
        })
    }

    fn action(
        &self,
        prefix: &str,
        value: &serde_json::Value,
    ) -> Result<RemoteAction, BackendError> {
        decode_action(&self.name, prefix, value)
            .map_err(|(field, detail)| self.malformed(field, detail))
    }
}

/// An `{"error": …}` answer as a [`BackendError`] of the plugin labelled `label`.
fn plugin_error(label: &str, error: &serde_json::Value, stderr_tail: &str) -> BackendError {
    let body = serde_json::json!({ "error": error });
    let Ok(ErrorBody { error }) = serde_path_to_error::deserialize::<_, ErrorBody>(&body) else {
        return BackendError::Malformed {
            url: label.to_owned(),
            field: "error".into(),
            detail: format!(
                "an error answer needs `code` and `message`{}",
                quoted_stderr(stderr_tail)
            ),
        };
    };
    match error.code.as_str() {
        "not_found" => BackendError::NotFound(format!("{label}: {}", error.message)),
        "unsupported" => BackendError::Unsupported("answer this request (plugin: unsupported)"),
        code => BackendError::Unreachable {
            url: label.to_owned(),
            detail: format!("the plugin reported `{code}`: {}", error.message),
        },
    }
}

/// Kills a plugin's whole process group when dropped, unless disarmed.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }

    /// Kills the group now (before the child is reaped, so the id is still ours).
    fn kill(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.0.and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: killpg only sends a signal; the group is the one the child leads
            // (process_group(0)), which exists at least as long as the unreaped child.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Run {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr_tail: String,
}

enum ReadError {
    TooLarge,
    Io(std::io::Error),
}

async fn read_bounded(mut r: impl AsyncRead + Unpin, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > max {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Reads a stream to its end, keeping only its last `keep` bytes.
async fn read_tail(mut r: impl AsyncRead + Unpin, keep: usize) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }
    String::from_utf8_lossy(&tail).trim().to_owned()
}

fn quoted_stderr(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; stderr: {}", tail.lines().collect::<Vec<_>>().join(" | "))
    }
}

fn exit_detail(status: &std::process::ExitStatus, stderr_tail: &str) -> String {
    let how = match status.code() {
        Some(code) => format!("the plugin exited with status {code}"),
        None => format!("the plugin was stopped ({status})"),
    };
    let stderr = if stderr_tail.is_empty() {
        "; it wrote nothing on stderr".to_owned()
    } else {
        quoted_stderr(stderr_tail)
    };
    format!("{how}{stderr}")
}

fn snippet(s: &str) -> String {
    let mut out: String = s.chars().take(SNIPPET_CHARS).collect();
    if s.chars().count() > SNIPPET_CHARS {
        out.push('…');
    }
    out
}

/// The one JSON object a plugin must print; errors as (field, detail).
fn parse_answer_line(stdout: &[u8]) -> Result<serde_json::Value, (String, String)> {
    let out = "(output)".to_owned();
    let text = std::str::from_utf8(stdout)
        .map_err(|e| (out.clone(), format!("the output is not UTF-8: {e}")))?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.as_slice() {
        [] => Err((
            out,
            "the plugin printed no answer (it must print one JSON line on stdout)".into(),
        )),
        [line] => {
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| (out.clone(), format!("not JSON ({e}): `{}`", snippet(line))))?;
            if value.is_object() {
                Ok(value)
            } else {
                Err((
                    out,
                    format!("the answer must be a JSON object: `{}`", snippet(line)),
                ))
            }
        }
        many => Err((
            out,
            format!(
                "expected one JSON line, got {} lines (logs belong on stderr); first: `{}`",
                many.len(),
                snippet(many[0])
            ),
        )),
    }
}

/// The parts of a plugin action that are not the snapshot. Decoded separately from the
/// snapshot (no `flatten`), so every error names its exact JSON path.
#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(default)]
    timeline: Vec<WireTimelineEvent>,
}

/// Decodes one plugin action (the open protocol's action without `snapshot_hash`) and
/// computes its snapshot hash. Errors are (JSON path, detail).
fn decode_action(
    backend: &str,
    prefix: &str,
    value: &serde_json::Value,
) -> Result<RemoteAction, (String, String)> {
    let join = |path: String| match (prefix.is_empty(), path.as_str()) {
        (true, _) => path,
        (false, ".") => prefix.to_owned(),
        (false, _) => format!("{prefix}.{path}"),
    };
    let fail = |e: serde_path_to_error::Error<serde_json::Error>| {
        (join(e.path().to_string()), e.into_inner().to_string())
    };
    let snapshot: ActionSnapshot = serde_path_to_error::deserialize(value).map_err(fail)?;
    let envelope: Envelope = serde_path_to_error::deserialize(value).map_err(fail)?;
    if envelope.id.is_empty() {
        return Err((join("id".into()), "must not be empty".into()));
    }
    Ok(RemoteAction {
        action: PendingAction::new(ActionKey::new(backend, envelope.id), snapshot),
        timeline: envelope
            .timeline
            .into_iter()
            .map(super::countersign::timeline_event)
            .collect(),
    })
}

/// A request line. `decision` only for `decide`, `id` only for `fetch`.
#[derive(Serialize)]
struct Request<'a> {
    v: u32,
    op: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<PluginDecision<'a>>,
}

impl<'a> Request<'a> {
    fn new(op: &'static str) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            op,
            id: None,
            decision: None,
        }
    }
}

/// The decision as a plugin receives it: the open protocol's decision body plus the
/// action's id.
#[derive(Serialize)]
struct PluginDecision<'a> {
    id: &'a str,
    #[serde(flatten)]
    body: DecisionBody,
}

#[derive(Deserialize)]
struct ListAnswer {
    actions: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct FetchAnswer {
    action: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum DecideResult {
    Delivered,
    Rejected,
    Stale,
    Expired,
    NotPending,
}

#[derive(Deserialize)]
struct DecideAnswer {
    result: DecideResult,
    #[serde(default)]
    reason: Option<String>,
    /// For `not_pending`: the action's status now.
    #[serde(default)]
    status: Option<String>,
    /// The action after the decision (optional; for `stale` it gives the current hash).
    #[serde(default)]
    action: Option<serde_json::Value>,
}

impl Exec {
    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        value: &serde_json::Value,
    ) -> Result<T, BackendError> {
        serde_path_to_error::deserialize(value)
            .map_err(|e| self.malformed(e.path().to_string(), e.into_inner().to_string()))
    }
}

fn decide_outcome(exec: &Exec, answer: DecideAnswer) -> Result<DeliveryOutcome, BackendError> {
    let action = answer
        .action
        .as_ref()
        .map(|v| exec.action("action", v))
        .transpose()?;
    Ok(match answer.result {
        DecideResult::Delivered => DeliveryOutcome::Delivered {
            action: action.map(Box::new),
        },
        DecideResult::Rejected => DeliveryOutcome::Rejected {
            reason: answer
                .reason
                .unwrap_or_else(|| "refused by the plugin (no reason given)".into()),
        },
        DecideResult::Stale => DeliveryOutcome::Stale {
            current_snapshot_hash: action.map(|a| a.action.snapshot_hash.0).unwrap_or_default(),
        },
        DecideResult::Expired => DeliveryOutcome::Expired,
        DecideResult::NotPending => DeliveryOutcome::NotPending {
            status: answer
                .status
                .or_else(|| action.map(|a| a.action.snapshot.status.as_str().to_owned()))
                .unwrap_or_else(|| "unknown".into()),
        },
    })
}

// ---- watch: the optional event stream ----

/// The stream's capacity: a plugin that prints faster than the engine stores waits.
const WATCH_CHANNEL: usize = 64;
/// Longest wait for the rest of a dead watch's stderr.
const STDERR_DRAIN: Duration = Duration::from_secs(2);

/// What a watch task needs from its backend (the task outlives the `&self` borrow).
struct WatchCtx {
    name: String,
    label: String,
    idle: Duration,
    max_line: usize,
}

impl WatchCtx {
    fn malformed(&self, field: impl Into<String>, detail: impl Into<String>) -> BackendError {
        BackendError::Malformed {
            url: self.label.clone(),
            field: field.into(),
            detail: detail.into(),
        }
    }
}

/// One stdout line of a watch, decoded.
#[allow(clippy::large_enum_variant)] // one line at a time, moved straight into the channel
enum WatchLine {
    Event(BackendEvent),
    /// A heartbeat, or a `type` this version does not know: proof of life only.
    Alive,
}

/// Decodes one watch line (docs/exec-plugins.md, "watch"). Errors are (field, detail),
/// except an `error` line, which is the plugin's own report.
fn parse_watch_line(backend: &str, line: &str) -> Result<WatchLine, WatchLineError> {
    let field = "(watch)";
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
        WatchLineError::Malformed(field.into(), format!("not JSON ({e}): `{}`", snippet(line)))
    })?;
    let Some(object) = value.as_object() else {
        return Err(WatchLineError::Malformed(
            field.into(),
            format!("each line must be a JSON object: `{}`", snippet(line)),
        ));
    };
    if let Some(error) = object.get("error") {
        return Err(WatchLineError::Plugin(error.clone()));
    }
    let Some(kind) = object.get("type").and_then(|t| t.as_str()) else {
        return Err(WatchLineError::Malformed(
            "(watch).type".into(),
            format!(
                "each line needs a `type` (upsert, timeline, heartbeat): `{}`",
                snippet(line)
            ),
        ));
    };
    match kind {
        "upsert" => {
            let action = object.get("action").ok_or_else(|| {
                WatchLineError::Malformed("(watch).action".into(), "missing field".into())
            })?;
            let action = decode_action(backend, "(watch).action", action)
                .map_err(|(f, d)| WatchLineError::Malformed(f, d))?;
            Ok(WatchLine::Event(BackendEvent::Upsert {
                event_id: None,
                action,
            }))
        }
        "timeline" => {
            let appended: TimelineAppended =
                serde_path_to_error::deserialize(&value).map_err(|e| {
                    WatchLineError::Malformed(
                        format!("(watch).{}", e.path()),
                        e.into_inner().to_string(),
                    )
                })?;
            Ok(WatchLine::Event(BackendEvent::TimelineAppended {
                event_id: None,
                external_id: appended.action_id,
                event: super::countersign::timeline_event(appended.event),
            }))
        }
        // Unknown types are skipped so a newer plugin still works with this version.
        _ => Ok(WatchLine::Alive),
    }
}

enum WatchLineError {
    Malformed(String, String),
    Plugin(serde_json::Value),
}

/// Reads newline-terminated lines, refusing any longer than `max` bytes.
struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Where to resume looking for a newline in `buf`.
    scanned: usize,
    max: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            scanned: 0,
            max,
        }
    }

    /// The next line without its newline; `None` at the end of the stream.
    async fn next_line(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        let mut chunk = [0u8; 8 * 1024];
        loop {
            if let Some(pos) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
                let end = self.scanned + pos;
                let line = self.buf[..end].to_vec();
                self.buf.drain(..=end);
                self.scanned = 0;
                return Ok(Some(line));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > self.max {
                return Err(ReadError::TooLarge);
            }
            let n = self.inner.read(&mut chunk).await.map_err(ReadError::Io)?;
            if n == 0 {
                // A last line without a newline still counts.
                if self.buf.is_empty() {
                    return Ok(None);
                }
                self.scanned = 0;
                return Ok(Some(std::mem::take(&mut self.buf)));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Keeps the last `STDERR_TAIL_BYTES` of a stream, readable while it is still open.
async fn collect_tail(mut r: impl AsyncRead + Unpin, tail: Arc<Mutex<Vec<u8>>>) {
    let mut buf = vec![0u8; 8 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
        t.extend_from_slice(&buf[..n]);
        if t.len() > STDERR_TAIL_BYTES {
            let cut = t.len() - STDERR_TAIL_BYTES;
            t.drain(..cut);
        }
    }
}

/// How following a watch ended.
enum WatchEnd {
    /// Nobody listens any more (the engine dropped the stream).
    Unsubscribed,
    /// The plugin closed its stdout (it exited, most likely).
    Closed,
    Failed(BackendError),
}

/// Follows a watch process until it ends, fails, or nobody listens any more.
async fn follow_watch(
    ctx: &WatchCtx,
    stdout: tokio::process::ChildStdout,
    tx: &mpsc::Sender<Result<BackendEvent, BackendError>>,
) -> WatchEnd {
    let mut lines = LineReader::new(stdout, ctx.max_line);
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return WatchEnd::Unsubscribed,
            next = tokio::time::timeout(ctx.idle, lines.next_line()) => next,
        };
        let line = match next {
            Err(_) => {
                return WatchEnd::Failed(BackendError::Timeout {
                    url: format!("{} (watch)", ctx.label),
                    secs: ctx.idle.as_secs(),
                })
            }
            Ok(Err(ReadError::TooLarge)) => {
                return WatchEnd::Failed(BackendError::TooLarge {
                    url: format!("{} (watch)", ctx.label),
                    limit: ctx.max_line,
                })
            }
            Ok(Err(ReadError::Io(e))) => {
                return WatchEnd::Failed(BackendError::Unreachable {
                    url: ctx.label.clone(),
                    detail: format!("cannot read its watch output: {e}"),
                })
            }
            // The exit status and stderr are added by the caller.
            Ok(Ok(None)) => return WatchEnd::Closed,
            Ok(Ok(Some(line))) => line,
        };
        let text = match std::str::from_utf8(&line) {
            Ok(t) => t.trim(),
            Err(e) => {
                return WatchEnd::Failed(
                    ctx.malformed("(watch)", format!("a line is not UTF-8: {e}")),
                )
            }
        };
        if text.is_empty() {
            continue;
        }
        match parse_watch_line(&ctx.name, text) {
            Ok(WatchLine::Alive) => {}
            Ok(WatchLine::Event(event)) => {
                if tx.send(Ok(event)).await.is_err() {
                    return WatchEnd::Unsubscribed;
                }
            }
            Err(WatchLineError::Malformed(field, detail)) => {
                return WatchEnd::Failed(ctx.malformed(field, detail))
            }
            Err(WatchLineError::Plugin(error)) => {
                return WatchEnd::Failed(plugin_error(&ctx.label, &error, ""))
            }
        }
    }
}

impl Exec {
    /// Starts `command` with a `watch` request and streams its change lines. Stdin stays
    /// open for the life of the watch: its end tells the plugin to stop, should
    /// Countersign go away without killing the group.
    async fn start_watch(&self) -> Result<EventStream, BackendError> {
        let line = self.request_line(&Request::new("watch"))?;
        let mut child = self.spawn()?;
        let mut group = GroupGuard(child.id());
        let mut stdin = child.stdin.take();
        if let Some(pipe) = stdin.as_mut() {
            let write = async {
                pipe.write_all(&line).await?;
                pipe.flush().await
            };
            // A plugin that does not read its request is judged by what it prints.
            let _ = tokio::time::timeout(self.timeout, write).await;
        }
        let Some(stdout) = child.stdout.take() else {
            return Err(BackendError::Unreachable {
                url: self.label.clone(),
                detail: "no stdout pipe for the watch".into(),
            });
        };
        let tail = Arc::new(Mutex::new(Vec::new()));
        let stderr_task = child
            .stderr
            .take()
            .map(|err| tokio::spawn(collect_tail(err, tail.clone())));
        let ctx = WatchCtx {
            name: self.name.clone(),
            label: self.label.clone(),
            idle: self.watch_idle,
            max_line: self.max_line_bytes,
        };
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
        tokio::spawn(async move {
            let ended = follow_watch(&ctx, stdout, &tx).await;
            // Whatever ended the watch, the group goes now: a hung or flooding plugin, and
            // anything it started, must not outlive its stream.
            group.kill();
            drop(stdin);
            if matches!(ended, WatchEnd::Unsubscribed) {
                if let Some(task) = stderr_task {
                    task.abort();
                }
                let _ = child.wait().await;
                return;
            }
            let status = child.wait().await.ok();
            // The group is dead, so stderr normally ends at once; a grandchild that left
            // the group could hold it open, hence the bound.
            if let Some(mut task) = stderr_task {
                if tokio::time::timeout(STDERR_DRAIN, &mut task).await.is_err() {
                    task.abort();
                }
            }
            let tail = {
                let t = tail.lock().unwrap_or_else(|p| p.into_inner());
                String::from_utf8_lossy(&t).trim().to_owned()
            };
            let error = match ended {
                WatchEnd::Unsubscribed => return,
                // The plugin closed its stdout: say how it ended.
                WatchEnd::Closed => BackendError::Unreachable {
                    url: ctx.label.clone(),
                    detail: match status {
                        Some(status) => format!("watch ended: {}", exit_detail(&status, &tail)),
                        None => format!("watch ended{}", quoted_stderr(&tail)),
                    },
                },
                WatchEnd::Failed(BackendError::Malformed { url, field, detail }) => {
                    BackendError::Malformed {
                        url,
                        field,
                        detail: format!("{detail}{}", quoted_stderr(&tail)),
                    }
                }
                WatchEnd::Failed(BackendError::Unreachable { url, detail }) => {
                    BackendError::Unreachable {
                        url,
                        detail: format!("{detail}{}", quoted_stderr(&tail)),
                    }
                }
                WatchEnd::Failed(other) => other,
            };
            let _ = tx.send(Err(error)).await;
        });
        Ok(rx)
    }
}

#[async_trait]
impl Backend for Exec {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list: true,
            fetch: true,
            decide: true,
            subscribe: self.watch,
        }
    }

    async fn list_pending(&self, _cursor: &SyncCursor) -> Result<ListOutcome, BackendError> {
        let value = self.call(&Request::new("list")).await?;
        let list: ListAnswer = self.decode(&value)?;
        let actions = list
            .actions
            .iter()
            .enumerate()
            .map(|(i, v)| self.action(&format!("actions[{i}]"), v))
            .collect::<Result<_, _>>()?;
        Ok(ListOutcome::Listed {
            actions,
            etag: None,
            cursor: None,
        })
    }

    async fn fetch(&self, external_id: &str) -> Result<RemoteAction, BackendError> {
        let mut request = Request::new("fetch");
        request.id = Some(external_id);
        let value = self.call(&request).await?;
        let answer: FetchAnswer = self.decode(&value)?;
        let action = self.action("action", &answer.action)?;
        if action.action.key.external_id != external_id {
            return Err(self.malformed(
                "action.id",
                format!(
                    "asked for `{external_id}`, got `{}`",
                    action.action.key.external_id
                ),
            ));
        }
        Ok(action)
    }

    /// Plugins are not asked to compute snapshot hashes, so the binding a server of the
    /// open protocol checks on delivery is checked here: before a decision first goes
    /// to the plugin, the action is fetched and a pending action whose hash moved on
    /// answers `Stale` without the plugin seeing the decision. Retries of a decision
    /// already sent skip the check (the plugin's own review may be what changed the
    /// action) and rely on the plugin's idempotency.
    async fn decide(&self, delivery: &DecisionDelivery) -> Result<DeliveryOutcome, BackendError> {
        let d = &delivery.decision;
        let key = d.idempotency_key.clone();
        let first = self
            .sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        if first {
            let forget = || {
                self.sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            };
            match self.fetch(&d.action.external_id).await {
                Ok(current)
                    if current.action.snapshot.status.is_open()
                        && current.action.snapshot_hash != d.snapshot_hash =>
                {
                    forget();
                    return Ok(DeliveryOutcome::Stale {
                        current_snapshot_hash: current.action.snapshot_hash.0,
                    });
                }
                Ok(_) => {}
                Err(BackendError::NotFound(message)) => {
                    forget();
                    return Ok(DeliveryOutcome::Rejected {
                        reason: format!("the action is gone: {message}"),
                    });
                }
                Err(e) => {
                    forget();
                    return Err(e);
                }
            }
        }
        let mut request = Request::new("decide");
        request.decision = Some(PluginDecision {
            id: &d.action.external_id,
            body: DecisionBody::from_decision(d),
        });
        let value = self.call(&request).await?;
        let answer: DecideAnswer = self.decode(&value)?;
        decide_outcome(self, answer)
    }

    /// Watch lines carry no event ids: every (re)connect starts with a fresh `list`, so
    /// there is nothing to resume from and `last_event_id` is not sent.
    async fn subscribe(&self, _last_event_id: Option<String>) -> Result<EventStream, BackendError> {
        if !self.watch {
            return Err(BackendError::Unsupported("subscribe"));
        }
        self.start_watch().await
    }
}

/// Fuzzing entry (see [`super::fuzzing`]): a plugin's answer on stdout, and each line as
/// a `watch` stream line.
pub(super) fn fuzz_parse(data: &[u8]) {
    if let Ok(value) = parse_answer_line(data) {
        let _ = decode_action("fuzz", "", &value);
        if let Some(actions) = value.get("actions").and_then(|a| a.as_array()) {
            for (i, a) in actions.iter().enumerate() {
                let _ = decode_action("fuzz", &format!("actions[{i}]"), a);
            }
        }
    }
    for line in String::from_utf8_lossy(data).lines() {
        let _ = parse_watch_line("fuzz", line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn action_json() -> serde_json::Value {
        json!({
            "id": "req-1",
            "kind": "db_session",
            "title": "psql to prod",
            "requester": "dana@example.com",
            "requested_at": "2026-11-25T01:02:03.123456789Z",
            "status": "pending",
            "details": [{"key": "roles", "value": "dba"}],
            "timeline": [{"id": "t1", "at": "2026-11-25T01:02:03Z", "kind": "requested",
                          "actor": "dana", "text": "Requested"}]
        })
    }

    fn exec(options: &str) -> Result<Exec, BuildError> {
        let config = BackendConfig {
            name: "plug".into(),
            kind: KIND.into(),
            command: vec!["prog".into(), "--flag".into()],
            options: toml::from_str(options).unwrap(),
            ..Default::default()
        };
        Exec::new(&config, None, Limits::default())
    }

    #[test]
    fn an_action_is_hashed_here_and_keeps_its_timeline() {
        let remote = decode_action("plug", "action", &action_json()).unwrap();
        assert_eq!(remote.action.key, ActionKey::new("plug", "req-1"));
        assert_eq!(remote.action.snapshot_hash, remote.action.snapshot.hash());
        assert_eq!(remote.action.snapshot.approvals_required, 1);
        assert_eq!(remote.timeline.len(), 1);
        assert_eq!(remote.timeline[0].external_id.as_deref(), Some("t1"));
    }

    #[test]
    fn a_bad_field_is_named_by_its_json_path() {
        let mut v = action_json();
        v["details"][0]["value"] = json!(7);
        let (field, _) = decode_action("plug", "actions[3]", &v).unwrap_err();
        assert_eq!(field, "actions[3].details[0].value");
        let mut v = action_json();
        v["timeline"][0]["at"] = json!("yesterday");
        let (field, _) = decode_action("plug", "action", &v).unwrap_err();
        assert_eq!(field, "action.timeline[0].at");
        let mut v = action_json();
        v.as_object_mut().unwrap().remove("id");
        let (field, detail) = decode_action("plug", "action", &v).unwrap_err();
        assert_eq!(field, "action", "{detail}");
        assert!(detail.contains("id"), "{detail}");
    }

    #[test]
    fn the_answer_must_be_exactly_one_json_object_line() {
        assert!(parse_answer_line(b"\n{\"actions\":[]}\n\n").is_ok());
        let (_, detail) = parse_answer_line(b"").unwrap_err();
        assert!(detail.contains("no answer"), "{detail}");
        let (field, detail) =
            parse_answer_line(b"Traceback (most recent call last)\n").unwrap_err();
        assert_eq!(field, "(output)");
        assert!(
            detail.contains("not JSON") && detail.contains("Traceback"),
            "{detail}"
        );
        let (_, detail) = parse_answer_line(b"{}\n{}\n").unwrap_err();
        assert!(detail.contains("got 2 lines"), "{detail}");
        assert!(parse_answer_line(b"[1]").is_err());
        assert!(parse_answer_line(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn config_needs_a_command_and_knows_its_options() {
        let e = exec("timeout_secs = 3").unwrap();
        assert_eq!(e.timeout, Duration::from_secs(3));
        assert_eq!(
            (e.program.as_str(), e.args.as_slice()),
            ("prog", &["--flag".to_owned()][..])
        );
        assert_eq!(exec("").unwrap().timeout, Limits::default().request_timeout);
        assert!(exec("timeout_secs = 0").is_err());
        assert!(exec("timout_secs = 3")
            .err()
            .unwrap()
            .to_string()
            .contains("timout_secs"));
        let empty = BackendConfig {
            name: "p".into(),
            kind: KIND.into(),
            ..Default::default()
        };
        assert!(Exec::new(&empty, None, Limits::default())
            .err()
            .unwrap()
            .to_string()
            .contains("command"));
    }

    #[test]
    fn decisions_are_sent_with_the_actions_id_and_the_open_protocols_fields() {
        let request = Request {
            decision: Some(PluginDecision {
                id: "req-1",
                body: DecisionBody {
                    verdict: crate::model::Verdict::Approve,
                    reason: "ok".into(),
                    snapshot_hash: crate::snapshot::SnapshotHash("ab".into()),
                    decided_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
                    approver: "ana".into(),
                    idempotency_key: "cs-1".into(),
                    public_key: None,
                    signature: None,
                    payload: None,
                    answer: None,
                },
            }),
            ..Request::new("decide")
        };
        let v = serde_json::to_value(&request).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["op"], "decide");
        assert_eq!(v["decision"]["id"], "req-1");
        assert_eq!(v["decision"]["verdict"], "approve");
        assert_eq!(v["decision"]["idempotency_key"], "cs-1");
        assert_eq!(v["decision"]["decided_at"], "1970-01-01T00:00:00.000Z");
        assert!(v.get("id").is_none());
    }

    fn sh(script: &str, timeout_secs: u64, max_body_bytes: usize) -> Exec {
        let config = BackendConfig {
            name: "sh".into(),
            kind: KIND.into(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            options: toml::from_str(&format!("timeout_secs = {timeout_secs}")).unwrap(),
            ..Default::default()
        };
        let limits = Limits {
            max_body_bytes,
            ..Limits::default()
        };
        Exec::new(&config, None, limits).unwrap()
    }

    #[tokio::test]
    async fn the_request_goes_to_stdin_and_the_answer_comes_from_stdout() {
        let e = sh(
            r#"read line; case "$line" in '{"v":1,"op":"list"}') echo '{"actions":[]}';; *) exit 9;; esac"#,
            5,
            1024,
        );
        match e.list_pending(&SyncCursor::default()).await.unwrap() {
            ListOutcome::Listed { actions, .. } => assert!(actions.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn process_failures_become_clear_errors() {
        let cursor = SyncCursor::default();
        let missing = Exec::new(
            &BackendConfig {
                name: "gone".into(),
                kind: KIND.into(),
                command: vec!["/nonexistent/plugin".into()],
                ..Default::default()
            },
            None,
            Limits::default(),
        )
        .unwrap();
        let err = missing.list_pending(&cursor).await.unwrap_err();
        assert_eq!(err.code(), "unreachable");
        assert!(
            err.to_string()
                .contains("cannot start `/nonexistent/plugin`"),
            "{err}"
        );

        let flood = sh("head -c 100000 /dev/zero | tr '\\0' a", 5, 1000);
        let err = flood.list_pending(&cursor).await.unwrap_err();
        assert_eq!(err.code(), "too_large", "{err}");

        let not_found = sh(
            r#"echo '{"error":{"code":"not_found","message":"no such request"}}'; exit 1"#,
            5,
            1024,
        );
        let err = not_found.fetch("r1").await.unwrap_err();
        assert!(matches!(err, BackendError::NotFound(_)), "{err}");
        assert!(err.to_string().contains("no such request"), "{err}");

        let started = std::time::Instant::now();
        let slow = sh("sleep 30", 1, 1024);
        let err = slow.list_pending(&cursor).await.unwrap_err();
        assert_eq!(err.code(), "timeout", "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn decide_answers_map_to_outcomes() {
        let e = exec("").unwrap();
        let outcome = |v: serde_json::Value| decide_outcome(&e, e.decode(&v)?);
        assert!(matches!(
            outcome(json!({"result": "delivered"})).unwrap(),
            DeliveryOutcome::Delivered { action: None }
        ));
        assert!(matches!(
            outcome(json!({"result": "not_pending", "status": "approved"})).unwrap(),
            DeliveryOutcome::NotPending { status } if status == "approved"
        ));
        let hash = decode_action("plug", "", &action_json())
            .unwrap()
            .action
            .snapshot_hash;
        assert!(matches!(
            outcome(json!({"result": "stale", "action": action_json()})).unwrap(),
            DeliveryOutcome::Stale { current_snapshot_hash } if current_snapshot_hash == hash.0
        ));
        match outcome(json!({"result": "maybe"})).unwrap_err() {
            BackendError::Malformed { field, .. } => assert_eq!(field, "result"),
            other => panic!("{other}"),
        }
    }
    #[test]
    fn a_form_comes_in_and_a_choice_goes_out_with_its_answer() {
        let mut v = action_json();
        v["form"] = json!({"options": ["eu", "us"], "fields": [
            {"name": "ticket", "label": "Ticket", "field_type": "text", "required": true}]});
        let remote = decode_action("plug", "action", &v).unwrap();
        let form = remote
            .action
            .snapshot
            .form
            .clone()
            .expect("the form is kept");
        assert_eq!(form.options, ["eu", "us"]);
        assert_eq!(form.fields[0].field_type, crate::model::FieldType::Text);
        let plain = decode_action("plug", "action", &action_json()).unwrap();
        assert_ne!(
            remote.action.snapshot_hash, plain.action.snapshot_hash,
            "the form is part of what is decided on"
        );

        let answer = crate::model::Answer {
            options: vec!["eu".into()],
            params: [("ticket".to_owned(), json!("CHG-7"))].into(),
        };
        let request = Request {
            decision: Some(PluginDecision {
                id: "req-1",
                body: DecisionBody {
                    verdict: crate::model::Verdict::Choose,
                    reason: String::new(),
                    snapshot_hash: remote.action.snapshot_hash.clone(),
                    decided_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
                    approver: "ana".into(),
                    idempotency_key: "cs-2".into(),
                    public_key: None,
                    signature: None,
                    payload: None,
                    answer: Some(answer),
                },
            }),
            ..Request::new("decide")
        };
        let v = serde_json::to_value(&request).unwrap();
        assert_eq!(v["decision"]["verdict"], "choose");
        assert_eq!(
            v["decision"]["answer"],
            json!({"options": ["eu"], "params": {"ticket": "CHG-7"}})
        );
    }

    fn watching(script: &str, idle_secs: u64, max_event_bytes: usize) -> Exec {
        let config = BackendConfig {
            name: "sh".into(),
            kind: KIND.into(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            options: toml::from_str(&format!("watch = true\nwatch_idle_secs = {idle_secs}"))
                .unwrap(),
            ..Default::default()
        };
        let limits = Limits {
            max_event_bytes,
            ..Limits::default()
        };
        Exec::new(&config, None, limits).unwrap()
    }

    async fn end_of(mut stream: EventStream) -> BackendError {
        loop {
            match stream.recv().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return e,
                None => panic!("the stream closed without saying why"),
            }
        }
    }

    #[test]
    fn watch_is_opt_in() {
        assert!(!exec("").unwrap().capabilities().subscribe);
        let e = exec("watch = true\nwatch_idle_secs = 5").unwrap();
        assert!(e.capabilities().subscribe);
        assert_eq!(e.watch_idle, Duration::from_secs(5));
        assert!(exec("watch = \"yes\"").is_err());
        assert!(exec("watch_idle_secs = -1").is_err());
    }

    #[test]
    fn watch_lines_decode_or_name_what_is_wrong() {
        let upsert = json!({"type": "upsert", "action": action_json()}).to_string();
        match parse_watch_line("plug", &upsert) {
            Ok(WatchLine::Event(BackendEvent::Upsert { event_id, action })) => {
                assert_eq!(event_id, None);
                assert_eq!(action.action.key, ActionKey::new("plug", "req-1"));
            }
            _ => panic!("an upsert"),
        }
        let timeline = r#"{"type":"timeline","action_id":"req-1","event":{"id":"t9","at":"2026-11-25T01:00:00Z","kind":"reviewed","text":"x"}}"#;
        assert!(matches!(
            parse_watch_line("plug", timeline),
            Ok(WatchLine::Event(BackendEvent::TimelineAppended { external_id, .. })) if external_id == "req-1"
        ));
        assert!(matches!(
            parse_watch_line("plug", r#"{"type":"heartbeat"}"#),
            Ok(WatchLine::Alive)
        ));
        assert!(matches!(
            parse_watch_line("plug", r#"{"type":"from_the_future"}"#),
            Ok(WatchLine::Alive)
        ));
        let malformed = |line: &str| match parse_watch_line("plug", line) {
            Err(WatchLineError::Malformed(field, detail)) => (field, detail),
            _ => panic!("malformed: {line}"),
        };
        assert!(malformed("oops").1.contains("not JSON"));
        assert_eq!(malformed("[1]").0, "(watch)");
        assert_eq!(malformed(r#"{"action":{}}"#).0, "(watch).type");
        let mut bad = action_json();
        bad["title"] = json!(1);
        let (field, _) = malformed(&json!({"type": "upsert", "action": bad}).to_string());
        assert_eq!(field, "(watch).action.title");
        let (field, _) = malformed(r#"{"type":"timeline","action_id":"a"}"#);
        assert!(field.starts_with("(watch)"), "{field}");
        assert!(matches!(
            parse_watch_line("plug", r#"{"error":{"code":"unavailable","message":"m"}}"#),
            Err(WatchLineError::Plugin(_))
        ));
    }

    #[tokio::test]
    async fn a_watch_streams_until_it_goes_silent() {
        let line = json!({"type": "upsert", "action": action_json()}).to_string();
        let script = format!(
            r#"read req; case "$req" in '{{"v":1,"op":"watch"}}') ;; *) exit 9;; esac
echo '{{"type":"heartbeat"}}'; echo '{line}'; exec sleep 30"#
        );
        let e = watching(&script, 1, 1 << 20);
        let mut stream = e.subscribe(None).await.unwrap();
        match stream.recv().await {
            Some(Ok(BackendEvent::Upsert { action, .. })) => {
                assert_eq!(action.action.key.external_id, "req-1")
            }
            other => panic!("{other:?}"),
        }
        let started = std::time::Instant::now();
        let err = end_of(stream).await;
        assert_eq!(err.code(), "timeout", "{err}");
        assert!(err.to_string().contains("(watch)"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_watch_that_ends_says_how_and_quotes_stderr() {
        let e = watching("read req; echo 'feed lost' >&2; exit 4", 30, 1 << 20);
        let err = end_of(e.subscribe(None).await.unwrap()).await;
        assert_eq!(err.code(), "unreachable");
        let text = err.to_string();
        assert!(
            text.contains("watch ended: the plugin exited with status 4; stderr: feed lost"),
            "{text}"
        );

        let e = watching(
            r#"read req; echo '{"error":{"code":"unavailable","message":"feed down"}}'; exec sleep 30"#,
            30,
            1 << 20,
        );
        let err = end_of(e.subscribe(None).await.unwrap()).await;
        assert!(err.to_string().contains("feed down"), "{err}");

        let e = watching(
            "read req; head -c 5000 /dev/zero | tr '\\0' a; exec sleep 30",
            30,
            1000,
        );
        let err = end_of(e.subscribe(None).await.unwrap()).await;
        assert_eq!(err.code(), "too_large", "{err}");

        let e = watching("read req; echo 'not json'; exec sleep 30", 30, 1 << 20);
        let err = end_of(e.subscribe(None).await.unwrap()).await;
        assert_eq!(err.code(), "malformed", "{err}");
    }

    #[tokio::test]
    async fn dropping_the_stream_kills_the_watch_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!(
            "read req; sleep 60 & echo $! > {}; echo '{{\"type\":\"heartbeat\"}}'; wait",
            pidfile.display()
        );
        let e = watching(&script, 30, 1 << 20);
        let stream = e.subscribe(None).await.unwrap();
        // The heartbeat is printed after the pid file is written.
        let mut tries = 0;
        while std::fs::read_to_string(&pidfile).map_or(true, |p| p.trim().is_empty()) {
            tries += 1;
            assert!(tries < 200, "the script never started");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        drop(stream);
        let mut tries = 0;
        // SAFETY: kill with signal 0 only checks that the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 && !is_zombie(pid) {
            tries += 1;
            assert!(tries < 400, "the watch's child {pid} outlived the stream");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn is_zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    }

    #[tokio::test]
    async fn long_lines_are_refused_and_short_ones_split() {
        let data: &[u8] = b"one\ntwo\n\nthree";
        let mut r = LineReader::new(data, 10);
        assert_eq!(r.next_line().await.ok().flatten().unwrap(), b"one");
        assert_eq!(r.next_line().await.ok().flatten().unwrap(), b"two");
        assert_eq!(r.next_line().await.ok().flatten().unwrap(), b"");
        assert_eq!(r.next_line().await.ok().flatten().unwrap(), b"three");
        assert!(matches!(r.next_line().await, Ok(None)));
        let long = [b'a'; 100];
        let mut r = LineReader::new(&long[..], 10);
        assert!(matches!(r.next_line().await, Err(ReadError::TooLarge)));
    }
}
