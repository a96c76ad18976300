//! After a whole CLI session — add a backend, its token into the OS keyring, sync, approve
//! and deny (signed), follow the stream, export and verify — neither the backend token
//! nor the signing key's private part (both read back from the keyring) appears in the
//! data directory, the config, HOME, or anything the CLI printed with every log target at
//! `trace`: not verbatim, not base64, not hex, and not the key's raw 32-byte seed.
//!
//! Runs inside `bash scripts/with-keyring.sh` (real Secret Service, `secret-tool`).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A token unlike anything else in the session, so a hit can only be a leak.
const SECRET_TOKEN: &str = "csk_live_4f9c2e7d81b3a6059e1d7c4b2a8f6e30";

fn keyring_lookup(user: &str) -> Option<String> {
    let out = Command::new("secret-tool")
        .args(["lookup", "service", "countersign", "username", user])
        .output()
        .expect("run secret-tool (inside scripts/with-keyring.sh)");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn unbase64(text: &str) -> Vec<u8> {
    let digits: Vec<u32> = text
        .bytes()
        .filter_map(|c| B64.iter().position(|&b| b == c).map(|p| p as u32))
        .collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (d << (18 - 6 * i)));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The Ed25519 seed inside an unencrypted OpenSSH private key: in the private section,
/// `string pubkey(32)` is followed by `string privkey(64)` = seed ‖ public key.
fn ed25519_seed(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let blob = unbase64(&body);
    assert!(blob.starts_with(b"openssh-key-v1\0"), "an OpenSSH key");
    let at = blob
        .windows(4)
        .rposition(|w| w == [0, 0, 0, 64])
        .expect("the 64-byte private part");
    let seed = blob[at + 4..at + 4 + 32].to_vec();
    let public = &blob[at + 4 + 32..at + 4 + 64];
    // The public half follows the seed; it must also precede it (sanity of the parse).
    assert!(
        blob[..at].windows(32).any(|w| w == public),
        "parsed the key"
    );
    seed
}

/// Every form a secret could leak in.
fn needles(secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("verbatim".to_owned(), secret.to_vec()),
        ("hex".into(), hex::encode(secret).into_bytes()),
        ("HEX".into(), hex::encode_upper(secret).into_bytes()),
    ];
    // base64 at each of the three alignments, without the padding-affected ends.
    for skip in 0..3 {
        let b = base64(&secret[skip..]);
        let stable = &b[..b.len().saturating_sub(4)];
        if stable.len() >= 16 {
            out.push((format!("base64+{skip}"), stable.as_bytes().to_vec()));
        }
    }
    out
}

fn scan(files: &[PathBuf], extra: &[(String, Vec<u8>)], what: &str, secret: &[u8]) {
    let needles = needles(secret);
    let mut sources: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read(p).unwrap()))
        .collect();
    sources.extend(extra.iter().cloned());
    for (name, bytes) in &sources {
        for (form, needle) in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what} ({form}) found in {name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_session_leaves_no_token_or_private_key_on_disk_or_in_logs() {
    let env = CliEnv::new();
    let server_dir = tempfile::tempdir().unwrap();
    let server = Command::new(bin("countersign-server"))
        .args(["--addr", "127.0.0.1:0", "--state"])
        .arg(server_dir.path().join("server.db"))
        .env("COUNTERSIGN_SERVER_TOKEN", SECRET_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = KillOnDrop(server);
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.0.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let producer = Producer {
        base: url.clone(),
        http: reqwest::Client::new(),
    };
    for (id, title) in [
        ("db-1", "psql to prod-billing"),
        ("db-2", "psql to prod-ledger"),
    ] {
        let response = producer
            .http
            .post(format!("{url}/v1/actions"))
            .bearer_auth(SECRET_TOKEN)
            .json(&new_action(id, title))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    let mut log: Vec<(String, Vec<u8>)> = Vec::new();
    let mut run = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = env.cmd(args);
        cmd.env("COUNTERSIGN_LOG", "trace")
            .env("RUST_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let name = format!("output of countersign {args:?}");
        let mut all = out.stdout.clone();
        all.extend_from_slice(&out.stderr);
        log.push((name, all));
        assert!(
            out.status.success(),
            "countersign {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    env.write_config("approver = \"ana@example.com\"\n");
    run(
        &["backend", "add", "countersign", "prod", "--url", &url],
        None,
    );
    run(
        &["backend", "set-token", "prod"],
        Some(&format!("{SECRET_TOKEN}\n")),
    );
    run(&["backend", "test", "prod"], None);
    let synced = run(&["sync"], None);
    assert!(synced.contains("prod: 2 new"), "{synced}");
    run(&["list", "--json"], None);
    run(&["show", "prod/db-1", "--json"], None);
    let approved = run(&["approve", "prod/db-1", "--reason", "OPS-1"], None);
    assert!(approved.contains("delivered"), "{approved}");
    let denied = run(&["deny", "prod/db-2", "--reason", "not today"], None);
    assert!(denied.contains("delivered"), "{denied}");
    run(&["sync"], None);
    run(&["key", "show"], None);
    run(&["backends", "--json"], None);
    run(&["history", "--json"], None);
    let csv = env.dir.path().join("audit.csv");
    run(&["export", "-o", csv.to_str().unwrap()], None);
    run(&["verify", csv.to_str().unwrap()], None);
    run(&["verify"], None);
    // The follower holds the event stream open (the token on every request); it prints
    // each change, so the test awaits the line for an action created meanwhile, then
    // stops it with Ctrl-C (SIGINT) and adds its output to the logs.
    let mut follow = env
        .cmd(&["sync", "--follow"])
        .env("COUNTERSIGN_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let response = producer
        .http
        .post(format!("{url}/v1/actions"))
        .bearer_auth(SECRET_TOKEN)
        .json(&new_action("db-3", "arrives while following"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let mut followed = Vec::new();
    // Other changes keep printing lines (backend health): bound the whole wait, not
    // only the gap between lines.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the follower never reported prod/db-3: {followed:?}"));
        followed.push(line.clone());
        if line.contains("prod/db-3") {
            break;
        }
    }
    let interrupted = Command::new("kill")
        .args(["-INT", &follow.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = follow.wait_with_output().unwrap();
    reader.join().unwrap();
    followed.extend(lines.try_iter());
    let mut all = followed.join("\n").into_bytes();
    all.extend_from_slice(&out.stderr);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TRACE"),
        "trace logging was on, so the scan covers the logs"
    );
    log.push(("output of countersign sync --follow".into(), all));

    let token_entry = format!("{}/backend-token:prod", env.keyring_entry());
    assert_eq!(
        keyring_lookup(&token_entry).as_deref(),
        Some(SECRET_TOKEN),
        "the token is in the keyring"
    );
    let pem = keyring_lookup(&env.keyring_entry()).expect("the signing key is in the keyring");
    let seed = ed25519_seed(&pem);

    let mut all = Vec::new();
    files(env.dir.path(), &mut all);
    assert!(all.iter().any(|p| p.ends_with("config.toml")));
    assert!(all.iter().any(|p| p.ends_with("countersign.db")));
    assert!(all.iter().any(|p| p.ends_with("audit.csv")));
    scan(&all, &log, "the backend token", SECRET_TOKEN.as_bytes());
    scan(&all, &log, "the private key (PEM)", pem.as_bytes());
    for line in pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
    {
        scan(&all, &log, "a line of the private key", line.as_bytes());
    }
    scan(&all, &log, "the private key's seed", &seed);
    // The scan itself finds what it looks for (so a pass means something).
    let planted = env.dir.path().join("planted");
    std::fs::write(&planted, format!("x{}y", base64(&seed[1..]))).unwrap();
    let caught =
        std::panic::catch_unwind(|| scan(std::slice::from_ref(&planted), &[], "seed", &seed));
    assert!(caught.is_err(), "the scan finds a base64-encoded seed");
    drop(server.0.kill());
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
