//! The just-in-time decision pipeline and outbox delivery.
//!
//! 1. re-fetch the action from its backend (freshest facts);
//! 2. refuse if it is no longer pending, expired, or its snapshot hash differs from the
//!    one the person saw — saying field by field what changed;
//! 3. sign the canonical payload (RFC 8785) with the keyring-held key (SSHSIG);
//! 4. commit the decision, its outbox entry, its audit-chain entry and its timeline
//!    events in one transaction;
//! 5. deliver with the idempotency key and record the result.
//!
//! A decision is committed before any network call that delivers it, so it is never
//! lost; the idempotency key makes every retry safe, so it is never applied twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use thiserror::Error;
use tokio::sync::broadcast;

use crate::audit;
use crate::backends::{Backend, BackendError, DecisionDelivery, DeliveryOutcome};
use crate::form::{self, AnswerError};
use crate::model::{
    ActionKey, ActionStatus, Answer, Decision, DeliveryState, PendingAction, TimelineEvent,
    TimelineKind, Verdict,
};
use crate::signer::{Signer, SignerError};
use crate::snapshot::{self, FieldChange, SnapshotHash};
use crate::store::{QueuedDecision, Store, StoreError};
use crate::sync::Change;

/// What a person decided, on which snapshot.
#[derive(Debug, Clone)]
pub struct DecisionRequest {
    pub action: ActionKey,
    pub verdict: Verdict,
    pub reason: String,
    /// The snapshot hash of what was on the person's screen.
    pub seen_snapshot_hash: SnapshotHash,
    pub approver: String,
    /// Chosen options and field values, for an action with a form.
    pub answer: Option<Answer>,
}

/// The outcome the caller shows: the decision as recorded and where delivery stands.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct DecisionReport {
    pub decision: Decision,
    /// Why it is still queued, when delivery did not complete now.
    pub queued_because: Option<String>,
    /// The backend could not be reached to re-check the action, so the decision was
    /// bound to the snapshot the person saw and queued; the backend re-checks the hash.
    pub offline: bool,
}

#[derive(Debug, Error)]
pub enum DecideError {
    #[error("a deny needs a reason")]
    ReasonRequired,
    #[error("unknown action `{0}`")]
    UnknownAction(String),
    #[error("backend `{0}` is not configured")]
    UnknownBackend(String),
    #[error(
        "{key} changed since you saw it ({}); nothing was decided — look again",
        describe(changes)
    )]
    Changed {
        key: ActionKey,
        current: Box<PendingAction>,
        changes: Vec<FieldChange>,
    },
    #[error("{key} is no longer pending: it is {}", status.as_str())]
    NotPending {
        key: ActionKey,
        status: ActionStatus,
    },
    #[error("{key} expired at {}", snapshot::format_millis(at))]
    Expired { key: ActionKey, at: DateTime<Utc> },
    #[error("{key} already has a {} decision from here ({state}); it stands", verdict.as_str())]
    AlreadyDecided {
        key: ActionKey,
        verdict: Verdict,
        state: String,
    },
    #[error("could not re-check {key} with its backend, so nothing was decided: {source}")]
    Recheck {
        key: ActionKey,
        source: BackendError,
    },
    #[error("nothing was decided: {0}")]
    Signer(#[from] SignerError),
    #[error("nothing was decided: {0}")]
    Answer(#[from] AnswerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DecideError {
    /// A stable code for the UI and scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ReasonRequired => "reason_required",
            Self::UnknownAction(_) => "unknown_action",
            Self::UnknownBackend(_) => "unknown_backend",
            Self::Changed { .. } => "changed",
            Self::NotPending { .. } => "not_pending",
            Self::Expired { .. } => "expired",
            Self::AlreadyDecided { .. } => "already_decided",
            Self::Recheck { .. } => "recheck_failed",
            Self::Signer(e) => e.code(),
            Self::Answer(_) => "invalid_answer",
            Self::Store(_) => "store",
        }
    }
}

/// The timeline line for a decision: who, what (options and fields included), why.
fn decided_text(d: &Decision) -> String {
    let mut text = match d.verdict {
        Verdict::Approve => format!("Approved by {}", d.approver),
        Verdict::Deny => format!("Denied by {}", d.approver),
        Verdict::Choose => {
            let options = d.answer.as_ref().map(|a| a.options.join(", "));
            format!("{} chose {}", d.approver, options.unwrap_or_default())
        }
    };
    if let Some(answer) = d.answer.as_ref().filter(|a| !a.params.is_empty()) {
        let fields: Vec<String> = answer
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        text.push_str(&format!(" with {}", fields.join(", ")));
    }
    if !d.reason.is_empty() {
        text.push_str(&format!(": {}", d.reason));
    }
    text.push_str(&format!(" (snapshot {})", d.snapshot_hash.short()));
    text
}

fn describe(changes: &[FieldChange]) -> String {
    let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
    if fields.is_empty() {
        "the snapshot you saw is not known here".into()
    } else {
        format!("changed: {}", fields.join(", "))
    }
}

/// Runs the pipeline for one decision. `now` is the decision time.
pub async fn decide(
    store: &Store,
    backend: &dyn Backend,
    changes: &broadcast::Sender<Change>,
    signer: &(dyn Fn() -> Result<std::sync::Arc<Signer>, SignerError> + Send + Sync),
    request: DecisionRequest,
    now: DateTime<Utc>,
) -> Result<DecisionReport, DecideError> {
    let key = request.action.clone();
    if request.verdict == Verdict::Deny && request.reason.trim().is_empty() {
        return Err(DecideError::ReasonRequired);
    }
    let cached = store
        .action(&key)?
        .ok_or_else(|| DecideError::UnknownAction(key.to_string()))?;
    if let Some(d) = store
        .decisions(&key)?
        .into_iter()
        .find(|d| matches!(d.delivery, DeliveryState::Queued | DeliveryState::Delivered))
    {
        return Err(DecideError::AlreadyDecided {
            key,
            verdict: d.verdict,
            state: d.delivery.as_str().into(),
        });
    }

    // 1. Just in time: the backend's current view, not our cache.
    let (current, offline) = match backend.fetch(&key.external_id).await {
        Ok(remote) => {
            let stored = store.apply_remote(&key.backend, std::slice::from_ref(&remote), now)?;
            for c in stored {
                let _ = changes.send(Change::Action {
                    key: c.key,
                    change: c.change,
                    new_events: u32::try_from(c.new_events).unwrap_or(u32::MAX),
                });
            }
            (remote.action, false)
        }
        // Unreachable: decide on what the person saw; the backend re-checks the hash
        // on delivery and answers 409 if it moved on meanwhile.
        Err(e) if e.is_transient() => (cached, true),
        Err(source) => return Err(DecideError::Recheck { key, source }),
    };

    // 2. Still pending, not expired, unchanged.
    if current.snapshot.status != ActionStatus::Pending {
        return Err(DecideError::NotPending {
            key,
            status: current.snapshot.status,
        });
    }
    if let Some(at) = current.snapshot.expires_at {
        if at <= now {
            return Err(DecideError::Expired { key, at });
        }
    }
    if current.snapshot_hash != request.seen_snapshot_hash {
        let changes = match store.snapshot(&key, &request.seen_snapshot_hash)? {
            Some(seen) => snapshot::diff(&seen, &current.snapshot),
            None => Vec::new(),
        };
        return Err(DecideError::Changed {
            key,
            current: Box::new(current),
            changes,
        });
    }

    // The answer is checked against the form the person saw (the same as the current
    // one, by the hash check above), with its defaults filled in: what is signed is
    // exactly what the backend receives.
    let answer = form::check_answer(
        current.snapshot.form.as_ref(),
        request.verdict,
        request.answer,
    )?;

    // 3. Sign the canonical payload: exactly these bytes are what the decision proves.
    // The key is loaded only now, so a stale or expired action is refused as such even
    // when the keyring is locked.
    let signer = signer()?;
    let mut decision = Decision {
        action: key.clone(),
        verdict: request.verdict,
        reason: request.reason.trim().to_owned(),
        decided_at: now,
        approver: request.approver.clone(),
        snapshot_hash: request.seen_snapshot_hash,
        idempotency_key: new_idempotency_key(),
        key_fingerprint: Some(signer.fingerprint()),
        public_key: Some(signer.public_key_openssh()),
        signature: None,
        delivery: DeliveryState::Queued,
        answer,
    };
    decision.signature = Some(signer.sign(audit::decision_payload(&decision).as_bytes())?);
    failpoint("after-sign");

    // 4. Commit (decision, outbox, audit entry, timeline) before any delivery attempt.
    let text = decided_text(&decision);
    let events = [
        TimelineEvent::local(
            now,
            TimelineKind::Decided,
            Some(decision.approver.clone()),
            text,
        ),
        TimelineEvent::local(
            now,
            TimelineKind::Signed,
            Some(decision.approver.clone()),
            format!("Signed with {}", signer.fingerprint()),
        ),
    ];
    // The claim keeps the sync task's outbox pass off this decision until its own first
    // attempt below has finished.
    let claim = store.record_decision(&decision, &events, now)?;
    failpoint("after-commit");
    let _ = changes.send(Change::Decision {
        key: key.clone(),
        idempotency_key: decision.idempotency_key.clone(),
        state: "queued".into(),
    });

    // 5. Deliver now; on failure the outbox keeps it for the sync task.
    let queued = QueuedDecision {
        id: claim.decision_id(),
        attempts: 0,
        decision,
    };
    let (state, queued_because) = deliver(store, backend, changes, &queued, now).await?;
    drop(claim);
    let mut decision = queued.decision;
    decision.delivery = state;
    Ok(DecisionReport {
        decision,
        queued_because,
        offline,
    })
}

/// Delivers every due outbox entry of one backend. Errors are logged, never raised:
/// the entries stay queued and are tried again.
pub async fn deliver_due(
    store: &Store,
    backend_name: &str,
    backend: &dyn Backend,
    changes: &broadcast::Sender<Change>,
    now: DateTime<Utc>,
) {
    let due = match store.due_deliveries(Some(backend_name), now) {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(backend = backend_name, "cannot read the outbox: {e}");
            return;
        }
    };
    for queued in due {
        // Skip what another task is sending right now, or what an attempt since the
        // listing above rescheduled (a Retry-After must not be answered early).
        let _claim = match store.claim_delivery(queued.id, now) {
            Ok(Some(claim)) => claim,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(backend = backend_name, "cannot claim a delivery: {e}");
                continue;
            }
        };
        if let Err(e) = deliver(store, backend, changes, &queued, now).await {
            tracing::warn!(backend = backend_name, "cannot record a delivery: {e}");
        }
    }
}

/// One delivery attempt. Returns the decision's state afterwards and, when it is still
/// queued, why.
async fn deliver(
    store: &Store,
    backend: &dyn Backend,
    changes: &broadcast::Sender<Change>,
    queued: &QueuedDecision,
    now: DateTime<Utc>,
) -> Result<(DeliveryState, Option<String>), StoreError> {
    let decision = &queued.decision;
    let key = &decision.action;
    let delivery = DecisionDelivery {
        decision: decision.clone(),
    };
    let sent = std::time::Instant::now();
    let answer = backend.decide(&delivery).await;
    failpoint("delivered-unrecorded");
    // `now` is when the attempt began; a slow backend may answer seconds later, and a
    // Retry-After counts from its answer, so what follows is dated from then.
    let now = now + chrono::Duration::from_std(sent.elapsed()).unwrap_or_default();
    let (state, text) = match answer {
        Ok(DeliveryOutcome::Delivered { action }) => {
            if let Some(remote) = action {
                store.apply_remote(&key.backend, std::slice::from_ref(&remote), now)?;
            }
            (
                DeliveryState::Delivered,
                format!("Delivered to {}", key.backend),
            )
        }
        Ok(DeliveryOutcome::Rejected { reason }) => (
            DeliveryState::Rejected {
                reason: reason.clone(),
            },
            format!("Rejected by {}: {reason}", key.backend),
        ),
        Ok(DeliveryOutcome::NotPending { status }) => {
            let reason = format!("already {status} when the decision arrived");
            (
                DeliveryState::Rejected {
                    reason: reason.clone(),
                },
                format!("Rejected by {}: {reason}", key.backend),
            )
        }
        Ok(DeliveryOutcome::Stale {
            current_snapshot_hash,
        }) => {
            let text = format!(
                "Refused by {}: the action changed since the decision (snapshot now {})",
                key.backend,
                SnapshotHash(current_snapshot_hash.clone()).short()
            );
            (
                DeliveryState::Stale {
                    current_snapshot_hash,
                },
                text,
            )
        }
        Ok(DeliveryOutcome::Expired) => (
            DeliveryState::Expired,
            format!("Refused by {}: the action expired first", key.backend),
        ),
        Err(e) => {
            // Every error is retried with the same idempotency key: even a garbled
            // answer may hide an applied decision, and the key makes a retry safe.
            let wait = retry_delay(queued.attempts, e.retry_after());
            let next = now + chrono::Duration::from_std(wait).unwrap_or_default();
            store.record_delivery_retry(queued.id, &e.to_string(), next)?;
            return Ok((DeliveryState::Queued, Some(e.to_string())));
        }
    };
    let kind = if state == DeliveryState::Delivered {
        TimelineKind::Delivered
    } else {
        TimelineKind::DeliveryFailed
    };
    let event = TimelineEvent::local(now, kind, None, text);
    if store.record_delivery(queued.id, &state, &event, now)? {
        let _ = changes.send(Change::Decision {
            key: key.clone(),
            idempotency_key: decision.idempotency_key.clone(),
            state: state.as_str().into(),
        });
    }
    Ok((state, None))
}

/// Crash-test hook: in a debug build with `COUNTERSIGN_FAILPOINT=<step>`, the process
/// announces `failpoint <step>` on stderr and stops there, so a test can kill -9 it at
/// exactly that step of the pipeline. Compiled out of release builds.
fn failpoint(step: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("COUNTERSIGN_FAILPOINT").as_deref() == Ok(step) {
        eprintln!("failpoint {step}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = step;
}

/// 1 s, 2 s, 4 s … up to 5 min, or longer if the backend asked for it.
fn retry_delay(attempts: u32, retry_after: Option<Duration>) -> Duration {
    let exp = Duration::from_secs(1u64 << attempts.min(9)).min(Duration::from_secs(300));
    exp.max(retry_after.unwrap_or_default())
}

/// 128 random bits, hex: unique per decision, so a retry is recognisably the same one.
fn new_idempotency_key() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("cs-{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_caps_and_honours_retry_after() {
        assert_eq!(retry_delay(0, None), Duration::from_secs(1));
        assert_eq!(retry_delay(3, None), Duration::from_secs(8));
        assert_eq!(retry_delay(30, None), Duration::from_secs(300));
        assert_eq!(
            retry_delay(0, Some(Duration::from_secs(42))),
            Duration::from_secs(42)
        );
    }

    #[test]
    fn idempotency_keys_are_unique() {
        assert_ne!(new_idempotency_key(), new_idempotency_key());
        assert_eq!(new_idempotency_key().len(), 35);
    }
}
