//! The demo scenario creates varied requests whose timelines keep advancing.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use countersign_server::ScenarioConfig;

#[tokio::test]
async fn demo_requests_arrive_and_their_timelines_advance() {
    let t = TestServer::start_with(|c| {
        c.scenario = Some(ScenarioConfig {
            rate_per_min: 0.0,
            initial: 3,
            seed: Some(11),
        })
    })
    .await;
    // The initial requests exist when start() returns.
    let (_, list) = json_of(t.get("/v1/actions?status=pending").send().await.unwrap()).await;
    let actions = list["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 3);
    let kinds: HashSet<&str> = actions
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.len(),
        3,
        "the first requests are of different kinds: {kinds:?}"
    );
    for a in actions {
        assert!(!a["title"].as_str().unwrap().is_empty());
        assert!(!a["details"].as_array().unwrap().is_empty());
        assert!(a["expires_at"].is_string());
        assert_eq!(a["timeline"][0]["kind"], "requested");
    }

    // Replay from the start, then follow: every action gets a policy evaluation and
    // then a reviewer assignment, on its own schedule (within 10 s).
    let mut events = t.events(Some(0)).await;
    let mut steps: HashMap<String, Vec<String>> = HashMap::new();
    let mut last_id = 0;
    let done = |steps: &HashMap<String, Vec<String>>| {
        steps.len() == 3 && steps.values().all(|s| s.len() == 2)
    };
    while !done(&steps) {
        let e = events.next_event().await;
        assert_eq!(e.id, last_id + 1, "contiguous ids");
        last_id = e.id;
        if e.event == "timeline.appended" {
            steps
                .entry(e.data["action_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(e.data["event"]["kind"].as_str().unwrap().to_owned());
        }
    }
    for (id, kinds) in &steps {
        assert_eq!(kinds, &["policy_evaluated", "reviewer_assigned"], "{id}");
        let action = t.action(id).await;
        let timeline: Vec<&str> = action["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            timeline,
            ["requested", "policy_evaluated", "reviewer_assigned"]
        );
        assert!(action["timeline"][1]["text"]
            .as_str()
            .unwrap()
            .starts_with("Policy "));
    }
}

#[tokio::test]
async fn new_requests_keep_arriving_at_the_configured_rate() {
    let t = TestServer::start_with(|c| {
        c.scenario = Some(ScenarioConfig {
            rate_per_min: 600.0,
            initial: 1,
            seed: Some(3),
        })
    })
    .await;
    let mut events = t.events(Some(1)).await;
    let created = events.until(|e| e.event == "action.created").await;
    let new = &created.last().unwrap().data;
    assert_eq!(new["status"], "pending");
    assert_ne!(new["id"], "");
}
