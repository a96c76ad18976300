//! Power loss: the `countersign` CLI is killed with SIGKILL at random points while it
//! syncs and while it decides (re-fetch, sign, commit, deliver), 200 times, against a
//! reference server that accepts only decisions signed by this CLI's key. Afterwards:
//! the database opens and passes `PRAGMA integrity_check`, `countersign verify` walks the
//! audit chain, and after one clean sync every decision recorded locally has been
//! delivered, exactly once, under its own idempotency key — as the server's own state
//! file tells — and the server holds no decision the client did not record.
//!
//! The kill point is a random delay after spawning, drawn from up to 1.2× the duration
//! of a clean run of the same command (measured first), so kills land throughout.
//! That delay only chooses where the fault hits; no assertion depends on timing.
//! Set POWER_LOSS_SEED to replay a run (the seed is printed).
//!
//! Runs inside `bash scripts/with-keyring.sh` (the signing key is in the keyring).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use common::*;
use countersign_core::signer::NAMESPACE;

const APPROVER: &str = "ana@example.com";
const KILLS: usize = 200;
const ACTIONS: usize = 150;

/// xorshift64*: enough randomness to place faults, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Local decisions: external id → (idempotency key, verdict, delivery state).
fn local_decisions(db: &Path) -> BTreeMap<String, Vec<(String, String, String)>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT a.external_id, d.idempotency_key, d.verdict, d.delivery_state \
             FROM decisions d JOIN actions a ON a.id = d.action_id",
        )
        .unwrap();
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (r.get(1)?, r.get(2)?, r.get::<_, String>(3)?),
            ))
        })
        .unwrap();
    for row in rows {
        let (id, d) = row.unwrap();
        out.entry(id).or_default().push(d);
    }
    out
}

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Runs a command to the end and returns how long it took.
fn timed(env: &CliEnv, args: &[&str]) -> Duration {
    let started = Instant::now();
    let out = env.run(args);
    assert!(
        out.status.success(),
        "countersign {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

/// Where the loopback proxy stops a decision delivery, to kill the CLI right there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    /// Forward everything (the kill comes at a random time instead).
    Pass,
    /// The decision request reaches the proxy and goes no further (committed, unsent).
    Request,
    /// The server accepted the decision; its answer never reaches the client (sent,
    /// not known to be sent: the next run must not deliver it again).
    Answer,
}

/// A proxy between the CLI and the server that reports (and freezes) a delivery at the
/// point `hold` names: the test awaits that report and kills the CLI then.
async fn start_proxy(
    upstream: std::net::SocketAddr,
    hold: Arc<Mutex<Hold>>,
    hits: mpsc::UnboundedSender<Hold>,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (hold, hits) = (hold.clone(), hits.clone());
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                // Set when a decision was forwarded under Hold::Answer: swallow its answer.
                let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let (a, h, hi) = (armed.clone(), hold.clone(), hits.clone());
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let chunk = &buf[..n];
                        let decision = chunk.starts_with(b"POST ")
                            && chunk.windows(9).any(|w| w == b"/decision");
                        if decision {
                            let mode = *h.lock().unwrap();
                            match mode {
                                Hold::Request => {
                                    let _ = hi.send(Hold::Request);
                                    std::future::pending::<()>().await;
                                }
                                Hold::Answer => a.store(true, Ordering::SeqCst),
                                Hold::Pass => {}
                            }
                        }
                        if sw.write_all(chunk).await.is_err() {
                            break;
                        }
                    }
                });
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if armed.load(Ordering::SeqCst) {
                        let _ = hits.send(Hold::Answer);
                        std::future::pending::<()>().await;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_sync_and_delivery_loses_no_decision_and_delivers_none_twice() {
    let seed = std::env::var("POWER_LOSS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("POWER_LOSS_SEED={seed}");
    let mut rng = Rng(seed);

    let env = CliEnv::new();
    env.write_config(&format!("approver = \"{APPROVER}\"\n"));
    // The key is made on first use; the server accepts only its signatures.
    let shown = env.ok(&["key", "show"]);
    let public = shown
        .lines()
        .find_map(|l| l.strip_prefix("public key"))
        .expect("public key line")
        .trim()
        .to_owned();
    let signers = env.dir.path().join("allowed_signers");
    std::fs::write(
        &signers,
        format!("{APPROVER} namespaces=\"{NAMESPACE}\" {public}\n"),
    )
    .unwrap();
    let server_dir = tempfile::tempdir().unwrap();
    let server_db = server_dir.path().join("server.db");
    let server = ServerProcess::start_with(
        &server_db,
        "127.0.0.1:0",
        &["--allowed-signers".as_ref(), signers.as_os_str()],
    );
    let hold = Arc::new(Mutex::new(Hold::Pass));
    let (hits_tx, mut hits) = mpsc::unbounded_channel();
    let proxy = start_proxy(server.addr, hold.clone(), hits_tx).await;
    env.write_config(&format!(
        "approver = \"{APPROVER}\"\n[[backend]]\nname = \"prod\"\nkind = \"countersign\"\nurl = \"http://{proxy}\"\ntoken_env = \"PROD_TOKEN\"\n"
    ));
    let producer = Producer::new(&server.url());
    for i in 0..ACTIONS {
        producer
            .create(&new_action(&format!("a{i}"), &format!("request {i}")))
            .await;
    }
    let db = env.data().join("countersign.db");

    // Clean runs give each command's length, the range the kill point is drawn from.
    let sync_len = timed(&env, &["sync"]);
    let decide_len = timed(&env, &["approve", "prod/a0", "--reason", "clean run"]);

    let mut undecided: Vec<usize> = (1..ACTIONS).collect();
    let mut completed = 0;
    let mut held: BTreeMap<String, usize> = BTreeMap::new();
    let started = Instant::now();
    for round in 0..KILLS {
        let decide = !undecided.is_empty() && rng.below(3) != 0;
        let (args, len): (Vec<String>, Duration) = if decide {
            let i = undecided.swap_remove(rng.below(undecided.len() as u64) as usize);
            let verdict = if rng.below(2) == 0 { "approve" } else { "deny" };
            (
                vec![
                    verdict.into(),
                    format!("prod/a{i}"),
                    "--reason".into(),
                    format!("round {round}"),
                ],
                decide_len,
            )
        } else {
            (vec!["sync".into()], sync_len)
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // A third of the runs freeze at a delivery point and are killed there (sync runs
        // deliver what earlier kills left queued); the rest die at a random time.
        let mode = match rng.below(3) {
            0 => Hold::Request,
            1 => Hold::Answer,
            _ => Hold::Pass,
        };
        let mode = if rng.below(2) == 0 { mode } else { Hold::Pass };
        *hold.lock().unwrap() = mode;
        let mut cmd = env.cmd(&args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = tokio::process::Command::from(cmd).spawn().unwrap();
        let u = rng.below(1000) as f64 / 1000.0;
        let at = len.mul_f64(1.2 * u);
        let random_time = async {
            if mode == Hold::Pass {
                // The fault injection point (see the module comment); not a wait for anything.
                tokio::time::sleep(at).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            hit = hits.recv() => {
                *held.entry(format!("{:?}", hit.unwrap())).or_insert(0) += 1;
            }
            _ = random_time => {}
            _ = child.wait() => completed += 1,
        }
        child.kill().await.ok(); // SIGKILL (no-op when it already ended)
        child.wait().await.unwrap();
        // A hit that raced with the process ending still counts for this round only.
        while hits.try_recv().is_ok() {}
        if round % 20 == 19 {
            assert_eq!(integrity(&db), "ok", "round {round}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(110),
            "the loop is bounded: {round} rounds took {:?}",
            started.elapsed()
        );
    }
    eprintln!(
        "{KILLS} rounds in {:?}; {completed} finished before their kill; killed at a delivery point: {held:?}",
        started.elapsed()
    );
    for point in ["Request", "Answer"] {
        assert!(
            held.get(point).copied().unwrap_or(0) > 0,
            "no run was killed at {point}: {held:?}"
        );
    }

    // After the last kill: the file is sound and the chain verifies.
    assert_eq!(integrity(&db), "ok");
    let verified = env.ok(&["verify"]);
    assert!(verified.contains("verified"), "{verified}");

    let before = local_decisions(&db);
    let queued = before
        .values()
        .flatten()
        .filter(|(_, _, state)| state == "queued")
        .count();
    eprintln!(
        "{} decisions recorded, {queued} left queued by a kill",
        before.len()
    );

    // One clean run delivers whatever the kills left in the outbox. The proxy stops
    // holding deliveries first: the last round may have armed it (a held request
    // would time out and leave its decision queued, which is not what is checked).
    *hold.lock().unwrap() = Hold::Pass;
    env.ok(&["sync"]);
    let local = local_decisions(&db);
    let verified = env.ok(&["verify"]);
    assert!(verified.contains("verified"), "{verified}");
    assert!(
        local.len() > 10,
        "the kills left decisions to check: {}",
        local.len()
    );

    // The server's view: every accepted decision with its idempotency key.
    let conn = rusqlite::Connection::open(&server_db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT action_id, idempotency_key, verdict, signature IS NOT NULL \
             FROM decisions WHERE answer_status BETWEEN 200 AND 299",
        )
        .unwrap();
    let mut server_side: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for row in stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })
        .unwrap()
    {
        let (id, key, verdict, signed) = row.unwrap();
        assert!(signed, "{id}: accepted unsigned");
        server_side.entry(id).or_default().push((key, verdict));
    }

    for (id, decisions) in &local {
        assert_eq!(
            decisions.len(),
            1,
            "{id}: decided twice locally: {decisions:?}"
        );
        let (key, verdict, state) = &decisions[0];
        assert_eq!(
            state, "delivered",
            "{id}: a recorded decision was not delivered"
        );
        let delivered = server_side.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            delivered,
            &[(key.clone(), verdict.clone())],
            "{id}: the server must hold exactly this decision, once"
        );
    }
    let local_ids: BTreeSet<&String> = local.keys().collect();
    let unknown: Vec<_> = server_side
        .keys()
        .filter(|id| !local_ids.contains(id))
        .collect();
    assert!(
        unknown.is_empty(),
        "the server holds decisions the client never recorded: {unknown:?}"
    );
}
