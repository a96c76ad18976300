//! `config.toml`: which backends to sync and who the approver is. Secrets are only ever
//! referenced (an environment variable now, the OS keyring later); a file that holds
//! one is refused, because config files end up in dotfile repos and backups.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who signs decisions made here (e.g. an email). Defaults to `$USER@host`.
    #[serde(default)]
    pub approver: Option<String>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique, short, shown in the inbox; part of every action key (`name/id`).
    pub name: String,
    pub kind: String,
    /// Base URL of an HTTP backend (empty for kinds that are not, like `exec`).
    #[serde(default)]
    pub url: String,
    /// Program and arguments of an `exec` plugin.
    #[serde(default)]
    pub command: Vec<String>,
    /// Kind-specific settings (`[backend.options]`), read by that kind's module.
    #[serde(default)]
    pub options: toml::Table,
    /// Environment variable holding the bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Poll interval for backends that cannot push (seconds).
    #[serde(default)]
    pub poll_interval_secs: Option<u64>,
    /// Longest wait between reconnection attempts (seconds).
    #[serde(default)]
    pub max_backoff_secs: Option<u64>,
    /// Per-request deadline (seconds).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

impl BackendConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_secs.unwrap_or(10).max(1))
    }

    pub fn max_backoff(&self) -> Duration {
        Duration::from_secs(self.max_backoff_secs.unwrap_or(60).max(1))
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error(
        "config {path}: backend `{backend}` has a token in the file; secrets never go in \
         config.toml. Remove `{key}` and set `token_env = \"VAR\"` with the token in $VAR"
    )]
    SecretInFile {
        path: PathBuf,
        backend: String,
        key: String,
    },
    #[error("backend `{backend}`: environment variable `{var}` (token_env) is not set")]
    MissingToken { backend: String, var: String },
}

const SECRET_KEYS: &[&str] = &["token", "api_key", "apikey", "password", "secret", "bearer"];

impl Config {
    /// Reads a config file. `Ok(None)` when it does not exist (the embedded default).
    pub fn load(path: &Path) -> Result<Option<Self>, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Self::parse(path, &text).map(Some)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let invalid = |detail: String| ConfigError::Invalid {
            path: path.to_owned(),
            detail,
        };
        // Look for secrets before the typed parse so the message says what to do
        // instead of "unknown field".
        let raw: toml::Value = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        if let Some(backends) = raw.get("backend").and_then(toml::Value::as_array) {
            for (i, b) in backends.iter().enumerate() {
                if let Some(key) = SECRET_KEYS.iter().find(|k| b.get(**k).is_some()) {
                    let backend = b
                        .get("name")
                        .and_then(toml::Value::as_str)
                        .map_or_else(|| format!("#{}", i + 1), str::to_owned);
                    return Err(ConfigError::SecretInFile {
                        path: path.to_owned(),
                        backend,
                        key: (*key).to_owned(),
                    });
                }
            }
        }
        let config: Config = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        let mut seen = std::collections::HashSet::new();
        for b in &config.backends {
            if b.name.is_empty()
                || !b
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(format!(
                    "backend name `{}` must be letters, digits, - or _",
                    b.name
                )));
            }
            if !seen.insert(b.name.as_str()) {
                return Err(invalid(format!("backend name `{}` is used twice", b.name)));
            }
        }
        Ok(config)
    }
}

impl BackendConfig {
    /// The token, read from where the config says it lives.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        let Some(var) = &self.token_env else {
            return Ok(None);
        };
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(ConfigError::MissingToken {
                backend: self.name.clone(),
                var: var.clone(),
            }),
        }
    }
}

/// Standard locations, each overridable by the caller (flags, environment).
pub fn default_config_path() -> Option<PathBuf> {
    xdg_dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("countersign").join("config.toml"))
}

pub fn default_data_dir() -> Option<PathBuf> {
    xdg_dir("XDG_DATA_HOME", ".local/share").map(|d| d.join("countersign"))
}

fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)),
    }
}

/// `$USER@host`, the approver when the config names none.
pub fn default_approver() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backends() {
        let c = Config::parse(
            Path::new("c.toml"),
            r#"
            approver = "ana@example.com"
            [[backend]]
            name = "prod"
            kind = "countersign"
            url = "http://127.0.0.1:9"
            token_env = "PROD_TOKEN"
            "#,
        )
        .unwrap();
        assert_eq!(c.backends[0].name, "prod");
        assert_eq!(c.backends[0].token_env.as_deref(), Some("PROD_TOKEN"));
    }

    #[test]
    fn refuses_a_token_in_the_file_and_says_what_to_do() {
        let e = Config::parse(
            Path::new("c.toml"),
            "[[backend]]\nname='p'\nkind='countersign'\nurl='http://x'\ntoken='hunter2'\n",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("backend `p` has a token in the file"), "{msg}");
        assert!(msg.contains("token_env"), "{msg}");
        assert!(
            !msg.contains("hunter2"),
            "the secret must not be echoed: {msg}"
        );
    }

    #[test]
    fn refuses_duplicate_and_odd_names_and_unknown_keys() {
        let dup =
            "[[backend]]\nname='a'\nkind='k'\nurl='u'\n[[backend]]\nname='a'\nkind='k'\nurl='u'\n";
        assert!(Config::parse(Path::new("c"), dup)
            .unwrap_err()
            .to_string()
            .contains("used twice"));
        let odd = "[[backend]]\nname='a/b'\nkind='k'\nurl='u'\n";
        assert!(Config::parse(Path::new("c"), odd).is_err());
        let unknown = "[[backend]]\nname='a'\nkind='k'\nurl='u'\nurll='x'\n";
        assert!(Config::parse(Path::new("c"), unknown)
            .unwrap_err()
            .to_string()
            .contains("urll"));
    }

    #[test]
    fn missing_file_is_the_embedded_default() {
        assert_eq!(
            Config::load(Path::new("/nonexistent/countersign.toml")).unwrap(),
            None
        );
    }
}
