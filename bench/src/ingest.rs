//! Benchmark 4: ingest. N pending actions spread over K reference servers
//! (`countersign-server` processes, filled through their HTTP API first); then one
//! `countersign sync` fetches them all into a fresh store. Ours: timeline events (and
//! actions) stored per second of that process's wall time, and its peak memory. The
//! reference: `curl` fetching the same lists from the same servers at once (the bytes
//! on the wire, no parsing or storing), measured in the same run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::proc;
use crate::servers::{self, Server, TOKEN};
use crate::table::{self, Row};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const TOKEN_VAR: &str = "COUNTERSIGN_BENCH_TOKEN";

pub struct IngestOptions<'a> {
    pub server_bin: &'a Path,
    pub cli: &'a Path,
    pub curl: &'a str,
    pub work: &'a Path,
    pub servers: usize,
    pub actions: u64,
    pub runs: usize,
}

pub fn run(o: &IngestOptions<'_>) -> Result<Vec<Row>, BoxError> {
    let k = o.servers.max(1);
    std::fs::create_dir_all(o.work)?;
    let mut list = Vec::new();
    for i in 0..k {
        let state = o.work.join(format!("server-{i}.db"));
        let _ = std::fs::remove_file(&state);
        list.push(Server::start(o.server_bin, &state)?);
    }
    let per = o.actions / k as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let mut fills = tokio::task::JoinSet::new();
        for (i, s) in list.iter().enumerate() {
            let http = http.clone();
            let url = s.url.clone();
            fills.spawn(async move { servers::fill(&http, &url, i as u64 * per, per, 8).await });
        }
        while let Some(done) = fills.join_next().await {
            done??;
        }
        Ok::<(), BoxError>(())
    })?;
    eprintln!(
        "ingest: {} actions created on {k} servers in {:.1} s",
        per * k as u64,
        started.elapsed().as_secs_f64()
    );

    let mut config = String::from("approver = \"bench@countersign\"\n");
    for (i, s) in list.iter().enumerate() {
        config.push_str(&format!(
            "\n[[backend]]\nname = \"ref{i}\"\nkind = \"countersign\"\nurl = \"{}\"\ntoken_env = \"{TOKEN_VAR}\"\n",
            s.url
        ));
    }
    let config_path = o.work.join("ingest-config.toml");
    std::fs::write(&config_path, config)?;

    // The floor: every server's pending list fetched at once, bytes discarded.
    let mut floor = Vec::new();
    for _ in 0..o.runs.max(1) {
        let t = Instant::now();
        let children: Vec<_> = list
            .iter()
            .map(|s| {
                Command::new(o.curl)
                    .args(["-sf", "-o", "/dev/null", "-H"])
                    .arg(format!("Authorization: Bearer {TOKEN}"))
                    .arg(format!("{}/v1/actions?status=pending", s.url))
                    .stdin(Stdio::null())
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        for mut c in children {
            if !c.wait()?.success() {
                return Err("curl failed to fetch a pending list".into());
            }
        }
        floor.push(t.elapsed());
    }
    floor.sort();
    let floor = floor[floor.len() / 2];

    let mut measured = Vec::new();
    let mut stored = (0i64, 0i64);
    for run in 0..o.runs.max(1) {
        let data = o.work.join(format!("ingest-data-{run}"));
        let _ = std::fs::remove_dir_all(&data);
        let m = proc::run(
            Command::new(o.cli)
                .arg("--config")
                .arg(&config_path)
                .arg("--data-dir")
                .arg(&data)
                .arg("sync")
                .env(TOKEN_VAR, TOKEN)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let db = Connection::open_with_flags(
            data.join(countersign_core::store::DB_FILE),
            OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        stored = (
            db.query_row("SELECT count(*) FROM actions", [], |r| r.get(0))?,
            db.query_row("SELECT count(*) FROM timeline_events", [], |r| r.get(0))?,
        );
        drop(db);
        let _ = std::fs::remove_dir_all(&data);
        measured.push(m);
    }
    measured.sort_by_key(|m| m.wall);
    let m = measured[measured.len() / 2];
    let peak = measured.iter().map(|m| m.max_rss_kib).max().unwrap_or(0);
    let (actions, events) = stored;
    if actions as u64 != per * k as u64 {
        return Err(format!(
            "the sync stored {actions} actions, expected {}",
            per * k as u64
        )
        .into());
    }
    let secs = m.wall.as_secs_f64().max(1e-9);
    let events_per_s = events as f64 / secs;
    drop(list);
    Ok(vec![Row {
        name: format!("ingest {actions} pending actions from {k} servers (`countersign sync`)"),
        ours: format!(
            "{events_per_s:.0} events/s ({events} events + {actions} actions in {:.2} s, {:.0} actions/s), peak RSS {} MB",
            secs,
            actions as f64 / secs,
            peak / 1024
        ),
        reference: format!(
            "{:.2} s (curl fetching the {k} lists at once)",
            floor.as_secs_f64()
        ),
        ratio: table::ratio(m.wall, floor.max(Duration::from_micros(1))),
        goal: "≥ 20000 events/s".into(),
        met: Some(events_per_s >= 20_000.0),
    }])
}
