//! Graceful shutdown, in the style of mini-redis: one `watch` channel; every task holds
//! a [`Shutdown`] and stops at its next await point once the value turns `true` (or
//! once every sender is gone).

use std::sync::Arc;

use tokio::sync::watch;

/// Listens for the server's shutdown signal.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown {
    is_shutdown: bool,
    notify: watch::Receiver<bool>,
}

impl Shutdown {
    pub(crate) fn new(notify: watch::Receiver<bool>) -> Self {
        Self {
            is_shutdown: false,
            notify,
        }
    }

    /// Completes once shutdown has been requested. Cancel-safe.
    pub(crate) async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // An error means every sender is gone: nobody can keep us running any more.
        let _ = self.notify.wait_for(|stop| *stop).await;
        self.is_shutdown = true;
    }
}

/// Asks a running server to shut down gracefully. Cheap to clone; the server keeps
/// running while at least one handle (or the [`RunningServer`](crate::RunningServer))
/// exists and nobody has called [`ShutdownHandle::shutdown`].
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    pub(crate) fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Self(Arc::new(tx))
    }

    pub(crate) fn subscribe(&self) -> Shutdown {
        Shutdown::new(self.0.subscribe())
    }

    /// A bare receiver, for holders that must not keep the server alive.
    pub(crate) fn receiver(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }

    /// Requests a graceful shutdown: stop accepting connections, end every event
    /// stream, finish in-flight requests. Idempotent.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }

    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recv_completes_after_shutdown_and_stays_completed() {
        let handle = ShutdownHandle::new();
        let mut s = handle.subscribe();
        let waiter = tokio::spawn(async move {
            s.recv().await;
            s.recv().await;
        });
        assert!(!handle.is_shutdown());
        handle.shutdown();
        tokio::time::timeout(std::time::Duration::from_secs(2), waiter)
            .await
            .expect("recv returns after shutdown")
            .expect("task ok");
        assert!(handle.is_shutdown());
    }

    #[tokio::test]
    async fn dropping_every_sender_counts_as_shutdown() {
        let handle = ShutdownHandle::new();
        let mut s = Shutdown::new(handle.receiver());
        drop(handle);
        tokio::time::timeout(std::time::Duration::from_secs(2), s.recv())
            .await
            .expect("recv returns when the sender is gone");
    }
}
