//! `countersign-server`: the reference server of the Countersign open protocol v1.
//!
//! Prints `listening on http://ADDR` as its first stdout line, logs to stderr, and shuts
//! down gracefully on SIGINT/SIGTERM. The bearer token comes from
//! `COUNTERSIGN_SERVER_TOKEN`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use countersign_server::{bind, start, ScenarioConfig, ServerConfig};

const TOKEN_ENV: &str = "COUNTERSIGN_SERVER_TOKEN";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Realistic requests (database sessions, deployments, agent tool calls, shell
    /// commands, Terraform applies) with advancing timelines.
    Demo,
}

/// Reference server of the Countersign open protocol v1.
#[derive(Debug, Parser)]
#[command(name = "countersign-server", version, about)]
struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8787")]
    addr: String,
    /// SQLite state file (created when missing).
    #[arg(long, default_value = "./countersign-server.db")]
    state: PathBuf,
    /// Generate requests.
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,
    /// New requests per minute for --scenario: `N`, `N/min`, `N/h` or `N/s`.
    #[arg(long, default_value = "2/min", value_parser = parse_rate, requires = "scenario")]
    rate: f64,
    /// Requests created at start by --scenario.
    #[arg(long, default_value_t = 3, requires = "scenario")]
    initial: usize,
    /// Seed for a reproducible --scenario.
    #[arg(long, requires = "scenario")]
    seed: Option<u64>,
    /// Seconds between `: keepalive` comments on event streams.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    keepalive_secs: u64,
    /// OpenSSH allowed_signers file: accept only decisions signed (SSHSIG, namespace
    /// countersign-decision) by a key it allows for the decision's approver.
    #[arg(long, value_name = "FILE")]
    allowed_signers: Option<std::path::PathBuf>,
}

/// Parses `N`, `N/min`, `N/h`, `N/s` into requests per minute.
fn parse_rate(s: &str) -> Result<f64, String> {
    let (number, per_min) = match s.split_once('/') {
        None => (s, 1.0),
        Some((n, "min" | "m")) => (n, 1.0),
        Some((n, "h" | "hour")) => (n, 1.0 / 60.0),
        Some((n, "s" | "sec")) => (n, 60.0),
        Some((_, unit)) => return Err(format!("unknown unit {unit:?} (use min, h or s)")),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{number:?} is not a number"))?;
    if !n.is_finite() || n < 0.0 {
        return Err("the rate must be a non-negative number".into());
    }
    Ok(n * per_min)
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("countersign-server: error: {message}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message spans several lines; keep it to one.
            let rendered = e.render().to_string();
            let line = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect::<Vec<_>>()
                .join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("countersign-server: error: {line} (see --help)");
            return ExitCode::from(2);
        }
    };
    let token = match std::env::var(TOKEN_ENV) {
        Ok(t) if !t.is_empty() => t,
        _ => {
            return fail(format!(
                "{TOKEN_ENV} is not set; set it to the bearer token clients must send"
            ))
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(run(cli, token))
}

async fn run(cli: Cli, token: String) -> ExitCode {
    let listener = match bind(&cli.addr).await {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let mut config = ServerConfig::new(cli.state, token);
    config.keepalive = Duration::from_secs(cli.keepalive_secs);
    if let Some(path) = &cli.allowed_signers {
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| countersign_core::audit::AllowedSigners::parse(&text));
        match parsed {
            Ok(allowed) => config.allowed_signers = Some(allowed),
            Err(e) => return fail(format!("allowed signers {}: {e}", path.display())),
        }
    }
    if cli.scenario == Some(Scenario::Demo) {
        config.scenario = Some(ScenarioConfig {
            rate_per_min: cli.rate,
            initial: cli.initial,
            seed: cli.seed,
        });
    }
    let server = match start(listener, config).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // Handlers go in before the address is announced: a supervisor (or a test) may send
    // SIGTERM the moment it reads the line, and that must be a graceful stop.
    let signals = shutdown_signals();
    {
        let mut out = std::io::stdout().lock();
        // A closed stdout (nobody reading) is no reason to stop serving.
        let _ = writeln!(out, "listening on {}", server.url()).and_then(|()| out.flush());
    }
    let handle = server.shutdown_handle();
    tokio::spawn(async move {
        signals.await;
        tracing::info!("shutting down");
        handle.shutdown();
    });
    match server.wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Registers SIGINT and SIGTERM now; the returned future resolves on either.
fn shutdown_signals() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, int) {
                (Some(mut term), Some(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_accept_units() {
        assert_eq!(parse_rate("6"), Ok(6.0));
        assert_eq!(parse_rate("6/min"), Ok(6.0));
        assert_eq!(parse_rate("120/h"), Ok(2.0));
        assert_eq!(parse_rate("1/s"), Ok(60.0));
        assert!(parse_rate("x/min").is_err());
        assert!(parse_rate("3/week").is_err());
        assert!(parse_rate("-1").is_err());
    }

    #[test]
    fn cli_parses_the_documented_flags() {
        let cli = Cli::try_parse_from([
            "countersign-server",
            "--addr",
            "127.0.0.1:0",
            "--state",
            "x.db",
            "--scenario",
            "demo",
            "--rate",
            "4/min",
            "--keepalive-secs",
            "5",
        ])
        .unwrap();
        assert_eq!(cli.scenario, Some(Scenario::Demo));
        assert_eq!(cli.rate, 4.0);
        assert_eq!(cli.keepalive_secs, 5);
        assert!(Cli::try_parse_from(["countersign-server"]).is_ok());
        assert!(Cli::try_parse_from(["countersign-server", "--rate", "4"]).is_err());
        assert!(Cli::try_parse_from(["countersign-server", "--keepalive-secs", "0"]).is_err());
    }
}
