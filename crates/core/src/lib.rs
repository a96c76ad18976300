//! Countersign engine. Plain Rust with no Tauri dependency: the desktop shell, the CLI
//! and the tests all drive it through [`api::Engine`].
//!
//! # Layout
//! - [`model`]: the vocabulary — `PendingAction`, `TimelineEvent`, `Decision`.
//! - [`snapshot`]: canonical JSON (RFC 8785), snapshot hashes and field diffs.
//! - [`protocol`]: wire types of the open protocol v1 (shared with the reference server).
//! - [`backends`]: the `Backend` trait and one module per kind of approval backend.
//! - [`sse`]: an incremental, bounded `text/event-stream` parser.
//! - [`store`]: the local SQLite cache and log (actions, timeline, decisions, outbox).
//! - [`sync`]: one task per backend keeping the store fresh; the change broadcast.
//! - [`decide`]: the just-in-time decision pipeline and the outbox delivery.
//! - [`config`]: `config.toml`, with secrets only ever referenced, never stored.
//! - [`secrets`]: backend tokens in the OS keyring.
//! - [`admin`]: backend administration and settings (add, edit, test, remove, tokens).
//! - [`api`]: the one API layer the window and the CLI both call.

pub mod admin;
pub mod api;
pub mod audit;
pub mod backends;
pub mod config;
pub mod decide;
pub mod export;
pub mod form;
pub mod model;
pub mod protocol;
pub mod secrets;
pub mod shutdown;
pub mod signer;
pub mod snapshot;
pub mod sse;
pub mod store;
pub mod sync;

pub use api::{Engine, EngineError};
