//! The audit view of the real window, end to end (Xvfb, tauri-driver, the app against
//! the reference server): the chain's status, copying the key's lines to the real X
//! clipboard, rotating the key behind the in-page confirmation, and an excerpt
//! exported through the system save dialog that `countersign verify --excerpt`
//! accepts, with the allowed_signers lines the copy button gave.

mod common;
mod e2e;

use chrono::{Days, Local};
use common::new_action;
use e2e::{row, E2e, APPROVER, BACKEND, WAIT};
use serde_json::json;

const AUDIT_VIEW: &str = r#"[data-testid="audit-view"]"#;
const STATUS: &str = r#"[data-testid="chain-status"]"#;
const FINGERPRINT: &str = r#"[data-testid="key-fingerprint"]"#;
const SIGNERS: &str = r#"[data-testid="key-allowed-signers"]"#;
const EXPORT_RESULT: &str = r#"[data-testid="audit-export-result"]"#;

/// Approves `id` in the inbox with a reason and waits until the server has it.
async fn approve(e2e: &E2e, id: &str, reason: &str) {
    e2e.click(r#"[data-testid="nav-inbox"]"#).await;
    e2e.click(&row(id)).await;
    e2e.wait_for(r#"[data-testid="detail"]"#, WAIT).await;
    e2e.type_text(r#"[data-testid="reason"]"#, reason).await;
    e2e.click(r#"[data-testid="approve"]"#).await;
    e2e.wait_for(
        r#"[data-testid="decision-result"][data-outcome="delivered"]"#,
        WAIT,
    )
    .await;
}

/// Opens the audit view and waits until the chain verified up to entry `n`.
async fn audit_verified_up_to(e2e: &E2e, n: u32) -> String {
    e2e.click(r#"[data-testid="nav-audit"]"#).await;
    e2e.wait_for(AUDIT_VIEW, WAIT).await;
    let sel = format!(r#"{STATUS}[data-ok="true"][data-verified="{n}"]"#);
    e2e.wait_text(&sel, WAIT, |t| {
        t.contains(&format!("Verified up to entry {n} (head hash"))
    })
    .await
}

/// Sets a form control's value as typing or picking would, so the page's binding sees it.
async fn set_value(e2e: &E2e, css: &str, value: &str, event: &str) {
    e2e.wait_for(css, WAIT).await;
    e2e.js(
        "const el = document.querySelector(arguments[0]);
         el.value = arguments[1];
         el.dispatchEvent(new Event(arguments[2], { bubbles: true }));",
        vec![json!(css), json!(value), json!(event)],
    )
    .await;
}

/// Clicks a copy button, waits for "Copied", and reads the X clipboard of the test's
/// display, which the app now owns.
async fn copy(e2e: &E2e, button: &str, what: &str) -> String {
    e2e.click(&format!(r#"[data-testid="{button}"]"#)).await;
    e2e.wait_text(
        &format!(r#"[data-testid="copy-status"][data-what="{what}"]"#),
        WAIT,
        |t| t == "Copied",
    )
    .await;
    let mut clipboard = arboard::Clipboard::new().expect("the X clipboard of the test display");
    clipboard.get_text().expect("text on the clipboard")
}

#[tokio::test]
async fn audit_view_status_copy_rotate_and_excerpt_export_verifies() {
    let mut e2e = E2e::start("audit_view_status_copy_rotate_and_excerpt_export_verifies");
    // arboard talks to the display named by DISPLAY; nextest runs each test in its own
    // process, and nothing else in it reads DISPLAY.
    std::env::set_var("DISPLAY", e2e.xvfb.name());
    for (id, title) in [
        ("deploy-4812", "Deploy billing-api v2.31.0 to production"),
        ("agent-77", "Agent wants to run `terraform apply`"),
    ] {
        e2e.producer.create(&new_action(id, title)).await;
    }
    e2e.launch_ready().await;

    // A decision and its delivery: entries 1 and 2.
    approve(&e2e, "deploy-4812", "CHG-881 approved in CAB").await;
    audit_verified_up_to(&e2e, 2).await;
    let passed = e2e.axe("audit").await;
    assert!(passed > 0, "axe-core ran on the audit view");

    // The copy buttons put exactly what the view shows on the real clipboard.
    let old_fingerprint = e2e.text(FINGERPRINT).await;
    assert!(old_fingerprint.starts_with("SHA256:"), "{old_fingerprint}");
    assert_eq!(
        copy(&e2e, "copy-fingerprint", "fingerprint").await,
        old_fingerprint
    );
    let old_line = copy(&e2e, "copy-allowed-signers", "allowed_signers").await;
    assert_eq!(old_line, e2e.text(SIGNERS).await);
    assert!(
        old_line.starts_with(&format!(
            "{APPROVER} namespaces=\"countersign-decision\" ssh-ed25519 "
        )),
        "{old_line}"
    );

    // Rotation asks first; cancelling changes nothing.
    e2e.click(r#"[data-testid="rotate-key"]"#).await;
    e2e.wait_for(r#"[data-testid="rotate-confirm"]"#, WAIT)
        .await;
    e2e.click(r#"[data-testid="rotate-cancel"]"#).await;
    e2e.wait_gone(r#"[data-testid="rotate-confirm"]"#, WAIT)
        .await;
    assert_eq!(e2e.text(FINGERPRINT).await, old_fingerprint);
    // Confirmed: a new key, and the rotation is entry 3 of a chain that still verifies.
    e2e.click(r#"[data-testid="rotate-key"]"#).await;
    e2e.click(r#"[data-testid="rotate-confirm-yes"]"#).await;
    let new_fingerprint = e2e
        .wait_text(FINGERPRINT, WAIT, |t| {
            t != old_fingerprint && t.starts_with("SHA256:")
        })
        .await;
    e2e.wait_text(r#"[data-testid="rotate-result"]"#, WAIT, |t| {
        t.contains(&new_fingerprint)
    })
    .await;
    e2e.wait_for(
        &format!(r#"{STATUS}[data-ok="true"][data-verified="3"]"#),
        WAIT,
    )
    .await;
    let new_line = copy(&e2e, "copy-allowed-signers", "allowed_signers").await;
    assert_ne!(new_line, old_line);

    // A decision signed by the new key: entries 4 and 5.
    approve(&e2e, "agent-77", "Plan reviewed, OPS-12").await;
    audit_verified_up_to(&e2e, 5).await;

    // Export the backend's entries over a date range: 1, 2, 4 and 5, without the
    // rotation (it belongs to no backend) — an excerpt of the chain.
    let today = Local::now().date_naive();
    let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    set_value(
        &e2e,
        r#"[data-testid="export-from"]"#,
        &day(today - Days::new(1)),
        "input",
    )
    .await;
    set_value(
        &e2e,
        r#"[data-testid="export-to"]"#,
        &day(today + Days::new(1)),
        "input",
    )
    .await;
    set_value(&e2e, r#"[data-testid="export-backend"]"#, BACKEND, "change").await;
    e2e.wait_text(r#"[data-testid="export-csv"]"#, WAIT, |t| {
        t.contains("Export excerpt")
    })
    .await;
    let csv = e2e.dir.path().join("prod-excerpt.csv");
    e2e.click(r#"[data-testid="export-csv"]"#).await;
    e2e.answer_save_dialog("Export the audit log", &csv);
    e2e.wait_for(
        &format!(r#"{EXPORT_RESULT}[data-ok="true"][data-excerpt="true"]"#),
        WAIT,
    )
    .await;
    let command = e2e.text(r#"[data-testid="audit-export-command"]"#).await;
    assert!(
        command.starts_with("countersign verify --excerpt "),
        "{command}"
    );
    e2e.wait_for(STATUS, WAIT).await;
    e2e.screenshot("audit").await;

    // The checker's allowed_signers: the two lines the copy button gave.
    let signers = e2e.dir.path().join("allowed_signers");
    std::fs::write(&signers, format!("{old_line}\n{new_line}\n")).unwrap();
    let verify = |excerpt: bool| {
        let mut cmd = std::process::Command::new(common::bin("countersign"));
        cmd.arg("verify");
        if excerpt {
            cmd.arg("--excerpt");
        }
        let out = cmd
            .arg(&csv)
            .arg("--allowed-signers")
            .arg(&signers)
            .output()
            .expect("run countersign verify");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = verify(true);
    assert!(ok, "verify --excerpt: {text}");
    assert!(
        text.contains("4 entries, 2 signatures verified"),
        "both decisions, by the old key and the new: {text}"
    );
    // Without --excerpt the gap where the rotation was is a break, as it must be for
    // a file that claims to be the whole chain.
    let (ok, text) = verify(false);
    assert!(
        !ok,
        "an excerpt must not pass as the complete chain: {text}"
    );
    assert!(text.contains("row 3"), "{text}");

    // The excerpt is the backend's rows in chain order.
    let rows = countersign_core::export::read_csv(std::fs::File::open(&csv).unwrap()).unwrap();
    assert_eq!(
        rows.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 4, 5]
    );
    assert!(rows
        .iter()
        .all(|e| e.action.as_deref().is_some_and(|a| a.starts_with("prod/"))));

    // Usable at 800×600: nothing wider than the window, the key's buttons reachable.
    e2e.client()
        .set_window_size(800, 600)
        .await
        .expect("resize the window");
    let fits = e2e
        .js(
            "const v = document.querySelector('[data-testid=\"audit-view\"]');
             return innerWidth <= 800 && v.scrollWidth <= v.clientWidth;",
            vec![],
        )
        .await;
    assert_eq!(fits, json!(true), "the audit view fits 800 pixels");
    e2e.click(r#"[data-testid="copy-fingerprint"]"#).await;
    e2e.wait_for(
        r#"[data-testid="copy-status"][data-what="fingerprint"]"#,
        WAIT,
    )
    .await;
    e2e.screenshot("audit-800x600").await;

    // Still verified after all that, on a fresh check.
    e2e.click(r#"[data-testid="chain-recheck"]"#).await;
    e2e.wait_for(
        &format!(r#"{STATUS}[data-ok="true"][data-verified="5"]"#),
        WAIT,
    )
    .await;
    e2e.close().await;
}

/// A row edited behind the engine's back (its append-only triggers dropped, as an
/// attacker with the file would) shows as the first broken row, with what verified
/// before it, and the view refuses to export the broken chain.
#[tokio::test]
async fn a_tampered_chain_shows_its_first_broken_row_and_is_not_exported() {
    let mut e2e = E2e::start("a_tampered_chain_shows_its_first_broken_row_and_is_not_exported");
    e2e.producer
        .create(&new_action("deploy-9", "Deploy search v4 to production"))
        .await;
    e2e.launch_ready().await;
    approve(&e2e, "deploy-9", "Looks right").await;
    audit_verified_up_to(&e2e, 2).await;

    let db = e2e.data_dir().join(countersign_core::store::DB_FILE);
    assert!(db.is_file(), "the app's database is {}", db.display());
    let conn = rusqlite::Connection::open(&db).unwrap();
    // The app may be writing (sync) at the same moment: wait for it rather than fail.
    conn.busy_timeout(WAIT).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_entries_no_update;
         UPDATE audit_entries SET payload = replace(payload, 'delivered', 'rejected') WHERE seq = 2;",
    )
    .unwrap();
    drop(conn);

    e2e.click(r#"[data-testid="chain-recheck"]"#).await;
    let text = e2e
        .wait_text(
            &format!(r#"{STATUS}[data-ok="false"][data-broken-row="2"][data-verified="1"]"#),
            WAIT,
            |t| t.contains("Broken at row 2 of 2"),
        )
        .await;
    assert!(text.contains("edited"), "says what broke: {text}");
    assert!(text.contains("Verified up to entry 1"), "{text}");
    e2e.axe("audit, broken chain").await;
    e2e.screenshot("audit-broken").await;

    // No dialog opens: the engine refuses before asking where to save.
    e2e.click(r#"[data-testid="export-csv"]"#).await;
    let refused = e2e
        .wait_text(&format!(r#"{EXPORT_RESULT}[data-ok="false"]"#), WAIT, |t| {
            t.contains("broken")
        })
        .await;
    assert!(refused.contains("row 2"), "{refused}");
    e2e.close().await;
}
