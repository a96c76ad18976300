//! Backend administration and settings, shared by `countersign backend …` and the window's
//! settings view: add (checked per kind before anything is written), edit, test ("connect
//! and list now"), remove, store a token, and the approver and `[notifications]`
//! preferences.
//!
//! The config file is edited in place, keeping the person's comments and layout (see
//! [`crate::config::edit`]); it is written through a temporary file and a rename. Tokens
//! go only to the [`TokenStore`] (the OS keyring in the product): they are never returned,
//! logged, written to a file or part of an error message.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use toml_edit::{DocumentMut, Item, Table};

use crate::backends::{self, BuildError, Limits, ListOutcome, SyncCursor};
use crate::config::edit::{self, NewBackend, TokenSource};
use crate::config::{self, BackendConfig, Config, ConfigError, NotificationsConfig};
use crate::model::ActionStatus;
use crate::secrets::{SecretError, TokenStore};

/// Every kind `backends::build` knows, in the order a form offers them.
pub const KINDS: &[&str] = &[
    backends::countersign::KIND,
    backends::hoop::KIND,
    backends::github::KIND,
    backends::prefect::KIND,
    backends::airflow::KIND,
    backends::exec::KIND,
];

/// Kinds whose `url` may be left out (exec runs a program; GitHub defaults to github.com).
fn url_optional(kind: &str) -> bool {
    kind == backends::exec::KIND || kind == backends::github::KIND
}

/// One field a form got wrong: `field` names the input (`name`, `kind`, `url`, `command`,
/// `token`, `token_env`, `options`, `poll_interval_secs`, `approver`, `dnd_until`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Error)]
pub enum AdminError {
    /// The input was refused before anything was written or stored.
    #[error("{}", .0.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error("no backend named `{name}` in {}", path.display())]
    UnknownBackend { name: String, path: PathBuf },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("backend `{backend}`: {source}")]
    Keyring {
        backend: String,
        source: SecretError,
    },
}

impl AdminError {
    /// A stable code for the UI and scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::UnknownBackend { .. } => "unknown_backend",
            Self::Config(e) => e.code(),
            Self::Write { .. } => "config_write",
            Self::Keyring { source, .. } => source.code(),
        }
    }

    fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }
}

/// Where a backend's token comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum TokenMode {
    /// The OS keyring (`token_keyring = true`).
    Keyring,
    /// An environment variable (`token_env`).
    Env,
    /// No token is sent.
    None,
}

/// One `[backend.options]` setting as text: a TOML literal when it parses as one
/// (`15`, `true`, `["a", "b"]`), a plain string otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct OptionPair {
    pub key: String,
    pub value: String,
}

/// A backend as the settings form sends it (add and edit). The token travels beside it,
/// never inside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct BackendInput {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub url: String,
    /// Program and arguments of an `exec` plugin.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub options: Vec<OptionPair>,
    pub token_mode: TokenMode,
    /// With [`TokenMode::Env`]: the variable's name.
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub poll_interval_secs: Option<u32>,
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// A configured backend as the settings view lists it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct BackendSettings {
    pub name: String,
    pub kind: String,
    pub url: String,
    pub command: Vec<String>,
    pub options: Vec<OptionPair>,
    pub token_mode: TokenMode,
    pub token_env: Option<String>,
    /// With [`TokenMode::Keyring`]: whether the keyring holds a token (never the token).
    pub token_stored: bool,
    pub poll_interval_secs: Option<u32>,
    pub timeout_secs: Option<u32>,
}

/// `[notifications]` as the settings view edits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct NotificationPrefs {
    pub enabled: bool,
    pub muted_backends: Vec<String>,
    /// RFC 3339; `None` when not set.
    pub dnd_until: Option<String>,
    pub default_deny_reason: Option<String>,
    pub close_to_tray: bool,
}

impl From<&NotificationsConfig> for NotificationPrefs {
    fn from(n: &NotificationsConfig) -> Self {
        Self {
            enabled: n.enabled,
            muted_backends: n.muted_backends.clone(),
            dnd_until: n.dnd_until.clone(),
            default_deny_reason: n.default_deny_reason.clone(),
            close_to_tray: n.close_to_tray,
        }
    }
}

/// The approver and the notification preferences, saved together.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Preferences {
    /// `None` or empty: `$USER@host`.
    pub approver: Option<String>,
    pub notifications: NotificationPrefs,
}

/// Everything the settings view shows.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct SettingsView {
    pub config_path: String,
    /// False: no config file yet, so the embedded demo runs; saving anything creates it.
    pub config_exists: bool,
    pub approver: Option<String>,
    /// The approver used when none is set.
    pub default_approver: String,
    pub backends: Vec<BackendSettings>,
    pub notifications: NotificationPrefs,
    pub kinds: Vec<String>,
    /// Keyring entry names are `backend-token:<name>` under this service.
    pub keyring_service: String,
}

/// What a save did.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Saved {
    pub name: String,
    /// The config file did not exist before (the embedded demo stops).
    pub created_config: bool,
    /// A token was stored in the keyring with this save.
    pub token_stored: bool,
}

/// What `remove_backend` did.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Removed {
    pub name: String,
    /// Its token was deleted from the keyring.
    pub token_deleted: bool,
}

/// What `set_token` did.
#[derive(Debug, Clone, Serialize)]
pub struct TokenSet {
    /// `token_keyring = true` was added to the entry.
    pub marker_added: bool,
    /// The keyring entry name (not the token).
    pub entry: String,
}

/// One listed pending action.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct SampleAction {
    pub key: String,
    pub title: String,
}

/// "Connect and list now": what a backend answered.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct TestReport {
    pub backend: String,
    pub kind: String,
    /// Connected, authenticated and listed everything.
    pub ok: bool,
    /// Pending actions listed (`None` when listing failed or the answer was "not modified").
    pub pending: Option<u32>,
    /// Up to ten of them.
    pub sample: Vec<SampleAction>,
    pub error: Option<String>,
    pub error_code: Option<String>,
    /// Part of the backend could not be listed (a GitHub repository gone or forbidden).
    pub partial: Option<String>,
}

fn read_text(path: &Path) -> Result<Option<String>, AdminError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.to_owned(),
            source,
        }
        .into()),
    }
}

fn write(path: &Path, text: &str) -> Result<(), AdminError> {
    edit::write(path, text).map_err(|source| AdminError::Write {
        path: path.to_owned(),
        source,
    })
}

fn load(path: &Path) -> Result<Config, AdminError> {
    Ok(Config::load(path)?.unwrap_or(Config {
        approver: None,
        backends: Vec::new(),
        notifications: NotificationsConfig::default(),
    }))
}

/// The configured backend `name`.
pub fn configured(path: &Path, name: &str) -> Result<BackendConfig, AdminError> {
    load(path)?
        .backends
        .into_iter()
        .find(|b| b.name == name)
        .ok_or_else(|| AdminError::UnknownBackend {
            name: name.to_owned(),
            path: path.to_owned(),
        })
}

fn option_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn secs(v: Option<u64>) -> Option<u32> {
    v.map(|s| u32::try_from(s).unwrap_or(u32::MAX))
}

/// The settings view: the config as it is on disk (never a token).
pub fn settings(path: &Path, tokens: &dyn TokenStore) -> Result<SettingsView, AdminError> {
    let exists = read_text(path)?.is_some();
    let config = load(path)?;
    let backends = config
        .backends
        .iter()
        .map(|b| {
            let token_mode = if b.token_keyring {
                TokenMode::Keyring
            } else if b.token_env.is_some() {
                TokenMode::Env
            } else {
                TokenMode::None
            };
            // Only whether there is one; a keyring that cannot be read counts as none
            // (the backend's own status says why).
            let token_stored =
                b.token_keyring && matches!(tokens.get(&b.name), Ok(Some(t)) if !t.is_empty());
            BackendSettings {
                name: b.name.clone(),
                kind: b.kind.clone(),
                url: b.url.clone(),
                command: b.command.clone(),
                options: b
                    .options
                    .iter()
                    .map(|(k, v)| OptionPair {
                        key: k.clone(),
                        value: option_text(v),
                    })
                    .collect(),
                token_mode,
                token_env: b.token_env.clone(),
                token_stored,
                poll_interval_secs: secs(b.poll_interval_secs),
                timeout_secs: secs(b.timeout_secs),
            }
        })
        .collect();
    Ok(SettingsView {
        config_path: path.display().to_string(),
        config_exists: exists,
        approver: config.approver.clone(),
        default_approver: config::default_approver(),
        backends,
        notifications: NotificationPrefs::from(&config.notifications),
        kinds: KINDS.iter().map(|k| (*k).to_owned()).collect(),
        keyring_service: crate::signer::KEYRING_SERVICE.to_owned(),
    })
}

/// A token as typed or pasted: one line, no spaces or control characters.
pub fn check_token(token: &str) -> Result<&str, AdminError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(AdminError::field("token", "the token is empty"));
    }
    if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(AdminError::field(
            "token",
            "the token must be one line with no spaces or control characters",
        ));
    }
    Ok(token)
}

fn valid_env_name(var: &str) -> bool {
    !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The checks that need no file: name, kind, URL or command, token source, options.
fn check_input(input: &BackendInput, token: Option<&str>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !config::valid_backend_name(&input.name) {
        errors.push(FieldError::new(
            "name",
            if input.name.is_empty() {
                "a backend needs a name".to_owned()
            } else {
                format!(
                    "backend name `{}` must be letters, digits, - or _",
                    input.name
                )
            },
        ));
    }
    if !KINDS.contains(&input.kind.as_str()) {
        errors.push(FieldError::new(
            "kind",
            format!(
                "backend `{}`: unknown kind `{}` (known: {})",
                input.name,
                input.kind,
                KINDS.join(", ")
            ),
        ));
    } else if input.url.trim().is_empty() && !url_optional(&input.kind) {
        errors.push(FieldError::new(
            "url",
            format!("kind `{}` needs a URL", input.kind),
        ));
    }
    if input.kind == backends::exec::KIND
        && input.command.first().is_none_or(|p| p.trim().is_empty())
    {
        errors.push(FieldError::new(
            "command",
            "kind `exec` needs a command (the plugin program and its arguments)",
        ));
    }
    match input.token_mode {
        TokenMode::Env => match input.token_env.as_deref() {
            Some(var) if valid_env_name(var) => {}
            other => errors.push(FieldError::new(
                "token_env",
                format!(
                    "`{}` is not an environment variable name (letters, digits, _)",
                    other.unwrap_or_default()
                ),
            )),
        },
        TokenMode::Keyring | TokenMode::None => {}
    }
    if let Some(token) = token {
        if input.token_mode != TokenMode::Keyring {
            errors.push(FieldError::new(
                "token",
                "a token typed here is kept in the OS keyring: choose the keyring as its place",
            ));
        } else if let Err(AdminError::Invalid(mut e)) = check_token(token) {
            errors.append(&mut e);
        }
    }
    let mut seen = std::collections::HashSet::new();
    for o in &input.options {
        let key = o.key.trim();
        if key.is_empty() {
            errors.push(FieldError::new("options", "an option needs a name"));
        } else if edit::is_secret_key(key) {
            // The value is not repeated: it may be the secret.
            errors.push(FieldError::new(
                &format!("option:{key}"),
                format!(
                    "option `{key}` looks like a secret; secrets never go in config.toml: \
                     use the token field (OS keyring) or `countersign backend set-token {}`",
                    input.name
                ),
            ));
        } else if !seen.insert(key) {
            errors.push(FieldError::new(
                &format!("option:{key}"),
                format!("option `{key}` is given twice"),
            ));
        }
    }
    if input.poll_interval_secs == Some(0) {
        errors.push(FieldError::new(
            "poll_interval_secs",
            "the poll interval is at least 1 second",
        ));
    }
    if input.timeout_secs == Some(0) {
        errors.push(FieldError::new(
            "timeout_secs",
            "the timeout is at least 1 second",
        ));
    }
    errors
}

/// What the engine would do with the entry, minus the network: a bad URL or option is
/// refused here rather than at the next sync.
fn check_buildable(entry: &BackendConfig) -> Result<(), AdminError> {
    let Err(e) = backends::build(entry, Some("validation-only".into()), Limits::default()) else {
        return Ok(());
    };
    // The kind's own message names what is wrong; the field is where the form shows it.
    let field = match &e {
        BuildError::UnknownKind { .. } => "kind",
        BuildError::Invalid { detail, .. } if detail.contains("url") || detail.contains("URL") => {
            "url"
        }
        BuildError::Invalid { detail, .. } if detail.contains("command") => "command",
        BuildError::Invalid { .. } => "options",
    };
    Err(AdminError::field(field, e.to_string()))
}

fn token_source(input: &BackendInput) -> TokenSource {
    match input.token_mode {
        TokenMode::Keyring => TokenSource::Keyring,
        TokenMode::Env => TokenSource::Env(input.token_env.clone().unwrap_or_default()),
        TokenMode::None => TokenSource::None,
    }
}

fn new_backend(input: &BackendInput) -> NewBackend {
    NewBackend {
        name: input.name.clone(),
        kind: input.kind.clone(),
        url: Some(input.url.trim().to_owned()).filter(|u| !u.is_empty()),
        command: input.command.clone(),
        options: input
            .options
            .iter()
            .map(|o| (o.key.trim().to_owned(), o.value.clone()))
            .collect(),
        token: token_source(input),
    }
}

/// Puts the poll interval and timeout into entry `name` of `text`.
fn with_intervals(path: &Path, text: &str, input: &BackendInput) -> Result<String, AdminError> {
    if input.poll_interval_secs.is_none() && input.timeout_secs.is_none() {
        return Ok(text.to_owned());
    }
    let mut doc = parse_doc(path, text)?;
    let table = entry_mut(path, &mut doc, &input.name)?;
    set_or_remove(table, "poll_interval_secs", input.poll_interval_secs);
    set_or_remove(table, "timeout_secs", input.timeout_secs);
    Ok(doc.to_string())
}

fn set_or_remove(table: &mut Table, key: &str, value: Option<u32>) {
    match value {
        Some(v) => {
            table.insert(key, toml_edit::value(i64::from(v)));
        }
        None => {
            table.remove(key);
        }
    }
}

fn parse_doc(path: &Path, text: &str) -> Result<DocumentMut, AdminError> {
    text.parse::<DocumentMut>().map_err(|e| {
        ConfigError::Invalid {
            path: path.to_owned(),
            detail: e.message().to_owned(),
        }
        .into()
    })
}

fn entry_mut<'a>(
    path: &Path,
    doc: &'a mut DocumentMut,
    name: &str,
) -> Result<&'a mut Table, AdminError> {
    doc.get_mut("backend")
        .and_then(Item::as_array_of_tables_mut)
        .and_then(|a| {
            a.iter_mut()
                .find(|t| t.get("name").and_then(Item::as_str) == Some(name))
        })
        .ok_or_else(|| AdminError::UnknownBackend {
            name: name.to_owned(),
            path: path.to_owned(),
        })
}

/// Stores `token` for `name` (already checked).
fn store_token(tokens: &dyn TokenStore, name: &str, token: &str) -> Result<(), AdminError> {
    tokens
        .set(name, token)
        .map_err(|source| AdminError::Keyring {
            backend: name.to_owned(),
            source,
        })
}

/// Adds a `[[backend]]` (creating the config file when there is none), after checking
/// it the way the engine will build it. With `token`, the token goes to the keyring
/// (before the file is written, so a keyring failure leaves the file as it was).
pub fn add_backend(
    path: &Path,
    input: &BackendInput,
    token: Option<&str>,
    tokens: &dyn TokenStore,
) -> Result<Saved, AdminError> {
    let mut errors = check_input(input, token);
    let existing = read_text(path)?;
    let text = existing.clone().unwrap_or_default();
    if !text.trim().is_empty() {
        let current = Config::parse(path, &text)?;
        if current.backends.iter().any(|b| b.name == input.name) {
            errors.push(FieldError::new(
                "name",
                format!("a backend named `{}` already exists", input.name),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(AdminError::Invalid(errors));
    }
    let (out, _) = edit::add_backend(path, &text, &new_backend(input))?;
    let out = with_intervals(path, &out, input)?;
    let config = Config::parse(path, &out)?;
    let entry = config
        .backends
        .iter()
        .find(|b| b.name == input.name)
        .ok_or_else(|| AdminError::field("name", "the new entry did not parse back"))?;
    check_buildable(entry)?;
    let token = token.map(check_token).transpose()?;
    if let Some(token) = token {
        store_token(tokens, &input.name, token)?;
    }
    if let Err(e) = write(path, &out) {
        if token.is_some() {
            // Nothing refers to it now; do not leave a secret behind.
            let _ = tokens.delete(&input.name);
        }
        return Err(e);
    }
    Ok(Saved {
        name: input.name.clone(),
        created_config: existing.is_none(),
        token_stored: token.is_some(),
    })
}

/// Changes an existing backend's URL, command, options, token source, poll interval and
/// timeout. The name and kind stay (the name is part of every action key): remove and
/// add to change them. With `token`, the keyring token is replaced; moving the token
/// out of the keyring deletes the one kept there.
pub fn edit_backend(
    path: &Path,
    input: &BackendInput,
    token: Option<&str>,
    tokens: &dyn TokenStore,
) -> Result<Saved, AdminError> {
    let current = configured(path, &input.name)?;
    let mut errors = check_input(input, token);
    if current.kind != input.kind {
        errors.push(FieldError::new(
            "kind",
            format!(
                "backend `{}` is of kind `{}`; remove it and add a new one to change the kind",
                input.name, current.kind
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(AdminError::Invalid(errors));
    }
    let text = read_text(path)?.unwrap_or_default();
    let mut doc = parse_doc(path, &text)?;
    let table = entry_mut(path, &mut doc, &input.name)?;
    let url = input.url.trim();
    if url.is_empty() {
        table.remove("url");
    } else {
        table.insert("url", toml_edit::value(url));
    }
    if input.command.is_empty() {
        table.remove("command");
    } else {
        let array: toml_edit::Array = input.command.iter().map(String::as_str).collect();
        table.insert("command", toml_edit::value(array));
    }
    match input.token_mode {
        TokenMode::Keyring => {
            table.remove("token_env");
            table.insert("token_keyring", toml_edit::value(true));
        }
        TokenMode::Env => {
            table.remove("token_keyring");
            let var = input.token_env.clone().unwrap_or_default();
            table.insert("token_env", toml_edit::value(var));
        }
        TokenMode::None => {
            table.remove("token_keyring");
            table.remove("token_env");
        }
    }
    set_or_remove(table, "poll_interval_secs", input.poll_interval_secs);
    set_or_remove(table, "timeout_secs", input.timeout_secs);
    // Options are rebuilt through the same parser `add` uses, then swapped in whole.
    let probe = NewBackend {
        command: Vec::new(),
        token: TokenSource::None,
        ..new_backend(input)
    };
    let (probe_text, _) = edit::add_backend(path, "", &probe)?;
    let probe_doc = parse_doc(path, &probe_text)?;
    let options = probe_doc
        .get("backend")
        .and_then(Item::as_array_of_tables)
        .and_then(|a| a.get(0))
        .and_then(|t| t.get("options"))
        .cloned();
    match options {
        Some(options) => {
            table.insert("options", options);
        }
        None => {
            table.remove("options");
        }
    }
    let out = doc.to_string();
    let config = Config::parse(path, &out)?;
    let entry = config
        .backends
        .iter()
        .find(|b| b.name == input.name)
        .ok_or_else(|| AdminError::field("name", "the entry did not parse back"))?;
    check_buildable(entry)?;
    let token = token.map(check_token).transpose()?;
    if let Some(token) = token {
        store_token(tokens, &input.name, token)?;
    }
    write(path, &out)?;
    if current.token_keyring && input.token_mode != TokenMode::Keyring {
        // The entry no longer reads it; a failure only leaves an unused entry behind.
        if let Err(e) = tokens.delete(&input.name) {
            tracing::warn!(
                "backend `{}`: old keyring token not deleted: {e}",
                input.name
            );
        }
    }
    Ok(Saved {
        name: input.name.clone(),
        created_config: false,
        token_stored: token.is_some(),
    })
}

/// Removes a backend from the config and deletes its keyring token. Its actions stay in
/// the local history.
pub fn remove_backend(
    path: &Path,
    name: &str,
    tokens: &dyn TokenStore,
) -> Result<Removed, AdminError> {
    let b = configured(path, name)?;
    let text = read_text(path)?.unwrap_or_default();
    let out = edit::remove_backend(path, &text, name)?;
    write(path, &out)?;
    let token_deleted = match tokens.delete(name) {
        Ok(deleted) => deleted,
        // A backend that never kept its token there does not need the keyring.
        Err(_) if !b.token_keyring => false,
        Err(source) => {
            return Err(AdminError::Keyring {
                backend: name.to_owned(),
                source,
            })
        }
    };
    Ok(Removed {
        name: name.to_owned(),
        token_deleted,
    })
}

/// Keeps `token` in the keyring for backend `name` and marks its entry
/// `token_keyring = true` (refused when it reads its token from `token_env`).
pub fn set_token(
    path: &Path,
    name: &str,
    token: &str,
    tokens: &dyn TokenStore,
) -> Result<TokenSet, AdminError> {
    configured(path, name)?;
    let text = read_text(path)?.unwrap_or_default();
    // Refused before the keyring is touched when the backend reads it from elsewhere.
    let marked = edit::use_keyring_token(path, &text, name)?;
    let token = check_token(token)?;
    store_token(tokens, name, token)?;
    if let Some(out) = &marked {
        write(path, out)?;
    }
    Ok(TokenSet {
        marker_added: marked.is_some(),
        entry: tokens.entry_name(name),
    })
}

/// Saves the approver and `[notifications]`, keeping the rest of the file. Returns
/// whether the file changed (the caller then applies it); with no config file and
/// nothing but defaults, no file is created (that would stop the embedded demo).
pub fn save_preferences(path: &Path, prefs: &Preferences) -> Result<bool, AdminError> {
    let mut errors = Vec::new();
    let approver = prefs
        .approver
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty());
    if approver.is_some_and(|a| a.chars().any(char::is_control)) {
        errors.push(FieldError::new(
            "approver",
            "the approver is one line of text",
        ));
    }
    let dnd = prefs
        .notifications
        .dnd_until
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty());
    if let Some(d) = dnd {
        if chrono::DateTime::parse_from_rfc3339(d).is_err() {
            errors.push(FieldError::new(
                "dnd_until",
                format!("`{d}` is not a time like 2026-11-25T18:00:00Z"),
            ));
        }
    }
    let deny = prefs
        .notifications
        .default_deny_reason
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty());
    let existing = read_text(path)?;
    let text = existing.clone().unwrap_or_default();
    let known: Vec<String> = load(path)?.backends.into_iter().map(|b| b.name).collect();
    for m in &prefs.notifications.muted_backends {
        if !known.contains(m) {
            errors.push(FieldError::new(
                "muted_backends",
                format!("no backend named `{m}` to mute"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(AdminError::Invalid(errors));
    }
    let mut doc = parse_doc(path, &text)?;
    match approver {
        Some(a) => {
            doc.insert("approver", toml_edit::value(a));
        }
        None => {
            doc.remove("approver");
        }
    }
    let defaults = NotificationsConfig::default();
    let n = &prefs.notifications;
    let table = doc
        .entry("notifications")
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| AdminError::field("notifications", "`notifications` must be a table"))?;
    // Defaults are left out so a fresh file stays short; a key already there is kept.
    let put_bool = |t: &mut Table, key: &str, v: bool, default: bool| {
        if v != default || t.contains_key(key) {
            t.insert(key, toml_edit::value(v));
        }
    };
    put_bool(table, "enabled", n.enabled, defaults.enabled);
    put_bool(
        table,
        "close_to_tray",
        n.close_to_tray,
        defaults.close_to_tray,
    );
    if n.muted_backends.is_empty() {
        table.remove("muted_backends");
    } else {
        let array: toml_edit::Array = n.muted_backends.iter().map(String::as_str).collect();
        table.insert("muted_backends", toml_edit::value(array));
    }
    match dnd {
        Some(d) => {
            table.insert("dnd_until", toml_edit::value(d));
        }
        None => {
            table.remove("dnd_until");
        }
    }
    match deny {
        Some(d) => {
            table.insert("default_deny_reason", toml_edit::value(d));
        }
        None => {
            table.remove("default_deny_reason");
        }
    }
    if table.is_empty() {
        doc.remove("notifications");
    }
    let out = doc.to_string();
    Config::parse(path, &out)?;
    if existing.as_deref() == Some(out.as_str()) {
        return Ok(false);
    }
    if existing.is_none() && out.trim().is_empty() {
        // Nothing to say: do not create a file (that would stop the embedded demo).
        return Ok(false);
    }
    write(path, &out)?;
    Ok(true)
}

/// Connects, authenticates and lists once with the configured backend `name`.
pub async fn test_backend(
    path: &Path,
    name: &str,
    tokens: &dyn TokenStore,
) -> Result<TestReport, AdminError> {
    let b = configured(path, name)?;
    Ok(test_config(&b, tokens).await)
}

/// [`test_backend`] for a config entry already read.
pub async fn test_config(b: &BackendConfig, tokens: &dyn TokenStore) -> TestReport {
    let mut report = TestReport {
        backend: b.name.clone(),
        kind: b.kind.clone(),
        ok: false,
        pending: None,
        sample: Vec::new(),
        error: None,
        error_code: None,
        partial: None,
    };
    let mut limits = Limits::default();
    if let Some(secs) = b.timeout_secs {
        limits.request_timeout = std::time::Duration::from_secs(secs.max(1));
    }
    let outcome = match b.token_from(tokens) {
        Err(e) => Err((e.to_string(), e.code())),
        Ok(token) => match backends::build(b, token.map(|t| String::clone(&t)), limits) {
            Err(e) => Err((e.to_string(), "backend_config")),
            Ok(backend) => {
                let listed = backend
                    .list_pending(&SyncCursor::default())
                    .await
                    .map_err(|e| (e.to_string(), e.code()));
                report.partial = backend.take_partial_failure().map(|e| e.to_string());
                listed
            }
        },
    };
    match outcome {
        Ok(ListOutcome::Listed { actions, .. }) => {
            let pending: Vec<_> = actions
                .iter()
                .filter(|a| a.action.snapshot.status == ActionStatus::Pending)
                .collect();
            report.pending = Some(u32::try_from(pending.len()).unwrap_or(u32::MAX));
            report.sample = pending
                .iter()
                .take(10)
                .map(|a| SampleAction {
                    key: a.action.key.to_string(),
                    title: a.action.snapshot.title.clone(),
                })
                .collect();
            // Listed, but not all of it: the configuration needs fixing, so it fails.
            report.ok = report.partial.is_none();
        }
        // Impossible without an ETag sent; reported rather than a guessed count.
        Ok(ListOutcome::NotModified) => report.ok = true,
        Err((message, code)) => {
            report.error = Some(message);
            report.error_code = Some(code.to_owned());
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::MemoryTokenStore;

    fn input(name: &str, kind: &str, url: &str) -> BackendInput {
        BackendInput {
            name: name.into(),
            kind: kind.into(),
            url: url.into(),
            command: Vec::new(),
            options: Vec::new(),
            token_mode: TokenMode::Keyring,
            token_env: None,
            poll_interval_secs: None,
            timeout_secs: None,
        }
    }

    fn fields(e: AdminError) -> Vec<String> {
        match e {
            AdminError::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn refusals_name_their_field_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let tokens = MemoryTokenStore::default();
        let mut bad = input("a/b", "gitlab", "");
        bad.token_mode = TokenMode::Env;
        bad.token_env = Some("NOT A VAR".into());
        bad.options.push(OptionPair {
            key: "api_token".into(),
            value: "hunter2".into(),
        });
        let e = add_backend(&path, &bad, Some("tok en"), &tokens).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(
            fields(e),
            ["name", "kind", "token_env", "token", "option:api_token"]
        );
        let e = add_backend(&path, &input("p", "hoop", ""), None, &tokens).unwrap_err();
        assert_eq!(fields(e), ["url"]);
        let e = add_backend(&path, &input("p", "exec", ""), None, &tokens).unwrap_err();
        assert_eq!(fields(e), ["command"]);
        let e =
            add_backend(&path, &input("p", "countersign", "ftp://x"), None, &tokens).unwrap_err();
        assert_eq!(fields(e), ["url"]);
        assert!(!path.exists());
        assert!(tokens.get("p").unwrap().is_none());
    }
}
