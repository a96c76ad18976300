//! The history view in the real window (Xvfb, tauri-driver, the `countersign-app`
//! binary, the reference server as its own process): full-text search finds an action
//! by a word that is only in one of its detail values, opening it shows its old
//! timeline and decisions, and a request that changed shows what changed. A second
//! test opens a history of 1,000,000 generated actions and searches it (figures are
//! printed, never asserted).

mod common;
mod e2e;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::new_action;
use countersign_core::model::Detail;
use e2e::{key, row, E2e, WAIT};

const SEARCH: &str = r#"[data-testid="history-search"]"#;
const HISTORY_ROWS: &str = r#"[data-testid="history-row"]"#;
const LIST: &str = r#"[data-testid="history-list"]"#;
const STATUS: &str = r#"[data-testid="history-status"]"#;
const REASON: &str = r#"[data-testid="reason"]"#;
const APPROVE: &str = r#"[data-testid="approve"]"#;
const RESULT: &str = r#"[data-testid="decision-result"]"#;
const ENTER: &str = "\u{E007}";

fn history_row(id: &str) -> String {
    format!(r#"[data-testid="history-row"][data-key="{}"]"#, key(id))
}

fn history_event(kind: &str) -> String {
    format!(r#"[data-testid="history-detail"] [data-testid="timeline-event"][data-kind="{kind}"]"#)
}

/// Replaces the search words, searches at once (Enter) and waits for its answer.
async fn search(e2e: &E2e, words: &str, timeout: Duration) {
    let input = e2e.wait_for(SEARCH, WAIT).await;
    input.clear().await.expect("clear the search box");
    e2e.type_text(SEARCH, &format!("{words}{ENTER}")).await;
    e2e.wait_for(
        &format!(r#"{STATUS}[data-query="{words}"][data-took-ms]"#),
        timeout,
    )
    .await;
}

/// Waits until the history list shows exactly `ids` (in this order, newest first).
async fn wait_rows(e2e: &E2e, ids: &[&str]) {
    let want: Vec<String> = ids.iter().map(|id| key(id)).collect();
    let end = Instant::now() + WAIT;
    loop {
        let mut keys = Vec::new();
        for el in e2e.find_all(HISTORY_ROWS).await {
            if let Ok(Some(k)) = el.attr("data-key").await {
                keys.push(k);
            }
        }
        if keys == want {
            return;
        }
        if Instant::now() > end {
            e2e.fail(&format!("history rows {keys:?}, expected {want:?}"))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn history_search_finds_a_detail_word_and_opens_the_old_timeline() {
    let mut e2e = E2e::start("history_search_finds_a_detail_word_and_opens_the_old_timeline");
    // The word is only in a detail value: not in a title, summary, requester or resource.
    let mut found = new_action("hist-1", "Read-only session on prod-billing");
    found.details.push(Detail {
        key: "ticket".into(),
        value: "FIN-2231 quokkazebra reconciliation".into(),
    });
    e2e.producer.create(&found).await;
    e2e.producer
        .create(&new_action("hist-2", "Another session on prod-billing"))
        .await;
    let mut two = new_action("hist-3", "Rotate the wombatlattice credentials");
    two.approvals_required = Some(2);
    e2e.producer.create(&two).await;
    e2e.launch_ready().await;
    for id in ["hist-1", "hist-2", "hist-3"] {
        e2e.wait_for(&row(id), WAIT).await;
    }

    // Decide one in the inbox, as a person would.
    e2e.click(&row("hist-1")).await;
    e2e.type_text(REASON, "Ticket checked").await;
    e2e.click(APPROVE).await;
    e2e.wait_for(RESULT, WAIT).await;
    e2e.wait_gone(&row("hist-1"), WAIT).await;

    // Another reviewer approves hist-3 on the server: a new version of it is synced.
    let seen = e2e.producer.get("hist-3").await;
    e2e.producer
        .decide_as(
            "hist-3",
            "sam@example.com",
            seen.snapshot_hash.as_str(),
            "sam-1",
        )
        .await;
    e2e.wait_text(&row("hist-3"), WAIT, |t| t.contains("1/2"))
        .await;

    e2e.click(r#"[data-testid="nav-history"]"#).await;
    e2e.wait_for(r#"[data-testid="history-view"]"#, WAIT).await;
    // Without words: everything seen, newest first.
    wait_rows(&e2e, &["hist-3", "hist-2", "hist-1"]).await;

    search(&e2e, "quokkazebra", WAIT).await;
    wait_rows(&e2e, &["hist-1"]).await;

    // Keyboard: the list takes focus, Enter opens the active row.
    e2e.click(&history_row("hist-1")).await;
    let detail = format!(
        r#"[data-testid="history-detail"][data-key="{}"]"#,
        key("hist-1")
    );
    e2e.wait_for(&detail, WAIT).await;
    e2e.wait_for(&history_event("requested"), WAIT).await;
    e2e.wait_for(&history_event("viewed"), WAIT).await;
    e2e.wait_for(&history_event("decided"), WAIT).await;
    let decision = e2e
        .wait_for(
            r#"[data-testid="history-decision"][data-verdict="approve"]"#,
            WAIT,
        )
        .await;
    let text = decision.text().await.expect("decision text");
    assert!(text.contains("Ticket checked"), "{text}");
    let fields = e2e
        .text_contents(r#"[data-testid="history-detail-field"]"#)
        .await
        .join("\n");
    assert!(fields.contains("quokkazebra"), "{fields}");
    e2e.screenshot("history-search").await;
    e2e.axe("history").await;

    // The request that changed: what changed between the versions seen.
    search(&e2e, "wombatlattice", WAIT).await;
    wait_rows(&e2e, &["hist-3"]).await;
    e2e.click(LIST).await;
    e2e.type_text(LIST, ENTER).await;
    e2e.wait_for(
        &format!(
            r#"[data-testid="history-detail"][data-key="{}"]"#,
            key("hist-3")
        ),
        WAIT,
    )
    .await;
    e2e.wait_for(
        r#"[data-testid="history-diff"] [data-testid="history-diff-field"][data-field="reviews"]"#,
        WAIT,
    )
    .await;
    let versions = e2e
        .attr(r#"[data-testid="history-diff"]"#, "data-versions")
        .await;
    assert_eq!(versions.as_deref(), Some("2"));
    e2e.axe("history with a diff").await;

    // Usable at 800×600: search, list and the diff all on screen side by side.
    e2e.client()
        .set_window_size(800, 600)
        .await
        .expect("resize the window");
    let end = Instant::now() + WAIT;
    while e2e.js("return window.innerWidth;", vec![]).await.as_u64() > Some(800) {
        assert!(Instant::now() < end, "the window did not shrink to 800 px");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fits = e2e
        .js(
            "const inView = (sel) => { const r = document.querySelector(sel).getBoundingClientRect();
               return r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0
                 && r.right <= window.innerWidth + 1 && r.top < window.innerHeight; };
             return ['[data-testid=\"history-search\"]', '[data-testid=\"history-list\"]',
                     '[data-testid=\"history-detail\"] h2'].map(inView);",
            vec![],
        )
        .await;
    assert_eq!(fits, serde_json::json!([true, true, true]), "at 800×600");
    e2e.screenshot("history-800x600").await;

    // A word nobody used: nothing, said so.
    search(&e2e, "nosuchwordanywhere", WAIT).await;
    wait_rows(&e2e, &[]).await;
    e2e.wait_text(STATUS, WAIT, |t| t.contains("No actions match"))
        .await;
    e2e.close().await;
}

/// The store file the app opens in its data dir.
fn store_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("countersign.db")
}

/// A history of 1,000,000 generated actions, written before the app starts (the bench
/// generator, `countersign-bench generate`): the view opens, scrolls, and a search
/// answers. Timings are printed for the benchmark issue, never asserted.
#[tokio::test]
async fn history_of_a_million_actions_opens_and_searches() {
    // COUNTERSIGN_E2E_HISTORY_ACTIONS: a smaller history for a quick local run.
    let actions: u64 = std::env::var("COUNTERSIGN_E2E_HISTORY_ACTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let mut e2e = E2e::start("history_of_a_million_actions_opens_and_searches");
    let db = store_file(&e2e.data_dir());
    // Built by `cargo build --workspace` (bench/ is a workspace member).
    let bench = common::bin("countersign-bench");
    let started = Instant::now();
    let out = Command::new(&bench)
        .args(["generate", "--db"])
        .arg(&db)
        .args([
            "--actions",
            &actions.to_string(),
            // Titles, requesters, resources and details only: timeline events and
            // signed decisions would multiply the generation time (debug build) without
            // changing what is measured here, a search over a million actions.
            "--events-per-action",
            "0",
            "--decided-percent",
            "0",
            "--pending",
            "50",
        ])
        .output()
        .expect("run countersign-bench generate");
    assert!(
        out.status.success(),
        "generate failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = started.elapsed();
    eprintln!(
        "HISTORY-1M: {} (wall {generated:.1?})",
        String::from_utf8_lossy(&out.stdout).trim()
    );

    e2e.launch_ready().await;
    let t = Instant::now();
    e2e.click(r#"[data-testid="nav-history"]"#).await;
    e2e.wait_for(HISTORY_ROWS, Duration::from_secs(60)).await;
    let first_page = t.elapsed();
    let in_dom = e2e.count(HISTORY_ROWS).await;
    assert!(
        in_dom < 100,
        "{in_dom} rows in the DOM: the list must render only what is in view"
    );

    // Scroll to the end of what is loaded, again and again: each time the next page is
    // read with the cursor, and the DOM stays small.
    let t = Instant::now();
    let rows_loaded = || async {
        e2e.attr(STATUS, "data-rows")
            .await
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let mut loaded = rows_loaded().await;
    for _ in 0..5 {
        let before = loaded;
        e2e.js(
            "const l = document.querySelector('[data-testid=\"history-list\"]'); l.scrollTop = l.scrollHeight; return l.scrollTop;",
            vec![],
        )
        .await;
        let end = Instant::now() + Duration::from_secs(60);
        while loaded <= before {
            if Instant::now() > end {
                e2e.fail(&format!("scrolling to row {before} read no further page"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            loaded = rows_loaded().await;
        }
    }
    let scrolled = t.elapsed();
    let in_dom_after = e2e.count(HISTORY_ROWS).await;
    assert!(in_dom_after < 100, "{in_dom_after} rows in the DOM");

    // A search over the whole history: the first matching page.
    let word = generated_word(&e2e).await;
    let t = Instant::now();
    search(&e2e, &word, Duration::from_secs(120)).await;
    let searched = t.elapsed();
    let took = e2e.attr(STATUS, "data-took-ms").await.unwrap_or_default();
    let status = e2e.text(STATUS).await;
    eprintln!(
        "HISTORY-1M: generate {generated:.1?}; app up {:.1?}; first page {first_page:.1?}; \
         5 scrolls to the end, each reading a page {scrolled:.1?} with WebDriver round trips ({loaded} rows loaded, {in_dom_after} in the DOM); search {word:?} {searched:.1?} (first page {took} ms in the window; {status})",
        e2e.launch_time,
    );
    assert!(
        status.contains("newest first"),
        "a word from a generated title found nothing: {status}"
    );
    e2e.close().await;
}

/// A word from the title of a row on screen (the generator's vocabulary), so the
/// search is sure to have matches across the whole history.
async fn generated_word(e2e: &E2e) -> String {
    let title = e2e
        .js(
            "const rows = document.querySelectorAll('[data-testid=\"history-row\"] .title'); \
             return rows.length ? rows[rows.length - 1].textContent : '';",
            vec![],
        )
        .await;
    let title = title.as_str().unwrap_or_default().to_owned();
    title
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 5 && w.chars().all(|c| c.is_ascii_alphabetic()))
        .max_by_key(|w| w.len())
        .unwrap_or_else(|| panic!("no word to search in the title {title:?}"))
        .to_lowercase()
}
