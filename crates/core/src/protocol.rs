//! Wire types of the Countersign open protocol v1 (docs/protocol.md). Shared by the
//! `countersign` backend client and the reference server so the two cannot drift.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{ActionKind, ActionSnapshot, Answer, Detail, InputForm, Verdict};
use crate::snapshot::{self, SnapshotHash};

pub const API_PREFIX: &str = "/v1";
pub const EVENT_ACTION_CREATED: &str = "action.created";
pub const EVENT_ACTION_UPDATED: &str = "action.updated";
pub const EVENT_TIMELINE_APPENDED: &str = "timeline.appended";

/// An action on the wire: its id, what a person sees, the server's snapshot hash
/// (which a client recomputes and checks) and the backend's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAction {
    pub id: String,
    #[serde(flatten)]
    pub snapshot: ActionSnapshot,
    pub snapshot_hash: SnapshotHash,
    #[serde(default)]
    pub timeline: Vec<WireTimelineEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireTimelineEvent {
    /// Unique within its action; lets a client store each event once.
    pub id: String,
    #[serde(with = "snapshot::millis")]
    pub at: DateTime<Utc>,
    /// One of the timeline kinds of docs/protocol.md; unknown kinds are kept as `other`.
    pub kind: String,
    #[serde(default)]
    pub actor: Option<String>,
    pub text: String,
}

/// `GET /v1/actions?status=pending`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionList {
    pub actions: Vec<WireAction>,
    /// The id of the newest event at the time of listing: subscribe from here with
    /// `Last-Event-ID` to miss nothing that happens after the list.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `POST /v1/actions/{id}/decision` request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    pub verdict: Verdict,
    #[serde(default)]
    pub reason: String,
    pub snapshot_hash: SnapshotHash,
    #[serde(with = "snapshot::millis")]
    pub decided_at: DateTime<Utc>,
    pub approver: String,
    pub idempotency_key: String,
    /// OpenSSH public key of the signer (signed decisions; optional in v1's first cut).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Armored SSHSIG over `payload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The exact signed bytes: RFC 8785 JSON of the decision (docs/protocol.md). A
    /// server checks the signature over these bytes and that they state this decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Chosen options and filled-in fields, for an action with a `form`; required with
    /// the `choose` verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
}

impl DecisionBody {
    /// The decision as the open protocol (and exec plugins) send it: with the signed
    /// payload when it is signed, so the receiver can check signature against bytes.
    pub fn from_decision(d: &crate::model::Decision) -> Self {
        Self {
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
            answer: d.answer.clone(),
        }
    }
}

/// 200 answer to a decision: the server's record of it and the action's new state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionAnswer {
    pub decision: AcceptedDecision,
    pub action: WireAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedDecision {
    pub idempotency_key: String,
    pub verdict: Verdict,
    pub approver: String,
    #[serde(with = "snapshot::millis")]
    pub accepted_at: DateTime<Utc>,
}

/// `POST /v1/actions`: a producer (script, agent, CI job) asks for approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAction {
    /// Optional id chosen by the producer; creating the same id twice returns the
    /// existing action (so producers can retry safely).
    #[serde(default)]
    pub id: Option<String>,
    pub kind: ActionKind,
    pub title: String,
    #[serde(default)]
    pub summary: String,
    pub requester: String,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub details: Vec<Detail>,
    #[serde(default)]
    pub approvals_required: Option<u32>,
    /// Seconds until the request expires; absent means it never does.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    #[serde(default)]
    pub web_url: Option<String>,
    /// A form the decision must answer (options to choose from, typed fields).
    #[serde(default)]
    pub form: Option<InputForm>,
}

/// `action.created` / `action.updated` carry a [`WireAction`]; `timeline.appended`
/// carries this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineAppended {
    pub action_id: String,
    pub event: WireTimelineEvent,
}

/// Every non-2xx answer has this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable: `unauthorized`, `not_found`, `malformed`, `stale_snapshot`,
    /// `expired`, `not_pending`, `forbidden`, `too_large`, `internal`.
    pub code: String,
    pub message: String,
    /// For `malformed`: the JSON path of the offending field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `stale_snapshot`: the hash the client sent…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_snapshot_hash: Option<String>,
    /// …and the action's hash now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_snapshot_hash: Option<String>,
    /// For `not_pending`: the action's status now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
                field: None,
                expected_snapshot_hash: None,
                current_snapshot_hash: None,
                status: None,
            },
        }
    }
}
