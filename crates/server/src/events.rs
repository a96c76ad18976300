//! `GET /v1/events`: the event log as `text/event-stream`, resumable with
//! `Last-Event-ID`.
//!
//! Each connection gets a task that subscribes to the live broadcast *before* it
//! reads the backlog from SQLite, then forwards live events, skipping any it already
//! sent from the backlog. A gap in the live ids (the subscriber lagged behind the
//! broadcast buffer) is filled from SQLite, so no event is ever lost or sent twice.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::routes::AppState;
use crate::shutdown::Shutdown;
use crate::state::{Store, StoreError};

/// How many stored events one backlog read returns.
const PAGE: usize = 500;

#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    last_event_id: Option<String>,
}

/// Where to resume from: the `Last-Event-ID` header, else `?last_event_id=`.
pub(crate) fn resume_from(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<i64>, ApiError> {
    let (raw, field) = match headers.get("last-event-id") {
        Some(v) => (
            Some(v.to_str().map_err(|_| {
                ApiError::malformed("Last-Event-ID", "Last-Event-ID must be an integer")
            })?),
            "Last-Event-ID",
        ),
        None => (query, "last_event_id"),
    };
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| {
                ApiError::malformed(field, format!("{field} must be a non-negative integer"))
            }),
    }
}

pub(crate) async fn stream(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Malformed {
        message: e.body_text(),
        field: None,
    })?;
    let resume = resume_from(&headers, query.last_event_id.as_deref())?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(pump(
        Arc::clone(&app.store),
        resume,
        tx,
        app.keepalive,
        Shutdown::new(app.shutdown.clone()),
    ));
    let mut response = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Why a stream stopped.
enum Stop {
    ClientGone,
    Store(StoreError),
}

type Tx = mpsc::Sender<Result<Bytes, Infallible>>;

async fn send(tx: &Tx, text: String) -> Result<(), Stop> {
    tx.send(Ok(Bytes::from(text)))
        .await
        .map_err(|_| Stop::ClientGone)
}

/// Sends every stored event after `*last`, advancing `*last`.
async fn catch_up(store: &Arc<Store>, tx: &Tx, last: &mut i64) -> Result<(), Stop> {
    loop {
        let after = *last;
        let page = store
            .call(move |s| s.events_after(after, PAGE))
            .await
            .map_err(Stop::Store)?;
        let full = page.len() == PAGE;
        for event in page {
            send(tx, event.to_sse()).await?;
            *last = event.id;
        }
        if !full {
            return Ok(());
        }
    }
}

async fn pump(
    store: Arc<Store>,
    resume: Option<i64>,
    tx: Tx,
    keepalive: Duration,
    mut shutdown: Shutdown,
) {
    match run(&store, resume, &tx, keepalive, &mut shutdown).await {
        Ok(()) | Err(Stop::ClientGone) => {}
        Err(Stop::Store(e)) => tracing::error!(error = %e, "event stream stopped"),
    }
}

async fn run(
    store: &Arc<Store>,
    resume: Option<i64>,
    tx: &Tx,
    keepalive: Duration,
    shutdown: &mut Shutdown,
) -> Result<(), Stop> {
    // Subscribe first: anything committed from here on reaches `live`; anything
    // committed before is in the table. Overlap is skipped by id.
    let mut live = store.subscribe();
    let newest = store
        .call(|s| s.latest_event_id())
        .await
        .map_err(Stop::Store)?;
    send(tx, ": connected\n\n".to_owned()).await?;
    let mut last = match resume {
        None => newest,
        // A cursor from another state file (ahead of ours): replay everything.
        Some(n) if n > newest => 0,
        Some(n) => n,
    };
    catch_up(store, tx, &mut last).await?;

    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.recv() => return Ok(()),
            _ = tx.closed() => return Err(Stop::ClientGone),
            received = live.recv() => match received {
                Ok(event) if event.id <= last => {}
                Ok(event) if event.id == last + 1 => {
                    send(tx, event.to_sse()).await?;
                    last = event.id;
                }
                // A gap (cannot happen unless we lagged): fill it from the table.
                Ok(_) | Err(RecvError::Lagged(_)) => catch_up(store, tx, &mut last).await?,
                Err(RecvError::Closed) => return Ok(()),
            },
            _ = ticker.tick() => send(tx, ": keepalive\n\n".to_owned()).await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StoredEvent;

    #[test]
    fn resume_prefers_the_header_and_rejects_garbage() {
        let mut h = HeaderMap::new();
        assert_eq!(resume_from(&h, None).unwrap(), None);
        assert_eq!(resume_from(&h, Some("7")).unwrap(), Some(7));
        h.insert("last-event-id", HeaderValue::from_static("12"));
        assert_eq!(resume_from(&h, Some("7")).unwrap(), Some(12));
        h.insert("last-event-id", HeaderValue::from_static("x"));
        assert!(matches!(
            resume_from(&h, None),
            Err(ApiError::Malformed { field: Some(f), .. }) if f == "Last-Event-ID"
        ));
        let h = HeaderMap::new();
        assert!(resume_from(&h, Some("-1")).is_err());
    }

    fn new_action(n: usize) -> countersign_core::protocol::NewAction {
        countersign_core::protocol::NewAction {
            id: Some(format!("a{n}")),
            kind: countersign_core::model::ActionKind::Command,
            title: "t".into(),
            summary: String::new(),
            requester: "r".into(),
            resource: String::new(),
            details: vec![],
            approvals_required: None,
            expires_in_secs: None,
            web_url: None,
            form: None,
        }
    }

    async fn next_text(rx: &mut mpsc::Receiver<Result<Bytes, Infallible>>) -> String {
        let item = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an item in time")
            .expect("stream open");
        match item {
            Ok(bytes) => String::from_utf8(bytes.to_vec()).expect("utf-8"),
            Err(never) => match never {},
        }
    }

    /// A subscriber that falls behind the broadcast buffer still gets every event,
    /// once, in order: the gap is read back from SQLite.
    #[tokio::test]
    async fn a_lagging_subscriber_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_with_capacity(&dir.path().join("s.db"), 2).unwrap());
        let handle = crate::shutdown::ShutdownHandle::new();
        let (tx, mut rx) = mpsc::channel(1);
        let task = tokio::spawn(pump(
            Arc::clone(&store),
            None,
            tx,
            Duration::from_secs(3600),
            handle.subscribe(),
        ));
        assert_eq!(next_text(&mut rx).await, ": connected\n\n");
        // The pump is subscribed; it cannot forward while we do not read, so the
        // 2-slot broadcast overflows.
        for n in 0..20 {
            store.create(new_action(n), crate::state::now()).unwrap();
        }
        let mut ids = Vec::new();
        while ids.len() < 20 {
            let text = next_text(&mut rx).await;
            let id: i64 = text
                .strip_prefix("id: ")
                .and_then(|rest| rest.split('\n').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected frame {text:?}"));
            ids.push(id);
        }
        assert_eq!(ids, (1..=20).collect::<Vec<i64>>());
        handle.shutdown();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("pump stops on shutdown")
            .unwrap();
    }

    #[test]
    fn events_are_framed_on_one_data_line() {
        let e = StoredEvent {
            id: 3,
            event: "action.updated".into(),
            data: serde_json::to_string(&serde_json::json!({"text": "a\nb"})).unwrap(),
        };
        assert_eq!(
            e.to_sse(),
            "id: 3\nevent: action.updated\ndata: {\"text\":\"a\\nb\"}\n\n"
        );
    }
}
