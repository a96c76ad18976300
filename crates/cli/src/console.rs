//! Opens the engine the way every subcommand needs it: config, data dir, and — with no
//! config file — the embedded default (the reference server in-process).

use std::path::PathBuf;
use std::sync::Arc;

use countersign_core::backends::{self, Limits};
use countersign_core::config::{self, BackendConfig, Config, ConfigError};
use countersign_core::store::{Store, StoreError};
use countersign_core::{Engine, EngineError};
use countersign_server::{RunningServer, ScenarioConfig, ServerConfig};
use thiserror::Error;

use crate::Global;

/// Name of the backend the embedded default registers.
pub const EMBEDDED_BACKEND: &str = "demo";

#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("no data directory: set --data-dir, COUNTERSIGN_DATA_DIR or HOME")]
    NoDataDir,
    #[error("no config path: set --config, COUNTERSIGN_CONFIG or HOME")]
    NoConfigPath,
    #[error("embedded demo server: {0}")]
    Embedded(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        Self::Engine(e.into())
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        Self::Engine(e.into())
    }
}

/// Whether a subcommand needs the embedded server running when there is no config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedded {
    /// Store only (list, show, history, backends).
    Off,
    /// Serve the demo state without generating new requests (one-shot sync, decisions).
    Serve,
    /// Serve and generate the demo scenario (inbox, sync --follow).
    Demo,
}

pub struct Console {
    pub engine: Engine,
    server: Option<RunningServer>,
    pub embedded: bool,
}

impl Console {
    pub async fn open(global: &Global, embedded: Embedded) -> Result<Self, CliError> {
        let config_path = match &global.config {
            Some(p) => p.clone(),
            None => config::default_config_path().ok_or(CliError::NoConfigPath)?,
        };
        let data_dir: PathBuf = match &global.data_dir {
            Some(d) => d.clone(),
            None => config::default_data_dir().ok_or(CliError::NoDataDir)?,
        };
        let store = Store::open_in_dir(&data_dir)?;
        if let Some(config) = Config::load(&config_path)? {
            let engine = Engine::from_config(&config, store, chrono::Utc::now())?;
            return Ok(Self {
                engine,
                server: None,
                embedded: false,
            });
        }
        let mut engine = Engine::new(store, config::default_approver());
        let server = match embedded {
            Embedded::Off => None,
            Embedded::Serve | Embedded::Demo => {
                let (server, backend) =
                    start_embedded(&data_dir, embedded == Embedded::Demo).await?;
                engine.add_backend(backend.0, backend.1)?;
                Some(server)
            }
        };
        Ok(Self {
            engine,
            server,
            embedded: true,
        })
    }

    pub async fn close(self) {
        if let Some(server) = self.server {
            server.shutdown().await;
        }
    }
}

type BackendPair = (BackendConfig, Arc<dyn backends::Backend>);

/// Starts the reference server on a random loopback port with a fresh random token
/// (kept only in memory) and returns the backend that talks to it.
async fn start_embedded(
    data_dir: &std::path::Path,
    demo: bool,
) -> Result<(RunningServer, BackendPair), CliError> {
    let token = random_token();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut config = ServerConfig::new(data_dir.join("embedded-demo.db"), token.clone());
    if demo {
        config.scenario = Some(ScenarioConfig {
            rate_per_min: 6.0,
            initial: 4,
            seed: None,
        });
    }
    let server = countersign_server::start(listener, config)
        .await
        .map_err(|e| CliError::Embedded(e.to_string()))?;
    let backend = BackendConfig {
        name: EMBEDDED_BACKEND.into(),
        kind: backends::countersign::KIND.into(),
        url: format!("http://{}", server.addr),
        token_env: None,
        poll_interval_secs: None,
        max_backoff_secs: Some(5),
        timeout_secs: None,
    };
    let client = backends::build(&backend, Some(token), Limits::default())
        .map_err(|e| CliError::Embedded(e.to_string()))?;
    Ok((server, (backend, client)))
}

/// 256 random bits; the token never leaves this process.
fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}
