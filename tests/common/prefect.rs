//! A real Prefect 3 server (`prefect server start`, SQLite) and real flows that wait in
//! `pause_flow_run(wait_for_input=…)` (tests/prefect/approval_flow.py), each in its own
//! process group, from the venv `bash scripts/setup.sh` makes at `.venv-backends/`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn venv_bin(name: &str) -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv-backends/bin")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `bash scripts/setup.sh` to install the pinned Prefect into \
         .venv-backends/",
        bin.display()
    );
    bin
}

/// A child started in its own process group; the whole group dies with this value
/// (also when a test panics), so `prefect server start`'s real server is not orphaned.
pub struct Group {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Group {
    pub fn start(name: &'static str, mut command: Command, log: PathBuf) -> Self {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(&log).expect("log file");
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child, name, log }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(3000);
        format!("--- {} log ---\n{}", self.name, &text[start..])
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn prefect_env(command: &mut Command, home: &Path) {
    command
        .env("PREFECT_HOME", home)
        .env("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        .env("PREFECT_UI_ENABLED", "false")
        .env("PREFECT_LOGGING_LEVEL", "INFO")
        .env_remove("PREFECT_API_KEY");
}

pub async fn start_server(dir: &Path) -> (Group, String) {
    let port = free_port();
    let home = dir.join("server-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut command = Command::new(venv_bin("prefect"));
    command.args([
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
    ]);
    prefect_env(&mut command, &home);
    let group = Group::start("prefect server", command, dir.join("server.log"));
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let healthy = client
            .get(format!("{url}/api/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success());
        if healthy.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prefect server not healthy within 90 s\n{}",
            group.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    (group, url)
}

pub fn start_flow(dir: &Path, url: &str, run_name: &'static str) -> (Group, PathBuf) {
    let home = dir.join(format!("{run_name}-home"));
    std::fs::create_dir_all(&home).unwrap();
    let out = dir.join(format!("{run_name}.json"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/prefect/approval_flow.py");
    let mut command = Command::new(venv_bin("python"));
    command.arg(script).arg(run_name).arg(&out);
    prefect_env(&mut command, &home);
    command.env("PREFECT_API_URL", format!("{url}/api"));
    let group = Group::start(run_name, command, dir.join(format!("{run_name}.log")));
    (group, out)
}
