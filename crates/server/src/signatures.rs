//! Signed decisions: with `--allowed-signers FILE`, every decision must carry an SSHSIG
//! (namespace `countersign-decision`) over its canonical payload, made by a key that the
//! file allows for the decision's approver, and the payload must state exactly this
//! decision. Anything else is 403. Without the file, signatures are not checked.

use chrono::{DateTime, Utc};
use countersign_core::audit::AllowedSigners;
use countersign_core::protocol::DecisionBody;
use countersign_core::signer;
use countersign_core::snapshot::format_millis;
use serde_json::Value;

use crate::error::ApiError;

pub(crate) fn check(
    allowed: Option<&AllowedSigners>,
    action_id: &str,
    d: &DecisionBody,
) -> Result<(), ApiError> {
    let Some(allowed) = allowed else {
        return Ok(());
    };
    let (Some(signature), Some(public_key), Some(payload)) =
        (&d.signature, &d.public_key, &d.payload)
    else {
        return Err(ApiError::Forbidden(
            "decisions must be signed: payload, public_key and signature are required".into(),
        ));
    };
    signer::verify(public_key, payload.as_bytes(), signature)
        .map_err(|e| ApiError::Forbidden(format!("signature does not verify: {e}")))?;
    let fingerprint =
        signer::fingerprint_of(public_key).map_err(|e| ApiError::Forbidden(e.to_string()))?;
    if !allowed.allows(&d.approver, &fingerprint) {
        return Err(ApiError::Forbidden(format!(
            "key {fingerprint} is not in allowed_signers for {}",
            d.approver
        )));
    }
    states_this_decision(payload, action_id, d, &d.decided_at)
}

/// The signed bytes must say what the request says, field by field.
fn states_this_decision(
    payload: &str,
    action_id: &str,
    d: &DecisionBody,
    decided_at: &DateTime<Utc>,
) -> Result<(), ApiError> {
    let v: Value = serde_json::from_str(payload)
        .map_err(|e| ApiError::Forbidden(format!("signed payload is not JSON: {e}")))?;
    let expected = [
        ("type", Value::from("decision")),
        ("verdict", Value::from(d.verdict.as_str())),
        ("reason", Value::from(d.reason.as_str())),
        ("decided_at", Value::from(format_millis(decided_at))),
        ("approver", Value::from(d.approver.as_str())),
        ("snapshot_hash", Value::from(d.snapshot_hash.as_str())),
        ("idempotency_key", Value::from(d.idempotency_key.as_str())),
    ];
    for (field, want) in expected {
        if v.get(field) != Some(&want) {
            return Err(ApiError::Forbidden(format!(
                "signed payload does not match the decision at `{field}`"
            )));
        }
    }
    let answer = match &d.answer {
        Some(a) => serde_json::to_value(a)
            .map_err(|e| ApiError::Forbidden(format!("answer is not JSON: {e}")))?,
        None => Value::Null,
    };
    if v.get("answer").unwrap_or(&Value::Null) != &answer {
        return Err(ApiError::Forbidden(
            "signed payload does not match the decision at `answer`".into(),
        ));
    }
    if v.pointer("/action/id").and_then(Value::as_str) != Some(action_id) {
        return Err(ApiError::Forbidden(
            "signed payload is for another action (`action.id`)".into(),
        ));
    }
    Ok(())
}
