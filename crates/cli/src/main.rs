//! `countersign`: the headless console on the same engine as the desktop window.
//! Every subcommand is a few calls into `countersign_core::Engine`.

mod backend_admin;
mod console;
mod inbox;
mod notify;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use countersign_core::api::DecisionInput;
use countersign_core::audit::{AllowedSigners, AuditEntry};
use countersign_core::decide::DecideError;
use countersign_core::export;
use countersign_core::model::{ActionStatus, Answer, Verdict};
use countersign_core::snapshot::SnapshotHash;
use countersign_core::store::{AuditQuery, HistoryQuery, StoreError};
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
    /// Answer a step that offers options (Airflow human-in-the-loop): pick one or more
    /// with --option, fill in its fields with --param. Signed like approve and deny.
    Choose(DecideArgs),
    /// Every action ever seen, newest first, from the local cache (works offline).
    History {
        /// Words to find (title, requester, resource, details, timeline, reasons); each
        /// matches as a prefix, all must match.
        #[arg(long, short = 's', value_name = "WORDS")]
        search: Option<String>,
        #[arg(long)]
        backend: Option<String>,
        /// pending, approved, denied, expired, cancelled, executed or failed.
        #[arg(long, value_parser = parse_status)]
        status: Option<ActionStatus>,
        /// Only actions decided here with this verdict: approve, deny or choose.
        #[arg(long, value_parser = parse_verdict)]
        verdict: Option<Verdict>,
        #[arg(long)]
        requester: Option<String>,
        /// Requested at or after (RFC 3339 or YYYY-MM-DD).
        #[arg(long, value_parser = parse_time)]
        from: Option<DateTime<Utc>>,
        /// Requested before (RFC 3339 or YYYY-MM-DD).
        #[arg(long, value_parser = parse_time)]
        to: Option<DateTime<Utc>>,
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
    /// Configure backends: add, test, remove, set-token (kept in the OS keyring).
    Backend {
        #[command(subcommand)]
        command: backend_admin::BackendCommand,
    },
    /// Live inbox: refreshes as requests arrive; decide from its prompt.
    Inbox,
    /// Sync and raise native notifications (answerable) until Ctrl-C; no window needed.
    Notify,
    /// The decision signing key (kept only in the OS keyring).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Write the audit chain as CSV (docs/audit-csv.md), verifiable with ssh-keygen.
    Export {
        /// Entries at or after this time (RFC 3339, or YYYY-MM-DD).
        #[arg(long, value_parser = parse_time)]
        from: Option<DateTime<Utc>>,
        /// Entries before this time (RFC 3339, or YYYY-MM-DD).
        #[arg(long, value_parser = parse_time)]
        to: Option<DateTime<Utc>>,
        /// Only entries about this backend's actions.
        #[arg(long)]
        backend: Option<String>,
        /// Write here instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Re-walk the audit chain and every signature: the database, or an exported CSV.
    Verify {
        /// An exported audit CSV; without it, the local database is checked.
        csv: Option<PathBuf>,
        /// OpenSSH allowed_signers file: every decision must be signed by a key it
        /// allows for the decision's approver.
        #[arg(long, value_name = "FILE")]
        allowed_signers: Option<PathBuf>,
        /// The CSV is a filtered export (--from/--to/--backend): check each row and the
        /// links between neighbours instead of requiring the whole chain.
        #[arg(long)]
        excerpt: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print the public key, its fingerprint and an allowed_signers line.
    Show,
    /// Make a new key; the rotation is recorded in the audit chain.
    Rotate,
}

fn parse_status(s: &str) -> Result<ActionStatus, String> {
    ActionStatus::parse(s).ok_or_else(|| {
        format!("`{s}` is not a status (pending, approved, denied, expired, cancelled, executed, failed)")
    })
}

fn parse_verdict(s: &str) -> Result<Verdict, String> {
    Verdict::parse(s).ok_or_else(|| format!("`{s}` is not a verdict (approve, deny, choose)"))
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        .map_err(|_| format!("`{s}` is neither RFC 3339 nor YYYY-MM-DD"))
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
    /// An option to choose (repeat for steps that take several); `choose` only.
    #[arg(long = "option", value_name = "OPTION")]
    options: Vec<String>,
    /// A field of the action's form, typed as the form says (`replicas=3`,
    /// `dry_run=true`); fields left out take the form's defaults.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
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
        Command::Choose(args) => decide(g, args, Verdict::Choose).await?,
        Command::History {
            search,
            backend,
            status,
            verdict,
            requester,
            from,
            to,
            limit,
            json,
        } => {
            let console = Console::open(g, Embedded::Off).await?;
            let query = HistoryQuery {
                text: search,
                backend,
                status,
                verdict,
                requester,
                from,
                to,
                limit: Some(limit),
                after: None,
            };
            let actions = console.engine.history_page(&query)?.actions;
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
        Command::Backend { command } => return backend_admin::run(g, command).await,
        Command::Key { command } => {
            let console = Console::open(g, Embedded::Off).await?;
            let info = match command {
                KeyCommand::Show => console.engine.key_info()?,
                KeyCommand::Rotate => {
                    let info = console.engine.rotate_key(Utc::now())?;
                    println!("New signing key; the rotation is in the audit chain.");
                    info
                }
            };
            println!("public key      {}", info.public_key);
            println!("fingerprint     {}", info.fingerprint);
            println!("allowed_signers {}", info.allowed_signers);
        }
        Command::Export {
            from,
            to,
            backend,
            output,
        } => {
            let console = Console::open(g, Embedded::Off).await?;
            // The rows stream from the store to the CSV: memory stays flat whatever the
            // chain's length. The first page is read before the file is made, so a
            // store that cannot be read leaves no file behind.
            let mut rows = console
                .engine
                .audit_rows(&AuditQuery { from, to, backend })
                .peekable();
            if let Some(Err(_)) = rows.peek() {
                if let Some(Err(e)) = rows.next() {
                    return Err(EngineError::from(e).into());
                }
            }
            match output {
                Some(path) => {
                    // Appears whole or not at all (written beside, renamed into place).
                    let written =
                        export::write_file_whole(&path, console::CliError::from, |out| {
                            write_audit_csv(rows, out)
                        })?;
                    eprintln!("{written} entries written to {}", path.display());
                }
                None => {
                    write_audit_csv(rows, std::io::stdout().lock())?;
                }
            }
        }
        Command::Verify {
            csv,
            allowed_signers,
            excerpt,
        } => return verify(g, csv, allowed_signers, excerpt).await,
        Command::Notify => notify::run(g).await?,
        Command::Inbox => {
            let console = Console::open(g, Embedded::Demo).await?;
            inbox::run(&console).await?;
            console.close().await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(
    g: &Global,
    csv: Option<PathBuf>,
    allowed_signers: Option<PathBuf>,
    excerpt: bool,
) -> Result<ExitCode, console::CliError> {
    let allowed = match &allowed_signers {
        Some(path) => {
            let text = std::fs::read_to_string(path)?;
            Some(AllowedSigners::parse(&text).map_err(|e| {
                std::io::Error::other(format!("allowed signers {}: {e}", path.display()))
            })?)
        }
        None => None,
    };
    // Both stream: the CSV is verified row by row as it is read, the database page by
    // page, so memory stays flat whatever the chain's length.
    let (what, result) = match &csv {
        Some(path) => {
            let file = std::fs::File::open(path)?;
            let result =
                export::verify_csv(std::io::BufReader::new(file), allowed.as_ref(), excerpt)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
            (path.display().to_string(), result)
        }
        None => {
            let console = Console::open(g, Embedded::Off).await?;
            let result = match console.engine.verify(allowed.as_ref()) {
                Ok(report) => Ok(report),
                Err(EngineError::Chain(broken)) => Err(broken),
                Err(e) => return Err(e.into()),
            };
            ("the local audit chain".to_owned(), result)
        }
    };
    match result {
        Ok(report) => {
            println!(
                "OK: {what}: {} entries, {} signatures verified, head {}",
                report.entries, report.signatures, report.head_hash
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("countersign: {what}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Writes the audit rows as CSV as they are read; returns how many were written.
fn write_audit_csv(
    rows: impl Iterator<Item = Result<AuditEntry, StoreError>>,
    out: impl std::io::Write,
) -> Result<u64, console::CliError> {
    let csv_err = |e: export::CsvError| std::io::Error::other(e.to_string());
    let mut csv = export::CsvWriter::new(out).map_err(csv_err)?;
    for entry in rows {
        csv.write(&entry.map_err(EngineError::from)?)
            .map_err(csv_err)?;
    }
    let written = csv.rows();
    csv.finish().map_err(csv_err)?;
    Ok(written)
}

/// `--option` and `--param name=value` as an answer, each value read as the cached
/// form's field type says (the engine checks the whole answer again on the current form).
fn answer_from_args(
    action: &countersign_core::model::PendingAction,
    options: &[String],
    params: &[String],
) -> Result<Option<Answer>, console::CliError> {
    if options.is_empty() && params.is_empty() {
        return Ok(None);
    }
    let form = action.snapshot.form.as_ref();
    let mut answer = Answer {
        options: options.to_vec(),
        ..Answer::default()
    };
    for param in params {
        let (name, raw) = param.split_once('=').ok_or_else(|| {
            console::CliError::Message(format!("--param `{param}`: expected NAME=VALUE"))
        })?;
        let value = countersign_core::form::parse_param(form, name.trim(), raw)
            .map_err(|e| console::CliError::Message(format!("--param {}: {e}", name.trim())))?;
        answer.params.insert(name.trim().to_owned(), value);
    }
    Ok(Some(answer))
}

async fn decide(g: &Global, args: DecideArgs, verdict: Verdict) -> Result<(), console::CliError> {
    let console = Console::open(g, Embedded::Serve).await?;
    let key = console.engine.resolve(&args.id)?;
    let cached_action = console.engine.detail(&key)?.action;
    let answer = answer_from_args(&cached_action, &args.options, &args.params)?;
    let cached = cached_action.snapshot_hash;
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
                answer,
            },
            Utc::now(),
        )
        .await;
    console.close().await;
    println!("{}", render::decision_report(&report?));
    Ok(())
}
