//! `relay report rules`: rule quality from the local database, or from the deployed stack's DynamoDB
//! ledger with `--ledger-table` (docs/record-lifecycle.md#rule-quality) — per routing rule, the alerts,
//! what they became, how many were resolved or dismissed as false positives, and the median time to that.
//! Safe while `relay serve` (or the stack) runs.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use relay_pipeline::report::{RuleRow, rule_report};
use relay_ports::{Clock, SystemClock};

use super::list::{open, parse_since};
use super::runtime;
use crate::error::CliError;
use crate::settings;

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Per routing rule: alerts, records, thread notes, given up, resolved, dismissed, false-positive rate,
    /// median time to resolve.
    Rules(RulesArgs),
}

#[derive(Args, Debug)]
pub struct RulesArgs {
    /// The local database.
    #[arg(long, env = "RELAY_DB", default_value = settings::DEFAULT_DB)]
    pub db: PathBuf,
    /// Alerts received within this long (`12h`, `7d`, `30d`); the ledger keeps 30 days by default.
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// Print a JSON array (one object per rule, the field names of the columns) instead of columns.
    #[arg(long)]
    pub json: bool,
    /// Read the deployed stack's DynamoDB ledger (its name: the stack's `LedgerTable`) instead of the local
    /// database, with the AWS SDK's usual credentials and region. One Scan of the table: an occasional
    /// report, not a dashboard (the dashboard has the `LifecycleEvents` metric by rule).
    #[arg(long, env = "LEDGER_TABLE")]
    pub ledger_table: Option<String>,
}

/// What the report counts: alerts (realtime and batch) and lifecycle events.
#[cfg(feature = "aws")]
const REPORTED: [&str; 3] = ["realtime", "batch", relay_ports::EVENT_DELIVERY];

#[cfg(feature = "aws")]
fn from_dynamodb(table: &str) -> Result<Vec<relay_ports::LedgerEntry>, CliError> {
    runtime().block_on(async {
        let config = relay_aws::sdk_config().await;
        relay_aws::DynamoLedger::new(&config, table)
            .entries_delivered_as(&REPORTED)
            .await
            .map_err(|e| CliError::Failed(format!("cannot read the ledger table {table}: {e}")))
    })
}

#[cfg(not(feature = "aws"))]
fn from_dynamodb(_table: &str) -> Result<Vec<relay_ports::LedgerEntry>, CliError> {
    Err(CliError::invalid(
        "this relay was built without AWS support (--no-default-features), so report rules --ledger-table \
         cannot run; build it with the default features",
    ))
}

fn seconds(s: Option<i64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 120 => format!("{s} s"),
        Some(s) if s < 7200 => format!("{} min", s / 60),
        Some(s) => format!("{:.1} h", s as f64 / 3600.0),
    }
}

pub fn run(command: &ReportCommand) -> Result<(), CliError> {
    let ReportCommand::Rules(args) = command;
    let since_ms = SystemClock.now_ms() - parse_since(&args.since).map_err(CliError::Invalid)?;
    let entries = match args.ledger_table.as_deref().filter(|t| !t.trim().is_empty()) {
        Some(table) => from_dynamodb(table)?,
        None => {
            let store = open(&args.db)?;
            runtime()
                .block_on(store.ledger().alerts_and_events())
                .map_err(CliError::failed)?
        }
    };
    let rows: Vec<RuleRow> = rule_report(&entries, since_ms);
    if args.json {
        println!("{}", serde_json::to_string(&rows).map_err(CliError::failed)?);
        return Ok(());
    }
    println!(
        "{:<32}  {:>6}  {:>7}  {:>5}  {:>6}  {:>8}  {:>9}  {:>7}  {:>10}",
        "rule", "alerts", "records", "notes", "failed", "resolved", "dismissed", "FP rate", "to resolve"
    );
    for r in &rows {
        println!(
            "{:<32}  {:>6}  {:>7}  {:>5}  {:>6}  {:>8}  {:>9}  {:>7}  {:>10}",
            r.rule,
            r.alerts,
            r.records,
            r.notes,
            r.failed,
            r.resolved,
            r.dismissed,
            r.false_positive_rate
                .map_or("-".into(), |f| format!("{:.0} %", f * 100.0)),
            seconds(r.median_seconds_to_resolve),
        );
    }
    println!("{} rules, alerts received in the last {}", rows.len(), args.since);
    Ok(())
}
