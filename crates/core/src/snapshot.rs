//! Snapshot hashing and comparison.
//!
//! `snapshot_hash` = lowercase hex SHA-256 of the RFC 8785 (JCS) canonical JSON of an
//! [`ActionSnapshot`](crate::model::ActionSnapshot). Timestamps inside a snapshot are
//! written as RFC 3339 UTC with exactly three fractional digits (`…T01:02:03.004Z`) so
//! that any implementation of the open protocol computes the same bytes.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::ActionSnapshot;

/// Hex SHA-256 of a snapshot's canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(transparent)]
pub struct SnapshotHash(pub String);

impl SnapshotHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// First 12 hex digits: enough for a person to compare two hashes by eye.
    pub fn short(&self) -> &str {
        self.0.get(..12).unwrap_or(&self.0)
    }
}

impl fmt::Display for SnapshotHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 8785 canonical JSON of any serialisable value.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> String {
    // Serialising our own model types cannot fail: they have string keys only and no
    // non-finite floats. Fall back to an empty object rather than panic regardless.
    serde_jcs::to_string(value).unwrap_or_else(|_| String::from("{}"))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn hash(snapshot: &ActionSnapshot) -> SnapshotHash {
    SnapshotHash(sha256_hex(canonical_json(snapshot).as_bytes()))
}

/// One field that differs between the snapshot a person saw and the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct FieldChange {
    pub field: String,
    /// What the person saw, as canonical JSON text (`null` when absent).
    pub before: String,
    /// What it is now.
    pub after: String,
}

/// Field-by-field difference of two snapshots, in the snapshot's field order.
pub fn diff(before: &ActionSnapshot, after: &ActionSnapshot) -> Vec<FieldChange> {
    let (serde_json::Value::Object(b), serde_json::Value::Object(a)) = (
        serde_json::to_value(before).unwrap_or_default(),
        serde_json::to_value(after).unwrap_or_default(),
    ) else {
        return Vec::new();
    };
    let mut fields: Vec<&String> = b.keys().collect();
    for k in a.keys() {
        if !b.contains_key(k) {
            fields.push(k);
        }
    }
    let null = serde_json::Value::Null;
    fields
        .into_iter()
        .filter_map(|field| {
            let bv = b.get(field).unwrap_or(&null);
            let av = a.get(field).unwrap_or(&null);
            (bv != av).then(|| FieldChange {
                field: field.clone(),
                before: canonical_json(bv),
                after: canonical_json(av),
            })
        })
        .collect()
}

pub fn format_millis(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Serde adapter: timestamps as RFC 3339 UTC with millisecond precision.
pub mod millis {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_millis(at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let at = DateTime::<chrono::FixedOffset>::deserialize(d)?;
        Ok(truncate_to_millis(at.with_timezone(&Utc)))
    }

    pub(crate) fn truncate_to_millis(at: DateTime<Utc>) -> DateTime<Utc> {
        let nanos = at.timestamp_subsec_nanos();
        at - chrono::Duration::nanoseconds(i64::from(nanos % 1_000_000))
    }
}

/// Serde adapter for optional timestamps, same format as [`millis`].
pub mod millis_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_str(&super::format_millis(at)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let at = Option::<DateTime<chrono::FixedOffset>>::deserialize(d)?;
        Ok(at.map(|at| super::millis::truncate_to_millis(at.with_timezone(&Utc))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use chrono::TimeZone;

    fn sample() -> ActionSnapshot {
        ActionSnapshot {
            kind: ActionKind::DbSession,
            title: "psql to prod-billing".into(),
            summary: "read-only session".into(),
            requester: "dana@example.com".into(),
            requested_at: Utc.with_ymd_and_hms(2026, 11, 25, 1, 2, 3).unwrap(),
            expires_at: None,
            resource: "prod-billing".into(),
            details: vec![Detail {
                key: "query".into(),
                value: "select 1".into(),
            }],
            approvals_required: 2,
            reviews: vec![],
            status: ActionStatus::Pending,
            web_url: None,
            form: None,
        }
    }

    #[test]
    fn canonical_json_sorts_keys_and_fixes_time_format() {
        let json = canonical_json(&sample());
        assert!(json.starts_with(r#"{"approvals_required":2,"details":[{"key":"query""#));
        assert!(json.contains(r#""requested_at":"2026-11-25T01:02:03.000Z""#));
        assert!(json.contains(r#""expires_at":null"#));
    }

    #[test]
    fn hash_is_stable_and_sensitive_to_every_visible_field() {
        let a = sample();
        assert_eq!(a.hash(), sample().hash());
        assert_eq!(a.hash().0.len(), 64);
        let mut b = sample();
        b.details[0].value = "drop table invoices".into();
        assert_ne!(a.hash(), b.hash());
        let mut c = sample();
        c.reviews.push(Review {
            reviewer: "sam".into(),
            verdict: ReviewVerdict::Approved,
            at: a.requested_at,
            comment: None,
        });
        assert_ne!(a.hash(), c.hash());
    }

    #[test]
    fn hash_survives_a_round_trip_through_json_with_another_offset() {
        let a = sample();
        let mut v = serde_json::to_value(&a).unwrap();
        v["requested_at"] = "2026-11-25T02:02:03.000400+01:00".into();
        let back: ActionSnapshot = serde_json::from_value(v).unwrap();
        assert_eq!(back.hash(), a.hash());
    }

    #[test]
    fn diff_names_changed_fields_with_both_values() {
        let a = sample();
        let mut b = sample();
        b.title = "psql to prod-billing (write)".into();
        b.approvals_required = 3;
        let changes = diff(&a, &b);
        let fields: Vec<_> = changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["approvals_required", "title"]);
        assert_eq!(changes[1].after, r#""psql to prod-billing (write)""#);
        assert!(diff(&a, &a).is_empty());
    }
}
