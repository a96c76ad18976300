//! `countersign backend add|test|remove|set-token`: configuring backends. The config file
//! is edited in place (comments and layout kept); tokens go only to the OS keyring, read
//! from a no-echo prompt or standard input, never from the command line. The logic is the
//! engine's (`countersign_core::admin`, shared with the window's settings view); this
//! module reads arguments and prints.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use countersign_core::admin::{self, AdminError, BackendInput, OptionPair, TokenMode};
use countersign_core::config::{self, edit};
use countersign_core::secrets::OsTokenStore;
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

/// The engine's refusal in the CLI's words (its flags instead of the form's fields).
fn admin_error(e: AdminError, input: Option<&BackendInput>) -> CliError {
    match (e, input) {
        (AdminError::UnknownBackend { name, path }, _) => fail(format!(
            "no backend named `{name}` in {} (see `countersign backends`; add one with \
             `countersign backend add`)",
            path.display()
        )),
        (AdminError::Invalid(errors), Some(input)) => fail(
            errors
                .iter()
                .map(|e| match e.field.as_str() {
                    "url" if input.url.is_empty() => format!(
                        "backend `{}`: kind `{}` needs --url URL",
                        input.name, input.kind
                    ),
                    "command" if input.command.is_empty() => format!(
                        "backend `{}`: kind `{}` needs --command PROGRAM [ARG]...",
                        input.name, input.kind
                    ),
                    "token_env" => format!(
                        "--token-env `{}` is not an environment variable name",
                        input.token_env.as_deref().unwrap_or_default()
                    ),
                    _ => e.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        (e, _) => fail(e.to_string()),
    }
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
    let (token_mode, token_env) = match (&args.token_env, args.no_token) {
        (Some(var), _) => (TokenMode::Env, Some(var.clone())),
        (None, true) => (TokenMode::None, None),
        (None, false) => (TokenMode::Keyring, None),
    };
    let input = BackendInput {
        name: args.name.clone(),
        kind: args.kind.clone(),
        url: args.url.clone().unwrap_or_default(),
        command: args.command.clone(),
        options: args
            .options
            .iter()
            .map(|(key, value)| OptionPair {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        token_mode,
        token_env: token_env.clone(),
        poll_interval_secs: None,
        timeout_secs: None,
    };
    let path = config_path(g)?;
    let saved = admin::add_backend(&path, &input, None, &OsTokenStore::from_env())
        .map_err(|e| admin_error(e, Some(&input)))?;
    println!(
        "Added backend `{}` ({}) to {}.",
        args.name,
        args.kind,
        path.display()
    );
    if saved.created_config {
        println!("  (a new config file: the embedded demo no longer runs while it exists)");
    }
    match (token_mode, token_env) {
        (TokenMode::Env, Some(var)) => println!(
            "Its token is read from ${var}. Check it with `countersign backend test {}`.",
            args.name
        ),
        (TokenMode::Keyring, _) => println!(
            "Next: store its token with `countersign backend set-token {0}`, then check it \
             with `countersign backend test {0}`.",
            args.name
        ),
        _ => println!("Check it with `countersign backend test {}`.", args.name),
    }
    Ok(ExitCode::SUCCESS)
}

/// `backend test --json`: the engine's report with the sample as ids.
#[derive(Serialize)]
struct TestJson {
    backend: String,
    kind: String,
    ok: bool,
    pending: Option<u32>,
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
    let b = admin::configured(&path, name).map_err(|e| admin_error(e, None))?;
    let report = admin::test_config(&b, &OsTokenStore::from_env()).await;
    if json {
        render::json(&TestJson {
            backend: report.backend.clone(),
            kind: report.kind.clone(),
            ok: report.ok,
            pending: report.pending,
            sample: report.sample.iter().map(|s| s.key.clone()).collect(),
            error: report.error.clone(),
            error_code: report.error_code.clone(),
            partial: report.partial.clone(),
        })?;
    } else if let Some(pending) = report.pending {
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
            pending,
            if pending == 1 { "" } else { "s" }
        );
        for a in &report.sample {
            println!("  {}  {}", render::line(&a.key), render::line(&a.title));
        }
        if pending > 10 {
            println!("  … and {} more", pending - 10);
        }
        if let Some(partial) = &report.partial {
            eprintln!(
                "countersign: backend `{}` listed only in part: {}",
                b.name,
                render::line(partial)
            );
        }
    } else if let (Some(message), Some(code)) = (&report.error, &report.error_code) {
        // Config and build errors already name the backend.
        let prefix = format!("backend `{}`", b.name);
        let message = if message.starts_with(&prefix) {
            message.clone()
        } else {
            format!("{prefix}: {message}")
        };
        eprintln!("countersign: {} [{code}]", render::line(&message));
    } else {
        println!("OK: backend `{}` answered (not modified).", b.name);
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn remove(g: &Global, name: &str) -> Result<ExitCode, CliError> {
    let path = config_path(g)?;
    let removed =
        admin::remove_backend(&path, name, &OsTokenStore::from_env()).map_err(|e| match e {
            AdminError::Keyring { source, .. } => fail(format!(
                "removed `{name}` from the config, but its token could not be deleted from \
                 the OS keyring: {source}"
            )),
            e => admin_error(e, None),
        })?;
    println!("Removed backend `{name}` from {}.", path.display());
    if removed.token_deleted {
        println!("Deleted its token from the OS keyring.");
    }
    println!(
        "Its actions stay in the local history (`countersign history`); it is no longer synced."
    );
    Ok(ExitCode::SUCCESS)
}

fn set_token(g: &Global, name: &str) -> Result<ExitCode, CliError> {
    let path = config_path(g)?;
    admin::configured(&path, name).map_err(|e| admin_error(e, None))?;
    // Refuse before asking for the token when the backend reads it from elsewhere.
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    edit::use_keyring_token(&path, &text, name).map_err(|e| fail(e.to_string()))?;
    let token = read_token(name)?;
    let set = admin::set_token(&path, name, &token, &OsTokenStore::from_env())
        .map_err(|e| admin_error(e, None))?;
    if set.marker_added {
        println!(
            "Backend `{name}` now reads its token from the OS keyring (token_keyring = true)."
        );
    }
    println!(
        "Stored the token for backend `{name}` in the OS keyring (service `{}`, entry `{}`).",
        countersign_core::signer::KEYRING_SERVICE,
        set.entry
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
