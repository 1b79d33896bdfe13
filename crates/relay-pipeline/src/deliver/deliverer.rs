//! The realtime deliverer: each message from the realtime queue claimed, attempted and settled, or put back
//! with a delay; what becomes of the message.

use std::sync::Arc;
use std::time::Duration;

use relay_ports::{AlertQueue, Claim, LedgerEntry, PortError, ReceivedMessage, RecordRef, RetryLater};
use servicenow_client::Outcome;

use super::callback::CallbackDisposition;
use super::claim::{Held, must_look_up};
use super::failure::AfterFailure;
use super::thread::Role;
use super::{Delivery, record_ref};
use crate::breaker::Admit;
use crate::callback::Change;
use crate::defaults::LONGEST_REDELAY;
use crate::envelope::{Envelope, Item};
use crate::telemetry::{LifecycleApplied, TelemetryEvent, ThreadNoted};

/// What to do with a message after handling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Finished (record exists, or dead-lettered): delete the message.
    Done,
    /// Keep the message: it comes back when its visibility delay ends.
    RetryLater,
}

/// The realtime deliverer: one message at a time, many concurrently, from one queue (the realtime queue or
/// the critical one): the queue it polls and puts messages back on, so a retried message stays in its lane.
#[derive(Clone)]
pub struct Deliverer {
    pub delivery: Arc<Delivery>,
    queue: Arc<dyn AlertQueue>,
}

impl Deliverer {
    /// The deliverer of the realtime queue (`ports.realtime`).
    pub fn new(delivery: Arc<Delivery>) -> Self {
        let queue = Arc::clone(&delivery.ports.realtime);
        Deliverer { delivery, queue }
    }

    /// The deliverer of the critical queue (`ports.critical`).
    pub fn critical(delivery: Arc<Delivery>) -> Self {
        let queue = Arc::clone(&delivery.ports.critical);
        Deliverer { delivery, queue }
    }

    /// Handle one message from the realtime queue.
    pub async fn handle(&self, msg: &ReceivedMessage) -> Disposition {
        let d = &self.delivery;
        let env = match Envelope::from_json(&msg.body) {
            Ok(e) => e,
            Err(e) => {
                return match d.poison(&msg.body, &format!("not an alert envelope: {e}")).await {
                    Ok(()) => Disposition::Done,
                    Err(_) => self.put_back(msg, Duration::ZERO).await,
                };
            }
        };
        if let Item::Sync { sync } = &env.item {
            // a hint from ServiceNow: the periodic sync is the guarantee, so a read-back that fails is
            // dropped, not retried
            if let Err(e) = d.sync_record(&sync.key, &sync.model).await {
                tracing::warn!(key = %sync.key, error = %e, "a pushed record could not be read back; the next sync will");
            }
            return Disposition::Done;
        }
        let at_limit = msg.receive_count >= d.settings.give_up_at_receive();
        if let Item::Callback { callback } = &env.item {
            // not a ServiceNow call: no breaker, no call limit
            return match d.deliver_callback(&env, callback, at_limit).await {
                CallbackDisposition::Done => Disposition::Done,
                CallbackDisposition::PutBack(at_least) => self.put_back(msg, at_least).await,
                CallbackDisposition::Delay(delay) => {
                    self.delay(msg, delay).await;
                    Disposition::RetryLater
                }
            };
        }
        // Near the receive limit no call is made: the alert is given up below whatever the breaker says.
        let probe = match if at_limit { Admit::Call } else { d.admit() } {
            Admit::Wait { until_ms } => {
                return self.put_back(msg, d.until(until_ms)).await;
            }
            Admit::Probe => true,
            Admit::Call => false,
        };
        let release = |disposition: Disposition| {
            if probe {
                d.release_probe();
            }
            disposition
        };
        let entry = match d.claim(&env).await {
            Ok(Claim::Claimed(entry)) => entry,
            // settled, or a member of a sealed aggregate (delivered with its aggregate): nothing to do
            Ok(Claim::Completed(_) | Claim::Failed(_) | Claim::Aggregated(_)) => return release(Disposition::Done),
            Ok(Claim::NotBefore { until_ms }) if at_limit => {
                // not claimable before its Retry-After, but the queue will not hand the message out much
                // longer: give it up under the entry's current token
                let entry = match d.ports.ledger.get(&env.ledger_key()).await {
                    Ok(Some(entry)) => entry,
                    _ => return self.put_back(msg, d.until(until_ms)).await,
                };
                return self.give_up_at_limit(msg, &env, &entry).await;
            }
            Ok(Claim::Busy { lease_until_ms: until } | Claim::NotBefore { until_ms: until }) => {
                return release(self.put_back(msg, d.until(until)).await);
            }
            Ok(Claim::Missing) | Err(_) => {
                tracing::warn!(alert_id = %env.ledger_key(), "ledger unavailable; the message will come back");
                return release(self.put_back(msg, Duration::ZERO).await);
            }
        };
        if at_limit {
            return self.give_up_at_limit(msg, &env, &entry).await;
        }
        let held = Held::new(&entry);
        let lookup_first = must_look_up(&entry, &env);
        let (outcome, found, role) = d.holding(&held, d.create_held(&env, lookup_first, Some(&held))).await;
        d.settle_thread(&role, &outcome, &held).await;
        if held.is_lost() && !matches!(outcome, Outcome::Created(_)) {
            // Another deliverer holds the alert now: it decides; nothing of this attempt is recorded.
            tracing::warn!(alert_id = %env.ledger_key(), "claim lost during the attempt; leaving the alert to its new holder");
            return self.put_back(msg, Duration::ZERO).await;
        }
        if let Role::Wait { until_ms } = role {
            // nothing was sent: release the claim without counting the attempt, and come back when the
            // thread's first alert has opened its record
            let retry = RetryLater {
                unsent: true,
                ..RetryLater::new("thread_busy", "the thread's first alert is opening its record")
            };
            let now = d.ports.clock.now_ms();
            if let Err(e) = d
                .ports
                .ledger
                .retry_later(&entry.alert_id, entry.claim_token, &retry, now)
                .await
            {
                tracing::warn!(alert_id = %entry.alert_id, error = %e, "could not release the claim; its lease ends on its own");
            }
            return release(self.put_back(msg, d.until(until_ms)).await);
        }
        match (outcome, role) {
            (Outcome::Created(rec), Role::Event { resolved }) => {
                let record = RecordRef {
                    note: true,
                    ..record_ref(rec)
                };
                let Item::Event { plan } = &env.item else {
                    unreachable!("only an event has the event role")
                };
                let change = Change::Event {
                    kind: plan.event.kind.as_str(),
                    alert_id: plan.event.alert_id.clone(),
                    resolved,
                };
                match d.settled(&env, &entry, record, found, &change).await {
                    Ok(()) => {
                        LifecycleApplied {
                            kind: plan.event.kind.as_str(),
                            record_type: env.record_type().as_str(),
                            rule: &plan.rule,
                            resolved: matches!(change, Change::Event { resolved: Some(_), .. }),
                        }
                        .emit();
                        Disposition::Done
                    }
                    Err(e) => {
                        d.record_not_stored(&entry, &e).await;
                        self.put_back(msg, Duration::ZERO).await
                    }
                }
            }
            (Outcome::Created(rec), Role::Note { escalated }) => {
                let record = RecordRef {
                    note: true,
                    ..record_ref(rec)
                };
                match d
                    .settled(&env, &entry, record, found, &Change::ThreadNote { escalated })
                    .await
                {
                    Ok(()) => {
                        ThreadNoted {
                            record_type: env.record_type().as_str(),
                        }
                        .emit();
                        Disposition::Done
                    }
                    Err(e) => {
                        d.record_not_stored(&entry, &e).await;
                        self.put_back(msg, Duration::ZERO).await
                    }
                }
            }
            (Outcome::Created(rec), _) => match d.succeeded(&env, &entry, record_ref(rec), found).await {
                Ok(()) => Disposition::Done,
                Err(e) => {
                    d.record_not_stored(&entry, &e).await;
                    self.put_back(msg, Duration::ZERO).await
                }
            },
            (failure, _) => match d.failed(&env, &entry, failure).await {
                AfterFailure::RetryIn(delay) => {
                    self.delay(msg, delay).await;
                    Disposition::RetryLater
                }
                AfterFailure::DeadLettered => Disposition::Done,
            },
        }
    }

    /// Keep a message without an attempt: delay it at least `at_least`, jittered and no shorter than an
    /// attempt at its receive count would wait ([`Delivery::delay_without_attempt`]).
    async fn put_back(&self, msg: &ReceivedMessage, at_least: Duration) -> Disposition {
        let delay = self.delivery.delay_without_attempt(msg.receive_count, at_least);
        self.delay(msg, delay).await;
        Disposition::RetryLater
    }

    /// The message has been received so often that the queue's redrive would soon move it to the DLQ
    /// without a notice: give the alert up now, with one (class `receive_limit`).
    async fn give_up_at_limit(&self, msg: &ReceivedMessage, env: &Envelope, entry: &LedgerEntry) -> Disposition {
        let d = &self.delivery;
        let elapsed = Duration::from_millis((d.ports.clock.now_ms() - entry.first_received_at_ms).max(0) as u64);
        let last = match (&entry.last_error_class, &entry.last_error) {
            (Some(class), Some(error)) => format!("; last error ({class}): {error}"),
            _ => String::new(),
        };
        let why = format!(
            "the realtime queue handed the message out {} times (receive limit {}) after {} attempts over {} min; \
             given up before the queue's redrive would move it without a notice{last}",
            msg.receive_count,
            d.settings.max_receives,
            entry.attempts,
            elapsed.as_secs() / 60
        );
        match d.settle_give_up(env, entry, "receive_limit", &why).await {
            AfterFailure::DeadLettered => Disposition::Done,
            AfterFailure::RetryIn(delay) => {
                self.delay(msg, delay).await;
                Disposition::RetryLater
            }
        }
    }

    /// Make the message visible again after `delay`, at most [`LONGEST_REDELAY`] (what SQS's 12 h
    /// visibility limit allows; a longer wait is in the ledger as `not_before_ms`).
    async fn delay(&self, msg: &ReceivedMessage, delay: Duration) {
        if let Err(e) = self
            .queue
            .change_visibility(&msg.receipt, delay.min(LONGEST_REDELAY))
            .await
        {
            tracing::warn!(message_id = %msg.message_id, error = %e, "could not delay the message; it returns after the visibility timeout");
        }
    }

    /// One round of the local worker: receive up to `max` messages from this deliverer's queue (waiting up
    /// to `wait`), handle them, delete the finished ones. Returns how many were received.
    pub async fn poll_once(&self, max: u32, wait: Duration) -> Result<usize, PortError> {
        let queue = &self.queue;
        let messages = queue.receive(max, wait).await?;
        let n = messages.len();
        for (m, disposition) in self.handle_all(messages).await {
            if disposition == Disposition::Done
                && let Err(e) = queue.delete(&m.receipt).await
            {
                tracing::warn!(message_id = %m.message_id, error = %e, "could not delete a delivered message");
            }
        }
        Ok(n)
    }

    /// Handle a batch of messages concurrently; a failure or panic in one never affects the others.
    /// Returns each message with what to do with it.
    pub async fn handle_all(&self, messages: Vec<ReceivedMessage>) -> Vec<(ReceivedMessage, Disposition)> {
        let tasks: Vec<_> = messages
            .into_iter()
            .map(|m| {
                let me = self.clone();
                let msg = m.clone();
                (m, tokio::spawn(async move { me.handle(&msg).await }))
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for (m, task) in tasks {
            let disposition = match task.await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(message_id = %m.message_id, error = %e, "delivery task panicked; message kept for retry");
                    self.put_back(&m, Duration::ZERO).await
                }
            };
            out.push((m, disposition));
        }
        out
    }
}
