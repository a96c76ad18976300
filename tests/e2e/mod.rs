//! End-to-end harness: the real `countersign-app` window under Xvfb, driven through
//! tauri-driver → WebKitWebDriver by a WebDriver client (fantoccini), against the
//! reference server running as its own process.
//!
//! Every [`E2e`] owns its own X display, private D-Bus session bus with an unlocked
//! gnome-keyring (the app's signing key lives in the Secret Service), reference server,
//! temp config/data/home directory, tauri-driver and app session. Dropping it (also on
//! panic) ends the WebDriver session and kills everything it started, by process id.
//!
//! Screenshots land in `target/e2e-screenshots/<name>.png`; the output of tauri-driver,
//! WebKitWebDriver and the app goes to `target/e2e-logs/<test>.log`.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use crate::common::{self, Producer, ServerProcess};

/// Who decides in the window (`approver` in the generated config.toml).
pub const APPROVER: &str = "e2e@example.com";
/// The one backend of the generated config; action keys are `prod/<id>`.
pub const BACKEND: &str = "prod";
/// The environment variable the config names as `token_env`.
pub const TOKEN_ENV: &str = "E2E_TOKEN";
/// Default deadline for anything the window should show.
pub const WAIT: Duration = Duration::from_secs(15);

const POLL: Duration = Duration::from_millis(100);

/// The action key the window uses for an id on the E2E backend.
pub fn key(id: &str) -> String {
    format!("{BACKEND}/{id}")
}

/// CSS selector for the inbox row of the action with server id `id`.
pub fn row(id: &str) -> String {
    format!(r#"[data-testid="inbox-row"][data-key="{}"]"#, key(id))
}

// --- tools ------------------------------------------------------------------------

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A tool the harness cannot run without, with how to install it when it is missing.
fn require(name: &str, extra: &[PathBuf], install: &str) -> PathBuf {
    on_path(name)
        .or_else(|| extra.iter().find(|p| p.is_file()).cloned())
        .unwrap_or_else(|| {
            panic!("E2E: `{name}` not found (PATH or {extra:?}); install it with: {install}")
        })
}

fn tauri_driver_bin() -> PathBuf {
    let mut extra = Vec::new();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        extra.push(PathBuf::from(home).join("bin/tauri-driver"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        extra.push(PathBuf::from(home).join(".cargo/bin/tauri-driver"));
    }
    require(
        "tauri-driver",
        &extra,
        "`cargo install tauri-driver --locked` (scripts/setup.sh does it)",
    )
}

fn webkit_webdriver_bin() -> PathBuf {
    require(
        "WebKitWebDriver",
        &[PathBuf::from("/usr/bin/WebKitWebDriver")],
        "`apt-get install webkit2gtk-driver`",
    )
}

/// The repository (the test crate is the workspace root package).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/` of this build (the test binary is `target/debug/deps/e2e_window-…`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .expect("target dir of the test binary")
        .to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Sends `signal` to a process (negative id: a process group) through `kill(1)`.
fn signal(id: i64, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", &id.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn wait_exit(child: &mut Child, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The process group of a process, from /proc.
fn proc_pgrp(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Live processes in process group `pgrp`.
fn group_members(pgrp: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_pgrp(pid) == Some(pgrp))
        .collect()
}

// --- Xvfb -------------------------------------------------------------------------

/// A private X server on the first free display in :90..:120.
pub struct Xvfb {
    child: Child,
    pub display: u32,
}

impl Xvfb {
    pub fn start() -> Self {
        let bin = require("Xvfb", &[], "`apt-get install xvfb`");
        for n in 90..=120u32 {
            let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
            if lock_is_live(n) || UnixStream::connect(&socket).is_ok() {
                continue; // someone else's display
            }
            let mut child = Command::new(&bin)
                .arg(format!(":{n}"))
                .args(["-screen", "0", "1280x800x24", "-nolisten", "tcp"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("E2E: cannot start {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                // A connectable socket means the server accepts clients (a stale socket
                // file from a killed server refuses connections).
                if UnixStream::connect(&socket).is_ok() {
                    return Self { child, display: n };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // lost a race for this display: try the next one
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("E2E: Xvfb :{n} did not come up within 10 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("E2E: no free X display in :90..:120");
    }

    pub fn name(&self) -> String {
        format!(":{}", self.display)
    }
}

/// Whether /tmp/.X<n>-lock names a running process.
fn lock_is_live(n: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/tmp/.X{n}-lock")) else {
        return false;
    };
    match text.trim().parse::<u32>() {
        Ok(pid) => Path::new(&format!("/proc/{pid}")).exists(),
        Err(_) => true,
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM lets Xvfb remove its lock file and socket.
        signal(i64::from(self.child.id()), "TERM");
        if !wait_exit(&mut self.child, Duration::from_secs(3)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// --- private session bus ----------------------------------------------------------

/// A private D-Bus session bus, so the app never talks to (or autolaunches) another.
/// It activates nothing on its own (no accessibility bus, portals or dconf spawned
/// behind the test's back): services a test needs go into `<dir>/services` or are
/// started explicitly.
struct SessionBus {
    child: Child,
    address: String,
}

impl SessionBus {
    fn start(dir: &Path, env: Vec<(String, String)>) -> Option<Self> {
        let bin = require("dbus-daemon", &[], "`apt-get install dbus`");
        let services = dir.join("services");
        std::fs::create_dir_all(&services).ok()?;
        let config = dir.join("session.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.display(),
                services.display()
            ),
        )
        .ok()?;
        let mut child = Command::new(bin)
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            // Services it activates run with the test's HOME/XDG dirs, in its group.
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok()?;
        let mut out = child.stdout.take()?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).ok()? == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let address = String::from_utf8(line).ok()?;
        if address.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        Some(Self { child, address })
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        // The daemon and whatever it activated (they stay in its process group).
        let pgrp = self.child.id();
        signal(-i64::from(pgrp), "TERM");
        if !wait_exit(&mut self.child, Duration::from_secs(2)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !group_members(pgrp).is_empty() {
            signal(-i64::from(pgrp), "KILL");
        }
    }
}

/// gnome-keyring as the Secret Service on the private bus, with a fresh, unlocked login
/// keyring under the test's XDG_DATA_HOME: the app keeps its signing key there.
struct Keyring {
    child: Child,
}

impl Keyring {
    fn start(env: Vec<(String, String)>) -> Self {
        let bin = require(
            "gnome-keyring-daemon",
            &[],
            "`apt-get install gnome-keyring`",
        );
        let send = require("dbus-send", &[], "`apt-get install dbus`");
        let mut child = Command::new(bin)
            .args(["--foreground", "--components=secrets", "--unlock"])
            .env_clear()
            .envs(env.clone())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("E2E: cannot start gnome-keyring-daemon");
        // --unlock reads the password from stdin (until EOF).
        let mut stdin = child.stdin.take().expect("keyring stdin");
        stdin
            .write_all(b"countersign-e2e")
            .expect("keyring password");
        drop(stdin);
        let mut keyring = Self { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let owned = Command::new(&send)
                .args([
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .env_clear()
                .envs(env.clone())
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"));
            if owned {
                return keyring;
            }
            if let Ok(Some(status)) = keyring.child.try_wait() {
                panic!("E2E: gnome-keyring-daemon exited ({status}) before serving");
            }
            assert!(
                Instant::now() < deadline,
                "E2E: gnome-keyring-daemon did not own org.freedesktop.secrets within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        signal(i64::from(self.child.id()), "TERM");
        if !wait_exit(&mut self.child, Duration::from_secs(2)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// --- the harness ------------------------------------------------------------------

/// One E2E run: display, bus, server, config and (after [`E2e::launch`]) the app window.
pub struct E2e {
    name: String,
    client: Option<Client>,
    session: Option<String>,
    driver: Option<Child>,
    driver_port: u16,
    pub producer: Producer,
    pub server: ServerProcess,
    keyring: Keyring,
    bus: SessionBus,
    pub xvfb: Xvfb,
    /// Holds config.toml, state.sqlite, data/, home/ (deleted last).
    pub dir: tempfile::TempDir,
    /// How long the last [`E2e::launch`] took (tauri-driver up + session + window).
    pub launch_time: Duration,
}

impl E2e {
    /// Starts Xvfb, a private session bus and the reference server, and writes the
    /// config; the app is not started yet, so a test can create actions first.
    pub fn start(name: &str) -> Self {
        // Fail on missing tools before starting anything.
        tauri_driver_bin();
        webkit_webdriver_bin();
        require("dbus-daemon", &[], "`apt-get install dbus`");
        require(
            "gnome-keyring-daemon",
            &[],
            "`apt-get install gnome-keyring`",
        );
        let dir = tempfile::Builder::new()
            .prefix("countersign-e2e-")
            .tempdir()
            .expect("temp dir");
        for sub in [
            "data",
            "home",
            "xdg-data",
            "xdg-config",
            "xdg-cache",
            "run",
            "bus",
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("temp sub dir");
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .expect("chmod XDG_RUNTIME_DIR");

        let started = Instant::now();
        let xvfb = Xvfb::start();
        let bus = SessionBus::start(&dir.path().join("bus"), base_env(dir.path(), &xvfb))
            .expect("E2E: the private dbus-daemon did not start");
        let mut keyring_env = base_env(dir.path(), &xvfb);
        keyring_env.push(("DBUS_SESSION_BUS_ADDRESS".into(), bus.address.clone()));
        let keyring = Keyring::start(keyring_env);
        let server = ServerProcess::start(&dir.path().join("state.sqlite"), "127.0.0.1:0");
        let producer = Producer::new(&server.url());
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "approver = \"{APPROVER}\"\n\n[[backend]]\nname = \"{BACKEND}\"\n\
                 kind = \"countersign\"\nurl = \"{}\"\ntoken_env = \"{TOKEN_ENV}\"\n",
                server.url()
            ),
        )
        .expect("write config.toml");
        eprintln!(
            "E2E[{name}]: display {}, bus, keyring and server up in {:.1?}",
            xvfb.name(),
            started.elapsed()
        );
        Self {
            name: name.to_owned(),
            client: None,
            session: None,
            driver: None,
            driver_port: 0,
            producer,
            server,
            keyring,
            bus,
            xvfb,
            dir,
            launch_time: Duration::ZERO,
        }
    }

    /// The private session bus the app runs on (for a test's own D-Bus services).
    pub fn bus_address(&self) -> &str {
        &self.bus.address
    }

    /// Makes the reference server accept only decisions signed by the app's own key:
    /// the key is made in this session's keyring by `countersign key show` (the same
    /// engine, bus and keyring the app uses), then the server restarts on the same
    /// address and state with `--allowed-signers`.
    pub fn require_signatures(&mut self) -> PathBuf {
        let out = std::process::Command::new(common::bin("countersign"))
            .args(["key", "show"])
            .env_clear()
            .envs(self.app_env())
            .output()
            .expect("countersign key show");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "key show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("allowed_signers"))
            .expect("an allowed_signers line")
            .trim()
            .to_owned();
        let signers = self.dir.path().join("allowed_signers");
        std::fs::write(&signers, format!("{line}\n")).expect("write allowed_signers");
        let addr = self.server.addr.to_string();
        self.server.kill9();
        self.server = ServerProcess::start_with(
            &self.dir.path().join("state.sqlite"),
            &addr,
            &["--allowed-signers".as_ref(), signers.as_os_str()],
        );
        signers
    }

    /// Answers the system's save dialog (GTK, under this test's Xvfb) with `path`, as a
    /// person would: wait for the dialog by its title, type the path, press Enter.
    pub fn answer_save_dialog(&self, title: &str, path: &Path) {
        let xdotool = require("xdotool", &[], "`apt-get install xdotool`");
        let run = |args: &[&str]| {
            std::process::Command::new(&xdotool)
                .args(args)
                .env("DISPLAY", self.xvfb.name())
                .output()
                .expect("xdotool")
        };
        let deadline = Instant::now() + WAIT;
        let window = loop {
            let found = run(&["search", "--name", title]);
            let id = String::from_utf8_lossy(&found.stdout)
                .lines()
                .next()
                .map(str::to_owned);
            if let Some(id) = id {
                break id;
            }
            assert!(Instant::now() < deadline, "no save dialog titled {title:?}");
            std::thread::sleep(POLL);
        };
        // The dialog's name field has focus with the suggested name selected. A dialog
        // that is mapped but not yet taking input (seen under load in CI) loses what is
        // typed, as it would a person's first keystrokes: so the answer is given again,
        // whole (select all, the path, Return), while the dialog is still there.
        loop {
            run(&["windowfocus", "--sync", &window]);
            run(&["key", "--window", &window, "ctrl+a"]);
            run(&[
                "type",
                "--window",
                &window,
                "--delay",
                "20",
                &path.display().to_string(),
            ]);
            run(&["key", "--window", &window, "Return"]);
            let again = Instant::now() + Duration::from_secs(3);
            while Instant::now() < again {
                let still = run(&["search", "--onlyvisible", "--name", title]);
                if still.stdout.is_empty() {
                    return;
                }
                std::thread::sleep(POLL);
            }
            assert!(
                Instant::now() < deadline,
                "the save dialog {title:?} did not take the answer"
            );
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The environment tauri-driver gets; WebKitWebDriver and the app inherit it.
    /// Built from scratch so nothing of the caller's desktop (Wayland, a real bus, a
    /// real keyring, real config) leaks in.
    pub fn app_env(&self) -> Vec<(String, String)> {
        let p = |sub: &str| self.dir.path().join(sub).display().to_string();
        let mut env = base_env(self.dir.path(), &self.xvfb);
        env.extend([
            ("COUNTERSIGN_CONFIG".into(), p("config.toml")),
            ("COUNTERSIGN_DATA_DIR".into(), p("data")),
            (TOKEN_ENV.into(), common::TOKEN.into()),
            // No accessibility bus: nothing to activate, nothing left behind.
            ("NO_AT_BRIDGE".into(), "1".into()),
        ]);
        env.push(("DBUS_SESSION_BUS_ADDRESS".into(), self.bus.address.clone()));
        env
    }

    /// Starts tauri-driver and opens a WebDriver session, which launches the app.
    pub async fn launch(&mut self) {
        assert!(self.client.is_none(), "launch called twice");
        let started = Instant::now();
        let driver_bin = tauri_driver_bin();
        let native = webkit_webdriver_bin();
        let port = free_port();
        let native_port = free_port();
        let logs = target_dir().join("e2e-logs");
        std::fs::create_dir_all(&logs).expect("target/e2e-logs");
        let log_path = logs.join(format!("{}.log", self.name));
        let log = File::create(&log_path).expect("log file");
        let mut cmd = Command::new(&driver_bin);
        cmd.args(["--port", &port.to_string()])
            .args(["--native-port", &native_port.to_string()])
            .arg("--native-driver")
            .arg(&native)
            .current_dir(self.dir.path())
            .env_clear()
            .envs(self.app_env())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            // Its own process group: WebKitWebDriver and the app join it, so teardown can
            // reach all of them even if tauri-driver dies first.
            .process_group(0);
        let driver = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("E2E: cannot start {}: {e}", driver_bin.display()));
        self.driver = Some(driver);
        self.driver_port = port;

        // tauri-driver answers on `port` before WebKitWebDriver listens on `native_port`;
        // a session request in between fails with "client error (Connect)".
        let deadline = Instant::now() + Duration::from_secs(10);
        for (what, p) in [("tauri-driver", port), ("WebKitWebDriver", native_port)] {
            let addr = SocketAddr::from(([127, 0, 0, 1], p));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Ok(Some(status)) = self.driver.as_mut().unwrap().try_wait() {
                    panic!(
                        "E2E: tauri-driver exited ({status}) before {what} listened; log {}:\n{}",
                        log_path.display(),
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "E2E: {what} did not listen on {p} within 10 s; see {}",
                    log_path.display()
                );
                std::thread::sleep(Duration::from_millis(25));
            }
        }

        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("wry"));
        caps.insert(
            "tauri:options".into(),
            json!({ "application": env!("CARGO_BIN_EXE_countersign-app") }),
        );
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let url = format!("http://127.0.0.1:{port}");
        let mut attempt = 1;
        let client = loop {
            match builder.connect(&url).await {
                Ok(client) => break client,
                // A driver that is listening but not serving yet: try again, briefly.
                Err(e) if attempt < 3 && e.to_string().contains("Connect") => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!(
                    "E2E: no WebDriver session (the app did not start?): {e}; log {}:\n{}",
                    log_path.display(),
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ),
            }
        };
        // Teardown is ours (also on panic, where no async runtime can be relied on).
        client.persist().await.expect("persist");
        self.session = client.session_id().await.expect("session id");
        self.client = Some(client);
        self.launch_time = started.elapsed();
        eprintln!(
            "E2E[{}]: app up in {:.1?} on display {}",
            self.name,
            self.launch_time,
            self.xvfb.name()
        );
    }

    /// Launches the app and waits for the first inbox load (`[data-testid="app-ready"]`).
    pub async fn launch_ready(&mut self) {
        self.launch().await;
        self.wait_for(r#"[data-testid="app-ready"]"#, WAIT).await;
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("E2e::launch first")
    }

    /// Process id of the app (the `countersign-app` in tauri-driver's process group).
    pub fn app_pid(&self) -> Option<u32> {
        let pgrp = self.driver.as_ref()?.id();
        let app = Path::new(env!("CARGO_BIN_EXE_countersign-app"));
        // `/proc/<pid>/exe` reads "<path> (deleted)" once a rebuild replaced the file.
        let deleted = format!("{} (deleted)", app.display());
        group_members(pgrp).into_iter().find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe == app || exe.as_os_str() == deleted.as_str())
        })
    }

    /// The environment the running app process actually has (from /proc).
    pub fn app_process_env(&self) -> Vec<(String, String)> {
        let pid = self.app_pid().expect("app process not found");
        let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
        raw.split(|&b| b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect()
    }

    // --- DOM helpers --------------------------------------------------------------

    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client()
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find_all({css}): {e}"))
    }

    pub async fn count(&self, css: &str) -> usize {
        self.find_all(css).await.len()
    }

    /// Polls the DOM until `css` matches; returns the first match. On timeout saves a
    /// screenshot `<test>-timeout.png` and fails with the page's HTML.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let end = Instant::now() + timeout;
        loop {
            if let Some(el) = self.find_all(css).await.into_iter().next() {
                return el;
            }
            if Instant::now() > end {
                self.fail(&format!("timed out after {timeout:?} waiting for {css}"))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until nothing matches `css`.
    pub async fn wait_gone(&self, css: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while self.count(css).await > 0 {
            if Instant::now() > end {
                self.fail(&format!("timed out after {timeout:?}: {css} still shown"))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until the text of the first `css` match satisfies `pred`; returns it.
    pub async fn wait_text<F: Fn(&str) -> bool>(
        &self,
        css: &str,
        timeout: Duration,
        pred: F,
    ) -> String {
        let end = Instant::now() + timeout;
        loop {
            if let Some(el) = self.find_all(css).await.into_iter().next() {
                if let Ok(text) = el.text().await {
                    if pred(&text) {
                        return text;
                    }
                }
            }
            if Instant::now() > end {
                self.fail(&format!(
                    "timed out after {timeout:?} waiting for the text of {css}"
                ))
                .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Rendered text of the first match (waits for it to appear).
    pub async fn text(&self, css: &str) -> String {
        let el = self.wait_for(css, WAIT).await;
        el.text()
            .await
            .unwrap_or_else(|e| panic!("text({css}): {e}"))
    }

    /// `textContent` of every match, as the DOM holds it (no rendering rules applied).
    pub async fn text_contents(&self, css: &str) -> Vec<String> {
        let v = self
            .js(
                "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent);",
                vec![json!(css)],
            )
            .await;
        serde_json::from_value(v).expect("array of strings")
    }

    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let el = self.wait_for(css, WAIT).await;
        el.attr(name)
            .await
            .unwrap_or_else(|e| panic!("attr({css}, {name}): {e}"))
    }

    pub async fn click(&self, css: &str) {
        let el = self.wait_for(css, WAIT).await;
        if let Err(e) = el.click().await {
            self.fail(&format!("click({css}): {e}")).await;
        }
    }

    /// Types `text` into the first match (waits for it to appear).
    pub async fn type_text(&self, css: &str, text: &str) {
        let el = self.wait_for(css, WAIT).await;
        if let Err(e) = el.send_keys(text).await {
            self.fail(&format!("type_text({css}): {e}")).await;
        }
    }

    pub async fn title(&self) -> String {
        self.client().title().await.expect("document title")
    }

    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client()
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("execute script: {e}"))
    }

    /// Saves a PNG of the window's viewport to `target/e2e-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        // The DOM can be ahead of the last painted frame: wait for two frames so the
        // picture shows what the assertions just saw.
        let _ = self
            .client()
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
                vec![],
            )
            .await;
        let png = self.client().screenshot().await.expect("screenshot");
        let dir = target_dir().join("e2e-screenshots");
        std::fs::create_dir_all(&dir).expect("target/e2e-screenshots");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Runs axe-core (ui/node_modules/axe-core, the version the UI's lockfile pins) on
    /// the page as it is now and fails on any serious or critical violation, naming
    /// the rule and the elements. Returns how many rules passed, so a caller can see
    /// the check did run. `name` labels the failure (which view was checked).
    pub async fn axe(&self, name: &str) -> usize {
        let src = repo_root().join("ui/node_modules/axe-core/axe.min.js");
        let axe = std::fs::read_to_string(&src)
            .unwrap_or_else(|e| panic!("{}: {e} (run `npm --prefix ui ci`)", src.display()));
        // WebDriver scripts run outside the page's CSP, so axe can be injected as-is.
        self.js(&format!("{axe}\n;return typeof window.axe;"), vec![])
            .await;
        let result = self
            .client()
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 window.axe.run(document, {
                   runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
                   resultTypes: ['violations'],
                 }).then(
                   (r) => done({
                     passes: r.passes.length,
                     violations: r.violations
                       .filter((v) => v.impact === 'serious' || v.impact === 'critical')
                       .map((v) => ({
                         id: v.id, impact: v.impact, help: v.help,
                         nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ') + ' :: ' + n.failureSummary),
                       })),
                   }),
                   (e) => done({ error: String(e) }),
                 );",
                vec![],
            )
            .await
            .unwrap_or_else(|e| panic!("axe.run: {e}"));
        if let Some(error) = result.get("error") {
            panic!("E2E[{}]: axe-core failed on {name}: {error}", self.name);
        }
        let violations = result["violations"].as_array().cloned().unwrap_or_default();
        if !violations.is_empty() {
            let text = serde_json::to_string_pretty(&violations).unwrap_or_default();
            self.fail(&format!(
                "axe-core: serious/critical accessibility violations on {name}:\n{text}"
            ))
            .await;
        }
        result["passes"].as_u64().unwrap_or(0) as usize
    }

    /// Fails the test with a screenshot and the page's HTML for the post-mortem.
    pub async fn fail(&self, what: &str) {
        panic!("{}", self.failure_report(what).await);
    }

    /// `what`, plus where the failure screenshot and log are, plus the page's HTML.
    async fn failure_report(&self, what: &str) -> String {
        let shot = match self.client().screenshot().await {
            Ok(png) => {
                let dir = target_dir().join("e2e-screenshots");
                let _ = std::fs::create_dir_all(&dir);
                let path = dir.join(format!("{}-failure.png", self.name));
                let _ = std::fs::write(&path, png);
                path.display().to_string()
            }
            Err(e) => format!("(no screenshot: {e})"),
        };
        let html = self
            .client()
            .source()
            .await
            .unwrap_or_else(|e| format!("(no source: {e})"));
        let html: String = html.chars().take(4000).collect();
        format!(
            "E2E[{}]: {what}\nscreenshot: {shot}\nlog: {}\nHTML (first 4000 chars):\n{html}",
            self.name,
            target_dir()
                .join("e2e-logs")
                .join(format!("{}.log", self.name))
                .display()
        )
    }

    /// Ends the session cleanly; everything else stops when `self` drops.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
            self.session = None;
        }
    }
}

/// The desktop-neutral part of the environment: display, locale, and HOME/XDG dirs
/// inside the test's temp dir.
fn base_env(dir: &Path, xvfb: &Xvfb) -> Vec<(String, String)> {
    let p = |sub: &str| dir.join(sub).display().to_string();
    let mut env = vec![
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
        ("LANG".into(), "C.UTF-8".into()),
        ("DISPLAY".into(), xvfb.name()),
        ("GDK_BACKEND".into(), "x11".into()),
        ("HOME".into(), p("home")),
        ("XDG_DATA_HOME".into(), p("xdg-data")),
        ("XDG_CONFIG_HOME".into(), p("xdg-config")),
        ("XDG_CACHE_HOME".into(), p("xdg-cache")),
        ("XDG_RUNTIME_DIR".into(), p("run")),
    ];
    for pass in ["RUST_LOG", "RUST_BACKTRACE"] {
        if let Ok(v) = std::env::var(pass) {
            env.push((pass.into(), v));
        }
    }
    env
}

/// `DELETE /session/{id}` with plain blocking I/O (no async runtime needed in Drop).
fn delete_session(port: u16, session: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = write!(
        stream,
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
}

impl Drop for E2e {
    fn drop(&mut self) {
        let started = Instant::now();
        // The client holds no session of its own (persisted); dropping it is inert.
        drop(self.client.take());
        if let Some(session) = self.session.take() {
            delete_session(self.driver_port, &session);
        }
        if let Some(mut driver) = self.driver.take() {
            let pgrp = driver.id();
            // tauri-driver, WebKitWebDriver, the app and its web processes.
            signal(-i64::from(pgrp), "TERM");
            if !wait_exit(&mut driver, Duration::from_secs(2)) {
                signal(-i64::from(pgrp), "KILL");
                let _ = driver.wait();
            }
            let end = Instant::now() + Duration::from_secs(2);
            while !group_members(pgrp).is_empty() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !group_members(pgrp).is_empty() {
                signal(-i64::from(pgrp), "KILL");
            }
        }
        eprintln!(
            "E2E[{}]: session and app stopped in {:.1?}",
            self.name,
            started.elapsed()
        );
        // Then the fields drop: server, bus, Xvfb, temp dir.
    }
}
