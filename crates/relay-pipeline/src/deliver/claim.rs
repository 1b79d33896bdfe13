//! Claiming an alert in the ledger and holding the claim through an attempt: the lease renewed while the
//! calls are in flight, and whether the attempt must look the record up first.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use relay_ports::{Accept, Claim, LedgerEntry, PortError};
use servicenow_client::Outcome;

use super::Delivery;
use crate::envelope::{Envelope, Item};
use crate::ingest::new_entry;

impl Delivery {
    /// Claim `key`, creating its ledger entry from the envelope when it is missing.
    pub async fn claim(&self, env: &Envelope) -> Result<Claim, PortError> {
        let key = env.ledger_key();
        let lease = self.settings.lease.as_millis() as i64;
        let ledger = &self.ports.ledger;
        match ledger.claim(&key, self.ports.clock.now_ms(), lease).await? {
            Claim::Missing => {
                let webhook_id = match &env.item {
                    Item::Alert { webhook_id, .. } => webhook_id.as_deref(),
                    Item::Aggregate { .. } | Item::Event { .. } | Item::Callback { .. } | Item::Sync { .. } => None,
                };
                if let Accept::New = ledger
                    .accept(&new_entry(env, webhook_id, self.settings.ledger_retention))
                    .await?
                {
                    tracing::info!(alert_id = %key, "ledger entry was missing; recreated from the message");
                }
                ledger.claim(&key, self.ports.clock.now_ms(), lease).await
            }
            other => Ok(other),
        }
    }
}

/// A claim held by one attempt: its key and token, and whether a renewal found it taken over.
pub struct Held {
    key: String,
    token: u64,
    pub(super) no_create_before_ms: Option<i64>,
    lost: AtomicBool,
}

impl Held {
    pub fn new(entry: &LedgerEntry) -> Held {
        Held {
            key: entry.alert_id.clone(),
            token: entry.claim_token,
            no_create_before_ms: entry.no_create_before_ms,
            lost: AtomicBool::new(false),
        }
    }

    /// A renewal (or the confirmation before a create) found the claim no longer ours.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Renew the lease once; false (and remembered) when the claim is no longer ours.
    async fn renew(&self, d: &Delivery) -> Result<(), PortError> {
        let lease = d.settings.lease.as_millis() as i64;
        match d
            .ports
            .ledger
            .extend(&self.key, self.token, d.ports.clock.now_ms(), lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if matches!(e, PortError::Stale(_) | PortError::NotFound(_)) {
                    self.lost.store(true, Ordering::SeqCst);
                }
                Err(e)
            }
        }
    }

    /// After a lookup that found nothing: while the settle window of an earlier ambiguous write runs (it may
    /// still commit), nothing is written; the retryable outcome that says so.
    pub(super) fn still_settling(&self, now_ms: i64, what: &str) -> Option<Outcome> {
        let until = self.no_create_before_ms.filter(|t| *t > now_ms)?;
        Some(Outcome::Retryable {
            retry_after: None,
            reason: format!("not found yet; an earlier ambiguous {what} may still commit until {until} (epoch ms)"),
        })
    }

    /// Before a create: the claim must still be ours (renewed for a whole attempt). Otherwise the create
    /// is not sent; the outcome says why (retryable: nothing was sent).
    pub(super) async fn confirm(&self, d: &Delivery) -> Result<(), Outcome> {
        self.renew(d).await.map_err(|e| Outcome::Retryable {
            retry_after: None,
            reason: format!("claim not confirmed before the create: {e}"),
        })
    }
}

impl Delivery {
    /// Run `work` (an attempt's ServiceNow calls) while renewing the claim's lease every third of it, so a
    /// call slower than expected never lets a second deliverer take the alert over.
    pub async fn holding<F: Future>(&self, held: &Held, work: F) -> F::Output {
        let every = (self.settings.lease / 3).max(Duration::from_millis(100));
        let heartbeat = async {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = held.renew(self).await {
                    tracing::warn!(alert_id = %held.key, error = %e, "could not renew the claim");
                    if held.is_lost() {
                        // taken over: nothing left to renew; the attempt learns it from `held`
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        tokio::select! {
            out = work => out,
            () = heartbeat => unreachable!("the heartbeat never ends"),
        }
    }
}

/// Whether an attempt must look the record up before creating it: after an ambiguous outcome, and on every
/// later attempt, because an earlier attempt may have died mid-call (process killed, Lambda timeout) and left
/// no outcome in the ledger at all. A first attempt never pays for the lookup — except the first attempt of
/// a replay from the dead-letter queue (the envelope carries its `dead_letter`), which always looks up: the
/// attempts before the give-up may have created the record.
pub fn must_look_up(entry: &LedgerEntry, env: &Envelope) -> bool {
    entry.needs_lookup || entry.attempts > 1 || env.dead_letter.is_some()
}
