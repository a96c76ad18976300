//! The `exec` backend kind: any program that speaks the JSON-lines protocol of
//! docs/exec-plugins.md on stdin/stdout is a backend.
//!
//! One plugin process per request, in its own process group: Countersign writes one
//! request line to its stdin, closes it, and reads one answer line from its stdout. Every
//! call has a deadline (the whole group is killed when it passes), stdout a size cap and
//! stderr a bounded tail that is quoted in errors. A crash therefore costs one call and
//! degrades only this backend. Version 1 is poll-only: `list` every poll interval.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{
    Backend, BackendError, BuildError, Capabilities, DecisionDelivery, DeliveryOutcome, Limits,
    ListOutcome, SyncCursor,
};
use crate::config::BackendConfig;
use crate::model::{ActionKey, ActionSnapshot, PendingAction, RemoteAction};
use crate::protocol::{DecisionBody, ErrorBody, WireTimelineEvent};

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
    /// Idempotency keys already sent to the plugin by this process (see `decide`).
    sent: std::sync::Mutex<HashSet<String>>,
}

impl Exec {
    /// `command` is required; `[backend.options] timeout_secs` overrides the request
    /// deadline in `limits`; a token (`token_env`) reaches the plugin as
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
        for (key, value) in &config.options {
            match key.as_str() {
                "timeout_secs" => {
                    let secs = value
                        .as_integer()
                        .and_then(|s| u64::try_from(s).ok())
                        .filter(|s| *s > 0)
                        .ok_or_else(|| {
                            invalid("options.timeout_secs must be a positive integer".into())
                        })?;
                    timeout = Duration::from_secs(secs);
                }
                other => {
                    return Err(invalid(format!(
                        "unknown option `{other}` for kind `exec` (known: timeout_secs)"
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
        let body = serde_json::json!({ "error": error });
        let Ok(ErrorBody { error }) = serde_path_to_error::deserialize::<_, ErrorBody>(&body)
            .map_err(|e| self.malformed(e.path().to_string(), e.into_inner().to_string()))
        else {
            return self.malformed(
                "error",
                format!(
                    "an error answer needs `code` and `message`{}",
                    quoted_stderr(stderr_tail)
                ),
            );
        };
        match error.code.as_str() {
            "not_found" => BackendError::NotFound(format!("{}: {}", self.label, error.message)),
            "unsupported" => BackendError::Unsupported("answer this request (plugin: unsupported)"),
            code => BackendError::Unreachable {
                url: self.label.clone(),
                detail: format!("the plugin reported `{code}`: {}", error.message),
            },
        }
    }

    async fn run(&self, request: &Request<'_>) -> Result<Run, BackendError> {
        let mut line =
            serde_json::to_vec(request).map_err(|e| self.malformed("(request)", e.to_string()))?;
        line.push(b'\n');
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
        let mut child = command.spawn().map_err(|e| BackendError::Unreachable {
            url: self.label.clone(),
            detail: format!("cannot start `{}`: {e}", self.program),
        })?;
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

/// Kills a plugin's whole process group when dropped, unless disarmed.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.0.and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: killpg only sends a signal; the group is the one the child leads
            // (process_group(0)), which exists at least as long as the unreaped child.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
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

#[async_trait]
impl Backend for Exec {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list: true,
            fetch: true,
            decide: true,
            subscribe: false,
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
            body: DecisionBody {
                verdict: d.verdict,
                reason: d.reason.clone(),
                snapshot_hash: d.snapshot_hash.clone(),
                decided_at: d.decided_at,
                approver: d.approver.clone(),
                idempotency_key: d.idempotency_key.clone(),
                public_key: d.public_key.clone(),
                signature: d.signature.clone(),
                payload: d
                    .signature
                    .is_some()
                    .then(|| crate::audit::decision_payload(d)),
            },
        });
        let value = self.call(&request).await?;
        let answer: DecideAnswer = self.decode(&value)?;
        decide_outcome(self, answer)
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
}
