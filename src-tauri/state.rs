//! What the shell keeps: the running engine (or why it could not start), the embedded
//! server and the shutdown trigger of its tasks.
//!
//! The running engine is swappable: a settings change builds a new one from the config
//! (`crate::reload`), puts it in place and stops the old one's sync tasks and notifier.
//! Commands take the current engine with [`AppState::engine`] (an `Arc`, so a command
//! in flight finishes on the engine it started with).
//!
//! The first engine starts after the window is shown (`crate::run`): until it is in
//! place the state is [`Current::Starting`] and commands wait for it, so the page can
//! load and paint its shell while the store, the keyring and the embedded server open.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use countersign_core::api::ApiError;
use countersign_core::shutdown::{Shutdown, ShutdownTrigger};
use countersign_core::Engine;
use countersign_notify::{NotificationStatus, Notifier};
use countersign_server::RunningServer;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, specta::Type)]
pub struct AppInfo {
    pub approver: String,
    /// No config file: the reference server runs in-process with the demo scenario.
    pub embedded: bool,
    pub data_dir: String,
}

pub struct Running {
    pub engine: Arc<Engine>,
    pub info: AppInfo,
    /// Native notifications you can answer (see `countersign-notify`).
    pub notifier: Notifier,
    /// Closing the window hides it to the tray (`[notifications] close_to_tray`).
    pub close_to_tray: bool,
    /// The embedded demo server, taken out and shut down when this engine is replaced.
    pub server: Mutex<Option<RunningServer>>,
    /// Stops the sync tasks, the notifier and the change forwarding of this engine
    /// (also when dropped).
    pub sync: ShutdownTrigger,
}

impl Running {
    /// A listener for this engine's shutdown, for tasks that follow it (tray, window).
    pub fn shutdown_listener(&self) -> Shutdown {
        self.sync.listener()
    }

    /// Stops this engine's tasks and its embedded server.
    pub async fn stop(&self) {
        self.sync.trigger();
        let server = self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(server) = server {
            server.shutdown().await;
        }
    }
}

/// Either a running engine or the reason it could not start (a corrupt database, a
/// bad config): the window shows that reason instead of the app crashing.
#[derive(Clone)]
pub enum Current {
    /// The first engine is still opening; commands wait for what comes next.
    Starting,
    Running(Arc<Running>),
    Failed(ApiError),
}

pub struct AppState {
    /// A watch channel rather than a lock: commands that arrive while the engine is
    /// starting wait for it to change.
    current: tokio::sync::watch::Sender<Current>,
    /// One reload at a time (two settings saves in quick succession).
    pub reloading: tokio::sync::Mutex<()>,
    /// The config file the settings view edits (`COUNTERSIGN_CONFIG` or the XDG path).
    pub config_path: Option<PathBuf>,
    /// The tray's "Pause notifications": kept here so a rebuilt notifier keeps it.
    pub paused_until: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

impl AppState {
    /// Starts as [`Current::Starting`]; the shell puts the engine in place with
    /// [`AppState::replace`].
    pub fn new(config_path: Option<PathBuf>) -> Self {
        Self {
            current: tokio::sync::watch::Sender::new(Current::Starting),
            reloading: tokio::sync::Mutex::new(()),
            config_path,
            paused_until: Mutex::new(None),
        }
    }

    /// Puts `next` in place, wakes the commands waiting for it and returns what was there.
    pub fn replace(&self, next: Current) -> Current {
        self.current.send_replace(next)
    }

    /// The running engine, once started (waits while it starts).
    pub async fn running(&self) -> Result<Arc<Running>, ApiError> {
        let mut current = self.current.subscribe();
        let settled = current
            .wait_for(|c| !matches!(c, Current::Starting))
            .await
            .map(|c| c.clone());
        match settled {
            Ok(Current::Running(r)) => Ok(r),
            Ok(Current::Failed(e)) => Err(e),
            // `self` holds the sender, so the channel cannot close while we wait.
            Ok(Current::Starting) | Err(_) => Err(ApiError::new(
                "internal",
                "the engine never finished starting",
            )),
        }
    }

    /// The running engine if there is one now (never waits: for window and tray events).
    pub fn running_now(&self) -> Option<Arc<Running>> {
        match &*self.current.borrow() {
            Current::Running(r) => Some(r.clone()),
            Current::Starting | Current::Failed(_) => None,
        }
    }

    pub async fn engine(&self) -> Result<Arc<Engine>, ApiError> {
        Ok(self.running().await?.engine.clone())
    }

    pub async fn notification_status(&self) -> Result<NotificationStatus, ApiError> {
        Ok(self.running().await?.notifier.status())
    }

    pub async fn info(&self) -> Result<AppInfo, ApiError> {
        Ok(self.running().await?.info.clone())
    }

    pub fn close_to_tray(&self) -> bool {
        self.running_now().is_some_and(|r| r.close_to_tray)
    }

    /// Pauses notifications until `until`, now and for any notifier a reload starts.
    pub fn pause_notifications(&self, until: chrono::DateTime<chrono::Utc>) {
        *self
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(until);
        if let Some(running) = self.running_now() {
            running.notifier.pause_until(Some(until));
        }
    }

    /// Re-applies a pause that has not run out to `running`'s notifier.
    pub fn keep_pause(&self, running: &Running, now: chrono::DateTime<chrono::Utc>) {
        let until = *self
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(until) = until.filter(|u| *u > now) {
            running.notifier.pause_until(Some(until));
        }
    }

    pub fn config_path(&self) -> Result<PathBuf, ApiError> {
        self.config_path.clone().ok_or_else(|| {
            ApiError::new(
                "paths",
                "no config path: set COUNTERSIGN_CONFIG or HOME to change settings",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command that arrives while the engine starts waits for the outcome instead of
    /// failing (the window's first `inbox` call is sent before the engine is open).
    #[tokio::test]
    async fn commands_wait_for_the_engine_to_start() {
        let state = Arc::new(AppState::new(None));
        assert!(state.running_now().is_none());
        let waiting = tokio::spawn({
            let state = state.clone();
            async move { state.engine().await.err().map(|e| e.code) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "answered before the engine started");
        let previous = state.replace(Current::Failed(ApiError::new("corrupt_db", "bad file")));
        assert!(matches!(previous, Current::Starting));
        assert_eq!(waiting.await.unwrap().as_deref(), Some("corrupt_db"));
        // Later commands get the outcome at once.
        let again = state.info().await.err().map(|e| e.code);
        assert_eq!(again.as_deref(), Some("corrupt_db"));
    }
}
