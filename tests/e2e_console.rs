//! The console as people live in it: keyboard-first review, accessibility of every
//! view (axe-core), the inbox at scale, and the window side of notifications (Open from
//! a notification, closing to the tray).
//!
//! Same harness as tests/e2e_window.rs (Xvfb, tauri-driver, the real app, the
//! reference server); nextest runs these one at a time (group `e2e`).

mod common;
mod e2e;
#[path = "common/notification_server.rs"]
mod notification_server;

use std::time::{Duration, Instant};

use common::new_action;
use countersign_core::model::{ActionStatus, ReviewVerdict};
use e2e::{row, E2e, APPROVER, WAIT};
use notification_server::{invoke, next_call, serve_notifications, Call};

const DETAIL: &str = r#"[data-testid="detail"]"#;

/// Sends keys to whatever has focus, as a person typing would.
async fn keys(e2e: &E2e, text: &str) {
    let el = e2e
        .client()
        .active_element()
        .await
        .expect("an active element");
    el.send_keys(text).await.expect("send keys");
}

#[tokio::test]
async fn keyboard_only_approval_with_a_reason() {
    let mut e2e = E2e::start("keyboard_only_approval_with_a_reason");
    let mut first = new_action("kb-1", "Read-only session on prod-billing");
    first.expires_in_secs = Some(300);
    e2e.producer.create(&first).await;
    let mut second = new_action("kb-2", "Deploy api v2 to production");
    second.expires_in_secs = Some(3000);
    e2e.producer.create(&second).await;
    e2e.launch_ready().await;
    e2e.wait_for(&row("kb-2"), WAIT).await;

    // j lands on the first row, j again on the second; Enter opens it.
    keys(&e2e, "j").await;
    keys(&e2e, "j").await;
    e2e.wait_for(
        r#"[data-testid="inbox-row"][data-key="prod/kb-2"]:focus"#,
        WAIT,
    )
    .await;
    keys(&e2e, "\u{E007}").await; // Enter
    e2e.wait_for(r#"[data-testid="detail"][data-key="prod/kb-2"]"#, WAIT)
        .await;
    // ? lists the shortcuts; Esc closes the list.
    keys(&e2e, "?").await;
    e2e.wait_for(r#"[data-testid="shortcuts"]"#, WAIT).await;
    e2e.axe("shortcuts").await;
    keys(&e2e, "\u{E00C}").await; // Escape
    e2e.wait_gone(r#"[data-testid="shortcuts"]"#, WAIT).await;
    // r: write a reason; Enter approves with it.
    keys(&e2e, "r").await;
    e2e.wait_for(r#"[data-testid="reason"]:focus"#, WAIT).await;
    keys(&e2e, "Change CHG-88 approved by CAB").await;
    keys(&e2e, "\u{E007}").await;
    e2e.wait_for(
        r#"[data-testid="decision-result"][data-outcome="delivered"]"#,
        WAIT,
    )
    .await;
    e2e.screenshot("keyboard-approved").await;

    let approved = e2e.producer.get("kb-2").await;
    assert_eq!(approved.snapshot.status, ActionStatus::Approved);
    assert_eq!(approved.snapshot.reviews.len(), 1);
    assert_eq!(approved.snapshot.reviews[0].reviewer, APPROVER);
    assert_eq!(
        approved.snapshot.reviews[0].verdict,
        ReviewVerdict::Approved
    );
    assert_eq!(
        approved.snapshot.reviews[0].comment.as_deref(),
        Some("Change CHG-88 approved by CAB")
    );
    // The other one was only moved over, never decided.
    let untouched = e2e.producer.get("kb-1").await;
    assert!(untouched.snapshot.reviews.is_empty());
    e2e.close().await;
}

#[tokio::test]
async fn several_denied_at_once_each_signed_and_delivered_on_its_own() {
    let mut e2e = E2e::start("several_denied_at_once");
    e2e.require_signatures();
    for id in ["bulk-1", "bulk-2", "bulk-3"] {
        e2e.producer
            .create(&new_action(id, &format!("Shell on db-{id}")))
            .await;
    }
    e2e.launch_ready().await;
    e2e.wait_for(&row("bulk-3"), WAIT).await;
    for id in ["bulk-1", "bulk-3"] {
        e2e.click(&format!(
            r#"[data-testid="row-check"][data-key="prod/{id}"]"#
        ))
        .await;
    }
    e2e.wait_text(r#"[data-testid="checked-count"]"#, WAIT, |t| {
        t.starts_with("2 ")
    })
    .await;
    e2e.type_text(
        r#"[data-testid="bulk-reason"]"#,
        "Change freeze until Monday",
    )
    .await;
    e2e.axe("inbox with a bulk selection").await;
    e2e.click(r#"[data-testid="bulk-deny"]"#).await;
    e2e.wait_text(r#"[data-testid="bulk-result"]"#, WAIT, |t| {
        t.contains("Denied 2 of 2")
    })
    .await;
    e2e.wait_gone(&row("bulk-1"), WAIT).await;
    e2e.wait_gone(&row("bulk-3"), WAIT).await;
    e2e.wait_for(&row("bulk-2"), WAIT).await;

    // The server only accepts decisions signed by the app's key: each arrived signed.
    for id in ["bulk-1", "bulk-3"] {
        let a = e2e.producer.get(id).await;
        assert_eq!(a.snapshot.status, ActionStatus::Denied, "{id}");
        assert_eq!(a.snapshot.reviews.len(), 1, "{id}: exactly one decision");
        assert_eq!(
            a.snapshot.reviews[0].comment.as_deref(),
            Some("Change freeze until Monday")
        );
    }
    assert_eq!(
        e2e.producer.get("bulk-2").await.snapshot.status,
        ActionStatus::Pending
    );
    e2e.close().await;
}

#[tokio::test]
async fn inbox_and_detail_have_no_serious_accessibility_violations() {
    let mut e2e = E2e::start("inbox_and_detail_axe");
    let mut a = new_action("axe-1", "Read-only session on prod-billing");
    a.summary = "For the quarterly report".into();
    e2e.producer.create(&a).await;
    e2e.launch_ready().await;
    e2e.wait_for(&row("axe-1"), WAIT).await;
    assert!(e2e.axe("inbox").await > 0, "axe ran no rules");
    e2e.click(&row("axe-1")).await;
    e2e.wait_for(r#"[data-testid="detail-title"]"#, WAIT).await;
    assert!(e2e.axe("detail").await > 0);
    e2e.close().await;
}

/// The app's top-level X windows named "Countersign" that are mapped (shown).
fn visible_windows(e2e: &E2e) -> Vec<u32> {
    let out = std::process::Command::new("xdotool")
        .args(["search", "--onlyvisible", "--name", "^Countersign$"])
        .env("DISPLAY", e2e.xvfb.name())
        .output()
        .expect("xdotool (apt-get install xdotool)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// What a window manager sends when a person clicks the window's close button:
/// a WM_PROTOCOLS client message carrying WM_DELETE_WINDOW.
fn ask_to_close(e2e: &E2e, window: u32) {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ClientMessageEvent, ConnectionExt, EventMask};
    let (conn, _) = x11rb::connect(Some(&e2e.xvfb.name())).expect("connect to Xvfb");
    let atom = |name: &[u8]| {
        conn.intern_atom(false, name)
            .expect("intern_atom")
            .reply()
            .expect("atom")
            .atom
    };
    let protocols = atom(b"WM_PROTOCOLS");
    let delete = atom(b"WM_DELETE_WINDOW");
    let event = ClientMessageEvent::new(32, window, protocols, [delete, 0, 0, 0, 0]);
    conn.send_event(false, window, EventMask::NO_EVENT, event)
        .expect("send_event");
    conn.flush().expect("flush");
}

async fn until_visible(e2e: &E2e, visible: bool) {
    let end = Instant::now() + WAIT;
    while visible_windows(e2e).is_empty() == visible {
        if Instant::now() > end {
            e2e.fail(&format!("the window never became visible={visible}"))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 7, the window side: closing the window keeps the app running in the tray
/// (the default `close_to_tray`); a notification's Open brings the window back on
/// that action.
#[tokio::test]
async fn closing_keeps_the_app_and_open_from_a_notification_shows_the_action() {
    let mut e2e = E2e::start("close_to_tray_then_open_from_notification");
    let (conn, mut calls) = serve_notifications(e2e.bus_address()).await;
    e2e.producer
        .create(&new_action("seen-1", "Already waiting"))
        .await;
    e2e.launch_ready().await;
    e2e.wait_for(&row("seen-1"), WAIT).await;
    until_visible(&e2e, true).await;
    let pid = e2e.app_pid().expect("the app process");

    // Close as a person would: the window goes, the app stays.
    for window in visible_windows(&e2e) {
        ask_to_close(&e2e, window);
    }
    until_visible(&e2e, false).await;
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "closing the window quit the app"
    );

    // A request arrives while the window is hidden: a notification with Open.
    e2e.producer
        .create(&new_action("late-1", "Break-glass shell on payments-db"))
        .await;
    let id = loop {
        match next_call(&mut calls).await {
            Call::Notify {
                id,
                summary,
                body,
                actions,
                ..
            } if summary.contains("Break-glass") || body.contains("Break-glass") => {
                assert!(actions.iter().any(|a| a == "open"), "{actions:?}");
                break id;
            }
            _ => continue,
        }
    };
    invoke(&conn, id, "open").await;
    until_visible(&e2e, true).await;
    e2e.wait_for(r#"[data-testid="detail"][data-key="prod/late-1"]"#, WAIT)
        .await;
    e2e.wait_for(DETAIL, WAIT).await;
    e2e.close().await;
}
