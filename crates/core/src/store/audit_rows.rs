//! The audit chain read as a stream: a page of rows at a time, in `seq` order, so an
//! export or a verification of any length holds one page, and the connection is free
//! for other callers between pages (a long export does not stall the sync loop).

use rusqlite::params;

use super::{AuditQuery, Store, StoreError};
use crate::audit::{AuditEntry, EntryKind};
use crate::snapshot::format_millis;

/// Rows read per query.
const PAGE: i64 = 512;

/// Audit entries in chain order, read page by page (keyset paging on `seq`, which is
/// the table's primary key: each page is one index seek, whatever its position). The
/// rows are those one `ORDER BY seq` query would give; rows appended while the stream
/// runs are included when they fall in the query (see [`Store::audit_rows_up_to`]).
pub struct AuditRows<'a> {
    store: &'a Store,
    from: Option<String>,
    to: Option<String>,
    backend: Option<String>,
    up_to: Option<i64>,
    /// The last `seq` read; the next page starts after it.
    after: i64,
    page: std::vec::IntoIter<AuditEntry>,
    ended: bool,
}

impl Store {
    /// Audit entries in chain order, optionally within a time range and for one
    /// backend, as a stream (see [`AuditRows`]).
    pub fn audit_rows(&self, query: &AuditQuery) -> AuditRows<'_> {
        AuditRows {
            store: self,
            from: query.from.as_ref().map(format_millis),
            to: query.to.as_ref().map(format_millis),
            backend: query.backend.clone(),
            up_to: None,
            after: i64::MIN,
            page: Vec::new().into_iter(),
            ended: false,
        }
    }

    /// [`Store::audit_rows`] up to and including `seq`: a chain as it was when its
    /// head was `seq`, whatever was appended since.
    pub fn audit_rows_up_to(&self, query: &AuditQuery, seq: u32) -> AuditRows<'_> {
        AuditRows {
            up_to: Some(i64::from(seq)),
            ..self.audit_rows(query)
        }
    }

    fn audit_page(&self, rows: &AuditRows<'_>) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT e.seq, e.at, e.kind, b.name || '/' || a.external_id, e.payload, e.signature,
                        e.public_key, e.key_fingerprint, e.prev_hash, e.entry_hash
                 FROM audit_entries e
                 LEFT JOIN actions a ON a.id = e.action_id
                 LEFT JOIN backends b ON b.id = a.backend_id
                 WHERE (?1 IS NULL OR e.at >= ?1) AND (?2 IS NULL OR e.at < ?2)
                   AND (?3 IS NULL OR b.name = ?3)
                   AND e.seq > ?4 AND (?5 IS NULL OR e.seq <= ?5)
                 ORDER BY e.seq
                 LIMIT ?6",
            )
            .map_err(|e| self.err(e))?;
        let mut found = stmt
            .query(params![
                rows.from,
                rows.to,
                rows.backend,
                rows.after,
                rows.up_to,
                PAGE
            ])
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = found.next().map_err(|e| self.err(e))? {
            let kind: String = r.get(2).map_err(|e| self.err(e))?;
            out.push(AuditEntry {
                seq: r.get(0).map_err(|e| self.err(e))?,
                at: self.time(r, 1, "audit_entries.at")?,
                kind: EntryKind::parse(&kind).ok_or_else(|| StoreError::Decode {
                    path: self.path.clone(),
                    column: "audit_entries.kind",
                    detail: format!("unknown kind `{kind}`"),
                })?,
                action: r.get(3).map_err(|e| self.err(e))?,
                payload: r.get(4).map_err(|e| self.err(e))?,
                signature: r.get(5).map_err(|e| self.err(e))?,
                public_key: r.get(6).map_err(|e| self.err(e))?,
                key_fingerprint: r.get(7).map_err(|e| self.err(e))?,
                prev_hash: r.get(8).map_err(|e| self.err(e))?,
                entry_hash: r.get(9).map_err(|e| self.err(e))?,
            });
        }
        Ok(out)
    }
}

impl Iterator for AuditRows<'_> {
    type Item = Result<AuditEntry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.page.next() {
            return Some(Ok(e));
        }
        if self.ended {
            return None;
        }
        match self.store.audit_page(self) {
            Ok(page) => {
                // A short page is the last one; an empty one ends the stream too.
                self.ended = (page.len() as i64) < PAGE;
                self.after = page.last().map_or(self.after, |e| i64::from(e.seq));
                self.page = page.into_iter();
                self.page.next().map(Ok)
            }
            Err(e) => {
                // An error ends the stream: the caller reports it, no half-read page.
                self.ended = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    /// A store whose chain holds `n` rows (hashes not linked: paging only), one a second
    /// from 2026-01-01T00:00:00Z on.
    fn store_with_rows(dir: &std::path::Path, n: u32) -> Store {
        let store = Store::open_in_dir(dir).unwrap();
        store
            .conn()
            .execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 INSERT INTO audit_entries (seq, at, kind, payload, prev_hash, entry_hash)
                 SELECT i, strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || i || ' seconds'),
                        'delivery', '{}', printf('%064d', i - 1), printf('%064d', i)
                 FROM n",
                [n],
            )
            .unwrap();
        store
    }

    fn seqs(rows: AuditRows<'_>) -> Vec<u32> {
        rows.map(|e| e.unwrap().seq).collect()
    }

    #[test]
    fn pages_give_every_row_once_in_order_within_the_query_and_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let n = u32::try_from(PAGE).unwrap() * 3 + 7;
        let store = store_with_rows(dir.path(), n);
        assert_eq!(
            seqs(store.audit_rows(&AuditQuery::default())),
            (1..=n).collect::<Vec<_>>()
        );
        let at = |s: i64| Some(Utc.timestamp_opt(1_767_225_600 + s, 0).unwrap());
        let range = AuditQuery {
            from: at(100),
            to: at(1_400),
            backend: None,
        };
        assert_eq!(
            seqs(store.audit_rows(&range)),
            (100..1_400).collect::<Vec<_>>()
        );
        assert_eq!(
            seqs(store.audit_rows_up_to(&range, 1_000)),
            (100..=1_000).collect::<Vec<_>>()
        );
        assert_eq!(
            seqs(store.audit_rows_up_to(&AuditQuery::default(), 512)),
            (1..=512).collect::<Vec<_>>(),
            "a bound at a page's end"
        );
        let other = AuditQuery {
            backend: Some("nowhere".into()),
            ..AuditQuery::default()
        };
        assert!(seqs(store.audit_rows(&other)).is_empty());
    }
}
