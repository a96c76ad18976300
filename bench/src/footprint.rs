//! Benchmark 5: app footprint. The real `countersign-app` and a bare Tauri v2 window
//! (`bench/hello`, built with the same profile in the same run) are each launched cold
//! N times, in turns, on a private X display through tauri-driver → WebKitWebDriver (the
//! way the E2E harness drives the app, without depending on it), each time with empty
//! HOME/XDG directories, so the app makes its first start: no config file, hence the
//! embedded demo server, an empty store.
//!
//! - **Start-up**: from the WebDriver session request (which makes WebKitWebDriver start
//!   the binary) to the first page painted with `[data-testid="app-ready"]`: the app sets
//!   it once the first inbox load is in the DOM, the hello page on its first animation
//!   frame. "Painted" is two animation frames later (a `requestAnimationFrame` callback
//!   runs before its frame is painted; the second one runs after the first was).
//! - **Idle RSS**: after a few idle seconds, the sum of `VmRSS` over the binary's
//!   process and all its descendants (WebKitWebProcess, WebKitNetworkProcess, and any
//!   sandbox helpers), found by walking parent ids in /proc. PSS (shared pages split
//!   between the processes sharing them) is printed beside it.
//!
//! Both run on the caller's session bus (scripts/bench.sh runs this under
//! scripts/with-keyring.sh: a private bus with an unlocked keyring), with the same
//! environment built from scratch.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::table::{self, percentiles, Row};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Longest wait for a launched window to show its ready marker.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How often the page is asked whether the marker is there.
const POLL: Duration = Duration::from_millis(10);
const READY: &str = r#"[data-testid="app-ready"]"#;
const LOADING: &str = r#"[data-testid="app-loading"]"#;

pub struct FootprintOptions<'a> {
    pub app: &'a Path,
    pub hello: &'a Path,
    /// Temporary HOME/XDG directories and logs go here.
    pub work: &'a Path,
    pub runs: usize,
    pub idle: Duration,
    /// An X display to use instead of starting a private Xvfb.
    pub display: Option<String>,
    /// Keep each launch's directory (with driver.log: tauri-driver's, WebKitWebDriver's
    /// and the binary's output) instead of deleting it after a successful launch.
    pub keep: bool,
}

/// One cold launch.
#[derive(Debug, Clone)]
struct Sample {
    startup: Duration,
    /// When the page first answered a script (document loaded, the UI's own start and
    /// first data load still to come).
    page: Duration,
    /// When `[data-testid="app-loading"]` (or already `app-ready`) was first seen: the
    /// UI is mounted (static in the hello page), its first data load under way.
    mounted: Duration,
    rss_kib: u64,
    pss_kib: u64,
    /// RSS by executable name, summed over processes of that name.
    by_name: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    App,
    Hello,
}

pub fn run(opts: &FootprintOptions<'_>) -> Result<Vec<Row>, BoxError> {
    let tools = Tools::find()?;
    let bus = std::env::var("DBUS_SESSION_BUS_ADDRESS").map_err(|_| {
        "no session bus (DBUS_SESSION_BUS_ADDRESS): run under scripts/with-keyring.sh"
    })?;
    let app = absolute(opts.app)?;
    let hello = absolute(opts.hello)?;
    std::fs::create_dir_all(opts.work)?;
    let xvfb;
    let display = match &opts.display {
        Some(d) => d.clone(),
        None => {
            xvfb = Xvfb::start(&tools.xvfb)?;
            xvfb.name()
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let launcher = Launcher {
        tools: &tools,
        display: &display,
        bus: &bus,
        work: opts.work,
        idle: opts.idle,
        keep: opts.keep,
        http: reqwest::Client::builder().timeout(READY_DEADLINE).build()?,
    };

    // One untimed launch of each first: both binaries and the WebKit libraries are then
    // in the page cache, so neither pays for the disk and the order does not matter.
    for (which, bin) in [(Which::App, &app), (Which::Hello, &hello)] {
        let s = rt.block_on(launcher.launch(bin, &format!("warmup-{which:?}")))?;
        eprintln!(
            "footprint: warm-up {which:?}: start-up {}, RSS {} MB",
            table::ms(s.startup),
            mb(s.rss_kib)
        );
    }
    let mut ours = Vec::new();
    let mut reference = Vec::new();
    // In turns, so a change in the machine's load hits both alike.
    for i in 0..opts.runs.max(1) {
        for (which, bin) in [(Which::App, &app), (Which::Hello, &hello)] {
            let s = rt.block_on(launcher.launch(bin, &format!("{which:?}-{i}")))?;
            eprintln!(
                "footprint: {which:?} run {}: start-up {} (page answering at {}, UI mounted at {}), RSS {} MB, PSS {} MB ({})",
                i + 1,
                table::ms(s.startup),
                table::ms(s.page),
                table::ms(s.mounted),
                mb(s.rss_kib),
                mb(s.pss_kib),
                breakdown(&s.by_name)
            );
            match which {
                Which::App => ours.push(s),
                Which::Hello => reference.push(s),
            }
        }
    }
    Ok(rows(&ours, &reference))
}

fn rows(ours: &[Sample], reference: &[Sample]) -> Vec<Row> {
    let n = ours.len();
    let (o, r) = (median_by_rss(ours), median_by_rss(reference));
    let rss_ratio = (r.rss_kib > 0).then(|| o.rss_kib as f64 / r.rss_kib as f64);
    let memory = |s: &Sample| {
        format!(
            "median {} MB: {} (PSS {} MB)",
            mb(s.rss_kib),
            breakdown(&s.by_name),
            mb(s.pss_kib)
        )
    };
    let pct = |v: &[Sample], f: fn(&Sample) -> Duration| {
        percentiles(&v.iter().map(f).collect::<Vec<_>>())
    };
    let (so, sr) = (pct(ours, |s| s.startup), pct(reference, |s| s.startup));
    let steps = |v: &[Sample]| (pct(v, |s| s.page).p50, pct(v, |s| s.mounted).p50);
    let (po, pr) = (steps(ours), steps(reference));
    let start_ratio = table::ratio(so.p50, sr.p50);
    let spread = |p: &table::Percentiles, (page, mounted): (Duration, Duration)| {
        format!(
            "p50 {} / max {} (p50 page answering {}, UI mounted {})",
            table::ms(p.p50),
            table::ms(p.p99),
            table::ms(page),
            table::ms(mounted)
        )
    };
    vec![
        Row {
            name: format!(
                "app footprint: idle RSS of the process tree ({n} cold starts, empty data dir, embedded demo)"
            ),
            ours: memory(o),
            reference: format!("{} (bare Tauri v2 window)", memory(r)),
            ratio: rss_ratio,
            goal: "≤ 1.3×".into(),
            met: rss_ratio.map(|x| x <= 1.3),
        },
        Row {
            name: format!("app cold start to first painted inbox ({n} starts, WebDriver session request → `app-ready` painted)"),
            ours: spread(&so, po),
            reference: format!("{} (bare Tauri v2 window, first frame)", spread(&sr, pr)),
            ratio: start_ratio,
            goal: "≤ 1.5×".into(),
            met: start_ratio.map(|x| x <= 1.5),
        },
    ]
}

/// The run with the median total RSS (its breakdown is printed as it was measured).
fn median_by_rss(samples: &[Sample]) -> &Sample {
    let mut v: Vec<&Sample> = samples.iter().collect();
    v.sort_by_key(|s| s.rss_kib);
    v[(v.len() - 1) / 2]
}

fn mb(kib: u64) -> String {
    format!("{:.0}", kib as f64 / 1024.0)
}

/// "WebKitWebProcess 150 + countersign-app 120 + …", largest first.
fn breakdown(by_name: &BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = by_name.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1));
    v.iter()
        .map(|(name, kib)| format!("{name} {}", mb(**kib)))
        .collect::<Vec<_>>()
        .join(" + ")
}

fn absolute(p: &Path) -> Result<PathBuf, BoxError> {
    std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()).into())
}

// --- tools -------------------------------------------------------------------------

struct Tools {
    tauri_driver: PathBuf,
    webkit_driver: PathBuf,
    xvfb: PathBuf,
}

impl Tools {
    fn find() -> Result<Self, BoxError> {
        let mut cargo_bins = Vec::new();
        if let Some(home) = std::env::var_os("CARGO_HOME") {
            cargo_bins.push(PathBuf::from(home).join("bin/tauri-driver"));
        }
        if let Some(home) = std::env::var_os("HOME") {
            cargo_bins.push(PathBuf::from(home).join(".cargo/bin/tauri-driver"));
        }
        Ok(Self {
            tauri_driver: find_tool(
                "tauri-driver",
                &cargo_bins,
                "cargo install tauri-driver --locked",
            )?,
            webkit_driver: find_tool(
                "WebKitWebDriver",
                &[PathBuf::from("/usr/bin/WebKitWebDriver")],
                "apt-get install webkit2gtk-driver",
            )?,
            xvfb: find_tool("Xvfb", &[], "apt-get install xvfb")?,
        })
    }
}

fn find_tool(name: &str, extra: &[PathBuf], install: &str) -> Result<PathBuf, BoxError> {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .or_else(|| extra.iter().find(|p| p.is_file()).cloned())
        .ok_or_else(|| format!("`{name}` not found; install it with `{install}`").into())
}

// --- processes ---------------------------------------------------------------------

/// Sends `sig` to a process, or to a process group when `id` is negative.
fn signal(id: i32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory effects; the ids are our own children's.
    unsafe {
        libc::kill(id, sig);
    }
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

/// A child in its own process group; dropping it ends the whole group.
struct Group {
    child: Child,
}

impl Drop for Group {
    fn drop(&mut self) {
        let Ok(pgrp) = i32::try_from(self.child.id()) else {
            return;
        };
        signal(-pgrp, libc::SIGTERM);
        if !wait_exit(&mut self.child, Duration::from_secs(3)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // WebKit's helpers may outlive the driver for a moment: none may survive.
        std::thread::sleep(Duration::from_millis(200));
        signal(-pgrp, libc::SIGKILL);
    }
}

/// One process as /proc shows it.
struct ProcInfo {
    ppid: u32,
    comm: String,
}

fn processes() -> HashMap<u32, ProcInfo> {
    let mut all = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return all;
    };
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // gone meanwhile
        };
        // "pid (comm) state ppid …": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let Some(ppid) = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
        else {
            continue;
        };
        all.insert(pid, ProcInfo { ppid, comm });
    }
    all
}

/// `root` and all its descendants.
fn tree(all: &HashMap<u32, ProcInfo>, root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, p) in all {
        children.entry(p.ppid).or_default().push(pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

/// A `kB` field of a /proc file (`VmRSS:   1234 kB`).
fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The process running `bin` among the descendants of `root`.
fn find_binary(all: &HashMap<u32, ProcInfo>, root: u32, bin: &Path) -> Option<u32> {
    // `/proc/<pid>/exe` reads "<path> (deleted)" once a rebuild replaced the file.
    let deleted = format!("{} (deleted)", bin.display());
    tree(all, root).into_iter().find(|pid| {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|exe| exe == bin || exe.as_os_str() == deleted.as_str())
    })
}

/// RSS and PSS of `pid` and its descendants.
fn measure_tree(pid: u32) -> Sample {
    let all = processes();
    let mut s = Sample {
        startup: Duration::ZERO,
        page: Duration::ZERO,
        mounted: Duration::ZERO,
        rss_kib: 0,
        pss_kib: 0,
        by_name: BTreeMap::new(),
    };
    for p in tree(&all, pid) {
        let Some(rss) = std::fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .and_then(|t| kib_field(&t, "VmRSS"))
        else {
            continue; // exited, or a kernel thread
        };
        let pss = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
            .ok()
            .and_then(|t| kib_field(&t, "Pss"))
            .unwrap_or(0);
        s.rss_kib += rss;
        s.pss_kib += pss;
        // The executable's name: comm is cut at 15 bytes ("WebKitWebProces").
        let name = std::fs::read_link(format!("/proc/{p}/exe"))
            .ok()
            .and_then(|exe| Some(exe.file_name()?.to_string_lossy().into_owned()))
            .or_else(|| all.get(&p).map(|i| i.comm.clone()))
            .unwrap_or_default();
        *s.by_name.entry(name).or_default() += rss;
    }
    s
}

// --- Xvfb --------------------------------------------------------------------------

/// A private X server on the first free display in :150..:199 (the E2E harness uses
/// :90..:120).
struct Xvfb {
    child: Child,
    display: u32,
}

impl Xvfb {
    fn start(bin: &Path) -> Result<Self, BoxError> {
        for n in 150..=199u32 {
            let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
            if Path::new(&format!("/tmp/.X{n}-lock")).exists()
                || UnixStream::connect(&socket).is_ok()
            {
                continue; // someone else's display
            }
            let mut child = Command::new(bin)
                .arg(format!(":{n}"))
                .args(["-screen", "0", "1280x800x24", "-nolisten", "tcp"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                // A connectable socket: the server accepts clients.
                if UnixStream::connect(&socket).is_ok() {
                    return Ok(Self { child, display: n });
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // lost a race for this display: try the next one
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("Xvfb :{n} did not come up within 10 s").into());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err("no free X display in :150..:199".into())
    }

    fn name(&self) -> String {
        format!(":{}", self.display)
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM lets Xvfb remove its lock file and socket.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            signal(pid, libc::SIGTERM);
        }
        if !wait_exit(&mut self.child, Duration::from_secs(3)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// --- one launch --------------------------------------------------------------------

struct Launcher<'a> {
    tools: &'a Tools,
    display: &'a str,
    bus: &'a str,
    work: &'a Path,
    idle: Duration,
    keep: bool,
    http: reqwest::Client,
}

fn free_port() -> Result<u16, BoxError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Launcher<'_> {
    /// Fresh HOME/XDG directories, a tauri-driver of its own, one session: start-up
    /// time and the idle process tree's memory.
    async fn launch(&self, bin: &Path, label: &str) -> Result<Sample, BoxError> {
        let dir = self.work.join(label);
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["home", "xdg-data", "xdg-config", "xdg-cache", "run"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::set_permissions(dir.join("run"), std::fs::Permissions::from_mode(0o700))?;
        let result = self.launch_in(bin, &dir).await;
        let log = dir.join("driver.log");
        match result {
            Ok(s) => {
                if !self.keep {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Ok(s)
            }
            Err(e) => Err(format!(
                "{label} ({}): {e}; driver and app output:\n{}",
                bin.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
            .into()),
        }
    }

    async fn launch_in(&self, bin: &Path, dir: &Path) -> Result<Sample, BoxError> {
        let p = |sub: &str| dir.join(sub).display().to_string();
        // Built from scratch: nothing of the caller's desktop, config or data leaks in.
        let mut env = vec![
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("LANG", "C.UTF-8".into()),
            ("DISPLAY", self.display.into()),
            ("GDK_BACKEND", "x11".into()),
            ("HOME", p("home")),
            ("XDG_DATA_HOME", p("xdg-data")),
            ("XDG_CONFIG_HOME", p("xdg-config")),
            ("XDG_CACHE_HOME", p("xdg-cache")),
            ("XDG_RUNTIME_DIR", p("run")),
            ("DBUS_SESSION_BUS_ADDRESS", self.bus.into()),
            // No accessibility bus to activate (the same for both binaries).
            ("NO_AT_BRIDGE", "1".into()),
        ];
        // The GPU driver's shader cache is per user on a desktop, shared by every app
        // and warm: one directory for every launch here (filled by the warm-up
        // launches). Empty each time, Mesa's software renderer compiles WebKit's
        // shaders again on every first frame (1.5 s more for the app's first inbox).
        let shaders = self.work.join("mesa-shader-cache");
        std::fs::create_dir_all(&shaders)?;
        env.push(("MESA_SHADER_CACHE_DIR", shaders.display().to_string()));
        // Passed through for a look at the binary's own log (with --keep).
        if let Ok(v) = std::env::var("RUST_LOG") {
            env.push(("RUST_LOG", v));
        }
        let port = free_port()?;
        let native_port = free_port()?;
        let log = File::create(dir.join("driver.log"))?;
        let driver = Command::new(&self.tools.tauri_driver)
            .args(["--port", &port.to_string()])
            .args(["--native-port", &native_port.to_string()])
            .arg("--native-driver")
            .arg(&self.tools.webkit_driver)
            .current_dir(dir)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: WebKitWebDriver and the binary join it, so the
            // teardown reaches all of them.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.tools.tauri_driver.display()))?;
        let mut driver = Group { child: driver };
        let driver_pid = driver.child.id();

        // tauri-driver listens before WebKitWebDriver does; a session request in
        // between would fail.
        let deadline = Instant::now() + Duration::from_secs(10);
        for (what, p) in [("tauri-driver", port), ("WebKitWebDriver", native_port)] {
            let addr = SocketAddr::from(([127, 0, 0, 1], p));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Ok(Some(status)) = driver.child.try_wait() {
                    return Err(
                        format!("tauri-driver exited ({status}) before {what} listened").into(),
                    );
                }
                if Instant::now() > deadline {
                    return Err(format!("{what} did not listen on {p} within 10 s").into());
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }

        let base = format!("http://127.0.0.1:{port}");
        let caps = json!({
            "browserName": "wry",
            "tauri:options": { "application": bin },
        });
        let started = Instant::now();
        let created: Value = self
            .http
            .post(format!("{base}/session"))
            .json(&json!({ "capabilities": { "alwaysMatch": caps } }))
            .send()
            .await?
            .json()
            .await?;
        let session = created["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no WebDriver session: {created}"))?
            .to_owned();
        let session_url = format!("{base}/session/{session}");
        let (page, mounted) = match self.wait_painted(&session_url, started).await {
            Ok(times) => times,
            Err(e) => {
                let _ = self.http.delete(&session_url).send().await;
                return Err(e);
            }
        };
        let startup = started.elapsed();

        tokio::time::sleep(self.idle).await;
        let all = processes();
        let measured = find_binary(&all, driver_pid, bin)
            .map(measure_tree)
            .ok_or_else(|| format!("no process running {} under tauri-driver", bin.display()));
        // Closes the window (WebKitWebDriver ends the binary); the group goes on drop.
        let _ = self.http.delete(&session_url).send().await;
        let _ = driver.child.try_wait();
        drop(driver);
        let mut s = measured?;
        s.startup = startup;
        s.page = page;
        s.mounted = mounted;
        Ok(s)
    }

    /// Polls the page until the ready marker is in the DOM, then waits two animation
    /// frames: the frame that showed it has been painted. Returns when the page first
    /// answered a script, and when the UI was first seen mounted.
    async fn wait_painted(
        &self,
        session_url: &str,
        started: Instant,
    ) -> Result<(Duration, Duration), BoxError> {
        let present = format!(
            "return document.querySelector('{READY}') ? 'ready' \
             : document.querySelector('{LOADING}') ? 'loading' : 'none';"
        );
        let (mut page, mut mounted) = (None, None);
        loop {
            // Errors are expected while the page is still loading (no document yet).
            let reply: Option<Value> = match self
                .http
                .post(format!("{session_url}/execute/sync"))
                .json(&json!({ "script": present, "args": [] }))
                .send()
                .await
            {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            let answer = reply.as_ref().and_then(|v| v["value"].as_str());
            if answer.is_some() && page.is_none() {
                page = Some(started.elapsed());
            }
            if matches!(answer, Some("loading" | "ready")) && mounted.is_none() {
                mounted = Some(started.elapsed());
            }
            if answer == Some("ready") {
                break;
            }
            if started.elapsed() > READY_DEADLINE {
                return Err(
                    format!("no {READY} within {READY_DEADLINE:?}; last reply: {reply:?}").into(),
                );
            }
            tokio::time::sleep(POLL).await;
        }
        let frames = "const done = arguments[arguments.length - 1]; \
                      requestAnimationFrame(() => requestAnimationFrame(() => done(true)));";
        let reply: Value = self
            .http
            .post(format!("{session_url}/execute/async"))
            .json(&json!({ "script": frames, "args": [] }))
            .send()
            .await?
            .json()
            .await?;
        if reply["value"].as_bool() != Some(true) {
            return Err(format!("waiting for two frames: {reply}").into());
        }
        self.print_page_steps(session_url, started).await;
        Ok((page.unwrap_or_default(), mounted.unwrap_or_default()))
    }

    /// Prints where the page's own time went, on the launch's clock: when navigation
    /// started, the document's milestones and the `cs-*` marks the app's UI sets
    /// (script start, mount, first inbox asked and answered). Only a diagnostic: a page
    /// without them (the hello page) prints the milestones alone.
    async fn print_page_steps(&self, session_url: &str, started: Instant) {
        let script = "const n = performance.getEntriesByType('navigation')[0] || {}; \
                      return { now: performance.now(), \
                        steps: [['response end', n.responseEnd], ['dom interactive', n.domInteractive], \
                                ['dom loaded', n.domContentLoadedEventEnd], ['load', n.loadEventEnd]] \
                          .concat(performance.getEntriesByType('mark') \
                            .filter(m => m.name.startsWith('cs-')).map(m => [m.name, m.startTime])) };";
        let asked = started.elapsed();
        let reply: Option<Value> = match self
            .http
            .post(format!("{session_url}/execute/sync"))
            .json(&json!({ "script": script, "args": [] }))
            .send()
            .await
        {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let Some(value) = reply.as_ref().map(|v| &v["value"]) else {
            return;
        };
        let Some(now) = value["now"].as_f64() else {
            return;
        };
        // performance.now() counts from navigation start; the script ran at about `asked`.
        let origin = asked.as_secs_f64() * 1000.0 - now;
        let mut line = format!("footprint:   navigation started at {origin:.0} ms");
        for step in value["steps"].as_array().into_iter().flatten() {
            if let (Some(name), Some(at)) = (step[0].as_str(), step[1].as_f64()) {
                if at > 0.0 {
                    line.push_str(&format!(", {name} {:.0}", origin + at));
                }
            }
        }
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields() {
        let status = "Name:\tx\nVmRSS:\t  123456 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(kib_field(status, "VmRSS"), Some(123_456));
        assert_eq!(kib_field(status, "VmHWM"), None);
    }

    #[test]
    fn breakdown_lists_largest_first() {
        let m = BTreeMap::from([("a".to_owned(), 1024), ("b".to_owned(), 4096)]);
        assert_eq!(breakdown(&m), "b 4 + a 1");
    }
}
