//! `countersign-bench`: generates large stores and measures Countersign beside a
//! reference measured in the same run (bench/README.md).

mod audit;
mod footprint;
mod generate;
mod history;
mod ingest;
mod latency;
mod proc;
mod servers;
mod table;
mod words;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "countersign-bench",
    about = "Countersign store generator and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a history (actions, timeline events, signed decisions, audit chain) into a
    /// new Countersign store file.
    Generate {
        /// The store file to create (e.g. DATA_DIR/countersign.db); must hold no actions.
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        actions: u64,
        #[arg(long, default_value_t = 5)]
        events_per_action: u32,
        #[arg(long, default_value_t = 5)]
        backends: u32,
        /// Percent of the closed actions decided here (each: a signed decision and two
        /// audit entries).
        #[arg(long, default_value_t = 50)]
        decided_percent: u32,
        /// How many of the newest actions stay pending (the inbox).
        #[arg(long, default_value_t = 1_000)]
        pending: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Actions per transaction.
        #[arg(long, default_value_t = 5_000)]
        batch: usize,
    },
    /// Benchmark 2: inbox, history filters and full-text search on a generated store.
    History {
        #[arg(long)]
        db: PathBuf,
        /// Timed runs of each query (after two warm-up runs).
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Per-query figures on stderr.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Benchmark 3: `countersign export` against sqlite3's CSV export, and `verify`.
    Audit {
        #[arg(long)]
        db: PathBuf,
        /// The `countersign` binary to measure.
        #[arg(long)]
        cli: PathBuf,
        #[arg(long, default_value = "sqlite3")]
        sqlite3: String,
        /// Where the CSV files go (deleted afterwards).
        #[arg(long)]
        work: PathBuf,
        /// Runs of each export; the median counts.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Benchmark 4: `countersign sync` of N pending actions from K reference servers.
    Ingest {
        /// The `countersign-server` binary.
        #[arg(long)]
        server: PathBuf,
        /// The `countersign` binary to measure.
        #[arg(long)]
        cli: PathBuf,
        #[arg(long, default_value = "curl")]
        curl: String,
        /// Server state, config and stores go here.
        #[arg(long)]
        work: PathBuf,
        #[arg(long, default_value_t = 5)]
        servers: usize,
        #[arg(long, default_value_t = 10_000)]
        actions: u64,
        /// Syncs into fresh stores; the median counts.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Benchmark 1: event → notification latency (`countersign notify`) against `curl -N`
    /// on the same SSE stream. Needs a session bus (scripts/with-keyring.sh).
    Latency {
        #[arg(long)]
        server: PathBuf,
        #[arg(long)]
        cli: PathBuf,
        #[arg(long, default_value = "curl")]
        curl: String,
        #[arg(long)]
        work: PathBuf,
        #[arg(long, default_value_t = 100)]
        probes: usize,
    },
    /// Benchmark 5: idle RSS and cold start of `countersign-app` against a bare Tauri v2
    /// window (bench/hello), under Xvfb through tauri-driver. Needs a session bus
    /// (scripts/with-keyring.sh).
    Footprint {
        /// The `countersign-app` binary to measure.
        #[arg(long)]
        app: PathBuf,
        /// The reference: bench/hello's `countersign-bench-hello`, same profile.
        #[arg(long)]
        hello: PathBuf,
        /// Temporary HOME/XDG directories and logs.
        #[arg(long)]
        work: PathBuf,
        /// Cold starts of each (after one untimed warm-up start of each).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Seconds to wait after the first paint before reading memory.
        #[arg(long, default_value_t = 5)]
        idle_secs: u64,
        /// Use this X display instead of starting a private Xvfb.
        #[arg(long)]
        display: Option<String>,
        /// Keep each launch's directory and driver.log (the binary's output; RUST_LOG
        /// is passed through).
        #[arg(long)]
        keep: bool,
    },
}

fn print_rows(rows: &[table::Row]) {
    for r in rows {
        println!("{}", r.markdown());
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate {
            db,
            actions,
            events_per_action,
            backends,
            decided_percent,
            pending,
            seed,
            batch,
        } => {
            let opts = generate::GenOptions {
                actions,
                events_per_action,
                backends,
                decided_percent: decided_percent.min(100),
                pending: pending.min(actions),
                seed,
                batch: batch.max(1),
                ..generate::GenOptions::default()
            };
            generate::generate(&db, &opts).map(|r| {
                eprintln!(
                    "generate: the writer waited {:.1} s of {:.1} s for rows",
                    r.waited_for_rows, r.seconds
                );
                println!(
                    "generated {} actions ({} pending), {} timeline events, {} decisions, {} audit entries in {:.1} s into {}",
                    r.actions,
                    r.pending,
                    r.events,
                    r.decisions,
                    r.audit_entries,
                    r.seconds,
                    db.display()
                );
            })
            .map_err(|e| e.to_string())
        }
        Command::History { db, runs, verbose } => history::run(&db, runs.max(1), verbose)
            .map(|rows| print_rows(&rows))
            .map_err(|e| e.to_string()),
        Command::Audit {
            db,
            cli,
            sqlite3,
            work,
            runs,
        } => audit::run(&db, &cli, &sqlite3, &work, runs)
            .map(|rows| print_rows(&rows))
            .map_err(|e| e.to_string()),
        Command::Ingest {
            server,
            cli,
            curl,
            work,
            servers,
            actions,
            runs,
        } => ingest::run(&ingest::IngestOptions {
            server_bin: &server,
            cli: &cli,
            curl: &curl,
            work: &work,
            servers,
            actions,
            runs,
        })
        .map(|rows| print_rows(&rows))
        .map_err(|e| e.to_string()),
        Command::Latency {
            server,
            cli,
            curl,
            work,
            probes,
        } => latency::run(&server, &cli, &curl, &work, probes.max(1))
            .map(|rows| print_rows(&rows))
            .map_err(|e| e.to_string()),
        Command::Footprint {
            app,
            hello,
            work,
            runs,
            idle_secs,
            display,
            keep,
        } => footprint::run(&footprint::FootprintOptions {
            app: &app,
            hello: &hello,
            work: &work,
            runs,
            idle: std::time::Duration::from_secs(idle_secs),
            display,
            keep,
        })
        .map(|rows| print_rows(&rows))
        .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
