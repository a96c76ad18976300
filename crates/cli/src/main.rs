//! `countersign`: the headless console on the same engine as the desktop window.
//! Every subcommand is a few calls into `countersign_core::Engine`.

mod console;
mod inbox;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::{Args, Parser, Subcommand};
use countersign_core::api::DecisionInput;
use countersign_core::decide::DecideError;
use countersign_core::model::Verdict;
use countersign_core::snapshot::SnapshotHash;
use countersign_core::EngineError;

use console::Console;
use countersign_server::launch::Embedded;

#[derive(Parser)]
#[command(
    name = "countersign",
    version,
    about = "Approve or deny pending actions from every approval backend, headless.",
    long_about = "Approve or deny pending actions from every approval backend, headless.\n\n\
        With no config file, Countersign runs its reference server in-process with a demo \
        scenario (the embedded default), so `countersign inbox` shows live requests at once."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct Global {
    /// Config file [default: $XDG_CONFIG_HOME/countersign/config.toml]
    #[arg(long, global = true, env = "COUNTERSIGN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory holding countersign.db [default: $XDG_DATA_HOME/countersign]
    #[arg(long, global = true, env = "COUNTERSIGN_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Pending actions from every backend, soonest expiry first.
    List {
        /// Only this backend.
        #[arg(long)]
        backend: Option<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// One action: every field, its reviews, decisions and whole timeline.
    Show {
        /// `backend/id`, or an id only one backend has.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve an action (re-checked with its backend first).
    Approve(DecideArgs),
    /// Deny an action (a reason is required).
    Deny(DecideArgs),
    /// Every action ever seen, newest first, from the local cache (works offline).
    History {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Fetch from every backend once and deliver queued decisions; --follow keeps going.
    Sync {
        /// Keep syncing (subscribe or poll) until interrupted.
        #[arg(long)]
        follow: bool,
    },
    /// Each backend's health and last error.
    Backends {
        #[arg(long)]
        json: bool,
    },
    /// Live inbox: refreshes as requests arrive; decide from its prompt.
    Inbox,
}

#[derive(Args)]
struct DecideArgs {
    /// `backend/id`, or an id only one backend has.
    id: String,
    /// Why (required to deny; recorded and sent to the backend).
    #[arg(long, short)]
    reason: Option<String>,
    /// The snapshot hash you reviewed (as printed by `show`); by default the one in the
    /// local cache. The decision is refused if the action changed since.
    #[arg(long, value_name = "HASH")]
    seen: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COUNTERSIGN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("countersign: {e}");
            if let console::CliError::Engine(EngineError::Decide(DecideError::Changed {
                changes,
                current,
                ..
            })) = &e
            {
                for c in changes {
                    eprintln!("  {}: {} -> {}", c.field, c.before, c.after);
                }
                eprintln!(
                    "  review it again (`countersign show {}`), then decide with --seen {}",
                    current.key, current.snapshot_hash
                );
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, console::CliError> {
    let g = &cli.global;
    match cli.command {
        Command::List { backend, json } => {
            let console = Console::open(g, Embedded::Off).await?;
            let actions = console.engine.pending(backend.as_deref())?;
            if json {
                render::json(&actions)?;
            } else {
                print!("{}", render::action_table(&actions, Utc::now()));
            }
        }
        Command::Show { id, json } => {
            let console = Console::open(g, Embedded::Off).await?;
            let key = console.engine.resolve(&id)?;
            let detail = console.engine.detail(&key)?;
            if json {
                render::json(&detail)?;
            } else {
                print!("{}", render::detail(&detail, Utc::now()));
            }
        }
        Command::Approve(args) => decide(g, args, Verdict::Approve).await?,
        Command::Deny(args) => decide(g, args, Verdict::Deny).await?,
        Command::History { limit, json } => {
            let console = Console::open(g, Embedded::Off).await?;
            let actions = console.engine.history(limit)?;
            if json {
                render::json(&actions)?;
            } else {
                print!("{}", render::history_table(&actions, Utc::now()));
            }
        }
        Command::Sync { follow } => {
            let mode = if follow {
                Embedded::Demo
            } else {
                Embedded::Serve
            };
            let console = Console::open(g, mode).await?;
            if follow {
                inbox::follow(&console).await?;
            } else {
                let reports = console.engine.sync_once(Utc::now()).await;
                let failed = reports.iter().any(|r| r.error.is_some());
                print!("{}", render::sync_reports(&reports));
                console.close().await;
                if failed {
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Backends { json } => {
            let console = Console::open(g, Embedded::Off).await?;
            let statuses = console.engine.backends()?;
            if json {
                render::json(&statuses)?;
            } else {
                print!("{}", render::backends(&statuses, Utc::now()));
            }
        }
        Command::Inbox => {
            let console = Console::open(g, Embedded::Demo).await?;
            inbox::run(&console).await?;
            console.close().await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn decide(g: &Global, args: DecideArgs, verdict: Verdict) -> Result<(), console::CliError> {
    let console = Console::open(g, Embedded::Serve).await?;
    let key = console.engine.resolve(&args.id)?;
    let cached = console.engine.detail(&key)?.action.snapshot_hash;
    let seen = match args.seen {
        // `show` prints the whole hash; a prefix of the cached one is accepted too.
        Some(hash) if hash.len() >= 8 && cached.as_str().starts_with(&hash) => cached,
        Some(hash) => SnapshotHash(hash),
        None => cached,
    };
    let report = console
        .engine
        .decide(
            DecisionInput {
                action: key,
                verdict,
                reason: args.reason.unwrap_or_default(),
                seen_snapshot_hash: seen,
            },
            Utc::now(),
        )
        .await;
    console.close().await;
    println!("{}", render::decision_report(&report?));
    Ok(())
}
