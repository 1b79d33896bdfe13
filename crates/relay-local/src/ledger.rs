//! [`SqliteLedger`]: the delivery [`Ledger`] on the shared SQLite file.
//!
//! Every transition reads the row and writes it back inside one write transaction (the writer thread's
//! `BEGIN IMMEDIATE`), so it is a compare-and-set: two deliverers, in this process or another one on the
//! same file, can never both be granted a claim.

use std::sync::Arc;

use async_trait::async_trait;
use relay_ports::{Accept, Claim, DeliveryState, Ledger, LedgerEntry, PortError, RecordRef, RetryLater, transition};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{LocalError, StoreInner};

/// Which entries [`SqliteLedger::list_recent`] returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<DeliveryState>,
    /// Updated at or after (epoch ms).
    pub since_ms: Option<i64>,
    /// A record type (`security_incident`, …) or a rule name.
    pub kind: Option<String>,
    pub limit: u32,
}

/// The delivery ledger. Cheap to clone.
#[derive(Clone)]
pub struct SqliteLedger {
    store: Arc<StoreInner>,
}

impl std::fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLedger").field("path", &self.store.path).finish()
    }
}

const COLUMNS: &str = "alert_id, webhook_id, state, attempts, first_received_at_ms, updated_at_ms, lease_until_ms, \
     needs_lookup, rule, record_type, target_table, severity, delivery, correlation_id, config_hash, record_json, \
     last_error_class, last_error, expires_at_s, claim_token, no_create_before_ms, not_before_ms, aggregate, plan_json";

/// The entries a query's rows ([`read_entry`]) hold; the first unreadable one is the error.
fn entries(
    rows: impl Iterator<Item = rusqlite::Result<Result<LedgerEntry, LocalError>>>,
) -> Result<Vec<LedgerEntry>, LocalError> {
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

fn read_entry(r: &Row<'_>) -> rusqlite::Result<Result<LedgerEntry, LocalError>> {
    let alert_id: String = r.get(0)?;
    let state: String = r.get(2)?;
    let record_json: Option<String> = r.get(15)?;
    let Some(state) = DeliveryState::parse(&state) else {
        return Ok(Err(LocalError::Corrupt(format!(
            "ledger entry {alert_id} has unknown state {state:?}"
        ))));
    };
    let record = match record_json.map(|j| serde_json::from_str::<RecordRef>(&j)).transpose() {
        Ok(r) => r,
        Err(e) => {
            return Ok(Err(LocalError::Corrupt(format!(
                "ledger entry {alert_id} has a bad record: {e}"
            ))));
        }
    };
    Ok(Ok(LedgerEntry {
        alert_id,
        webhook_id: r.get(1)?,
        state,
        attempts: r.get(3)?,
        first_received_at_ms: r.get(4)?,
        updated_at_ms: r.get(5)?,
        lease_until_ms: r.get(6)?,
        needs_lookup: r.get(7)?,
        rule: r.get(8)?,
        record_type: r.get(9)?,
        table: r.get(10)?,
        severity: r.get(11)?,
        delivery: r.get(12)?,
        correlation_id: r.get(13)?,
        config_hash: r.get(14)?,
        record,
        last_error_class: r.get(16)?,
        last_error: r.get(17)?,
        expires_at_s: r.get(18)?,
        claim_token: r.get::<_, i64>(19)? as u64,
        no_create_before_ms: r.get(20)?,
        not_before_ms: r.get(21)?,
        aggregate: r.get(22)?,
        plan: r.get(23)?,
    }))
}

/// The stored entry, expired or not.
fn load(conn: &Connection, alert_id: &str) -> Result<Option<LedgerEntry>, LocalError> {
    let found = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM ledger WHERE alert_id = ?1"))?
        .query_row(params![alert_id], read_entry)
        .optional()?;
    found.transpose()
}

/// Write `e` (insert or replace the whole row).
fn store(conn: &Connection, e: &LedgerEntry) -> Result<(), LocalError> {
    let record = e
        .record
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|err| {
            LocalError::Rejected(format!(
                "ledger entry {} has a record that cannot be stored: {err}",
                e.alert_id
            ))
        })?;
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO ledger ({COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)"
    ))?
    .execute(params![
        e.alert_id,
        e.webhook_id,
        e.state.as_str(),
        e.attempts,
        e.first_received_at_ms,
        e.updated_at_ms,
        e.lease_until_ms,
        e.needs_lookup,
        e.rule,
        e.record_type,
        e.table,
        e.severity,
        e.delivery,
        e.correlation_id,
        e.config_hash,
        record,
        e.last_error_class,
        e.last_error,
        e.expires_at_s,
        e.claim_token as i64,
        e.no_create_before_ms,
        e.not_before_ms,
        e.aggregate,
        e.plan,
    ])?;
    Ok(())
}

fn is_expired(e: &LedgerEntry, now_ms: i64) -> bool {
    e.expires_at_s < now_ms.div_euclid(1000)
}

/// The fence of every write after a claim: the stored entry must still carry the caller's token (the
/// read-modify-write runs in one write transaction, so this is `... WHERE claim_token = ?`).
/// A transition's refusal as the store's error (a stale claim stays `Stale`).
fn port_error(e: PortError) -> LocalError {
    match e {
        PortError::Stale(m) => LocalError::Stale(m),
        PortError::NotFound(m) => LocalError::NotFound(m),
        other => LocalError::Rejected(other.to_string()),
    }
}

fn missing(alert_id: &str) -> LocalError {
    LocalError::NotFound(format!("no ledger entry for alert {alert_id}"))
}

/// `deliveries` as an SQL list (`('thread', 'event')`); they are plain identifiers, never user input.
fn sql_list(deliveries: &[&str]) -> String {
    let quoted: Vec<String> = deliveries.iter().map(|d| format!("'{d}'")).collect();
    format!("({})", quoted.join(", "))
}

impl SqliteLedger {
    pub(crate) fn new(store: Arc<StoreInner>) -> Self {
        SqliteLedger { store }
    }

    /// Read-modify-write one live (unexpired) entry in a write transaction.
    async fn update<T, F>(&self, alert_id: &str, change: F) -> Result<T, LocalError>
    where
        T: Send + 'static,
        F: FnOnce(Option<LedgerEntry>) -> Result<(Option<LedgerEntry>, T), LocalError> + Send + 'static,
    {
        let id = alert_id.to_string();
        let now = self.store.now_ms();
        self.store
            .writer
            .run(move |conn| {
                let current = load(conn, &id)?.filter(|e| !is_expired(e, now));
                let (new, out) = change(current)?;
                if let Some(new) = new {
                    store(conn, &new)?;
                }
                Ok(out)
            })
            .await
    }

    /// Apply a fenced transition to an existing entry: `change` answers whether the entry changed (then it
    /// is written) and the result; a missing entry is `NotFound`.
    async fn apply<T, F>(&self, alert_id: &str, change: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&mut LedgerEntry) -> Result<(bool, T), PortError> + Send + 'static,
    {
        let id = alert_id.to_string();
        Ok(self
            .update(alert_id, move |current| {
                let mut e = current.ok_or_else(|| missing(&id))?;
                let (changed, out) = change(&mut e).map_err(port_error)?;
                Ok((changed.then_some(e), out))
            })
            .await?)
    }

    /// Entries in `state`, oldest update first, at most `limit` (for `relay status` and operator tools).
    /// Alerts only: the entries of [`relay_ports::NOT_ALERT_DELIVERIES`] (a thread's own, a lifecycle
    /// event's, a callback's, a record's watch entry) are not listed.
    pub async fn list_in_state(&self, state: DeliveryState, limit: u32) -> Result<Vec<LedgerEntry>, LocalError> {
        let now = self.store.now_ms();
        self.store
            .readers
            .run(move |conn| {
                let not_alerts = sql_list(&relay_ports::NOT_ALERT_DELIVERIES);
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM ledger WHERE state = ?1 AND expires_at_s >= ?2 AND delivery NOT IN {not_alerts} \
                     ORDER BY updated_at_ms, alert_id LIMIT ?3"
                ))?;
                let rows = stmt.query_map(params![state.as_str(), now.div_euclid(1000), limit], read_entry)?;
                entries(rows)
            })
            .await
    }

    /// Entries matching `filter`, most recently updated first (for `relay list` and the operator page);
    /// alerts only, as [`SqliteLedger::list_in_state`].
    pub async fn list_recent(&self, filter: ListFilter) -> Result<Vec<LedgerEntry>, LocalError> {
        let now = self.store.now_ms();
        self.store
            .readers
            .run(move |conn| {
                let not_alerts = sql_list(&relay_ports::NOT_ALERT_DELIVERIES);
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM ledger WHERE expires_at_s >= ?1 AND delivery NOT IN {not_alerts} \
                     AND (?2 IS NULL OR state = ?2) AND updated_at_ms >= ?3 \
                     AND (?4 IS NULL OR record_type = ?4 OR rule = ?4) \
                     ORDER BY updated_at_ms DESC, alert_id LIMIT ?5"
                ))?;
                let rows = stmt.query_map(
                    params![
                        now.div_euclid(1000),
                        filter.state.map(DeliveryState::as_str),
                        filter.since_ms.unwrap_or(i64::MIN),
                        filter.kind,
                        filter.limit
                    ],
                    read_entry,
                )?;
                entries(rows)
            })
            .await
    }

    /// Every live alert and lifecycle-event entry (threads' own, callbacks and watch entries left out), for reports over the
    /// retention.
    pub async fn alerts_and_events(&self) -> Result<Vec<LedgerEntry>, LocalError> {
        let now = self.store.now_ms();
        self.store
            .readers
            .run(move |conn| {
                let not_reported: Vec<&str> = relay_ports::NOT_ALERT_DELIVERIES
                    .into_iter()
                    .filter(|d| *d != relay_ports::EVENT_DELIVERY)
                    .collect();
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM ledger WHERE expires_at_s >= ?1 AND delivery NOT IN {} ORDER BY alert_id",
                    sql_list(&not_reported)
                ))?;
                let rows = stmt.query_map(params![now.div_euclid(1000)], read_entry)?;
                entries(rows)
            })
            .await
    }

    /// Delete entries whose `expires_at_s` has passed (SQLite has no TTL); returns how many.
    pub async fn purge_expired(&self) -> Result<u64, LocalError> {
        let now_s = self.store.now_ms().div_euclid(1000);
        self.store
            .writer
            .run(move |conn| {
                let n = conn
                    .prepare_cached("DELETE FROM ledger WHERE expires_at_s < ?1")?
                    .execute(params![now_s])?;
                Ok(n as u64)
            })
            .await
    }
}

#[async_trait]
impl Ledger for SqliteLedger {
    async fn accept(&self, entry: &LedgerEntry) -> Result<Accept, PortError> {
        let entry = entry.clone();
        Ok(self
            .update(&entry.alert_id.clone(), move |current| match current {
                Some(existing) => Ok((None, Accept::Duplicate(existing))),
                None => Ok((Some(entry), Accept::New)),
            })
            .await?)
    }

    async fn mark_queued(&self, alert_id: &str, now_ms: i64) -> Result<(), PortError> {
        Ok(self
            .update(alert_id, move |current| {
                let Some(mut e) = current else {
                    return Ok((None, ()));
                };
                let changed = transition::mark_queued(&mut e, now_ms);
                Ok((changed.then_some(e), ()))
            })
            .await?)
    }

    async fn forget(&self, alert_id: &str) -> Result<(), PortError> {
        let id = alert_id.to_string();
        Ok(self
            .store
            .writer
            .run(move |conn| {
                conn.prepare_cached("DELETE FROM ledger WHERE alert_id = ?1 AND state = 'ACCEPTED'")?
                    .execute(params![id])?;
                Ok(())
            })
            .await?)
    }

    async fn claim(&self, alert_id: &str, now_ms: i64, lease_ms: i64) -> Result<Claim, PortError> {
        Ok(self
            .update(alert_id, move |current| {
                let Some(mut e) = current else {
                    return Ok((None, Claim::Missing));
                };
                let (claim, changed) = transition::claim(&mut e, now_ms, lease_ms);
                Ok((changed.then_some(e), claim))
            })
            .await?)
    }

    async fn extend(&self, alert_id: &str, token: u64, now_ms: i64, lease_ms: i64) -> Result<i64, PortError> {
        self.apply(alert_id, move |e| {
            let until = transition::extend(e, token, now_ms, lease_ms)?;
            Ok((true, until))
        })
        .await
    }

    async fn complete(&self, alert_id: &str, token: u64, record: &RecordRef, now_ms: i64) -> Result<(), PortError> {
        let record = record.clone();
        self.apply(alert_id, move |e| {
            Ok((transition::complete(e, token, &record, now_ms)?, ()))
        })
        .await
    }

    async fn retry_later(&self, alert_id: &str, token: u64, retry: &RetryLater, now_ms: i64) -> Result<(), PortError> {
        let retry = retry.clone();
        self.apply(alert_id, move |e| {
            Ok((transition::retry_later(e, token, &retry, now_ms)?, ()))
        })
        .await
    }

    async fn fail(
        &self,
        alert_id: &str,
        token: u64,
        error_class: &str,
        error: &str,
        now_ms: i64,
    ) -> Result<(), PortError> {
        let (class, error) = (error_class.to_string(), error.to_string());
        self.apply(alert_id, move |e| {
            Ok((transition::fail(e, token, &class, &error, now_ms)?, ()))
        })
        .await
    }

    async fn reopen(&self, alert_id: &str, token: u64, now_ms: i64, expires_at_s: i64) -> Result<bool, PortError> {
        Ok(self
            .update(alert_id, move |current| {
                let Some(mut e) = current else {
                    return Ok((None, false));
                };
                let reopened = transition::reopen(&mut e, token, now_ms, expires_at_s).map_err(port_error)?;
                Ok((reopened.then_some(e), reopened))
            })
            .await?)
    }

    async fn aggregate(&self, plan: &LedgerEntry, members: &[(String, u64)], now_ms: i64) -> Result<(), PortError> {
        transition::check_aggregate_request(plan, members)?;
        let (plan, members) = (plan.clone(), members.to_vec());
        let now = self.store.now_ms();
        Ok(self
            .store
            .writer
            .run(move |conn| {
                // one write transaction: every row is read and written, or none is
                let live = |key: &str| -> Result<Option<LedgerEntry>, LocalError> {
                    Ok(load(conn, key)?.filter(|e| !is_expired(e, now)))
                };
                let existing = live(&plan.alert_id)?;
                let mut found = Vec::with_capacity(members.len());
                for (key, token) in &members {
                    found.push((live(key)?, key.as_str(), *token));
                }
                let sealed = transition::seal(&plan, existing.as_ref(), found, now_ms).map_err(port_error)?;
                for e in &sealed {
                    store(conn, e)?;
                }
                Ok(())
            })
            .await?)
    }

    async fn watched(&self, after: Option<&str>, limit: u32) -> Result<Vec<LedgerEntry>, PortError> {
        let now = self.store.now_ms();
        let after = after.map(str::to_owned);
        let limit = limit.min(relay_ports::MAX_WATCH_PAGE);
        Ok(self
            .store
            .readers
            .run(move |conn| {
                // the partial index `ledger_watched` holds exactly these rows, in key order
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM ledger INDEXED BY ledger_watched \
                     WHERE delivery = 'watch' AND state = 'QUEUED' AND alert_id > ?1 AND expires_at_s >= ?2 \
                     ORDER BY alert_id LIMIT ?3"
                ))?;
                let rows = stmt.query_map(
                    params![after.unwrap_or_default(), now.div_euclid(1000), limit],
                    read_entry,
                )?;
                entries(rows)
            })
            .await?)
    }

    async fn observe(
        &self,
        key: &str,
        expected: Option<&str>,
        plan: &str,
        done: bool,
        now_ms: i64,
    ) -> Result<bool, PortError> {
        let expected = expected.map(str::to_owned);
        let plan = plan.to_string();
        Ok(self
            .update(key, move |current| {
                let Some(mut e) = current.filter(|e| e.plan == expected) else {
                    return Ok((None, false));
                };
                e.plan = Some(plan);
                e.updated_at_ms = now_ms;
                if done {
                    e.state = DeliveryState::Completed;
                }
                Ok((Some(e), true))
            })
            .await?)
    }

    async fn get(&self, alert_id: &str) -> Result<Option<LedgerEntry>, PortError> {
        let id = alert_id.to_string();
        let now = self.store.now_ms();
        Ok(self
            .store
            .readers
            .run(move |conn| Ok(load(conn, &id)?.filter(|e| !is_expired(e, now))))
            .await?)
    }
}
