//! Benchmark 3: the audit CSV export (`countersign export`) against sqlite3's own
//! `.mode csv` export of the same rows (same columns, same order), both as processes
//! writing a file; then `countersign verify` of the exported CSV in entries/s.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use rusqlite::{Connection, OpenFlags};

use crate::proc;
use crate::table::{self, Row};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The rows `countersign export` writes, as plain SQL for sqlite3.
const SQL: &str = "SELECT e.seq, e.at, e.kind, b.name || '/' || a.external_id AS action, e.payload,
        e.signature, e.public_key, e.key_fingerprint, e.prev_hash, e.entry_hash
    FROM audit_entries e
    LEFT JOIN actions a ON a.id = e.action_id
    LEFT JOIN backends b ON b.id = a.backend_id
    ORDER BY e.seq";

pub fn run(
    db: &Path,
    cli: &Path,
    sqlite3: &str,
    work: &Path,
    runs: usize,
) -> Result<Vec<Row>, BoxError> {
    let data_dir = db.parent().ok_or("the store file has no directory")?;
    let entries: i64 = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?
        .query_row("SELECT count(*) FROM audit_entries", [], |r| r.get(0))?;
    let ours_csv = work.join("audit-ours.csv");
    let ref_csv = work.join("audit-sqlite3.csv");
    // No config file may stand in for the user's: an empty one, next to the outputs.
    let config = work.join("bench-config.toml");
    std::fs::write(&config, "")?;

    let (ours, _) = proc::median(runs, || {
        let mut c = Command::new(cli);
        c.arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("export")
            .arg("--output")
            .arg(&ours_csv)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    })?;
    let (reference, _) = proc::median(runs, || {
        let mut c = Command::new(sqlite3);
        c.arg("-readonly")
            .arg("-header")
            .arg("-csv")
            .arg(db)
            .arg(SQL)
            .stdout(
                File::create(&ref_csv)
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .stderr(Stdio::null());
        c
    })?;
    let ours_size = std::fs::metadata(&ours_csv)?.len();
    let ref_size = std::fs::metadata(&ref_csv)?.len();
    let per_s = |d: std::time::Duration| entries as f64 / d.as_secs_f64().max(1e-9);
    let mut rows = vec![Row {
        name: format!("audit CSV export, {entries} entries"),
        ours: format!(
            "{:.2} s ({:.0} entries/s, {} MB, peak RSS {} MB)",
            ours.wall.as_secs_f64(),
            per_s(ours.wall),
            ours_size / 1_000_000,
            ours.max_rss_kib / 1024
        ),
        reference: format!(
            "{:.2} s (sqlite3 .mode csv, {} MB)",
            reference.wall.as_secs_f64(),
            ref_size / 1_000_000
        ),
        ratio: table::ratio(ours.wall, reference.wall),
        goal: "≤ 1.5×".into(),
        met: table::ratio(ours.wall, reference.wall).map(|r| r <= 1.5),
    }];

    let (verify, _) = proc::median(1, || {
        let mut c = Command::new(cli);
        c.arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("verify")
            .arg(&ours_csv)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    })?;
    rows.push(Row {
        name: format!("audit CSV verify, {entries} entries"),
        ours: format!(
            "{:.2} s, {:.0} entries/s (peak RSS {} MB)",
            verify.wall.as_secs_f64(),
            per_s(verify.wall),
            verify.max_rss_kib / 1024
        ),
        reference: "–".into(),
        ratio: None,
        goal: "report entries/s".into(),
        met: None,
    });
    let _ = std::fs::remove_file(&ours_csv);
    let _ = std::fs::remove_file(&ref_csv);
    Ok(rows)
}
