//! Reference server of the Countersign open protocol v1 (docs/protocol.md).
//!
//! Used three ways: as the `countersign-server` binary, in-process by the CLI and the
//! desktop app as the embedded default backend (with the demo scenario), and by tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), countersign_server::ServerError> {
//! use countersign_server::{bind, start, ScenarioConfig, ServerConfig};
//! let listener = bind("127.0.0.1:0").await?;
//! let mut config = ServerConfig::new("demo.db", "s3cret");
//! config.scenario = Some(ScenarioConfig::default());
//! let server = start(listener, config).await?;
//! println!("listening on {}", server.url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`lib.rs`](crate): configuration, [`start`], [`RunningServer`].
//! - `routes`: the axum router and the JSON handlers (list, get, create, decide).
//! - `auth`: the bearer-token check (constant time).
//! - `events`: `GET /v1/events`, the resumable `text/event-stream`.
//! - `state`: the SQLite state file: actions, timeline, event log, decisions and their
//!   idempotent answers; every change and its events in one transaction.
//! - `expiry`: the ticker that expires actions past `expires_at`.
//! - `scenario`: the demo generator (`--scenario demo`).
//! - `shutdown`: the watch-channel shutdown signal every task listens to.
//! - `signatures`: checks signed decisions against `--allowed-signers`.
//! - `error`: [`ServerError`] and the HTTP error answers.
//! - [`launch`]: opens the engine for the CLI and the app, with this server embedded
//!   when there is no config file (the embedded default).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use countersign_core::protocol::{ActionList, NewAction, WireAction};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

mod auth;
mod error;
mod events;
mod expiry;
pub mod launch;
mod routes;
mod scenario;
mod shutdown;
mod signatures;
mod state;

pub use error::ServerError;
pub use routes::MAX_BODY_BYTES;
pub use shutdown::ShutdownHandle;
pub use state::{StoreError, SCHEMA_VERSION};

/// How long [`RunningServer::shutdown`] waits for open connections before closing them.
const GRACE: Duration = Duration::from_secs(10);

/// Settings of one server instance.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The SQLite state file (created when missing).
    pub state_path: PathBuf,
    /// The bearer token every `/v1` request must carry. Must not be empty.
    pub token: String,
    /// Run the demo scenario.
    pub scenario: Option<ScenarioConfig>,
    /// Interval of the `: keepalive` comment on event streams (default 15 s).
    pub keepalive: Duration,
    /// How often pending actions are checked for expiry (default 1 s).
    pub expiry_tick: Duration,
    /// Keys allowed to sign decisions (`--allowed-signers`); `None` checks no signatures.
    pub allowed_signers: Option<countersign_core::audit::AllowedSigners>,
}

impl ServerConfig {
    /// A configuration with the defaults: no scenario, 15 s keepalive, 1 s expiry tick.
    pub fn new(state_path: impl Into<PathBuf>, token: impl Into<String>) -> Self {
        Self {
            state_path: state_path.into(),
            token: token.into(),
            scenario: None,
            keepalive: Duration::from_secs(15),
            expiry_tick: Duration::from_secs(1),
            allowed_signers: None,
        }
    }
}

/// The demo scenario's knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioConfig {
    /// New requests per minute after the initial ones (Poisson arrivals); 0 = none.
    pub rate_per_min: f64,
    /// Requests created at start (default 3).
    pub initial: usize,
    /// Seed for reproducible content and timing; `None` = random.
    pub seed: Option<u64>,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        Self {
            rate_per_min: 2.0,
            initial: 3,
            seed: None,
        }
    }
}

/// Binds a TCP listener (`"127.0.0.1:0"` picks a free port).
pub async fn bind(addr: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.to_owned(),
            source,
        })
}

/// Opens the state file, then serves HTTP on `listener` and runs the expiry ticker and
/// the scenario (if configured) until [`RunningServer::shutdown`]. The scenario's
/// initial requests exist when this returns.
pub async fn start(
    listener: TcpListener,
    config: ServerConfig,
) -> Result<RunningServer, ServerError> {
    if config.token.is_empty() {
        return Err(ServerError::EmptyToken);
    }
    if config.keepalive.is_zero() || config.expiry_tick.is_zero() {
        return Err(ServerError::Config(
            "keepalive and expiry_tick must be greater than zero".into(),
        ));
    }
    if let Some(sc) = &config.scenario {
        if !sc.rate_per_min.is_finite() || sc.rate_per_min < 0.0 {
            return Err(ServerError::Config(
                "scenario rate must be a non-negative number".into(),
            ));
        }
    }
    let addr = listener.local_addr()?;
    let path = config.state_path.clone();
    let store = tokio::task::spawn_blocking(move || state::Store::open(&path))
        .await
        .map_err(|e| ServerError::Store(StoreError::Task(e.to_string())))??;
    let store = Arc::new(store);
    let shutdown = ShutdownHandle::new();

    let mut background = Vec::new();
    background.push(tokio::spawn(expiry::run(
        Arc::clone(&store),
        config.expiry_tick,
        shutdown.subscribe(),
    )));
    if let Some(sc) = &config.scenario {
        let mut scenario = scenario::Scenario::new(Arc::clone(&store), sc);
        for _ in 0..sc.initial {
            scenario.create_one().await?;
        }
        background.push(tokio::spawn(scenario.run(shutdown.subscribe())));
    }

    let app = Arc::new(routes::AppState {
        store: Arc::clone(&store),
        token: auth::TokenDigest::new(&config.token),
        shutdown: shutdown.receiver(),
        keepalive: config.keepalive,
        allowed_signers: config.allowed_signers.clone(),
    });
    let router = routes::router(app);
    let mut stop = shutdown.subscribe();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.recv().await })
            .await
    });
    tracing::info!(%addr, state = %config.state_path.display(), "countersign-server started");
    Ok(RunningServer {
        addr,
        store,
        shutdown,
        server,
        background,
    })
}

/// A started server. Dropping it without [`shutdown`](Self::shutdown) also stops it
/// (unless a [`ShutdownHandle`] is still alive), but without waiting.
pub struct RunningServer {
    /// The bound address (port 0 resolved).
    pub addr: SocketAddr,
    store: Arc<state::Store>,
    shutdown: ShutdownHandle,
    server: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// `http://ADDR`, the base URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A handle that can trigger the shutdown from elsewhere (a signal handler, a UI).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Creates an action without going through HTTP (same rules and events as
    /// `POST /v1/actions`). Returns the action and whether it was created (`false`: an
    /// action with that id already existed and is returned unchanged).
    pub async fn create_action(&self, new: NewAction) -> Result<(WireAction, bool), ServerError> {
        Ok(self
            .store
            .call(move |s| s.create(new, state::now()))
            .await?)
    }

    /// Current state of one action, with its timeline.
    pub async fn action(&self, id: &str) -> Result<Option<WireAction>, ServerError> {
        let id = id.to_owned();
        Ok(self.store.call(move |s| s.get(&id)).await?)
    }

    /// All actions (optionally of one status), as `GET /v1/actions` lists them.
    pub async fn list(
        &self,
        status: Option<countersign_core::model::ActionStatus>,
    ) -> Result<ActionList, ServerError> {
        Ok(self.store.call(move |s| s.list(status)).await?)
    }

    /// Graceful shutdown: stops accepting, ends event streams, lets in-flight requests
    /// finish (for at most 10 s) and stops the ticker and the scenario.
    pub async fn shutdown(self) {
        self.shutdown.shutdown();
        let _ = self.wait().await;
    }

    /// Waits until the server has stopped (after a [`ShutdownHandle::shutdown`]).
    pub async fn wait(self) -> Result<(), ServerError> {
        let Self {
            mut server,
            background,
            shutdown,
            ..
        } = self;
        let served = {
            let mut stop = shutdown.subscribe();
            tokio::select! {
                res = &mut server => Some(res),
                _ = async { stop.recv().await; tokio::time::sleep(GRACE).await } => None,
            }
        };
        let result = match served {
            Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(ServerError::Io(e)),
            Some(Err(e)) => Err(ServerError::Io(std::io::Error::other(e.to_string()))),
            None => {
                tracing::warn!("connections still open after the grace period; closing them");
                server.abort();
                Ok(())
            }
        };
        shutdown.shutdown();
        for task in background {
            let _ = task.await;
        }
        result
    }
}
