//! The notifier task: engine changes in, freedesktop notifications out, answers back
//! into the engine's decision pipeline.
//!
//! Notifications are shown with notify-rust. Answers (`ActionInvoked`) and dismissals
//! (`NotificationClosed`) are read from one zbus connection that subscribes before the
//! first notification is shown: notify-rust's per-notification wait subscribes only
//! after its `Notify` returns, so a quick click could be missed, and its close panics
//! when the server has gone. `CloseNotification` goes over the same connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use countersign_core::api::DecisionInput;
use countersign_core::decide::DecideError;
use countersign_core::model::{ActionKey, ActionStatus, TimelineEvent, TimelineKind, Verdict};
use countersign_core::shutdown::Shutdown;
use countersign_core::store::ActionChange;
use countersign_core::sync::Change;
use countersign_core::{Engine, EngineError};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::policy::{self, NotificationId, Outgoing, Planner, Settings, Target, Urgency};

const BUS_NAME: &str = "org.freedesktop.Notifications";
const OBJECT_PATH: &str = "/org/freedesktop/Notifications";
const INTERFACE: &str = "org.freedesktop.Notifications";
/// Longest wait for the session bus or the notification server to answer: a hung bus
/// must not hold up the app.
const BUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a missing notification server is looked for again.
const REPROBE_EVERY: chrono::Duration = chrono::Duration::seconds(30);

/// Whether notifications can be shown, for the window's header and `countersign notify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct NotificationStatus {
    pub available: bool,
    /// The server's name and version, or why notifications are unavailable.
    pub detail: String,
    /// Paused (the tray's "Pause notifications for 1 h") until then.
    #[cfg_attr(feature = "specta", specta(type = Option<String>))]
    pub paused_until: Option<DateTime<Utc>>,
}

impl NotificationStatus {
    fn starting() -> Self {
        Self {
            available: false,
            detail: "looking for a notification server".to_owned(),
            paused_until: None,
        }
    }
}

/// Brings an action forward (the window selects it; the CLI prints its key).
pub type OpenAction = Arc<dyn Fn(ActionKey) + Send + Sync>;

/// A running notifier. Dropping it does not stop it; the shutdown signal does.
pub struct Notifier {
    status: watch::Receiver<NotificationStatus>,
    paused: watch::Sender<Option<DateTime<Utc>>>,
    task: JoinHandle<()>,
}

impl Notifier {
    /// Starts the notifier on the current tokio runtime. It subscribes to the engine's
    /// changes before returning, so nothing that happens after this call is missed.
    pub fn spawn(
        engine: Arc<Engine>,
        settings: Settings,
        open: OpenAction,
        shutdown: Shutdown,
    ) -> Self {
        let (status_tx, status) = watch::channel(NotificationStatus::starting());
        let (paused, paused_rx) = watch::channel(None);
        let changes = engine.changes();
        let (notices, notices_rx) = mpsc::unbounded_channel();
        let worker = Worker {
            planner: Planner::new(settings, engine.approver()),
            engine,
            open,
            status: status_tx,
            bus: None,
            server_ok: false,
            probed_at: None,
            handles: BTreeMap::new(),
            notices,
        };
        let task = tokio::spawn(worker.run(changes, shutdown, paused_rx, notices_rx));
        Self {
            status,
            paused,
            task,
        }
    }

    pub fn status(&self) -> NotificationStatus {
        self.status.borrow().clone()
    }

    /// Follow status changes (the header, the CLI's status line).
    pub fn status_changes(&self) -> watch::Receiver<NotificationStatus> {
        self.status.clone()
    }

    /// No notifications until `until` (the tray's "Pause for 1 h"); `None` resumes.
    pub fn pause_until(&self, until: Option<DateTime<Utc>>) {
        let _ = self.paused.send(until);
    }

    /// Waits for the task to end after shutdown.
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// The subscription to the server's signals, and the connection used to close.
struct Bus {
    conn: zbus::Connection,
    signals: zbus::MessageStream,
}

enum Signal {
    Action(NotificationId, String),
    Closed(NotificationId),
}

struct Worker {
    engine: Arc<Engine>,
    planner: Planner,
    open: OpenAction,
    status: watch::Sender<NotificationStatus>,
    bus: Option<Bus>,
    server_ok: bool,
    probed_at: Option<DateTime<Utc>>,
    /// notify-rust keeps a connection per shown notification; some servers tie a
    /// notification's actions to its sender staying connected.
    handles: BTreeMap<NotificationId, notify_rust::NotificationHandle>,
    /// Messages from decision tasks (a refusal to show).
    notices: mpsc::UnboundedSender<Outgoing>,
}

impl Worker {
    async fn run(
        mut self,
        mut changes: broadcast::Receiver<Change>,
        mut shutdown: Shutdown,
        mut paused: watch::Receiver<Option<DateTime<Utc>>>,
        mut notices: mpsc::UnboundedReceiver<Outgoing>,
    ) {
        self.connect().await;
        loop {
            let sleep = match self.planner.next_deadline() {
                Some(at) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = shutdown.wait() => break,
                change = changes.recv() => match change {
                    Ok(Change::Action { key, change, .. }) => self.on_action(key, change).await,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("notifier skipped {n} engine changes");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                signal = next_signal(&mut self.bus) => match signal {
                    Some(signal) => self.on_signal(signal).await,
                    None => {
                        self.bus = None;
                        self.set_status(false, "the session bus connection closed".to_owned());
                    }
                },
                _ = tokio::time::sleep(sleep) => self.tick(Utc::now()).await,
                Ok(()) = paused.changed() => {
                    let until = *paused.borrow_and_update();
                    self.planner.set_paused_until(until);
                    let mut status = self.status.borrow().clone();
                    status.paused_until = until;
                    self.status.send_replace(status);
                }
                Some(notice) = notices.recv() => self.show(notice).await,
            }
        }
    }

    fn set_status(&mut self, available: bool, detail: String) {
        let status = NotificationStatus {
            available,
            detail,
            paused_until: self.status.borrow().paused_until,
        };
        if *self.status.borrow() != status {
            if available {
                tracing::info!("notifications: {}", status.detail);
            } else {
                tracing::warn!("notifications unavailable: {}", status.detail);
            }
            self.status.send_replace(status);
        }
    }

    /// Session bus and signal subscription, then a look for the server.
    async fn connect(&mut self) {
        match tokio::time::timeout(BUS_TIMEOUT, subscribe()).await {
            Ok(Ok(bus)) => self.bus = Some(bus),
            Ok(Err(e)) => {
                self.set_status(false, format!("no D-Bus session bus ({e})"));
                return;
            }
            Err(_) => {
                self.set_status(false, "the D-Bus session bus did not answer".to_owned());
                return;
            }
        }
        self.probe().await;
    }

    /// Asks the server who it is: the status says so, or why there is none.
    async fn probe(&mut self) {
        self.probed_at = Some(Utc::now());
        let Some(bus) = &self.bus else {
            return;
        };
        let call = bus.conn.call_method(
            Some(BUS_NAME),
            OBJECT_PATH,
            Some(INTERFACE),
            "GetServerInformation",
            &(),
        );
        let info = match tokio::time::timeout(BUS_TIMEOUT, call).await {
            Ok(Ok(reply)) => reply
                .body()
                .deserialize::<(String, String, String, String)>()
                .map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("it did not answer".to_owned()),
        };
        match info {
            Ok((name, vendor, version, _spec)) => {
                self.server_ok = true;
                self.set_status(true, format!("{name} {version} ({vendor})"));
            }
            Err(e) => {
                self.server_ok = false;
                self.set_status(
                    false,
                    format!("no notification server on the session bus ({e})"),
                );
            }
        }
    }

    async fn on_action(&mut self, key: ActionKey, change: ActionChange) {
        let now = Utc::now();
        let action = match self.engine.store().action(&key) {
            Ok(Some(action)) => action,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("notifier: cannot read {key}: {e}");
                return;
            }
        };
        if action.snapshot.status != ActionStatus::Pending {
            let status = action.snapshot.status;
            for id in self.planner.left_pending(&key) {
                self.close(id).await;
                self.record(
                    &key,
                    TimelineKind::NotificationWithdrawn,
                    format!("Notification withdrawn: it is {}", status.as_str()),
                );
            }
            return;
        }
        if change != ActionChange::Created {
            return;
        }
        let decided_here = match self.engine.store().decisions(&key) {
            Ok(d) => !d.is_empty(),
            Err(e) => {
                tracing::warn!("notifier: cannot read decisions of {key}: {e}");
                return;
            }
        };
        if let Err(skip) = self.planner.consider(&action, decided_here, now) {
            tracing::debug!("no notification for {key}: {skip:?}");
        }
    }

    async fn tick(&mut self, now: DateTime<Utc>) {
        for (id, target) in self.planner.expired(now) {
            self.close(id).await;
            for key in target.keys() {
                self.record(
                    &key,
                    TimelineKind::NotificationWithdrawn,
                    "Notification withdrawn: it expired".to_owned(),
                );
            }
        }
        for outgoing in self.planner.flush(now) {
            self.show(outgoing).await;
        }
    }

    async fn show(&mut self, outgoing: Outgoing) {
        if !self.server_ok {
            // Looked for again now and then: a daemon may start after the app.
            let due = self
                .probed_at
                .is_none_or(|at| Utc::now() - at >= REPROBE_EVERY);
            if self.bus.is_some() && due {
                self.probe().await;
            }
            if !self.server_ok {
                tracing::debug!(
                    "not shown (no notification server): {}",
                    outgoing.content.summary
                );
                return;
            }
        }
        let c = &outgoing.content;
        let mut n = notify_rust::Notification::new();
        n.appname("Countersign")
            .summary(&c.summary)
            .body(&c.body)
            .urgency(match c.urgency {
                Urgency::Normal => notify_rust::Urgency::Normal,
                Urgency::Critical => notify_rust::Urgency::Critical,
            });
        for (id, label) in c.actions {
            n.action(id, label);
        }
        let handle = match tokio::time::timeout(BUS_TIMEOUT, n.show_async()).await {
            Ok(Ok(handle)) => handle,
            Ok(Err(e)) => {
                self.server_ok = false;
                self.set_status(false, format!("the notification server refused ({e})"));
                return;
            }
            Err(_) => {
                self.server_ok = false;
                self.set_status(false, "the notification server did not answer".to_owned());
                return;
            }
        };
        let id = handle.id();
        self.handles.insert(id, handle);
        let text = match &outgoing.target {
            Target::Single { .. } => Some("Notified on this desktop".to_owned()),
            Target::Batch { backend, keys } => Some(format!(
                "Notified on this desktop (one of {} new requests on {backend})",
                keys.len()
            )),
            Target::Notice { .. } => None,
        };
        if let Some(text) = text {
            for key in outgoing.target.keys() {
                self.record(&key, TimelineKind::Notified, text.clone());
            }
        }
        self.planner.shown(id, outgoing.target);
    }

    async fn close(&mut self, id: NotificationId) {
        self.handles.remove(&id);
        let Some(bus) = &self.bus else {
            return;
        };
        let body = (id,);
        let call = bus.conn.call_method(
            Some(BUS_NAME),
            OBJECT_PATH,
            Some(INTERFACE),
            "CloseNotification",
            &body,
        );
        match tokio::time::timeout(BUS_TIMEOUT, call).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!("closing notification {id}: {e}"),
            Err(_) => tracing::debug!("closing notification {id}: no answer"),
        }
    }

    async fn on_signal(&mut self, signal: Signal) {
        let (id, answer) = match signal {
            Signal::Closed(id) => {
                // Dismissed or timed out: nothing to withdraw later.
                self.planner.forget(id);
                self.handles.remove(&id);
                return;
            }
            Signal::Action(id, answer) => (id, answer),
        };
        // Another application's notification, or one already answered.
        let Some(target) = self.planner.forget(id) else {
            return;
        };
        self.close(id).await;
        match (answer.as_str(), target) {
            (
                "approve",
                Target::Single {
                    key, snapshot_hash, ..
                },
            ) => {
                self.record(
                    &key,
                    TimelineKind::NotificationAnswered,
                    "Approve pressed on a notification".to_owned(),
                );
                self.spawn_decision(key, Verdict::Approve, String::new(), snapshot_hash);
            }
            (
                "deny",
                Target::Single {
                    key, snapshot_hash, ..
                },
            ) => match self.planner.settings().default_deny_reason.clone() {
                Some(reason) => {
                    self.record(
                        &key,
                        TimelineKind::NotificationAnswered,
                        "Deny pressed on a notification (the configured default reason)".to_owned(),
                    );
                    self.spawn_decision(key, Verdict::Deny, reason, snapshot_hash);
                }
                None => {
                    self.record(
                        &key,
                        TimelineKind::NotificationAnswered,
                        "Deny pressed on a notification: the window asks for a reason".to_owned(),
                    );
                    (self.open)(key);
                }
            },
            (_, target) => {
                // Open, the body click, and any button of a coalesced notification.
                if let Some(key) = target.open_key() {
                    (self.open)(key.clone());
                }
            }
        }
    }

    /// Runs the decision like the window does, off the loop (it re-fetches from the
    /// backend). A refusal comes back as a notice saying why.
    fn spawn_decision(
        &self,
        key: ActionKey,
        verdict: Verdict,
        reason: String,
        seen: countersign_core::snapshot::SnapshotHash,
    ) {
        let engine = self.engine.clone();
        let notices = self.notices.clone();
        tokio::spawn(async move {
            let input = DecisionInput {
                action: key.clone(),
                verdict,
                reason,
                seen_snapshot_hash: seen,
                // A form's answers are given in the window; a notification offers none.
                answer: None,
            };
            let Err(e) = engine.decide(input, Utc::now()).await else {
                return;
            };
            tracing::warn!("decision from a notification on {key} refused: {e}");
            let current = match &e {
                EngineError::Decide(DecideError::Changed { current, .. }) => {
                    Some((**current).clone())
                }
                _ => engine.store().action(&key).ok().flatten(),
            };
            let verdict = match verdict {
                Verdict::Deny => "denied",
                _ => "approved",
            };
            if let Some(action) = current {
                let _ = notices.send(policy::not_decided(&action, verdict, &e.to_string()));
            }
        });
    }

    fn record(&self, key: &ActionKey, kind: TimelineKind, text: String) {
        let event = TimelineEvent::local(
            Utc::now(),
            kind,
            Some(self.engine.approver().to_owned()),
            text,
        );
        if let Err(e) = self.engine.record_event(key, event) {
            tracing::warn!("cannot record {} on {key}: {e}", kind.as_str());
        }
    }
}

async fn subscribe() -> zbus::Result<Bus> {
    let conn = zbus::Connection::session().await?;
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(INTERFACE)?
        .path(OBJECT_PATH)?
        .build();
    let signals = zbus::MessageStream::for_match_rule(rule, &conn, Some(256)).await?;
    Ok(Bus { conn, signals })
}

/// The next answer or dismissal; pending forever without a bus, `None` when it closed.
async fn next_signal(bus: &mut Option<Bus>) -> Option<Signal> {
    let Some(bus) = bus else {
        return std::future::pending().await;
    };
    loop {
        let msg = match bus.signals.next().await? {
            Ok(msg) => msg,
            Err(e) => {
                tracing::debug!("unreadable D-Bus message: {e}");
                continue;
            }
        };
        let header = msg.header();
        let member = header.member().map(|m| m.as_str().to_owned());
        match member.as_deref() {
            Some("ActionInvoked") => {
                if let Ok((id, action)) = msg.body().deserialize::<(u32, String)>() {
                    return Some(Signal::Action(id, action));
                }
            }
            Some("NotificationClosed") => {
                if let Ok((id, _reason)) = msg.body().deserialize::<(u32, u32)>() {
                    return Some(Signal::Closed(id));
                }
            }
            _ => {}
        }
    }
}
