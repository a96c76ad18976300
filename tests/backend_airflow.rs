//! The `airflow` backend against a real Airflow 3.1 (`airflow standalone`: API server,
//! scheduler, DAG processor and triggerer, on SQLite) running the human-in-the-loop DAG
//! tests/airflow/dags/countersign_hitl.py. Airflow comes from the venv `bash
//! scripts/setup.sh` makes at `.venv-airflow/`.
//!
//! Starting Airflow takes most of this test's time, so one server serves every scenario:
//! they run in order inside one test, each on its own DAG run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{CliEnv, TOKEN};
use countersign_core::backends::{self, DecisionDelivery, DeliveryOutcome, Limits};
use countersign_core::config::Config;
use countersign_core::model::{ActionKey, Answer, Decision, DeliveryState, Verdict};
use serde_json::{json, Value};

const DAG: &str = "countersign_hitl";
/// The Airflow account Countersign logs in as; its password is `common::TOKEN`, which
/// `CliEnv` puts in $PROD_TOKEN.
const USER: &str = "admin";

fn venv_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-airflow/bin");
    assert!(
        bin.join("airflow").exists(),
        "{} is missing: run `bash scripts/setup.sh` to install the pinned Airflow into \
         .venv-airflow/",
        bin.join("airflow").display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `airflow standalone` in its own process group. Dropping it stops the whole group
/// (also when a test panics): SIGINT first, then SIGKILL for whatever is left, since
/// standalone's supervisor does not always exit after its children have.
struct Airflow {
    child: Child,
    log: PathBuf,
    url: String,
    http: reqwest::Client,
    jwt: String,
}

impl Airflow {
    async fn start(home: &Path) -> Self {
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(home).unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let passwords = home.join("passwords.json");
        std::fs::write(
            &passwords,
            json!({ USER: TOKEN, "viewer": "viewer-password" }).to_string(),
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

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        format!("--- airflow standalone log ---\n{}", &text[start..])
    }

    /// Polls until the API answers, a login works and the test DAG is parsed.
    async fn await_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("airflow standalone exited ({status})\n{}", self.log_tail());
            }
            if self.jwt.is_empty() {
                if let Some(jwt) = self.login(USER, TOKEN).await {
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

    async fn login(&self, user: &str, password: &str) -> Option<String> {
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

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
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

    async fn trigger(&self, run_id: &str) {
        self.api(
            reqwest::Method::POST,
            &format!("/dags/{DAG}/dagRuns"),
            Some(json!({ "dag_run_id": run_id, "logical_date": null })),
        )
        .await;
    }

    async fn hitl(&self, run_id: &str, task: &str) -> Value {
        self.api(
            reqwest::Method::GET,
            &format!("/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task}/-1/hitlDetails"),
            None,
        )
        .await
    }

    async fn task_state(&self, run_id: &str, task: &str) -> String {
        let ti = self
            .api(
                reqwest::Method::GET,
                &format!("/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task}"),
                None,
            )
            .await;
        ti["state"].as_str().unwrap_or("none").to_owned()
    }

    async fn task_instance(&self, run_id: &str, task: &str) -> Value {
        self.api(
            reqwest::Method::GET,
            &format!("/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task}"),
            None,
        )
        .await
    }

    /// Waits until the task reaches a final state, and returns it.
    async fn await_final(&self, run_id: &str, task: &str) -> String {
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

    async fn await_open_steps(&self, n: u64) {
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
fn group_alive(pgid: u32) -> bool {
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

fn config(url: &str, user: &str, token_env: &str) -> String {
    format!(
        "approver = \"ana@example.com\"\n\
         [[backend]]\nname = \"airflow\"\nkind = \"airflow\"\nurl = \"{url}\"\n\
         token_env = \"{token_env}\"\npoll_interval_secs = 2\n\
         [backend.options]\nusername = \"{user}\"\n"
    )
}

fn key(run_id: &str, task: &str) -> String {
    format!("airflow/{DAG}/{run_id}/{task}/-1")
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A decision made outside the CLI, to drive the backend directly.
fn decision(key: &str, verdict: Verdict, reason: &str, answer: Option<Answer>) -> Decision {
    let (backend, external_id) = key.split_once('/').unwrap();
    Decision {
        action: ActionKey::new(backend, external_id),
        verdict,
        reason: reason.into(),
        decided_at: Utc::now(),
        approver: "bo@example.com".into(),
        snapshot_hash: countersign_core::snapshot::SnapshotHash("00".repeat(32)),
        idempotency_key: format!("test-{}", Utc::now().timestamp_nanos_opt().unwrap_or(0)),
        key_fingerprint: Some("SHA256:test".into()),
        public_key: None,
        signature: None,
        delivery: DeliveryState::Queued,
        answer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_hitl_steps_are_listed_approved_denied_and_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let airflow = Airflow::start(&dir.path().join("airflow-home")).await;
    // Each run asks three questions: approve_release, choose_region and sign_off.
    for run in ["run-yes", "run-no"] {
        airflow.trigger(run).await;
    }
    airflow.await_open_steps(6).await;

    let env = CliEnv::new();
    env.write_config(&config(&airflow.url, USER, "PROD_TOKEN"));
    let sync = env.ok(&["sync"]);
    assert!(sync.contains("airflow: 6 new"), "{sync}");

    // --- the inbox: both kinds of step, with their options and typed params ----------
    let list: Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    let keys: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{}/{}",
                a["key"]["backend"].as_str().unwrap(),
                a["key"]["external_id"].as_str().unwrap()
            )
        })
        .collect();
    for run in ["run-yes", "run-no"] {
        for task in ["approve_release", "choose_region", "sign_off"] {
            assert!(
                keys.contains(&key(run, task)),
                "{} not in {keys:?}",
                key(run, task)
            );
        }
    }
    let show: Value =
        serde_json::from_str(&env.ok(&["show", &key("run-yes", "approve_release"), "--json"]))
            .unwrap();
    let action = &show["action"];
    assert_eq!(action["kind"], "hitl_step", "{show}");
    assert_eq!(action["title"], "Release run-yes to production?");
    assert_eq!(action["requester"], USER, "the user who triggered the run");
    assert_eq!(action["resource"], DAG);
    assert_eq!(action["form"]["options"], json!(["Approve", "Reject"]));
    assert!(
        action["expires_at"].is_string(),
        "execution_timeout: {show}"
    );
    let question = action["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == "question")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        question,
        "Ships v2.4.0 to prod.\n\n- migrations: 2\n- changelog (https://example.invalid/changelog)",
        "markdown shown as text"
    );
    assert!(
        show["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "requested" && e["source"] == "backend"),
        "{show}"
    );

    let show: Value =
        serde_json::from_str(&env.ok(&["show", &key("run-yes", "choose_region"), "--json"]))
            .unwrap();
    let form = &show["action"]["form"];
    assert_eq!(
        form["options"],
        json!(["Deploy EU", "Deploy US", "Skip"]),
        "{show}"
    );
    assert_eq!(form["multiple"], true);
    assert_eq!(form["default_options"], json!(["Skip"]));
    let field = |name: &str| {
        form["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no field {name}: {form}"))
            .clone()
    };
    assert_eq!(field("replicas")["field_type"], "integer");
    assert_eq!(field("replicas")["label"], "Replicas");
    assert_eq!(field("replicas")["default"], 2);
    assert_eq!(field("note")["field_type"], "text");

    // --- approve: the step answers "Approve" and the downstream task runs -------------
    let approved = env.ok(&["approve", &key("run-yes", "approve_release")]);
    assert!(approved.contains("delivered"), "{approved}");
    let answer = airflow.hitl("run-yes", "approve_release").await;
    assert_eq!(answer["chosen_options"], json!(["Approve"]), "{answer}");
    assert_eq!(answer["responded_by_user"]["name"], USER);
    let proof = answer["params_input"]["countersign_proof"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        proof.starts_with("[countersign SHA256:") && proof.contains("payload-sha256:"),
        "{answer}"
    );
    assert_eq!(airflow.await_final("run-yes", "release").await, "success");
    // The answer is in the action's history, from Airflow's own record.
    let show: Value =
        serde_json::from_str(&env.ok(&["show", &key("run-yes", "approve_release"), "--json"]))
            .unwrap();
    assert_eq!(show["action"]["status"], "approved", "{show}");
    let timeline = show["timeline"].as_array().unwrap();
    assert!(
        timeline.iter().any(|e| e["source"] == "backend"
            && e["kind"] == "approved"
            && e["actor"] == USER
            && e["text"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Answered: Approve (countersign_proof=[countersign ")),
        "{show}"
    );
    assert!(
        timeline
            .iter()
            .any(|e| e["source"] == "backend" && e["text"] == "Task try 1 started"),
        "{show}"
    );
    assert_eq!(
        airflow.await_final("run-yes", "approve_release").await,
        "success"
    );
    let note = airflow.task_instance("run-yes", "approve_release").await["note"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        note.starts_with("ana@example.com approved in Countersign") && note.contains(&proof),
        "{note}"
    );

    // --- deny: "Reject", and Airflow skips what was waiting on the approval ----------
    let denied = env.ok(&[
        "deny",
        &key("run-no", "approve_release"),
        "--reason",
        "not during the freeze",
    ]);
    assert!(denied.contains("delivered"), "{denied}");
    let answer = airflow.hitl("run-no", "approve_release").await;
    assert_eq!(answer["chosen_options"], json!(["Reject"]), "{answer}");
    assert_eq!(airflow.await_final("run-no", "release").await, "skipped");

    // --- approve on a step that asks to choose: refused with the options named -------
    let out = env.run(&["approve", &key("run-no", "choose_region")]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("this step asks to choose among \"Deploy EU\", \"Deploy US\", \"Skip\"")
            && text.contains("use choose"),
        "{text}"
    );
    // Refused by the engine before signing: no decision, nothing in the audit chain.
    let show: Value =
        serde_json::from_str(&env.ok(&["show", &key("run-no", "choose_region"), "--json"]))
            .unwrap();
    assert_eq!(show["decisions"], json!([]), "{show}");
    let untouched = airflow.hitl("run-no", "choose_region").await;
    assert_eq!(untouched["response_received"], false, "{untouched}");

    // --- choose: an option plus typed params; that branch runs with those values -----
    let chose = env.ok(&[
        "choose",
        &key("run-yes", "choose_region"),
        "--option",
        "Deploy EU",
        "--param",
        "replicas=3",
        "--param",
        "note=canary first",
    ]);
    assert!(chose.contains("delivered"), "{chose}");
    let answer = airflow.hitl("run-yes", "choose_region").await;
    assert_eq!(answer["chosen_options"], json!(["Deploy EU"]), "{answer}");
    assert_eq!(
        answer["params_input"],
        json!({"replicas": 3, "note": "canary first"}),
        "{answer}"
    );
    assert_eq!(airflow.await_final("run-yes", "deploy_eu").await, "success");
    assert_eq!(airflow.await_final("run-yes", "deploy_us").await, "skipped");
    assert_eq!(
        airflow.await_final("run-yes", "skip_deploy").await,
        "skipped"
    );
    assert_eq!(
        airflow.await_final("run-yes", "choose_region").await,
        "success",
        "the operator accepted the answer"
    );
    let note = airflow.task_instance("run-yes", "choose_region").await["note"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        note.contains("chose Deploy EU in Countersign") && note.contains("[countersign "),
        "{note}"
    );

    // The answered steps leave the inbox; their history shows the answer.
    let sync = env.ok(&["sync"]);
    assert!(sync.contains("airflow:"), "{sync}");
    let open = |env: &CliEnv| -> Vec<String> {
        let list: Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
        let mut keys: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|a| format!("airflow/{}", a["key"]["external_id"].as_str().unwrap()))
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(
        open(&env),
        [
            key("run-no", "choose_region"),
            key("run-no", "sign_off"),
            key("run-yes", "sign_off")
        ]
    );

    // --- a step assigned to someone else: Airflow's 403 is a refusal, not a retry ----
    let show: Value =
        serde_json::from_str(&env.ok(&["show", &key("run-yes", "sign_off"), "--json"])).unwrap();
    assert!(
        show["action"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["key"] == "assigned to" && d["value"] == "Rae (release-manager)"),
        "{show}"
    );
    let out = env.run(&["approve", &key("run-yes", "sign_off")]);
    let text = output_text(&out);
    assert!(
        text.contains("rejected") && text.contains("not assigned"),
        "{text}"
    );
    let untouched = airflow.hitl("run-yes", "sign_off").await;
    assert_eq!(untouched["response_received"], false, "{untouched}");

    // --- a second answer to the same step: refused, applied once --------------------
    let again = env.fails(&["approve", &key("run-yes", "approve_release")]);
    assert!(
        again.contains("no longer pending") || again.contains("already"),
        "{again}"
    );
    let parsed = Config::parse(
        Path::new("airflow.toml"),
        &config(&format!("{}/api/v2", airflow.url), USER, "PROD_TOKEN"),
    )
    .unwrap();
    let backend =
        backends::build(&parsed.backends[0], Some(TOKEN.into()), Limits::default()).unwrap();
    let other = decision(
        &key("run-yes", "approve_release"),
        Verdict::Deny,
        "late",
        None,
    );
    match backend
        .decide(&DecisionDelivery { decision: other })
        .await
        .unwrap()
    {
        DeliveryOutcome::NotPending { status } => assert_eq!(
            status, "already answered in Airflow by admin: Approve",
            "names who answered what"
        ),
        other => panic!("a second answer must not apply: {other:?}"),
    }
    let answer = airflow.hitl("run-yes", "approve_release").await;
    assert_eq!(answer["chosen_options"], json!(["Approve"]), "applied once");

    // A delivery retried after its answer was lost finds its own answer: delivered, once.
    let skip = Answer {
        options: vec!["Skip".into()],
        params: [
            ("replicas".to_owned(), json!(1)),
            ("note".to_owned(), json!("")),
        ]
        .into_iter()
        .collect(),
    };
    let mut mine = decision(
        &key("run-no", "choose_region"),
        Verdict::Choose,
        "",
        Some(skip),
    );
    // Bound to a snapshot that is not the step's current one: stale, nothing sent.
    assert!(
        matches!(
            backend
                .decide(&DecisionDelivery {
                    decision: mine.clone()
                })
                .await
                .unwrap(),
            DeliveryOutcome::Stale { .. }
        ),
        "a decision on another snapshot"
    );
    let untouched = airflow.hitl("run-no", "choose_region").await;
    assert_eq!(untouched["response_received"], false, "{untouched}");
    let current = backend
        .fetch(&mine.action.external_id)
        .await
        .unwrap()
        .action
        .snapshot_hash;
    mine.snapshot_hash = current;
    for _ in 0..2 {
        let outcome = backend
            .decide(&DecisionDelivery {
                decision: mine.clone(),
            })
            .await
            .unwrap();
        assert!(
            matches!(outcome, DeliveryOutcome::Delivered { .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(
        airflow.await_final("run-no", "skip_deploy").await,
        "success"
    );

    // --- a wrong password: the backend is degraded, named, and nothing crashes -------
    let bad = CliEnv::new();
    bad.write_config(&config(&airflow.url, USER, "WRONG_PASSWORD"));
    let out = bad
        .cmd(&["sync"])
        .env("WRONG_PASSWORD", "not-the-password")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("airflow: error:") && text.contains("/auth/token"),
        "{text}"
    );
    let backends = bad
        .cmd(&["backends"])
        .env("WRONG_PASSWORD", "not-the-password")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&backends.stdout).to_string();
    assert!(
        text.contains("airflow") && text.contains("degraded"),
        "{text}"
    );
}
