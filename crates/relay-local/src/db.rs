//! The SQLite file: connection setup, the schema migration, the group-committing writer thread and the
//! reader pool.
//!
//! Every write (including `receive`, which leases messages) runs on ONE writer thread that owns the only
//! read-write connection of this process. The thread takes whatever jobs are waiting (up to
//! [`MAX_JOBS_PER_TRANSACTION`]), runs them in one `BEGIN IMMEDIATE` transaction, each inside its own
//! savepoint (a failing job rolls back only itself), commits, and only then answers the callers. So an
//! `Ok` always means "committed", and under load many callers share one commit. `BEGIN IMMEDIATE` takes
//! SQLite's write lock before the first read, so a read-modify-write can never interleave with another
//! process's write to the same file; `busy_timeout` makes a second process wait for the lock instead of
//! failing at once.
//!
//! Reads that change nothing (`get`, `depth`, listings) use a small pool of read-only connections on the
//! blocking thread pool; with WAL they never wait for the writer.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::{Durability, LocalError};

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 5;

/// Upper bound on jobs sharing one transaction (keeps a commit's latency bounded).
pub const MAX_JOBS_PER_TRANSACTION: usize = 512;

const MIGRATION_1: &str = "
CREATE TABLE queue_messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT    NOT NULL,
    message_id    TEXT    NOT NULL UNIQUE,
    body          TEXT    NOT NULL,
    sent_at_ms    INTEGER NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT
);
CREATE INDEX queue_messages_visible ON queue_messages (queue, visible_at_ms, id);

CREATE TABLE ledger (
    alert_id             TEXT    PRIMARY KEY NOT NULL,
    webhook_id           TEXT,
    state                TEXT    NOT NULL,
    attempts             INTEGER NOT NULL,
    first_received_at_ms INTEGER NOT NULL,
    updated_at_ms        INTEGER NOT NULL,
    lease_until_ms       INTEGER,
    needs_lookup         INTEGER NOT NULL,
    rule                 TEXT    NOT NULL,
    record_type          TEXT    NOT NULL,
    target_table         TEXT    NOT NULL,
    severity             TEXT    NOT NULL,
    delivery             TEXT    NOT NULL,
    correlation_id       TEXT    NOT NULL,
    config_hash          TEXT    NOT NULL,
    record_json          TEXT,
    last_error_class     TEXT,
    last_error           TEXT,
    expires_at_s         INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX ledger_state ON ledger (state, updated_at_ms);
CREATE INDEX ledger_expiry ON ledger (expires_at_s);

CREATE TABLE notifications (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id      TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    notice_json   TEXT    NOT NULL
);
CREATE INDEX notifications_alert ON notifications (alert_id, id);
";

/// Version 3: batch aggregates sealed before they are sent: a member's aggregate key, an aggregate's message.
const MIGRATION_3: &str = "
ALTER TABLE ledger ADD COLUMN aggregate TEXT;
ALTER TABLE ledger ADD COLUMN plan_json TEXT;
";

/// Version 4: queue priority lanes. Each message carries its lane's priority (0 = critical, 1 = the rest;
/// messages of earlier releases are 1), and receives take the lowest priority first.
const MIGRATION_4: &str = "
ALTER TABLE queue_messages ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
CREATE INDEX queue_messages_priority ON queue_messages (queue, priority, visible_at_ms, id);
";

/// Version 5: the watched records (the sync's list): a partial index of the watch entries still watched.
const MIGRATION_5: &str = "
CREATE INDEX IF NOT EXISTS ledger_watched ON ledger (alert_id) WHERE delivery = 'watch' AND state = 'QUEUED';
";

/// Version 2: the ledger's claim fencing token and the two "not before" instants of a scheduled retry.
const MIGRATION_2: &str = "
ALTER TABLE ledger ADD COLUMN claim_token INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ledger ADD COLUMN no_create_before_ms INTEGER;
ALTER TABLE ledger ADD COLUMN not_before_ms INTEGER;
";

/// Connection settings shared by the writer and the readers.
fn configure(conn: &Connection, busy_timeout: Duration, durability: Durability) -> Result<(), LocalError> {
    conn.busy_timeout(busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(64);
    let sync = match durability {
        Durability::ProcessCrash => "NORMAL",
        Durability::PowerLoss => "FULL",
    };
    conn.execute_batch(&format!("PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"))?;
    Ok(())
}

/// Open the read-write connection, switch the file to WAL and bring the schema up to date.
pub fn open_writer(path: &Path, busy_timeout: Duration, durability: Durability) -> Result<Connection, LocalError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| LocalError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    conn.busy_timeout(busy_timeout)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LocalError::Open {
            path: path.to_path_buf(),
            reason: format!(
                "the file cannot use write-ahead logging (journal_mode is {mode}); use a file on a local disk"
            ),
        });
    }
    configure(&conn, busy_timeout, durability)?;
    migrate(&conn, path)?;
    // Checkpoints (copying the WAL back into the database file, with an fsync) run on the checkpointer
    // thread, not inside the commits of the callers.
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
    Ok(conn)
}

/// How often the checkpointer folds the WAL back into the database file.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Start the checkpointer thread: a `PASSIVE` checkpoint (never blocks the writer or readers) every
/// [`CHECKPOINT_INTERVAL`], until the returned sender is dropped.
pub fn start_checkpointer(
    path: &Path,
    busy_timeout: Duration,
    durability: Durability,
) -> Result<mpsc::Sender<()>, LocalError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| LocalError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    configure(&conn, busy_timeout, durability)?;
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("relay-sqlite-checkpointer".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_INTERVAL) {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "wal checkpoint skipped");
                }
            }
        })
        .map_err(|e| LocalError::Transaction(format!("cannot start the checkpointer thread: {e}")))?;
    Ok(stop)
}

/// Bring the schema to [`SCHEMA_VERSION`] inside one write transaction (so two processes opening a new
/// file at once do not both create it).
fn migrate(conn: &Connection, path: &Path) -> Result<(), LocalError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(LocalError::SchemaTooNew {
                path: path.to_path_buf(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < 1 {
            conn.execute_batch(MIGRATION_1)?;
        }
        if version < 2 {
            conn.execute_batch(MIGRATION_2)?;
        }
        if version < 3 {
            conn.execute_batch(MIGRATION_3)?;
        }
        if version < 4 {
            conn.execute_batch(MIGRATION_4)?;
        }
        if version < 5 {
            conn.execute_batch(MIGRATION_5)?;
        }
        // Later migrations go here: `if version < 6 { ... }`.
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            conn.execute_batch("COMMIT")?;
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The writer thread
// ---------------------------------------------------------------------------------------------------------

/// One unit of work for the writer thread.
trait WriteJob: Send {
    /// Run inside the open transaction; false when the job failed (its savepoint is rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answer the caller once the transaction's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

struct TypedJob<T, F> {
    work: Option<F>,
    outcome: Option<Result<T, LocalError>>,
    reply: oneshot::Sender<Result<T, LocalError>>,
}

impl<T, F> WriteJob for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, LocalError> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let work = self.work.take().expect("a write job runs once");
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(LocalError::Transaction("a write job panicked".into())));
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let answer = match commit {
            Ok(()) => self
                .outcome
                .unwrap_or_else(|| Err(LocalError::Transaction("the job did not run".into()))),
            Err(e) => Err(LocalError::Transaction(e)),
        };
        // The caller may have given up waiting (a cancelled future); the write stands regardless.
        let _ = self.reply.send(answer);
    }
}

/// The sending side of the writer thread. Dropping the last one ends the thread.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Box<dyn WriteJob>>,
}

impl Writer {
    /// Start the writer thread on `conn`.
    pub fn start(conn: Connection, path: &Path) -> Result<Writer, LocalError> {
        let (tx, rx) = mpsc::channel::<Box<dyn WriteJob>>();
        std::thread::Builder::new()
            .name(format!(
                "relay-sqlite-writer:{}",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("db")
            ))
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| LocalError::Transaction(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { jobs: tx })
    }

    /// Run `work` in a write transaction; resolves once it is committed (or failed).
    pub async fn run<T, F>(&self, work: F) -> Result<T, LocalError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, LocalError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(TypedJob {
            work: Some(work),
            outcome: None,
            reply,
        });
        self.jobs.send(job).map_err(|_| LocalError::Closed)?;
        answer.await.map_err(|_| LocalError::Closed)?
    }
}

fn exec(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn writer_loop(conn: Connection, jobs: mpsc::Receiver<Box<dyn WriteJob>>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_JOBS_PER_TRANSACTION {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = exec(&conn, "BEGIN IMMEDIATE") {
            let reason = format!("cannot start a write transaction: {e}");
            for job in batch {
                job.finish(Err(reason.clone()));
            }
            continue;
        }
        let mut broken: Option<String> = None;
        for job in batch.iter_mut() {
            if let Err(e) = exec(&conn, "SAVEPOINT job") {
                broken = Some(format!("savepoint failed: {e}"));
                break;
            }
            let ok = job.run(&conn);
            let end = if ok {
                exec(&conn, "RELEASE job")
            } else {
                exec(&conn, "ROLLBACK TO job").and_then(|_| exec(&conn, "RELEASE job"))
            };
            if let Err(e) = end {
                broken = Some(format!("savepoint release failed: {e}"));
                break;
            }
        }
        let commit = match broken {
            Some(reason) => Err(reason),
            None => exec(&conn, "COMMIT").map_err(|e| format!("commit failed: {e}")),
        };
        if commit.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for job in batch {
            job.finish(commit.clone());
        }
    }
    // All senders are gone: fold the WAL back into the database file on a clean close.
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
}

// ---------------------------------------------------------------------------------------------------------
// Readers
// ---------------------------------------------------------------------------------------------------------

/// Read-only connections, opened on demand and kept for reuse.
pub struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    durability: Durability,
    idle: Mutex<Vec<Connection>>,
}

/// How many idle read connections are kept.
const MAX_IDLE_READERS: usize = 8;

impl Readers {
    pub fn new(path: PathBuf, busy_timeout: Duration, durability: Durability) -> Arc<Readers> {
        Arc::new(Readers {
            path,
            busy_timeout,
            durability,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn take(&self) -> Result<Connection, LocalError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| LocalError::Open {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        configure(&conn, self.busy_timeout, self.durability)?;
        Ok(conn)
    }

    fn put_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }

    /// Run a read on the blocking pool with a pooled read-only connection.
    pub async fn run<T, F>(self: &Arc<Self>, work: F) -> Result<T, LocalError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, LocalError> + Send + 'static,
    {
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let out = work(&conn);
            readers.put_back(conn);
            out
        })
        .await
        .map_err(|e| LocalError::Transaction(format!("a read task failed: {e}")))?
    }
}
