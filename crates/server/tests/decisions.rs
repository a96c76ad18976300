//! `POST /v1/actions/{id}/decision`: idempotency, stale snapshots, expiry, status and
//! body checks, in the documented order.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn same_idempotency_key_twice_returns_the_first_answer_and_applies_once() {
    let t = TestServer::start().await;
    let a = t.create_simple("a1", 2, Some(600)).await;
    let body = decision("approve", &hash_of(&a), "sam@example.com", "key-1");
    let (s1, first) = t.decide_raw("a1", &body).await;
    assert_eq!(s1, StatusCode::OK, "{first}");
    let (s2, second) = t.decide_raw("a1", &body).await;
    assert_eq!(s2, StatusCode::OK);
    assert_eq!(second, first, "byte-identical answer");

    let answer: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(answer["decision"]["idempotency_key"], "key-1");
    assert_eq!(answer["decision"]["verdict"], "approve");
    assert_eq!(answer["action"]["status"], "pending", "1 of 2 approvals");
    let now = t.action("a1").await;
    let reviews = now["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 1, "applied exactly once");
    assert_eq!(reviews[0]["reviewer"], "sam@example.com");
    assert_eq!(reviews[0]["verdict"], "approved");
    assert_eq!(reviews[0]["at"], "2026-01-02T03:04:05.678Z");
    assert_eq!(reviews[0]["comment"], "looks right");
    assert_ne!(hash_of(&now), hash_of(&a), "a review changes the snapshot");
    let kinds: Vec<&str> = now["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["requested", "reviewed"]);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_are_applied_once() {
    let t = std::sync::Arc::new(TestServer::start().await);
    let a = t.create_simple("a1", 3, None).await;
    let body = decision("approve", &hash_of(&a), "sam", "same-key");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let t = std::sync::Arc::clone(&t);
        let body = body.clone();
        tasks.push(tokio::spawn(async move { t.decide_raw("a1", &body).await }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, StatusCode::OK);
    assert_eq!(t.action("a1").await["reviews"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn approvals_and_denials_settle_the_action() {
    let t = TestServer::start().await;
    let a = t.create_simple("two", 2, None).await;
    let (_, first) = t
        .decide("two", &decision("approve", &hash_of(&a), "sam", "k1"))
        .await;
    let after_one = &first["action"];
    // The same person cannot be the second approver.
    let (status, body) = t
        .decide(
            "two",
            &decision("approve", &hash_of(after_one), "sam", "k2"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, second) = t
        .decide(
            "two",
            &decision("approve", &hash_of(after_one), "kim", "k3"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["action"]["status"], "approved");
    let kinds: Vec<&str> = second["action"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["requested", "reviewed", "reviewed", "approved"]);

    let d = t.create_simple("deny-me", 2, None).await;
    let (status, denied) = t
        .decide("deny-me", &decision("deny", &hash_of(&d), "sam", "k4"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        denied["action"]["status"], "denied",
        "a denial settles at once"
    );
    assert_eq!(denied["action"]["reviews"][0]["verdict"], "denied");
}

#[tokio::test]
async fn stale_snapshot_is_409_with_both_hashes_and_applies_nothing() {
    let t = TestServer::start().await;
    let a = t.create_simple("a1", 1, None).await;
    let stale = "0".repeat(64);
    let (status, body) = t
        .decide("a1", &decision("approve", &stale, "sam", "k1"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "stale_snapshot");
    assert_eq!(body["error"]["expected_snapshot_hash"], stale);
    assert_eq!(body["error"]["current_snapshot_hash"], hash_of(&a));
    assert_eq!(t.action("a1").await["status"], "pending");
    // Only applied answers are stored: a retry with the same key and the right hash
    // is evaluated afresh.
    let (status, ok) = t
        .decide("a1", &decision("approve", &hash_of(&a), "sam", "k1"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ok["action"]["status"], "approved");
}

#[tokio::test]
async fn not_pending_is_409_with_the_status() {
    let t = TestServer::start().await;
    let a = t.create_simple("a1", 1, None).await;
    let (_, denied) = t
        .decide("a1", &decision("deny", &hash_of(&a), "sam", "k1"))
        .await;
    let (status, body) = t
        .decide(
            "a1",
            &decision("approve", &hash_of(&denied["action"]), "kim", "k2"),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "not_pending");
    assert_eq!(body["error"]["status"], "denied");
}

#[tokio::test]
async fn expired_actions_answer_410() {
    let t = TestServer::start().await;
    let mut events = t.events(None).await;
    let a = t.create_simple("short", 1, Some(1)).await;
    // The ticker expires it and says so on the event stream.
    let seen = events
        .until(|e| e.event == "action.updated" && e.data["id"] == "short")
        .await;
    let updated = &seen.last().unwrap().data;
    assert_eq!(updated["status"], "expired");
    assert_eq!(
        updated["timeline"].as_array().unwrap().last().unwrap()["kind"],
        "expired"
    );
    assert!(seen
        .iter()
        .any(|e| e.event == "timeline.appended" && e.data["event"]["kind"] == "expired"));
    let (status, body) = t
        .decide("short", &decision("approve", &hash_of(&a), "sam", "k1"))
        .await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(body["error"]["code"], "expired");

    // Past its expiry but not yet swept by the ticker: still 410, and expired now.
    let z = t.create_simple("zero", 1, Some(0)).await;
    let (status, body) = t
        .decide("zero", &decision("approve", &hash_of(&z), "sam", "k2"))
        .await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(body["error"]["code"], "expired");
    let now = t.action("zero").await;
    assert_eq!(now["status"], "expired");
    assert_eq!(now["reviews"], json!([]));
}

#[tokio::test]
async fn malformed_decisions_name_the_field_before_anything_else() {
    let t = TestServer::start().await;
    let a = t.create_simple("a1", 1, None).await;
    let hash = hash_of(&a);
    let mut maybe = decision("approve", &hash, "sam", "k1");
    maybe["verdict"] = json!("maybe");
    let mut missing = decision("approve", &hash, "sam", "k1");
    missing.as_object_mut().unwrap().remove("snapshot_hash");
    let mut bad_time = decision("approve", &hash, "sam", "k1");
    bad_time["decided_at"] = json!("yesterday");
    let mut short_hash = decision("approve", &hash, "sam", "k1");
    short_hash["snapshot_hash"] = json!("abc");
    for (body, field) in [
        (maybe, "verdict"),
        (missing, "snapshot_hash"),
        (bad_time, "decided_at"),
        (short_hash, "snapshot_hash"),
    ] {
        // A malformed body is reported even for an unknown action (400 before 404).
        for id in ["a1", "unknown"] {
            let (status, answer) = t.decide(id, &body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(answer["error"]["code"], "malformed");
            assert_eq!(answer["error"]["field"], field, "{answer}");
        }
    }
    let (status, answer) = t
        .decide("unknown", &decision("approve", &hash, "sam", "k1"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"]["code"], "not_found");
    assert_eq!(t.action("a1").await["reviews"], json!([]));
}
