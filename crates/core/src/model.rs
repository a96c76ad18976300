//! The engine's vocabulary: what a pending action is, what happened to it, and what
//! a person decided. Every type here is plain data; behaviour lives in the modules that
//! use it.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::snapshot::{self, SnapshotHash};

/// Identifies one action across all backends: the configured backend's name plus the
/// id the backend gave it. Printed and parsed as `backend/external_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ActionKey {
    pub backend: String,
    pub external_id: String,
}

impl ActionKey {
    pub fn new(backend: impl Into<String>, external_id: impl Into<String>) -> Self {
        Self {
            backend: backend.into(),
            external_id: external_id.into(),
        }
    }
}

impl fmt::Display for ActionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.backend, self.external_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    DbSession,
    Command,
    Deployment,
    FlowRun,
    HitlStep,
    AgentToolCall,
    #[serde(other)]
    Other,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DbSession => "db_session",
            Self::Command => "command",
            Self::Deployment => "deployment",
            Self::FlowRun => "flow_run",
            Self::HitlStep => "hitl_step",
            Self::AgentToolCall => "agent_tool_call",
            Self::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "db_session" => Self::DbSession,
            "command" => Self::Command,
            "deployment" => Self::Deployment,
            "flow_run" => Self::FlowRun,
            "hitl_step" => Self::HitlStep,
            "agent_tool_call" => Self::AgentToolCall,
            _ => Self::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
    Executed,
    Failed,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Executed => "executed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "denied" => Self::Denied,
            "expired" => Self::Expired,
            "cancelled" => Self::Cancelled,
            "executed" => Self::Executed,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    pub fn is_open(self) -> bool {
        self == Self::Pending
    }
}

/// One labelled line of an action's details. Kept as an ordered list (not a map)
/// because the backend's order is part of how a request reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Detail {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum ReviewVerdict {
    Approved,
    Denied,
}

/// A review already given by someone (possibly not us), as the backend reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Review {
    pub reviewer: String,
    pub verdict: ReviewVerdict,
    #[serde(with = "snapshot::millis")]
    #[cfg_attr(feature = "specta", specta(type = String))]
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Everything a person sees of a request when deciding on it. Its canonical JSON
/// (RFC 8785) is what `snapshot_hash` covers, so a decision binds exactly this.
///
/// The timeline is deliberately not part of it: it only grows, and a new "notified"
/// line must not invalidate a decision. Anything that changes what is being approved
/// (the request itself, its expiry, the reviews so far, its status) is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ActionSnapshot {
    pub kind: ActionKind,
    pub title: String,
    #[serde(default)]
    pub summary: String,
    pub requester: String,
    #[serde(with = "snapshot::millis")]
    #[cfg_attr(feature = "specta", specta(type = String))]
    pub requested_at: DateTime<Utc>,
    #[serde(default, with = "snapshot::millis_opt")]
    #[cfg_attr(feature = "specta", specta(type = Option<String>))]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub details: Vec<Detail>,
    #[serde(default = "one")]
    pub approvals_required: u32,
    #[serde(default)]
    pub reviews: Vec<Review>,
    pub status: ActionStatus,
    #[serde(default)]
    pub web_url: Option<String>,
    /// What the backend asks to be filled in with the decision (options to choose
    /// from, typed fields). Hashed with the rest: a changed form is a changed request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<InputForm>,
}

/// A form a backend asks to be answered with the decision: Airflow's HITL options and
/// params, Prefect's run-input schema. The engine checks every answer against it
/// before a backend sees it (`form::check_answer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct InputForm {
    /// Options offered to choose from; empty when the form is only fields.
    #[serde(default)]
    pub options: Vec<String>,
    /// Whether several options may be chosen at once.
    #[serde(default)]
    pub multiple: bool,
    #[serde(default)]
    pub default_options: Vec<String>,
    #[serde(default)]
    pub fields: Vec<FormField>,
    /// The option an approve stands for (Airflow's ApprovalOperator: "Approve"). A form
    /// with options but without one cannot be approved, only chosen on — refused before
    /// anything is signed, not by the backend after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approve_option: Option<String>,
    /// The option a deny stands for ("Reject").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_option: Option<String>,
}

/// One typed input of a form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct FormField {
    pub name: String,
    /// The schema's title, else the name.
    pub label: String,
    #[serde(default)]
    pub description: String,
    pub field_type: FieldType,
    /// The allowed values of a `choice` field.
    #[serde(default)]
    pub choices: Vec<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "specta", specta(type = Option<specta_typescript::Unknown>))]
    pub default: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Text,
    Integer,
    Number,
    Boolean,
    /// One of `choices`.
    Choice,
    /// Anything else the schema allows (arrays, objects): edited as JSON.
    Json,
}

/// What a person filled in: chosen options and field values. Signed with the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Answer {
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default)]
    #[cfg_attr(
        feature = "specta",
        specta(type = BTreeMap<String, specta_typescript::Unknown>)
    )]
    pub params: BTreeMap<String, serde_json::Value>,
}

impl Answer {
    pub fn is_empty(&self) -> bool {
        self.options.is_empty() && self.params.is_empty()
    }
}

fn one() -> u32 {
    1
}

impl ActionSnapshot {
    pub fn hash(&self) -> SnapshotHash {
        snapshot::hash(self)
    }
}

/// An action as the engine knows it: its key, what a person sees, and the hash of that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct PendingAction {
    pub key: ActionKey,
    #[serde(flatten)]
    pub snapshot: ActionSnapshot,
    pub snapshot_hash: SnapshotHash,
}

impl PendingAction {
    pub fn new(key: ActionKey, snapshot: ActionSnapshot) -> Self {
        let snapshot_hash = snapshot.hash();
        Self {
            key,
            snapshot,
            snapshot_hash,
        }
    }

    /// Time left until expiry, or `None` when the action never expires.
    pub fn time_left(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        self.snapshot.expires_at.map(|at| at - now)
    }

    pub fn approvals_so_far(&self) -> usize {
        self.snapshot
            .reviews
            .iter()
            .filter(|r| r.verdict == ReviewVerdict::Approved)
            .count()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum EventSource {
    /// Reported by the backend.
    Backend,
    /// Happened in this Countersign (viewed, decided, delivered, …).
    Local,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backend => "backend",
            Self::Local => "local",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum TimelineKind {
    Requested,
    PolicyEvaluated,
    ReviewerAssigned,
    Notified,
    Viewed,
    Reviewed,
    Updated,
    Decided,
    Signed,
    Delivered,
    DeliveryFailed,
    NotificationAnswered,
    NotificationWithdrawn,
    Approved,
    Denied,
    Executed,
    Expired,
    Cancelled,
    #[serde(other)]
    Other,
}

impl TimelineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::PolicyEvaluated => "policy_evaluated",
            Self::ReviewerAssigned => "reviewer_assigned",
            Self::Notified => "notified",
            Self::Viewed => "viewed",
            Self::Reviewed => "reviewed",
            Self::Updated => "updated",
            Self::Decided => "decided",
            Self::Signed => "signed",
            Self::Delivered => "delivered",
            Self::DeliveryFailed => "delivery_failed",
            Self::NotificationAnswered => "notification_answered",
            Self::NotificationWithdrawn => "notification_withdrawn",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Executed => "executed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Self {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).unwrap_or(Self::Other)
    }
}

/// One step in an action's processing, from the backend or from this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct TimelineEvent {
    pub at: DateTime<Utc>,
    pub source: EventSource,
    pub kind: TimelineKind,
    #[serde(default)]
    pub actor: Option<String>,
    pub text: String,
    /// The backend's id for this event, used to store each backend event once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

impl TimelineEvent {
    pub fn local(
        at: DateTime<Utc>,
        kind: TimelineKind,
        actor: Option<String>,
        text: impl Into<String>,
    ) -> Self {
        Self {
            at,
            source: EventSource::Local,
            kind,
            actor,
            text: text.into(),
            external_id: None,
        }
    }
}

/// An action as a backend returns it: what a person sees plus the backend's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAction {
    pub action: PendingAction,
    pub timeline: Vec<TimelineEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Deny,
    /// Picks among the options a backend's form offers (Airflow HITL); the choice is in
    /// the decision's `answer`.
    Choose,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
            Self::Choose => "choose",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "approve" => Some(Self::Approve),
            "deny" => Some(Self::Deny),
            "choose" => Some(Self::Choose),
            _ => None,
        }
    }
}

/// Where a decision stands on its way to the backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryState {
    /// Committed locally, not yet acknowledged by the backend (offline, or retrying).
    Queued,
    Delivered,
    /// The backend refused it for a reason a retry cannot fix.
    Rejected {
        reason: String,
    },
    /// The backend says the action changed since the snapshot the person decided on.
    Stale {
        current_snapshot_hash: String,
    },
    Expired,
}

impl DeliveryState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delivered => "delivered",
            Self::Rejected { .. } => "rejected",
            Self::Stale { .. } => "stale",
            Self::Expired => "expired",
        }
    }

    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Queued)
    }
}

/// A person's verdict on one snapshot of one action. Signing (key fingerprint and
/// signature) is filled in by the signing stage of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Decision {
    pub action: ActionKey,
    pub verdict: Verdict,
    pub reason: String,
    pub decided_at: DateTime<Utc>,
    pub approver: String,
    pub snapshot_hash: SnapshotHash,
    pub idempotency_key: String,
    #[serde(default)]
    pub key_fingerprint: Option<String>,
    /// OpenSSH public key of the signer (kept so a retry after a key rotation still
    /// sends the key that made the signature).
    #[serde(default)]
    pub public_key: Option<String>,
    /// Armored SSHSIG over the canonical decision payload (`audit::decision_payload`).
    #[serde(default)]
    pub signature: Option<String>,
    pub delivery: DeliveryState,
    /// Chosen options and filled-in fields, when the action has a form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
}
