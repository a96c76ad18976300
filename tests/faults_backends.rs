//! Hostile backends, each a real HTTP server on 127.0.0.1 (`tests/common/faults.rs`):
//! one that floods 50 MB of JSON (with and without a declared length), one that sends
//! invalid UTF-8, one with the wrong types, one that answers 500, one that asks to slow
//! down with 429/503 and `Retry-After`, event streams that drop every few events (also
//! mid-event) and one that hangs mid-stream. For each: the engine stops within its
//! limits, the backend is degraded with an error that says what happened, a healthy
//! reference server in the same engine keeps syncing, and the store file is intact
//! (integrity check, audit chain).
//!
//! `tests/degraded_backends.rs` covers a list that hangs mid-body, non-JSON and one
//! wrong-typed field for the open protocol; this file covers the rest, for every HTTP
//! kind where the fault is kind-independent; `tests/faults_prefect_stream.rs` covers the
//! Prefect events websocket.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::*;
use countersign_core::backends::Limits;
use countersign_core::model::{ActionKey, ActionKind, ActionSnapshot, ActionStatus, PendingAction};
use countersign_core::protocol::{WireAction, WireTimelineEvent};
use faults::*;

/// The test process's peak resident memory (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

const KINDS: [&str; 5] = ["countersign", "hoop", "github", "prefect", "airflow"];

/// Every HTTP kind, fed the same hostile bodies on every path, beside a healthy reference
/// server: each is degraded with the error its fault deserves, the good one syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_bad_utf8_wrong_types_and_500s_degrade_only_their_backend_for_every_kind() {
    let mut rig = Rig::new();
    rig.producer()
        .create(&new_action("good-1", "A request from a healthy backend"))
        .await;
    let limits = Limits {
        max_body_bytes: 4 * MB,
        ..limits()
    };

    // (fault, expected code, text the error must contain, handler)
    let faults: Vec<(&str, &str, &str, Handler)> = vec![
        (
            "flood-chunked",
            "too_large",
            "over the 4194304-byte limit",
            Arc::new(|_: &Seen| Reply::Flood {
                bytes: 50 * MB,
                declare_length: false,
            }),
        ),
        (
            "flood-declared",
            "too_large",
            "over the 4194304-byte limit",
            Arc::new(|_: &Seen| Reply::Flood {
                bytes: 50 * MB,
                declare_length: true,
            }),
        ),
        (
            "utf8",
            "malformed",
            "malformed data",
            Arc::new(|_: &Seen| {
                full(
                    200,
                    b"[{\"id\":\"\xff\xfe\xc3\x28\",\"\xf0\x28\x8c\x28\":1}]",
                )
            }),
        ),
        (
            "types",
            "malformed",
            "sent malformed data at `",
            // Valid JSON, every likely field the wrong type, top level of either shape.
            Arc::new(|_: &Seen| {
                full(
                    200,
                    br#"[{"id":[1],"status":7,"actions":{"x":1},"access_token":5,"workflow_runs":"n","hitl_details":false,"state":3,"created_at":true}]"#,
                )
            }),
        ),
        (
            "err500",
            "http",
            "HTTP 500",
            Arc::new(|_: &Seen| full(500, b"{\"message\":\"database on fire\"}")),
        ),
    ];

    let mut servers = Vec::new();
    let mut expected = Vec::new();
    for (fault, code, text, handler) in &faults {
        for kind in KINDS {
            let h = Hostile::start(handler.clone()).await;
            let name = format!("{kind}-{fault}");
            rig.add(config(&name, kind, h.url()), limits);
            expected.push((name, *code, *text, h.url()));
            servers.push(h);
        }
    }

    let before = peak_rss();
    let engine = &rig.engine;
    let reports = engine.sync_once(Utc::now()).await;
    let grown = peak_rss().saturating_sub(before);

    let by_name = |n: &str| reports.iter().find(|r| r.backend == n).unwrap();
    assert!(
        by_name("good").error.is_none(),
        "{:?}",
        by_name("good").error
    );
    let statuses = engine.backends().unwrap();
    for (name, code, text, url) in &expected {
        let report = by_name(name);
        assert_eq!(report.error_code, Some(*code), "{name}: {:?}", report.error);
        let status = statuses.iter().find(|s| &s.name == name).unwrap();
        assert_eq!(status.status, "degraded", "{name}");
        assert_eq!(status.last_error_code.as_deref(), Some(*code), "{name}");
        let error = status.last_error.clone().unwrap();
        assert!(
            error.contains(text) && error.contains(url.as_str()),
            "{name}: the error says what and where: {error}"
        );
        assert!(
            !error.chars().any(char::is_control),
            "{name}: hostile bytes stay out of the message: {error:?}"
        );
    }
    // The cap stops reading: no client took the whole 50 MB, only the cap plus what the
    // kernel's socket buffers held when it hung up.
    for h in &servers {
        let took = h.written.load(Ordering::SeqCst);
        assert!(
            took < 20 * MB as u64,
            "a client read {took} bytes of a 50 MB flood"
        );
    }
    // Ten floods at once: without the cap each would buffer 50 MB (500 MB in all).
    assert!(
        grown < 200 * MB as u64,
        "peak memory grew by {grown} bytes during the floods"
    );
    assert_eq!(engine.pending(Some("good")).unwrap().len(), 1);
    assert_eq!(engine.pending(None).unwrap().len(), 1);
    assert_store_intact(engine);
}

/// The server's list refuses with 429 then 503 (each with `Retry-After: 3`) before
/// answering: the next request comes no sooner than asked, measured on the server's
/// clock, although the engine's own backoff cap is 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_measured_on_the_servers_clock() {
    let lists = Arc::new(AtomicU64::new(0));
    let l = lists.clone();
    let mut slow = Hostile::start(Arc::new(move |seen: &Seen| {
        if seen.path.starts_with("/v1/events") {
            return Reply::Stream {
                chunks: vec![b": hello\n\n".to_vec()],
                hang: true,
            };
        }
        match l.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::Full {
                status: 429,
                headers: vec![("retry-after", "3".into())],
                body: br#"{"error":{"code":"rate_limited","message":"slow down"}}"#.to_vec(),
            },
            1 => Reply::Full {
                status: 503,
                headers: vec![("retry-after", "3".into())],
                body: b"maintenance".to_vec(),
            },
            _ => full(200, br#"{"actions":[],"cursor":"0"}"#),
        }
    }))
    .await;

    let mut rig = Rig::new();
    rig.add(config("slow", "countersign", slow.url()), limits());
    let mut run = rig.start();

    let first = slow.next(Duration::from_secs(15), "the first list").await;
    run.until(
        Duration::from_secs(15),
        "slow degraded as rate limited",
        |s| {
            s.backend_statuses()
                .unwrap()
                .iter()
                .any(|b| b.name == "slow" && b.last_error_code.as_deref() == Some("rate_limited"))
        },
    )
    .await;
    let status = run.status("slow");
    assert_eq!(status.status, "degraded");
    let error = status.last_error.clone().unwrap();
    assert!(
        error.contains("slow down") && error.contains("retry in 3 s"),
        "{error}"
    );
    let planned = status.next_retry_at.unwrap() - status.last_error_at.unwrap();
    assert!(planned >= chrono::Duration::seconds(3), "{planned}");

    // The healthy backend syncs while the other waits.
    run.good_backend_syncs("live-1").await;

    let second = slow.next(Duration::from_secs(15), "the second list").await;
    let third = slow.next(Duration::from_secs(15), "the third list").await;
    for (answered, next) in [(&first, &second), (&second, &third)] {
        let gap = next.at - slow.replied_at(answered.n);
        assert!(
            // Tokio's timers never fire early; 20 ms covers the two clocks' reads.
            gap + Duration::from_millis(20) >= Duration::from_secs(3),
            "request {} came {gap:?} after a Retry-After: 3 answer",
            next.n
        );
        assert!(next.path.starts_with("/v1/actions"), "{}", next.path);
    }
    run.until_status(Duration::from_secs(15), "slow", "ok")
        .await;
    run.stop().await;
}

fn wire(id: &str) -> WireAction {
    let snapshot = ActionSnapshot {
        kind: ActionKind::Command,
        title: format!("restart {id}"),
        summary: "from a stream that keeps dropping".into(),
        requester: "ops-bot".into(),
        // Whole seconds: the wire carries milliseconds, and the hash must survive it.
        requested_at: "2026-11-25T06:00:00Z".parse().unwrap(),
        expires_at: None,
        resource: "host-1".into(),
        details: vec![],
        approvals_required: 1,
        reviews: vec![],
        status: ActionStatus::Pending,
        web_url: None,
        form: None,
    };
    let action = PendingAction::new(ActionKey::new("x", id), snapshot.clone());
    WireAction {
        id: id.to_owned(),
        snapshot,
        snapshot_hash: action.snapshot_hash,
        timeline: vec![WireTimelineEvent {
            id: format!("{id}-requested"),
            at: "2026-11-25T06:00:00Z".parse().unwrap(),
            kind: "requested".into(),
            actor: Some("ops-bot".into()),
            text: "requested".into(),
        }],
    }
}

fn sse_event(id: u64, action: &WireAction) -> Vec<u8> {
    format!(
        "id: {id}\nevent: action.created\ndata: {}\n\n",
        serde_json::to_string(action).unwrap()
    )
    .into_bytes()
}

/// The event stream closes after every three events, the fourth time half-way through an
/// event: every action arrives exactly once, each reconnect resumes from the last
/// applied event id, and the half event is not applied until it arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_dropped_every_few_events_loses_and_repeats_nothing() {
    const TOTAL: u64 = 12;
    let actions: Arc<Vec<WireAction>> =
        Arc::new((1..=TOTAL).map(|i| wire(&format!("s{i}"))).collect());
    let a = actions.clone();
    let mut flaky = Hostile::start(Arc::new(move |seen: &Seen| {
        if let Some(id) = seen.path.strip_prefix("/v1/actions/") {
            return match a.iter().find(|w| w.id == id) {
                Some(w) => full(200, &serde_json::to_vec(w).unwrap()),
                None => full(404, br#"{"error":{"code":"not_found","message":"no"}}"#),
            };
        }
        if !seen.path.starts_with("/v1/events") {
            // The list never changes (304 after the first): everything comes through the
            // stream, so every resume point is the stream's own.
            return if seen.if_none_match.is_some() {
                Reply::Full {
                    status: 304,
                    headers: vec![("etag", "\"e0\"".into())],
                    body: vec![],
                }
            } else {
                Reply::Full {
                    status: 200,
                    headers: vec![("etag", "\"e0\"".into())],
                    body: br#"{"actions":[],"cursor":"0"}"#.to_vec(),
                }
            };
        }
        let from: u64 = seen
            .last_event_id
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut chunks: Vec<Vec<u8>> = (from + 1..=(from + 3).min(TOTAL))
            .map(|i| sse_event(i, &a[(i - 1) as usize]))
            .collect();
        if from == 6 {
            // Event 10 cut in the middle of its data line.
            let next = sse_event(10, &a[9]);
            chunks.push(next[..next.len() / 2].to_vec());
        }
        Reply::Stream {
            chunks,
            hang: from + 3 >= TOTAL,
        }
    }))
    .await;

    let mut rig = Rig::new();
    rig.add(config("flaky", "countersign", flaky.url()), limits());
    let mut run = rig.start();
    run.until(Duration::from_secs(40), "all streamed actions", |s| {
        s.actions(&Default::default()).unwrap().len() == TOTAL as usize
    })
    .await;
    run.good_backend_syncs("live-1").await;
    let store = run.store.clone();
    assert_eq!(
        store.actions(&Default::default()).unwrap().len(),
        TOTAL as usize + 1
    );
    run.stop().await;

    let mut resumed_from = Vec::new();
    while let Ok(seen) = flaky.seen.try_recv() {
        if seen.path.starts_with("/v1/events") {
            assert_eq!(seen.method, "GET");
            resumed_from.push(seen.last_event_id.clone());
        }
    }
    assert_eq!(
        resumed_from,
        vec![
            Some("0".into()),
            Some("3".into()),
            Some("6".into()),
            Some("9".into())
        ],
        "each reconnect resumes after the last whole event"
    );
    for w in actions.iter() {
        let key = ActionKey::new("flaky", &w.id);
        let timeline = store.timeline(&key).unwrap();
        let requested = timeline
            .iter()
            .filter(|e| e.external_id.as_deref() == Some(&format!("{}-requested", w.id)))
            .count();
        assert_eq!(requested, 1, "{key}: {timeline:?}");
    }
    let cursor = store.sync_cursor("flaky").unwrap();
    assert_eq!(cursor.last_event_id.as_deref(), Some("12"));
}

/// A stream that sends half an event and goes silent, and one that never sends a byte
/// after its headers, are cut off by the idle deadline and degraded as timeouts; the
/// healthy backend keeps receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_hangs_mid_event_times_out_and_degrades_only_itself() {
    let one = Arc::new(wire("h1"));
    let mut hangs = Vec::new();
    for half in [true, false] {
        let one = one.clone();
        hangs.push(
            Hostile::start(Arc::new(move |seen: &Seen| {
                if !seen.path.starts_with("/v1/events") {
                    return full(200, br#"{"actions":[],"cursor":"0"}"#);
                }
                let event = sse_event(1, &one);
                let chunks = if half {
                    vec![event[..event.len() - 20].to_vec()]
                } else {
                    vec![]
                };
                Reply::Stream { chunks, hang: true }
            }))
            .await,
        );
    }
    let mut rig = Rig::new();
    rig.add(config("half", "countersign", hangs[0].url()), limits());
    rig.add(config("mute", "countersign", hangs[1].url()), limits());
    let mut run = rig.start();
    run.until(
        Duration::from_secs(20),
        "both hanging streams degraded as timeouts",
        |s| {
            s.backend_statuses()
                .unwrap()
                .iter()
                .filter(|b| {
                    b.status == "degraded" && b.last_error_code.as_deref() == Some("timeout")
                })
                .count()
                == 2
        },
    )
    .await;
    for name in ["half", "mute"] {
        let error = run.status(name).last_error.unwrap();
        assert!(
            error.contains("/v1/events") && error.contains("within 2 s"),
            "{name}: {error}"
        );
    }
    // Each hanging stream was given up and re-opened (the engine does not wait forever).
    for h in &mut hangs {
        let mut events = 0;
        while events < 2 {
            if h.next(Duration::from_secs(20), "a re-opened stream")
                .await
                .path
                .starts_with("/v1/events")
            {
                events += 1;
            }
        }
    }
    run.good_backend_syncs("live-1").await;
    // The half event never completed, so it was never applied.
    assert!(run.engine().pending(Some("half")).unwrap().is_empty());
    run.stop().await;
}

/// A decision whose delivery is answered 429 with `Retry-After: 3` is retried by the
/// outbox no sooner than that (server's clock), under the same idempotency key, and then
/// recorded as delivered. The sync loop (whose outbox pass runs every second) is running
/// while the decision is made and the backend holds that first POST for 2.5 s: the
/// outbox must not send the decision again while its own attempt is still under way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_answered_429_is_retried_after_retry_after_with_the_same_key() {
    let action = Arc::new(wire("d1"));
    let posts = Arc::new(AtomicU64::new(0));
    let (a, p) = (action.clone(), posts.clone());
    let mut server = Hostile::start(Arc::new(move |seen: &Seen| {
        if seen.path.starts_with("/v1/events") {
            return Reply::Stream {
                chunks: vec![b": hello\n\n".to_vec()],
                hang: true,
            };
        }
        if seen.method == "POST" {
            return if p.fetch_add(1, Ordering::SeqCst) == 0 {
                Reply::Later(
                    Duration::from_millis(2500),
                    Box::new(Reply::Full {
                        status: 429,
                        headers: vec![("retry-after", "3".into())],
                        body: br#"{"error":{"code":"rate_limited","message":"slow down"}}"#
                            .to_vec(),
                    }),
                )
            } else {
                let body = serde_json::json!({ "action": &*a });
                full(200, body.to_string().as_bytes())
            };
        }
        if seen.path.starts_with("/v1/actions/") {
            return full(200, &serde_json::to_vec(&*a).unwrap());
        }
        let list = serde_json::json!({ "actions": [&*a], "cursor": "0" });
        full(200, list.to_string().as_bytes())
    }))
    .await;

    let mut rig = Rig::alone();
    rig.engine = rig
        .engine
        .with_key_store(Arc::new(countersign_core::signer::MemoryKeyStore::default()));
    rig.add(config("slow", "countersign", server.url()), limits());
    let mut run = rig.start();
    let key = ActionKey::new("slow", "d1");
    run.until(Duration::from_secs(15), "the action", |s| {
        matches!(s.action(&key), Ok(Some(_)))
    })
    .await;
    let engine = run.engine();
    let hash = engine.detail(&key).unwrap().action.snapshot_hash;
    let report = engine
        .decide(
            countersign_core::api::DecisionInput {
                action: key.clone(),
                verdict: countersign_core::model::Verdict::Approve,
                reason: "ok".into(),
                seen_snapshot_hash: hash,
                answer: None,
            },
            Utc::now(),
        )
        .await
        .unwrap();
    let queued = report.queued_because.expect("queued after the 429");
    assert!(queued.contains("retry in 3 s"), "{queued}");

    let mut decisions = Vec::new();
    while decisions.len() < 2 {
        let seen = server.next(Duration::from_secs(20), "a delivery").await;
        if seen.method == "POST" {
            decisions.push(seen);
        }
    }
    let gap = decisions[1].at - server.replied_at(decisions[0].n);
    assert!(
        gap + Duration::from_millis(20) >= Duration::from_secs(3),
        "the retry came {gap:?} after a Retry-After: 3 answer"
    );
    let idempotency = |s: &Seen| {
        serde_json::from_slice::<serde_json::Value>(&s.body).unwrap()["idempotency_key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(idempotency(&decisions[0]), idempotency(&decisions[1]));
    assert_eq!(idempotency(&decisions[0]), report.decision.idempotency_key);

    run.until(Duration::from_secs(15), "delivered", |s| {
        s.decisions(&key)
            .unwrap()
            .iter()
            .any(|d| d.delivery == countersign_core::model::DeliveryState::Delivered)
    })
    .await;
    run.stop().await;
    assert_eq!(posts.load(Ordering::SeqCst), 2, "one attempt, one retry");
}
