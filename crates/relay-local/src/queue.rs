//! [`SqliteQueue`]: an [`AlertQueue`] with SQS semantics on the shared SQLite file.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use relay_ports::{AlertQueue, MAX_MESSAGE_BYTES, PortError, ReceivedMessage};
use rusqlite::{OptionalExtension, params};
use tokio::sync::Notify;

use crate::{LocalError, StoreInner};

/// Longest `send` delay (as SQS `DelaySeconds`: 15 minutes).
pub use relay_ports::MAX_SEND_DELAY;
/// Longest `change_visibility` delay (as SQS `ChangeMessageVisibility`: 12 hours).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(12 * 3600);
/// Most messages one `receive` returns (as SQS).
pub const MAX_RECEIVE: u32 = 10;

/// A message as stored, for operator tools (`relay replay-dlq --local`); reading it changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub message_id: String,
    pub body: String,
    pub sent_at_ms: i64,
    /// When it is (or becomes again) visible to `receive`.
    pub visible_at_ms: i64,
    /// How many times it was received.
    pub receive_count: u32,
}

/// The priority stored with a critical message: received before every other message of its queue.
pub const CRITICAL_PRIORITY: i64 = 0;
/// The priority of every other message (and of messages written before priorities existed).
pub const NORMAL_PRIORITY: i64 = 1;

/// Which messages of a queue a handle sends and receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Sends at [`NORMAL_PRIORITY`]; receives every message, critical ones first.
    All,
    /// Sends at [`CRITICAL_PRIORITY`]; receives (and counts) critical messages only.
    Critical,
}

/// One named queue in the store. Cheap to clone.
///
/// A queue has two lanes: [`SqliteQueue::critical_lane`] sends messages that every receive hands out
/// before the others (whenever both are visible), and receives only those, so a worker reserved for it
/// is never busy with other work.
#[derive(Clone)]
pub struct SqliteQueue {
    store: Arc<StoreInner>,
    name: Arc<str>,
    lane: Lane,
    /// Wakes receivers of the whole queue.
    signal: Arc<Notify>,
    /// Wakes receivers of the critical lane only.
    critical_signal: Arc<Notify>,
    visibility_timeout: Duration,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue")
            .field("name", &self.name)
            .field("lane", &self.lane)
            .field("visibility_timeout", &self.visibility_timeout)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A per-process random prefix plus a counter: receipts differ on every receive, in every process.
fn receipt_nonce() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string());
    format!("{prefix}{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The row id a receipt (`<row id>.<receive count>.<nonce>`) names, or `None` if it is not one of ours.
fn receipt_row(receipt: &str) -> Option<i64> {
    let mut parts = receipt.splitn(3, '.');
    let row = parts.next()?.parse::<i64>().ok()?;
    parts.next()?.parse::<u32>().ok()?;
    let nonce = parts.next()?;
    (!nonce.is_empty()).then_some(row)
}

impl SqliteQueue {
    pub(crate) fn new(store: Arc<StoreInner>, name: String, visibility_timeout: Duration) -> Self {
        SqliteQueue {
            signal: store.signal(&name),
            critical_signal: store.signal(&format!("{name}#critical")),
            store,
            name: name.into(),
            lane: Lane::All,
            visibility_timeout,
        }
    }

    /// This queue's critical lane: a handle whose sends are received before every other message of the
    /// queue, and whose receives (and `depth`) see the critical messages only. Deletes and visibility
    /// changes by receipt work from either handle; a retried message keeps its priority.
    pub fn critical_lane(mut self) -> Self {
        self.lane = Lane::Critical;
        self
    }

    /// The priority this handle sends at.
    fn priority(&self) -> i64 {
        match self.lane {
            Lane::All => NORMAL_PRIORITY,
            Lane::Critical => CRITICAL_PRIORITY,
        }
    }

    /// The highest priority number this handle receives.
    fn receives_up_to(&self) -> i64 {
        match self.lane {
            Lane::All => NORMAL_PRIORITY,
            Lane::Critical => CRITICAL_PRIORITY,
        }
    }

    /// Wake a receiver that can take a message sent at this handle's priority.
    fn wake(&self) {
        if self.lane == Lane::Critical {
            self.critical_signal.notify_one();
        }
        self.signal.notify_one();
    }

    /// The signal this handle's receives wait on.
    fn waits_on(&self) -> &Notify {
        match self.lane {
            Lane::All => &self.signal,
            Lane::Critical => &self.critical_signal,
        }
    }

    /// This handle with another visibility timeout (how long a received message stays invisible).
    pub fn with_visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn visibility_timeout(&self) -> Duration {
        self.visibility_timeout
    }

    /// Up to `limit` messages in send order, visible or not, without receiving them (nothing changes).
    pub async fn list(&self, limit: u32) -> Result<Vec<QueuedMessage>, LocalError> {
        self.list_after(None, limit).await
    }

    /// Like [`list`](Self::list), continuing after the message `after` (for paging through a long DLQ).
    pub async fn list_after(&self, after: Option<&str>, limit: u32) -> Result<Vec<QueuedMessage>, LocalError> {
        let name = Arc::clone(&self.name);
        let after = after.map(str::to_string);
        self.store
            .readers
            .run(move |conn| {
                let after_row: i64 = match after {
                    None => 0,
                    Some(id) => conn
                        .prepare_cached("SELECT id FROM queue_messages WHERE message_id = ?1 AND queue = ?2")?
                        .query_row(params![id, &*name], |r| r.get(0))
                        .optional()?
                        .ok_or_else(|| LocalError::NotFound(format!("message {id} is not on queue {name}")))?,
                };
                let mut stmt = conn.prepare_cached(
                    "SELECT message_id, body, sent_at_ms, visible_at_ms, receive_count FROM queue_messages
                     WHERE queue = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![&*name, after_row, limit], |r| {
                    Ok(QueuedMessage {
                        message_id: r.get(0)?,
                        body: r.get(1)?,
                        sent_at_ms: r.get(2)?,
                        visible_at_ms: r.get(3)?,
                        receive_count: r.get(4)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// Remove the message `message_id` regardless of leases (operator tools). False if it was not there.
    pub async fn remove(&self, message_id: &str) -> Result<bool, LocalError> {
        let name = Arc::clone(&self.name);
        let id = message_id.to_string();
        self.store
            .writer
            .run(move |conn| {
                let n = conn
                    .prepare_cached("DELETE FROM queue_messages WHERE message_id = ?1 AND queue = ?2")?
                    .execute(params![id, &*name])?;
                Ok(n > 0)
            })
            .await
    }

    /// Move the message `message_id` to the queue `to`, visible there at once, in one transaction (never
    /// lost, never on both queues), at the priority of `to`'s lane. It gets a new message id and send time.
    /// Returns the new id, or `None` if
    /// the message was not on this queue. This is what `relay replay-dlq --local` uses.
    pub async fn move_to(&self, message_id: &str, to: &SqliteQueue) -> Result<Option<String>, LocalError> {
        if !Arc::ptr_eq(&self.store, &to.store) {
            return Err(LocalError::Rejected(
                "move_to needs two queues of the same store".into(),
            ));
        }
        let from = Arc::clone(&self.name);
        let dest = Arc::clone(&to.name);
        let id = message_id.to_string();
        let now = self.store.now_ms();
        let priority = to.priority();
        let moved = self
            .store
            .writer
            .run(move |conn| {
                let body: Option<String> = conn
                    .prepare_cached("DELETE FROM queue_messages WHERE message_id = ?1 AND queue = ?2 RETURNING body")?
                    .query_row(params![id, &*from], |r| r.get(0))
                    .optional()?;
                let Some(body) = body else { return Ok(None) };
                let new_id = uuid::Uuid::new_v4().to_string();
                conn.prepare_cached(
                    "INSERT INTO queue_messages (queue, message_id, body, sent_at_ms, visible_at_ms, priority)
                     VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                )?
                .execute(params![&*dest, new_id, body, now, priority])?;
                Ok(Some(new_id))
            })
            .await?;
        if moved.is_some() {
            to.wake();
        }
        Ok(moved)
    }

    /// One receive attempt: lease up to `max` visible messages of this handle's lane, the lowest priority
    /// first, then in the order they became visible. When none is visible, also says when the next one
    /// becomes visible (so a waiting receiver sleeps exactly that long).
    async fn try_receive(&self, max: u32) -> Result<(Vec<ReceivedMessage>, Option<i64>), LocalError> {
        let name = Arc::clone(&self.name);
        let up_to = self.receives_up_to();
        let now = self.store.now_ms();
        let until = now.saturating_add(millis(self.visibility_timeout));
        let nonce = receipt_nonce();
        self.store
            .writer
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "UPDATE queue_messages
                     SET visible_at_ms = ?3, receive_count = receive_count + 1,
                         receipt = id || '.' || (receive_count + 1) || '.' || ?4
                     WHERE id IN (SELECT id FROM queue_messages
                                  WHERE queue = ?1 AND priority <= ?6 AND visible_at_ms <= ?2
                                  ORDER BY priority, visible_at_ms, id LIMIT ?5)
                     RETURNING id, priority, message_id, receipt, body, sent_at_ms, receive_count",
                )?;
                let mut got = stmt
                    .query_map(params![&*name, now, until, nonce, max, up_to], |r| {
                        Ok((
                            (r.get::<_, i64>(1)?, r.get::<_, i64>(0)?),
                            ReceivedMessage {
                                message_id: r.get(2)?,
                                receipt: r.get(3)?,
                                body: r.get(4)?,
                                sent_at_ms: r.get(5)?,
                                receive_count: r.get(6)?,
                            },
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                if !got.is_empty() {
                    // RETURNING has no order: critical first, then by row (the send order)
                    got.sort_by_key(|(key, _)| *key);
                    return Ok((got.into_iter().map(|(_, m)| m).collect(), None));
                }
                let next: Option<i64> = conn
                    .prepare_cached(
                        "SELECT MIN(visible_at_ms) FROM queue_messages WHERE queue = ?1 AND priority <= ?2",
                    )?
                    .query_row(params![&*name, up_to], |r| r.get(0))?;
                Ok((Vec::new(), next))
            })
            .await
    }

    async fn receive_inner(&self, max: u32, wait: Duration) -> Result<Vec<ReceivedMessage>, LocalError> {
        if max == 0 || max > MAX_RECEIVE {
            return Err(LocalError::Rejected(format!(
                "receive max must be 1..={MAX_RECEIVE}, got {max}"
            )));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for the wake-up before looking, so a send between the look and the wait is not missed.
            let woken = self.waits_on().notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let (got, next_visible) = self.try_receive(max).await?;
            if !got.is_empty() {
                return Ok(got);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(got);
            }
            let mut sleep = (deadline - now).min(self.store.options.poll_interval);
            if let Some(at) = next_visible {
                let until_visible = Duration::from_millis(u64::try_from(at - self.store.now_ms()).unwrap_or(0));
                sleep = sleep.min(until_visible.max(Duration::from_millis(1)));
            }
            let _ = tokio::time::timeout(sleep, woken).await;
        }
    }

    async fn send_inner(&self, body: &str, delay: Duration) -> Result<String, LocalError> {
        if body.is_empty() || body.len() > MAX_MESSAGE_BYTES {
            return Err(LocalError::Rejected(format!(
                "message body is {} bytes; a body must be 1 to {MAX_MESSAGE_BYTES} bytes",
                body.len()
            )));
        }
        if delay > MAX_SEND_DELAY {
            return Err(LocalError::Rejected(format!(
                "send delay {delay:?} exceeds the maximum of {MAX_SEND_DELAY:?}; use change_visibility for longer"
            )));
        }
        let name = Arc::clone(&self.name);
        let body = body.to_string();
        let now = self.store.now_ms();
        let visible = now + millis(delay);
        let id = uuid::Uuid::new_v4().to_string();
        let message_id = id.clone();
        let priority = self.priority();
        self.store
            .writer
            .run(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO queue_messages (queue, message_id, body, sent_at_ms, visible_at_ms, priority)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![&*name, message_id, body, now, visible, priority])?;
                Ok(())
            })
            .await?;
        self.wake();
        Ok(id)
    }

    fn parse_receipt(&self, receipt: &str) -> Result<i64, LocalError> {
        receipt_row(receipt)
            .ok_or_else(|| LocalError::NotFound(format!("{receipt:?} is not a receipt of queue {}", self.name)))
    }

    async fn delete_inner(&self, receipt: &str) -> Result<(), LocalError> {
        let row = self.parse_receipt(receipt)?;
        let name = Arc::clone(&self.name);
        let receipt = receipt.to_string();
        self.store
            .writer
            .run(move |conn| {
                let n = conn
                    .prepare_cached("DELETE FROM queue_messages WHERE id = ?1 AND queue = ?2 AND receipt = ?3")?
                    .execute(params![row, &*name, receipt])?;
                if n == 0 {
                    return Err(LocalError::NotFound(format!(
                        "receipt {receipt} of queue {name} is stale (the message was received again) or its message is gone"
                    )));
                }
                Ok(())
            })
            .await
    }

    /// Every delete in one write transaction.
    async fn delete_batch_inner(&self, receipts: &[String]) -> Result<Vec<Result<(), PortError>>, LocalError> {
        let name = Arc::clone(&self.name);
        let rows: Vec<(String, Option<i64>)> = receipts.iter().map(|r| (r.clone(), receipt_row(r))).collect();
        self.store
            .writer
            .run(move |conn| {
                let mut stmt =
                    conn.prepare_cached("DELETE FROM queue_messages WHERE id = ?1 AND queue = ?2 AND receipt = ?3")?;
                let mut out = Vec::with_capacity(rows.len());
                for (receipt, row) in &rows {
                    let deleted = match row {
                        Some(row) => stmt.execute(params![row, &*name, receipt])? > 0,
                        None => false,
                    };
                    out.push(if deleted {
                        Ok(())
                    } else {
                        Err(PortError::NotFound(format!(
                            "receipt {receipt} of queue {name} is stale or its message is gone"
                        )))
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn change_visibility_inner(&self, receipt: &str, delay: Duration) -> Result<(), LocalError> {
        if delay > MAX_RETRY_DELAY {
            return Err(LocalError::Rejected(format!(
                "change_visibility delay {delay:?} exceeds the maximum of {MAX_RETRY_DELAY:?}"
            )));
        }
        let row = self.parse_receipt(receipt)?;
        let name = Arc::clone(&self.name);
        let receipt = receipt.to_string();
        let visible = self.store.now_ms() + millis(delay);
        self.store
            .writer
            .run(move |conn| {
                let n = conn
                    .prepare_cached(
                        "UPDATE queue_messages SET visible_at_ms = ?4 WHERE id = ?1 AND queue = ?2 AND receipt = ?3",
                    )?
                    .execute(params![row, &*name, receipt, visible])?;
                if n == 0 {
                    return Err(LocalError::NotFound(format!(
                        "receipt {receipt} of queue {name} is stale (the message was received again) or its message is gone"
                    )));
                }
                Ok(())
            })
            .await?;
        if delay.is_zero() {
            // the message may be critical whichever handle put it back
            self.critical_signal.notify_one();
            self.signal.notify_one();
        }
        Ok(())
    }

    async fn depth_inner(&self) -> Result<u64, LocalError> {
        let name = Arc::clone(&self.name);
        let up_to = self.receives_up_to();
        self.store
            .readers
            .run(move |conn| {
                let n: i64 = conn
                    .prepare_cached("SELECT COUNT(*) FROM queue_messages WHERE queue = ?1 AND priority <= ?2")?
                    .query_row(params![&*name, up_to], |r| r.get(0))?;
                Ok(u64::try_from(n).unwrap_or(0))
            })
            .await
    }
}

#[async_trait]
impl AlertQueue for SqliteQueue {
    async fn send(&self, body: &str, delay: Duration) -> Result<String, PortError> {
        Ok(self.send_inner(body, delay).await?)
    }

    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<ReceivedMessage>, PortError> {
        Ok(self.receive_inner(max, wait).await?)
    }

    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        Ok(self.delete_inner(receipt).await?)
    }

    async fn delete_batch(&self, receipts: &[String]) -> Vec<Result<(), PortError>> {
        if receipts.is_empty() {
            return Vec::new();
        }
        match self.delete_batch_inner(receipts).await {
            Ok(out) => out,
            Err(e) => {
                let e = PortError::from(e);
                receipts.iter().map(|_| Err(e.clone())).collect()
            }
        }
    }

    async fn change_visibility(&self, receipt: &str, delay: Duration) -> Result<(), PortError> {
        Ok(self.change_visibility_inner(receipt, delay).await?)
    }

    async fn depth(&self) -> Result<u64, PortError> {
        Ok(self.depth_inner().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_parse_only_in_our_shape() {
        assert_eq!(receipt_row("17.2.abc"), Some(17));
        assert_eq!(receipt_row("not-a-receipt"), None);
        assert_eq!(receipt_row("17.x.abc"), None);
        assert_eq!(receipt_row("17.2."), None);
        assert_eq!(receipt_row("17"), None);
    }

    #[test]
    fn receipt_nonces_differ() {
        assert_ne!(receipt_nonce(), receipt_nonce());
    }
}
