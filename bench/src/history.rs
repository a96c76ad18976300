//! Benchmark 2: history at scale. The inbox, history filters and full-text search as the
//! window asks for them (through `Engine`, rows decoded into `PendingAction`s), against a
//! floor: the same SQL shape on a bare connection returning only row ids, so the ratio
//! is what the engine adds on top of SQLite.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use countersign_core::model::{ActionStatus, Verdict};
use countersign_core::store::{history_key_base, HistoryQuery, Store};
use countersign_core::Engine;
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OpenFlags};

use crate::generate::{backend_name, APPROVER};
use crate::table::{self, percentiles, Row};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One query the window can make, and its id-only equivalent.
struct Case {
    label: String,
    query: HistoryQuery,
    floor_sql: String,
    floor_args: Vec<Value>,
    /// Searches: the words, turned into the MATCH expression (the first argument) on the
    /// bare connection at every run, as the store does (`Store::fts_match`: prefixes
    /// expanded through the index's term list).
    floor_text: Option<String>,
}

const PAGE: u32 = 100;

/// The store's browse shape (store/history.rs): the actions' history-key indexes read
/// newest-first, always bounded above once (the first page by the largest key, unless
/// a clause brings its own upper bound).
fn floor(clauses: &[String]) -> String {
    let mut all = Vec::new();
    if !clauses.iter().any(|c| c.contains("history_key <")) {
        all.push(format!("a.history_key < {}", i64::MAX));
    }
    all.extend(clauses.iter().cloned());
    format!(
        "SELECT a.id FROM actions a WHERE {} ORDER BY a.history_key DESC LIMIT {}",
        all.join(" AND "),
        PAGE + 1
    )
}

/// The store's search shape: the words made a MATCH expression, then the FTS5 table
/// walked newest-first by its rowid (the history key), each match looked up in
/// actions, all words in one MATCH.
fn text_case(text: &str) -> Case {
    Case {
        label: format!("search \"{text}\""),
        query: HistoryQuery {
            text: Some(text.to_owned()),
            limit: Some(PAGE),
            ..HistoryQuery::default()
        },
        floor_sql: format!(
            "SELECT a.id FROM action_search s CROSS JOIN actions a ON a.history_key = s.rowid \
             WHERE s.action_search MATCH ?1 AND s.rowid < {} ORDER BY s.rowid DESC LIMIT {}",
            i64::MAX,
            PAGE + 1
        ),
        floor_args: Vec::new(),
        floor_text: Some(text.to_owned()),
    }
}

fn filter_cases(span: (DateTime<Utc>, DateTime<Utc>)) -> Vec<Case> {
    let q = |f: &dyn Fn(&mut HistoryQuery)| {
        let mut q = HistoryQuery {
            limit: Some(PAGE),
            ..HistoryQuery::default()
        };
        f(&mut q);
        q
    };
    let github = backend_name(2);
    let prod = backend_name(0);
    // Whole milliseconds, as request times are stored: the key of `mid` is then the first
    // key requested at or after it, as the store computes it.
    let mid = span.0 + (span.1 - span.0) / 2;
    let mid = DateTime::from_timestamp_millis(mid.timestamp_millis()).unwrap_or(mid);
    let week_end = mid + chrono::Duration::days(7);
    let key = |t: DateTime<Utc>| Value::Integer(history_key_base(&t));
    let by_backend = "a.backend_id = (SELECT id FROM backends WHERE name = ?1)";
    vec![
        Case {
            label: format!("backend {github}"),
            query: q(&|q| q.backend = Some(github.clone())),
            floor_sql: floor(&[by_backend.into()]),
            floor_args: vec![Value::Text(github.clone())],
            floor_text: None,
        },
        Case {
            label: "status denied".into(),
            query: q(&|q| q.status = Some(ActionStatus::Denied)),
            floor_sql: floor(&["a.status = ?1".into()]),
            floor_args: vec![Value::Text("denied".into())],
            floor_text: None,
        },
        Case {
            label: "requester ana".into(),
            query: q(&|q| q.requester = Some("ana".into())),
            floor_sql: floor(&["a.requester = ?1".into()]),
            floor_args: vec![Value::Text("ana".into())],
            floor_text: None,
        },
        Case {
            label: "verdict deny".into(),
            query: q(&|q| q.verdict = Some(Verdict::Deny)),
            floor_sql: floor(&[
                "EXISTS (SELECT 1 FROM decisions d WHERE d.action_id = a.id AND d.verdict = ?1)"
                    .into(),
            ]),
            floor_args: vec![Value::Text("deny".into())],
            floor_text: None,
        },
        Case {
            label: format!("backend {prod} + status expired"),
            query: q(&|q| {
                q.backend = Some(prod.clone());
                q.status = Some(ActionStatus::Expired);
            }),
            floor_sql: floor(&[by_backend.into(), "a.status = ?2".into()]),
            floor_args: vec![Value::Text(prod.clone()), Value::Text("expired".into())],
            floor_text: None,
        },
        Case {
            label: "one week, mid-history".into(),
            query: q(&|q| {
                q.from = Some(mid);
                q.to = Some(week_end);
            }),
            floor_sql: floor(&["a.history_key >= ?1".into(), "a.history_key < ?2".into()]),
            floor_args: vec![key(mid), key(week_end)],
            floor_text: None,
        },
        Case {
            label: "requester ana + status approved, one week".into(),
            query: q(&|q| {
                q.requester = Some("ana".into());
                q.status = Some(ActionStatus::Approved);
                q.from = Some(mid);
                q.to = Some(week_end);
            }),
            floor_sql: floor(&[
                "a.requester = ?1".into(),
                "a.status = ?2".into(),
                "a.history_key >= ?3".into(),
                "a.history_key < ?4".into(),
            ]),
            floor_args: vec![
                Value::Text("ana".into()),
                Value::Text("approved".into()),
                key(mid),
                key(week_end),
            ],
            floor_text: None,
        },
    ]
}

fn search_cases(actions: i64) -> Vec<Case> {
    let ticket = format!("OPS-{}", 10_000 + actions / 2);
    [
        "canary",
        "rollback orders",
        "deadlock replica",
        "ana",
        "prod kafka",
        ticket.as_str(),
        APPROVER,
        "nosuchword",
    ]
    .iter()
    .map(|t| text_case(t))
    .collect()
}

/// Timed calls of one query stop early once they have taken this long (and at least
/// [`MIN_RUNS`] were made): a query that takes seconds at a million rows needs no fifty
/// samples to show it, and the whole run must fit in minutes.
const CASE_BUDGET: Duration = Duration::from_secs(8);
const MIN_RUNS: usize = 3;

/// Runs `f` up to `runs` times after a warm-up call; the durations of the timed calls.
fn time<E>(
    runs: usize,
    mut f: impl FnMut() -> Result<usize, E>,
) -> Result<(Vec<Duration>, usize), E> {
    // The warm-up counts against the budget: a query that takes 20 s gets its three
    // runs and no more.
    let started = Instant::now();
    let mut rows = f()?;
    let mut out = Vec::with_capacity(runs);
    for i in 0..runs {
        if i >= MIN_RUNS && started.elapsed() > CASE_BUDGET {
            break;
        }
        let t = Instant::now();
        rows = f()?;
        out.push(t.elapsed());
    }
    Ok((out, rows))
}

pub fn run(db: &Path, runs: usize, verbose: bool) -> Result<Vec<Row>, BoxError> {
    let engine = Engine::new(Store::open(db)?, APPROVER);
    let raw = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let actions: i64 = raw.query_row("SELECT count(*) FROM actions", [], |r| r.get(0))?;
    let events: i64 = raw.query_row("SELECT count(*) FROM timeline_events", [], |r| r.get(0))?;
    let (first, last): (String, String) = raw.query_row(
        "SELECT min(requested_at), max(requested_at) FROM actions",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let parse = |s: &str| -> Result<DateTime<Utc>, BoxError> {
        Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
    };
    let span = (parse(&first)?, parse(&last)?);
    let scale = format!("{actions} actions / {events} events");
    let mut rows = Vec::new();

    // The inbox, as the window loads it: pending actions and backend health.
    let (ours, n) = time(runs, || {
        engine
            .inbox(Utc::now())
            .map(|v| v.actions.len() + v.backends.len())
    })?;
    let mut floor_stmt = raw.prepare(
        "SELECT a.id FROM actions a WHERE a.status = 'pending'
         ORDER BY a.expires_at IS NULL, a.expires_at, a.requested_at, a.id",
    )?;
    let (reference, _) = time(runs, || -> rusqlite::Result<usize> {
        let ids: Vec<i64> = floor_stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids.len())
    })?;
    drop(floor_stmt);
    if verbose {
        eprintln!("inbox: {n} rows");
    }
    rows.push(latency_row(
        &format!("inbox query ({scale})"),
        &ours,
        &reference,
        Duration::from_millis(20),
    ));

    for (name, cases, goal) in [
        (
            "history filter",
            filter_cases(span),
            Duration::from_millis(20),
        ),
        (
            "FTS search",
            search_cases(actions),
            Duration::from_millis(50),
        ),
    ] {
        // Per query: p50 and p99 of ours and of the floor. The row shows the median of
        // the p50s and the worst p99 (naming its query): a goal on p99 is a goal on
        // every query a person may type, not on their average.
        let mut per_case: Vec<(String, table::Percentiles, table::Percentiles)> = Vec::new();
        for case in &cases {
            let (ours, n) = time(runs, || {
                engine.history_page(&case.query).map(|p| p.actions.len())
            })?;
            let mut stmt = raw.prepare(&case.floor_sql)?;
            let (reference, m) = time(runs, || -> rusqlite::Result<usize> {
                let mut args = case.floor_args.clone();
                if let Some(text) = &case.floor_text {
                    let expr = Store::fts_match(&raw, text)?.unwrap_or_default();
                    args.insert(0, Value::Text(expr));
                }
                let ids: Vec<i64> = stmt
                    .query_map(params_from_iter(args.iter()), |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok(ids.len())
            })?;
            if verbose {
                let p = percentiles(&ours);
                let f = percentiles(&reference);
                eprintln!(
                    "{name} {:<45} rows {n:>3} (floor {m:>3})  ours {} (n={})  floor {}",
                    case.label,
                    table::p50_p99(&p),
                    p.n,
                    table::p50_p99(&f)
                );
            }
            per_case.push((
                case.label.clone(),
                percentiles(&ours),
                percentiles(&reference),
            ));
        }
        let median = |mut v: Vec<Duration>| -> Duration {
            v.sort();
            v.get(v.len() / 2).copied().unwrap_or_default()
        };
        let p50 = median(per_case.iter().map(|c| c.1.p50).collect());
        let f50 = median(per_case.iter().map(|c| c.2.p50).collect());
        let worst = per_case.iter().max_by_key(|c| c.1.p99);
        let (worst_label, p99) = worst.map(|c| (c.0.clone(), c.1.p99)).unwrap_or_default();
        let f99 = per_case.iter().map(|c| c.2.p99).max().unwrap_or_default();
        rows.push(Row {
            name: format!("{name}, {} queries ({scale})", cases.len()),
            ours: format!(
                "p50 {} / p99 {} (worst: {worst_label})",
                table::ms(p50),
                table::ms(p99)
            ),
            reference: format!(
                "p50 {} / p99 {} (SQL floor, ids only)",
                table::ms(f50),
                table::ms(f99)
            ),
            ratio: table::ratio(p99, f99),
            goal: format!("p99 < {}", table::ms(goal)),
            met: Some(p99 < goal),
        });
    }
    Ok(rows)
}

fn latency_row(name: &str, ours: &[Duration], reference: &[Duration], goal: Duration) -> Row {
    let p = percentiles(ours);
    let r = percentiles(reference);
    Row {
        name: name.to_owned(),
        ours: table::p50_p99(&p),
        reference: format!("{} (SQL floor, ids only)", table::p50_p99(&r)),
        ratio: table::ratio(p.p99, r.p99),
        goal: format!("p99 < {}", table::ms(goal)),
        met: Some(p.p99 < goal),
    }
}
