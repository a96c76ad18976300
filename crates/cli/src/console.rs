//! Opens the engine for a subcommand: config, data dir, and — with no config file —
//! the embedded default (see `countersign_server::launch`).

use countersign_core::{Engine, EngineError};
use countersign_server::launch::{self, Embedded, LaunchError, Launched, Paths};
use thiserror::Error;

use crate::Global;

#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Message(String),
}

pub struct Console {
    pub engine: Engine,
    pub embedded: bool,
    launched_server: Option<countersign_server::RunningServer>,
}

impl Console {
    pub async fn open(global: &Global, embedded: Embedded) -> Result<Self, CliError> {
        let paths = Paths {
            config: global.config.clone(),
            data_dir: global.data_dir.clone(),
        };
        let Launched {
            engine,
            server,
            embedded,
            ..
        } = launch::open(&paths, embedded, chrono::Utc::now()).await?;
        Ok(Self {
            engine,
            embedded,
            launched_server: server,
        })
    }

    pub async fn close(self) {
        if let Some(server) = self.launched_server {
            server.shutdown().await;
        }
    }
}
