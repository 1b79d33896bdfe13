//! Replay dead-lettered alerts: move them from the dead-letter queue back to the realtime queue, reopening
//! their ledger entries first. The same code runs against SQS + DynamoDB (`relay replay-dlq --aws`) and
//! against the local SQLite store (`relay replay-dlq --local`).
//!
//! A queue cannot be listed without receiving it, so a run reads the queue's depth first and then receives
//! at most that many messages, each hidden from other readers while the run works on it. Per message
//! ([`replay_one`]): reopen every covered ledger entry, send the body to the realtime queue, then delete it
//! from the dead-letter queue — never delete before the send succeeded. A crash between the send and the
//! delete leaves the message on both queues; the ledger makes the second delivery a no-op.
//!
//! Messages that stay on the dead-letter queue (unreadable, failed to move, or every message of a dry run)
//! are kept hidden until the end of the run, so one run never sees them twice, and then made visible again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use relay_ports::{AlertQueue, Clock, Ledger, PortError, ReceivedMessage};
use serde::Serialize;

use crate::envelope::Envelope;

/// Long-poll wait of each receive: long polling asks every SQS server, so an empty answer means empty.
const RECEIVE_WAIT: Duration = Duration::from_secs(1);
/// SQS receives at most 10 messages per call.
const BATCH: u64 = 10;

/// What became of one dead-lettered message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReplayOutcome {
    /// Back on the realtime queue; `reopened` ledger entries were `FAILED` and are `QUEUED` again.
    Replayed { reopened: u64 },
    /// Dry run: it would be replayed.
    WouldReplay,
    /// Not an alert envelope: left on the dead-letter queue.
    Unreadable { error: String },
    /// Could not be moved: left on the dead-letter queue (or, when only the delete failed, on both queues).
    Failed { error: String },
}

/// One message of a replay run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayedMessage {
    pub message_id: String,
    /// The ledger key (alert id, or `batch:…` for an aggregate); none when the message is unreadable.
    pub key: Option<String>,
    pub record_type: Option<String>,
    pub table: Option<String>,
    /// Why it was dead-lettered (`error_class: error`).
    pub dead_letter_reason: Option<String>,
    #[serde(flatten)]
    pub outcome: ReplayOutcome,
}

/// The counts of one replay run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    pub dry_run: bool,
    /// The dead-letter queue's depth at the start.
    pub depth: u64,
    /// Messages looked at.
    pub seen: u64,
    pub replayed: u64,
    pub reopened: u64,
    pub unreadable: u64,
    pub errors: u64,
    /// The queue said `depth` but handed out fewer: the rest were in flight elsewhere (run again later).
    pub short_by: u64,
}

/// Why a message could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("could not reopen the ledger entry {key}: {source}")]
    Reopen {
        key: String,
        #[source]
        source: PortError,
    },
    #[error("could not send it to the realtime queue: {0}")]
    Send(#[source] PortError),
    #[error(
        "sent to the realtime queue but not deleted from the dead-letter queue ({0}); a later replay sends it \
         again, which the ledger makes harmless"
    )]
    Delete(#[source] PortError),
}

/// Replay one received dead-letter message: reopen (`FAILED` → `QUEUED`) every ledger entry it covers, send
/// it to the realtime queue (a critical alert to the `critical` queue), delete it from the dead-letter queue. Returns how many entries were reopened.
/// On a reopen or send error the message stays on the dead-letter queue: moved with its entry still
/// `FAILED`, the deliverer would drop it.
pub async fn replay_one(
    ledger: &dyn Ledger,
    realtime: &dyn AlertQueue,
    critical: &dyn AlertQueue,
    dlq: &dyn AlertQueue,
    msg: &ReceivedMessage,
    env: &Envelope,
    now_ms: i64,
) -> Result<u64, ReplayError> {
    let mut reopened = 0;
    for key in env.covered_keys() {
        // Reopen exactly the entry read here (its token fences the write); the retention restarts with the
        // replay, so the entry outlives the new retry window.
        let token = match ledger.get(&key).await {
            Ok(found) => found.map_or(0, |e| e.claim_token),
            Err(source) => return Err(ReplayError::Reopen { key, source }),
        };
        let expires_at_s = now_ms.div_euclid(1000) + crate::defaults::LEDGER_RETENTION.as_secs() as i64;
        match ledger.reopen(&key, token, now_ms, expires_at_s).await {
            Ok(true) => reopened += 1,
            Ok(false) => {}
            Err(source) => return Err(ReplayError::Reopen { key, source }),
        }
    }
    let queue = if env.is_critical() { critical } else { realtime };
    queue.send(&msg.body, Duration::ZERO).await.map_err(ReplayError::Send)?;
    dlq.delete(&msg.receipt).await.map_err(ReplayError::Delete)?;
    Ok(reopened)
}

/// The queues and ledger of a replay.
pub struct Replay<'a> {
    /// The dead-letter queue; its visibility timeout must outlast the run's work on one batch.
    pub dlq: &'a dyn AlertQueue,
    pub realtime: &'a dyn AlertQueue,
    /// Where a replayed critical alert goes (the realtime queue on a stack without a critical queue).
    pub critical: &'a dyn AlertQueue,
    pub ledger: &'a dyn Ledger,
    pub clock: &'a dyn Clock,
}

impl Replay<'_> {
    /// Replay every message on the dead-letter queue (or, with `dry_run`, only say what would be replayed),
    /// telling `seen` about each one as it is handled. Errors reading the queue end the run early and count
    /// as errors; `Err` only when the queue cannot be read at all.
    pub async fn run(&self, dry_run: bool, mut seen: impl FnMut(&ReplayedMessage)) -> Result<ReplayReport, PortError> {
        let depth = self.dlq.depth().await?;
        let mut report = ReplayReport {
            dry_run,
            depth,
            ..ReplayReport::default()
        };
        // message id → latest receipt of messages that stay on the dead-letter queue
        let mut kept: HashMap<String, String> = HashMap::new();
        let mut handled: HashSet<String> = HashSet::new();
        // receives handed out, repeats included: at most the depth read at the start
        let mut received = 0u64;
        let mut drained = false;
        while received < depth {
            let batch = match self
                .dlq
                .receive((depth - received).min(BATCH) as u32, RECEIVE_WAIT)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot receive from the dead-letter queue");
                    report.errors += 1;
                    break;
                }
            };
            if batch.is_empty() {
                drained = true;
                break;
            }
            received += batch.len() as u64;
            for m in batch {
                if !handled.insert(m.message_id.clone()) {
                    // handed out again (its hidden time ran out, or delivered twice): not counted twice
                    if let Some(receipt) = kept.get_mut(&m.message_id) {
                        *receipt = m.receipt;
                    }
                    continue;
                }
                report.seen += 1;
                let one = self.one(&m, dry_run).await;
                match &one.outcome {
                    ReplayOutcome::Replayed { reopened } => {
                        report.replayed += 1;
                        report.reopened += reopened;
                    }
                    ReplayOutcome::WouldReplay => {
                        report.replayed += 1;
                        kept.insert(m.message_id.clone(), m.receipt.clone());
                    }
                    ReplayOutcome::Unreadable { .. } => {
                        report.unreadable += 1;
                        kept.insert(m.message_id.clone(), m.receipt.clone());
                    }
                    ReplayOutcome::Failed { .. } => {
                        report.errors += 1;
                        kept.insert(m.message_id.clone(), m.receipt.clone());
                    }
                }
                seen(&one);
            }
        }
        for (message_id, receipt) in kept {
            if let Err(e) = self.dlq.change_visibility(&receipt, Duration::ZERO).await {
                tracing::warn!(%message_id, error = %e, "a kept message stays hidden on the dead-letter queue until its visibility timeout ends");
            }
        }
        if drained && report.seen < depth {
            report.short_by = depth - report.seen;
        }
        Ok(report)
    }

    async fn one(&self, m: &ReceivedMessage, dry_run: bool) -> ReplayedMessage {
        let env = match Envelope::from_json(&m.body) {
            Ok(e) => e,
            Err(e) => {
                return ReplayedMessage {
                    message_id: m.message_id.clone(),
                    key: None,
                    record_type: None,
                    table: None,
                    dead_letter_reason: None,
                    outcome: ReplayOutcome::Unreadable { error: e.to_string() },
                };
            }
        };
        let outcome = if dry_run {
            ReplayOutcome::WouldReplay
        } else {
            match replay_one(
                self.ledger,
                self.realtime,
                self.critical,
                self.dlq,
                m,
                &env,
                self.clock.now_ms(),
            )
            .await
            {
                Ok(reopened) => ReplayOutcome::Replayed { reopened },
                Err(e) => ReplayOutcome::Failed { error: e.to_string() },
            }
        };
        ReplayedMessage {
            message_id: m.message_id.clone(),
            key: Some(env.ledger_key()),
            record_type: Some(env.record_type().as_str().to_string()),
            table: Some(env.table().to_string()),
            dead_letter_reason: env
                .dead_letter
                .as_ref()
                .map(|d| format!("{}: {}", d.error_class, d.error)),
            outcome,
        }
    }
}
