//! `countersign export` and `countersign verify` stream the audit chain: their peak
//! memory does not grow with the chain's length.
//!
//! Each command runs as its own process and is measured with `wait4` (that process's
//! own high-water mark), on a small chain and on one 100 times longer. Held in memory,
//! the long chain alone is a few hundred megabytes; streamed, the two peaks are a few
//! megabytes apart.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{DateTime, TimeZone, Utc};
use countersign_core::audit::{entry_hash, GENESIS_HASH};
use countersign_core::signer::{MemoryKeyStore, Signer};
use countersign_core::snapshot::format_millis;
use countersign_core::store::{Store, DB_FILE};

const SMALL: u32 = 2_000;
const LARGE: u32 = 200_000;
/// What a streamed command may grow by between the two chains. The long chain's rows
/// take ≈ 1 KB each, so holding them would add ≈ 200 MB.
const GROWTH_LIMIT_KIB: u64 = 32 * 1024;

/// The `countersign` binary under test. `COUNTERSIGN_BIN` points the test at another
/// build (to see it fail against one that holds the chain in memory).
fn cli() -> PathBuf {
    std::env::var_os("COUNTERSIGN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_countersign")))
}

/// A data dir whose store holds a valid chain of `n` entries: every tenth a signed
/// key rotation, the others unsigned delivery results, each payload ≈ 700 bytes.
/// Rows are written straight to SQLite in one transaction (the engine would commit and
/// fsync each entry), one at a time so this process stays small too.
fn store_with_chain(dir: &Path, n: u32, signer: &Signer) -> PathBuf {
    let data = dir.join(format!("data-{n}"));
    drop(Store::open_in_dir(&data).expect("a new store"));
    let mut db = rusqlite::Connection::open(data.join(DB_FILE)).unwrap();
    let tx = db.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO audit_entries (seq, at, kind, payload, signature, public_key,
                    key_fingerprint, prev_hash, entry_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .unwrap();
        let start: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let public_key = signer.public_key_openssh();
        let fingerprint = signer.fingerprint();
        let filler = "a long reason, as people write them; ".repeat(18);
        let mut prev = GENESIS_HASH.to_owned();
        for seq in 1..=n {
            let at = start + chrono::Duration::milliseconds(i64::from(seq));
            let signed = seq % 10 == 0;
            let kind = if signed { "key_rotation" } else { "delivery" };
            let payload = format!(r#"{{"n":{seq},"note":"{filler}","type":"{kind}"}}"#);
            let hash = entry_hash(&prev, &payload);
            let signature = signed.then(|| signer.sign(payload.as_bytes()).unwrap());
            insert
                .execute(rusqlite::params![
                    seq,
                    format_millis(&at),
                    kind,
                    payload,
                    signature,
                    signed.then_some(&public_key),
                    signed.then_some(&fingerprint),
                    prev,
                    hash,
                ])
                .unwrap();
            prev = hash;
        }
    }
    tx.commit().unwrap();
    data
}

/// Runs `countersign ARGS` on `data` to success; returns its stdout and peak RSS (KiB).
fn measured(dir: &Path, data: &Path, args: &[&std::ffi::OsStr]) -> (String, u64) {
    let config = dir.join("config.toml");
    std::fs::write(&config, "").unwrap();
    let out_path = dir.join("stdout.txt");
    // Reaped by wait4 below (for its rusage), not by `Child::wait`.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(cli())
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data that wait4 fills; `pid` is our own child, which
    // std has not reaped (`Child::wait` is never called).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pointers to locals, our child's pid.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "wait4: {e}");
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "countersign {args:?} failed (wait status {status})"
    );
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    (stdout, u64::try_from(usage.ru_maxrss).unwrap_or(0))
}

struct Peaks {
    export: u64,
    verify_csv: u64,
    verify_db: u64,
}

fn peaks(dir: &Path, data: &Path, n: u32) -> Peaks {
    let csv = dir.join(format!("audit-{n}.csv"));
    let (_, export) = measured(
        dir,
        data,
        &["export".as_ref(), "--output".as_ref(), csv.as_os_str()],
    );
    let (said, verify_csv) = measured(dir, data, &["verify".as_ref(), csv.as_os_str()]);
    assert!(
        said.starts_with("OK: ") && said.contains(&format!(": {n} entries, {} signatures", n / 10)),
        "the export verifies: {said}"
    );
    let (said, verify_db) = measured(dir, data, &["verify".as_ref()]);
    assert!(
        said.contains(&format!("{n} entries")),
        "the database verifies: {said}"
    );
    std::fs::remove_file(&csv).unwrap();
    Peaks {
        export,
        verify_csv,
        verify_db,
    }
}

#[test]
fn export_and_verify_hold_the_same_memory_for_a_chain_100_times_longer() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, _) = Signer::load_or_create(&MemoryKeyStore::default()).unwrap();
    // Both stores are made before anything is measured: a child's peak can include
    // what its parent held when it started, so the parent is the same for both.
    let small_data = store_with_chain(dir.path(), SMALL, &signer);
    let large_data = store_with_chain(dir.path(), LARGE, &signer);
    let small = peaks(dir.path(), &small_data, SMALL);
    let large = peaks(dir.path(), &large_data, LARGE);
    for (what, small, large) in [
        ("export", small.export, large.export),
        ("verify of the CSV", small.verify_csv, large.verify_csv),
        ("verify of the database", small.verify_db, large.verify_db),
    ] {
        let growth = large.saturating_sub(small);
        eprintln!("{what}: peak RSS {small} KiB ({SMALL} entries), {large} KiB ({LARGE})");
        assert!(
            growth < GROWTH_LIMIT_KIB,
            "{what}: peak RSS {small} KiB for {SMALL} entries, {large} KiB for {LARGE} \
             (+{growth} KiB): it holds the chain in memory"
        );
    }
}
