//! The `prefect` backend against a real Prefect 3 server (`prefect server start`, SQLite)
//! and real flows that wait in `pause_flow_run(wait_for_input=…)`
//! (tests/prefect/approval_flow.py). Prefect comes from the venv `bash scripts/setup.sh`
//! makes at `.venv-backends/`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use countersign_core::api::DecisionInput;
use countersign_core::backends::{self, DecisionDelivery, DeliveryOutcome, Limits};
use countersign_core::config::BackendConfig;
use countersign_core::model::{
    ActionKey, ActionStatus, DeliveryState, EventSource, TimelineKind, Verdict,
};
use countersign_core::shutdown;
use countersign_core::signer::OsKeyring;
use countersign_core::store::Store;
use countersign_core::Engine;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

const ME: &str = "ana@example.com";

#[path = "common/prefect.rs"]
mod prefect;

use prefect::*;

fn engine_for(dir: &Path, url: &str) -> Engine {
    engine_polling_every(dir, url, 1)
}

fn engine_polling_every(dir: &Path, url: &str, poll_secs: u64) -> Engine {
    let store = Store::open_in_dir(dir).expect("store");
    let config = BackendConfig {
        name: "prefect".into(),
        kind: "prefect".into(),
        url: format!("{url}/api"),
        poll_interval_secs: Some(poll_secs),
        max_backoff_secs: Some(1),
        timeout_secs: Some(10),
        ..Default::default()
    };
    let backend = backends::build(&config, None, Limits::default()).expect("backend");
    let mut engine = Engine::new(store, ME).with_key_store(Arc::new(OsKeyring::with_names(
        "countersign-test",
        "prefect-backend",
    )));
    engine.add_backend(config, backend).expect("register");
    engine
}

fn input(engine: &Engine, key: &ActionKey, verdict: Verdict, reason: &str) -> DecisionInput {
    DecisionInput {
        action: key.clone(),
        verdict,
        reason: reason.into(),
        seen_snapshot_hash: engine.detail(key).unwrap().action.snapshot_hash,
        answer: None,
    }
}

async fn wait_for_file(path: &Path, flow: &Group) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the flow wrote no answer within 30 s\n{}",
            flow.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn run_state(url: &str, id: &str) -> String {
    let run: Value = reqwest::get(format!("{url}/api/flow_runs/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    run["state_type"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_flow_runs_are_listed_approved_and_denied_through_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = start_server(dir.path()).await;
    let (yes_flow, yes_out) = start_flow(dir.path(), &url, "gate-yes");
    let (no_flow, no_out) = start_flow(dir.path(), &url, "gate-no");
    let engine = engine_for(&dir.path().join("client"), &url);

    // Sync until both runs wait for input.
    let deadline = Instant::now() + Duration::from_secs(45);
    let pending = loop {
        let report = engine.sync_once(Utc::now()).await;
        assert!(report[0].error.is_none(), "{:?}", report[0].error);
        let pending = engine.pending(Some("prefect")).unwrap();
        if pending.len() == 2 {
            break pending;
        }
        assert!(
            Instant::now() < deadline,
            "2 paused runs expected, saw {}\n{}\n{}\n{}",
            pending.len(),
            server.log_tail(),
            yes_flow.log_tail(),
            no_flow.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let key_of = |run: &str| {
        pending
            .iter()
            .find(|a| a.snapshot.title == format!("release-gate / {run} waits for input"))
            .unwrap_or_else(|| panic!("no action for {run}: {pending:?}"))
            .key
            .clone()
    };
    let (yes, no) = (key_of("gate-yes"), key_of("gate-no"));

    let detail = engine.detail(&yes).unwrap();
    let s = &detail.action.snapshot;
    assert_eq!(s.kind.as_str(), "flow_run");
    assert_eq!(s.requester, "prefect");
    assert!(s.expires_at.is_some(), "pause_timeout becomes expires_at");
    assert_eq!(
        s.web_url.as_deref(),
        Some(&*format!("{url}/runs/flow-run/{}", yes.external_id))
    );
    let get = |k: &str| {
        s.details
            .iter()
            .find(|d| d.key == k)
            .unwrap_or_else(|| panic!("no detail {k}: {:?}", s.details))
            .value
            .clone()
    };
    let form = s.form.as_ref().expect("the pause's input form");
    let fields: Vec<(&str, &str, bool)> = form
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.label.as_str(), f.required))
        .collect();
    assert_eq!(
        fields,
        [("approved", "Approved", true), ("reason", "Reason", false)]
    );
    assert!(form.options.is_empty(), "Prefect forms offer no options");
    assert_eq!(
        get("input description"),
        "Ship **gate-yes**?\nAnswer with approved and a reason."
    );
    assert_eq!(get("flow"), "release-gate");
    assert!(get("parameters").contains("\"target\": \"gate-yes\""));
    let backend_kinds: Vec<TimelineKind> = detail
        .timeline
        .iter()
        .filter(|e| e.source == EventSource::Backend)
        .map(|e| e.kind)
        .collect();
    assert_eq!(backend_kinds.last(), Some(&TimelineKind::Requested));
    assert!(backend_kinds.len() >= 3, "{backend_kinds:?}");

    let approved = engine
        .decide(input(&engine, &yes, Verdict::Approve, ""), Utc::now())
        .await
        .unwrap();
    assert_eq!(
        approved.decision.delivery,
        DeliveryState::Delivered,
        "{:?}",
        approved.queued_because
    );
    let denied = engine
        .decide(
            input(&engine, &no, Verdict::Deny, "not during the freeze"),
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(
        denied.decision.delivery,
        DeliveryState::Delivered,
        "{:?}",
        denied.queued_because
    );

    let got_yes = wait_for_file(&yes_out, &yes_flow).await;
    assert_eq!(got_yes["approved"], Value::Bool(true));
    assert!(
        got_yes["reason"]
            .as_str()
            .unwrap()
            .starts_with("[countersign "),
        "{got_yes}"
    );
    let got_no = wait_for_file(&no_out, &no_flow).await;
    assert_eq!(got_no["approved"], Value::Bool(false));
    let reason = got_no["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("not during the freeze [countersign ")
            && reason.contains("payload-sha256:"),
        "{got_no}"
    );

    // Both flows ran on to the end.
    for key in [&yes, &no] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = run_state(&url, &key.external_id).await;
            if state == "COMPLETED" {
                break;
            }
            assert!(Instant::now() < deadline, "run {key} is {state}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    // A retried delivery (its first answer lost) finds its own answer stored: delivered,
    // not resumed twice; someone else's decision on a resumed run is not pending.
    let backend = backends::build(
        &BackendConfig {
            name: "prefect".into(),
            kind: "prefect".into(),
            url: url.clone(),
            ..Default::default()
        },
        None,
        Limits::default(),
    )
    .unwrap();
    let retry = DecisionDelivery {
        decision: denied.decision.clone(),
    };
    assert!(matches!(
        backend.decide(&retry).await.unwrap(),
        DeliveryOutcome::Delivered { .. }
    ));
    let mut other = denied.decision.clone();
    other.reason = "someone else".into();
    assert!(matches!(
        backend
            .decide(&DecisionDelivery { decision: other })
            .await
            .unwrap(),
        DeliveryOutcome::NotPending { .. }
    ));

    // Resumed runs leave the inbox on the next poll.
    engine.sync_once(Utc::now()).await;
    assert!(engine.pending(Some("prefect")).unwrap().is_empty());
}

/// A loopback proxy in front of Prefect that passes plain HTTP through but answers every
/// websocket upgrade with 404, like a proxy without websocket support. Counts the refusals.
async fn start_refusing_proxy(upstream: &str) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let count = refused.clone();
    let upstream = upstream.to_owned();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (upstream, count) = (upstream.clone(), count.clone());
            tokio::spawn(async move {
                // The first request's head decides; a websocket always opens a new
                // connection, so later requests on a kept-alive one are plain HTTP.
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let lower = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if lower.contains("upgrade: websocket") {
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = client
                        .write_all(
                            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                if server.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (format!("http://{address}"), refused)
}

/// Waits until `check` holds, re-checking whenever the engine broadcasts a change.
async fn until_changed<T>(
    changes: &mut broadcast::Receiver<countersign_core::sync::Change>,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    // A bound against hanging forever, not a timing assertion.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = check() {
            return v;
        }
        match tokio::time::timeout_at(deadline, changes.recv()).await {
            Err(_) => panic!("gave up waiting for {what}"),
            Ok(Err(broadcast::error::RecvError::Closed)) => panic!("the engine is gone"),
            Ok(_) => {}
        }
    }
}

fn backend_ok(engine: &Engine) -> Option<()> {
    let backends = engine.backends().unwrap();
    let b = backends.iter().find(|b| b.name == "prefect")?;
    (b.status == "ok").then_some(())
}

fn status_of(engine: &Engine, key: &ActionKey) -> Option<ActionStatus> {
    engine.detail(key).ok().map(|d| d.action.snapshot.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_come_through_the_events_websocket_and_by_polling_where_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = start_server(dir.path()).await;
    let (proxy, refused) = start_refusing_proxy(url.trim_start_matches("http://")).await;
    // Polls once an hour: within this test only the websocket can bring a change.
    let pushed = engine_polling_every(&dir.path().join("pushed"), &url, 3600);
    // Behind the proxy, which refuses the websocket: has to poll.
    let polled = engine_polling_every(&dir.path().join("polled"), &proxy, 1);
    let mut pushed_changes = pushed.changes();
    let mut polled_changes = polled.changes();
    let (trigger, stop) = shutdown::channel();
    let tasks: Vec<_> = pushed
        .spawn_sync(&stop)
        .into_iter()
        .chain(polled.spawn_sync(&stop))
        .collect();

    // Both listed (nothing paused yet) and settled into their streams before the flow
    // starts, so the pause cannot come from that first list.
    until_changed(&mut pushed_changes, "the pushed engine to be ok", || {
        backend_ok(&pushed)
    })
    .await;
    until_changed(&mut polled_changes, "the polled engine to be ok", || {
        backend_ok(&polled)
    })
    .await;
    assert!(pushed.pending(Some("prefect")).unwrap().is_empty());
    assert!(
        refused.load(Ordering::SeqCst) >= 1,
        "the polled engine never tried the websocket"
    );

    let (flow, out) = start_flow(dir.path(), &url, "gate-live");
    let key = until_changed(&mut pushed_changes, "the pause pushed", || {
        pushed
            .pending(Some("prefect"))
            .unwrap()
            .into_iter()
            .next()
            .map(|a| a.key)
    })
    .await;
    let detail = pushed.detail(&key).unwrap();
    assert_eq!(
        detail.action.snapshot.title,
        "release-gate / gate-live waits for input"
    );
    assert!(detail.action.snapshot.form.is_some(), "{detail:?}");
    until_changed(&mut polled_changes, "the pause polled", || {
        (status_of(&polled, &key) == Some(ActionStatus::Pending)).then_some(())
    })
    .await;

    // Someone answers in Prefect itself, not through Countersign.
    let result: Value = reqwest::Client::new()
        .post(format!("{url}/api/flow_runs/{}/resume", key.external_id))
        .json(&serde_json::json!({
            "run_input": {"approved": true, "reason": "answered in the Prefect UI"}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(result["status"], "ACCEPT", "{result}");

    let resumed = |engine: &Engine| status_of(engine, &key).filter(|s| *s != ActionStatus::Pending);
    let pushed_status = until_changed(&mut pushed_changes, "the resume pushed", || {
        resumed(&pushed)
    })
    .await;
    assert_eq!(pushed_status, ActionStatus::Executed);
    let polled_status = until_changed(&mut polled_changes, "the resume polled", || {
        resumed(&polled)
    })
    .await;
    assert_eq!(polled_status, ActionStatus::Executed);
    let answer = wait_for_file(&out, &flow).await;
    assert_eq!(answer["reason"], "answered in the Prefect UI");

    // Falling back to polling is not a fault: neither engine was marked degraded.
    for engine in [&pushed, &polled] {
        let backends = engine.backends().unwrap();
        assert!(
            backends.iter().all(|b| b.last_error.is_none()),
            "{backends:?}\n{}",
            server.log_tail()
        );
    }
    trigger.trigger();
    for task in tasks {
        task.await.unwrap();
    }
}
