//! Auth, listing with ETags, fetching and creating actions, body validation.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn every_v1_route_requires_the_bearer_token() {
    let t = TestServer::start().await;
    t.create_simple("a1", 1, None).await;
    let routes = [
        ("GET", "/v1/actions"),
        ("GET", "/v1/actions/a1"),
        ("POST", "/v1/actions"),
        ("POST", "/v1/actions/a1/decision"),
        ("GET", "/v1/events"),
    ];
    for (method, path) in routes {
        for token in [None, Some("wrong-token"), Some("test-token-12345")] {
            let mut request = match method {
                "GET" => t.client.get(t.url(path)),
                _ => t.client.post(t.url(path)).body("{not json"),
            };
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {token:?}"
            );
            assert!(response.headers().contains_key("www-authenticate"));
            let (_, body) = json_of(response).await;
            assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
        }
    }
    // Health needs no token.
    let health = t.client.get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // Nothing was decided by the unauthorised attempts.
    assert_eq!(t.action("a1").await["reviews"], json!([]));
}

#[tokio::test]
async fn list_has_a_content_etag_and_answers_304_when_unchanged() {
    let t = TestServer::start().await;
    t.create_simple("a1", 1, None).await;
    let first = t.get("/v1/actions?status=pending").send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
        "{etag}"
    );
    let (_, list) = json_of(first).await;
    assert_eq!(list["actions"].as_array().unwrap().len(), 1);
    assert_eq!(list["actions"][0]["id"], "a1");
    assert_eq!(list["actions"][0]["timeline"][0]["kind"], "requested");
    assert_eq!(list["cursor"], "1");

    let same = t
        .get("/v1/actions?status=pending")
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(same.headers()["etag"].to_str().unwrap(), etag);
    assert!(same.bytes().await.unwrap().is_empty());

    t.create_simple("a2", 1, None).await;
    let changed = t
        .get("/v1/actions?status=pending")
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
    let (_, list) = json_of(changed).await;
    let ids: Vec<&str> = list["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a1", "a2"]);
    assert_eq!(list["cursor"], "2");
}

#[tokio::test]
async fn list_filters_by_status_and_rejects_unknown_statuses() {
    let t = TestServer::start().await;
    let a = t.create_simple("a1", 1, None).await;
    t.create_simple("a2", 1, None).await;
    let (status, _) = t
        .decide("a1", &decision("deny", &hash_of(&a), "sam", "k1"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let ids = |v: &Value| -> Vec<String> {
        v["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, pending) = json_of(t.get("/v1/actions?status=pending").send().await.unwrap()).await;
    assert_eq!(ids(&pending), ["a2"]);
    let (_, denied) = json_of(t.get("/v1/actions?status=denied").send().await.unwrap()).await;
    assert_eq!(ids(&denied), ["a1"]);
    let (_, all) = json_of(t.get("/v1/actions").send().await.unwrap()).await;
    assert_eq!(ids(&all), ["a1", "a2"]);
    let (status, body) = json_of(t.get("/v1/actions?status=maybe").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "malformed");
    assert_eq!(body["error"]["field"], "status");
}

#[tokio::test]
async fn unknown_action_is_404_not_found() {
    let t = TestServer::start().await;
    let (status, body) = json_of(t.get("/v1/actions/nope").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = json_of(t.get("/v1/nothing-here").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn create_answers_201_then_200_for_the_same_id_and_creates_once() {
    let t = TestServer::start().await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let (status, created) = t.create(new_action("job-42", 2, Some(600))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["id"], "job-42");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["approvals_required"], 2);
    assert_eq!(created["reviews"], json!([]));
    assert_eq!(created["timeline"].as_array().unwrap().len(), 1);
    assert_eq!(created["timeline"][0]["kind"], "requested");
    let requested: chrono::DateTime<chrono::Utc> =
        created["requested_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> =
        created["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(requested >= before);
    assert_eq!(expires - requested, chrono::Duration::seconds(600));
    // The hash is the one of the core crate over the snapshot fields.
    let snapshot: countersign_core::model::ActionSnapshot =
        serde_json::from_value(created.clone()).unwrap();
    assert_eq!(snapshot.hash().0, hash_of(&created));

    let mut retry = new_action("job-42", 2, Some(600));
    retry["title"] = json!("something else");
    let (status, again) = t.create(retry).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, created);
    let (_, list) = json_of(t.get("/v1/actions").send().await.unwrap()).await;
    assert_eq!(list["actions"].as_array().unwrap().len(), 1);
    assert_eq!(list["cursor"], "1", "one action.created event only");

    // Defaults: approvals_required 1, no expiry, a generated id.
    let (status, minimal) = t
        .create(json!({"kind": "deployment", "title": "Deploy api", "requester": "ci"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(minimal["approvals_required"], 1);
    assert_eq!(minimal["expires_at"], Value::Null);
    assert!(minimal["id"].as_str().unwrap().starts_with("act_"));
}

#[tokio::test]
async fn malformed_create_bodies_name_the_field() {
    let t = TestServer::start().await;
    let cases = [
        (json!({"kind": "command", "requester": "r"}), Some("title")),
        (
            json!({"kind": "command", "title": 5, "requester": "r"}),
            Some("title"),
        ),
        (
            json!({"kind": "command", "title": "t", "requester": "r", "details": [{"key": "k"}]}),
            Some("details[0].value"),
        ),
        (
            json!({"kind": "command", "title": "t", "requester": "r", "approvals_required": 0}),
            Some("approvals_required"),
        ),
        (
            json!({"kind": "command", "title": "t", "requester": "r", "colour": "red"}),
            Some("colour"),
        ),
        (
            json!({"kind": "command", "title": "t", "requester": "r", "id": "a/b"}),
            Some("id"),
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = t.create(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["error"]["code"], "malformed", "{body}");
        assert_eq!(answer["error"]["field"].as_str(), field, "{body}: {answer}");
    }
    let response = t
        .post("/v1/actions")
        .body("{\"kind\": ")
        .send()
        .await
        .unwrap();
    let (status, answer) = json_of(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["code"], "malformed");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1"),
        "{answer}"
    );
    let (_, list) = json_of(t.get("/v1/actions").send().await.unwrap()).await;
    assert_eq!(list["actions"], json!([]));
}

#[tokio::test]
async fn oversized_bodies_are_413_too_large() {
    let t = TestServer::start().await;
    let mut body = new_action("big", 1, None);
    body["summary"] = json!("x".repeat(countersign_server::MAX_BODY_BYTES + 1));
    let (status, answer) = t.create(body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["error"]["code"], "too_large");
}
