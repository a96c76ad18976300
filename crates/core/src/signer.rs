//! The decision signing key: Ed25519, made on first use, its private part kept only in
//! the OS keyring (Secret Service on Linux, Keychain, Credential Manager). Signatures
//! are OpenSSH SSHSIG with the namespace `countersign-decision`, so anyone can check one
//! with `ssh-keygen -Y verify` and no Countersign code.
//!
//! There is deliberately no file fallback: a keyring that is missing or locked is an
//! error that says what to start or unlock.

use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};
use thiserror::Error;
use zeroize::Zeroizing;

/// The SSHSIG namespace of decision signatures.
pub const NAMESPACE: &str = "countersign-decision";
/// Keyring service name; the entry's user is [`KEY_ENTRY`].
pub const KEYRING_SERVICE: &str = "countersign";
pub const KEY_ENTRY: &str = "decision-signing-key";

#[derive(Debug, Error)]
pub enum SignerError {
    #[error(
        "no OS keyring is reachable ({0}). Countersign keeps its signing key only there: \
         start a Secret Service (e.g. `gnome-keyring-daemon --components=secrets`) in this \
         session, or unlock your keyring, and try again"
    )]
    KeyringUnavailable(String),
    #[error("the OS keyring refused access ({0}); unlock it and try again")]
    KeyringLocked(String),
    #[error("the signing key in the OS keyring is unreadable: {0}")]
    BadKey(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("bad signature: {0}")]
    BadSignature(String),
}

impl SignerError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::KeyringUnavailable(_) => "keyring_unavailable",
            Self::KeyringLocked(_) => "keyring_locked",
            Self::BadKey(_) => "bad_key",
            Self::Sign(_) => "sign_failed",
            Self::BadSignature(_) => "bad_signature",
        }
    }
}

/// Where the private key lives. The OS keyring in the product; tests of pure logic may
/// use an in-memory one.
pub trait KeyStore: Send + Sync {
    fn load(&self) -> Result<Option<Zeroizing<String>>, SignerError>;
    fn save(&self, secret: &str) -> Result<(), SignerError>;
}

/// The OS keyring through the `keyring` crate.
pub struct OsKeyring {
    service: String,
    user: String,
}

impl OsKeyring {
    pub fn new() -> Self {
        Self::with_names(KEYRING_SERVICE, KEY_ENTRY)
    }

    /// A separate entry (tests use their own so they never touch a person's key).
    pub fn with_names(service: &str, user: &str) -> Self {
        Self {
            service: service.to_owned(),
            user: user.to_owned(),
        }
    }

    fn entry(&self) -> Result<keyring::Entry, SignerError> {
        keyring::Entry::new(&self.service, &self.user).map_err(keyring_error)
    }
}

impl Default for OsKeyring {
    fn default() -> Self {
        Self::new()
    }
}

fn keyring_error(e: keyring::Error) -> SignerError {
    match e {
        keyring::Error::NoStorageAccess(inner) => SignerError::KeyringLocked(inner.to_string()),
        keyring::Error::PlatformFailure(inner) => {
            SignerError::KeyringUnavailable(inner.to_string())
        }
        other => SignerError::KeyringUnavailable(other.to_string()),
    }
}

impl KeyStore for OsKeyring {
    fn load(&self) -> Result<Option<Zeroizing<String>>, SignerError> {
        match self.entry()?.get_password() {
            Ok(secret) => Ok(Some(Zeroizing::new(secret))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(keyring_error(e)),
        }
    }

    fn save(&self, secret: &str) -> Result<(), SignerError> {
        self.entry()?.set_password(secret).map_err(keyring_error)
    }
}

/// A loaded signing key.
pub struct Signer {
    private: PrivateKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private part, not even in debug output.
        f.debug_struct("Signer")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl Signer {
    /// Loads the key from `store`, making and saving a new one on first use. Returns
    /// whether it was created.
    pub fn load_or_create(store: &dyn KeyStore) -> Result<(Self, bool), SignerError> {
        if let Some(pem) = store.load()? {
            let private = PrivateKey::from_openssh(pem.as_bytes())
                .map_err(|e| SignerError::BadKey(e.to_string()))?;
            if private.algorithm() != Algorithm::Ed25519 {
                return Err(SignerError::BadKey(format!(
                    "expected an Ed25519 key, found {}",
                    private.algorithm()
                )));
            }
            return Ok((Self { private }, false));
        }
        let signer = Self::generate()?;
        store.save(&signer.private_openssh()?)?;
        Ok((signer, true))
    }

    /// Makes a new key and saves it over the old one; returns the new signer.
    pub fn rotate(store: &dyn KeyStore) -> Result<Self, SignerError> {
        let signer = Self::generate()?;
        store.save(&signer.private_openssh()?)?;
        Ok(signer)
    }

    fn generate() -> Result<Self, SignerError> {
        let private = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
            .map_err(|e| SignerError::Sign(e.to_string()))?;
        Ok(Self { private })
    }

    fn private_openssh(&self) -> Result<Zeroizing<String>, SignerError> {
        self.private
            .to_openssh(LineEnding::LF)
            .map_err(|e| SignerError::BadKey(e.to_string()))
    }

    pub fn public_key(&self) -> &PublicKey {
        self.private.public_key()
    }

    /// `ssh-ed25519 AAAA… countersign`
    pub fn public_key_openssh(&self) -> String {
        let mut public = self.public_key().clone();
        public.set_comment("countersign");
        public.to_openssh().unwrap_or_default()
    }

    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.public_key().fingerprint(HashAlg::Sha256).to_string()
    }

    /// A line for an OpenSSH `allowed_signers` file that lets `principal` sign decisions.
    pub fn allowed_signers_line(&self, principal: &str) -> String {
        allowed_signers_line(principal, &self.public_key_openssh())
    }

    /// Armored SSHSIG (`-----BEGIN SSH SIGNATURE-----`) over `payload`.
    pub fn sign(&self, payload: &[u8]) -> Result<String, SignerError> {
        let sig = self
            .private
            .sign(NAMESPACE, HashAlg::Sha512, payload)
            .map_err(|e| SignerError::Sign(e.to_string()))?;
        sig.to_pem(LineEnding::LF)
            .map_err(|e| SignerError::Sign(e.to_string()))
    }
}

pub fn allowed_signers_line(principal: &str, public_key_openssh: &str) -> String {
    // Principals with spaces or commas would need quoting; keep the line unambiguous.
    let principal: String = principal
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == ',' || c == '"' {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("{principal} namespaces=\"{NAMESPACE}\" {public_key_openssh}")
}

/// Checks an armored SSHSIG over `payload` against an OpenSSH public key.
pub fn verify(public_key_openssh: &str, payload: &[u8], armored: &str) -> Result<(), SignerError> {
    let public = PublicKey::from_openssh(public_key_openssh.trim())
        .map_err(|e| SignerError::BadSignature(format!("public key: {e}")))?;
    let sig = SshSig::from_pem(armored.trim())
        .map_err(|e| SignerError::BadSignature(format!("signature: {e}")))?;
    if sig.public_key() != public.key_data() {
        return Err(SignerError::BadSignature(
            "signed by a different key".into(),
        ));
    }
    public
        .verify(NAMESPACE, payload, &sig)
        .map_err(|e| SignerError::BadSignature(e.to_string()))
}

/// Fingerprint of an OpenSSH public key line.
pub fn fingerprint_of(public_key_openssh: &str) -> Result<String, SignerError> {
    PublicKey::from_openssh(public_key_openssh.trim())
        .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
        .map_err(|e| SignerError::BadSignature(format!("public key: {e}")))
}

/// An in-memory key store, for unit tests of pure logic only.
#[derive(Default)]
pub struct MemoryKeyStore(std::sync::Mutex<Option<Zeroizing<String>>>);

impl KeyStore for MemoryKeyStore {
    fn load(&self) -> Result<Option<Zeroizing<String>>, SignerError> {
        Ok(self.0.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    fn save(&self, secret: &str) -> Result<(), SignerError> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Zeroizing::new(secret.to_owned()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_then_loaded() {
        let store = MemoryKeyStore::default();
        let (a, created) = Signer::load_or_create(&store).unwrap();
        assert!(created);
        let (b, created) = Signer::load_or_create(&store).unwrap();
        assert!(!created);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(a.fingerprint().starts_with("SHA256:"));
        assert!(a.public_key_openssh().starts_with("ssh-ed25519 "));
        assert!(!format!("{a:?}").contains("PRIVATE"));
    }

    #[test]
    fn signatures_verify_and_tampering_is_caught() {
        let (signer, _) = Signer::load_or_create(&MemoryKeyStore::default()).unwrap();
        let sig = signer.sign(b"{\"verdict\":\"approve\"}").unwrap();
        assert!(sig.starts_with("-----BEGIN SSH SIGNATURE-----"));
        let public = signer.public_key_openssh();
        verify(&public, b"{\"verdict\":\"approve\"}", &sig).unwrap();
        assert!(verify(&public, b"{\"verdict\":\"deny\"}", &sig).is_err());
        let (other, _) = Signer::load_or_create(&MemoryKeyStore::default()).unwrap();
        assert!(verify(
            &other.public_key_openssh(),
            b"{\"verdict\":\"approve\"}",
            &sig
        )
        .is_err());
    }

    #[test]
    fn rotation_replaces_the_key() {
        let store = MemoryKeyStore::default();
        let (a, _) = Signer::load_or_create(&store).unwrap();
        let b = Signer::rotate(&store).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        let (c, created) = Signer::load_or_create(&store).unwrap();
        assert!(!created);
        assert_eq!(b.fingerprint(), c.fingerprint());
    }

    #[test]
    fn allowed_signers_lines_name_the_namespace() {
        let line = allowed_signers_line("ana example", "ssh-ed25519 AAAA x");
        assert_eq!(
            line,
            "ana_example namespaces=\"countersign-decision\" ssh-ed25519 AAAA x"
        );
    }
}
