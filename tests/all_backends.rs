//! Every backend kind at once, into one store, with the engine's real sync loops: the
//! reference server (its own process), the hoop and GitHub stand-ins (loopback, checked
//! against their published API descriptions), an exec plugin, and the REAL Prefect and
//! Airflow servers. One of them is killed mid-run; the others keep syncing, and the
//! inbox then lists every pending request of the live ones — no more, no fewer.

mod common;

#[path = "common/airflow.rs"]
mod airflow;
#[path = "common/github_hub.rs"]
mod github_hub;
#[path = "common/hoop_gateway.rs"]
mod hoop_gateway;
#[path = "common/prefect.rs"]
mod prefect;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use common::{new_action, until, Producer, ServerProcess};
use countersign_core::config::Config;
use countersign_core::model::ActionStatus;
use countersign_core::shutdown;
use countersign_core::store::Store;
use countersign_core::Engine;
use serde_json::{json, Value};

/// Generous: the real servers answer slowly on a loaded 2-core CI machine.
const SETTLE: Duration = Duration::from_secs(60);

fn pending_ids(engine: &Engine, backend: &str) -> BTreeSet<String> {
    engine
        .pending(Some(backend))
        .expect("pending")
        .into_iter()
        .map(|a| a.key.external_id)
        .collect()
}

fn exec_action(id: &str, title: &str) -> Value {
    json!({
        "id": id, "kind": "command", "title": title, "summary": "",
        "requester": "dana@example.com", "requested_at": "2026-11-25T01:02:03.456Z",
        "expires_at": null, "resource": "billing", "details": [],
        "approvals_required": 1, "status": "pending", "timeline": []
    })
}

fn write_exec_state(path: &Path, actions: &[Value]) {
    let state = json!({ "actions": actions, "decisions": [] });
    // Written whole and renamed: the plugin never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, state.to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The ids of the flow runs Prefect itself lists as paused (waiting for input).
async fn prefect_paused(url: &str) -> BTreeSet<String> {
    let runs: Value = reqwest::Client::new()
        .post(format!("{url}/api/flow_runs/filter"))
        .json(&json!({"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    runs.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The ids of the steps Airflow itself lists as waiting for an answer.
async fn airflow_open(airflow: &airflow::Airflow) -> BTreeSet<String> {
    let page = airflow
        .api(
            reqwest::Method::GET,
            "/dags/~/dagRuns/~/hitlDetails?response_received=false",
            None,
        )
        .await;
    page["hitl_details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let ti = &d["task_instance"];
            format!(
                "{}/{}/{}/{}",
                ti["dag_id"].as_str().unwrap(),
                ti["dag_run_id"].as_str().unwrap(),
                ti["task_id"].as_str().unwrap(),
                ti["map_index"]
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_syncs_into_one_inbox_and_a_killed_backend_stops_only_itself() {
    let dir = tempfile::tempdir().unwrap();

    // --- the backends ---
    // Airflow first: it takes the longest to come up.
    let airflow = airflow::Airflow::start(&dir.path().join("airflow")).await;
    airflow.trigger("all-1").await;
    let (_prefect_server, prefect_url) = prefect::start_server(dir.path()).await;
    let (_flow, _) = prefect::start_flow(dir.path(), &prefect_url, "all-gate");
    let mut reference = ServerProcess::start(&dir.path().join("server.db"), "127.0.0.1:0");
    let producer = Producer::new(&reference.url());
    producer.create(&new_action("ref-1", "Reference one")).await;
    producer.create(&new_action("ref-2", "Reference two")).await;
    let (gateway, hoop_addr) = hoop_gateway::start_gateway("reviews.json").await;
    let (hub, github_addr) = github_hub::start_hub().await;
    let exec_state = dir.path().join("exec-state.json");
    write_exec_state(&exec_state, &[exec_action("x-1", "Restart billing")]);
    let plugin = format!("{}/tests/plugins/good.py", env!("CARGO_MANIFEST_DIR"));

    // --- one config, one store, the engine's own sync loops ---
    let config_text = format!(
        r#"approver = "ana@example.com"

[[backend]]
name = "ref"
kind = "countersign"
url = "{reference}"
token_env = "REF_TOKEN"
poll_interval_secs = 1
max_backoff_secs = 1

[[backend]]
name = "hoop"
kind = "hoop"
url = "http://{hoop_addr}"
token_env = "HOOP_TOKEN"
poll_interval_secs = 1
max_backoff_secs = 1

[[backend]]
name = "gh"
kind = "github"
url = "http://{github_addr}"
token_env = "GH_TOKEN"
poll_interval_secs = 1
max_backoff_secs = 1

[backend.options]
repos = ["octo/app", "octo/api"]

[[backend]]
name = "airflow"
kind = "airflow"
url = "{airflow_url}"
token_env = "AIRFLOW_PASSWORD"
poll_interval_secs = 1
max_backoff_secs = 1

[backend.options]
username = "{airflow_user}"

[[backend]]
name = "prefect"
kind = "prefect"
url = "{prefect_url}"
poll_interval_secs = 1
max_backoff_secs = 1

[[backend]]
name = "plug"
kind = "exec"
command = ["{plugin}", "{state}"]
poll_interval_secs = 1
max_backoff_secs = 1
"#,
        reference = reference.url(),
        airflow_url = airflow.url,
        airflow_user = airflow::USER,
        prefect_url = prefect_url,
        state = exec_state.display(),
    );
    let config = Config::parse(&dir.path().join("config.toml"), &config_text).expect("config");
    // Tokens as a person configures them: in environment variables (this test binary
    // runs this one test, in its own process).
    for (var, token) in [
        ("REF_TOKEN", common::TOKEN),
        ("HOOP_TOKEN", hoop_gateway::TOKEN),
        ("GH_TOKEN", github_hub::TOKEN),
        ("AIRFLOW_PASSWORD", common::TOKEN),
    ] {
        std::env::set_var(var, token);
    }
    let engine = Engine::from_config(
        &config,
        Store::open_in_dir(&dir.path().join("client")).unwrap(),
        Utc::now(),
    )
    .expect("engine");
    let mut changes = engine.changes();
    let (stop, listener) = shutdown::channel();
    let tasks = engine.spawn_sync(&listener);

    // Everything each backend has pending arrives.
    let hoop_expected: BTreeSet<String> = gateway
        .reviews
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "PENDING")
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    // The DAG run's three human-in-the-loop steps, as Airflow lists them.
    airflow.await_open_steps(3).await;
    let airflow_expected = airflow_open(&airflow).await;
    // The flow run waiting for input, as Prefect lists it.
    let prefect_expected = loop {
        let paused = prefect_paused(&prefect_url).await;
        if !paused.is_empty() {
            break paused;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(airflow_expected.len(), 3, "{airflow_expected:?}");
    let expected = |name: &str| -> BTreeSet<String> {
        match name {
            "ref" => ["ref-1", "ref-2"].map(String::from).into(),
            "plug" => ["x-1"].map(String::from).into(),
            _ => unreachable!(),
        }
    };
    until(
        &mut changes,
        SETTLE,
        "every backend's pending requests in the inbox",
        || {
            pending_ids(&engine, "ref") == expected("ref")
                && pending_ids(&engine, "hoop") == hoop_expected
                && pending_ids(&engine, "gh").len() == github_hub::waiting_environments(&hub)
                && pending_ids(&engine, "plug") == expected("plug")
                && pending_ids(&engine, "airflow") == airflow_expected
                && pending_ids(&engine, "prefect") == prefect_expected
        },
    )
    .await;

    // --- kill one mid-run: the reference server, with kill -9 ---
    reference.kill9();

    // The others keep syncing: a change on each after the kill arrives.
    write_exec_state(
        &exec_state,
        &[
            exec_action("x-1", "Restart billing"),
            exec_action("x-2", "Rotate the billing DB password"),
        ],
    );
    github_hub::add_waiting_environment(&hub, "canary");
    let settled = hoop_expected.iter().next().unwrap().clone();
    hoop_gateway::settle_externally(&gateway, &settled, "APPROVED");
    let hoop_live: BTreeSet<String> = hoop_expected
        .iter()
        .filter(|id| **id != settled)
        .cloned()
        .collect();
    until(
        &mut changes,
        SETTLE,
        "the live backends' changes after the kill",
        || {
            pending_ids(&engine, "plug").contains("x-2")
                && pending_ids(&engine, "gh").len() == github_hub::waiting_environments(&hub)
                && pending_ids(&engine, "hoop") == hoop_live
        },
    )
    .await;
    until(
        &mut changes,
        SETTLE,
        "the killed backend degraded, alone",
        || {
            let statuses = engine.backends().unwrap();
            statuses
                .iter()
                .all(|b| (b.name == "ref") == (b.status == "degraded"))
        },
    )
    .await;

    // The inbox: every pending request of the live backends, nothing they do not have.
    let inbox = engine.inbox(Utc::now()).unwrap();
    let live: BTreeSet<String> = inbox
        .actions
        .iter()
        .filter(|a| a.key.backend != "ref")
        .map(|a| a.key.to_string())
        .collect();
    let mut want = BTreeSet::new();
    want.extend(hoop_live.iter().map(|id| format!("hoop/{id}")));
    want.extend(["plug/x-1", "plug/x-2"].map(String::from));
    want.extend(
        prefect_paused(&prefect_url)
            .await
            .iter()
            .map(|id| format!("prefect/{id}")),
    );
    want.extend(
        airflow_open(&airflow)
            .await
            .iter()
            .map(|id| format!("airflow/{id}")),
    );
    want.extend(
        github_hub::waiting_ids(&hub)
            .into_iter()
            .map(|id| format!("gh/{id}")),
    );
    assert_eq!(live, want);
    assert!(inbox
        .actions
        .iter()
        .all(|a| a.snapshot.status == ActionStatus::Pending));
    let ref_status = engine
        .backends()
        .unwrap()
        .into_iter()
        .find(|b| b.name == "ref")
        .unwrap();
    assert!(
        ref_status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("127.0.0.1"),
        "the degraded status names where it failed: {ref_status:?}"
    );

    stop.trigger();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
}
