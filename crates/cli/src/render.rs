//! Text output. Everything that came from a backend is someone else's words: control
//! characters (terminal escape sequences included) are replaced before printing, so a
//! request cannot repaint the terminal or hide text from the person deciding.

use std::fmt::Write as _;

use chrono::{DateTime, Local, Utc};
use countersign_core::api::{ActionDetail, BackendSyncReport};
use countersign_core::decide::DecisionReport;
use countersign_core::model::{DeliveryState, EventSource, PendingAction, Verdict};
use countersign_core::store::BackendStatus;
use serde::Serialize;

/// One line of hostile text: every control character becomes a visible `�`.
pub fn line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// Multi-line hostile text: keeps newlines (and tabs), replaces every other control.
pub fn block(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\n' || c == '\t' || !c.is_control() {
                c
            } else {
                '\u{fffd}'
            }
        })
        .collect()
}

fn clip(s: &str, width: usize) -> String {
    let s = line(s);
    if s.chars().count() <= width {
        return s;
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// "3m", "2h05m", "4d".
pub fn span(d: chrono::Duration) -> String {
    let secs = d.num_seconds().abs();
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m", secs / 60)
    } else if secs < 86_400 {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    } else {
        format!("{}d", secs / 86_400)
    }
}

pub fn time_left(a: &PendingAction, now: DateTime<Utc>) -> String {
    match a.time_left(now) {
        None => "—".into(),
        Some(d) if d.num_seconds() <= 0 => "expired".into(),
        Some(d) => span(d),
    }
}

fn approvals(a: &PendingAction) -> String {
    format!("{}/{}", a.approvals_so_far(), a.snapshot.approvals_required)
}

pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<(), std::io::Error> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    println!("{text}");
    Ok(())
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let fmt_row = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut first = true;
        for (cell, w) in cells.zip(&widths) {
            if !first {
                out.push_str("  ");
            }
            first = false;
            let pad = w.saturating_sub(cell.chars().count());
            out.push_str(cell);
            out.extend(std::iter::repeat_n(' ', pad));
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    fmt_row(&mut out, &mut header.iter().copied());
    for row in rows {
        fmt_row(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

pub fn action_rows(actions: &[PendingAction], now: DateTime<Utc>, numbered: bool) -> String {
    if actions.is_empty() {
        return "No pending actions.\n".into();
    }
    let rows: Vec<Vec<String>> = actions
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut row = Vec::new();
            if numbered {
                row.push(format!("{}", i + 1));
            }
            row.extend([
                clip(&a.key.to_string(), 28),
                a.snapshot.kind.as_str().to_owned(),
                clip(&a.snapshot.title, 44),
                clip(&a.snapshot.requester, 24),
                clip(&a.snapshot.resource, 20),
                span(now - a.snapshot.requested_at),
                time_left(a, now),
                approvals(a),
            ]);
            row
        })
        .collect();
    let mut header = Vec::new();
    if numbered {
        header.push("#");
    }
    header.extend([
        "ID",
        "KIND",
        "TITLE",
        "REQUESTER",
        "RESOURCE",
        "AGE",
        "LEFT",
        "OK",
    ]);
    table(&header, &rows)
}

pub fn action_table(actions: &[PendingAction], now: DateTime<Utc>) -> String {
    action_rows(actions, now, false)
}

pub fn history_table(actions: &[PendingAction], now: DateTime<Utc>) -> String {
    if actions.is_empty() {
        return "No history yet: run `countersign sync`.\n".into();
    }
    let rows: Vec<Vec<String>> = actions
        .iter()
        .map(|a| {
            vec![
                local_time(a.snapshot.requested_at),
                clip(&a.key.to_string(), 28),
                a.snapshot.status.as_str().to_owned(),
                clip(&a.snapshot.title, 44),
                clip(&a.snapshot.requester, 24),
                format!("{} ago", span(now - a.snapshot.requested_at)),
            ]
        })
        .collect();
    table(
        &["REQUESTED", "ID", "STATUS", "TITLE", "REQUESTER", "AGE"],
        &rows,
    )
}

fn local_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let d = now - at;
    if d.num_seconds() >= 0 {
        format!("{} ago", span(d))
    } else {
        format!("in {}", span(d))
    }
}

pub fn detail(d: &ActionDetail, now: DateTime<Utc>) -> String {
    let a = &d.action;
    let s = &a.snapshot;
    let mut out = String::new();
    let _ = writeln!(out, "{}", line(&s.title));
    let _ = writeln!(out, "  id          {}", line(&a.key.to_string()));
    let _ = writeln!(out, "  kind        {}", s.kind.as_str());
    let _ = writeln!(out, "  status      {}", s.status.as_str());
    let _ = writeln!(out, "  requester   {}", line(&s.requester));
    let _ = writeln!(out, "  resource    {}", line(&s.resource));
    let _ = writeln!(
        out,
        "  requested   {} ({})",
        local_time(s.requested_at),
        relative(s.requested_at, now)
    );
    match s.expires_at {
        Some(at) => {
            let _ = writeln!(
                out,
                "  expires     {} ({})",
                local_time(at),
                relative(at, now)
            );
        }
        None => {
            let _ = writeln!(out, "  expires     never");
        }
    }
    let _ = writeln!(out, "  approvals   {}", approvals(a));
    if let Some(url) = &s.web_url {
        let _ = writeln!(out, "  link        {}", line(url));
    }
    let _ = writeln!(out, "  snapshot    {}", a.snapshot_hash);
    if !s.summary.is_empty() {
        let _ = writeln!(out, "\n{}", indent(&block(&s.summary), "  "));
    }
    if !s.details.is_empty() {
        let _ = writeln!(out, "\nDetails");
        for item in &s.details {
            let _ = writeln!(out, "  {}:", line(&item.key));
            let _ = writeln!(out, "{}", indent(&block(&item.value), "    "));
        }
    }
    if let Some(form) = &s.form {
        out.push_str(&form_text(form));
    }
    if !s.reviews.is_empty() {
        let _ = writeln!(out, "\nReviews");
        for r in &s.reviews {
            let verdict = match r.verdict {
                countersign_core::model::ReviewVerdict::Approved => "approved",
                countersign_core::model::ReviewVerdict::Denied => "denied",
            };
            let comment = r.comment.as_deref().map(line).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} {} {} {}",
                local_time(r.at),
                line(&r.reviewer),
                verdict,
                comment
            );
        }
    }
    if !d.decisions.is_empty() {
        let _ = writeln!(out, "\nDecisions from here");
        for dec in &d.decisions {
            let _ = writeln!(
                out,
                "  {} {} by {} — {}{}",
                local_time(dec.decided_at),
                dec.verdict.as_str(),
                line(&dec.approver),
                delivery(&dec.delivery),
                if dec.reason.is_empty() {
                    String::new()
                } else {
                    format!(" — “{}”", line(&dec.reason))
                }
            );
        }
    }
    let _ = writeln!(out, "\nTimeline");
    for e in &d.timeline {
        let who = e.actor.as_deref().map(line).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}  {:>8}  {:<7} {:<18} {}{}",
            local_time(e.at),
            relative(e.at, now),
            match e.source {
                EventSource::Backend => "backend",
                EventSource::Local => "local",
            },
            e.kind.as_str(),
            if who.is_empty() {
                String::new()
            } else {
                format!("{who}: ")
            },
            line(&e.text)
        );
    }
    out
}

/// The form as a person answers it on the command line: the options for `--option`,
/// the fields for `--param`, with types, defaults and what is required.
fn form_text(form: &countersign_core::model::InputForm) -> String {
    use countersign_core::model::FieldType;
    let mut out = String::new();
    if !form.options.is_empty() {
        let _ = writeln!(
            out,
            "\nOptions (countersign choose ID --option …{})",
            if form.multiple {
                ", one or more"
            } else {
                ", exactly one"
            }
        );
        for o in &form.options {
            let default = if form.default_options.contains(o) {
                "  (default)"
            } else {
                ""
            };
            let _ = writeln!(out, "  - {}{default}", line(o));
        }
    }
    if !form.fields.is_empty() {
        let _ = writeln!(out, "\nFields (--param NAME=VALUE)");
        for f in &form.fields {
            let ty = match f.field_type {
                FieldType::Text => "text".to_owned(),
                FieldType::Integer => "whole number".to_owned(),
                FieldType::Number => "number".to_owned(),
                FieldType::Boolean => "true/false".to_owned(),
                FieldType::Choice => format!(
                    "one of {}",
                    f.choices
                        .iter()
                        .map(|c| line(c))
                        .collect::<Vec<_>>()
                        .join(" | ")
                ),
                FieldType::Json => "JSON".to_owned(),
            };
            let mut text = format!("  {} ({ty})", line(&f.name));
            if f.label != f.name {
                let _ = write!(text, " “{}”", line(&f.label));
            }
            match (&f.default, f.required) {
                (Some(d), _) => {
                    let _ = write!(text, " default {}", line(&d.to_string()));
                }
                (None, true) => text.push_str(" required"),
                (None, false) => {}
            }
            let _ = writeln!(out, "{text}");
            if !f.description.is_empty() {
                let _ = writeln!(out, "{}", indent(&block(&f.description), "      "));
            }
        }
    }
    out
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn delivery(state: &DeliveryState) -> String {
    match state {
        DeliveryState::Queued => "queued (not yet delivered)".into(),
        DeliveryState::Delivered => "delivered".into(),
        DeliveryState::Rejected { reason } => format!("rejected: {}", line(reason)),
        DeliveryState::Stale { .. } => "refused: the action changed first".into(),
        DeliveryState::Expired => "refused: expired first".into(),
    }
}

pub fn decision_report(r: &DecisionReport) -> String {
    let verdict = match r.decision.verdict {
        Verdict::Approve => "Approved".to_owned(),
        Verdict::Deny => "Denied".to_owned(),
        Verdict::Choose => format!(
            "Chose {}",
            r.decision
                .answer
                .as_ref()
                .map(|a| a
                    .options
                    .iter()
                    .map(|o| line(o))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
    };
    let mut out = format!(
        "{verdict} {} (snapshot {}): {}",
        r.decision.action,
        r.decision.snapshot_hash.short(),
        delivery(&r.decision.delivery)
    );
    if let Some(why) = &r.queued_because {
        let _ = write!(out, "\n  queued because: {}", line(why));
        let _ = write!(
            out,
            "\n  it is delivered by the next `countersign sync` (or a running inbox)"
        );
    }
    if r.offline {
        out.push_str(
            "\n  the backend was unreachable, so the decision is bound to the snapshot you saw; \
             the backend re-checks it on delivery",
        );
    }
    out
}

pub fn backends(statuses: &[BackendStatus], now: DateTime<Utc>) -> String {
    if statuses.is_empty() {
        return "No backends yet: add one with `countersign backend add`, or run `countersign inbox` for \
             the demo.\n"
            .into();
    }
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                b.kind.clone(),
                b.status.clone(),
                b.pending.to_string(),
                b.last_ok_at
                    .map(|t| relative(t, now))
                    .unwrap_or_else(|| "never".into()),
                match (&b.last_error, b.status.as_str()) {
                    (Some(e), "degraded") => {
                        let retry = b
                            .next_retry_at
                            .map(|t| format!(" (retry {})", relative(t, now)))
                            .unwrap_or_default();
                        format!("{}{retry}", clip(e, 80))
                    }
                    _ => String::new(),
                },
            ]
        })
        .collect();
    table(
        &[
            "BACKEND",
            "KIND",
            "STATUS",
            "PENDING",
            "LAST OK",
            "LAST ERROR",
        ],
        &rows,
    )
}

pub fn sync_reports(reports: &[BackendSyncReport]) -> String {
    if reports.is_empty() {
        return "No backends configured.\n".into();
    }
    let mut out = String::new();
    for r in reports {
        match (&r.summary, &r.error) {
            (Some(s), _) if s.not_modified => {
                let _ = writeln!(out, "{}: up to date", r.backend);
            }
            (Some(s), _) => {
                let _ = writeln!(
                    out,
                    "{}: {} new, {} changed, {} new timeline events, {} closed",
                    r.backend, s.created, s.updated, s.new_events, s.closed
                );
            }
            (None, Some(e)) => {
                let _ = writeln!(out, "{}: error: {}", r.backend, line(e));
            }
            (None, None) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_cannot_emit_terminal_escapes() {
        let evil = "ok\u{1b}[2J\u{1b}]0;pwned\u{7}\r\nrm -rf";
        let one = line(evil);
        assert!(!one.chars().any(char::is_control), "{one:?}");
        let many = block(evil);
        assert!(!many.contains('\u{1b}') && !many.contains('\r'));
        assert!(many.contains('\n'));
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(chrono::Duration::seconds(42)), "42s");
        assert_eq!(span(chrono::Duration::seconds(-300)), "5m");
        assert_eq!(span(chrono::Duration::seconds(3 * 3600 + 5 * 60)), "3h05m");
    }

    #[test]
    fn clipping_keeps_width() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
