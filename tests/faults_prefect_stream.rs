//! The Prefect backend's events websocket (`/api/events/out`) misbehaving, against a
//! loopback stand-in that answers Prefect's REST API and websocket protocol the way
//! `crates/core/src/backends/prefect.rs` uses them (as checked there against prefect
//! 3.9.1): the `prefect` subprotocol, an `auth` message answered `auth_success`, a `filter`
//! message (with `backfill`: the events already sent are replayed), then
//! `{"type":"event","event":{…}}` messages whose resource labels carry the flow run and
//! its new state.
//!
//! Faults: the socket closes (or just drops) every few events; it sends frames no server
//! may send, text that is not UTF-8, not JSON, or JSON of the wrong types; it hangs with
//! no frame at all or half-way through one; it sends one 50 MB frame or a 50 MB message
//! in pieces. For each: the engine gives up within its limits, the backend is degraded
//! with an error that names the socket and the fault, a reference server in the same
//! engine keeps syncing, the runs already stored stay pending, and the next socket
//! resumes: a run that paused while the socket was down arrives by the reconnecting list,
//! a later one only through the new socket (the stand-in is polled once an hour).

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use common::TOKEN;
use countersign_core::backends::Limits;
use countersign_core::config::BackendConfig;
use countersign_core::model::{ActionKey, ActionStatus};
use countersign_core::store::Store;
use faults::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const FLOW_ID: &str = "5c0f7e41-0d2c-4f5e-9b3c-3a1f6f0e2b10";
const PF: &str = "pf";
/// The `Retry-After` of a 429 on the websocket upgrade.
const RETRY_AFTER_SECS: u64 = 2;

/// One state of a flow run, as `/api/flow_run_states/` and the run's `state` give it.
#[derive(Clone)]
struct State {
    id: String,
    kind: &'static str,
    name: &'static str,
    at: DateTime<Utc>,
}

impl State {
    fn json(&self) -> Value {
        json!({
            "id": self.id, "type": self.kind, "name": self.name,
            "timestamp": stamp(self.at), "message": null,
            "state_details": {"pause_timeout": null, "run_input_keyset": null},
        })
    }
}

/// Prefect writes microseconds.
fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The stand-in's state.
#[derive(Default)]
struct World {
    /// Flow runs by id, each with its state history (the last is current).
    runs: BTreeMap<String, Vec<State>>,
    /// Every event message sent so far: a `backfill` filter gets them again.
    sent: Vec<String>,
    counter: u64,
    /// Sockets take the `auth` message and never answer it.
    auth_hangs: bool,
    /// This many websocket upgrades are answered 429 with `Retry-After: 2`.
    upgrades_limited: u32,
}

impl World {
    fn new_state(&mut self, kind: &'static str, name: &'static str) -> State {
        self.counter += 1;
        State {
            id: format!("{:08x}-7d1e-4c5a-8f00-{:012x}", self.counter, self.counter),
            kind,
            name,
            at: Utc::now(),
        }
    }

    fn run_json(&self, id: &str) -> Option<Value> {
        let states = self.runs.get(id)?;
        let current = states.last()?;
        Some(json!({
            "id": id, "name": format!("run-{id}"), "flow_id": FLOW_ID,
            "deployment_id": null, "parameters": {"target": "prod"}, "tags": [],
            "created_by": null, "created": stamp(states[0].at),
            "state": current.json(),
        }))
    }

    /// The `prefect.flow-run.<state name>` event of the run's current state.
    fn event(&self, id: &str) -> String {
        let states = &self.runs[id];
        let state = states.last().expect("a run has a state");
        let from = states.len().checked_sub(2).map(|i| states[i].kind);
        json!({"type": "event", "event": {
            "id": state.id,
            "occurred": stamp(state.at),
            "event": format!("prefect.flow-run.{}", state.name),
            "resource": {
                "prefect.resource.id": format!("prefect.flow-run.{id}"),
                "prefect.resource.name": format!("run-{id}"),
                "prefect.state-message": "",
                "prefect.state-name": state.name,
                "prefect.state-timestamp": stamp(state.at),
                "prefect.state-type": state.kind,
            },
            "related": [{
                "prefect.resource.id": format!("prefect.flow.{FLOW_ID}"),
                "prefect.resource.role": "flow",
                "prefect.resource.name": "nightly-deploy",
            }],
            "payload": {"intended": {"from": from, "to": state.kind},
                        "validated_state": {"type": state.kind, "name": state.name}},
            "follows": null,
        }})
        .to_string()
    }
}

/// What the test tells the server side of one socket to do.
enum Cmd {
    Text(String),
    Binary(Vec<u8>),
    /// Bytes straight onto the TCP stream: frames of the test's own making.
    Raw(Vec<u8>),
    /// A text message of `total` bytes: one frame saying so, or 60,000-byte fragments.
    Flood {
        total: usize,
        fragments: bool,
    },
    /// A close frame (`going away`), then the connection ends.
    Close,
    /// The connection ends without a close frame.
    Drop,
    /// Silence: no frames, no pongs, no close, until the client hangs up.
    Hang,
}

/// What the server side of a socket does to fail it (one or more commands).
type Fault = fn() -> Cmd;

/// One accepted events socket, past `auth` and `filter`.
struct Conn {
    auth: Value,
    filter: Value,
    cmds: mpsc::UnboundedSender<Cmd>,
    world: Arc<Mutex<World>>,
}

impl Conn {
    fn send(&self, cmd: Cmd) {
        self.cmds.send(cmd).expect("the socket is still open");
    }

    /// The event of run `id`'s current state (also kept for later backfills).
    fn event(&self, id: &str) {
        let text = {
            let mut world = self.world.lock().unwrap();
            let text = world.event(id);
            world.sent.push(text.clone());
            text
        };
        self.send(Cmd::Text(text));
    }
}

/// A Prefect server's REST API and events socket on 127.0.0.1.
struct FakePrefect {
    server: Hostile,
    world: Arc<Mutex<World>>,
    sockets: mpsc::UnboundedReceiver<Conn>,
    /// Lists of flow runs are answered only while this is true.
    lists_open: watch::Sender<bool>,
    /// The most bytes one flood got onto the socket before the client hung up.
    flooded: Arc<AtomicU64>,
}

impl FakePrefect {
    async fn start() -> Self {
        let world = Arc::new(Mutex::new(World::default()));
        let (socket_tx, sockets) = mpsc::unbounded_channel();
        let (lists_open, _) = watch::channel(true);
        let flooded = Arc::new(AtomicU64::new(0));
        let (w, open, f) = (world.clone(), lists_open.clone(), flooded.clone());
        let server = Hostile::start(Arc::new(move |seen: &Seen| {
            if seen.path == "/api/events/out" {
                let mut world = w.lock().unwrap();
                if world.upgrades_limited > 0 {
                    world.upgrades_limited -= 1;
                    return Reply::Full {
                        status: 429,
                        headers: vec![("retry-after", RETRY_AFTER_SECS.to_string())],
                        body: br#"{"detail":"Too Many Requests"}"#.to_vec(),
                    };
                }
                drop(world);
                let (w, tx, f) = (w.clone(), socket_tx.clone(), f.clone());
                return Reply::Socket {
                    protocol: "prefect",
                    script: Box::new(move |ws| Box::pin(session(ws, w, tx, f))),
                };
            }
            rest(&w.lock().unwrap(), seen, &open)
        }))
        .await;
        Self {
            server,
            world,
            sockets,
            lists_open,
            flooded,
        }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn events_url(&self) -> String {
        format!("ws://{}/api/events/out", self.server.addr)
    }

    /// The next socket the engine opens, once it has authenticated and sent its filter.
    async fn socket(&mut self) -> Conn {
        tokio::time::timeout(Duration::from_secs(20), self.sockets.recv())
            .await
            .expect("timed out waiting for the engine's events socket")
            .expect("server alive")
    }

    /// The next request the server sees for `path`, passing over the others.
    async fn next_request(&mut self, path: &str) -> Seen {
        loop {
            let seen = self.server.next(Duration::from_secs(15), path).await;
            if seen.path == path {
                return seen;
            }
        }
    }

    /// A new run, paused; its event is not sent.
    fn pause(&self, id: &str) {
        let mut world = self.world.lock().unwrap();
        let running = world.new_state("RUNNING", "Running");
        let paused = world.new_state("PAUSED", "Paused");
        world.runs.insert(id.to_owned(), vec![running, paused]);
    }

    /// Run `id` resumes; its event is not sent.
    fn resume(&self, id: &str) {
        let mut world = self.world.lock().unwrap();
        let running = world.new_state("RUNNING", "Running");
        world.runs.get_mut(id).expect("known run").push(running);
    }

    fn current_state(&self, id: &str) -> String {
        self.world.lock().unwrap().runs[id]
            .last()
            .unwrap()
            .id
            .clone()
    }

    /// Lists wait (the engine's reconnect holds at its list) until [`Self::release_lists`].
    fn hold_lists(&self) {
        self.lists_open.send_replace(false);
    }

    fn release_lists(&self) {
        self.lists_open.send_replace(true);
    }
}

/// The REST calls prefect.rs makes (FastAPI's `{"detail": …}` for errors).
fn rest(world: &World, seen: &Seen, open: &watch::Sender<bool>) -> Reply {
    let json_reply = |v: Value| full(200, v.to_string().as_bytes());
    let not_found = || full(404, br#"{"detail":"Not Found"}"#);
    let path = seen.path.as_str();
    if seen.method == "POST" && path == "/api/flow_runs/filter" {
        let body: Value = serde_json::from_slice(&seen.body).unwrap_or_default();
        let asks_paused = body["flow_runs"]["state"]["type"]["any_"] == json!(["PAUSED"]);
        let first_page = body["offset"].as_u64().unwrap_or(0) == 0;
        let runs: Vec<Value> = world
            .runs
            .iter()
            .filter(|(_, states)| states.last().is_some_and(|s| s.kind == "PAUSED"))
            .filter(|_| asks_paused && first_page)
            .filter_map(|(id, _)| world.run_json(id))
            .collect();
        let mut open = open.subscribe();
        // The list is as of the request; it is answered once the test lets it go.
        return Reply::After(
            Box::pin(async move {
                let _ = open.wait_for(|open| *open).await;
            }),
            Box::new(json_reply(Value::Array(runs))),
        );
    }
    if let Some(id) = path.strip_prefix("/api/flow_runs/") {
        return match world.run_json(id) {
            Some(run) => json_reply(run),
            None => full(404, br#"{"detail":"Flow run not found"}"#),
        };
    }
    if let Some(id) = path.strip_prefix("/api/flow_run_states/?flow_run_id=") {
        return match world.runs.get(id) {
            Some(states) => json_reply(states.iter().map(State::json).collect()),
            None => json_reply(json!([])),
        };
    }
    if path == format!("/api/flows/{FLOW_ID}") {
        return json_reply(json!({"id": FLOW_ID, "name": "nightly-deploy"}));
    }
    not_found()
}

/// The server side of one events socket: `auth`, `filter`, the backfill, then whatever
/// the test says, answering pings meanwhile.
async fn session(
    mut ws: Ws,
    world: Arc<Mutex<World>>,
    sockets: mpsc::UnboundedSender<Conn>,
    flooded: Arc<AtomicU64>,
) {
    let Some(auth) = next_json(&mut ws).await else {
        return;
    };
    if world.lock().unwrap().auth_hangs {
        perform(Cmd::Hang, &mut ws, &flooded).await;
        return;
    }
    if auth["type"] != "auth" || auth["token"] != TOKEN {
        let refusal = json!({"type": "auth_failure", "reason": "bad token"});
        let _ = ws.send(Message::text(refusal.to_string())).await;
        let _ = ws.close(None).await;
        return;
    }
    let ok = json!({"type": "auth_success"});
    if ws.send(Message::text(ok.to_string())).await.is_err() {
        return;
    }
    let Some(filter) = next_json(&mut ws).await else {
        return;
    };
    if filter["backfill"] == true {
        let sent = world.lock().unwrap().sent.clone();
        for text in sent {
            if ws.send(Message::text(text)).await.is_err() {
                return;
            }
        }
    }
    let (tx, mut cmds) = mpsc::unbounded_channel();
    let conn = Conn {
        auth,
        filter,
        cmds: tx,
        world,
    };
    if sockets.send(conn).is_err() {
        return;
    }
    loop {
        tokio::select! {
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { return };
                if !perform(cmd, &mut ws, &flooded).await {
                    return;
                }
            }
            message = ws.next() => match message {
                // Tungstenite queues the pong; flushing sends it.
                Some(Ok(Message::Ping(_))) => {
                    let _ = ws.flush().await;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
        }
    }
}

async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => return serde_json::from_str(text.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Carries out one command; false once the socket is done.
async fn perform(cmd: Cmd, ws: &mut Ws, flooded: &AtomicU64) -> bool {
    match cmd {
        Cmd::Text(text) => ws.send(Message::text(text)).await.is_ok(),
        Cmd::Binary(bytes) => ws.send(Message::binary(bytes)).await.is_ok(),
        Cmd::Raw(bytes) => ws.flush().await.is_ok() && ws.get_mut().write_all(&bytes).await.is_ok(),
        Cmd::Flood { total, fragments } => {
            let _ = ws.flush().await;
            flood(ws, total, fragments, flooded).await;
            false
        }
        Cmd::Close => {
            let frame = CloseFrame {
                code: CloseCode::Away,
                reason: "server restarting".into(),
            };
            let _ = ws.close(Some(frame)).await;
            false
        }
        Cmd::Drop => false,
        Cmd::Hang => {
            // Reads (and drops) what the client sends, pings included, answering nothing.
            let mut buf = [0u8; 4096];
            while matches!(ws.get_mut().read(&mut buf).await, Ok(n) if n > 0) {}
            false
        }
    }
}

/// A text message of `total` bytes, written raw until the client stops taking it.
async fn flood(ws: &mut Ws, total: usize, fragments: bool, flooded: &AtomicU64) {
    const PIECE: usize = 60_000;
    let payload = vec![b'a'; PIECE];
    let mut sent = 0usize;
    let sock = ws.get_mut();
    if !fragments {
        // FIN + text, 64-bit length: the whole message in one frame.
        let mut head = vec![0x81, 127];
        head.extend_from_slice(&(total as u64).to_be_bytes());
        if sock.write_all(&head).await.is_err() {
            return;
        }
    }
    while sent < total {
        let n = PIECE.min(total - sent);
        if fragments {
            let last = sent + n == total;
            let opcode = if sent == 0 { 0x1 } else { 0x0 };
            let fin = if last { 0x80 } else { 0 };
            let mut head = vec![fin | opcode, 126];
            head.extend_from_slice(&(n as u16).to_be_bytes());
            if sock.write_all(&head).await.is_err() {
                return;
            }
        }
        if sock.write_all(&payload[..n]).await.is_err() {
            return; // the client hung up: it stopped reading
        }
        sent += n;
        flooded.fetch_max(sent as u64, Ordering::SeqCst);
    }
}

/// Polled once an hour: within a test only the socket (or a reconnect's list) brings
/// a change.
fn prefect_config(url: String) -> BackendConfig {
    let mut config = config(PF, "prefect", url);
    config.poll_interval_secs = Some(3600);
    config
}

fn status_of(store: &Store, id: &str) -> Option<ActionStatus> {
    store
        .action(&ActionKey::new(PF, id))
        .unwrap()
        .map(|a| a.snapshot.status)
}

/// The engine with the stand-in beside the healthy backend, its first socket, and run
/// `r0` delivered through it.
async fn started(pf: &mut FakePrefect) -> (Running, Conn) {
    let mut rig = Rig::new();
    rig.add(prefect_config(pf.url()), limits());
    let mut run = rig.start();
    let conn = pf.socket().await;
    assert_eq!(
        conn.auth["token"], TOKEN,
        "the token travels in the auth message"
    );
    assert_eq!(conn.filter["type"], "filter");
    assert_eq!(conn.filter["backfill"], true);
    assert_eq!(
        conn.filter["filter"]["event"]["prefix"],
        json!(["prefect.flow-run."])
    );
    pf.pause("r0");
    conn.event("r0");
    run.until(Duration::from_secs(15), "r0 through the socket", |s| {
        status_of(s, "r0") == Some(ActionStatus::Pending)
    })
    .await;
    (run, conn)
}

/// The socket fails as `fault` makes it; while the reconnect's list is held, the backend
/// is degraded with `code` and an error naming the socket and containing `text`, the
/// good backend syncs, and the stored runs stay pending. Then the list is let go: a run
/// paused meanwhile (`gap`) arrives by it, and `after`, paused once the new socket is
/// open, through that socket. Returns the new socket.
async fn fails_and_resumes(
    run: &mut Running,
    pf: &mut FakePrefect,
    conn: Conn,
    fault: &[Fault],
    code: &str,
    text: &str,
    (gap, after): (&str, &str),
) -> Conn {
    let before = run.status(PF).last_error_at;
    let pending_before: Vec<String> = run
        .engine()
        .pending(Some(PF))
        .unwrap()
        .into_iter()
        .map(|a| a.key.external_id)
        .collect();
    pf.hold_lists();
    pf.pause(gap);
    for cmd in fault {
        conn.send(cmd());
    }
    run.until(
        Duration::from_secs(20),
        &format!("{PF} degraded as {code}"),
        |s| {
            s.backend_statuses()
                .unwrap()
                .iter()
                .any(|b| b.name == PF && b.status == "degraded" && b.last_error_at != before)
        },
    )
    .await;
    let status = run.status(PF);
    let error = status.last_error.clone().unwrap_or_default();
    assert_eq!(status.last_error_code.as_deref(), Some(code), "{error}");
    assert!(
        error.contains(&pf.events_url()) && error.contains(text),
        "the error names the socket and says what happened: {error}"
    );
    assert!(
        !error.chars().any(char::is_control),
        "hostile bytes stay out of the message: {error:?}"
    );
    run.good_backend_syncs(&format!("live-{after}")).await;
    assert_eq!(run.status("good").status, "ok");
    for id in &pending_before {
        assert_eq!(
            status_of(&run.store, id),
            Some(ActionStatus::Pending),
            "{id} stays pending while the socket is down"
        );
    }

    pf.release_lists();
    let conn = pf.socket().await;
    pf.pause(after);
    conn.event(after);
    // `after` came through the socket: its event becomes the resume point.
    let event = Some(pf.current_state(after));
    run.until(
        Duration::from_secs(20),
        &format!("{gap} by the list and {after} through the new socket"),
        |s| {
            status_of(s, gap) == Some(ActionStatus::Pending)
                && status_of(s, after) == Some(ActionStatus::Pending)
                && s.sync_cursor(PF).unwrap().last_event_id == event
        },
    )
    .await;
    conn
}

/// Every run stored once, with one "requested" entry per pause in its timeline.
fn assert_each_pause_recorded_once(store: &Store, pf: &FakePrefect) {
    let world = pf.world.lock().unwrap();
    for (id, states) in &world.runs {
        let timeline = store.timeline(&ActionKey::new(PF, id)).unwrap();
        for state in states.iter().filter(|s| s.kind == "PAUSED") {
            let external = format!("prefect:{id}:{}", state.id);
            let n = timeline
                .iter()
                .filter(|e| e.external_id.as_deref() == Some(&external))
                .count();
            assert_eq!(n, 1, "{id}: {timeline:?}");
        }
    }
}

/// The socket closes every three events, by turns with a close frame and without one,
/// and each time a run resumes and another pauses while it is down: every reconnect
/// lists (the paused one arrives, the resumed one is settled as executed) and the new
/// socket delivers the runs that pause after it opened. Nothing is lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_socket_dropped_every_few_events_resumes_and_loses_nothing() {
    let mut pf = FakePrefect::start().await;
    let (mut run, mut conn) = started(&mut pf).await;
    let mut resumed = Vec::new();
    for round in 1..=4 {
        for k in 1..=2 {
            let id = format!("r{round}-{k}");
            pf.pause(&id);
            conn.event(&id);
            run.until(Duration::from_secs(15), &id, |s| {
                status_of(s, &id) == Some(ActionStatus::Pending)
            })
            .await;
        }
        // The third event, then the socket goes.
        let third = format!("r{round}-3");
        pf.pause(&third);
        conn.event(&third);
        let gone = format!("r{round}-1");
        pf.resume(&gone);
        resumed.push(gone);
        let (fault, text): (Fault, &str) = if round % 2 == 1 {
            (|| Cmd::Close, "closed the event stream: server restarting")
        } else {
            (|| Cmd::Drop, "without closing handshake")
        };
        conn = fails_and_resumes(
            &mut run,
            &mut pf,
            conn,
            &[fault],
            "unreachable",
            text,
            (&format!("gap{round}"), &format!("after{round}")),
        )
        .await;
        assert_eq!(
            status_of(&run.store, &third),
            Some(ActionStatus::Pending),
            "the event sent just before the drop was applied or listed"
        );
    }
    for id in &resumed {
        assert_eq!(
            status_of(&run.store, id),
            Some(ActionStatus::Executed),
            "{id} resumed while the socket was down"
        );
    }
    let expected_pending = pf
        .world
        .lock()
        .unwrap()
        .runs
        .values()
        .filter(|s| s.last().unwrap().kind == "PAUSED")
        .count();
    assert_eq!(
        run.engine().pending(Some(PF)).unwrap().len(),
        expected_pending
    );
    assert_each_pause_recorded_once(&run.store, &pf);
    drop(conn);
    run.stop().await;
}

fn invalid_json() -> Cmd {
    Cmd::Text("<html><body>502 Bad Gateway</body></html>".into())
}

fn wrong_types() -> Cmd {
    Cmd::Text(
        json!({"type": "event", "event": {"id": 42, "event": "prefect.flow-run.Paused",
               "resource": {"prefect.resource.id": "prefect.flow-run.x"}}})
        .to_string(),
    )
}

fn not_utf8() -> Cmd {
    // A final text frame of four bytes that are not UTF-8.
    Cmd::Raw(vec![0x81, 0x04, 0xff, 0xfe, 0xc3, 0x28])
}

fn unknown_opcode() -> Cmd {
    Cmd::Raw(vec![0x83, 0x03, b'a', b'b', b'c'])
}

fn reserved_bits() -> Cmd {
    Cmd::Raw(vec![0xf1, 0x02, b'{', b'}'])
}

fn masked() -> Cmd {
    // Servers never mask their frames.
    Cmd::Raw(vec![0x81, 0x82, 1, 2, 3, 4, b'{' ^ 1, b'}' ^ 2])
}

fn binary() -> Cmd {
    Cmd::Binary(vec![0, 159, 146, 150, 255])
}

fn half_frame() -> Cmd {
    // Says 256 bytes follow, sends two.
    Cmd::Raw(vec![0x81, 126, 0x01, 0x00, b'{', b'"'])
}

fn hang() -> Cmd {
    Cmd::Hang
}

fn one_huge_frame() -> Cmd {
    Cmd::Flood {
        total: 50 * MB,
        fragments: false,
    }
}

fn a_huge_message_in_pieces() -> Cmd {
    Cmd::Flood {
        total: 50 * MB,
        fragments: true,
    }
}

/// Text that is not JSON, JSON of the wrong types, a text frame that is not UTF-8 and
/// frames no server may send: each is malformed data on the socket. A binary frame,
/// which Prefect never sends, is passed over: the event after it still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_events_socket_degrades_it_as_malformed_and_the_next_socket_resumes() {
    let mut pf = FakePrefect::start().await;
    let (mut run, mut conn) = started(&mut pf).await;

    let quiet_since = run.status(PF).last_error_at;
    conn.send(binary());
    pf.pause("after-binary");
    conn.event("after-binary");
    run.until(
        Duration::from_secs(15),
        "the event after a binary frame",
        |s| status_of(s, "after-binary") == Some(ActionStatus::Pending),
    )
    .await;
    assert_eq!(run.status(PF).last_error_at, quiet_since);

    let faults: [(&str, Fault, &str); 6] = [
        ("json", invalid_json, "at `(body)`"),
        (
            "types",
            wrong_types,
            "at `event.id`: invalid type: integer `42`",
        ),
        ("utf8", not_utf8, "UTF-8"),
        ("opcode", unknown_opcode, "invalid opcode: 3"),
        ("rsv", reserved_bits, "Reserved bits are non-zero"),
        ("masked", masked, "masked frame from server"),
    ];
    for (name, fault, text) in faults {
        conn = fails_and_resumes(
            &mut run,
            &mut pf,
            conn,
            &[fault],
            "malformed",
            text,
            (&format!("gap-{name}"), &format!("after-{name}")),
        )
        .await;
    }
    assert_each_pause_recorded_once(&run.store, &pf);
    drop(conn);
    run.stop().await;
}

/// A socket that goes silent (no frame, no pong, no close), and one that stops half-way
/// through a frame, are given up after the 2 s idle limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_socket_that_hangs_is_given_up_after_the_idle_limit() {
    let mut pf = FakePrefect::start().await;
    let (mut run, mut conn) = started(&mut pf).await;
    let faults: [(&str, &[Fault]); 2] = [("silent", &[hang]), ("half", &[half_frame, hang])];
    for (name, fault) in faults {
        conn = fails_and_resumes(
            &mut run,
            &mut pf,
            conn,
            fault,
            "timeout",
            "within 2 s",
            (&format!("gap-{name}"), &format!("after-{name}")),
        )
        .await;
    }
    assert_each_pause_recorded_once(&run.store, &pf);
    drop(conn);
    run.stop().await;
}

/// One frame that declares 50 MB, and a 50 MB message in 60,000-byte fragments: the
/// engine stops reading at its 1 MiB event limit instead of buffering them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_frame_or_message_on_the_events_socket_is_refused_at_the_event_limit() {
    let mut pf = FakePrefect::start().await;
    let (mut run, mut conn) = started(&mut pf).await;
    let faults: [(&str, Fault); 2] = [
        ("frame", one_huge_frame),
        ("pieces", a_huge_message_in_pieces),
    ];
    for (name, fault) in faults {
        conn = fails_and_resumes(
            &mut run,
            &mut pf,
            conn,
            &[fault],
            "too_large",
            "over the 1048576-byte limit",
            (&format!("gap-{name}"), &format!("after-{name}")),
        )
        .await;
        // What the kernel's socket buffers held when the client hung up, not 50 MB.
        let took = pf.flooded.swap(0, Ordering::SeqCst);
        assert!(
            took < 20 * MB as u64,
            "{name}: the client took {took} bytes of a 50 MB message"
        );
    }
    assert_each_pause_recorded_once(&run.store, &pf);
    drop(conn);
    run.stop().await;
}

/// A socket that takes the `auth` message and never answers it is given up after the
/// request deadline (3 s here) and the backend is degraded: live updates are off, and the
/// error says so, naming the backend, how often it polls and why. Each reconnect lists,
/// so a run that pauses meanwhile still arrives (the stand-in is otherwise polled once an
/// hour), and the good backend keeps syncing. Once the server answers auth again, the
/// backend is ok and the next run arrives through the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_socket_that_never_answers_auth_degrades_the_backend_until_one_does() {
    let mut pf = FakePrefect::start().await;
    pf.world.lock().unwrap().auth_hangs = true;
    pf.pause("r0");
    let mut rig = Rig::new();
    let limits = Limits {
        request_timeout: Duration::from_secs(3),
        ..limits()
    };
    rig.add(prefect_config(pf.url()), limits);
    let mut run = rig.start();
    run.until(Duration::from_secs(15), "r0 by the first list", |s| {
        status_of(s, "r0") == Some(ActionStatus::Pending)
    })
    .await;
    let upgrade = pf.next_request("/api/events/out").await;
    run.until_status(Duration::from_secs(20), PF, "degraded")
        .await;
    let status = run.status(PF);
    let error = status.last_error.clone().unwrap_or_default();
    assert_eq!(
        status.last_error_code.as_deref(),
        Some("unreachable"),
        "{error}"
    );
    // The engine reconnects within max_backoff_secs (1 s), plus the 3 s auth wait.
    assert!(
        error.contains(&pf.events_url())
            && error.contains("live updates off for pf, polling at least every 4 s instead")
            && error.contains("the events socket did not answer auth within 3 s"),
        "the status says live updates are off, how it polls and why: {error}"
    );
    let polled = pf.next_request("/api/flow_runs/filter").await;
    assert!(
        polled.at >= upgrade.at + Duration::from_secs(3),
        "the engine waited the request deadline for the auth reply, then listed again"
    );

    // Paused while no socket is followed: only the reconnects' lists can bring it.
    pf.pause("r1");
    run.until(Duration::from_secs(20), "r1 by polling", |s| {
        status_of(s, "r1") == Some(ActionStatus::Pending)
    })
    .await;
    assert_eq!(
        run.status(PF).status,
        "degraded",
        "auth still goes unanswered"
    );
    run.good_backend_syncs("live-1").await;

    pf.world.lock().unwrap().auth_hangs = false;
    let conn = pf.socket().await;
    run.until_status(Duration::from_secs(20), PF, "ok").await;
    pf.pause("r2");
    conn.event("r2");
    // Through the socket: its event becomes the resume point.
    let event = Some(pf.current_state("r2"));
    run.until(Duration::from_secs(20), "r2 through the socket", |s| {
        status_of(s, "r2") == Some(ActionStatus::Pending)
            && s.sync_cursor(PF).unwrap().last_event_id == event
    })
    .await;
    assert_eq!(run.status(PF).status, "ok");
    assert_each_pause_recorded_once(&run.store, &pf);
    drop(conn);
    run.stop().await;
}

/// The websocket upgrade is answered 429 with `Retry-After: 2`: the backend is degraded
/// as rate limited, its status says when it retries, and the next upgrade comes no
/// sooner than the 2 s the server asked for (the engine's own backoff is 1 s at most
/// here, so it is the `Retry-After` that holds it back). That upgrade opens the socket,
/// the backend is ok again and runs arrive through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_on_the_websocket_upgrade_waits_out_its_retry_after() {
    let mut pf = FakePrefect::start().await;
    pf.world.lock().unwrap().upgrades_limited = 1;
    let mut rig = Rig::new();
    rig.add(prefect_config(pf.url()), limits());
    let mut run = rig.start();
    let limited = pf.next_request("/api/events/out").await;
    run.until_status(Duration::from_secs(15), PF, "degraded")
        .await;
    let status = run.status(PF);
    let error = status.last_error.clone().unwrap_or_default();
    assert_eq!(
        status.last_error_code.as_deref(),
        Some("rate_limited"),
        "{error}"
    );
    assert!(
        error.contains(&pf.events_url()) && error.contains("retry in 2 s"),
        "the status names the wait: {error}"
    );
    let (failed_at, retry_at) = (
        status.last_error_at.expect("when it failed"),
        status.next_retry_at.expect("when it retries"),
    );
    assert!(
        retry_at >= failed_at + chrono::Duration::seconds(RETRY_AFTER_SECS as i64),
        "the retry is set no sooner than Retry-After: {failed_at} -> {retry_at}"
    );

    let next = pf.next_request("/api/events/out").await;
    assert!(
        next.at >= limited.at + Duration::from_secs(RETRY_AFTER_SECS),
        "the next upgrade came {:?} after the 429",
        next.at - limited.at
    );
    let conn = pf.socket().await;
    run.until_status(Duration::from_secs(15), PF, "ok").await;
    pf.pause("r1");
    conn.event("r1");
    let event = Some(pf.current_state("r1"));
    run.until(Duration::from_secs(15), "r1 through the socket", |s| {
        status_of(s, "r1") == Some(ActionStatus::Pending)
            && s.sync_cursor(PF).unwrap().last_event_id == event
    })
    .await;
    run.good_backend_syncs("live-1").await;
    drop(conn);
    run.stop().await;
}
