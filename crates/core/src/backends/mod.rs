//! Approval backends. One module per kind behind one trait; adding a kind means one new
//! module plus a line in [`build`].

pub mod airflow;
pub mod countersign;
pub mod exec;
pub mod github;
pub mod hoop;
mod http;
pub mod prefect;

/// Entry points for the fuzz targets (`fuzz/`) and `tests/fuzz_parsers.rs`: raw bytes go
/// through a backend's response decoders and its mapping to actions, as a response body
/// would. Each must return (errors are fine) and never panic. Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    /// Splits at the first newline: several documents in one fuzz input.
    pub(crate) fn split(data: &[u8]) -> (&[u8], &[u8]) {
        match data.iter().position(|&b| b == b'\n') {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, &[]),
        }
    }

    pub fn countersign(data: &[u8]) {
        super::countersign::fuzz_parse(data)
    }
    pub fn hoop(data: &[u8]) {
        super::hoop::fuzz_parse(data)
    }
    pub fn github(data: &[u8]) {
        super::github::fuzz_parse(data)
    }
    pub fn prefect(data: &[u8]) {
        super::prefect::fuzz_parse(data)
    }
    pub fn airflow(data: &[u8]) {
        super::airflow::fuzz_parse(data)
    }
    pub fn exec(data: &[u8]) {
        super::exec::fuzz_parse(data)
    }
    /// The audit CSV verifier: read, then verify as a whole chain and as an excerpt.
    pub fn audit_csv(data: &[u8]) {
        if let Ok(entries) = crate::export::read_csv(data) {
            let _ = crate::audit::verify_chain(&entries, None);
            let _ = crate::audit::verify_excerpt(&entries, None);
        }
    }
}

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::config::BackendConfig;
use crate::model::{Decision, RemoteAction, TimelineEvent};

/// What a backend can do. The sync task subscribes when it can and polls otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub list: bool,
    pub fetch: bool,
    pub decide: bool,
    pub subscribe: bool,
}

/// Sync state the engine keeps per backend and hands back on the next call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncCursor {
    pub etag: Option<String>,
    pub cursor: Option<String>,
    pub last_event_id: Option<String>,
}

#[derive(Debug)]
pub enum ListOutcome {
    /// Nothing changed since the ETag we sent.
    NotModified,
    Listed {
        actions: Vec<RemoteAction>,
        etag: Option<String>,
        /// Where an event subscription should resume to miss nothing after this list.
        cursor: Option<String>,
    },
}

/// How a backend answered a delivered decision.
#[derive(Debug)]
pub enum DeliveryOutcome {
    /// Accepted; the action's state afterwards when the backend returns it.
    Delivered {
        action: Option<Box<RemoteAction>>,
    },
    /// Refused for a reason a retry cannot fix (self-approval, not eligible, …).
    Rejected {
        reason: String,
    },
    /// The action changed since the snapshot the decision binds.
    Stale {
        current_snapshot_hash: String,
    },
    Expired,
    /// Someone else decided first.
    NotPending {
        status: String,
    },
}

/// A change pushed by a subscribing backend.
// Events pass one at a time through a bounded channel, so the size of the largest
// variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum BackendEvent {
    Upsert {
        event_id: Option<String>,
        action: RemoteAction,
    },
    TimelineAppended {
        event_id: Option<String>,
        external_id: String,
        event: TimelineEvent,
    },
    /// An event we do not understand; its id still advances the resume point.
    Ignored { event_id: Option<String> },
}

impl BackendEvent {
    pub fn event_id(&self) -> Option<&str> {
        match self {
            Self::Upsert { event_id, .. }
            | Self::TimelineAppended { event_id, .. }
            | Self::Ignored { event_id } => event_id.as_deref(),
        }
    }
}

pub type EventStream = mpsc::Receiver<Result<BackendEvent, BackendError>>;

/// Everything that can go wrong talking to a backend. Each says whether a retry
/// can help, so the sync loop and the outbox know to back off or to give up.
#[derive(Debug, Error)]
pub enum BackendError {
    #[error("cannot reach {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("no answer from {url} within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("{url} refused the token (HTTP {status}): check the backend's token")]
    Unauthorized { url: String, status: u16 },
    #[error("{url} answered HTTP {status}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url} asks to slow down; retry in {} s", retry_after.as_secs())]
    RateLimited { url: String, retry_after: Duration },
    #[error("{url} sent a response over the {limit}-byte limit")]
    TooLarge { url: String, limit: usize },
    #[error("{url} sent malformed data at `{field}`: {detail}")]
    Malformed {
        url: String,
        field: String,
        detail: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("backend cannot {0}")]
    Unsupported(&'static str),
}

impl BackendError {
    /// Whether the same request may succeed later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } | Self::RateLimited { .. } => true,
            Self::Http { status, .. } => *status >= 500 || *status == 408,
            _ => false,
        }
    }

    /// A wait the backend asked for, which overrides our own backoff when longer.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// A stable code for the UI and scripts to act on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::Timeout { .. } => "timeout",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Http { .. } => "http",
            Self::RateLimited { .. } => "rate_limited",
            Self::TooLarge { .. } => "too_large",
            Self::Malformed { .. } => "malformed",
            Self::NotFound(_) => "not_found",
            Self::Unsupported(_) => "unsupported",
        }
    }
}

/// The decision as sent to a backend: signed, with its signer's public key in it.
#[derive(Debug, Clone)]
pub struct DecisionDelivery {
    pub decision: Decision,
}

/// One approval backend. Implementations hold their own HTTP client and credentials;
/// the engine holds the sync state and passes it in.
#[async_trait]
pub trait Backend: Send + Sync {
    fn capabilities(&self) -> Capabilities;

    /// Pending actions with their timelines; `NotModified` when the ETag still holds.
    async fn list_pending(&self, cursor: &SyncCursor) -> Result<ListOutcome, BackendError>;

    /// One action as it is right now, with its timeline.
    async fn fetch(&self, external_id: &str) -> Result<RemoteAction, BackendError>;

    /// Delivers a decision; must be idempotent on `decision.idempotency_key`.
    async fn decide(&self, delivery: &DecisionDelivery) -> Result<DeliveryOutcome, BackendError>;

    /// Part of the last `list_pending` failed while the rest listed (one repository of
    /// several gone, say): the error to report as this backend's status. The engine asks
    /// right after each list; the default is a backend that lists all or nothing.
    fn take_partial_failure(&self) -> Option<BackendError> {
        None
    }

    /// Change stream from `last_event_id` on; only when `capabilities().subscribe`.
    async fn subscribe(&self, _last_event_id: Option<String>) -> Result<EventStream, BackendError> {
        Err(BackendError::Unsupported("subscribe"))
    }
}

/// Limits every backend honours, so no backend can hang or flood the engine.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Longest silence tolerated on an event stream before it is treated as dead.
    pub stream_idle_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            stream_idle_timeout: Duration::from_secs(60),
            max_body_bytes: 16 * 1024 * 1024,
            max_event_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(
        "backend `{name}`: unknown kind `{kind}` (known: countersign, hoop, exec, github, prefect, airflow)"
    )]
    UnknownKind { name: String, kind: String },
    #[error("backend `{name}`: {detail}")]
    Invalid { name: String, detail: String },
}

/// Runs CPU-bound or blocking work (decoding a large list, a store transaction) on
/// tokio's blocking pool and waits for it, so the async thread goes on serving other
/// backends meanwhile. A panic there is carried on here, as if the work had run inline.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(out) => out,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Cancelled: only while the runtime shuts down, which drops the awaiting
            // task as well, so nobody is left to see this.
            Err(e) => panic!("blocking task did not finish: {e}"),
        },
    }
}

/// Builds the backend a config entry describes. The one place a new kind registers.
pub fn build(
    config: &BackendConfig,
    token: Option<String>,
    limits: Limits,
) -> Result<std::sync::Arc<dyn Backend>, BuildError> {
    match config.kind.as_str() {
        countersign::KIND => Ok(std::sync::Arc::new(countersign::OpenProtocol::new(
            &config.name,
            &config.url,
            token,
            limits,
        )?)),
        exec::KIND => Ok(std::sync::Arc::new(exec::Exec::new(config, token, limits)?)),
        hoop::KIND => Ok(std::sync::Arc::new(hoop::Hoop::new(config, token, limits)?)),
        github::KIND => Ok(std::sync::Arc::new(github::GitHub::new(
            config, token, limits,
        )?)),
        prefect::KIND => Ok(std::sync::Arc::new(prefect::Prefect::new(
            config, token, limits,
        )?)),
        airflow::KIND => Ok(std::sync::Arc::new(airflow::Airflow::new(
            config, token, limits,
        )?)),
        other => Err(BuildError::UnknownKind {
            name: config.name.clone(),
            kind: other.to_owned(),
        }),
    }
}
