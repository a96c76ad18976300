//! `config.toml`: which backends to sync and who the approver is. Secrets are only ever
//! referenced (an environment variable, or the OS keyring); a file that holds one is
//! refused, because config files end up in dotfile repos and backups.
//!
//! [`edit`] changes the file for `countersign backend add/remove/set-token`, keeping the
//! person's comments and layout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::secrets::{SecretError, TokenStore};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who signs decisions made here (e.g. an email). Defaults to `$USER@host`.
    #[serde(default)]
    pub approver: Option<String>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
    /// `[notifications]`: native notifications and the tray (read by `countersign-notify`).
    #[serde(default)]
    pub notifications: NotificationsConfig,
}

/// `[notifications]`: which new actions raise a native notification, and how the
/// window behaves around the tray. Every key is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// Raise notifications at all (default true).
    pub enabled: bool,
    /// Backends whose new actions never raise a notification.
    pub muted_backends: Vec<String>,
    /// Do not disturb until this time (RFC 3339, e.g. `"2026-11-25T18:00:00Z"`).
    pub dnd_until: Option<String>,
    /// Reason sent when Deny is pressed on a notification. Without one, Deny opens the
    /// window to ask for a reason.
    pub default_deny_reason: Option<String>,
    /// Closing the window keeps the app running in the tray (default true).
    pub close_to_tray: bool,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            muted_backends: Vec::new(),
            dnd_until: None,
            default_deny_reason: None,
            close_to_tray: true,
        }
    }
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
    /// The token is in the OS keyring (entry `backend-token:<name>`, set with
    /// `countersign backend set-token NAME`).
    #[serde(default)]
    pub token_keyring: bool,
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
         config.toml. Remove `{key}` and run `countersign backend set-token {backend}` (OS \
         keyring), or set `token_env = \"VAR\"` with the token in $VAR"
    )]
    SecretInFile {
        path: PathBuf,
        backend: String,
        key: String,
    },
    #[error("backend `{backend}`: environment variable `{var}` (token_env) is not set")]
    MissingToken { backend: String, var: String },
    #[error(
        "backend `{backend}`: no token in the OS keyring; run `countersign backend set-token \
         {backend}`"
    )]
    MissingKeyringToken { backend: String },
    #[error("backend `{backend}`: {source}")]
    Keyring {
        backend: String,
        source: SecretError,
    },
}

impl ConfigError {
    /// A stable code for the UI and scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken { .. } | Self::MissingKeyringToken { .. } => "missing_token",
            Self::Keyring { source, .. } => source.code(),
            _ => "config",
        }
    }
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
            if !valid_backend_name(&b.name) {
                return Err(invalid(format!(
                    "backend name `{}` must be letters, digits, - or _",
                    b.name
                )));
            }
            if !seen.insert(b.name.as_str()) {
                return Err(invalid(format!("backend name `{}` is used twice", b.name)));
            }
            if b.token_keyring && b.token_env.is_some() {
                return Err(invalid(format!(
                    "backend `{}`: set either `token_env` or `token_keyring`, not both",
                    b.name
                )));
            }
        }
        Ok(config)
    }
}

/// Backend names: letters, digits, `-` and `_` (they are part of every action key).
pub fn valid_backend_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl BackendConfig {
    /// The token from the environment (`token_env`); `None` for a keyring token or none.
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

    /// The token, read from where the config says it lives: `token_env`, the keyring
    /// (`token_keyring`), or none.
    pub fn token_from(
        &self,
        tokens: &dyn TokenStore,
    ) -> Result<Option<Zeroizing<String>>, ConfigError> {
        if !self.token_keyring {
            return Ok(self.token()?.map(Zeroizing::new));
        }
        match tokens.get(&self.name) {
            Ok(Some(token)) if !token.is_empty() => Ok(Some(token)),
            Ok(_) => Err(ConfigError::MissingKeyringToken {
                backend: self.name.clone(),
            }),
            Err(source) => Err(ConfigError::Keyring {
                backend: self.name.clone(),
                source,
            }),
        }
    }
}

/// Edits of `config.toml` that keep the person's comments, order and layout.
pub mod edit {
    use std::path::Path;

    use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, Value};

    use super::{Config, ConfigError, SECRET_KEYS};

    /// Where a new backend's token comes from.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum TokenSource {
        /// `token_keyring = true`: the OS keyring (`countersign backend set-token`).
        Keyring,
        /// `token_env = "VAR"`.
        Env(String),
        /// No token (an exec plugin that needs none, a server without auth).
        None,
    }

    /// A `[[backend]]` entry to append.
    #[derive(Debug, Clone)]
    pub struct NewBackend {
        pub name: String,
        pub kind: String,
        pub url: Option<String>,
        pub command: Vec<String>,
        /// `key=value` settings for `[backend.options]`; a value is a TOML literal when it
        /// parses as one (`15`, `true`, `"x"`), a string otherwise.
        pub options: Vec<(String, String)>,
        pub token: TokenSource,
    }

    fn invalid(path: &Path, detail: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: path.to_owned(),
            detail: detail.into(),
        }
    }

    fn parse_doc(path: &Path, text: &str) -> Result<DocumentMut, ConfigError> {
        text.parse::<DocumentMut>()
            .map_err(|e| invalid(path, e.message().to_owned()))
    }

    fn backends_mut<'a>(
        path: &Path,
        doc: &'a mut DocumentMut,
    ) -> Result<Option<&'a mut ArrayOfTables>, ConfigError> {
        match doc.get_mut("backend") {
            None => Ok(None),
            Some(item) => item
                .as_array_of_tables_mut()
                .map(Some)
                .ok_or_else(|| invalid(path, "`backend` must be [[backend]] tables")),
        }
    }

    fn entry_name(t: &Table) -> Option<&str> {
        t.get("name").and_then(Item::as_str)
    }

    /// Whether an option key looks like it would hold a secret.
    pub fn is_secret_key(key: &str) -> bool {
        let k = key.to_ascii_lowercase();
        SECRET_KEYS.contains(&k.as_str())
            || ["token", "password", "secret", "api_key", "apikey"]
                .iter()
                .any(|s| k.contains(s))
    }

    fn option_value(raw: &str) -> Value {
        match raw.parse::<Value>() {
            // A bare word like `abc` does not parse; keep it as the string it is.
            Ok(v) if !v.is_inline_table() => {
                let mut v = v;
                v.decor_mut().clear();
                v
            }
            _ => Value::from(raw),
        }
    }

    /// `text` with `new` appended as a `[[backend]]` entry; refuses a duplicate name and
    /// anything [`Config::parse`] would refuse. Returns the new text and the parsed config.
    pub fn add_backend(
        path: &Path,
        text: &str,
        new: &NewBackend,
    ) -> Result<(String, Config), ConfigError> {
        if !text.trim().is_empty() {
            let current = Config::parse(path, text)?;
            if current.backends.iter().any(|b| b.name == new.name) {
                return Err(invalid(
                    path,
                    format!(
                        "a backend named `{}` already exists (`countersign backend remove {}` \
                         first to replace it)",
                        new.name, new.name
                    ),
                ));
            }
        }
        let mut doc = parse_doc(path, text)?;
        let mut table = Table::new();
        table.insert("name", toml_edit::value(new.name.as_str()));
        table.insert("kind", toml_edit::value(new.kind.as_str()));
        if let Some(url) = &new.url {
            table.insert("url", toml_edit::value(url.as_str()));
        }
        if !new.command.is_empty() {
            let array: toml_edit::Array = new.command.iter().map(String::as_str).collect();
            table.insert("command", toml_edit::value(array));
        }
        match &new.token {
            TokenSource::Keyring => {
                table.insert("token_keyring", toml_edit::value(true));
            }
            TokenSource::Env(var) => {
                table.insert("token_env", toml_edit::value(var.as_str()));
            }
            TokenSource::None => {}
        }
        if !new.options.is_empty() {
            let mut options = Table::new();
            for (key, raw) in &new.options {
                if key.is_empty() {
                    return Err(invalid(path, "an option needs a name: --option key=value"));
                }
                if is_secret_key(key) {
                    return Err(invalid(
                        path,
                        format!(
                            "option `{key}` looks like a secret; secrets never go in \
                             config.toml: run `countersign backend set-token {}`",
                            new.name
                        ),
                    ));
                }
                if options.contains_key(key) {
                    return Err(invalid(path, format!("option `{key}` is given twice")));
                }
                options.insert(key, toml_edit::value(option_value(raw)));
            }
            table.insert("options", Item::Table(options));
        }
        // Appended as text, so the file before it stays byte for byte what it was.
        let _ = backends_mut(path, &mut doc)?;
        let mut entry = DocumentMut::new();
        let mut array = ArrayOfTables::new();
        array.push(table);
        entry.insert("backend", Item::ArrayOfTables(array));
        let mut out = text.to_owned();
        if !out.is_empty() {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push('\n');
        }
        out.push_str(&entry.to_string());
        let config = Config::parse(path, &out)?;
        Ok((out, config))
    }

    /// `text` without the `[[backend]]` entry named `name`.
    pub fn remove_backend(path: &Path, text: &str, name: &str) -> Result<String, ConfigError> {
        let mut doc = parse_doc(path, text)?;
        let array = backends_mut(path, &mut doc)?
            .ok_or_else(|| invalid(path, format!("no backend named `{name}`")))?;
        let index = array
            .iter()
            .position(|t| entry_name(t) == Some(name))
            .ok_or_else(|| invalid(path, format!("no backend named `{name}`")))?;
        array.remove(index);
        if array.is_empty() {
            doc.remove("backend");
        }
        Ok(doc.to_string())
    }

    /// `text` with `token_keyring = true` on backend `name` (unless it takes its token
    /// from `token_env`, which is refused: one backend, one place for its token).
    /// Returns `None` when it already says so.
    pub fn use_keyring_token(
        path: &Path,
        text: &str,
        name: &str,
    ) -> Result<Option<String>, ConfigError> {
        let mut doc = parse_doc(path, text)?;
        let array = backends_mut(path, &mut doc)?
            .ok_or_else(|| invalid(path, format!("no backend named `{name}`")))?;
        let table = array
            .iter_mut()
            .find(|t| entry_name(t) == Some(name))
            .ok_or_else(|| invalid(path, format!("no backend named `{name}`")))?;
        if let Some(var) = table.get("token_env").and_then(Item::as_str) {
            return Err(invalid(
                path,
                format!(
                    "backend `{name}` reads its token from ${var} (token_env); remove \
                     `token_env` from its entry to keep the token in the OS keyring instead"
                ),
            ));
        }
        if table.get("token_keyring").and_then(Item::as_bool) == Some(true) {
            return Ok(None);
        }
        table.insert("token_keyring", toml_edit::value(true));
        Ok(Some(doc.to_string()))
    }

    /// Writes the config through a temporary file and a rename, creating its directory,
    /// so a crash never leaves half a file.
    pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        std::fs::write(&tmp, text)?;
        if let Ok(meta) = std::fs::metadata(path) {
            let _ = std::fs::set_permissions(&tmp, meta.permissions());
        }
        std::fs::rename(&tmp, path)
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

    mod editing {
        use super::super::edit::*;
        use super::*;

        const FILE: &str = "# my approvals\napprover = \"ana@example.com\" # me\n\n\
            # production\n[[backend]]\nname = \"prod\"   # the big one\nkind = \"countersign\"\n\
            url = \"http://127.0.0.1:9\"\ntoken_env = \"PROD_TOKEN\"\n\n# staging, below\n";

        fn new(name: &str) -> NewBackend {
            NewBackend {
                name: name.into(),
                kind: "hoop".into(),
                url: Some("https://hoop.example.com".into()),
                command: Vec::new(),
                options: vec![
                    ("reviewer_email".into(), "ana@example.com".into()),
                    ("page_size".into(), "50".into()),
                ],
                token: TokenSource::Keyring,
            }
        }

        #[test]
        fn adding_keeps_comments_and_layout() {
            let path = Path::new("c.toml");
            let (out, config) = add_backend(path, FILE, &new("hoop")).unwrap();
            assert!(out.starts_with(FILE), "{out}");
            assert!(out.contains("name = \"prod\"   # the big one"), "{out}");
            assert!(out.contains("\n[[backend]]\nname = \"hoop\""), "{out}");
            assert!(out.contains("[backend.options]"), "{out}");
            assert_eq!(config.backends.len(), 2);
            let hoop = &config.backends[1];
            assert!(hoop.token_keyring);
            assert_eq!(hoop.options["page_size"].as_integer(), Some(50));
            assert_eq!(
                hoop.options["reviewer_email"].as_str(),
                Some("ana@example.com")
            );
        }

        #[test]
        fn adding_to_an_empty_file_and_one_without_final_newline() {
            let path = Path::new("c.toml");
            let (out, config) = add_backend(path, "", &new("a")).unwrap();
            assert!(out.starts_with("[[backend]]\nname = \"a\""), "{out}");
            assert_eq!(config.backends.len(), 1);
            let (out, _) = add_backend(path, "approver = \"x\"", &new("b")).unwrap();
            assert!(out.starts_with("approver = \"x\"\n"), "{out}");
        }

        #[test]
        fn refuses_duplicates_bad_names_and_secret_options() {
            let path = Path::new("c.toml");
            let e = add_backend(path, FILE, &new("prod"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("already exists"), "{e}");
            assert!(add_backend(path, FILE, &new("a/b")).is_err());
            let mut secret = new("x");
            secret.options.push(("api_token".into(), "hunter2".into()));
            let e = add_backend(path, FILE, &secret).unwrap_err().to_string();
            assert!(e.contains("set-token") && !e.contains("hunter2"), "{e}");
        }

        #[test]
        fn removing_keeps_the_rest() {
            let path = Path::new("c.toml");
            let (two, _) = add_backend(path, FILE, &new("hoop")).unwrap();
            let out = remove_backend(path, &two, "hoop").unwrap();
            assert!(
                out.contains("# production") && out.contains("# the big one"),
                "{out}"
            );
            assert!(!out.contains("hoop"), "{out}");
            let out = remove_backend(path, &two, "prod").unwrap();
            assert!(
                out.contains("# my approvals") && out.contains("approver"),
                "{out}"
            );
            assert!(!out.contains("PROD_TOKEN"), "{out}");
            assert_eq!(Config::parse(path, &out).unwrap().backends[0].name, "hoop");
            assert!(remove_backend(path, &two, "nope")
                .unwrap_err()
                .to_string()
                .contains("no backend named `nope`"));
        }

        #[test]
        fn keyring_marker_is_set_once_and_never_beside_token_env() {
            let path = Path::new("c.toml");
            let text = "[[backend]] # x\nname = \"e\"\nkind = \"exec\"\ncommand = [\"p\"]\n";
            let out = use_keyring_token(path, text, "e").unwrap().unwrap();
            assert!(
                out.contains("# x") && out.contains("token_keyring = true"),
                "{out}"
            );
            assert!(use_keyring_token(path, &out, "e").unwrap().is_none());
            assert!(use_keyring_token(path, FILE, "prod")
                .unwrap_err()
                .to_string()
                .contains("token_env"));
        }

        #[test]
        fn keyring_tokens_come_from_the_store() {
            use crate::secrets::{MemoryTokenStore, TokenStore};
            let b = BackendConfig {
                name: "k".into(),
                token_keyring: true,
                ..Default::default()
            };
            let store = MemoryTokenStore::default();
            let e = b.token_from(&store).unwrap_err();
            assert_eq!(e.code(), "missing_token");
            assert!(
                e.to_string().contains("countersign backend set-token k"),
                "{e}"
            );
            store.set("k", "s3cret").unwrap();
            assert_eq!(b.token_from(&store).unwrap().unwrap().as_str(), "s3cret");
            let none = BackendConfig::default();
            assert!(none.token_from(&store).unwrap().is_none());
        }
    }
}
