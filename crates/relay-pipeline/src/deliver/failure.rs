//! After a failed attempt: the next attempt scheduled with the backoff policy, or the alert given up (dead-
//! lettered, marked failed, the on-call notified); and the dead-lettering of an unreadable message.

use std::time::Duration;

use relay_core::NextAttempt;
use relay_ports::{FailureNotice, LedgerEntry, PortError, RetryLater};
use servicenow_client::Outcome;

use super::{Delivery, severity_of};
use crate::envelope::{DeadLetter, Envelope};
use crate::telemetry::{DeliveryFailed, DeliveryRetrying, MessageUnreadable, TelemetryEvent};

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Another attempt is due after this delay (the caller delays or re-sends the message).
    RetryIn(Duration),
    /// Given up: the envelope is in the dead-letter queue and the on-call was notified.
    DeadLettered,
}

impl Delivery {
    /// After a failed attempt: schedule the next one, or give up. On [`AfterFailure::RetryIn`] the caller
    /// delays its message (or re-sends the envelope) by the returned delay.
    pub async fn failed(&self, env: &Envelope, entry: &LedgerEntry, outcome: Outcome) -> AfterFailure {
        let now = self.ports.clock.now_ms();
        let key = env.ledger_key();
        let (class, reason, retry_after) = match &outcome {
            Outcome::Permanent {
                message,
                detail,
                status,
            } => {
                let msg = match detail {
                    Some(d) => format!("HTTP {status}: {message}: {d}"),
                    None => format!("HTTP {status}: {message}"),
                };
                return self.settle_give_up(env, entry, "permanent", &msg).await;
            }
            Outcome::Retryable { retry_after, reason } => ("retryable", reason.clone(), *retry_after),
            Outcome::Ambiguous { reason } => ("ambiguous", reason.clone(), None),
            Outcome::Auth { message } => ("auth", message.clone(), None),
            Outcome::Created(_) => unreachable!("not a failure"),
        };
        let elapsed = Duration::from_millis((now - entry.first_received_at_ms).max(0) as u64);
        match self
            .settings
            .backoff
            .next_attempt(entry.attempts.max(1), elapsed, retry_after, (self.jitter)())
        {
            NextAttempt::After(delay) => {
                let ambiguous = matches!(outcome, Outcome::Ambiguous { .. });
                // After an ambiguous create, and while an earlier one's window is open, the next attempt
                // waits for the window to close (it would only look the record up before then).
                let settle_until = ambiguous
                    .then(|| now.saturating_add(self.settings.settle.as_millis() as i64))
                    .max(entry.no_create_before_ms);
                let delay = match settle_until {
                    Some(until) if until > now => delay.max(Duration::from_millis((until - now) as u64)),
                    _ => delay,
                };
                // an event waiting for its alert's record (delivered now, most often with its aggregate)
                // looks again soon for its first attempts, then as any retry does
                let delay =
                    if entry.attempts <= crate::defaults::EVENT_FAST_WAITS && super::event::awaits_alert(&outcome) {
                        delay.min(crate::defaults::EVENT_WAIT_POLL)
                    } else {
                        delay
                    };
                // A server's Retry-After (and any delay longer than a re-sent message can wait) is kept in
                // the ledger as the instant before which no attempt may start: a queue that cannot carry the
                // delay (SQS visibility ends 12 h after the receive; a re-sent message waits 15 min at most)
                // brings the message back early, and the claim then answers NotBefore instead of calling
                // again.
                let not_before_ms = (retry_after.is_some() || delay > relay_ports::MAX_SEND_DELAY)
                    .then(|| now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)));
                let retry = RetryLater {
                    no_create_before_ms: ambiguous.then_some(settle_until).flatten(),
                    not_before_ms,
                    ..RetryLater::new(class, reason.as_str()).needing_lookup(ambiguous)
                };
                if let Err(e) = self
                    .ports
                    .ledger
                    .retry_later(&key, entry.claim_token, &retry, now)
                    .await
                {
                    tracing::error!(alert_id = %key, error = %e, "could not record the retry in the ledger");
                }
                DeliveryRetrying {
                    key: &key,
                    table: env.table(),
                    error_class: class,
                    error: &reason,
                    attempts: entry.attempts,
                    delay,
                }
                .emit();
                AfterFailure::RetryIn(delay)
            }
            NextAttempt::GiveUp => {
                if matches!(outcome, Outcome::Ambiguous { .. }) {
                    // The last attempt may have created the record: a replay must look it up first.
                    let retry = RetryLater::new(class, reason.as_str()).needing_lookup(true);
                    if let Err(e) = self
                        .ports
                        .ledger
                        .retry_later(&key, entry.claim_token, &retry, now)
                        .await
                    {
                        tracing::warn!(alert_id = %key, error = %e, "could not record the ambiguous last attempt");
                    }
                }
                let msg = format!(
                    "gave up after {} attempts over {} min; last error ({class}): {reason}",
                    entry.attempts,
                    elapsed.as_secs() / 60
                );
                self.settle_give_up(env, entry, "window_exhausted", &msg).await
            }
        }
    }

    pub(crate) async fn settle_give_up(
        &self,
        env: &Envelope,
        entry: &LedgerEntry,
        class: &'static str,
        error: &str,
    ) -> AfterFailure {
        if self.give_up(env, entry, class, error).await {
            AfterFailure::DeadLettered
        } else {
            // the dead-letter queue is down: keep the alert and try to dead-letter it again later
            AfterFailure::RetryIn(Duration::from_secs(60))
        }
    }

    /// Dead-letter the envelope, mark every covered alert failed, notify. If the dead-letter queue cannot
    /// be written, the alert stays retryable (nothing is lost): the caller keeps the message.
    async fn give_up(&self, env: &Envelope, entry: &LedgerEntry, class: &'static str, error: &str) -> bool {
        let now = self.ports.clock.now_ms();
        let key = env.ledger_key();
        let mut dead = env.clone();
        dead.dead_letter = Some(DeadLetter {
            error_class: class.into(),
            error: error.into(),
            failed_at_ms: now,
            attempts: entry.attempts,
        });
        if let Err(e) = self.ports.dlq.send(&dead.to_json(), Duration::ZERO).await {
            tracing::error!(alert_id = %key, error = %e, "dead-letter queue unavailable; keeping the alert for retry");
            let _ = self
                .ports
                .ledger
                .retry_later(&key, entry.claim_token, &RetryLater::new(class, error), now)
                .await;
            return false;
        }
        for id in env.covered_keys() {
            let failed = match self.token_for(&id, entry).await {
                Ok(token) => self.ports.ledger.fail(&id, token, class, error, now).await,
                Err(e) => Err(e),
            };
            if let Err(e) = failed {
                tracing::error!(alert_id = %id, error = %e, "could not mark the alert failed");
            }
        }
        let notice = FailureNotice {
            alert_id: key.clone(),
            severity: severity_of(env).to_string(),
            record_type: env.record_type().as_str().to_string(),
            table: env.table().to_string(),
            rule: entry.rule.clone(),
            correlation_id: env.correlation_id().to_string(),
            error_class: class.into(),
            error: error.into(),
            attempts: entry.attempts,
            first_received_at_ms: entry.first_received_at_ms,
        };
        if let Err(e) = self.ports.notifier.delivery_failed(&notice).await {
            tracing::error!(alert_id = %key, error = %e, "failure notification not sent (the alert is in the DLQ)");
        }
        DeliveryFailed {
            key: &key,
            table: env.table(),
            error_class: class,
            error,
            attempts: entry.attempts,
        }
        .emit();
        true
    }

    /// Dead-letter a message whose body cannot be read at all (it can never be delivered).
    pub async fn poison(&self, body: &str, why: &str) -> Result<(), PortError> {
        self.ports.dlq.send(body, Duration::ZERO).await?;
        MessageUnreadable { bytes: body.len(), why }.emit();
        Ok(())
    }
}
