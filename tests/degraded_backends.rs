//! Broken backends degrade only themselves: a server that hangs mid-body, one that
//! sends malformed JSON and one with the wrong types sync beside a healthy reference
//! server, which keeps working.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use countersign_core::backends::{self, Limits};
use countersign_core::config::BackendConfig;
use countersign_core::shutdown;
use countersign_core::store::Store;
use countersign_core::Engine;

fn add(engine: &mut Engine, name: &str, url: String) {
    let config = BackendConfig {
        name: name.into(),
        kind: "countersign".into(),
        url,
        token_env: None,
        poll_interval_secs: Some(1),
        max_backoff_secs: Some(1),
        timeout_secs: None,
        ..Default::default()
    };
    let limits = Limits {
        request_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let backend = backends::build(&config, Some(TOKEN.into()), limits).unwrap();
    engine.add_backend(config, backend).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broken_backend_is_degraded_with_its_own_error_and_the_good_one_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("server.db"), "127.0.0.1:0");
    Producer::new(&server.url())
        .create(&new_action("good-1", "A request from a healthy backend"))
        .await;
    let hang = broken_server(Misbehaviour::HangMidBody).await;
    let garbage = broken_server(Misbehaviour::MalformedJson).await;
    let types = broken_server(Misbehaviour::WrongTypes).await;

    let mut engine = Engine::new(Store::open_in_dir(&dir.path().join("c")).unwrap(), "ana");
    add(&mut engine, "good", server.url());
    add(&mut engine, "hangs", format!("http://{hang}"));
    add(&mut engine, "garbage", format!("http://{garbage}"));
    add(&mut engine, "types", format!("http://{types}"));

    let started = std::time::Instant::now();
    let reports = engine.sync_once(Utc::now()).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a hanging backend is cut off by its deadline, not waited for"
    );
    let by_name = |n: &str| reports.iter().find(|r| r.backend == n).unwrap();
    assert!(by_name("good").error.is_none());
    assert_eq!(by_name("hangs").error_code, Some("timeout"));
    assert_eq!(by_name("garbage").error_code, Some("malformed"));
    assert_eq!(by_name("types").error_code, Some("malformed"));
    let types_error = by_name("types").error.clone().unwrap();
    assert!(
        types_error.contains("actions[0].title"),
        "the error names the field: {types_error}"
    );

    let statuses = engine.backends().unwrap();
    for s in &statuses {
        let expected = if s.name == "good" { "ok" } else { "degraded" };
        assert_eq!(s.status, expected, "{}: {:?}", s.name, s.last_error);
    }
    assert_eq!(engine.pending(None).unwrap().len(), 1);
    assert_eq!(engine.pending(Some("good")).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_engine_keeps_the_good_backend_live_while_others_fail() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("server.db"), "127.0.0.1:0");
    let producer = Producer::new(&server.url());
    let hang = broken_server(Misbehaviour::HangMidBody).await;
    let garbage = broken_server(Misbehaviour::MalformedJson).await;

    let mut engine = Engine::new(Store::open_in_dir(&dir.path().join("c")).unwrap(), "ana");
    add(&mut engine, "hangs", format!("http://{hang}"));
    add(&mut engine, "garbage", format!("http://{garbage}"));
    add(&mut engine, "good", server.url());
    let store = engine.store().clone();
    let mut changes = engine.changes();
    let (trigger, listener) = shutdown::channel();
    let tasks = engine.spawn_sync(&listener);

    for i in 0..3 {
        producer
            .create(&new_action(
                &format!("live-{i}"),
                "Arrives while others fail",
            ))
            .await;
    }
    let s = store.clone();
    until(
        &mut changes,
        Duration::from_secs(15),
        "three live actions",
        move || s.actions(&Default::default()).unwrap().len() == 3,
    )
    .await;
    let s = store.clone();
    until(
        &mut changes,
        Duration::from_secs(15),
        "both broken backends degraded",
        move || {
            s.backend_statuses()
                .unwrap()
                .iter()
                .filter(|b| b.status == "degraded")
                .count()
                == 2
        },
    )
    .await;
    trigger.trigger();
    for t in tasks {
        t.await.unwrap();
    }
}
