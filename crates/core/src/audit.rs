//! The tamper-evident audit chain.
//!
//! Every decision, delivery result and key rotation is an entry. An entry's hash is
//! `hex(SHA-256(prev_hash ‖ "\n" ‖ payload))`, where `payload` is the entry's canonical
//! JSON (RFC 8785) — for a decision, exactly the bytes that were signed. The first entry's
//! `prev_hash` is 64 zeros. Editing, removing, inserting or reordering any entry breaks
//! the hashes from that point on, and [`verify_chain`] names the first row that breaks.

use chrono::{DateTime, Utc};
use serde::Serialize;
use thiserror::Error;

use crate::model::{ActionKey, Answer, Decision, DeliveryState, Verdict};
use crate::signer;
use crate::snapshot::{canonical_json, format_millis, sha256_hex};

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Decision,
    Delivery,
    KeyRotation,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decision => "decision",
            Self::Delivery => "delivery",
            Self::KeyRotation => "key_rotation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "decision" => Some(Self::Decision),
            "delivery" => Some(Self::Delivery),
            "key_rotation" => Some(Self::KeyRotation),
            _ => None,
        }
    }
}

/// One row of the chain, as stored and as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct AuditEntry {
    /// 1, 2, 3, … with no gaps.
    pub seq: u32,
    pub at: DateTime<Utc>,
    pub kind: EntryKind,
    /// `backend/id`, when the entry is about an action.
    pub action: Option<String>,
    /// Canonical JSON; for a decision, the signed bytes.
    pub payload: String,
    /// Armored SSHSIG over `payload` (decisions, and rotations signed by the old key).
    pub signature: Option<String>,
    /// OpenSSH public key that made `signature`.
    pub public_key: Option<String>,
    pub key_fingerprint: Option<String>,
    pub prev_hash: String,
    pub entry_hash: String,
}

pub fn entry_hash(prev_hash: &str, payload: &str) -> String {
    let mut bytes = Vec::with_capacity(prev_hash.len() + 1 + payload.len());
    bytes.extend_from_slice(prev_hash.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(payload.as_bytes());
    sha256_hex(&bytes)
}

#[derive(Serialize)]
struct ActionRef<'a> {
    backend: &'a str,
    id: &'a str,
}

impl<'a> From<&'a ActionKey> for ActionRef<'a> {
    fn from(k: &'a ActionKey) -> Self {
        Self {
            backend: &k.backend,
            id: &k.external_id,
        }
    }
}

/// The bytes a decision's signature covers (RFC 8785 JSON).
pub fn decision_payload(d: &Decision) -> String {
    #[derive(Serialize)]
    struct Payload<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        action: ActionRef<'a>,
        verdict: Verdict,
        reason: &'a str,
        decided_at: String,
        approver: &'a str,
        snapshot_hash: &'a str,
        idempotency_key: &'a str,
        /// Absent for an action without a form, so those payloads read as before.
        #[serde(skip_serializing_if = "Option::is_none")]
        answer: Option<&'a Answer>,
    }
    canonical_json(&Payload {
        kind: "decision",
        action: (&d.action).into(),
        verdict: d.verdict,
        reason: &d.reason,
        decided_at: format_millis(&d.decided_at),
        approver: &d.approver,
        snapshot_hash: d.snapshot_hash.as_str(),
        idempotency_key: &d.idempotency_key,
        answer: d.answer.as_ref(),
    })
}

/// The short reference a backend keeps next to the decision in its own record (a
/// GitHub comment, a hoop reason, a Prefect or Airflow input): the signing key's
/// fingerprint and the start of the SHA-256 of the exact payload that key signed, so
/// the backend's record points to the proof in the exported audit log.
pub fn proof_reference(d: &Decision) -> String {
    let hex = sha256_hex(decision_payload(d).as_bytes());
    let key = d.key_fingerprint.as_deref().unwrap_or("unsigned");
    format!("[countersign {key} payload-sha256:{}]", &hex[..12])
}

pub fn delivery_payload(d: &Decision, state: &DeliveryState, at: DateTime<Utc>) -> String {
    #[derive(Serialize)]
    struct Payload<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        action: ActionRef<'a>,
        idempotency_key: &'a str,
        result: &'a DeliveryState,
        at: String,
    }
    canonical_json(&Payload {
        kind: "delivery",
        action: (&d.action).into(),
        idempotency_key: &d.idempotency_key,
        result: state,
        at: format_millis(&at),
    })
}

pub fn rotation_payload(
    old_fingerprint: Option<&str>,
    new_public_key: &str,
    new_fingerprint: &str,
    at: DateTime<Utc>,
) -> String {
    #[derive(Serialize)]
    struct Payload<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        old_fingerprint: Option<&'a str>,
        new_public_key: &'a str,
        new_fingerprint: &'a str,
        at: String,
    }
    canonical_json(&Payload {
        kind: "key_rotation",
        old_fingerprint,
        new_public_key,
        new_fingerprint,
        at: format_millis(&at),
    })
}

/// The first thing wrong with a chain, naming the row (1-based position as read).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChainBreak {
    #[error("row {row}: its content was edited (entry hash does not match)")]
    Edited { row: usize, seq: u32 },
    #[error("row {row}: the row before it was removed, or this row was inserted or moved (expected seq {expected}, found {found})")]
    Sequence {
        row: usize,
        expected: u32,
        found: u32,
    },
    #[error("row {row}: it does not follow the row before it (previous-hash mismatch: rows were removed, inserted or reordered)")]
    Link { row: usize, seq: u32 },
    #[error("row {row}: bad signature: {detail}")]
    Signature {
        row: usize,
        seq: u32,
        detail: String,
    },
    #[error("row {row}: signed by a key not in allowed_signers for `{principal}` ({fingerprint})")]
    UnknownSigner {
        row: usize,
        seq: u32,
        principal: String,
        fingerprint: String,
    },
    #[error("row {row}: a decision without a signature")]
    Unsigned { row: usize, seq: u32 },
}

impl ChainBreak {
    /// A stable name for what went wrong, for a UI to act on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Edited { .. } => "edited",
            Self::Sequence { .. } => "sequence",
            Self::Link { .. } => "link",
            Self::Signature { .. } => "signature",
            Self::UnknownSigner { .. } => "unknown_signer",
            Self::Unsigned { .. } => "unsigned",
        }
    }

    /// The `seq` the broken row claims (for a sequence break, the one found).
    pub fn seq(&self) -> u32 {
        match self {
            Self::Edited { seq, .. }
            | Self::Link { seq, .. }
            | Self::Signature { seq, .. }
            | Self::UnknownSigner { seq, .. }
            | Self::Unsigned { seq, .. } => *seq,
            Self::Sequence { found, .. } => *found,
        }
    }

    pub fn row(&self) -> usize {
        match self {
            Self::Edited { row, .. }
            | Self::Sequence { row, .. }
            | Self::Link { row, .. }
            | Self::Signature { row, .. }
            | Self::UnknownSigner { row, .. }
            | Self::Unsigned { row, .. } => *row,
        }
    }
}

/// What a successful verification checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ChainReport {
    pub entries: u32,
    pub signatures: u32,
    pub head_hash: String,
}

/// Keys allowed to sign, from an OpenSSH `allowed_signers` file.
#[derive(Debug, Clone, Default)]
pub struct AllowedSigners {
    /// (principal pattern, fingerprint)
    entries: Vec<(String, String)>,
}

impl AllowedSigners {
    /// Parses `principals [options] keytype base64 [comment]` lines; `#` comments.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut rest = line;
            let principals = take_token(&mut rest);
            // Options (namespaces="…", valid-after=…) come before the key type.
            let key_start = rest
                .find("ssh-")
                .or_else(|| rest.find("ecdsa-"))
                .ok_or_else(|| format!("line {}: no public key", n + 1))?;
            let fingerprint = signer::fingerprint_of(&rest[key_start..])
                .map_err(|e| format!("line {}: {e}", n + 1))?;
            for p in principals.split(',') {
                entries.push((p.trim_matches('"').to_owned(), fingerprint.clone()));
            }
        }
        Ok(Self { entries })
    }

    pub fn allows(&self, principal: &str, fingerprint: &str) -> bool {
        self.entries
            .iter()
            .any(|(p, f)| f == fingerprint && (p == "*" || p == principal))
    }
}

fn take_token<'a>(s: &mut &'a str) -> &'a str {
    let t = s.trim_start();
    let end = t.find(char::is_whitespace).unwrap_or(t.len());
    let (tok, rest) = t.split_at(end);
    *s = rest.trim_start();
    tok
}

/// Re-walks a chain: sequence, links, entry hashes and every signature. With
/// `allowed`, each signing key must be allowed for the decision's approver.
pub fn verify_chain<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
    allowed: Option<&AllowedSigners>,
) -> Result<ChainReport, ChainBreak> {
    let mut v = ChainVerifier::chain(allowed);
    entries.into_iter().try_for_each(|e| v.check(e))?;
    Ok(v.finish())
}

/// Like [`verify_chain`] for an excerpt (a filtered export): each row's hash and
/// signature are checked, and the link wherever two rows are consecutive in the chain.
/// A row removed between two non-consecutive rows cannot be told from the filter; only
/// a complete export proves completeness.
pub fn verify_excerpt<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
    allowed: Option<&AllowedSigners>,
) -> Result<ChainReport, ChainBreak> {
    let mut v = ChainVerifier::excerpt(allowed);
    entries.into_iter().try_for_each(|e| v.check(e))?;
    Ok(v.finish())
}

/// Verifies a chain one row at a time, keeping only what the next row needs (the
/// previous `seq` and hash, and the fingerprints of the keys seen so far), so a chain of
/// any length is checked in constant memory as it is read.
///
/// Rows are checked in the order given; the first that fails is the break. After a
/// break the verifier is spent: [`ChainVerifier::report`] is then what verified before
/// that row.
#[derive(Debug)]
pub struct ChainVerifier<'a> {
    allowed: Option<&'a AllowedSigners>,
    /// The whole chain, from seq 1, rather than an excerpt.
    complete: bool,
    /// Rows that passed every check.
    report: ChainReport,
    /// Rows whose sequence, link and hash were checked (they may be ahead of `report`
    /// while their signatures are checked elsewhere, see [`ChainVerifier::link`]).
    linked_rows: usize,
    linked_seq: u32,
    linked_hash: String,
    /// Fingerprints of the public keys met so far (a chain is signed by a handful of
    /// keys, one per rotation); bounded, so a hostile file cannot grow it.
    fingerprints: std::collections::HashMap<String, String>,
}

/// Distinct signing keys whose fingerprints are remembered.
const FINGERPRINT_CACHE: usize = 64;

impl<'a> ChainVerifier<'a> {
    /// For a complete chain ([`verify_chain`]).
    pub fn chain(allowed: Option<&'a AllowedSigners>) -> Self {
        Self::new(allowed, true)
    }

    /// For an excerpt ([`verify_excerpt`]).
    pub fn excerpt(allowed: Option<&'a AllowedSigners>) -> Self {
        Self::new(allowed, false)
    }

    fn new(allowed: Option<&'a AllowedSigners>, complete: bool) -> Self {
        Self {
            allowed,
            complete,
            report: ChainReport {
                head_hash: GENESIS_HASH.to_owned(),
                ..ChainReport::default()
            },
            linked_rows: 0,
            linked_seq: 0,
            linked_hash: GENESIS_HASH.to_owned(),
            fingerprints: std::collections::HashMap::new(),
        }
    }

    /// What has verified so far.
    pub fn report(&self) -> &ChainReport {
        &self.report
    }

    pub fn finish(self) -> ChainReport {
        self.report
    }

    /// Checks the next row: sequence, link, entry hash, signature, allowed signer.
    pub fn check(&mut self, e: &AuditEntry) -> Result<(), ChainBreak> {
        let row = self.link(e)?;
        check_signature(row, e)?;
        self.accept(row, e)
    }

    /// The first checks of a row, in chain order: `seq` follows, `prev_hash` links to the
    /// previous row, `entry_hash` is right. They need nothing from the signatures, so a
    /// caller may run ahead of [`check_signature`] and [`ChainVerifier::accept`] (which
    /// must then follow in the same row order). Returns the row's 1-based number.
    pub(crate) fn link(&mut self, e: &AuditEntry) -> Result<usize, ChainBreak> {
        self.linked_rows += 1;
        let row = self.linked_rows;
        let expected = self.linked_seq.saturating_add(1);
        let in_order = if self.complete {
            e.seq == expected
        } else {
            e.seq >= expected
        };
        if !in_order {
            return Err(ChainBreak::Sequence {
                row,
                expected,
                found: e.seq,
            });
        }
        let linked = e.seq == expected && (self.complete || row > 1);
        if linked && e.prev_hash != self.linked_hash {
            return Err(ChainBreak::Link { row, seq: e.seq });
        }
        self.linked_seq = e.seq;
        if entry_hash(&e.prev_hash, &e.payload) != e.entry_hash {
            return Err(ChainBreak::Edited { row, seq: e.seq });
        }
        self.linked_hash.clone_from(&e.entry_hash);
        Ok(row)
    }

    /// The last checks of a row whose signature verified: who may sign, and that a
    /// decision is signed at all. The row then counts as verified.
    pub(crate) fn accept(&mut self, row: usize, e: &AuditEntry) -> Result<(), ChainBreak> {
        match (&e.signature, &e.public_key) {
            (Some(_), Some(public)) => {
                if let (Some(allowed), EntryKind::Decision) = (self.allowed, e.kind) {
                    let principal = approver_of(&e.payload).unwrap_or_default();
                    let fingerprint = self.fingerprint(public);
                    if !allowed.allows(&principal, &fingerprint) {
                        return Err(ChainBreak::UnknownSigner {
                            row,
                            seq: e.seq,
                            principal,
                            fingerprint,
                        });
                    }
                }
                self.report.signatures += 1;
            }
            _ if e.kind == EntryKind::Decision => {
                return Err(ChainBreak::Unsigned { row, seq: e.seq })
            }
            _ => {}
        }
        self.report.head_hash.clone_from(&e.entry_hash);
        self.report.entries += 1;
        Ok(())
    }

    fn fingerprint(&mut self, public: &str) -> String {
        if let Some(f) = self.fingerprints.get(public) {
            return f.clone();
        }
        let f = signer::fingerprint_of(public).unwrap_or_default();
        if self.fingerprints.len() < FINGERPRINT_CACHE {
            self.fingerprints.insert(public.to_owned(), f.clone());
        }
        f
    }
}

/// Rows read ahead of the signature checks: they are linked as they are read, then
/// their signatures checked on a few threads. Bounds the memory a verification holds.
const BATCH: usize = 1024;

/// Verifies entries as `rows` yields them, until the first break or the end, with
/// memory bounded by [`BATCH`] whatever the chain's length. `seen` is given every row
/// read, verified or not (to count or summarise the chain while it streams by).
///
/// The reported break is the earliest row that fails, with its checks in the order
/// [`ChainVerifier::check`] makes them. After a break the rest of `rows` is still
/// read (for `seen`, without checks): the outer error is the first row that could not
/// be read at all, which wins over a break wherever it is, as it does when the whole
/// chain is read before it is verified.
pub fn verify_rows<E>(
    verifier: &mut ChainVerifier<'_>,
    rows: impl IntoIterator<Item = Result<AuditEntry, E>>,
    mut seen: impl FnMut(&AuditEntry),
) -> Result<Result<(), ChainBreak>, E> {
    let mut rows = rows.into_iter();
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(4);
    let mut batch: Vec<(usize, AuditEntry)> = Vec::with_capacity(BATCH);
    let mut broken = None;
    let mut ended = false;
    while broken.is_none() && !ended {
        batch.clear();
        let mut link_break = None;
        while batch.len() < BATCH {
            let Some(entry) = rows.next() else {
                ended = true;
                break;
            };
            let entry = entry?;
            seen(&entry);
            match verifier.link(&entry) {
                Ok(row) => batch.push((row, entry)),
                Err(b) => {
                    link_break = Some(b);
                    break;
                }
            }
        }
        // Every row of the batch comes before the link break (if any), so a bad
        // signature or signer among them is the earlier break.
        let bad_signature = first_bad_signature(&batch, threads);
        for (i, (row, entry)) in batch.iter().enumerate() {
            if let Some((bad, b)) = &bad_signature {
                if *bad == i {
                    broken = Some(b.clone());
                    break;
                }
            }
            if let Err(b) = verifier.accept(*row, entry) {
                broken = Some(b);
                break;
            }
        }
        if broken.is_none() {
            broken = link_break;
        }
    }
    if broken.is_some() {
        for entry in rows {
            seen(&entry?);
        }
    }
    Ok(broken.map_or(Ok(()), Err))
}

/// The first row of `batch` whose signature fails (its index and the break), checked
/// on up to `threads` threads, each taking a contiguous share.
fn first_bad_signature(
    batch: &[(usize, AuditEntry)],
    threads: usize,
) -> Option<(usize, ChainBreak)> {
    let first_in = |offset: usize, share: &[(usize, AuditEntry)]| {
        share
            .iter()
            .enumerate()
            .find_map(|(i, (row, e))| check_signature(*row, e).err().map(|b| (offset + i, b)))
    };
    let signed = batch.iter().filter(|(_, e)| e.signature.is_some()).count();
    // Threads pay off only for a share of signatures each.
    if threads < 2 || signed < 64 {
        return first_in(0, batch);
    }
    let share = batch.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .chunks(share)
            .enumerate()
            .map(|(n, chunk)| scope.spawn(move || first_in(n * share, chunk)))
            .collect();
        // Shares are in row order: the first share with a failure has the earliest.
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Vec<_>>()
            .into_iter()
            .flatten()
            .next()
    })
}

/// A row's signature, when it has one, over its payload with its public key.
pub(crate) fn check_signature(row: usize, e: &AuditEntry) -> Result<(), ChainBreak> {
    match (&e.signature, &e.public_key) {
        (Some(sig), Some(public)) => {
            signer::verify(public, e.payload.as_bytes(), sig).map_err(|err| ChainBreak::Signature {
                row,
                seq: e.seq,
                detail: err.to_string(),
            })
        }
        _ => Ok(()),
    }
}

fn approver_of(payload: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()?
        .get("approver")?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::{MemoryKeyStore, Signer};

    fn chain(n: u32) -> Vec<AuditEntry> {
        let (signer, _) = Signer::load_or_create(&MemoryKeyStore::default()).unwrap();
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let payload = format!(r#"{{"approver":"ana","n":{seq},"type":"decision"}}"#);
                let hash = entry_hash(&prev, &payload);
                let e = AuditEntry {
                    seq,
                    at: Utc::now(),
                    kind: EntryKind::Decision,
                    action: Some(format!("prod/{seq}")),
                    signature: Some(signer.sign(payload.as_bytes()).unwrap()),
                    public_key: Some(signer.public_key_openssh()),
                    key_fingerprint: Some(signer.fingerprint()),
                    payload,
                    prev_hash: prev.clone(),
                    entry_hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let c = chain(5);
        let r = verify_chain(&c, None).unwrap();
        assert_eq!((r.entries, r.signatures), (5, 5));
        assert_eq!(r.head_hash, c[4].entry_hash);
    }

    #[test]
    fn every_kind_of_tampering_names_the_row() {
        let c = chain(6);
        let mut edited = c.clone();
        edited[2].payload = edited[2].payload.replace("ana", "eve");
        assert_eq!(verify_chain(&edited, None).unwrap_err().row(), 3);

        let mut removed = c.clone();
        removed.remove(3);
        assert_eq!(verify_chain(&removed, None).unwrap_err().row(), 4);

        let mut swapped = c.clone();
        swapped.swap(1, 2);
        assert_eq!(verify_chain(&swapped, None).unwrap_err().row(), 2);

        let mut inserted = c.clone();
        let mut extra = c[1].clone();
        extra.seq = 3;
        inserted.insert(2, extra);
        assert_eq!(verify_chain(&inserted, None).unwrap_err().row(), 3);
    }

    #[test]
    fn an_excerpt_checks_rows_and_links_between_neighbours() {
        let c = chain(6);
        let excerpt = vec![c[1].clone(), c[2].clone(), c[4].clone()];
        verify_excerpt(&excerpt, None).unwrap();
        assert!(
            verify_chain(&excerpt, None).is_err(),
            "an excerpt is not a complete chain"
        );
        let mut edited = excerpt.clone();
        edited[2].payload.push(' ');
        assert_eq!(verify_excerpt(&edited, None).unwrap_err().row(), 3);
        let reordered = vec![c[2].clone(), c[1].clone()];
        assert_eq!(verify_excerpt(&reordered, None).unwrap_err().row(), 2);
    }

    /// The streamed verification of `entries` (in batches, signatures on threads): the
    /// result and what verified before a break.
    fn streamed(entries: &[AuditEntry]) -> (Result<ChainReport, ChainBreak>, ChainReport) {
        let mut v = ChainVerifier::chain(None);
        let mut seen = 0;
        let result = verify_rows(&mut v, entries.iter().cloned().map(Ok::<_, ()>), |_| {
            seen += 1
        })
        .unwrap();
        assert_eq!(seen, entries.len(), "every row is seen, even after a break");
        let report = v.finish();
        (result.map(|()| report.clone()), report)
    }

    #[test]
    fn a_streamed_chain_reports_the_earliest_break_across_batches_and_threads() {
        let n = u32::try_from(BATCH * 2 + 200).unwrap();
        let c = chain(n);
        let (intact, _) = streamed(&c);
        assert_eq!(intact, verify_chain(&c, None));
        assert_eq!(intact.unwrap().entries, n);

        // A valid signature, but of another row's payload.
        let forge = |c: &mut Vec<AuditEntry>, row: usize| {
            c[row - 1].signature = c[row].signature.clone();
        };
        let remove = |c: &mut Vec<AuditEntry>, row: usize| {
            c.remove(row - 1);
        };
        let edit = |c: &mut Vec<AuditEntry>, row: usize| {
            c[row - 1].payload.push(' ');
        };
        type Tampers = Vec<(fn(&mut Vec<AuditEntry>, usize), usize)>;
        let cases: Vec<(&str, Tampers, usize, &str)> = vec![
            // Both in the second batch, in the second thread's share and in the first.
            (
                "two bad signatures",
                vec![(forge, 1900), (forge, 1100)],
                1100,
                "signature",
            ),
            (
                "signature before a removed row",
                vec![(forge, 1200), (remove, 1300)],
                1200,
                "signature",
            ),
            (
                "removed row before a signature",
                vec![(forge, 1400), (remove, 1300)],
                1300,
                "sequence",
            ),
            (
                "edit in the first batch, signature in the second",
                vec![(forge, 1500), (edit, 7)],
                7,
                "edited",
            ),
            (
                "signature at a batch's last row",
                vec![(forge, BATCH)],
                BATCH,
                "signature",
            ),
            (
                "the last row",
                vec![(edit, n as usize)],
                n as usize,
                "edited",
            ),
        ];
        for (what, tampers, row, code) in cases {
            let mut t = c.clone();
            for (tamper, at) in tampers {
                tamper(&mut t, at);
            }
            let (result, before) = streamed(&t);
            assert_eq!(result, verify_chain(&t, None), "{what}");
            let broken = result.unwrap_err();
            assert_eq!((broken.row(), broken.code()), (row, code), "{what}");
            assert_eq!(
                before.entries as usize,
                row - 1,
                "{what}: verified before it"
            );
            assert_eq!(before.head_hash, t[row - 2].entry_hash, "{what}");
        }
    }

    #[test]
    fn a_read_error_after_a_break_is_what_a_streamed_verification_reports() {
        let mut c = chain(3);
        c[0].payload.push(' ');
        let rows = c
            .iter()
            .cloned()
            .map(Ok)
            .chain(std::iter::once(Err("row 4 unreadable")));
        let mut v = ChainVerifier::chain(None);
        assert_eq!(verify_rows(&mut v, rows, |_| {}), Err("row 4 unreadable"));
    }

    #[test]
    fn allowed_signers_gate_who_may_sign() {
        let c = chain(2);
        let line = format!(
            "ana namespaces=\"countersign-decision\" {}",
            c[0].public_key.as_ref().unwrap()
        );
        let ok = AllowedSigners::parse(&line).unwrap();
        verify_chain(&c, Some(&ok)).unwrap();
        let other = AllowedSigners::parse(&line.replacen("ana", "bob", 1)).unwrap();
        assert!(matches!(
            verify_chain(&c, Some(&other)),
            Err(ChainBreak::UnknownSigner { row: 1, .. })
        ));
    }
}
