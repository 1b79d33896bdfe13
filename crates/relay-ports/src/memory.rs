//! In-memory adapters (feature `memory`): a queue, a ledger, secrets and a notifier that live in the process,
//! for benchmarks of the handlers without AWS and for wiring tests. The queue and the ledger pass the ports'
//! conformance suite.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{
    Accept, AlertQueue, Claim, Clock, DeliveryState, Ledger, LedgerEntry, PortError, ReceivedMessage, RecordRef,
    RetryLater, SystemClock, transition,
};
use async_trait::async_trait;

struct Message {
    id: String,
    body: String,
    sent_at_ms: i64,
    visible_at_ms: i64,
    receipt: Option<String>,
    receive_count: u32,
}

/// A queue in memory with SQS's visibility semantics (no persistence, no size limit beyond SQS's).
pub struct MemoryQueue {
    visibility: Duration,
    messages: Mutex<VecDeque<Message>>,
    next: AtomicU64,
}

impl MemoryQueue {
    /// An empty queue whose received messages stay invisible for `visibility`.
    pub fn new(visibility: Duration) -> Self {
        MemoryQueue {
            visibility,
            messages: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(1),
        }
    }

    /// Every body on the queue (visible or not), oldest first.
    pub fn bodies(&self) -> Vec<String> {
        self.messages
            .lock()
            .expect("queue lock")
            .iter()
            .map(|m| m.body.clone())
            .collect()
    }

    /// Forget every message (benchmarks keep memory flat this way).
    pub fn clear(&self) {
        self.messages.lock().expect("queue lock").clear();
    }

    fn now() -> i64 {
        SystemClock.now_ms()
    }
}

#[async_trait]
impl AlertQueue for MemoryQueue {
    async fn send(&self, body: &str, delay: Duration) -> Result<String, PortError> {
        if body.is_empty() || body.len() > crate::MAX_MESSAGE_BYTES {
            return Err(PortError::Rejected(format!("message body of {} bytes", body.len())));
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("mem-{n}");
        let now = Self::now();
        self.messages.lock().expect("queue lock").push_back(Message {
            id: id.clone(),
            body: body.to_owned(),
            sent_at_ms: now,
            visible_at_ms: now + delay.as_millis() as i64,
            receipt: None,
            receive_count: 0,
        });
        Ok(id)
    }

    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<ReceivedMessage>, PortError> {
        let until = Self::now() + wait.as_millis() as i64;
        loop {
            let now = Self::now();
            let mut out = Vec::new();
            {
                let mut messages = self.messages.lock().expect("queue lock");
                for m in messages
                    .iter_mut()
                    .filter(|m| m.visible_at_ms <= now)
                    .take(max as usize)
                {
                    let receipt = format!("{}#{}", m.id, self.next.fetch_add(1, Ordering::Relaxed));
                    m.receipt = Some(receipt.clone());
                    m.visible_at_ms = now + self.visibility.as_millis() as i64;
                    m.receive_count += 1;
                    out.push(ReceivedMessage {
                        message_id: m.id.clone(),
                        receipt,
                        body: m.body.clone(),
                        sent_at_ms: m.sent_at_ms,
                        receive_count: m.receive_count,
                    });
                }
            }
            if !out.is_empty() || now >= until {
                return Ok(out);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        let mut messages = self.messages.lock().expect("queue lock");
        let before = messages.len();
        messages.retain(|m| m.receipt.as_deref() != Some(receipt));
        if messages.len() == before {
            return Err(PortError::Rejected(format!("unknown receipt {receipt:?}")));
        }
        Ok(())
    }

    async fn change_visibility(&self, receipt: &str, delay: Duration) -> Result<(), PortError> {
        let mut messages = self.messages.lock().expect("queue lock");
        let m = messages
            .iter_mut()
            .find(|m| m.receipt.as_deref() == Some(receipt))
            .ok_or_else(|| PortError::Rejected(format!("unknown receipt {receipt:?}")))?;
        m.visible_at_ms = Self::now() + delay.as_millis() as i64;
        Ok(())
    }

    async fn depth(&self) -> Result<u64, PortError> {
        Ok(self.messages.lock().expect("queue lock").len() as u64)
    }
}

/// A ledger in memory with the same conditional semantics as the DynamoDB and SQLite ledgers.
#[derive(Default)]
pub struct MemoryLedger {
    entries: Mutex<HashMap<String, LedgerEntry>>,
}

impl MemoryLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entries are held (expired ones included).
    pub fn len(&self) -> usize {
        self.entries.lock().expect("ledger lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget every entry.
    pub fn clear(&self) {
        self.entries.lock().expect("ledger lock").clear();
    }

    fn live<'a>(map: &'a mut HashMap<String, LedgerEntry>, id: &str) -> Option<&'a mut LedgerEntry> {
        let now_s = SystemClock.now_ms() / 1000;
        map.get_mut(id).filter(|e| e.expires_at_s >= now_s)
    }

    fn update<T>(&self, id: &str, f: impl FnOnce(&mut LedgerEntry) -> Result<T, PortError>) -> Result<T, PortError> {
        let mut map = self.entries.lock().expect("ledger lock");
        let e = Self::live(&mut map, id).ok_or_else(|| PortError::NotFound(format!("no ledger entry {id:?}")))?;
        f(e)
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn accept(&self, entry: &LedgerEntry) -> Result<Accept, PortError> {
        let mut map = self.entries.lock().expect("ledger lock");
        if let Some(existing) = Self::live(&mut map, &entry.alert_id) {
            return Ok(Accept::Duplicate(existing.clone()));
        }
        map.insert(entry.alert_id.clone(), entry.clone());
        Ok(Accept::New)
    }

    async fn mark_queued(&self, alert_id: &str, now_ms: i64) -> Result<(), PortError> {
        let mut map = self.entries.lock().expect("ledger lock");
        if let Some(e) = Self::live(&mut map, alert_id) {
            transition::mark_queued(e, now_ms);
        }
        Ok(())
    }

    async fn forget(&self, alert_id: &str) -> Result<(), PortError> {
        let mut map = self.entries.lock().expect("ledger lock");
        if map.get(alert_id).is_some_and(|e| e.state == DeliveryState::Accepted) {
            map.remove(alert_id);
        }
        Ok(())
    }

    async fn claim(&self, alert_id: &str, now_ms: i64, lease_ms: i64) -> Result<Claim, PortError> {
        let mut map = self.entries.lock().expect("ledger lock");
        Ok(match Self::live(&mut map, alert_id) {
            Some(e) => transition::claim(e, now_ms, lease_ms).0,
            None => Claim::Missing,
        })
    }

    async fn extend(&self, alert_id: &str, token: u64, now_ms: i64, lease_ms: i64) -> Result<i64, PortError> {
        self.update(alert_id, |e| transition::extend(e, token, now_ms, lease_ms))
    }

    async fn complete(&self, alert_id: &str, token: u64, record: &RecordRef, now_ms: i64) -> Result<(), PortError> {
        self.update(alert_id, |e| transition::complete(e, token, record, now_ms).map(drop))
    }

    async fn retry_later(&self, alert_id: &str, token: u64, retry: &RetryLater, now_ms: i64) -> Result<(), PortError> {
        self.update(alert_id, |e| transition::retry_later(e, token, retry, now_ms).map(drop))
    }

    async fn fail(
        &self,
        alert_id: &str,
        token: u64,
        error_class: &str,
        error: &str,
        now_ms: i64,
    ) -> Result<(), PortError> {
        self.update(alert_id, |e| {
            transition::fail(e, token, error_class, error, now_ms).map(drop)
        })
    }

    async fn reopen(&self, alert_id: &str, token: u64, now_ms: i64, expires_at_s: i64) -> Result<bool, PortError> {
        let mut map = self.entries.lock().expect("ledger lock");
        match Self::live(&mut map, alert_id) {
            Some(e) => transition::reopen(e, token, now_ms, expires_at_s),
            None => Ok(false),
        }
    }

    async fn get(&self, alert_id: &str) -> Result<Option<LedgerEntry>, PortError> {
        let mut map = self.entries.lock().expect("ledger lock");
        Ok(Self::live(&mut map, alert_id).map(|e| e.clone()))
    }

    async fn aggregate(&self, plan: &LedgerEntry, members: &[(String, u64)], now_ms: i64) -> Result<(), PortError> {
        transition::check_aggregate_request(plan, members)?;
        let mut map = self.entries.lock().expect("ledger lock");
        let existing = Self::live(&mut map, &plan.alert_id).map(|e| e.clone());
        let found = members
            .iter()
            .map(|(key, token)| (Self::live(&mut map, key).map(|e| e.clone()), key.as_str(), *token))
            .collect();
        for e in transition::seal(plan, existing.as_ref(), found, now_ms)? {
            map.insert(e.alert_id.clone(), e);
        }
        Ok(())
    }

    async fn watched(&self, after: Option<&str>, limit: u32) -> Result<Vec<LedgerEntry>, PortError> {
        let mut map = self.entries.lock().expect("ledger lock");
        let mut keys: Vec<String> = map
            .keys()
            .filter(|k| after.is_none_or(|a| k.as_str() > a))
            .cloned()
            .collect();
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            if out.len() >= limit.min(crate::MAX_WATCH_PAGE) as usize {
                break;
            }
            if let Some(e) = Self::live(&mut map, &key)
                && e.delivery == crate::WATCH_DELIVERY
                && e.state == DeliveryState::Queued
            {
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    async fn observe(
        &self,
        key: &str,
        expected: Option<&str>,
        plan: &str,
        done: bool,
        now_ms: i64,
    ) -> Result<bool, PortError> {
        let mut map = self.entries.lock().expect("ledger lock");
        let Some(e) = Self::live(&mut map, key) else {
            return Ok(false);
        };
        if e.plan.as_deref() != expected {
            return Ok(false);
        }
        e.plan = Some(plan.to_string());
        e.updated_at_ms = now_ms;
        if done {
            e.state = DeliveryState::Completed;
        }
        Ok(true)
    }
}

/// `Err(Stale)` unless `token` is the entry's claim token.
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_ledger_conforms() {
        crate::conformance::run_ledger_suite(&MemoryLedger::new()).await;
    }

    #[tokio::test]
    async fn memory_queue_conforms() {
        crate::conformance::run_queue_suite(|| async {
            Box::new(MemoryQueue::new(crate::conformance::MIN_QUEUE_VISIBILITY)) as Box<dyn AlertQueue>
        })
        .await;
    }
}

/// Secrets held in memory, by id.
#[derive(Default)]
pub struct MemorySecrets {
    values: Mutex<HashMap<String, String>>,
}

impl MemorySecrets {
    pub fn new(values: impl IntoIterator<Item = (String, String)>) -> Self {
        MemorySecrets {
            values: Mutex::new(values.into_iter().collect()),
        }
    }
}

#[async_trait]
impl crate::SecretStore for MemorySecrets {
    async fn fetch(&self, id: &str) -> Result<String, PortError> {
        self.values
            .lock()
            .expect("secrets lock")
            .get(id)
            .cloned()
            .ok_or_else(|| PortError::NotFound(id.into()))
    }
}

/// Failure notices kept in memory.
#[derive(Default)]
pub struct MemoryNotifier {
    pub notices: Mutex<Vec<crate::FailureNotice>>,
}

#[async_trait]
impl crate::Notifier for MemoryNotifier {
    async fn delivery_failed(&self, notice: &crate::FailureNotice) -> Result<(), PortError> {
        self.notices.lock().expect("notices lock").push(notice.clone());
        Ok(())
    }
}
