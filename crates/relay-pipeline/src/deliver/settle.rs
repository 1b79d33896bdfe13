//! Recording a created record: the ledger entries it settles, its latency and audit line, and the count of
//! records made.

use std::time::Duration;

use relay_ports::{LedgerEntry, PortError, RecordRef, RetryLater};

use super::{Delivery, severity_of};
use crate::callback::Change;
use crate::envelope::{Envelope, Item};
use crate::telemetry::{RecordCreated, RecordDelivered, TelemetryEvent};

impl Delivery {
    /// Record a created record in the ledger for the envelope's key and every alert it covers, and count
    /// the record.
    pub async fn succeeded(
        &self,
        env: &Envelope,
        entry: &LedgerEntry,
        record: RecordRef,
        found: bool,
    ) -> Result<(), PortError> {
        self.settled(env, entry, record, found, &Change::Created).await?;
        self.count_record(env);
        Ok(())
    }

    /// The record of `entry` exists but the ledger did not take it (`error`): mark the entry for a lookup
    /// (best effort), so the next attempt finds the record instead of creating it again.
    pub async fn record_not_stored(&self, entry: &LedgerEntry, error: &PortError) {
        tracing::error!(alert_id = %entry.alert_id, error = %error, "record created but ledger not updated");
        let retry = RetryLater::new("ambiguous", "ledger update failed").needing_lookup(true);
        let now = self.ports.clock.now_ms();
        let _ = self
            .ports
            .ledger
            .retry_later(&entry.alert_id, entry.claim_token, &retry, now)
            .await;
    }
    /// One record `env` describes was made.
    pub fn count_record(&self, env: &Envelope) {
        RecordCreated {
            record_type: env.record_type().as_str(),
            severity: severity_of(env),
        }
        .emit();
    }

    /// The callbacks of `change`, then the ledger, latency metric and audit line for a created record
    /// (or note), without counting the record: a batch aggregate settles each member alert this way and is
    /// counted once. The callbacks are queued first: once the entry is complete no retry would queue them.
    pub async fn settled(
        &self,
        env: &Envelope,
        entry: &LedgerEntry,
        record: RecordRef,
        found: bool,
        change: &Change,
    ) -> Result<(), PortError> {
        self.announce(env, &record, change).await?;
        let now = self.ports.clock.now_ms();
        for key in env.covered_keys() {
            let token = self.token_for(&key, entry).await?;
            self.ports.ledger.complete(&key, token, &record, now).await?;
        }
        // one latency per alert, each from its own arrival (an aggregate of an earlier release: from its first)
        let received = match &env.item {
            Item::Aggregate { record } if !record.received_at_ms.is_empty() => record.received_at_ms.clone(),
            _ => vec![env.received_at_ms],
        };
        RecordDelivered {
            key: &env.ledger_key(),
            alert_ids: &env.alert_ids(),
            record: &record,
            attempts: entry.attempts,
            found_existing: found,
            severity: severity_of(env),
            latencies: received
                .iter()
                .map(|t| Duration::from_millis((now - t).max(0) as u64))
                .collect(),
        }
        .emit();
        Ok(())
    }

    /// The claim token to write `key` with: the caller's claim for its own key; for the members an aggregate
    /// covers (not claimed one by one) the token they carry now.
    pub(super) async fn token_for(&self, key: &str, entry: &LedgerEntry) -> Result<u64, PortError> {
        if key == entry.alert_id {
            return Ok(entry.claim_token);
        }
        Ok(self.ports.ledger.get(key).await?.map_or(0, |e| e.claim_token))
    }
}
