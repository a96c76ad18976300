//! Backend tokens kept in the OS keyring (service `countersign`, entry
//! `backend-token:<name>`), for backends configured with `token_keyring = true`.
//!
//! Like the signing key there is no file fallback: a keyring that is missing or locked is
//! an error that says what to start or unlock. Tokens are never part of an error message.

use thiserror::Error;
use zeroize::Zeroizing;

use crate::signer::KEYRING_SERVICE;

/// Prefix of a backend token's keyring entry.
pub const TOKEN_ENTRY_PREFIX: &str = "backend-token:";

#[derive(Debug, Error)]
pub enum SecretError {
    #[error(
        "no OS keyring is reachable ({0}). Backend tokens are kept only there: start a \
         Secret Service (e.g. `gnome-keyring-daemon --components=secrets`) in this session, \
         or unlock your keyring, and try again"
    )]
    Unavailable(String),
    #[error("the OS keyring refused access ({0}); unlock it and try again")]
    Locked(String),
}

impl SecretError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "keyring_unavailable",
            Self::Locked(_) => "keyring_locked",
        }
    }
}

/// Where backend tokens live. The OS keyring in the product; tests of pure logic may use
/// [`MemoryTokenStore`].
pub trait TokenStore: Send + Sync {
    fn get(&self, backend: &str) -> Result<Option<Zeroizing<String>>, SecretError>;
    fn set(&self, backend: &str, token: &str) -> Result<(), SecretError>;
    /// Deletes the token; `Ok(false)` when there was none.
    fn delete(&self, backend: &str) -> Result<bool, SecretError>;
    /// The keyring entry (user name) a backend's token is kept under.
    fn entry_name(&self, backend: &str) -> String;
}

/// The OS keyring through the `keyring` crate.
pub struct OsTokenStore {
    service: String,
    /// Prepended to each entry name, so separate identities (and parallel tests) keep
    /// separate tokens.
    scope: Option<String>,
}

impl OsTokenStore {
    /// Entries `backend-token:<name>`, or `<scope>/backend-token:<name>` when
    /// `COUNTERSIGN_KEYRING_ENTRY` names a separate identity (as it does for the signing key).
    pub fn from_env() -> Self {
        let scope = std::env::var("COUNTERSIGN_KEYRING_ENTRY")
            .ok()
            .filter(|s| !s.is_empty());
        Self::with_scope(scope)
    }

    pub fn with_scope(scope: Option<String>) -> Self {
        Self {
            service: KEYRING_SERVICE.to_owned(),
            scope,
        }
    }

    fn entry(&self, backend: &str) -> Result<keyring::Entry, SecretError> {
        keyring::Entry::new(&self.service, &self.entry_name(backend)).map_err(keyring_error)
    }
}

impl Default for OsTokenStore {
    fn default() -> Self {
        Self::from_env()
    }
}

fn keyring_error(e: keyring::Error) -> SecretError {
    match e {
        keyring::Error::NoStorageAccess(inner) => SecretError::Locked(inner.to_string()),
        keyring::Error::PlatformFailure(inner) => SecretError::Unavailable(inner.to_string()),
        other => SecretError::Unavailable(other.to_string()),
    }
}

impl TokenStore for OsTokenStore {
    fn get(&self, backend: &str) -> Result<Option<Zeroizing<String>>, SecretError> {
        match self.entry(backend)?.get_password() {
            Ok(token) => Ok(Some(Zeroizing::new(token))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(keyring_error(e)),
        }
    }

    fn set(&self, backend: &str, token: &str) -> Result<(), SecretError> {
        self.entry(backend)?
            .set_password(token)
            .map_err(keyring_error)
    }

    fn delete(&self, backend: &str) -> Result<bool, SecretError> {
        match self.entry(backend)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(e) => Err(keyring_error(e)),
        }
    }

    fn entry_name(&self, backend: &str) -> String {
        match &self.scope {
            Some(scope) => format!("{scope}/{TOKEN_ENTRY_PREFIX}{backend}"),
            None => format!("{TOKEN_ENTRY_PREFIX}{backend}"),
        }
    }
}

/// In-memory tokens, for unit tests of pure logic only.
#[derive(Default)]
pub struct MemoryTokenStore(
    std::sync::Mutex<std::collections::BTreeMap<String, Zeroizing<String>>>,
);

impl TokenStore for MemoryTokenStore {
    fn get(&self, backend: &str) -> Result<Option<Zeroizing<String>>, SecretError> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map.get(backend).cloned())
    }

    fn set(&self, backend: &str, token: &str) -> Result<(), SecretError> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(backend.to_owned(), Zeroizing::new(token.to_owned()));
        Ok(())
    }

    fn delete(&self, backend: &str) -> Result<bool, SecretError> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map.remove(backend).is_some())
    }

    fn entry_name(&self, backend: &str) -> String {
        format!("{TOKEN_ENTRY_PREFIX}{backend}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_scoped() {
        assert_eq!(
            OsTokenStore::with_scope(None).entry_name("prod"),
            "backend-token:prod"
        );
        assert_eq!(
            OsTokenStore::with_scope(Some("test-x".into())).entry_name("prod"),
            "test-x/backend-token:prod"
        );
    }

    #[test]
    fn memory_store_round_trips() {
        let s = MemoryTokenStore::default();
        assert!(s.get("a").unwrap().is_none());
        s.set("a", "t").unwrap();
        assert_eq!(
            s.get("a").unwrap().as_deref().map(String::as_str),
            Some("t")
        );
        assert!(s.delete("a").unwrap());
        assert!(!s.delete("a").unwrap());
    }
}
