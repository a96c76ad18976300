//! The `airflow` backend against a real Airflow 3.1 (`airflow standalone`: API server,
//! scheduler, DAG processor and triggerer, on SQLite) running the human-in-the-loop DAG
//! tests/airflow/dags/countersign_hitl.py. Airflow comes from the venv `bash
//! scripts/setup.sh` makes at `.venv-airflow/`.
//!
//! Starting Airflow takes most of this test's time, so one server serves every scenario:
//! they run in order inside one test, each on its own DAG run.

mod common;

use std::path::Path;
use std::process::Output;

use chrono::Utc;
use common::{CliEnv, TOKEN};
use countersign_core::backends::{self, DecisionDelivery, DeliveryOutcome, Limits};
use countersign_core::config::Config;
use countersign_core::model::{ActionKey, Answer, Decision, DeliveryState, Verdict};
use serde_json::{json, Value};

#[path = "common/airflow.rs"]
mod airflow;

use airflow::*;

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
