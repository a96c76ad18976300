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

    // Usable at 800×600: nothing wider than the window, the decision within reach.
    e2e.client()
        .set_window_size(800, 600)
        .await
        .expect("resize the window");
    let end = Instant::now() + WAIT;
    loop {
        let fits = e2e
            .js(
                "const r = document.querySelector('[data-testid=\"approve\"]').getBoundingClientRect();
                 const d = document.documentElement;
                 return innerWidth <= 800 && d.scrollWidth <= d.clientWidth
                   && r.bottom <= innerHeight && r.right <= innerWidth && r.width > 0;",
                vec![],
            )
            .await;
        if fits == serde_json::json!(true) {
            break;
        }
        if Instant::now() > end {
            e2e.fail("at 800x600 the window overflows or Approve is out of view")
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    e2e.screenshot("inbox-800x600").await;
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

/// Closes the window as a person would, and waits until it is gone. Asks again each
/// second while it is still shown: a close request that reaches the toplevel before
/// GTK is ready to act on it is simply lost, as a person's first click would be.
async fn close_until_hidden(e2e: &E2e) {
    let end = Instant::now() + WAIT;
    loop {
        let shown = visible_windows(e2e);
        if shown.is_empty() {
            return;
        }
        if Instant::now() > end {
            e2e.fail("the window never closed to the tray").await;
        }
        for window in shown {
            ask_to_close(e2e, window);
        }
        let again = Instant::now() + Duration::from_secs(1);
        while Instant::now() < again && !visible_windows(e2e).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
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
    close_until_hidden(&e2e).await;
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

/// A StatusNotifierWatcher the test owns on the app's session bus, as a desktop's
/// panel would: the app's tray icon (libayatana-appindicator) registers with it, and
/// the test then reads the icon and drives its menu over D-Bus (com.canonical.dbusmenu),
/// exactly as the panel does when a person clicks.
struct Watcher {
    items: tokio::sync::mpsc::UnboundedSender<(String, String)>,
}

#[zbus::interface(name = "org.kde.StatusNotifierWatcher")]
impl Watcher {
    async fn register_status_notifier_item(
        &self,
        service: String,
        #[zbus(header)] header: zbus::message::Header<'_>,
    ) {
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        let _ = self.items.send((sender, service));
    }

    async fn register_status_notifier_host(&self, _service: String) {}

    #[zbus(property)]
    async fn registered_status_notifier_items(&self) -> Vec<String> {
        Vec::new()
    }

    #[zbus(property)]
    async fn is_status_notifier_host_registered(&self) -> bool {
        true
    }

    #[zbus(property)]
    async fn protocol_version(&self) -> i32 {
        0
    }
}

/// The tray icon as the panel sees it: who serves it, where, and its menu.
struct TrayIcon {
    conn: zbus::Connection,
    owner: String,
    path: String,
}

impl TrayIcon {
    async fn property(&self, name: &str) -> zbus::zvariant::OwnedValue {
        let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination(self.owner.as_str())
            .unwrap()
            .path(self.path.as_str())
            .unwrap()
            .build()
            .await
            .unwrap();
        props
            .get(
                zbus::names::InterfaceName::try_from("org.kde.StatusNotifierItem").unwrap(),
                name,
            )
            .await
            .unwrap_or_else(|e| panic!("tray property {name}: {e}"))
    }

    async fn label(&self) -> String {
        String::try_from(self.property("XAyatanaLabel").await).unwrap_or_default()
    }

    async fn menu_path(&self) -> String {
        let path = zbus::zvariant::OwnedObjectPath::try_from(self.property("Menu").await)
            .expect("Menu is an object path");
        path.to_string()
    }

    /// The menu's top-level items: (id, label).
    async fn menu(&self) -> Vec<(i32, String)> {
        use zbus::zvariant::{OwnedValue, Structure};
        let menu = self.menu_path().await;
        let reply = self
            .conn
            .call_method(
                Some(self.owner.as_str()),
                menu.as_str(),
                Some("com.canonical.dbusmenu"),
                "GetLayout",
                &(0i32, -1i32, Vec::<String>::new()),
            )
            .await
            .expect("GetLayout");
        type Node = (
            i32,
            std::collections::HashMap<String, OwnedValue>,
            Vec<OwnedValue>,
        );
        let (_revision, (_id, _props, children)): (u32, Node) =
            reply.body().deserialize().expect("layout");
        children
            .into_iter()
            .filter_map(|child| {
                let s = Structure::try_from(child).ok()?;
                let fields = s.into_fields();
                let id = i32::try_from(&fields[0]).ok()?;
                let props = std::collections::HashMap::<String, OwnedValue>::try_from(
                    fields[1].try_clone().ok()?,
                )
                .ok()?;
                let label = props
                    .get("label")
                    .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
                    .unwrap_or_default();
                Some((id, label.replace('_', "")))
            })
            .collect()
    }

    /// What the panel sends when a person clicks a menu item.
    async fn click(&self, label: &str) {
        let items = self.menu().await;
        let id = items
            .iter()
            .find(|(_, l)| l == label)
            .unwrap_or_else(|| panic!("no menu item {label:?} in {items:?}"))
            .0;
        let menu = self.menu_path().await;
        self.conn
            .call_method(
                Some(self.owner.as_str()),
                menu.as_str(),
                Some("com.canonical.dbusmenu"),
                "Event",
                &(id, "clicked", zbus::zvariant::Value::from(0i32), 0u32),
            )
            .await
            .expect("Event clicked");
    }
}

/// Issue 7's tray: the pending count on the icon, and its menu (Open, Pause
/// notifications for 1 h, Quit) doing what it says.
#[tokio::test]
async fn the_tray_shows_the_pending_count_and_its_menu_works() {
    let mut e2e = E2e::start("tray_count_and_menu");
    let (tx, mut items) = tokio::sync::mpsc::unbounded_channel();
    let conn = zbus::connection::Builder::address(e2e.bus_address())
        .unwrap()
        .serve_at("/StatusNotifierWatcher", Watcher { items: tx })
        .unwrap()
        .name("org.kde.StatusNotifierWatcher")
        .unwrap()
        .build()
        .await
        .expect("own org.kde.StatusNotifierWatcher");
    let (_notes, _calls) = serve_notifications(e2e.bus_address()).await;
    for id in ["t-1", "t-2"] {
        e2e.producer.create(&new_action(id, "Waiting")).await;
    }
    e2e.launch_ready().await;
    let (owner, service) = tokio::time::timeout(WAIT, items.recv())
        .await
        .expect("the tray icon registered with the watcher")
        .expect("watcher alive");
    // appindicator registers by object path; other hosts by bus name.
    let (owner, path) = if service.starts_with('/') {
        (owner, service)
    } else {
        (service, "/StatusNotifierItem".to_owned())
    };
    let tray = TrayIcon { conn, owner, path };

    // The count follows the inbox.
    let end = Instant::now() + WAIT;
    while tray.label().await != "2" {
        assert!(Instant::now() < end, "tray label: {:?}", tray.label().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    e2e.producer.create(&new_action("t-3", "Waiting")).await;
    while tray.label().await != "3" {
        assert!(Instant::now() < end + WAIT, "tray label after a new action");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let labels: Vec<String> = tray.menu().await.into_iter().map(|(_, l)| l).collect();
    assert_eq!(labels, ["Open", "Pause notifications for 1 h", "Quit"]);

    // Pause: the window says notifications are paused.
    tray.click("Pause notifications for 1 h").await;
    e2e.wait_text(r#"[data-testid="notifications-paused"]"#, WAIT, |t| {
        t.contains("paused until")
    })
    .await;

    // Close to the tray, then Open from the tray brings the window back.
    until_visible(&e2e, true).await;
    close_until_hidden(&e2e).await;
    tray.click("Open").await;
    until_visible(&e2e, true).await;

    // Quit ends the app.
    let pid = e2e.app_pid().expect("the app process");
    tray.click("Quit").await;
    let end = Instant::now() + WAIT;
    while std::path::Path::new(&format!("/proc/{pid}/exe")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    {
        assert!(
            Instant::now() < end,
            "Quit from the tray did not end the app"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 8's inbox at scale, in the real app: 10,000 pending requests from the
/// reference server. Only a window of rows is in the DOM; scrolling to the end shows
/// the last one; filtering narrows to one. Figures are printed, not asserted.
#[tokio::test]
async fn ten_thousand_pending_requests_stay_a_window_of_rows() {
    const N: usize = 10_000;
    let mut e2e = E2e::start("ten_thousand_pending");
    let started = Instant::now();
    // Created concurrently, a few at a time, through the server's own API.
    let producer = std::sync::Arc::new(common::Producer::new(&e2e.server.url()));
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..8 {
        let producer = producer.clone();
        tasks.spawn(async move {
            for i in (chunk..N).step_by(8) {
                let mut a = new_action(&format!("bulk-{i:05}"), &format!("Request number {i:05}"));
                a.requester = format!("user{}@example.com", i % 40);
                a.expires_in_secs = Some(3600 + i as u64);
                producer.create(&a).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("create task");
    }
    eprintln!(
        "10k: created {N} on the server in {:.1?}",
        started.elapsed()
    );

    let launched = Instant::now();
    e2e.launch_ready().await;
    let end = Instant::now() + Duration::from_secs(240);
    loop {
        let count = e2e
            .js(
                "const c = document.querySelector('[data-testid=\"inbox-count\"]'); return c ? c.textContent : '';",
                vec![],
            )
            .await;
        if count == serde_json::json!(N.to_string()) {
            break;
        }
        assert!(Instant::now() < end, "inbox count stuck at {count}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "10k: all {N} in the window {:.1?} after launch",
        launched.elapsed()
    );
    let drawn = e2e.count(r#"[data-testid="inbox-row"]"#).await;
    assert!(drawn > 0 && drawn < 100, "{drawn} rows in the DOM for {N}");

    // Soonest expiry first: the last row is the one expiring last.
    let scrolled = Instant::now();
    e2e.js(
        "const s = document.querySelector('[data-testid=\"inbox-list\"]'); s.scrollTop = s.scrollHeight; return null;",
        vec![],
    )
    .await;
    e2e.wait_for(&row(&format!("bulk-{:05}", N - 1)), WAIT)
        .await;
    eprintln!("10k: scrolled to the end in {:.1?}", scrolled.elapsed());
    let drawn = e2e.count(r#"[data-testid="inbox-row"]"#).await;
    assert!(drawn < 100, "{drawn} rows in the DOM after scrolling");

    let filtered = Instant::now();
    e2e.type_text(r#"[data-testid="inbox-filter"]"#, "number 04242")
        .await;
    e2e.wait_text(r#"[data-testid="inbox-count"]"#, WAIT, |t| {
        t == format!("1 of {N}")
    })
    .await;
    eprintln!("10k: filtered to one in {:.1?}", filtered.elapsed());
    e2e.wait_for(&row("bulk-04242"), WAIT).await;
    e2e.close().await;
}
