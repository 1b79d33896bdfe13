//! Callbacks on the delivery side: queued by the delivery that made a change, before it records its own
//! outcome, and sent by the deliverer that receives them (see [`crate::callback`]).

use std::time::Duration;

use relay_ports::{Accept, Claim, DeliveryState, PortError, RecordRef};
use servicenow_client::Outcome;

use super::{AfterFailure, Delivery};
use crate::callback::{CallbackPlan, Change, Subject, plans};
use crate::envelope::{Envelope, Item};
use crate::ingest::new_entry;
use crate::sync::watch_entry;
use crate::telemetry::{CallbackSent, TelemetryEvent};

impl Delivery {
    /// For a record just opened, its watch entry (the sync's); then the callbacks of `change` to `record`
    /// made by `env` (none when callbacks are off): each written to the ledger under its webhook id and
    /// sent to the realtime queue unless an earlier attempt already queued it. An `Err` means the watch or
    /// a callback may not be written: the caller must not record its own outcome (its retry finds the
    /// record and writes them again).
    pub(super) async fn announce(&self, env: &Envelope, record: &RecordRef, change: &Change) -> Result<(), PortError> {
        let now = self.ports.clock.now_ms();
        let rule = match &env.item {
            Item::Alert { decision, .. } => decision.rule.as_str(),
            Item::Event { plan } => plan.rule.as_str(),
            Item::Aggregate { .. } => "batch",
            // neither makes a record: never announced
            Item::Callback { .. } | Item::Sync { .. } => "",
        };
        // an Event Management event has no record of its own to follow (its create answers no sys_id)
        if matches!(change, Change::Created) && !record.sys_id.is_empty() {
            let watch = watch_entry(
                record,
                env.record_type().as_str(),
                rule,
                env.alert_ids(),
                now,
                self.settings.ledger_retention,
            );
            self.ports.ledger.accept(&watch).await?;
        }
        let Some(callbacks) = &self.callbacks else {
            return Ok(());
        };
        let key = env.ledger_key();
        let subject = Subject {
            record,
            key: &key,
            alert_ids: env.alert_ids(),
            record_type: env.record_type().as_str(),
            rule,
        };
        for plan in plans(&subject, change, now) {
            if callbacks.wants(plan.kind) {
                self.queue_callback(plan, now).await?;
            }
        }
        Ok(())
    }

    /// Queue one callback unless an earlier attempt (or another path reporting the same change) did.
    pub(crate) async fn queue_callback(&self, plan: CallbackPlan, now: i64) -> Result<(), PortError> {
        let env = Envelope::callback(plan, now);
        let key = env.ledger_key();
        let ledger = &self.ports.ledger;
        if let Accept::Duplicate(existing) = ledger
            .accept(&new_entry(&env, None, self.settings.ledger_retention))
            .await?
            && existing.state != DeliveryState::Accepted
        {
            // queued by an earlier attempt (or by another path reporting the same change)
            return Ok(());
        }
        self.ports.realtime.send(&env.to_json(), Duration::ZERO).await?;
        if let Err(e) = ledger.mark_queued(&key, now).await {
            tracing::warn!(alert_id = %key, error = %e, "could not mark the callback queued; it is on the queue");
        }
        Ok(())
    }

    /// Deliver one callback message: claim its entry, POST it, record the answer (retry or give up as
    /// for a record). The ServiceNow breaker and call limit are not involved: the receiver is not
    /// ServiceNow. `at_limit`: the queue has handed the message out so often that its redrive would soon
    /// move it without a notice: it is given up now, with one.
    pub(super) async fn deliver_callback(
        &self,
        env: &Envelope,
        plan: &CallbackPlan,
        at_limit: bool,
    ) -> CallbackDisposition {
        let entry = match self.claim(env).await {
            Ok(Claim::Claimed(entry)) => entry,
            Ok(Claim::Completed(_) | Claim::Failed(_) | Claim::Aggregated(_)) => {
                return CallbackDisposition::Done;
            }
            Ok(Claim::Busy { lease_until_ms: until } | Claim::NotBefore { until_ms: until }) => {
                return CallbackDisposition::PutBack(self.until(until));
            }
            Ok(Claim::Missing) | Err(_) => return CallbackDisposition::PutBack(Duration::ZERO),
        };
        if at_limit {
            let why = format!(
                "the callback's message neared the queue's receive limit ({}) undelivered; given up \
                 before the redrive would move it without a notice{}",
                self.settings.max_receives,
                entry
                    .last_error
                    .as_deref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            );
            return match self.settle_give_up(env, &entry, "receive_limit", &why).await {
                AfterFailure::DeadLettered => CallbackDisposition::Done,
                AfterFailure::RetryIn(d) => CallbackDisposition::Delay(d),
            };
        }
        let Some(callbacks) = &self.callbacks else {
            let why = "callbacks are not configured in this deployment (relay serve --callback-url, or the \
                       functions' CALLBACK_URL and CALLBACK_SECRET_ARN): replay it once they are";
            return match self.settle_give_up(env, &entry, "permanent", why).await {
                AfterFailure::DeadLettered => CallbackDisposition::Done,
                AfterFailure::RetryIn(d) => CallbackDisposition::Delay(d),
            };
        };
        let outcome = callbacks.send(plan, self.ports.clock.now_ms().div_euclid(1000)).await;
        let now = self.ports.clock.now_ms();
        match outcome {
            Outcome::Created(_) => match self
                .ports
                .ledger
                .complete(&entry.alert_id, entry.claim_token, &plan.record, now)
                .await
            {
                Ok(()) => {
                    CallbackSent {
                        kind: plan.kind.as_str(),
                        attempts: entry.attempts,
                    }
                    .emit();
                    CallbackDisposition::Done
                }
                Err(e) => {
                    // sent, not recorded: a repeat carries the same webhook-id, which the receiver dedupes
                    tracing::warn!(alert_id = %entry.alert_id, error = %e, "callback sent but its ledger entry not completed");
                    CallbackDisposition::PutBack(Duration::ZERO)
                }
            },
            failure => match self.failed(env, &entry, failure).await {
                AfterFailure::RetryIn(d) => CallbackDisposition::Delay(d),
                AfterFailure::DeadLettered => CallbackDisposition::Done,
            },
        }
    }
}

/// What the deliverer does with a callback message.
pub(super) enum CallbackDisposition {
    Done,
    /// No attempt was made: put it back at least this long.
    PutBack(Duration),
    /// An attempt failed: make it visible again after exactly this delay.
    Delay(Duration),
}
