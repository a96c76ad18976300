//! What the shell keeps: the running engine (or why it could not start), the embedded
//! server and the shutdown trigger of its tasks.
//!
//! The running engine is swappable: a settings change builds a new one from the config
//! (`crate::reload`), puts it in place and stops the old one's sync tasks and notifier.
//! Commands take the current engine with [`AppState::engine`] (an `Arc`, so a command
//! in flight finishes on the engine it started with).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

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
    Running(Arc<Running>),
    Failed(ApiError),
}

pub struct AppState {
    current: RwLock<Current>,
    /// One reload at a time (two settings saves in quick succession).
    pub reloading: tokio::sync::Mutex<()>,
    /// The config file the settings view edits (`COUNTERSIGN_CONFIG` or the XDG path).
    pub config_path: Option<PathBuf>,
    /// The tray's "Pause notifications": kept here so a rebuilt notifier keeps it.
    pub paused_until: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

impl AppState {
    pub fn new(current: Current, config_path: Option<PathBuf>) -> Self {
        Self {
            current: RwLock::new(current),
            reloading: tokio::sync::Mutex::new(()),
            config_path,
            paused_until: Mutex::new(None),
        }
    }

    pub fn current(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts `next` in place and returns what was there.
    pub fn replace(&self, next: Current) -> Current {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *current, next)
    }

    pub fn running(&self) -> Result<Arc<Running>, ApiError> {
        match self.current() {
            Current::Running(r) => Ok(r),
            Current::Failed(e) => Err(e),
        }
    }

    pub fn engine(&self) -> Result<Arc<Engine>, ApiError> {
        Ok(self.running()?.engine.clone())
    }

    pub fn notification_status(&self) -> Result<NotificationStatus, ApiError> {
        Ok(self.running()?.notifier.status())
    }

    pub fn info(&self) -> Result<AppInfo, ApiError> {
        Ok(self.running()?.info.clone())
    }

    pub fn close_to_tray(&self) -> bool {
        self.running().is_ok_and(|r| r.close_to_tray)
    }

    /// Pauses notifications until `until`, now and for any notifier a reload starts.
    pub fn pause_notifications(&self, until: chrono::DateTime<chrono::Utc>) {
        *self
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(until);
        if let Ok(running) = self.running() {
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
