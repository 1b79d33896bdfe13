//! `relay replay-dlq`: move dead-lettered alerts back onto the realtime queue.

use std::path::PathBuf;

use clap::Args;
use relay_local::LocalStore;
use relay_pipeline::envelope::{Envelope, Item};
use relay_ports::{Clock, Ledger, SystemClock};

use crate::error::{CliError, runtime};
use crate::settings;

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

// ---------------------------------------------------------------------------------------------------------
// replay-dlq
// ---------------------------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Replay the local mode's dead-letter queue (the default).
    #[arg(long, conflicts_with = "aws")]
    pub local: bool,
    /// Replay the deployed stack's SQS dead-letter queue (needs --dlq-url, --realtime-queue-url and
    /// --ledger-table; region and credentials come from the usual AWS settings).
    #[arg(long)]
    pub aws: bool,
    /// The local database.
    #[arg(long, env = "RELAY_DB", default_value = settings::DEFAULT_DB)]
    pub db: PathBuf,
    /// With --aws: the dead-letter queue's URL (stack output DeadLetterQueueUrl).
    #[arg(long, env = "DLQ_URL")]
    pub dlq_url: Option<String>,
    /// With --aws: the realtime queue's URL (stack output RealtimeQueueUrl).
    #[arg(long, env = "REALTIME_QUEUE_URL")]
    pub realtime_queue_url: Option<String>,
    /// With --aws: the ledger's DynamoDB table (stack output LedgerTableName).
    #[arg(long, env = "LEDGER_TABLE")]
    pub ledger_table: Option<String>,
    /// List what would be replayed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The ledger keys a dead-lettered envelope covers (the envelope's own and, for an aggregate, each alert's).
pub(crate) fn covered_keys(env: &Envelope) -> Vec<String> {
    let mut keys = vec![env.ledger_key()];
    if matches!(env.item, Item::Aggregate { .. }) {
        keys.extend(env.alert_ids());
    }
    keys
}

/// Reopen (`FAILED` → `QUEUED`) every ledger entry `env` covers; the number reopened. An entry in another
/// state is left as it is. On an error the message must stay on the dead-letter queue: moved with its
/// entry still `FAILED`, the deliverer would drop it.
pub(crate) async fn reopen_covered(ledger: &dyn Ledger, env: &Envelope, now_ms: i64) -> Result<u64, String> {
    let mut reopened = 0;
    for key in covered_keys(env) {
        match ledger.reopen(&key, now_ms).await {
            Ok(true) => reopened += 1,
            Ok(false) => {}
            Err(e) => return Err(format!("could not reopen the ledger entry {key}: {e}")),
        }
    }
    Ok(reopened)
}

/// The progress bar of a replay run: hidden for a dry run and under 50 messages.
pub(crate) fn replay_progress(len: u64, dry_run: bool) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if len < 50 || dry_run {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} replayed ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// The counts of one replay run and the lines both back ends print.
#[derive(Debug, Default)]
pub(crate) struct ReplayTally {
    pub dry_run: bool,
    /// Messages looked at.
    pub seen: u64,
    pub replayed: u64,
    pub reopened: u64,
    pub unreadable: u64,
    pub errors: u64,
}

impl ReplayTally {
    pub fn new(dry_run: bool) -> Self {
        ReplayTally {
            dry_run,
            ..Default::default()
        }
    }

    /// Parse one message body; an unreadable one is counted and reported (it stays on the DLQ).
    pub fn read(&mut self, message_id: &str, body: &str) -> Option<Envelope> {
        self.seen += 1;
        match Envelope::from_json(body) {
            Ok(e) => Some(e),
            Err(e) => {
                self.unreadable += 1;
                println!("  {message_id}: unreadable message left in the DLQ ({e})");
                None
            }
        }
    }

    /// Dry run: what would be replayed.
    pub fn would_replay(&mut self, env: &Envelope) {
        let why = env
            .dead_letter
            .as_ref()
            .map(|d| format!("{}: {}", d.error_class, d.error))
            .unwrap_or_default();
        println!(
            "  would replay {} ({} → {}) {why}",
            env.ledger_key(),
            env.record_type().as_str(),
            env.table()
        );
        self.replayed += 1;
    }

    /// A message that could not be moved (it stays on the DLQ, or see `what`).
    pub fn failed(&mut self, env: &Envelope, what: &str) {
        self.errors += 1;
        eprintln!("  {}: {what}", env.ledger_key());
    }

    /// The closing lines; `next` says who delivers the replayed messages.
    pub fn summary(&self, next: &str) {
        if self.dry_run {
            println!(
                "dry run: {} of {} dead-lettered messages would be replayed; {} unreadable",
                self.replayed, self.seen, self.unreadable
            );
        } else {
            println!(
                "replayed {} of {} messages ({} ledger entries reopened); {} unreadable left in the DLQ; {} errors",
                self.replayed, self.seen, self.reopened, self.unreadable, self.errors
            );
            println!("{next}");
        }
    }

    pub fn result(&self) -> Result<(), CliError> {
        if self.errors > 0 {
            Err(CliError::Reported)
        } else {
            Ok(())
        }
    }
}

pub fn run(args: &ReplayArgs) -> Result<(), CliError> {
    if args.aws {
        let target = super::replay_aws::AwsTarget::from_args(args).map_err(CliError::invalid)?;
        return runtime().block_on(super::replay_aws::replay(&target, args.dry_run));
    }
    if !args.db.exists() {
        return Err(CliError::Invalid(format!(
            "no database at {} (give --db)",
            args.db.display()
        )));
    }
    let store = LocalStore::open(&args.db).map_err(CliError::failed)?;
    runtime().block_on(async move {
        let dlq = store.queue("dlq");
        let realtime = store.queue("realtime");
        let ledger = store.ledger();
        // list first (a snapshot), so replayed messages that fail again are not picked up twice
        let mut messages = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = match dlq.list_after(after.as_deref(), 500).await {
                Ok(p) => p,
                Err(e) => return Err(CliError::Failed(format!("cannot read the dead-letter queue: {e}"))),
            };
            if page.is_empty() {
                break;
            }
            after = page.last().map(|m| m.message_id.clone());
            messages.extend(page);
        }
        if messages.is_empty() {
            println!("the dead-letter queue is empty: nothing to replay");
            return Ok(());
        }
        let bar = replay_progress(messages.len() as u64, args.dry_run);
        let mut tally = ReplayTally::new(args.dry_run);
        for m in &messages {
            bar.inc(1);
            let Some(env) = tally.read(&m.message_id, &m.body) else {
                continue;
            };
            if args.dry_run {
                tally.would_replay(&env);
                continue;
            }
            match reopen_covered(&ledger, &env, now_ms()).await {
                Ok(n) => tally.reopened += n,
                Err(e) => {
                    tally.failed(&env, &format!("{e}; left in the DLQ"));
                    continue;
                }
            }
            match dlq.move_to(&m.message_id, &realtime).await {
                Ok(Some(_)) => tally.replayed += 1,
                Ok(None) => {} // gone meanwhile (another replay)
                Err(e) => tally.failed(&env, &format!("could not move to the realtime queue: {e}")),
            }
        }
        bar.finish_and_clear();
        tally.summary("a running `relay serve` on this database delivers them now; otherwise on its next start");
        tally.result()
    })
}
