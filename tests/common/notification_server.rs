//! A freedesktop notification server the test itself registers on a private session
//! bus as `org.freedesktop.Notifications`: it records every Notify and
//! CloseNotification call and can emit what a person's click sends (ActionInvoked).
//! Used by tests/notifications.rs (the headless host) and the window's E2E tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use zbus::zvariant::OwnedValue;

/// Upper bound for a call to arrive; callers wait for events, never for time.
const DEADLINE: Duration = Duration::from_secs(60);

/// One call the notification server received.
#[derive(Debug, Clone)]
pub enum Call {
    Notify {
        id: u32,
        summary: String,
        body: String,
        actions: Vec<String>,
        urgency: Option<u8>,
    },
    Close(u32),
}

struct FakeServer {
    calls: mpsc::UnboundedSender<Call>,
    next_id: std::sync::atomic::AtomicU32,
}

/// The freedesktop notification server's methods, recording what it is asked.
#[zbus::interface(name = "org.freedesktop.Notifications")]
impl FakeServer {
    #[allow(clippy::too_many_arguments)]
    async fn notify(
        &self,
        _app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        actions: Vec<String>,
        hints: HashMap<String, OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let urgency = hints.get("urgency").and_then(|v| u8::try_from(v).ok());
        let _ = self.calls.send(Call::Notify {
            id,
            summary,
            body,
            actions,
            urgency,
        });
        id
    }

    async fn close_notification(&self, id: u32) {
        let _ = self.calls.send(Call::Close(id));
    }

    async fn get_capabilities(&self) -> Vec<String> {
        vec!["actions".into(), "body".into()]
    }

    async fn get_server_information(&self) -> (String, String, String, String) {
        (
            "test-server".into(),
            "countersign-tests".into(),
            "1.0".into(),
            "1.2".into(),
        )
    }
}

/// The test's notification server on the bus at `bus_address`, and the calls it receives.
pub async fn serve_notifications(
    bus_address: &str,
) -> (zbus::Connection, mpsc::UnboundedReceiver<Call>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = FakeServer {
        calls: tx,
        next_id: std::sync::atomic::AtomicU32::new(1),
    };
    let conn = zbus::connection::Builder::address(bus_address)
        .unwrap()
        .serve_at("/org/freedesktop/Notifications", server)
        .unwrap()
        .name("org.freedesktop.Notifications")
        .unwrap()
        .build()
        .await
        .expect("own org.freedesktop.Notifications");
    (conn, rx)
}

/// What a person's click sends: the server's `ActionInvoked` signal.
pub async fn invoke(conn: &zbus::Connection, id: u32, action: &str) {
    conn.emit_signal(
        None::<&str>,
        "/org/freedesktop/Notifications",
        "org.freedesktop.Notifications",
        "ActionInvoked",
        &(id, action),
    )
    .await
    .unwrap();
}

pub async fn next_call(calls: &mut mpsc::UnboundedReceiver<Call>) -> Call {
    tokio::time::timeout(DEADLINE, calls.recv())
        .await
        .expect("a call to the notification server in time")
        .expect("server alive")
}
