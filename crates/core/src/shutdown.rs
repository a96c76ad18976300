//! Cooperative shutdown: one [`ShutdownTrigger`] and any number of [`Shutdown`]
//! listeners. Tasks select on `Shutdown::wait` beside their work so they end cleanly,
//! between transactions, instead of being aborted mid-write.

use tokio::sync::watch;

#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    pub fn listener(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Drop for ShutdownTrigger {
    fn drop(&mut self) {
        self.trigger();
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown is triggered (or the trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
}
