//! `GET /v1/events`: event names and payloads, ids, resume, keepalive, shutdown.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;

#[tokio::test]
async fn changes_arrive_as_named_events_with_increasing_ids() {
    let t = TestServer::start().await;
    let mut events = t.events(None).await;
    let a = t.create_simple("a1", 1, None).await;
    let created = events.next_event().await;
    assert_eq!(created.id, 1);
    assert_eq!(created.event, "action.created");
    assert_eq!(
        created.data, a,
        "action.created carries the action with its timeline"
    );

    let (status, answer) = t
        .decide("a1", &decision("approve", &hash_of(&a), "sam", "k"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let rest: Vec<SseEvent> = vec![
        events.next_event().await,
        events.next_event().await,
        events.next_event().await,
    ];
    let names: Vec<&str> = rest.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        ["timeline.appended", "timeline.appended", "action.updated"]
    );
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(rest[0].data["action_id"], "a1");
    assert_eq!(rest[0].data["event"]["kind"], "reviewed");
    assert_eq!(rest[1].data["event"]["kind"], "approved");
    assert_eq!(rest[2].data, answer["action"]);
}

#[tokio::test]
async fn last_event_id_replays_the_backlog_then_continues_live_without_gap_or_duplicate() {
    let t = TestServer::start().await;
    for i in 0..4 {
        t.create_simple(&format!("a{i}"), 1, None).await;
    }
    let mut events = t.events(Some(1)).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(events.next_event().await.id);
    }
    assert_eq!(ids, [2, 3, 4]);
    // Live events created while the replay runs and after it.
    let creator = {
        let client = t.client.clone();
        let base = t.base.clone();
        tokio::spawn(async move {
            for i in 4..10 {
                let r = client
                    .post(format!("{base}/v1/actions"))
                    .bearer_auth(TOKEN)
                    .json(&new_action(&format!("a{i}"), 1, None))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
            }
        })
    };
    for _ in 0..6 {
        ids.push(events.next_event().await.id);
    }
    creator.await.unwrap();
    assert_eq!(ids, (2..=10).collect::<Vec<i64>>());

    // The query parameter works where a header cannot be set.
    let response = t.get("/v1/events?last_event_id=8").send().await.unwrap();
    let mut from_query = Sse::from_response(response);
    assert_eq!(from_query.next_event().await.id, 9);
    assert_eq!(from_query.next_event().await.id, 10);

    let (status, body) = json_of(
        t.get("/v1/events")
            .header("Last-Event-ID", "soon")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "Last-Event-ID");
}

#[tokio::test]
async fn a_list_cursor_resumes_exactly_after_the_listing() {
    let t = TestServer::start().await;
    t.create_simple("a1", 1, None).await;
    t.create_simple("a2", 1, None).await;
    let (_, list) = json_of(t.get("/v1/actions").send().await.unwrap()).await;
    let cursor: i64 = list["cursor"].as_str().unwrap().parse().unwrap();
    t.create_simple("a3", 1, None).await;
    let mut events = t.events(Some(cursor)).await;
    let next = events.next_event().await;
    assert_eq!(next.id, cursor + 1);
    assert_eq!(next.data["id"], "a3");
}

#[tokio::test]
async fn idle_streams_get_keepalive_comments() {
    let t = TestServer::start_with(|c| c.keepalive = Duration::from_millis(200)).await;
    let mut events = t.events(None).await;
    let comment = tokio::time::timeout(WAIT, async {
        loop {
            match events.next_item().await {
                Some(SseItem::Comment(c)) if c == "keepalive" => return c,
                Some(_) => continue,
                None => panic!("stream ended"),
            }
        }
    })
    .await
    .expect("a keepalive in time");
    assert_eq!(comment, "keepalive");
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_completes() {
    let t = TestServer::start().await;
    let mut events = t.events(None).await;
    t.create_simple("a1", 1, None).await;
    assert_eq!(events.next_event().await.id, 1);
    let TestServer { server, dir, .. } = t;
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("graceful shutdown does not wait for the stream's client");
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.next_item().await {
                Some(SseItem::Comment(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("stream ends");
    assert_eq!(end, None);
    drop(dir);
}
