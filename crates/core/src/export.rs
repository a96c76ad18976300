//! The audit CSV (docs/audit-csv.md): RFC 4180, one row per audit entry, a header row.
//!
//! Spreadsheet safety: a cell that starts with `=`, `+`, `-`, `@`, a tab, a carriage
//! return, or a `'` is written with one extra leading `'`, so no spreadsheet runs it as a
//! formula. Reading removes exactly one leading `'` from such a cell, which restores the
//! original bytes — the payload a signature covers among them.

use std::io::{Read, Write};

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::audit::{
    self, AllowedSigners, AuditEntry, ChainBreak, ChainReport, ChainVerifier, EntryKind,
};

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

/// Creates `path` through a file beside it (`.NAME.partial`), renamed into place once
/// `write` succeeded and the bytes are on disk: a failure half-way leaves nothing under
/// `path`, where a reader could take a partial CSV for a whole export. `io_err` turns
/// the file's own errors into the caller's.
pub fn write_file_whole<T, E>(
    path: &std::path::Path,
    io_err: impl Fn(std::io::Error) -> E,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<T, E>,
) -> Result<T, E> {
    let name = path.file_name().ok_or_else(|| {
        io_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a file name", path.display()),
        ))
    })?;
    let mut partial = std::ffi::OsString::from(".");
    partial.push(name);
    partial.push(".partial");
    let partial = path.with_file_name(partial);
    let written = (|| {
        let file = std::fs::File::create(&partial).map_err(&io_err)?;
        let mut out = std::io::BufWriter::new(file);
        let value = write(&mut out)?;
        let file = out.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(&io_err)?;
        std::fs::rename(&partial, path).map_err(&io_err)?;
        Ok(value)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Writes `entries` as one audit CSV (header included).
pub fn write_csv<W: Write>(entries: &[AuditEntry], out: W) -> Result<(), CsvError> {
    let mut w = CsvWriter::new(out)?;
    entries.iter().try_for_each(|e| w.write(e))?;
    w.finish().map(drop)
}

/// Writes an audit CSV one entry at a time, so an export of any length holds only the
/// row being written (the caller reads the rows as it goes).
pub struct CsvWriter<W: Write> {
    w: csv::Writer<W>,
    rows: u64,
}

impl<W: Write> CsvWriter<W> {
    /// Starts the CSV: writes the header row.
    pub fn new(out: W) -> Result<Self, CsvError> {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(out);
        w.write_record(COLUMNS).map_err(write_err)?;
        Ok(Self { w, rows: 0 })
    }

    pub fn write(&mut self, e: &AuditEntry) -> Result<(), CsvError> {
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
        for cell in cells {
            self.w
                .write_field(neutralise(cell).as_bytes())
                .map_err(write_err)?;
        }
        self.w
            .write_record(std::iter::empty::<&[u8]>())
            .map_err(write_err)?;
        self.rows += 1;
        Ok(())
    }

    /// Rows written so far, the header not counted.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes everything and hands the output back.
    pub fn finish(self) -> Result<W, CsvError> {
        self.w
            .into_inner()
            .map_err(|e| CsvError::Write(e.error().to_string()))
    }
}

fn write_err(e: csv::Error) -> CsvError {
    CsvError::Write(e.to_string())
}

/// Reads an audit CSV back into entries (rows numbered from 1, the header not counted).
pub fn read_csv<R: Read>(input: R) -> Result<Vec<AuditEntry>, CsvError> {
    CsvReader::new(input)?.collect()
}

/// Reads an audit CSV one row at a time (rows numbered from 1, the header not counted):
/// an iterator of entries, or of the error that makes a row unreadable.
pub struct CsvReader<R: Read> {
    r: csv::Reader<R>,
    record: csv::StringRecord,
    row: usize,
    done: bool,
}

impl<R: Read> CsvReader<R> {
    /// Reads and checks the header row.
    pub fn new(input: R) -> Result<Self, CsvError> {
        let mut r = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(input);
        let headers = r.headers().map_err(|e| CsvError::Header(e.to_string()))?;
        if !headers.iter().eq(COLUMNS) {
            return Err(CsvError::Header(format!(
                "expected columns {}",
                COLUMNS.join(",")
            )));
        }
        Ok(Self {
            r,
            record: csv::StringRecord::new(),
            row: 0,
            done: false,
        })
    }

    fn entry(&self) -> Result<AuditEntry, CsvError> {
        let row = self.row;
        let bad = |detail: String| CsvError::Row { row, detail };
        let record = &self.record;
        let cell = |n: usize| restore(record.get(n).unwrap_or(""));
        let opt = |n: usize| Some(cell(n)).filter(|c| !c.is_empty()).map(str::to_owned);
        let at = DateTime::parse_from_rfc3339(cell(1))
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| bad(format!("at: {e}")))?;
        Ok(AuditEntry {
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
        })
    }
}

impl<R: Read> Iterator for CsvReader<R> {
    type Item = Result<AuditEntry, CsvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.row += 1;
        match self.r.read_record(&mut self.record) {
            Ok(true) => Some(self.entry()),
            Ok(false) => {
                self.done = true;
                None
            }
            Err(e) => Some(Err(CsvError::Row {
                row: self.row,
                detail: e.to_string(),
            })),
        }
    }
}

/// Verifies an audit CSV as it is read, in constant memory: a complete chain, or with
/// `excerpt` a filtered export ([`audit::verify_excerpt`]). The outer error is a file
/// that cannot be read as an audit CSV — it wins over a chain break, wherever the two
/// are, as when the whole file was read before verifying; the inner one is the first
/// row that breaks the chain.
pub fn verify_csv<R: Read>(
    input: R,
    allowed: Option<&AllowedSigners>,
    excerpt: bool,
) -> Result<Result<ChainReport, ChainBreak>, CsvError> {
    let mut verifier = if excerpt {
        ChainVerifier::excerpt(allowed)
    } else {
        ChainVerifier::chain(allowed)
    };
    let rows = CsvReader::new(input)?;
    Ok(audit::verify_rows(&mut verifier, rows, |_| {})?.map(|()| verifier.finish()))
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
    fn a_csv_verifies_as_it_streams_and_an_unreadable_row_wins_over_a_break() {
        let (signer, _) =
            crate::signer::Signer::load_or_create(&crate::signer::MemoryKeyStore::default())
                .unwrap();
        let mut prev = crate::audit::GENESIS_HASH.to_owned();
        let chain: Vec<AuditEntry> = (1..=5)
            .map(|seq| {
                let payload = format!(r#"{{"n":{seq},"type":"key_rotation"}}"#);
                let hash = crate::audit::entry_hash(&prev, &payload);
                let e = AuditEntry {
                    seq,
                    kind: EntryKind::KeyRotation,
                    action: None,
                    signature: Some(signer.sign(payload.as_bytes()).unwrap()),
                    public_key: Some(signer.public_key_openssh()),
                    key_fingerprint: Some(signer.fingerprint()),
                    payload,
                    prev_hash: std::mem::replace(&mut prev, hash.clone()),
                    entry_hash: hash,
                    ..entry("")
                };
                e
            })
            .collect();
        let csv_of = |entries: &[AuditEntry]| {
            let mut buf = Vec::new();
            write_csv(entries, &mut buf).unwrap();
            buf
        };
        let whole = csv_of(&chain);
        let report = verify_csv(whole.as_slice(), None, false).unwrap().unwrap();
        assert_eq!((report.entries, report.signatures), (5, 5));
        assert_eq!(report.head_hash, chain[4].entry_hash);
        let excerpt = csv_of(&[chain[1].clone(), chain[3].clone()]);
        assert!(verify_csv(excerpt.as_slice(), None, false)
            .unwrap()
            .is_err());
        assert_eq!(
            verify_csv(excerpt.as_slice(), None, true)
                .unwrap()
                .unwrap()
                .entries,
            2
        );

        let mut edited = chain.clone();
        edited[1].payload.push(' ');
        let broken = csv_of(&edited);
        let b = verify_csv(broken.as_slice(), None, false)
            .unwrap()
            .unwrap_err();
        assert_eq!((b.row(), b.code()), (2, "edited"));
        // The same file with a row no reader can take, after the break: as when the
        // whole file was read first, the file is refused rather than the row named.
        let mut unreadable = broken.clone();
        unreadable.extend_from_slice(b"6,not a time,delivery\r\n");
        assert!(matches!(
            verify_csv(unreadable.as_slice(), None, false),
            Err(CsvError::Row { row: 6, .. })
        ));
    }

    #[test]
    fn a_wrong_header_is_refused() {
        assert!(matches!(
            read_csv("a,b\n1,2\n".as_bytes()),
            Err(CsvError::Header(_))
        ));
    }
}
