//! The audit CSV (docs/audit-csv.md): RFC 4180, one row per audit entry, a header row.
//!
//! Spreadsheet safety: a cell that starts with `=`, `+`, `-`, `@`, a tab, a carriage
//! return, or a `'` is written with one extra leading `'`, so no spreadsheet runs it as a
//! formula. Reading removes exactly one leading `'` from such a cell, which restores the
//! original bytes — the payload a signature covers among them.

use std::io::{Read, Write};

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::audit::{AuditEntry, EntryKind};

pub const COLUMNS: [&str; 10] = [
    "seq",
    "at",
    "kind",
    "action",
    "payload",
    "signature",
    "public_key",
    "key_fingerprint",
    "prev_hash",
    "entry_hash",
];

#[derive(Debug, Error)]
pub enum CsvError {
    #[error("cannot write the CSV: {0}")]
    Write(String),
    #[error("row {row}: {detail}")]
    Row { row: usize, detail: String },
    #[error("not an audit CSV: {0}")]
    Header(String),
}

fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\'') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

fn restore(cell: &str) -> &str {
    match cell.as_bytes() {
        [b'\'', b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\'', ..] => &cell[1..],
        _ => cell,
    }
}

pub fn write_csv<W: Write>(entries: &[AuditEntry], out: W) -> Result<(), CsvError> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    let err = |e: csv::Error| CsvError::Write(e.to_string());
    w.write_record(COLUMNS).map_err(err)?;
    for e in entries {
        let seq = e.seq.to_string();
        let at = crate::snapshot::format_millis(&e.at);
        let cells = [
            seq.as_str(),
            at.as_str(),
            e.kind.as_str(),
            e.action.as_deref().unwrap_or(""),
            &e.payload,
            e.signature.as_deref().unwrap_or(""),
            e.public_key.as_deref().unwrap_or(""),
            e.key_fingerprint.as_deref().unwrap_or(""),
            &e.prev_hash,
            &e.entry_hash,
        ];
        w.write_record(cells.iter().map(|c| neutralise(c).into_owned()))
            .map_err(err)?;
    }
    w.flush().map_err(|e| CsvError::Write(e.to_string()))
}

/// Reads an audit CSV back into entries (rows numbered from 1, the header not counted).
pub fn read_csv<R: Read>(input: R) -> Result<Vec<AuditEntry>, CsvError> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(input);
    let headers = r
        .headers()
        .map_err(|e| CsvError::Header(e.to_string()))?
        .clone();
    if headers.iter().collect::<Vec<_>>() != COLUMNS {
        return Err(CsvError::Header(format!(
            "expected columns {}",
            COLUMNS.join(",")
        )));
    }
    let mut out = Vec::new();
    for (i, record) in r.records().enumerate() {
        let row = i + 1;
        let bad = |detail: String| CsvError::Row { row, detail };
        let record = record.map_err(|e| bad(e.to_string()))?;
        let cell = |n: usize| restore(record.get(n).unwrap_or(""));
        let opt = |n: usize| Some(cell(n)).filter(|c| !c.is_empty()).map(str::to_owned);
        let at = DateTime::parse_from_rfc3339(cell(1))
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| bad(format!("at: {e}")))?;
        out.push(AuditEntry {
            seq: cell(0).parse().map_err(|e| bad(format!("seq: {e}")))?,
            at,
            kind: EntryKind::parse(cell(2)).ok_or_else(|| bad(format!("kind `{}`", cell(2))))?,
            action: opt(3),
            payload: cell(4).to_owned(),
            signature: opt(5),
            public_key: opt(6),
            key_fingerprint: opt(7),
            prev_hash: cell(8).to_owned(),
            entry_hash: cell(9).to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            seq: 1,
            at: Utc::now(),
            kind: EntryKind::Delivery,
            action: Some(action.to_owned()),
            payload: "{\"a\":\"line\\nbreak, \\\"quoted\\\"\"}".into(),
            signature: None,
            public_key: None,
            key_fingerprint: None,
            prev_hash: "0".repeat(64),
            entry_hash: "f".repeat(64),
        }
    }

    #[test]
    fn formulas_are_neutralised_and_restored_exactly() {
        for hostile in [
            "=HYPERLINK(\"x\")",
            "+1",
            "-2",
            "@SUM(A1)",
            "'=already",
            "\tx",
            "plain",
        ] {
            let e = entry(hostile);
            let mut buf = Vec::new();
            write_csv(std::slice::from_ref(&e), &mut buf).unwrap();
            let text = String::from_utf8(buf.clone()).unwrap();
            let data_row = text.lines().nth(1).unwrap();
            let action_cell = data_row.split(',').nth(3).unwrap();
            assert!(
                !action_cell
                    .trim_start_matches('"')
                    .starts_with(['=', '+', '-', '@', '\t']),
                "{hostile:?} reached the sheet as {action_cell:?}"
            );
            let back = read_csv(buf.as_slice()).unwrap();
            assert_eq!(back[0].action.as_deref(), Some(hostile));
            assert_eq!(back[0].payload, e.payload);
        }
    }

    #[test]
    fn a_wrong_header_is_refused() {
        assert!(matches!(
            read_csv("a,b\n1,2\n".as_bytes()),
            Err(CsvError::Header(_))
        ));
    }
}
