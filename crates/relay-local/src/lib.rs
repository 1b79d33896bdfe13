//! Local-mode adapters: the realtime queue, the batch queue, the dead-letter queue, the delivery ledger and
//! the failure-notification log in ONE SQLite file, plus secrets from a JSON file or the environment.
//!
//! ```no_run
//! # async fn demo() -> Result<(), relay_local::LocalError> {
//! use relay_local::LocalStore;
//! let store = LocalStore::open("relay.db")?;
//! let realtime = store.queue("realtime");
//! let dlq = store.queue("dlq");
//! let ledger = store.ledger();
//! let notifier = store.notifier();
//! # let _ = (realtime, dlq, ledger, notifier); Ok(()) }
//! ```
//!
//! # Durability
//! The file runs in WAL mode. A call that returns `Ok` has been committed: the writer thread answers only
//! after `COMMIT` returned. With the default [`Durability::ProcessCrash`] (`synchronous = NORMAL`) the commit
//! is in the WAL file in the operating system's page cache, which belongs to the kernel, not to the process:
//! `kill -9` of the process at any moment loses nothing that was acknowledged, and an interrupted
//! transaction is rolled back as a whole on the next open. What `NORMAL` does not survive is the machine
//! losing power (or the kernel crashing) before the OS wrote the page cache out: the last commits may be
//! lost, never corrupted. [`Durability::PowerLoss`] (`synchronous = FULL`) fsyncs the WAL on every commit
//! and survives that too, at the price of one fsync per group commit (see BENCHMARKS.md).

mod db;
mod ledger;
mod notifier;
mod private;
mod queue;
mod secrets;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay_ports::{Clock, PortError, SystemClock};
use tokio::sync::Notify;

pub use db::SCHEMA_VERSION;
pub use ledger::{ListFilter, SqliteLedger};
pub use notifier::{LogNotifier, StoredNotification};
pub use private::create_private_dir;
pub use queue::{QueuedMessage, SqliteQueue};
pub use secrets::LocalSecretStore;

/// Why a local-mode operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot open the database {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error(
        "the database {path} has schema version {found}, newer than this build understands ({supported}); \
         use a newer relay or another file"
    )]
    SchemaTooNew { path: PathBuf, found: i64, supported: i64 },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("write transaction failed: {0}")]
    Transaction(String),
    #[error("the store is closed")]
    Closed,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Rejected(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// A fenced ledger write with a claim token that is no longer the entry's.
    #[error("{0}")]
    Stale(String),
    #[error("secrets file {path}: {reason}")]
    SecretsFile { path: PathBuf, reason: String },
    /// An existing database (or its WAL/SHM file) that other users of the machine can read or write: it
    /// holds alert text, so the store refuses it rather than keep serving it.
    #[error(
        "refusing to open {path}: its mode is {mode:04o}, so other users can read it (it holds alert text); \
         fix it with: chmod 600 {path}"
    )]
    NotPrivate { path: PathBuf, mode: u32 },
}

impl From<LocalError> for PortError {
    fn from(e: LocalError) -> Self {
        match e {
            LocalError::Rejected(m) => PortError::Rejected(m),
            LocalError::NotFound(m) => PortError::NotFound(m),
            LocalError::Stale(m) => PortError::Stale(m),
            LocalError::SchemaTooNew { .. }
            | LocalError::Corrupt(_)
            | LocalError::SecretsFile { .. }
            | LocalError::NotPrivate { .. } => PortError::Rejected(e.to_string()),
            LocalError::Sqlite(ref inner) => match inner.sqlite_error_code() {
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::OutOfMemory
                    | rusqlite::ErrorCode::CannotOpen,
                ) => PortError::Unavailable(e.to_string()),
                _ => PortError::Rejected(e.to_string()),
            },
            LocalError::Open { .. } | LocalError::Transaction(_) | LocalError::Closed => {
                PortError::Unavailable(e.to_string())
            }
        }
    }
}

/// How much a committed write survives (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = NORMAL`: survives the process being killed at any moment (the default).
    #[default]
    ProcessCrash,
    /// `synchronous = FULL`: also survives power loss / a kernel crash; one fsync per commit.
    PowerLoss,
}

/// Settings for [`LocalStore::open_with`].
#[derive(Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    /// How long a write waits for another process holding the file's write lock.
    pub busy_timeout: Duration,
    /// How often a waiting `receive` re-checks the file when nothing in this process signalled it (messages
    /// sent by another process). Sends in this process wake receivers at once.
    pub poll_interval: Duration,
    /// Visibility timeout of queues made with [`LocalStore::queue`].
    pub default_visibility_timeout: Duration,
    /// The time source of queue visibility and ledger expiry (the ledger's transitions take `now_ms` from
    /// their callers).
    pub clock: Arc<dyn Clock>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::default(),
            busy_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
            default_visibility_timeout: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("durability", &self.durability)
            .field("busy_timeout", &self.busy_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("default_visibility_timeout", &self.default_visibility_timeout)
            .finish_non_exhaustive()
    }
}

pub(crate) struct StoreInner {
    pub(crate) path: PathBuf,
    pub(crate) writer: db::Writer,
    pub(crate) readers: Arc<db::Readers>,
    pub(crate) options: StoreOptions,
    /// Dropping it stops the checkpointer thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
    /// One wake-up signal per queue name, shared by every handle of that queue in this process.
    signals: Mutex<HashMap<String, Arc<Notify>>>,
}

impl StoreInner {
    pub(crate) fn now_ms(&self) -> i64 {
        self.options.clock.now_ms()
    }

    pub(crate) fn signal(&self, queue: &str) -> Arc<Notify> {
        let mut signals = self.signals.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(signals.entry(queue.to_string()).or_default())
    }
}

/// One SQLite file holding every queue, the ledger and the notification log. Cheap to clone; every handle
/// shares one writer thread. Several processes may open the same file: writes are serialised by SQLite's
/// write lock, so they never double-claim or double-receive.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<StoreInner>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl LocalStore {
    /// Open (or create) the database at `path` with the default [`StoreOptions`].
    pub fn open(path: impl AsRef<Path>) -> Result<LocalStore, LocalError> {
        LocalStore::open_with(path, StoreOptions::default())
    }

    /// Open (or create) the database at `path`, switch it to WAL and migrate its schema. A new file is
    /// created readable by its owner only (0600; SQLite gives the WAL and SHM files the same mode); an
    /// existing one that other users can read is refused ([`LocalError::NotPrivate`]).
    pub fn open_with(path: impl AsRef<Path>, options: StoreOptions) -> Result<LocalStore, LocalError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(LocalError::Open {
                path: path.clone(),
                reason: format!("the directory {} does not exist", dir.display()),
            });
        }
        private::prepare(&path)?;
        let conn = db::open_writer(&path, options.busy_timeout, options.durability)?;
        let writer = db::Writer::start(conn, &path)?;
        let readers = db::Readers::new(path.clone(), options.busy_timeout, options.durability);
        let checkpointer = db::start_checkpointer(&path, options.busy_timeout, options.durability)?;
        Ok(LocalStore {
            inner: Arc::new(StoreInner {
                path,
                writer,
                readers,
                options,
                _checkpointer: checkpointer,
                signals: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The queue called `name` (`realtime`, `batch`, `dlq`, …) with the default visibility timeout
    /// (change it with [`SqliteQueue::with_visibility_timeout`]).
    pub fn queue(&self, name: &str) -> SqliteQueue {
        SqliteQueue::new(
            Arc::clone(&self.inner),
            name.to_string(),
            self.inner.options.default_visibility_timeout,
        )
    }

    /// The delivery ledger.
    pub fn ledger(&self) -> SqliteLedger {
        SqliteLedger::new(Arc::clone(&self.inner))
    }

    /// The failure notifier: a `tracing` warning at target `audit` plus a row in the `notifications` table.
    pub fn notifier(&self) -> LogNotifier {
        LogNotifier::new(Arc::clone(&self.inner))
    }

    /// The most recent failure notifications, newest first.
    pub async fn recent_notifications(&self, limit: u32) -> Result<Vec<StoredNotification>, LocalError> {
        notifier::recent(&self.inner, limit).await
    }

    /// Every failure notification about `alert_id`, oldest first.
    pub async fn notifications_for(&self, alert_id: &str) -> Result<Vec<StoredNotification>, LocalError> {
        notifier::for_alert(&self.inner, alert_id).await
    }
}
