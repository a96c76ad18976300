//! Native notifications with real parts: `countersign notify` (the headless host) and
//! the reference server as processes, on a private D-Bus session bus where the test
//! itself owns `org.freedesktop.Notifications` and records every call made to it.
//!
//! Each test runs its own `dbus-daemon` (no service activation, so no notification
//! daemon can start behind the test's back) with its own gnome-keyring on it for the
//! signing key: tests run in parallel, and only one process can own the name on a bus.

mod common;
#[path = "common/notification_server.rs"]
mod notification_server;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{new_action, CliEnv, Producer, ServerProcess};
use notification_server::{invoke, next_call, serve_notifications, Call};
use tokio::sync::mpsc;

const APPROVER: &str = "ana@example.com";
/// Upper bound for anything to arrive; the tests wait for events, never for time.
const DEADLINE: Duration = Duration::from_secs(60);

/// A private session bus, with an unlocked gnome-keyring on it.
struct TestBus {
    daemon: Child,
    dir: tempfile::TempDir,
    address: String,
}

impl TestBus {
    fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("cs-bus").tempdir().unwrap();
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.path().display()
            ),
        )
        .unwrap();
        let mut daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (apt: dbus)");
        let mut address = String::new();
        BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        let bus = Self {
            daemon,
            address: address.trim().to_owned(),
            dir,
        };
        std::fs::create_dir_all(bus.runtime_dir()).unwrap();
        std::fs::create_dir_all(bus.dir.path().join("data")).unwrap();
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--components=secrets", "--daemonize", "--unlock"])
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .env("XDG_RUNTIME_DIR", bus.runtime_dir())
            .env("XDG_DATA_HOME", bus.dir.path().join("data"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("gnome-keyring-daemon");
        keyring
            .stdin
            .take()
            .unwrap()
            .write_all(b"countersign-test")
            .unwrap();
        // --daemonize returns once the daemon is on the bus.
        assert!(keyring.wait().unwrap().success());
        bus
    }

    /// gnome-keyring's control socket lives here: one per bus, never shared.
    fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The CLI, on this bus.
    fn cli(&self, env: &CliEnv, args: &[&str]) -> Command {
        let mut c = env.cmd(args);
        c.env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .env_remove("DISPLAY");
        c
    }

    fn ok(&self, env: &CliEnv, args: &[&str]) -> String {
        let out = self.cli(env, args).output().unwrap();
        assert!(
            out.status.success(),
            "countersign {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        // The keyring daemon leaves when its bus goes.
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// `countersign notify` as a process, its stdout lines as a channel.
struct Notify {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Notify {
    fn start(bus: &TestBus, env: &CliEnv) -> Self {
        let mut child = bus
            .cli(env, &["notify"])
            .env("COUNTERSIGN_LOG", "countersign_notify=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line starting with `prefix`; returns it.
    async fn line(&mut self, prefix: &str) -> String {
        let wait = async {
            loop {
                let line = self.lines.recv().await.unwrap_or_else(|| {
                    panic!("notify exited; waiting for {prefix:?}; saw {:?}", self.seen)
                });
                self.seen.push(line.clone());
                if line.starts_with(prefix) {
                    return line;
                }
            }
        };
        match tokio::time::timeout(DEADLINE, wait).await {
            Ok(line) => line,
            Err(_) => panic!("no line {prefix:?}; saw {:?}", self.seen),
        }
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CLI and the reference server it syncs with. `signed`: the server accepts only
/// decisions signed by this CLI's key for [`APPROVER`] (its allowed_signers).
fn setup(bus: &TestBus, signed: bool) -> (CliEnv, ServerProcess) {
    setup_with(bus, signed, "")
}

/// [`setup`] with more config text appended (a `[notifications]` table).
fn setup_with(bus: &TestBus, signed: bool, extra: &str) -> (CliEnv, ServerProcess) {
    let env = CliEnv::new();
    env.write_config(&format!("approver = \"{APPROVER}\"\n"));
    let state = env.dir.path().join("server.db");
    let server = if signed {
        let out = bus.ok(&env, &["key", "show"]);
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix("allowed_signers"))
            .expect("allowed_signers line")
            .trim()
            .to_owned();
        let signers = env.dir.path().join("allowed_signers");
        std::fs::write(&signers, format!("{line}\n")).unwrap();
        ServerProcess::start_with(
            &state,
            "127.0.0.1:0",
            &["--allowed-signers".as_ref(), signers.as_os_str()],
        )
    } else {
        ServerProcess::start(&state, "127.0.0.1:0")
    };
    env.write_config(&format!(
        "approver = \"{APPROVER}\"\n[[backend]]\nname = \"prod\"\nkind = \"countersign\"\n\
         url = \"{}\"\ntoken_env = \"PROD_TOKEN\"\n{extra}",
        server.url()
    ));
    (env, server)
}

fn timeline_kinds(bus: &TestBus, env: &CliEnv, id: &str) -> Vec<String> {
    let detail: serde_json::Value =
        serde_json::from_str(&bus.ok(env, &["show", id, "--json"])).unwrap();
    detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_on_a_notification_reaches_the_server_signed_and_once() {
    let bus = TestBus::start();
    let (conn, mut calls) = serve_notifications(&bus.address).await;
    let (env, server) = setup(&bus, true);
    let producer = Producer::new(&server.url());
    let mut notify = Notify::start(&bus, &env);
    notify.line("notifications: available: test-server").await;

    producer
        .create(&new_action("db-1", "psql to prod-billing"))
        .await;
    let Call::Notify {
        id,
        summary,
        body,
        actions,
        urgency,
    } = next_call(&mut calls).await
    else {
        panic!("expected a Notify first");
    };
    assert_eq!(summary, "psql to prod-billing");
    assert!(
        body.starts_with(
            "Requested by dana@example.com on prod\nResource: prod-billing\nExpires in "
        ),
        "{body}"
    );
    assert_eq!(
        actions,
        ["approve", "Approve", "deny", "Deny", "open", "Open", "default", "Open"]
    );
    assert_eq!(urgency, Some(1), "normal: ten minutes left");

    // Two clicks (a double click, or a server that repeats itself): one decision.
    invoke(&conn, id, "approve").await;
    invoke(&conn, id, "approve").await;
    notify.line("decision prod/db-1 delivered").await;

    let on_server = producer.get("db-1").await;
    assert_eq!(on_server.snapshot.status.as_str(), "approved");
    // The server takes only decisions signed by this CLI's key (allowed_signers).
    assert_eq!(on_server.snapshot.reviews.len(), 1, "exactly once");
    assert_eq!(on_server.snapshot.reviews[0].reviewer, APPROVER);

    let detail: serde_json::Value =
        serde_json::from_str(&bus.ok(&env, &["show", "db-1", "--json"])).unwrap();
    let decisions = detail["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1);
    assert!(decisions[0]["signature"]
        .as_str()
        .is_some_and(|s| s.contains("BEGIN SSH SIGNATURE")));
    let kinds = timeline_kinds(&bus, &env, "db-1");
    for kind in ["notified", "notification_answered", "decided"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_actions_in_a_burst_give_a_handful_of_notifications() {
    let bus = TestBus::start();
    let (_conn, mut calls) = serve_notifications(&bus.address).await;
    let (env, server) = setup(&bus, false);
    let producer = Producer::new(&server.url());
    let mut notify = Notify::start(&bus, &env);
    notify.line("notifications: available").await;

    for i in 0..50 {
        producer
            .create(&new_action(&format!("burst-{i}"), "psql to prod-billing"))
            .await;
    }
    // Every action is covered by some notification: count them as they come.
    let (mut covered, mut notifies) = (0, 0);
    while covered < 50 {
        if let Call::Notify { summary, .. } = next_call(&mut calls).await {
            notifies += 1;
            covered += match summary.strip_suffix(" new requests on prod") {
                Some(n) => n.parse::<usize>().unwrap(),
                None => 1,
            };
        }
    }
    assert_eq!(covered, 50);
    assert!(notifies <= 5, "{notifies} notifications for one burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_decided_elsewhere_withdraws_its_notification() {
    let bus = TestBus::start();
    let (_conn, mut calls) = serve_notifications(&bus.address).await;
    let (env, server) = setup(&bus, false);
    let producer = Producer::new(&server.url());
    let mut notify = Notify::start(&bus, &env);
    notify.line("notifications: available").await;

    let created = producer
        .create(&new_action("db-2", "psql to prod-billing"))
        .await;
    let Call::Notify { id, .. } = next_call(&mut calls).await else {
        panic!("expected a Notify first");
    };
    producer
        .decide_as(
            "db-2",
            "bob@example.com",
            created.snapshot_hash.as_str(),
            "bob-1",
        )
        .await;
    match next_call(&mut calls).await {
        Call::Close(closed) => assert_eq!(closed, id),
        other => panic!("expected CloseNotification({id}), got {other:?}"),
    }
    notify.line("synced prod/db-2").await;
    let kinds = timeline_kinds(&bus, &env, "db-2");
    assert!(
        kinds.iter().any(|k| k == "notification_withdrawn"),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_on_the_body_opens_the_action() {
    let bus = TestBus::start();
    let (conn, mut calls) = serve_notifications(&bus.address).await;
    let (env, server) = setup(&bus, false);
    let producer = Producer::new(&server.url());
    let mut notify = Notify::start(&bus, &env);
    notify.line("notifications: available").await;

    producer
        .create(&new_action("db-3", "psql to prod-billing"))
        .await;
    let Call::Notify { id, .. } = next_call(&mut calls).await else {
        panic!("expected a Notify first");
    };
    invoke(&conn, id, "default").await;
    notify.line("open prod/db-3").await;
    // Opening decides nothing.
    assert!(producer.get("db-3").await.snapshot.reviews.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_notification_server_sync_goes_on_and_says_so() {
    let bus = TestBus::start();
    let (env, server) = setup(&bus, false);
    let producer = Producer::new(&server.url());
    let mut notify = Notify::start(&bus, &env);
    let status = notify.line("notifications: unavailable").await;
    assert!(status.contains("no notification server"), "{status}");

    producer
        .create(&new_action("db-4", "psql to prod-billing"))
        .await;
    notify.line("synced prod/db-4 created").await;
    assert!(notify.child.try_wait().unwrap().is_none(), "still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_on_a_notification_of_a_changed_action_approves_nothing_and_says_why() {
    let bus = TestBus::start();
    let (conn, mut calls) = serve_notifications(&bus.address).await;
    let (env, server) = setup(&bus, false);
    let producer = Producer::new(&server.url());
    let mut notify = Notify::start(&bus, &env);
    notify.line("notifications: available").await;

    let mut two = new_action("db-5", "psql to prod-billing");
    two.approvals_required = Some(2);
    let created = producer.create(&two).await;
    let Call::Notify { id, .. } = next_call(&mut calls).await else {
        panic!("expected a Notify first");
    };
    // Someone else reviews it after the notification was shown: it is still pending,
    // but no longer what the notification showed.
    producer
        .decide_as(
            "db-5",
            "sam@example.com",
            created.snapshot_hash.as_str(),
            "sam-1",
        )
        .await;
    invoke(&conn, id, "approve").await;

    let (summary, body) = loop {
        if let Call::Notify { summary, body, .. } = next_call(&mut calls).await {
            break (summary, body);
        }
    };
    assert_eq!(summary, "Not approved: psql to prod-billing");
    assert!(body.contains("changed since you saw it"), "{body}");
    assert!(body.contains("nothing was decided"), "{body}");
    let on_server = producer.get("db-5").await;
    assert_eq!(on_server.snapshot.reviews.len(), 1, "only sam's review");
    assert_eq!(on_server.snapshot.status.as_str(), "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_on_a_notification_uses_the_default_reason_or_opens_the_window() {
    let bus = TestBus::start();
    let (conn, mut calls) = serve_notifications(&bus.address).await;
    let (env, server) = setup_with(
        &bus,
        false,
        "[notifications]\ndefault_deny_reason = \"not from a popup, ask in #ops\"\n",
    );
    let producer = Producer::new(&server.url());
    let mut notify = Notify::start(&bus, &env);
    notify.line("notifications: available").await;
    producer
        .create(&new_action("db-6", "psql to prod-billing"))
        .await;
    let Call::Notify { id, .. } = next_call(&mut calls).await else {
        panic!("expected a Notify first");
    };
    invoke(&conn, id, "deny").await;
    notify.line("decision prod/db-6 delivered").await;
    let on_server = producer.get("db-6").await;
    assert_eq!(on_server.snapshot.status.as_str(), "denied");
    assert_eq!(
        on_server.snapshot.reviews[0]
            .comment
            .as_deref()
            .map(|c| c.starts_with("not from a popup, ask in #ops")),
        Some(true),
        "{:?}",
        on_server.snapshot.reviews
    );
    drop(notify);

    // Without a default reason, Deny asks for one in the window: nothing is decided.
    let (env, server) = setup(&bus, false);
    let producer = Producer::new(&server.url());
    let mut notify = Notify::start(&bus, &env);
    notify.line("notifications: available").await;
    producer
        .create(&new_action("db-7", "psql to prod-billing"))
        .await;
    let id = loop {
        if let Call::Notify { id, summary, .. } = next_call(&mut calls).await {
            if summary == "psql to prod-billing" {
                break id;
            }
        }
    };
    invoke(&conn, id, "deny").await;
    notify.line("open prod/db-7").await;
    assert!(producer.get("db-7").await.snapshot.reviews.is_empty());
}
