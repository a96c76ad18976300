//! One task per backend keeps the store in step with it: subscribe where the backend
//! can push (reconciling with a list on every connect), poll with `If-None-Match`
//! otherwise. Failures mark only that backend degraded and back off; they never touch
//! another backend's task.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::backends::{blocking, Backend, BackendError, BackendEvent, ListOutcome};
use crate::decide;
use crate::model::{ActionKey, ActionStatus, RemoteAction, TimelineEvent, TimelineKind};
use crate::shutdown::Shutdown;
use crate::store::{ActionChange, Store, StoreError, StoredChange};

/// Most actions fetched one by one in a pass to learn why they left the pending list.
const MAX_VANISHED_FETCHES: usize = 50;
/// How often a subscribed task looks at the outbox between events.
const OUTBOX_TICK: Duration = Duration::from_secs(1);

/// What changed, broadcast to every subscriber (the window, the CLI's live inbox).
/// Carries keys, not data: subscribers read the store, which is the one truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    Action {
        key: ActionKey,
        change: ActionChange,
        new_events: u32,
    },
    Timeline {
        key: ActionKey,
    },
    Backend {
        name: String,
    },
    Decision {
        key: ActionKey,
        idempotency_key: String,
        state: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SyncError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Backend(e) => e.code(),
            Self::Store(_) => "store",
        }
    }
}

/// Counts from one reconciliation pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncSummary {
    pub not_modified: bool,
    pub created: usize,
    pub updated: usize,
    pub new_events: usize,
    pub closed: usize,
}

/// Exponential backoff with jitter, capped: spreads reconnects of many clients.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // Half fixed, half random: never zero, never above the cap.
        let half = exp / 2;
        half + half.mul_f64(rand::thread_rng().gen::<f64>())
    }
}

/// Everything one backend's sync task needs.
pub struct BackendSync {
    pub name: String,
    pub backend: Arc<dyn Backend>,
    pub store: Arc<Store>,
    pub changes: broadcast::Sender<Change>,
    pub poll_interval: Duration,
    pub max_backoff: Duration,
}

impl BackendSync {
    fn publish(&self, changes: &[StoredChange]) {
        for c in changes {
            if c.change != ActionChange::Unchanged || c.new_events > 0 {
                let _ = self.changes.send(Change::Action {
                    key: c.key.clone(),
                    change: c.change,
                    new_events: u32::try_from(c.new_events).unwrap_or(u32::MAX),
                });
            }
        }
    }

    fn store_remote(
        &self,
        actions: &[RemoteAction],
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredChange>, StoreError> {
        let changes = self.store.apply_remote(&self.name, actions, now)?;
        self.publish(&changes);
        Ok(changes)
    }

    /// One reconciliation pass: list pending (with the ETag), store it, and find out
    /// what happened to actions that left the list.
    pub async fn poll_once(&self) -> Result<SyncSummary, SyncError> {
        let mut cursor = self.store.sync_cursor(&self.name)?;
        let outcome = self.backend.list_pending(&cursor).await?;
        let mut summary = SyncSummary::default();
        let (actions, etag, list_cursor) = match outcome {
            ListOutcome::NotModified => {
                summary.not_modified = true;
                return Ok(summary);
            }
            ListOutcome::Listed {
                actions,
                etag,
                cursor,
            } => (actions, etag, cursor),
        };
        // Taken now so it belongs to this list; reported once the listed part is stored.
        let partial = self.backend.take_partial_failure();
        let now = Utc::now();
        // A large list is a long write transaction: run it off the async thread, so the
        // other backends of the same pass (`Engine::sync_once` polls them all on one
        // task) go on receiving and decoding their lists meanwhile instead of waiting
        // for the store to be free of this one.
        let (actions, changes, open) = {
            let store = self.store.clone();
            let name = self.name.clone();
            blocking(move || {
                let changes = store.apply_remote(&name, &actions, now)?;
                let open = store.open_external_ids(&name)?;
                Ok::<_, StoreError>((actions, changes, open))
            })
            .await?
        };
        self.publish(&changes);
        for c in &changes {
            match c.change {
                ActionChange::Created => summary.created += 1,
                ActionChange::Updated => summary.updated += 1,
                ActionChange::Unchanged => {}
            }
            summary.new_events += c.new_events;
        }
        let listed: std::collections::HashSet<&str> = actions
            .iter()
            .map(|a| a.action.key.external_id.as_str())
            .collect();
        let vanished: Vec<String> = open
            .into_iter()
            .filter(|id| !listed.contains(id.as_str()))
            .take(MAX_VANISHED_FETCHES)
            .collect();
        for id in vanished {
            match self.backend.fetch(&id).await {
                Ok(remote) => {
                    self.store_remote(std::slice::from_ref(&remote), Utc::now())?;
                    // Listed as not pending but the backend still says pending: a race
                    // with the list; the next pass settles it.
                }
                Err(BackendError::NotFound(_)) => {
                    let key = ActionKey::new(&self.name, &id);
                    let now = Utc::now();
                    let event = TimelineEvent::local(
                        now,
                        TimelineKind::Cancelled,
                        None,
                        "No longer reported by the backend",
                    );
                    self.store
                        .set_status(&key, ActionStatus::Cancelled, &event, now)?;
                    let _ = self.changes.send(Change::Action {
                        key,
                        change: ActionChange::Updated,
                        new_events: 1,
                    });
                }
                Err(e) => return Err(e.into()),
            }
            summary.closed += 1;
        }
        cursor.etag = etag;
        if let Some(c) = list_cursor {
            // The list is the state as of `c`: events up to it are already applied.
            cursor.last_event_id = Some(c.clone());
            cursor.cursor = Some(c);
        }
        self.store.save_sync_cursor(&self.name, &cursor)?;
        match partial {
            Some(e) => Err(e.into()),
            None => Ok(summary),
        }
    }

    pub(crate) fn mark_ok(&self) {
        match self.store.mark_backend_ok(&self.name, Utc::now()) {
            Ok(true) => {
                let _ = self.changes.send(Change::Backend {
                    name: self.name.clone(),
                });
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(backend = %self.name, "cannot record backend status: {e}"),
        }
    }

    pub(crate) fn mark_degraded(&self, error: &SyncError, wait: Duration) {
        let now = Utc::now();
        let retry_at = now + chrono::Duration::from_std(wait).unwrap_or_default();
        tracing::warn!(backend = %self.name, "degraded: {error}; retrying in {wait:?}");
        if let Err(e) = self.store.mark_backend_degraded(
            &self.name,
            error.code(),
            &error.to_string(),
            retry_at,
            now,
        ) {
            tracing::warn!(backend = %self.name, "cannot record backend status: {e}");
        }
        let _ = self.changes.send(Change::Backend {
            name: self.name.clone(),
        });
    }

    async fn deliver_due(&self) {
        decide::deliver_due(
            &self.store,
            &self.name,
            &*self.backend,
            &self.changes,
            Utc::now(),
        )
        .await;
    }

    /// Runs until shutdown: the backend's sync loop plus delivery of its outbox.
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut backoff = Backoff::new(Duration::from_millis(250), self.max_backoff);
        let subscribe = self.backend.capabilities().subscribe;
        while !shutdown.is_triggered() {
            let result = if subscribe {
                self.subscribed(&mut shutdown, &mut backoff).await
            } else {
                self.poll_once().await.map(|_| ())
            };
            self.deliver_due().await;
            let wait = match result {
                Ok(()) => {
                    backoff.reset();
                    self.mark_ok();
                    self.poll_interval
                }
                Err(e) => {
                    let mut wait = backoff.next_delay();
                    if let SyncError::Backend(b) = &e {
                        wait = wait.max(b.retry_after().unwrap_or_default());
                    }
                    self.mark_degraded(&e, wait);
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Reconcile, then follow the event stream until it fails or shutdown.
    async fn subscribed(
        &self,
        shutdown: &mut Shutdown,
        backoff: &mut Backoff,
    ) -> Result<(), SyncError> {
        self.poll_once().await?;
        let from = self.store.sync_cursor(&self.name)?.last_event_id;
        let mut stream = self.backend.subscribe(from).await?;
        self.mark_ok();
        backoff.reset();
        self.deliver_due().await;
        let mut tick = tokio::time::interval(OUTBOX_TICK);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                _ = tick.tick() => self.deliver_due().await,
                item = stream.recv() => match item {
                    Some(Ok(event)) => self.apply_event(event)?,
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(BackendError::Unreachable {
                        url: self.name.clone(),
                        detail: "event stream ended".into(),
                    }.into()),
                },
            }
        }
    }

    /// Applies one pushed event and moves the resume point past it.
    fn apply_event(&self, event: BackendEvent) -> Result<(), SyncError> {
        let mut cursor = self.store.sync_cursor(&self.name)?;
        if let (Some(id), Some(last)) = (event.event_id(), cursor.last_event_id.as_deref()) {
            if !is_after(id, last) {
                return Ok(()); // already applied (replayed after a reconnect)
            }
        }
        let event_id = event.event_id().map(str::to_owned);
        match event {
            BackendEvent::Upsert { action, .. } => {
                self.store_remote(std::slice::from_ref(&action), Utc::now())?;
            }
            BackendEvent::TimelineAppended {
                external_id, event, ..
            } => {
                let key = ActionKey::new(&self.name, external_id);
                match self
                    .store
                    .append_timeline(&key, std::slice::from_ref(&event))
                {
                    Ok(n) if n > 0 => {
                        let _ = self.changes.send(Change::Timeline { key });
                    }
                    Ok(_) => {}
                    // An event for an action we never saw: the next list brings both.
                    Err(StoreError::UnknownAction(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            BackendEvent::Ignored { .. } => {}
        }
        if event_id.is_some() {
            cursor.last_event_id = event_id;
            self.store.save_sync_cursor(&self.name, &cursor)?;
        }
        Ok(())
    }
}

/// Whether event id `id` comes after `last`. Numeric ids compare as numbers; opaque ids
/// are taken as new (the store's per-event dedupe keeps that safe).
fn is_after(id: &str, last: &str) -> bool {
    match (id.parse::<u64>(), last.parse::<u64>()) {
        (Ok(a), Ok(b)) => a > b,
        _ => id != last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(2));
        }
        assert!(b.next_delay() >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn event_ids_compare_numerically() {
        assert!(is_after("10", "9"));
        assert!(!is_after("9", "10"));
        assert!(!is_after("7", "7"));
        assert!(is_after("b", "a"));
    }
}
