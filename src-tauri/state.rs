//! What the shell keeps: the engine (or why it could not start), the embedded server,
//! and the shutdown trigger for the sync tasks.

use std::sync::Arc;

use countersign_core::api::ApiError;
use countersign_core::shutdown::ShutdownTrigger;
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
    /// Kept so the embedded server and the sync tasks live as long as the app.
    pub _server: Option<RunningServer>,
    pub _sync: ShutdownTrigger,
}

/// Either a running engine or the reason it could not start (a corrupt database, a
/// bad config): the window shows that reason instead of the app crashing.
pub enum AppState {
    Running(Running),
    Failed(ApiError),
}

impl AppState {
    pub fn engine(&self) -> Result<&Arc<Engine>, ApiError> {
        match self {
            Self::Running(r) => Ok(&r.engine),
            Self::Failed(e) => Err(e.clone()),
        }
    }

    pub fn notification_status(&self) -> Result<NotificationStatus, ApiError> {
        match self {
            Self::Running(r) => Ok(r.notifier.status()),
            Self::Failed(e) => Err(e.clone()),
        }
    }

    pub fn info(&self) -> Result<AppInfo, ApiError> {
        match self {
            Self::Running(r) => Ok(r.info.clone()),
            Self::Failed(e) => Err(e.clone()),
        }
    }
}
