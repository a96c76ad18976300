//! The live inbox (`countersign inbox`) and `sync --follow`: the engine's sync tasks
//! run in the background and the change broadcast drives the screen.

use std::io::IsTerminal;
use std::time::Duration;

use chrono::Utc;
use countersign_core::api::DecisionInput;
use countersign_core::model::{PendingAction, Verdict};
use countersign_core::shutdown;
use countersign_core::sync::Change;
use tokio::io::AsyncBufReadExt;
use tokio::sync::broadcast::error::RecvError;

use crate::console::{CliError, Console};
use crate::render;

const HELP: &str = "a N [reason] approve · d N reason deny · s N show · r refresh · q quit";

/// `sync --follow`: keep every backend in sync and print one line per change.
pub async fn follow(console: &Console) -> Result<(), CliError> {
    let (trigger, listener) = shutdown::channel();
    let tasks = console.engine.spawn_sync(&listener);
    let mut changes = console.engine.changes();
    println!(
        "following {} backend(s); Ctrl-C stops",
        console.engine.backends()?.len()
    );
    // One listener for the whole loop: a new `ctrl_c()` per turn would miss a
    // Ctrl-C that arrives while a change is being printed.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            change = changes.recv() => match change {
                Ok(change) => println!("{}", describe(&change)),
                Err(RecvError::Lagged(n)) => println!("({n} changes skipped)"),
                Err(RecvError::Closed) => break,
            },
        }
    }
    trigger.trigger();
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

fn describe(change: &Change) -> String {
    let now = Utc::now().format("%H:%M:%S");
    match change {
        Change::Action {
            key,
            change,
            new_events,
        } => format!(
            "{now} {} {} (+{new_events} events)",
            render::line(&key.to_string()),
            serde_json::to_value(change)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ),
        Change::Timeline { key } => format!("{now} {} timeline", render::line(&key.to_string())),
        Change::Backend { name } => format!("{now} backend {name} status changed"),
        Change::Decision { key, state, .. } => {
            format!("{now} {} decision {state}", render::line(&key.to_string()))
        }
    }
}

/// The live inbox: a numbered list that redraws on every change and every second
/// (countdowns), and a one-line prompt to decide.
pub async fn run(console: &Console) -> Result<(), CliError> {
    let (trigger, listener) = shutdown::channel();
    let tasks = console.engine.spawn_sync(&listener);
    let mut changes = console.engine.changes();
    let tty = std::io::stdout().is_terminal();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut shown: Vec<PendingAction> = Vec::new();
    let mut message = String::new();
    let mut dirty = true;
    // After `s N` the detail stays on screen until the next command.
    let mut paused = false;
    // One listener for the whole loop: a new `ctrl_c()` per turn would miss a
    // Ctrl-C that arrives while a change is being printed.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if dirty && !paused {
            shown = console.engine.pending(None)?;
            draw(console, &shown, &message, tty)?;
            dirty = false;
        }
        tokio::select! {
            _ = &mut ctrl_c => break,
            // Countdowns move every second on a terminal; a pipe gets a frame per change.
            _ = tick.tick() => dirty |= tty,
            change = changes.recv() => {
                if matches!(change, Err(RecvError::Closed)) {
                    break;
                }
                // One frame for a burst of changes.
                while changes.try_recv().is_ok() {}
                dirty = true;
            }
            line = lines.next_line(), if stdin_open => {
                let Ok(Some(line)) = line else {
                    stdin_open = false;
                    continue;
                };
                paused = false;
                dirty = true;
                match command(console, &shown, line.trim()).await {
                    Reply::Quit => break,
                    Reply::Message(m) => message = m,
                    Reply::Show(text) => {
                        print!("{text}\n{HELP}\n> ");
                        flush();
                        paused = true;
                        message.clear();
                    }
                }
            }
        }
    }
    trigger.trigger();
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

fn flush() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

fn draw(
    console: &Console,
    shown: &[PendingAction],
    message: &str,
    tty: bool,
) -> Result<(), CliError> {
    let now = Utc::now();
    let mut out = String::new();
    if tty {
        out.push_str("\x1b[H\x1b[2J");
    }
    out.push_str(&format!(
        "Countersign — {} pending{}   {}\n",
        shown.len(),
        if console.embedded {
            " (embedded demo)"
        } else {
            ""
        },
        now.with_timezone(&chrono::Local).format("%H:%M:%S")
    ));
    for b in console.engine.backends()? {
        if b.status == "degraded" {
            let retry = b
                .next_retry_at
                .map(|t| format!(", retrying in {}", render::span(t - now)))
                .unwrap_or_default();
            out.push_str(&format!(
                "! {} degraded: {}{retry}\n",
                b.name,
                render::line(b.last_error.as_deref().unwrap_or("unknown error"))
            ));
        }
    }
    out.push('\n');
    out.push_str(&render::action_rows(shown, now, true));
    if !message.is_empty() {
        out.push_str(&format!("\n{}\n", render::line(message)));
    }
    out.push_str(&format!("\n{HELP}\n> "));
    print!("{out}");
    flush();
    Ok(())
}

enum Reply {
    Quit,
    Message(String),
    Show(String),
}

async fn command(console: &Console, shown: &[PendingAction], line: &str) -> Reply {
    let mut parts = line.splitn(3, ' ');
    let verb = parts.next().unwrap_or_default();
    let pick = |n: Option<&str>| -> Option<&PendingAction> {
        n.and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| shown.get(i))
    };
    match verb {
        "" | "r" => Reply::Message(String::new()),
        "q" | "quit" => Reply::Quit,
        "s" => match pick(parts.next()) {
            None => Reply::Message("which one? `s N` with N from the list".into()),
            Some(a) => {
                let now = Utc::now();
                let _ = console.engine.record_viewed(&a.key, now);
                match console.engine.detail(&a.key) {
                    Ok(d) => Reply::Show(render::detail(&d, now)),
                    Err(e) => Reply::Message(format!("error: {e}")),
                }
            }
        },
        "a" | "d" => {
            let Some(a) = pick(parts.next()) else {
                return Reply::Message(format!("which one? `{verb} N` with N from the list"));
            };
            let verdict = if verb == "a" {
                Verdict::Approve
            } else {
                Verdict::Deny
            };
            let request = DecisionInput {
                action: a.key.clone(),
                verdict,
                reason: parts.next().unwrap_or_default().to_owned(),
                // Exactly what was on screen when the person typed the command.
                seen_snapshot_hash: a.snapshot_hash.clone(),
                answer: None,
            };
            match console.engine.decide(request, Utc::now()).await {
                Ok(report) => Reply::Message(render::decision_report(&report)),
                Err(e) => Reply::Message(format!("not decided: {e}")),
            }
        }
        _ => Reply::Message(format!("unknown command `{verb}`")),
    }
}
