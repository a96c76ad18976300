//! `countersign-bench`: generates large stores and measures Countersign beside a
//! reference measured in the same run (bench/README.md).

mod generate;
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
    },
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
        } => {
            let opts = generate::GenOptions {
                actions,
                events_per_action,
                backends,
                decided_percent: decided_percent.min(100),
                pending: pending.min(actions),
                seed,
                ..generate::GenOptions::default()
            };
            generate::generate(&db, &opts).map(|r| {
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
