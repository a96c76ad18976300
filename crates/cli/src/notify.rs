//! `countersign notify`: sync every backend and raise native notifications until Ctrl-C,
//! without a window. Open (or Deny without a default reason) prints the action's key,
//! since there is no window to bring forward.

use std::sync::Arc;

use chrono::Utc;
use countersign_core::config::{self, Config, NotificationsConfig};
use countersign_core::shutdown;
use countersign_core::sync::Change;
use countersign_core::EngineError;
use countersign_notify::{Notifier, OpenAction, Settings};
use countersign_server::launch::{self, Embedded, Launched, Paths};
use tokio::sync::broadcast::error::RecvError;

use crate::console::CliError;
use crate::Global;

pub async fn run(global: &Global) -> Result<(), CliError> {
    let paths = Paths {
        config: global.config.clone(),
        data_dir: global.data_dir.clone(),
    };
    let Launched { engine, server, .. } = launch::open(&paths, Embedded::Demo, Utc::now()).await?;
    let engine = Arc::new(engine);
    let (settings, warnings) = Settings::from_config(&notifications_config(global)?);
    for warning in warnings {
        eprintln!("countersign: {warning}");
    }

    let (trigger, listener) = shutdown::channel();
    let open: OpenAction = Arc::new(|key| println!("open {key}"));
    // Subscribed before sync starts, so the first pass's new actions are seen.
    let notifier = Notifier::spawn(engine.clone(), settings, open, listener.clone());
    let mut changes = engine.changes();
    let tasks = engine.spawn_sync(&listener);
    let mut status = notifier.status_changes();
    println!(
        "following {} backend(s) with notifications; Ctrl-C stops",
        engine.backends()?.len()
    );
    // One listener for the whole loop: a new `ctrl_c()` per turn would miss a
    // Ctrl-C that arrives while a change is being printed.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            Ok(()) = status.changed() => {
                let s = status.borrow_and_update().clone();
                let state = if s.available { "available" } else { "unavailable" };
                println!("notifications: {state}: {}", s.detail);
            }
            change = changes.recv() => match change {
                Ok(Change::Action { key, change, .. }) => {
                    let what = serde_json::to_value(change)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    println!("synced {key} {what}");
                }
                Ok(Change::Decision { key, state, .. }) => println!("decision {key} {state}"),
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => println!("({n} changes skipped)"),
                Err(RecvError::Closed) => break,
            },
        }
    }
    trigger.trigger();
    for t in tasks {
        let _ = t.await;
    }
    notifier.join().await;
    if let Some(server) = server {
        server.shutdown().await;
    }
    Ok(())
}

/// The `[notifications]` table (defaults without a config file).
fn notifications_config(global: &Global) -> Result<NotificationsConfig, CliError> {
    let Some(path) = global.config.clone().or_else(config::default_config_path) else {
        return Ok(NotificationsConfig::default());
    };
    Ok(Config::load(&path)
        .map_err(EngineError::from)?
        .map(|c| c.notifications)
        .unwrap_or_default())
}
