//! A real Airflow 3.1 (`airflow standalone`: API server, scheduler, DAG processor and
//! triggerer, on SQLite) in its own process group, running the human-in-the-loop DAG
//! tests/airflow/dags/countersign_hitl.py, from the venv `bash scripts/setup.sh` makes at
//! `.venv-airflow/`; with the REST calls the tests make to drive and check it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const DAG: &str = "countersign_hitl";
/// The Airflow account Countersign logs in as; its password is `common::TOKEN`, which
/// `CliEnv` puts in $PROD_TOKEN.
pub const USER: &str = "admin";

pub fn venv_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-airflow/bin");
    assert!(
        bin.join("airflow").exists(),
        "{} is missing: run `bash scripts/setup.sh` to install the pinned Airflow into \
         .venv-airflow/",
        bin.join("airflow").display()
    );
    bin
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `airflow standalone` in its own process group. Dropping it stops the whole group
/// (also when a test panics): SIGINT first, then SIGKILL for whatever is left, since
/// standalone's supervisor does not always exit after its children have.
pub struct Airflow {
    pub child: Child,
    pub log: PathBuf,
    pub url: String,
    pub http: reqwest::Client,
    pub jwt: String,
}

impl Airflow {
    pub async fn start(home: &Path) -> Self {
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(home).unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let passwords = home.join("passwords.json");
        std::fs::write(
            &passwords,
            json!({ USER: crate::common::TOKEN, "viewer": "viewer-password" }).to_string(),
        )
        .unwrap();
        let dags = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/airflow/dags");
        let bin = venv_bin();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = home.join("standalone.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(bin.join("airflow"));
        command
            .arg("standalone")
            .env("PATH", path)
            .env("AIRFLOW_HOME", home)
            .env("AIRFLOW__API__HOST", "127.0.0.1")
            .env("AIRFLOW__API__PORT", port.to_string())
            .env("AIRFLOW__API__BASE_URL", &url)
            // Task processes report back to the API server's execution API.
            .env(
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                format!("{url}/execution/"),
            )
            .env("AIRFLOW__CORE__DAGS_FOLDER", &dags)
            .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
            .env("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "False")
            .env(
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
                format!("{USER}:admin,viewer:viewer"),
            )
            .env(
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
                &passwords,
            )
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = command.spawn().expect("start airflow standalone");
        let mut airflow = Self {
            child,
            log,
            url,
            http: reqwest::Client::new(),
            jwt: String::new(),
        };
        airflow.await_ready().await;
        airflow
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        format!("--- airflow standalone log ---\n{}", &text[start..])
    }

    /// Polls until the API answers, a login works and the test DAG is parsed.
    pub async fn await_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("airflow standalone exited ({status})\n{}", self.log_tail());
            }
            if self.jwt.is_empty() {
                if let Some(jwt) = self.login(USER, crate::common::TOKEN).await {
                    self.jwt = jwt;
                }
            }
            if !self.jwt.is_empty() {
                let dag = self
                    .http
                    .get(format!("{}/api/v2/dags/{DAG}", self.url))
                    .bearer_auth(&self.jwt)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                if dag.is_ok_and(|r| r.status().is_success()) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Airflow not ready (API, login, DAG {DAG}) within 240 s\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub async fn login(&self, user: &str, password: &str) -> Option<String> {
        let response = self
            .http
            .post(format!("{}/auth/token", self.url))
            .json(&json!({ "username": user, "password": password }))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        body["access_token"].as_str().map(str::to_owned)
    }

    pub async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}/api/v2{path}", self.url))
            .bearer_auth(&self.jwt);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("Airflow API");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: HTTP {status}: {body}");
        body
    }

    pub async fn trigger(&self, run_id: &str) {
        self.api(
            reqwest::Method::POST,
            &format!("/dags/{DAG}/dagRuns"),
            Some(json!({ "dag_run_id": run_id, "logical_date": null })),
        )
        .await;
    }

    pub async fn hitl(&self, run_id: &str, task: &str) -> Value {
        self.api(
            reqwest::Method::GET,
            &format!("/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task}/-1/hitlDetails"),
            None,
        )
        .await
    }

    pub async fn task_state(&self, run_id: &str, task: &str) -> String {
        let ti = self
            .api(
                reqwest::Method::GET,
                &format!("/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task}"),
                None,
            )
            .await;
        ti["state"].as_str().unwrap_or("none").to_owned()
    }

    pub async fn task_instance(&self, run_id: &str, task: &str) -> Value {
        self.api(
            reqwest::Method::GET,
            &format!("/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task}"),
            None,
        )
        .await
    }

    /// Waits until the task reaches a final state, and returns it.
    pub async fn await_final(&self, run_id: &str, task: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let state = self.task_state(run_id, task).await;
            if matches!(
                state.as_str(),
                "success" | "failed" | "skipped" | "upstream_failed" | "removed"
            ) {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "{run_id}/{task} still {state} after 120 s\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub async fn await_open_steps(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let page = self
                .api(
                    reqwest::Method::GET,
                    "/dags/~/dagRuns/~/hitlDetails?response_received=false",
                    None,
                )
                .await;
            let open = page["total_entries"].as_u64().unwrap_or(0);
            if open >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} open HITL steps expected, saw {open} after 180 s\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Airflow {
    fn drop(&mut self) {
        let leader = self.child.id();
        let group = format!("-{leader}");
        let _ = Command::new("kill").args(["-INT", "--", &group]).status();
        // The components stop within seconds of SIGINT; standalone itself may not.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && group_alive(leader) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Whatever did not stop on SIGINT goes now.
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Whether a process of group `pgid`, other than its leader, still runs (zombies, which
/// have exited and wait for their parent, do not count).
pub fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            return false;
        };
        if pid == pgid {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces, so read after the `)`.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
            && fields.first() != Some(&"Z")
    })
}
