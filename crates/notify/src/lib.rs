//! Native notifications you can answer (issue 7).
//!
//! - [`policy`]: pure rules — which new actions raise a notification (not your own
//!   request, not one you already decided, not muted, not during do-not-disturb), what
//!   it says, how bursts coalesce, and when a notification is withdrawn.
//! - [`service`]: the task that applies them over the freedesktop notification API on
//!   the D-Bus session bus: Approve goes through `Engine::decide` bound to the snapshot
//!   the notification showed; Deny uses the configured default reason or opens the
//!   window; Open (and a click on the body) calls back into the host.
//!
//! A missing session bus or notification server is a status, never an error: sync and
//! the window carry on without notifications.

pub mod policy;
pub mod service;

pub use policy::Settings;
pub use service::{NotificationStatus, Notifier, OpenAction};
