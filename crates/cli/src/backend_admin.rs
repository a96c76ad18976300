//! `countersign backend add|test|remove|set-token`: configuring backends. The config file
//! is edited in place (comments and layout kept); tokens go only to the OS keyring, read
//! from a no-echo prompt or standard input, never from the command line.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use countersign_core::backends::{self, BuildError, Limits, ListOutcome, SyncCursor};
use countersign_core::config::edit::{self, NewBackend, TokenSource};
use countersign_core::config::{self, BackendConfig, Config};
use countersign_core::model::ActionStatus;
use countersign_core::secrets::{OsTokenStore, TokenStore};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::console::CliError;
use crate::{render, Global};

#[derive(Subcommand)]
pub enum BackendCommand {
    /// Add a `[[backend]]` to config.toml (created if missing; comments are kept).
    #[command(after_help = "Examples:\n  \
        countersign backend add countersign prod --url https://approvals.example.com\n  \
        countersign backend add hoop hoop --url https://hoop.example.com \
          --option reviewer_email=ana@example.com\n  \
        countersign backend add exec teleport --no-token --command ./countersign-teleport --tsh tsh\n\n\
        Each kind's settings: docs/backends.md. The token is stored afterwards with \
        `countersign backend set-token NAME` (or read from $VAR with --token-env VAR).")]
    Add(AddArgs),
    /// Connect, authenticate and list once; report what was found (exit 1 on failure).
    Test {
        name: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Remove a backend from config.toml and delete its token from the OS keyring. Its
    /// actions stay in the local history.
    Remove { name: String },
    /// Store a backend's token in the OS keyring, read from a no-echo prompt or, when
    /// standard input is not a terminal, from standard input (never from the command line).
    SetToken {
        name: String,
        /// Refused: a token on the command line ends up in shell history and `ps`.
        #[arg(hide = true)]
        token_on_argv: Option<String>,
    },
}

#[derive(Args)]
pub struct AddArgs {
    /// Kind of backend: countersign, hoop, exec, … (docs/backends.md).
    kind: String,
    /// Short unique name (letters, digits, - and _); part of every action id.
    name: String,
    /// Base URL (HTTP kinds).
    #[arg(long)]
    url: Option<String>,
    /// Key-value setting for `[backend.options]` (repeatable).
    #[arg(long = "option", value_name = "KEY=VALUE", value_parser = parse_option)]
    options: Vec<(String, String)>,
    /// Read the token from this environment variable instead of the OS keyring.
    #[arg(long, value_name = "VAR", conflicts_with = "no_token")]
    token_env: Option<String>,
    /// The backend takes no token (e.g. an exec plugin that needs none).
    #[arg(long)]
    no_token: bool,
    /// Refused: tokens never go on the command line (use `backend set-token`).
    #[arg(long, hide = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Program and arguments of an exec plugin; everything after it belongs to it, so
    /// put it last.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "PROGRAM [ARG]...")]
    command: Vec<String>,
}

fn parse_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

fn fail(message: impl Into<String>) -> CliError {
    CliError::Message(message.into())
}

const NO_TOKEN_ON_ARGV: &str = "tokens are never taken from the command line (shell history, \
    `ps`); run `countersign backend set-token NAME` and type it at the prompt or pipe it in";

fn config_path(g: &Global) -> Result<PathBuf, CliError> {
    match &g.config {
        Some(p) => Ok(p.clone()),
        None => config::default_config_path()
            .ok_or_else(|| fail("no config path: set --config, COUNTERSIGN_CONFIG or HOME")),
    }
}

/// The config file's text, empty when it does not exist yet.
fn read_text(path: &Path) -> Result<Option<String>, CliError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fail(format!("cannot read config {}: {e}", path.display()))),
    }
}

fn configured(path: &Path, name: &str) -> Result<BackendConfig, CliError> {
    let config = Config::load(path)
        .map_err(|e| fail(e.to_string()))?
        .unwrap_or(Config {
            approver: None,
            backends: Vec::new(),
            notifications: Default::default(),
        });
    config
        .backends
        .into_iter()
        .find(|b| b.name == name)
        .ok_or_else(|| {
            fail(format!(
                "no backend named `{name}` in {} (see `countersign backends`; add one with \
                 `countersign backend add`)",
                path.display()
            ))
        })
}

pub async fn run(g: &Global, command: BackendCommand) -> Result<ExitCode, CliError> {
    match command {
        BackendCommand::Add(args) => add(g, args),
        BackendCommand::Test { name, json } => test(g, &name, json).await,
        BackendCommand::Remove { name } => remove(g, &name),
        BackendCommand::SetToken {
            name,
            token_on_argv,
        } => {
            if token_on_argv.is_some() {
                return Err(fail(NO_TOKEN_ON_ARGV));
            }
            set_token(g, &name)
        }
    }
}

fn add(g: &Global, args: AddArgs) -> Result<ExitCode, CliError> {
    if args.token.is_some() {
        return Err(fail(NO_TOKEN_ON_ARGV));
    }
    if !config::valid_backend_name(&args.name) {
        return Err(fail(format!(
            "backend name `{}` must be letters, digits, - or _",
            args.name
        )));
    }
    let token = match (&args.token_env, args.no_token) {
        (Some(var), _) => {
            if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(fail(format!(
                    "--token-env `{var}` is not an environment variable name"
                )));
            }
            TokenSource::Env(var.clone())
        }
        (None, true) => TokenSource::None,
        (None, false) => TokenSource::Keyring,
    };
    let new = NewBackend {
        name: args.name.clone(),
        kind: args.kind.clone(),
        url: args.url.clone().filter(|u| !u.is_empty()),
        command: args.command.clone(),
        options: args.options.clone(),
        token: token.clone(),
    };
    let path = config_path(g)?;
    let existing = read_text(&path)?;
    let (text, config) = edit::add_backend(&path, existing.as_deref().unwrap_or(""), &new)
        .map_err(|e| fail(e.to_string()))?;
    let entry = config
        .backends
        .iter()
        .find(|b| b.name == args.name)
        .ok_or_else(|| fail("the new entry did not parse back"))?;
    // What the engine will do with it, minus the network: unknown kinds, missing URLs and
    // commands, bad options are refused here rather than at the next sync.
    if let Err(e) = backends::build(entry, Some("validation-only".into()), Limits::default()) {
        return Err(fail(match e {
            BuildError::Invalid { detail, .. }
                if entry.url.is_empty() && detail.contains("url") =>
            {
                format!(
                    "backend `{}`: kind `{}` needs --url URL",
                    args.name, args.kind
                )
            }
            BuildError::Invalid { detail, .. }
                if entry.command.is_empty() && detail.contains("command") =>
            {
                format!(
                    "backend `{}`: kind `{}` needs --command PROGRAM [ARG]...",
                    args.name, args.kind
                )
            }
            other => other.to_string(),
        }));
    }
    edit::write(&path, &text).map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    println!(
        "Added backend `{}` ({}) to {}.",
        args.name,
        args.kind,
        path.display()
    );
    if existing.is_none() {
        println!("  (a new config file: the embedded demo no longer runs while it exists)");
    }
    match token {
        TokenSource::Keyring => println!(
            "Next: store its token with `countersign backend set-token {0}`, then check it \
             with `countersign backend test {0}`.",
            args.name
        ),
        TokenSource::Env(var) => println!(
            "Its token is read from ${var}. Check it with `countersign backend test {}`.",
            args.name
        ),
        TokenSource::None => println!("Check it with `countersign backend test {}`.", args.name),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct TestReport {
    backend: String,
    kind: String,
    ok: bool,
    pending: Option<usize>,
    /// Up to ten pending action ids.
    sample: Vec<String>,
    error: Option<String>,
    error_code: Option<String>,
    /// Part of the backend could not be listed (a GitHub repository gone or forbidden):
    /// what was listed is above, this says what was left out.
    partial: Option<String>,
}

async fn test(g: &Global, name: &str, json: bool) -> Result<ExitCode, CliError> {
    let path = config_path(g)?;
    let b = configured(&path, name)?;
    let mut report = TestReport {
        backend: b.name.clone(),
        kind: b.kind.clone(),
        ok: false,
        pending: None,
        sample: Vec::new(),
        error: None,
        error_code: None,
        partial: None,
    };
    let mut limits = Limits::default();
    if let Some(secs) = b.timeout_secs {
        limits.request_timeout = std::time::Duration::from_secs(secs.max(1));
    }
    let outcome = match b.token_from(&OsTokenStore::from_env()) {
        Err(e) => Err((e.to_string(), e.code())),
        Ok(token) => match backends::build(&b, token.map(|t| String::clone(&t)), limits) {
            Err(e) => Err((e.to_string(), "backend_config")),
            Ok(backend) => {
                let listed = backend
                    .list_pending(&SyncCursor::default())
                    .await
                    .map_err(|e| (e.to_string(), e.code()));
                report.partial = backend.take_partial_failure().map(|e| e.to_string());
                listed
            }
        },
    };
    match outcome {
        Ok(ListOutcome::Listed { actions, .. }) => {
            let pending: Vec<_> = actions
                .iter()
                .filter(|a| a.action.snapshot.status == ActionStatus::Pending)
                .collect();
            report.ok = true;
            report.pending = Some(pending.len());
            report.sample = pending
                .iter()
                .take(10)
                .map(|a| a.action.key.to_string())
                .collect();
            if !json {
                let where_ = if b.url.is_empty() {
                    b.command.first().cloned().unwrap_or_default()
                } else {
                    b.url.clone()
                };
                println!(
                    "OK: backend `{}` ({}) at {}: connected, authenticated, {} pending action{}.",
                    b.name,
                    b.kind,
                    render::line(&where_),
                    pending.len(),
                    if pending.len() == 1 { "" } else { "s" }
                );
                for a in pending.iter().take(10) {
                    println!(
                        "  {}  {}",
                        render::line(&a.action.key.to_string()),
                        render::line(&a.action.snapshot.title)
                    );
                }
                if pending.len() > 10 {
                    println!("  … and {} more", pending.len() - 10);
                }
            }
            // Listed, but not all of it: the configuration needs fixing, so it fails.
            if let Some(partial) = &report.partial {
                report.ok = false;
                if !json {
                    eprintln!(
                        "countersign: backend `{}` listed only in part: {}",
                        b.name,
                        render::line(partial)
                    );
                }
            }
        }
        Ok(ListOutcome::NotModified) => {
            // Impossible without an ETag sent; report it rather than guess a count.
            report.ok = true;
            if !json {
                println!("OK: backend `{}` answered (not modified).", b.name);
            }
        }
        Err((message, code)) => {
            report.error = Some(message.clone());
            report.error_code = Some(code.to_owned());
            if !json {
                // Config and build errors already name the backend.
                let prefix = format!("backend `{}`", b.name);
                let message = if message.starts_with(&prefix) {
                    message
                } else {
                    format!("{prefix}: {message}")
                };
                eprintln!("countersign: {} [{code}]", render::line(&message));
            }
        }
    }
    if json {
        render::json(&report)?;
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn remove(g: &Global, name: &str) -> Result<ExitCode, CliError> {
    let path = config_path(g)?;
    let b = configured(&path, name)?;
    let text = read_text(&path)?.unwrap_or_default();
    let out = edit::remove_backend(&path, &text, name).map_err(|e| fail(e.to_string()))?;
    edit::write(&path, &out).map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    println!("Removed backend `{name}` from {}.", path.display());
    let deleted = OsTokenStore::from_env().delete(name);
    match deleted {
        Ok(true) => println!("Deleted its token from the OS keyring."),
        Ok(false) => {}
        // A backend that never kept its token there does not need the keyring.
        Err(_) if !b.token_keyring => {}
        Err(e) => {
            return Err(fail(format!(
                "removed `{name}` from the config, but its token could not be deleted from \
                 the OS keyring: {e}"
            )))
        }
    }
    println!(
        "Its actions stay in the local history (`countersign history`); it is no longer synced."
    );
    Ok(ExitCode::SUCCESS)
}

fn set_token(g: &Global, name: &str) -> Result<ExitCode, CliError> {
    let path = config_path(g)?;
    configured(&path, name)?;
    let text = read_text(&path)?.unwrap_or_default();
    // Refuse before asking for the token when the backend reads it from elsewhere.
    let new_text = edit::use_keyring_token(&path, &text, name).map_err(|e| fail(e.to_string()))?;
    let token = read_token(name)?;
    let store = OsTokenStore::from_env();
    store
        .set(name, token.trim())
        .map_err(|e| fail(format!("backend `{name}`: {e}")))?;
    if let Some(new_text) = new_text {
        edit::write(&path, &new_text)
            .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
        println!(
            "Backend `{name}` now reads its token from the OS keyring (token_keyring = true)."
        );
    }
    println!(
        "Stored the token for backend `{name}` in the OS keyring (service `{}`, entry `{}`).",
        countersign_core::signer::KEYRING_SERVICE,
        store.entry_name(name)
    );
    println!("Check it with `countersign backend test {name}`.");
    Ok(ExitCode::SUCCESS)
}

/// The token from a no-echo prompt, or all of standard input when it is not a terminal.
fn read_token(name: &str) -> Result<Zeroizing<String>, CliError> {
    let stdin = std::io::stdin();
    let raw = if stdin.is_terminal() {
        read_hidden(&format!("Token for backend `{name}` (not echoed): "))?
    } else {
        let mut buf = Zeroizing::new(String::new());
        stdin
            .lock()
            .read_to_string(&mut buf)
            .map_err(|e| fail(format!("cannot read the token from standard input: {e}")))?;
        buf
    };
    let token = raw.trim();
    if token.is_empty() {
        return Err(fail(
            "no token given (empty input); type it at the prompt or pipe it in",
        ));
    }
    if token.chars().any(|c| c.is_control() || c == ' ') {
        return Err(fail(
            "the token must be one line with no spaces or control characters",
        ));
    }
    Ok(Zeroizing::new(token.to_owned()))
}

#[cfg(unix)]
fn read_hidden(prompt: &str) -> Result<Zeroizing<String>, CliError> {
    use std::io::{BufRead, Write};
    use std::os::fd::AsRawFd;

    let stdin = std::io::stdin();
    let fd = stdin.as_raw_fd();
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut term = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: `fd` is standard input, a terminal; tcgetattr fills `term` on success.
    if unsafe { libc::tcgetattr(fd, term.as_mut_ptr()) } != 0 {
        return Err(fail(format!(
            "cannot turn off echo: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: initialised by the successful tcgetattr above.
    let original = unsafe { term.assume_init() };
    let mut hidden = original;
    hidden.c_lflag &= !libc::ECHO;
    hidden.c_lflag |= libc::ECHONL;
    // SAFETY: a valid termios for this terminal.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &hidden) } != 0 {
        return Err(fail(format!(
            "cannot turn off echo: {}",
            std::io::Error::last_os_error()
        )));
    }
    let mut line = Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &original) };
    read.map_err(|e| fail(format!("cannot read the token: {e}")))?;
    Ok(line)
}

#[cfg(not(unix))]
fn read_hidden(_prompt: &str) -> Result<Zeroizing<String>, CliError> {
    Err(fail(
        "no hidden prompt on this platform; pipe the token in on standard input",
    ))
}
