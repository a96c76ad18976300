//! The console as people live in it: keyboard-first review, accessibility of every
//! view (axe-core), the inbox at scale, and the window side of notifications.
//!
//! Same harness as tests/e2e_window.rs (Xvfb, tauri-driver, the real app, the
//! reference server); nextest runs these one at a time (group `e2e`).

mod common;
mod e2e;

use common::new_action;
use e2e::{row, E2e, WAIT};

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
