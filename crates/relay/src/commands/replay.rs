//! `relay replay-dlq`: move dead-lettered alerts back to the realtime queue, reopening their ledger entries
//! first. Both back ends — `--local` (the SQLite store of `relay serve`) and `--aws` (the deployed stack's
//! SQS queues and DynamoDB ledger) — run the same [`Replay::run`]; they differ only in how the adapters are
//! built (and checked) and in the closing line.
//!
//! A queue cannot be listed without receiving it, so a run reads the dead-letter queue's depth and then
//! receives at most that many messages, each hidden from other readers for [`VISIBILITY`]; messages that
//! stay on the queue are made visible again at the end of the run (see `relay_pipeline::replay`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
#[cfg(feature = "aws")]
use relay_aws::{DynamoLedger, SqsQueue};
use relay_local::LocalStore;
use relay_pipeline::replay::{Replay, ReplayOutcome, ReplayReport, ReplayedMessage};
use relay_ports::SystemClock;
#[cfg(feature = "aws")]
use relay_ports::{AlertQueue, Ledger};

use super::runtime;
use crate::error::CliError;
use crate::settings;

/// How long a received dead-letter message stays hidden from other readers while the run works on it.
/// A killed run's messages reappear by themselves after this long.
pub const VISIBILITY: Duration = Duration::from_secs(120);

/// The progress bar shows from this many messages on (and never for a dry run).
const PROGRESS_FROM: u64 = 50;

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
    /// With --aws: the critical queue's URL (stack output CriticalQueueUrl), where replayed critical alerts
    /// go; without it they go to the realtime queue.
    #[arg(long, env = "CRITICAL_QUEUE_URL")]
    pub critical_queue_url: Option<String>,
    /// With --aws: the ledger's DynamoDB table (stack output LedgerTableName).
    #[arg(long, env = "LEDGER_TABLE")]
    pub ledger_table: Option<String>,
    /// List what would be replayed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON document: the run's counts (`dry_run`, `depth`, `seen`, `replayed`, `reopened`,
    /// `unreadable`, `errors`, `short_by`) and `messages` (one per message).
    #[arg(long)]
    pub json: bool,
}

/// Exit 0 when every readable message was replayed (or nothing was to do), 1 when one could not be moved or
/// a queue or the ledger cannot be reached, 2 for a missing database or `--aws` setting.
pub fn run(args: &ReplayArgs) -> Result<(), CliError> {
    if args.aws {
        replay_aws_built_in(args)
    } else {
        replay_local(args)
    }
}

/// `--local`: the "dlq" and "realtime" queues and the ledger of the SQLite store.
fn replay_local(args: &ReplayArgs) -> Result<(), CliError> {
    if !args.db.exists() {
        return Err(CliError::Invalid(format!(
            "no database at {} (give --db)",
            args.db.display()
        )));
    }
    let store = LocalStore::open(&args.db).map_err(CliError::failed)?;
    let dlq = store.queue("dlq").with_visibility_timeout(VISIBILITY);
    let realtime = store.queue("realtime");
    let critical = store.queue("realtime").critical_lane();
    let ledger = store.ledger();
    let replay = Replay {
        dlq: &dlq,
        realtime: &realtime,
        critical: &critical,
        ledger: &ledger,
        clock: &SystemClock,
    };
    runtime().block_on(replay_and_report(
        &replay,
        &format!("in {}", args.db.display()),
        args.dry_run,
        args.json,
        "a running `relay serve` on this database delivers them now; otherwise on its next start",
    ))
}

/// Where `--aws` replays: the stack outputs DeadLetterQueueUrl, RealtimeQueueUrl and LedgerTableName.
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq)]
struct AwsTarget {
    dlq_url: String,
    realtime_queue_url: String,
    /// Optional: a stack from before the critical lane has none.
    critical_queue_url: Option<String>,
    ledger_table: String,
}

/// `--aws` without one or more of the required settings.
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
#[derive(Debug, thiserror::Error)]
#[error(
    "replay-dlq --aws needs {} (the stack outputs DeadLetterQueueUrl, RealtimeQueueUrl and LedgerTableName: \
     `sam list stack-outputs --stack-name <stack>`)",
    .0.join(", ")
)]
struct MissingSettings(Vec<&'static str>);

#[cfg_attr(not(feature = "aws"), allow(dead_code))]
impl AwsTarget {
    /// The target from `--dlq-url` / `DLQ_URL`, `--realtime-queue-url` / `REALTIME_QUEUE_URL` and
    /// `--ledger-table` / `LEDGER_TABLE`; every missing (or blank) one is named.
    fn from_args(args: &ReplayArgs) -> Result<AwsTarget, MissingSettings> {
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let settings = [
            (given(&args.dlq_url), "--dlq-url (or DLQ_URL)"),
            (
                given(&args.realtime_queue_url),
                "--realtime-queue-url (or REALTIME_QUEUE_URL)",
            ),
            (given(&args.ledger_table), "--ledger-table (or LEDGER_TABLE)"),
        ];
        let missing: Vec<&'static str> = settings
            .iter()
            .filter(|(value, _)| value.is_none())
            .map(|(_, name)| *name)
            .collect();
        match settings {
            [
                (Some(dlq_url), _),
                (Some(realtime_queue_url), _),
                (Some(ledger_table), _),
            ] => Ok(AwsTarget {
                dlq_url,
                realtime_queue_url,
                critical_queue_url: given(&args.critical_queue_url),
                ledger_table,
            }),
            _ => Err(MissingSettings(missing)),
        }
    }
}

#[cfg(feature = "aws")]
fn replay_aws_built_in(args: &ReplayArgs) -> Result<(), CliError> {
    let target = AwsTarget::from_args(args).map_err(CliError::invalid)?;
    runtime().block_on(replay_aws(&target, args.dry_run, args.json))
}

/// A relay built with `--no-default-features` has no AWS SDK: say so, and how to get it.
#[cfg(not(feature = "aws"))]
fn replay_aws_built_in(_args: &ReplayArgs) -> Result<(), CliError> {
    Err(CliError::invalid(
        "this relay was built without AWS support (--no-default-features), so replay-dlq --aws cannot run; \
         build it with the default features (cargo build --profile local -p relay) or use --local",
    ))
}

/// `--aws`: the SQS queues and the DynamoDB ledger. The realtime queue and the table are checked before
/// anything is touched, so a wrong URL or name fails here, by name (the DLQ when its depth is read).
#[cfg(feature = "aws")]
async fn replay_aws(target: &AwsTarget, dry_run: bool, json: bool) -> Result<(), CliError> {
    let config = relay_aws::sdk_config().await;
    let dlq = SqsQueue::new(&config, &target.dlq_url).with_visibility_timeout(VISIBILITY);
    let realtime = SqsQueue::from_client(dlq.client().clone(), &target.realtime_queue_url);
    let critical_url = target
        .critical_queue_url
        .as_deref()
        .unwrap_or(&target.realtime_queue_url);
    let critical = SqsQueue::from_client(dlq.client().clone(), critical_url);
    let ledger = DynamoLedger::new(&config, &target.ledger_table);
    for (queue, name, url) in [
        (&realtime, "realtime", &target.realtime_queue_url[..]),
        (&critical, "critical", critical_url),
    ] {
        queue
            .depth()
            .await
            .map_err(|e| CliError::Failed(format!("cannot reach the {name} queue {url}: {e}")))?;
    }
    ledger
        .get("replay-dlq:check")
        .await
        .map_err(|e| CliError::Failed(format!("cannot read the ledger table {}: {e}", target.ledger_table)))?;
    let replay = Replay {
        dlq: &dlq,
        realtime: &realtime,
        critical: &critical,
        ledger: &ledger,
        clock: &SystemClock,
    };
    replay_and_report(
        &replay,
        &target.dlq_url,
        dry_run,
        json,
        "the deliver function picks them up from the realtime queue now",
    )
    .await
}

/// Run `replay`, printing a line per message that was not simply replayed and the summary; `dlq` names the
/// dead-letter queue in errors, `next` says who delivers the replayed messages.
async fn replay_and_report(
    replay: &Replay<'_>,
    dlq: &str,
    dry_run: bool,
    json: bool,
    next: &str,
) -> Result<(), CliError> {
    let unreadable_queue = |e| CliError::Failed(format!("cannot read the dead-letter queue {dlq}: {e}"));
    let depth = replay.dlq.depth().await.map_err(unreadable_queue)?;
    if json {
        let mut messages = Vec::new();
        let report = if depth == 0 {
            ReplayReport {
                dry_run,
                ..ReplayReport::default()
            }
        } else {
            replay
                .run(dry_run, |m| messages.push(m.clone()))
                .await
                .map_err(unreadable_queue)?
        };
        let mut doc = serde_json::to_value(&report).map_err(CliError::failed)?;
        doc["messages"] = serde_json::to_value(&messages).map_err(CliError::failed)?;
        println!("{doc}");
        return if report.errors > 0 {
            Err(CliError::Reported)
        } else {
            Ok(())
        };
    }
    if depth == 0 {
        println!("the dead-letter queue is empty: nothing to replay");
        return Ok(());
    }
    let bar = progress_bar(depth, dry_run);
    let report = replay
        .run(dry_run, |message| {
            bar.inc(1);
            bar.suspend(|| print_message(message));
        })
        .await
        .map_err(unreadable_queue)?;
    bar.finish_and_clear();
    print_summary(&report, next);
    if report.errors > 0 {
        Err(CliError::Reported)
    } else {
        Ok(())
    }
}

/// The progress bar of a run: hidden for a dry run and under [`PROGRESS_FROM`] messages.
fn progress_bar(len: u64, dry_run: bool) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if len < PROGRESS_FROM || dry_run {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} replayed ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn print_message(message: &ReplayedMessage) {
    let key = message.key.as_deref().unwrap_or(&message.message_id);
    match &message.outcome {
        ReplayOutcome::Replayed { .. } => {}
        ReplayOutcome::WouldReplay => println!(
            "  would replay {key} ({} → {}) {}",
            message.record_type.as_deref().unwrap_or(""),
            message.table.as_deref().unwrap_or(""),
            message.dead_letter_reason.as_deref().unwrap_or("")
        ),
        ReplayOutcome::Unreadable { error } => {
            println!("  {}: unreadable message left in the DLQ ({error})", message.message_id)
        }
        ReplayOutcome::Failed { error } => eprintln!("  {key}: {error}"),
    }
}

fn print_summary(report: &ReplayReport, next: &str) {
    if report.dry_run {
        println!(
            "dry run: {} of {} dead-lettered messages would be replayed; {} unreadable",
            report.replayed, report.seen, report.unreadable
        );
    } else {
        println!(
            "replayed {} of {} messages ({} ledger entries reopened); {} unreadable left in the DLQ; {} errors",
            report.replayed, report.seen, report.reopened, report.unreadable, report.errors
        );
        println!("{next}");
    }
    if report.short_by > 0 {
        println!(
            "note: the dead-letter queue counted {} messages but handed out {}; the rest were in flight elsewhere \
             (or counted late): run again later to replay them",
            report.depth, report.seen
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReplayArgs,
    }

    fn args(argv: &[&str]) -> ReplayArgs {
        Cli::try_parse_from(std::iter::once("replay-dlq").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn aws_settings_that_are_missing_are_named() {
        let args = args(&["--aws", "--dlq-url", "https://sqs.example/dlq"]);
        let err = AwsTarget::from_args(&args).unwrap_err().to_string();
        assert!(err.contains("--realtime-queue-url (or REALTIME_QUEUE_URL)"), "{err}");
        assert!(err.contains("--ledger-table (or LEDGER_TABLE)"), "{err}");
        assert!(!err.contains("--dlq-url"), "given, so not named: {err}");
    }

    /// Built with `--no-default-features` (scripts/test.sh runs these tests so), `--aws` is refused with the
    /// way to get it, before any setting is looked at.
    #[cfg(not(feature = "aws"))]
    #[test]
    fn without_the_aws_feature_replay_aws_says_how_to_build_it() {
        let err = run(&args(&["--aws"])).unwrap_err();
        assert!(matches!(err, CliError::Invalid(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("built without AWS support"), "{text}");
        assert!(text.contains("--local"), "{text}");
    }
}
