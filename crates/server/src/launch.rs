//! Opening the engine the way the CLI and the desktop app both need it: config file,
//! data directory and — with no config file — the embedded default, this server running
//! in-process on a random loopback port as the one backend.
//!
//! It lives here (not in `countersign-core`) because the engine must not depend on the
//! server; both front ends depend on both.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use countersign_core::audit::AllowedSigners;
use countersign_core::backends::{self, Backend, Limits};
use countersign_core::config::{self, BackendConfig, Config};
use countersign_core::signer::OsKeyring;
use countersign_core::store::Store;
use countersign_core::{Engine, EngineError};
use thiserror::Error;

use crate::{start, RunningServer, ScenarioConfig, ServerConfig, ServerError};

/// Name of the backend the embedded default registers.
pub const EMBEDDED_BACKEND: &str = "demo";
/// State file of the embedded server, inside the data directory.
pub const EMBEDDED_STATE_FILE: &str = "embedded-demo.db";

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("no data directory: set --data-dir, COUNTERSIGN_DATA_DIR or HOME")]
    NoDataDir,
    #[error("no config path: set --config, COUNTERSIGN_CONFIG or HOME")]
    NoConfigPath,
    #[error("embedded demo server: {0}")]
    Embedded(String),
}

impl LaunchError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Engine(e) => e.code(),
            Self::NoDataDir | Self::NoConfigPath => "paths",
            Self::Embedded(_) => "embedded",
        }
    }
}

impl From<countersign_core::store::StoreError> for LaunchError {
    fn from(e: countersign_core::store::StoreError) -> Self {
        Self::Engine(e.into())
    }
}

impl From<config::ConfigError> for LaunchError {
    fn from(e: config::ConfigError) -> Self {
        Self::Engine(e.into())
    }
}

/// Where the config and the data live. `None` means the standard XDG location.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
}

impl Paths {
    /// From `COUNTERSIGN_CONFIG` and `COUNTERSIGN_DATA_DIR` (the app has no flags).
    pub fn from_env() -> Self {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            config: var("COUNTERSIGN_CONFIG"),
            data_dir: var("COUNTERSIGN_DATA_DIR"),
        }
    }

    fn resolve(&self) -> Result<(PathBuf, PathBuf), LaunchError> {
        let config = match &self.config {
            Some(p) => p.clone(),
            None => config::default_config_path().ok_or(LaunchError::NoConfigPath)?,
        };
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => config::default_data_dir().ok_or(LaunchError::NoDataDir)?,
        };
        Ok((config, data_dir))
    }
}

/// Whether the embedded server runs when there is no config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedded {
    /// Store only (reading commands).
    Off,
    /// Serve the demo state without generating new requests (one-shot sync, decisions).
    Serve,
    /// Serve and generate the demo scenario (the window, the live inbox).
    Demo,
}

/// An opened engine, and the embedded server when one runs.
pub struct Launched {
    pub engine: Engine,
    pub server: Option<RunningServer>,
    /// True when there was no config file (whether or not the server was started).
    pub embedded: bool,
    pub data_dir: PathBuf,
}

impl Launched {
    pub async fn close(self) {
        if let Some(server) = self.server {
            server.shutdown().await;
        }
    }
}

pub async fn open(
    paths: &Paths,
    embedded: Embedded,
    now: DateTime<Utc>,
) -> Result<Launched, LaunchError> {
    let (config_path, data_dir) = paths.resolve()?;
    let started = std::time::Instant::now();
    let store = Store::open_in_dir(&data_dir)?;
    tracing::info!("store opened in {} ms", started.elapsed().as_millis());
    if let Some(config) = Config::load(&config_path)? {
        return Ok(Launched {
            engine: with_key_entry(Engine::from_config(&config, store, now)?),
            server: None,
            embedded: false,
            data_dir,
        });
    }
    let mut engine = with_key_entry(Engine::new(store, config::default_approver()));
    let server = match embedded {
        Embedded::Off => None,
        Embedded::Serve | Embedded::Demo => {
            // The in-process server accepts this app's own key, so the demo's decisions
            // are signed and checked with no setup. Without a keyring no decision can be
            // signed anyway; the decision then fails with the keyring's message.
            let allowed = engine
                .key_info()
                .ok()
                .and_then(|k| AllowedSigners::parse(&k.allowed_signers).ok());
            tracing::info!("signing key read at {} ms", started.elapsed().as_millis());
            let (server, config, backend) =
                start_embedded(&data_dir, embedded == Embedded::Demo, allowed).await?;
            tracing::info!("embedded server up at {} ms", started.elapsed().as_millis());
            engine
                .add_backend(config, backend)
                .map_err(EngineError::from)?;
            Some(server)
        }
    };
    Ok(Launched {
        engine,
        server,
        embedded: true,
        data_dir,
    })
}

/// `COUNTERSIGN_KEYRING_ENTRY` names the keyring entry of the signing key, so one
/// account can keep separate identities (and parallel tests separate keys). The key is
/// still only in the OS keyring.
fn with_key_entry(engine: Engine) -> Engine {
    match std::env::var("COUNTERSIGN_KEYRING_ENTRY") {
        Ok(entry) if !entry.is_empty() => engine.with_key_store(Arc::new(OsKeyring::with_names(
            countersign_core::signer::KEYRING_SERVICE,
            &entry,
        ))),
        _ => engine,
    }
}

/// Starts this server on a random loopback port with a fresh random token (kept only in
/// memory) and returns the backend that talks to it.
async fn start_embedded(
    data_dir: &Path,
    demo: bool,
    allowed_signers: Option<AllowedSigners>,
) -> Result<(RunningServer, BackendConfig, Arc<dyn Backend>), LaunchError> {
    let token = hex_token();
    let embedded = |e: ServerError| LaunchError::Embedded(e.to_string());
    let listener = crate::bind("127.0.0.1:0").await.map_err(embedded)?;
    let mut server_config = ServerConfig::new(data_dir.join(EMBEDDED_STATE_FILE), token.clone());
    server_config.allowed_signers = allowed_signers;
    if demo {
        server_config.scenario = Some(ScenarioConfig {
            rate_per_min: 6.0,
            initial: 4,
            seed: None,
        });
    }
    let server = start(listener, server_config).await.map_err(embedded)?;
    let config = BackendConfig {
        name: EMBEDDED_BACKEND.into(),
        kind: backends::countersign::KIND.into(),
        url: server.url(),
        token_env: None,
        poll_interval_secs: None,
        max_backoff_secs: Some(5),
        timeout_secs: None,
        ..Default::default()
    };
    let backend = backends::build(&config, Some(token), Limits::default())
        .map_err(|e| LaunchError::Embedded(e.to_string()))?;
    Ok((server, config, backend))
}

/// 256 random bits as hex; the token never leaves this process.
fn hex_token() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
