//! The one API layer: the desktop shell's commands and the CLI's subcommands are thin
//! calls into [`Engine`]. Results are plain serialisable DTOs; errors carry a code.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::audit::{self, AllowedSigners, AuditEntry, ChainBreak, ChainReport};
use crate::backends::{self, Backend, Limits};
use crate::config::{BackendConfig, Config, ConfigError};
use crate::decide::{self, DecideError, DecisionReport, DecisionRequest};
use crate::model::{
    ActionKey, ActionStatus, Answer, Decision, PendingAction, TimelineEvent, TimelineKind, Verdict,
};
use crate::secrets::{OsTokenStore, TokenStore};
use crate::shutdown::Shutdown;
use crate::signer::{KeyStore, OsKeyring, Signer, SignerError};
use crate::snapshot::{FieldChange, SnapshotHash};
use crate::store::{
    ActionQuery, AuditQuery, AuditRows, BackendStatus, HistoryPage, HistoryQuery, SnapshotVersion,
    Store, StoreError,
};
use crate::sync::{BackendSync, Change, SyncError, SyncSummary};

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Build(#[from] backends::BuildError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Decide(#[from] DecideError),
    #[error("no action `{0}` (use `backend/id`, or an id that only one backend has)")]
    UnknownAction(String),
    #[error(transparent)]
    Signer(#[from] SignerError),
    #[error("the audit chain is broken at {0}")]
    Chain(ChainBreak),
    #[error("cannot write the export: {0}")]
    Export(String),
    #[error("no audit entries match {0}: nothing to export")]
    NothingToExport(String),
    #[error("backend `{name}` cannot be used: {reason}")]
    BackendUnavailable { name: String, reason: String },
    #[error("`{id}` is ambiguous: {}", candidates.join(", "))]
    AmbiguousAction { id: String, candidates: Vec<String> },
}

impl EngineError {
    /// A stable code the UI and scripts can act on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Config(e) => e.code(),
            Self::Build(_) => "backend_config",
            Self::Store(StoreError::Busy { .. }) => "store_busy",
            Self::Store(_) => "store",
            Self::Decide(e) => e.code(),
            Self::UnknownAction(_) => "unknown_action",
            Self::AmbiguousAction { .. } => "ambiguous_action",
            Self::BackendUnavailable { .. } => "backend_unavailable",
            Self::Signer(e) => e.code(),
            Self::Chain(_) => "chain_broken",
            Self::Export(_) => "export_failed",
            Self::NothingToExport(_) => "export_empty",
        }
    }
}

/// One action with everything the detail view shows.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ActionDetail {
    pub action: PendingAction,
    pub timeline: Vec<TimelineEvent>,
    pub decisions: Vec<Decision>,
}

/// Everything the inbox shows, read in one go so the numbers agree.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct InboxView {
    /// Pending actions, soonest expiry first.
    pub actions: Vec<PendingAction>,
    pub backends: Vec<BackendStatus>,
    /// When this view was read; countdowns start from here.
    pub read_at: DateTime<Utc>,
}

/// A decision as a person makes it: on which action, which snapshot, and why. The
/// approver is the engine's own identity, never the caller's say.
#[derive(Debug, Clone, serde::Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct DecisionInput {
    pub action: ActionKey,
    pub verdict: Verdict,
    pub reason: String,
    /// The snapshot hash of what was on screen.
    pub seen_snapshot_hash: SnapshotHash,
    /// Chosen options and field values, for an action with a form (required with
    /// `choose`); checked against the form before anything is signed.
    #[serde(default)]
    pub answer: Option<Answer>,
}

/// An error as a UI receives it: a stable `code` to act on, a message for people, and
/// for a refused stale decision, what changed and the action as it is now.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ApiError {
    pub code: String,
    pub message: String,
    pub changes: Vec<FieldChange>,
    pub current: Option<Box<PendingAction>>,
}

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            changes: Vec::new(),
            current: None,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let (changes, current) = match &e {
            EngineError::Decide(DecideError::Changed {
                changes, current, ..
            }) => (changes.clone(), Some(current.clone())),
            _ => (Vec::new(), None),
        };
        Self {
            code: e.code().to_owned(),
            message: e.to_string(),
            changes,
            current,
        }
    }
}

/// Result of one `sync` pass over one backend.
#[derive(Debug, Serialize)]
pub struct BackendSyncReport {
    pub backend: String,
    pub summary: Option<SyncSummary>,
    pub error: Option<String>,
    pub error_code: Option<&'static str>,
}

struct BackendEntry {
    config: BackendConfig,
    backend: Arc<dyn Backend>,
}

/// The engine: the store, the configured backends and the change broadcast.
pub struct Engine {
    store: Arc<Store>,
    backends: BTreeMap<String, BackendEntry>,
    /// Configured backends that could not be built (missing token, bad URL), with why.
    /// They show as degraded; the others run regardless.
    unavailable: BTreeMap<String, String>,
    /// With a config file: the backends it names. A backend removed from the config
    /// keeps its actions in history but leaves the inbox and the status list.
    configured: Option<std::collections::BTreeSet<String>>,
    changes: broadcast::Sender<Change>,
    approver: String,
    key_store: Arc<dyn KeyStore>,
    /// Loaded on first use, so commands that only read never touch the keyring.
    signer: std::sync::Mutex<Option<Arc<Signer>>>,
}

/// Where an export went and what was checked before writing it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ExportReport {
    pub path: String,
    pub chain: ChainReport,
}

/// The signing key as a person sees it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct KeyInfo {
    pub public_key: String,
    pub fingerprint: String,
    pub allowed_signers: String,
}

/// The audit chain as the audit view shows it: verified up to its head, or up to the
/// first row that breaks it. A broken chain is a state to show, not a failed call.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ChainStatus {
    /// Rows in the chain.
    pub entries: u32,
    /// What verified from the first row on: the whole chain when it is intact, the rows
    /// before the break otherwise (`verified.entries` is then the last good `seq`).
    pub verified: ChainReport,
    /// The first row that fails, when one does.
    pub broken: Option<BrokenRow>,
    /// When the first and the last entry were made (to offer as the export's range).
    pub first_at: Option<DateTime<Utc>>,
    pub last_at: Option<DateTime<Utc>>,
    /// Backends whose actions the chain has entries about, by name.
    pub backends: Vec<String>,
}

/// The first row of the chain that does not verify, and why.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct BrokenRow {
    /// 1-based position in the chain.
    pub row: u32,
    /// The `seq` that row claims.
    pub seq: u32,
    /// `edited`, `sequence`, `link`, `signature`, `unknown_signer` or `unsigned`.
    pub code: String,
    /// What went wrong, for people.
    pub reason: String,
}

impl From<&ChainBreak> for BrokenRow {
    fn from(b: &ChainBreak) -> Self {
        Self {
            row: u32::try_from(b.row()).unwrap_or(u32::MAX),
            seq: b.seq(),
            code: b.code().to_owned(),
            reason: b.to_string(),
        }
    }
}

/// Which part of the audit chain to export; nothing set means the whole chain.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct AuditRange {
    /// Entries made at or after this instant.
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    /// Entries made before this instant.
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
    /// Only entries about this backend's actions (key rotations belong to no backend).
    #[serde(default)]
    pub backend: Option<String>,
}

impl AuditRange {
    /// No filter: the export is the complete chain.
    pub fn is_whole(&self) -> bool {
        self.from.is_none() && self.to.is_none() && self.backend.is_none()
    }

    fn query(&self) -> AuditQuery {
        AuditQuery {
            from: self.from,
            to: self.to,
            backend: self.backend.clone(),
        }
    }

    fn describe(&self) -> String {
        if self.is_whole() {
            return "the chain".to_owned();
        }
        let mut parts = Vec::new();
        if let Some(from) = self.from {
            parts.push(format!("from {}", from.to_rfc3339()));
        }
        if let Some(to) = self.to {
            parts.push(format!("before {}", to.to_rfc3339()));
        }
        if let Some(b) = &self.backend {
            parts.push(format!("backend `{b}`"));
        }
        parts.join(", ")
    }
}

/// Audit entries chosen for an export, after the whole chain verified. It holds no
/// rows: [`AuditSelection::write_csv`] streams them from the store again, and checks
/// that what it wrote is byte for byte what was verified.
pub struct AuditSelection {
    store: Arc<Store>,
    query: AuditQuery,
    /// The verified chain's head `seq`: rows appended since are not part of the export.
    up_to: u32,
    /// SHA-256 of the CSV of the chosen rows, as they were verified.
    csv_sha256: [u8; 32],
    /// Rows chosen (besides the header).
    pub rows: u32,
    /// The whole chain's report, checked before choosing.
    pub chain: ChainReport,
    /// A filtered selection: an excerpt of the chain, not all of it.
    pub excerpt: bool,
}

impl std::fmt::Debug for AuditSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSelection")
            .field("query", &self.query)
            .field("up_to", &self.up_to)
            .field("rows", &self.rows)
            .field("chain", &self.chain)
            .field("excerpt", &self.excerpt)
            .finish_non_exhaustive()
    }
}

/// An `io::Write` that keeps a SHA-256 of everything written through it.
struct Hashing<W> {
    inner: W,
    hasher: sha2::Sha256,
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: sha2::Digest::new(),
        }
    }

    fn finish(self) -> (W, [u8; 32]) {
        (self.inner, sha2::Digest::finalize(self.hasher).into())
    }
}

/// A written audit export and how to check it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct AuditExport {
    pub path: String,
    /// Rows written (besides the header).
    pub rows: u32,
    /// The export is filtered: `countersign verify --excerpt` checks it; a complete
    /// chain is checked by plain `countersign verify`.
    pub excerpt: bool,
    /// The whole chain, verified before anything was written.
    pub chain: ChainReport,
    /// The command that checks the file (with the approvers' allowed_signers added).
    pub verify_command: String,
}

impl AuditSelection {
    /// Writes the selection as CSV (docs/audit-csv.md). The file appears whole or not
    /// at all: it is written beside the target and renamed over it.
    pub fn write_csv(&self, path: &std::path::Path) -> Result<AuditExport, EngineError> {
        let export_err = |e: &dyn std::fmt::Display| EngineError::Export(e.to_string());
        crate::export::write_file_whole(
            path,
            |e| export_err(&e),
            |file| {
                let out = Hashing::new(file);
                let mut csv = crate::export::CsvWriter::new(out).map_err(|e| export_err(&e))?;
                for entry in self.store.audit_rows_up_to(&self.query, self.up_to) {
                    csv.write(&entry?).map_err(|e| export_err(&e))?;
                }
                let rows = csv.rows();
                let (_, sha256) = csv.finish().map_err(|e| export_err(&e))?.finish();
                // The rows are read again: should the chain have been altered since it
                // was verified (the database edited behind the app's back), what was
                // written is not what was checked, and it is not kept.
                if sha256 != self.csv_sha256 || rows != u64::from(self.rows) {
                    return Err(EngineError::Export(
                        "the audit chain changed after it was verified; export again".into(),
                    ));
                }
                Ok(())
            },
        )?;
        let shown = path.display().to_string();
        Ok(AuditExport {
            rows: self.rows,
            excerpt: self.excerpt,
            chain: self.chain.clone(),
            verify_command: format!(
                "countersign verify {}{} --allowed-signers allowed_signers",
                if self.excerpt { "--excerpt " } else { "" },
                shell_quote(&shown)
            ),
            path: shown,
        })
    }
}

/// Quotes a path for a POSIX shell when it needs it (only for showing a command).
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

impl Engine {
    pub fn new(store: Store, approver: impl Into<String>) -> Self {
        let (changes, _) = broadcast::channel(1024);
        Self {
            store: Arc::new(store),
            backends: BTreeMap::new(),
            unavailable: BTreeMap::new(),
            configured: None,
            changes,
            approver: approver.into(),
            key_store: Arc::new(OsKeyring::new()),
            signer: std::sync::Mutex::new(None),
        }
    }

    /// Keeps the signing key somewhere else than the OS keyring's default entry.
    pub fn with_key_store(mut self, key_store: Arc<dyn KeyStore>) -> Self {
        self.key_store = key_store;
        self.signer = std::sync::Mutex::new(None);
        self
    }

    /// The signing key, made and stored in the keyring on first use.
    pub fn signer(&self) -> Result<Arc<Signer>, SignerError> {
        let mut slot = self.signer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = &*slot {
            return Ok(s.clone());
        }
        let (signer, created) = Signer::load_or_create(&*self.key_store)?;
        if created {
            tracing::info!("made a new signing key {}", signer.fingerprint());
        }
        let signer = Arc::new(signer);
        *slot = Some(signer.clone());
        Ok(signer)
    }

    pub fn key_info(&self) -> Result<KeyInfo, EngineError> {
        let signer = self.signer()?;
        Ok(KeyInfo {
            public_key: signer.public_key_openssh(),
            fingerprint: signer.fingerprint(),
            allowed_signers: signer.allowed_signers_line(&self.approver),
        })
    }

    /// Makes a new signing key; the rotation is recorded in the audit chain, signed by
    /// the old key so the chain shows who handed over to whom.
    pub fn rotate_key(&self, now: DateTime<Utc>) -> Result<KeyInfo, EngineError> {
        let old = self.signer()?;
        let new = Signer::rotate(&*self.key_store)?;
        let payload = audit::rotation_payload(
            Some(&old.fingerprint()),
            &new.public_key_openssh(),
            &new.fingerprint(),
            now,
        );
        let signature = old.sign(payload.as_bytes())?;
        self.store.record_key_rotation(
            &payload,
            Some(&signature),
            Some(&old.public_key_openssh()),
            Some(&old.fingerprint()),
            now,
        )?;
        *self.signer.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(new));
        self.key_info()
    }

    /// The audit chain (or part of it), in order.
    pub fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, EngineError> {
        Ok(self.store.audit_entries(query)?)
    }

    /// The audit chain (or part of it), in order, as a stream: memory stays flat
    /// whatever the chain's length.
    pub fn audit_rows(&self, query: &AuditQuery) -> AuditRows<'_> {
        self.store.audit_rows(query)
    }

    /// The chain's state for the audit view: every row re-walked (links, hashes, every
    /// signature); a break is reported with the rows that verified before it. The chain
    /// streams by once; only the summary is kept.
    pub fn audit_status(&self) -> Result<ChainStatus, EngineError> {
        let mut verifier = audit::ChainVerifier::chain(None);
        let mut entries = 0u32;
        let mut first_at = None;
        let mut last_at = None;
        let mut backends = std::collections::BTreeSet::new();
        let verified = audit::verify_rows(
            &mut verifier,
            self.store.audit_rows(&AuditQuery::default()),
            |e| {
                entries = entries.saturating_add(1);
                first_at.get_or_insert(e.at);
                last_at = Some(e.at);
                if let Some((backend, _)) = e.action.as_deref().and_then(|a| a.split_once('/')) {
                    if !backends.contains(backend) {
                        backends.insert(backend.to_owned());
                    }
                }
            },
        )?;
        // After a break, the report holds the rows that passed every check before it.
        let broken = verified.err().as_ref().map(BrokenRow::from);
        Ok(ChainStatus {
            entries,
            verified: verifier.finish(),
            broken,
            first_at,
            last_at,
            backends: backends.into_iter().collect(),
        })
    }

    /// Chooses what an export of `range` holds, after verifying the whole chain (a
    /// broken chain is reported, not exported as if it were sound). A filtered choice
    /// is an excerpt: it is checked as `countersign verify --excerpt` will check the
    /// file (each row's hash and signature, links between chain neighbours), so what is
    /// written is what that command accepts. The rows stream by (the whole chain, then
    /// the range's); the selection keeps their CSV's hash, not the rows.
    pub fn select_audit(&self, range: &AuditRange) -> Result<AuditSelection, EngineError> {
        let excerpt = !range.is_whole();
        let mut csv = crate::export::CsvWriter::new(Hashing::new(std::io::sink()))
            .map_err(|e| EngineError::Export(e.to_string()))?;
        let mut csv_err = None;
        let mut to_csv = |e: &AuditEntry| {
            if csv_err.is_none() {
                csv_err = csv.write(e).err();
            }
        };
        let mut whole = audit::ChainVerifier::chain(None);
        audit::verify_rows(
            &mut whole,
            self.store.audit_rows(&AuditQuery::default()),
            |e| {
                if !excerpt {
                    to_csv(e);
                }
            },
        )?
        .map_err(EngineError::Chain)?;
        let chain = whole.finish();
        // A complete chain's last seq is its length.
        let up_to = chain.entries;
        let query = range.query();
        if excerpt {
            let mut part = audit::ChainVerifier::excerpt(None);
            audit::verify_rows(
                &mut part,
                self.store.audit_rows_up_to(&query, up_to),
                &mut to_csv,
            )?
            .map_err(EngineError::Chain)?;
        }
        if let Some(e) = csv_err {
            return Err(EngineError::Export(e.to_string()));
        }
        let rows = u32::try_from(csv.rows()).unwrap_or(u32::MAX);
        if rows == 0 {
            return Err(EngineError::NothingToExport(range.describe()));
        }
        let (_, csv_sha256) = csv
            .finish()
            .map_err(|e| EngineError::Export(e.to_string()))?
            .finish();
        Ok(AuditSelection {
            store: self.store.clone(),
            query,
            up_to,
            csv_sha256,
            rows,
            chain,
            excerpt,
        })
    }

    /// Re-walks the whole chain in the database: links, hashes, every signature, as the
    /// rows stream by.
    pub fn verify(&self, allowed: Option<&AllowedSigners>) -> Result<ChainReport, EngineError> {
        let mut verifier = audit::ChainVerifier::chain(allowed);
        audit::verify_rows(
            &mut verifier,
            self.store.audit_rows(&AuditQuery::default()),
            |_| {},
        )?
        .map_err(EngineError::Chain)?;
        Ok(verifier.finish())
    }

    /// Builds every backend in `config` (tokens from where the config says). A backend
    /// that cannot be built is recorded as degraded with the reason; it does not stop
    /// the others.
    ///
    /// Keyring tokens come from the OS keyring ([`OsTokenStore::from_env`]).
    pub fn from_config(
        config: &Config,
        store: Store,
        now: DateTime<Utc>,
    ) -> Result<Self, EngineError> {
        Self::from_config_with_tokens(config, store, &OsTokenStore::from_env(), now)
    }

    /// [`Engine::from_config`] with keyring tokens (`token_keyring`) read from `tokens`.
    pub fn from_config_with_tokens(
        config: &Config,
        store: Store,
        tokens: &dyn TokenStore,
        now: DateTime<Utc>,
    ) -> Result<Self, EngineError> {
        let approver = config
            .approver
            .clone()
            .unwrap_or_else(crate::config::default_approver);
        let mut engine = Self::new(store, approver);
        engine.configured = Some(config.backends.iter().map(|b| b.name.clone()).collect());
        for b in &config.backends {
            let mut limits = Limits::default();
            if let Some(secs) = b.timeout_secs {
                limits.request_timeout = std::time::Duration::from_secs(secs.max(1));
            }
            let built = b
                .token_from(tokens)
                .map_err(EngineError::from)
                .and_then(|token| {
                    let token = token.map(|t| String::clone(&t));
                    Ok(backends::build(b, token, limits)?)
                });
            match built {
                Ok(backend) => engine.add_backend(b.clone(), backend)?,
                Err(e) => {
                    engine.store.register_backend(&b.name, &b.kind, &b.url)?;
                    engine.store.mark_backend_degraded(
                        &b.name,
                        e.code(),
                        &e.to_string(),
                        now,
                        now,
                    )?;
                    engine.unavailable.insert(b.name.clone(), e.to_string());
                }
            }
        }
        Ok(engine)
    }

    /// Adds a backend (registering it in the store).
    pub fn add_backend(
        &mut self,
        config: BackendConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<(), StoreError> {
        self.store
            .register_backend(&config.name, &config.kind, &config.url)?;
        self.backends
            .insert(config.name.clone(), BackendEntry { config, backend });
        Ok(())
    }

    pub fn approver(&self) -> &str {
        &self.approver
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Subscribe to changes (new and updated actions, backend health, deliveries).
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn sync_for(&self, entry: &BackendEntry) -> BackendSync {
        BackendSync {
            name: entry.config.name.clone(),
            backend: entry.backend.clone(),
            store: self.store.clone(),
            changes: self.changes.clone(),
            poll_interval: entry.config.poll_interval(),
            max_backoff: entry.config.max_backoff(),
        }
    }

    /// Starts one sync task per backend; they run until `shutdown`.
    pub fn spawn_sync(&self, shutdown: &Shutdown) -> Vec<JoinHandle<()>> {
        self.backends
            .values()
            .map(|entry| tokio::spawn(self.sync_for(entry).run(shutdown.clone())))
            .collect()
    }

    /// One reconciliation pass over every backend, concurrently, plus outbox delivery.
    pub async fn sync_once(&self, now: DateTime<Utc>) -> Vec<BackendSyncReport> {
        let passes = self.backends.values().map(|entry| async move {
            let sync = self.sync_for(entry);
            let result = sync.poll_once().await;
            match &result {
                Ok(_) => sync.mark_ok(),
                Err(e) => sync.mark_degraded(e, std::time::Duration::ZERO),
            }
            decide::deliver_due(
                &self.store,
                &entry.config.name,
                &*entry.backend,
                &self.changes,
                now,
            )
            .await;
            report(&entry.config.name, result)
        });
        let mut reports = futures_util::future::join_all(passes).await;
        reports.extend(
            self.unavailable
                .iter()
                .map(|(name, reason)| BackendSyncReport {
                    backend: name.clone(),
                    summary: None,
                    error: Some(reason.clone()),
                    error_code: Some("config"),
                }),
        );
        reports.sort_by(|a, b| a.backend.cmp(&b.backend));
        reports
    }

    fn is_configured(&self, backend: &str) -> bool {
        self.configured
            .as_ref()
            .is_none_or(|names| names.contains(backend))
    }

    /// Pending actions of the configured backends, soonest expiry first.
    pub fn pending(&self, backend: Option<&str>) -> Result<Vec<PendingAction>, EngineError> {
        let mut actions = self.store.actions(&ActionQuery {
            backend: backend.map(str::to_owned),
            status: Some(ActionStatus::Pending),
            limit: None,
        })?;
        actions.retain(|a| self.is_configured(&a.key.backend));
        Ok(actions)
    }

    pub fn inbox(&self, now: DateTime<Utc>) -> Result<InboxView, EngineError> {
        Ok(InboxView {
            actions: self.pending(None)?,
            backends: self.backends()?,
            read_at: now,
        })
    }

    pub fn history(&self, limit: u32) -> Result<Vec<PendingAction>, EngineError> {
        Ok(self.store.history(limit)?)
    }

    /// One page of history (every action ever seen, also offline): full-text search
    /// and filters, newest first; pass the page's `next` back for the following one.
    pub fn history_page(&self, query: &HistoryQuery) -> Result<HistoryPage, EngineError> {
        Ok(self.store.history_page(query)?)
    }

    /// Every stored version of an action, oldest first, for "what changed" between any
    /// two of them (`snapshot::diff`).
    pub fn snapshot_versions(&self, key: &ActionKey) -> Result<Vec<SnapshotVersion>, EngineError> {
        Ok(self.store.snapshot_versions(key)?)
    }

    /// Health of the configured backends (a removed one keeps only its history).
    pub fn backends(&self) -> Result<Vec<BackendStatus>, EngineError> {
        let mut statuses = self.store.backend_statuses()?;
        statuses.retain(|s| self.is_configured(&s.name));
        Ok(statuses)
    }

    /// Resolves what a person typed: `backend/id`, or a bare id unique across backends.
    pub fn resolve(&self, id: &str) -> Result<ActionKey, EngineError> {
        if let Some((backend, ext)) = id.split_once('/') {
            let key = ActionKey::new(backend, ext);
            if self.store.action(&key)?.is_some() {
                return Ok(key);
            }
        }
        let mut found = Vec::new();
        for name in self.known_backends()? {
            let key = ActionKey::new(name, id);
            if self.store.action(&key)?.is_some() {
                found.push(key);
            }
        }
        match found.len() {
            0 => Err(EngineError::UnknownAction(id.to_owned())),
            1 => Ok(found.remove(0)),
            _ => Err(EngineError::AmbiguousAction {
                id: id.to_owned(),
                candidates: found.iter().map(ToString::to_string).collect(),
            }),
        }
    }

    fn known_backends(&self) -> Result<Vec<String>, EngineError> {
        Ok(self
            .store
            .backend_statuses()?
            .into_iter()
            .map(|b| b.name)
            .collect())
    }

    pub fn detail(&self, key: &ActionKey) -> Result<ActionDetail, EngineError> {
        let action = self
            .store
            .action(key)?
            .ok_or_else(|| EngineError::UnknownAction(key.to_string()))?;
        Ok(ActionDetail {
            timeline: self.store.timeline(key)?,
            decisions: self.store.decisions(key)?,
            action,
        })
    }

    /// Records that the person opened this action (a local timeline event).
    pub fn record_viewed(&self, key: &ActionKey, now: DateTime<Utc>) -> Result<(), EngineError> {
        let event = TimelineEvent::local(
            now,
            TimelineKind::Viewed,
            Some(self.approver.clone()),
            format!("Viewed by {}", self.approver),
        );
        self.store.append_timeline(key, &[event])?;
        let _ = self.changes.send(Change::Timeline { key: key.clone() });
        Ok(())
    }

    /// Stores a local timeline event (notified, answered from a notification, …) and
    /// tells subscribers the timeline moved.
    pub fn record_event(&self, key: &ActionKey, event: TimelineEvent) -> Result<(), EngineError> {
        self.store.append_timeline(key, &[event])?;
        let _ = self.changes.send(Change::Timeline { key: key.clone() });
        Ok(())
    }

    /// Runs the just-in-time decision pipeline, as this engine's approver.
    pub async fn decide(
        &self,
        input: DecisionInput,
        now: DateTime<Utc>,
    ) -> Result<DecisionReport, EngineError> {
        let name = &input.action.backend;
        if let Some(reason) = self.unavailable.get(name) {
            return Err(EngineError::BackendUnavailable {
                name: name.clone(),
                reason: reason.clone(),
            });
        }
        let entry = self
            .backends
            .get(name)
            .ok_or_else(|| DecideError::UnknownBackend(name.clone()))?;
        let request = DecisionRequest {
            action: input.action,
            verdict: input.verdict,
            reason: input.reason,
            seen_snapshot_hash: input.seen_snapshot_hash,
            approver: self.approver.clone(),
            answer: input.answer,
        };
        Ok(decide::decide(
            &self.store,
            &*entry.backend,
            &self.changes,
            &|| self.signer(),
            request,
            now,
        )
        .await?)
    }
}

fn report(name: &str, result: Result<SyncSummary, SyncError>) -> BackendSyncReport {
    match result {
        Ok(summary) => BackendSyncReport {
            backend: name.to_owned(),
            summary: Some(summary),
            error: None,
            error_code: None,
        },
        Err(e) => BackendSyncReport {
            backend: name.to_owned(),
            summary: None,
            error_code: Some(e.code()),
            error: Some(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::MemoryTokenStore;
    use crate::signer::MemoryKeyStore;

    fn at(hour: u32) -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(2026, 11, 20, hour, 0, 0).unwrap()
    }

    /// An engine whose chain holds three key rotations, at 09:00, 10:00 and 11:00.
    fn engine_with_rotations(dir: &std::path::Path) -> Engine {
        let store = Store::open_in_dir(dir).unwrap();
        let engine = Engine::new(store, "ana").with_key_store(Arc::new(MemoryKeyStore::default()));
        for hour in [9, 10, 11] {
            engine.rotate_key(at(hour)).unwrap();
        }
        engine
    }

    fn read_back(path: &std::path::Path) -> Vec<AuditEntry> {
        crate::export::read_csv(std::fs::File::open(path).unwrap()).unwrap()
    }

    #[test]
    fn audit_status_verifies_the_chain_up_to_its_head() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_with_rotations(dir.path());
        let status = engine.audit_status().unwrap();
        assert_eq!(status.entries, 3);
        assert!(status.broken.is_none());
        assert_eq!(
            (status.verified.entries, status.verified.signatures),
            (3, 3)
        );
        let head = engine.audit(&AuditQuery::default()).unwrap()[2]
            .entry_hash
            .clone();
        assert_eq!(status.verified.head_hash, head);
        assert_eq!(
            (status.first_at, status.last_at),
            (Some(at(9)), Some(at(11)))
        );
        assert!(status.backends.is_empty(), "rotations belong to no backend");
    }

    #[test]
    fn audit_status_names_the_first_broken_row_and_what_verified_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_with_rotations(dir.path());
        let good_head = engine.audit(&AuditQuery::default()).unwrap()[0]
            .entry_hash
            .clone();
        drop(engine);
        let db = rusqlite::Connection::open(dir.path().join(crate::store::DB_FILE)).unwrap();
        db.execute_batch(
            "DROP TRIGGER audit_entries_no_update;
             UPDATE audit_entries SET payload = payload || ' ' WHERE seq = 2;",
        )
        .unwrap();
        drop(db);
        let store = Store::open_in_dir(dir.path()).unwrap();
        let engine = Engine::new(store, "ana").with_key_store(Arc::new(MemoryKeyStore::default()));
        let status = engine.audit_status().unwrap();
        let broken = status.broken.expect("row 2 was edited");
        assert_eq!(
            (broken.row, broken.seq, broken.code.as_str()),
            (2, 2, "edited")
        );
        assert!(broken.reason.contains("row 2"), "{}", broken.reason);
        assert_eq!(status.verified.entries, 1);
        assert_eq!(status.verified.head_hash, good_head);
        assert_eq!(status.entries, 3);
        let refused = engine.select_audit(&AuditRange::default()).unwrap_err();
        assert_eq!(refused.code(), "chain_broken");
    }

    #[test]
    fn a_whole_export_is_a_complete_chain_and_a_range_is_an_excerpt() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_with_rotations(dir.path());

        let whole = dir.path().join("whole.csv");
        let report = engine
            .select_audit(&AuditRange::default())
            .unwrap()
            .write_csv(&whole)
            .unwrap();
        assert_eq!((report.rows, report.excerpt), (3, false));
        assert!(!report.verify_command.contains("--excerpt"));
        audit::verify_chain(&read_back(&whole), None).unwrap();

        // 10:00 up to (not including) 11:00: the middle rotation only.
        let range = AuditRange {
            from: Some(at(10)),
            to: Some(at(11)),
            backend: None,
        };
        let part = dir.path().join("part of it.csv");
        let report = engine
            .select_audit(&range)
            .unwrap()
            .write_csv(&part)
            .unwrap();
        assert_eq!((report.rows, report.excerpt), (1, true));
        assert_eq!(report.chain.entries, 3, "the whole chain was checked first");
        assert!(
            report.verify_command.contains("--excerpt '"),
            "{}",
            report.verify_command
        );
        let rows = read_back(&part);
        assert_eq!(rows.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2]);
        audit::verify_excerpt(&rows, None).unwrap();
        assert!(
            audit::verify_chain(&rows, None).is_err(),
            "an excerpt does not pass as a complete chain"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "no partial file is left behind");
    }

    #[test]
    fn an_export_writes_the_chain_as_verified_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_with_rotations(dir.path());
        let selection = engine.select_audit(&AuditRange::default()).unwrap();
        // Made while the save dialog is open: not part of what was verified.
        engine.rotate_key(at(12)).unwrap();
        let file = dir.path().join("audit.csv");
        let report = selection.write_csv(&file).unwrap();
        assert_eq!(report.rows, 3);
        let rows = read_back(&file);
        assert_eq!(
            rows.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(report.chain.head_hash, rows[2].entry_hash);

        let selection = engine.select_audit(&AuditRange::default()).unwrap();
        let db = rusqlite::Connection::open(dir.path().join(crate::store::DB_FILE)).unwrap();
        db.execute_batch(
            "DROP TRIGGER audit_entries_no_update;
             UPDATE audit_entries SET payload = payload || ' ' WHERE seq = 2;",
        )
        .unwrap();
        let edited = dir.path().join("edited.csv");
        let err = selection.write_csv(&edited).unwrap_err();
        assert_eq!(err.code(), "export_failed");
        assert!(
            err.to_string().contains("changed after it was verified"),
            "{err}"
        );
        assert!(!edited.exists(), "nothing unverified is written");
        assert!(!dir.path().join(".edited.csv.partial").exists());
    }

    #[test]
    fn an_export_with_nothing_in_range_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_with_rotations(dir.path());
        let range = AuditRange {
            backend: Some("nowhere".into()),
            ..AuditRange::default()
        };
        let err = engine.select_audit(&range).unwrap_err();
        assert_eq!(err.code(), "export_empty");
        assert!(err.to_string().contains("nowhere"), "{err}");
    }

    #[test]
    fn keyring_tokens_build_the_backend_and_a_missing_one_degrades_only_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            std::path::Path::new("c.toml"),
            "[[backend]]\nname='a'\nkind='countersign'\nurl='http://127.0.0.1:9'\n\
             token_keyring=true\n[[backend]]\nname='b'\nkind='countersign'\n\
             url='http://127.0.0.1:9'\ntoken_keyring=true\n",
        )
        .unwrap();
        let tokens = MemoryTokenStore::default();
        tokens.set("a", "t0ken-a").unwrap();
        let store = Store::open_in_dir(dir.path()).unwrap();
        let engine = Engine::from_config_with_tokens(&config, store, &tokens, Utc::now()).unwrap();
        assert!(engine.backends.contains_key("a"));
        let reason = &engine.unavailable["b"];
        assert!(
            reason.contains("countersign backend set-token b"),
            "{reason}"
        );
        let b = engine
            .backends()
            .unwrap()
            .into_iter()
            .find(|s| s.name == "b")
            .unwrap();
        assert_eq!(b.status, "degraded");
        assert_eq!(b.last_error_code.as_deref(), Some("missing_token"));
        assert!(!format!("{reason}{:?}", b.last_error).contains("t0ken"));
    }
}
