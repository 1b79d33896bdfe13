//! `relay replay-dlq --aws`: move the deployed stack's dead-lettered alerts from the SQS dead-letter queue
//! back to the realtime queue, reopening their DynamoDB ledger entries first.
//!
//! SQS cannot list a queue without receiving it, so the run reads the queue's approximate depth first and
//! then receives at most that many messages, 10 at a time, each hidden from other readers for
//! [`VISIBILITY`]. A message that fails again during the run comes back to the DLQ as a new message and is
//! not replayed twice. Per message: reopen every covered ledger entry, send the body to the realtime queue,
//! then delete it from the DLQ — never delete before the send succeeded. A crash between the send and the
//! delete leaves the message on both queues; the ledger makes the second delivery a no-op.
//!
//! Messages that stay on the DLQ (unreadable, or failed to move, or every message of a dry run) are kept
//! hidden until the end of the run, so one run never sees them twice, and then made visible again at once.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use relay_aws::{DynamoLedger, SqsQueue};
use relay_ports::{AlertQueue, Clock, Ledger, SystemClock};

use super::replay::{ReplayArgs, ReplayTally, reopen_covered, replay_progress};
use crate::error::CliError;

/// How long a received message stays hidden from other readers while the run works on it.
pub const VISIBILITY: Duration = Duration::from_secs(120);
/// Long-poll wait of each receive: long polling asks every SQS server, so an empty answer means empty.
const RECEIVE_WAIT: Duration = Duration::from_secs(1);
/// SQS receives at most 10 messages per call.
const BATCH: u64 = 10;

/// Where to replay: the stack outputs DeadLetterQueueUrl, RealtimeQueueUrl and LedgerTableName.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsTarget {
    pub dlq_url: String,
    pub realtime_queue_url: String,
    pub ledger_table: String,
}

/// `--aws` without one or more of the required settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingSettings(Vec<&'static str>);

impl fmt::Display for MissingSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replay-dlq --aws needs {} (the stack outputs DeadLetterQueueUrl, RealtimeQueueUrl and \
             LedgerTableName: `sam list stack-outputs --stack-name <stack>`)",
            self.0.join(", ")
        )
    }
}

impl std::error::Error for MissingSettings {}

impl AwsTarget {
    /// The target from `--dlq-url` / `DLQ_URL`, `--realtime-queue-url` / `REALTIME_QUEUE_URL` and
    /// `--ledger-table` / `LEDGER_TABLE`; every missing (or blank) one is named.
    pub fn from_args(args: &ReplayArgs) -> Result<AwsTarget, MissingSettings> {
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let (dlq, realtime, table) = (
            given(&args.dlq_url),
            given(&args.realtime_queue_url),
            given(&args.ledger_table),
        );
        let mut missing = Vec::new();
        if dlq.is_none() {
            missing.push("--dlq-url (or DLQ_URL)");
        }
        if realtime.is_none() {
            missing.push("--realtime-queue-url (or REALTIME_QUEUE_URL)");
        }
        if table.is_none() {
            missing.push("--ledger-table (or LEDGER_TABLE)");
        }
        match (dlq, realtime, table) {
            (Some(dlq_url), Some(realtime_queue_url), Some(ledger_table)) => Ok(AwsTarget {
                dlq_url,
                realtime_queue_url,
                ledger_table,
            }),
            _ => Err(MissingSettings(missing)),
        }
    }
}

/// The DLQ side of a run: remembers what must become visible again.
struct DeadLetters {
    /// The DLQ, receiving with [`VISIBILITY`].
    queue: SqsQueue,
    /// message id → latest receipt of messages that stay on the DLQ.
    kept: HashMap<String, String>,
    /// message ids already handled this run (SQS may hand a message out twice).
    seen: HashSet<String>,
}

impl DeadLetters {
    /// Make every kept message visible again now; a failure only delays it by [`VISIBILITY`].
    async fn release_kept(&mut self) {
        for (message_id, receipt) in self.kept.drain() {
            if let Err(e) = self.queue.change_visibility(&receipt, Duration::ZERO).await {
                eprintln!(
                    "  {message_id}: stays hidden on the DLQ for up to {} s (could not make it visible again: {e})",
                    VISIBILITY.as_secs()
                );
            }
        }
    }
}

/// Run the replay (or the dry run) against `target`, printing as `--local` does.
pub async fn replay(target: &AwsTarget, dry_run: bool) -> Result<(), CliError> {
    let config = relay_aws::sdk_config().await;
    let dlq = SqsQueue::new(&config, &target.dlq_url).with_visibility_timeout(VISIBILITY);
    let realtime = SqsQueue::from_client(dlq.client().clone(), &target.realtime_queue_url);
    let ledger = DynamoLedger::new(&config, &target.ledger_table);

    // Check every resource before touching anything: a wrong URL or table name fails here, by name.
    let depth = match dlq.depth().await {
        Ok(d) => d,
        Err(e) => {
            return Err(CliError::Failed(format!(
                "cannot read the dead-letter queue {}: {e}",
                target.dlq_url
            )));
        }
    };
    if let Err(e) = realtime.depth().await {
        return Err(CliError::Failed(format!(
            "cannot reach the realtime queue {}: {e}",
            target.realtime_queue_url
        )));
    }
    if let Err(e) = ledger.get("replay-dlq:check").await {
        return Err(CliError::Failed(format!(
            "cannot read the ledger table {}: {e}",
            target.ledger_table
        )));
    }
    if depth == 0 {
        println!("the dead-letter queue is empty: nothing to replay");
        return Ok(());
    }

    let bar = replay_progress(depth, dry_run);
    let mut tally = ReplayTally::new(dry_run);
    let mut dead = DeadLetters {
        queue: dlq,
        kept: HashMap::new(),
        seen: HashSet::new(),
    };
    // Receives handed out, repeats included: at most the depth read at the start.
    let mut received = 0u64;
    let mut drained = false;
    while received < depth {
        let batch = match dead
            .queue
            .receive((depth - received).min(BATCH) as u32, RECEIVE_WAIT)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tally.errors += 1;
                eprintln!(
                    "error: cannot receive from the dead-letter queue {}: {e}",
                    target.dlq_url
                );
                break;
            }
        };
        if batch.is_empty() {
            drained = true;
            break;
        }
        received += batch.len() as u64;
        for m in batch {
            if !dead.seen.insert(m.message_id.clone()) {
                // handed out again (its hidden time ran out, or SQS delivered it twice): not counted twice
                if let Some(receipt) = dead.kept.get_mut(&m.message_id) {
                    *receipt = m.receipt;
                }
                continue;
            }
            bar.inc(1);
            let Some(env) = tally.read(&m.message_id, &m.body) else {
                dead.kept.insert(m.message_id, m.receipt);
                continue;
            };
            if dry_run {
                tally.would_replay(&env);
                dead.kept.insert(m.message_id, m.receipt);
                continue;
            }
            match reopen_covered(&ledger, &env, SystemClock.now_ms()).await {
                Ok(n) => tally.reopened += n,
                Err(e) => {
                    tally.failed(&env, &format!("{e}; left in the DLQ"));
                    dead.kept.insert(m.message_id, m.receipt);
                    continue;
                }
            }
            if let Err(e) = realtime.send(&m.body, Duration::ZERO).await {
                tally.failed(
                    &env,
                    &format!("could not send to the realtime queue ({e}); left in the DLQ"),
                );
                dead.kept.insert(m.message_id, m.receipt);
                continue;
            }
            match dead.queue.delete(&m.receipt).await {
                Ok(()) => tally.replayed += 1,
                Err(e) => tally.failed(
                    &env,
                    &format!(
                        "sent to the realtime queue but not deleted from the DLQ ({e}); a later replay sends it \
                         again, which the ledger makes harmless"
                    ),
                ),
            }
        }
    }
    bar.finish_and_clear();
    dead.release_kept().await;
    tally.summary("the deliver function picks them up from the realtime queue now");
    if drained && tally.seen < depth {
        println!(
            "note: SQS counted {depth} messages but handed out {}; the rest were in flight elsewhere \
             (or counted late): run again later to replay them",
            tally.seen
        );
    }
    tally.result()
}
