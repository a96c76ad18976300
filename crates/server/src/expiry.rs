//! The expiry ticker: every `tick`, pending actions whose `expires_at` has passed
//! become `expired` (with an `expired` timeline event and an `action.updated` event).

use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Shutdown;
use crate::state::{now, Store};

pub(crate) async fn run(store: Arc<Store>, tick: Duration, mut shutdown: Shutdown) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = interval.tick() => {
                match store.call(|s| s.expire_due(now())).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "expired actions"),
                    Err(e) => tracing::error!(error = %e, "expiry check failed"),
                }
            }
        }
    }
}
