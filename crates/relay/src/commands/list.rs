//! `relay list` and `relay dlq list`: what came in, where it went, what failed — read from the local
//! database (safe while `relay serve` runs). Human columns by default, `--json` for scripts (the field
//! names are those of the status API, documented in docs/cli.md).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use relay_local::{ListFilter, LocalStore};
use relay_pipeline::Envelope;
use relay_pipeline::ingest::status_body;
use relay_ports::{Clock, DeliveryState, SystemClock};
use serde_json::{Value, json};

use super::runtime;
use crate::error::CliError;
use crate::settings;

#[derive(Args, Debug)]
pub struct ListArgs {
    /// The local database.
    #[arg(long, env = "RELAY_DB", default_value = settings::DEFAULT_DB)]
    pub db: PathBuf,
    /// Only alerts in this state (ACCEPTED, QUEUED, IN_PROGRESS, RETRYING, AGGREGATED, COMPLETED, FAILED).
    #[arg(long)]
    pub state: Option<String>,
    /// Only alerts updated within this long (`90s`, `30m`, `12h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only alerts of this record type (`security_incident`, `hr_case`, …) or routed by this rule.
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// At most this many, most recently updated first.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Print a JSON array of status documents instead of columns.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// The dead-lettered alerts with the error that put each there.
    List(DlqListArgs),
}

#[derive(Args, Debug)]
pub struct DlqListArgs {
    /// The local database.
    #[arg(long, env = "RELAY_DB", default_value = settings::DEFAULT_DB)]
    pub db: PathBuf,
    /// At most this many, oldest first.
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    /// Print a JSON array instead of columns.
    #[arg(long)]
    pub json: bool,
}

/// A duration like `90s`, `30m`, `12h` or `7d`, in milliseconds.
pub fn parse_since(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = number
        .parse()
        .map_err(|_| format!("--since {text:?}: expected a number and a unit, e.g. 30m, 12h, 7d"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("--since {text:?}: the unit must be s, m, h or d")),
    };
    Ok(n.saturating_mul(unit_ms))
}

pub(crate) fn open(db: &Path) -> Result<LocalStore, CliError> {
    if !db.exists() {
        return Err(CliError::Invalid(format!(
            "no database at {} (give --db)",
            db.display()
        )));
    }
    LocalStore::open(db).map_err(CliError::failed)
}

/// The ledger entries of `filter` as status documents.
pub async fn alerts(store: &LocalStore, filter: ListFilter) -> Result<Vec<Value>, CliError> {
    let entries = store.ledger().list_recent(filter).await.map_err(CliError::failed)?;
    Ok(entries.iter().map(status_body).collect())
}

/// The dead-letter queue, one document per message: `message_id`, `alert_id`, `record_type`, `table`,
/// `error_class`, `error`, `attempts`, `failed_at_ms`, `dead_lettered_at_ms` (nothing of the alert's
/// content).
pub async fn dead_letters(store: &LocalStore, limit: u32) -> Result<Vec<Value>, CliError> {
    let messages = store.queue("dlq").list(limit).await.map_err(CliError::failed)?;
    Ok(messages
        .iter()
        .map(|m| match Envelope::from_json(&m.body) {
            Ok(env) => json!({
                "message_id": m.message_id,
                "alert_id": env.ledger_key(),
                "record_type": env.record_type().as_str(),
                "table": env.table(),
                "error_class": env.dead_letter.as_ref().map(|d| d.error_class.clone()),
                "error": env.dead_letter.as_ref().map(|d| d.error.clone()),
                "attempts": env.dead_letter.as_ref().map(|d| d.attempts),
                "failed_at_ms": env.dead_letter.as_ref().map(|d| d.failed_at_ms),
                "dead_lettered_at_ms": m.sent_at_ms,
            }),
            Err(e) => json!({
                "message_id": m.message_id,
                "alert_id": null,
                "error_class": "unreadable",
                "error": format!("unreadable message: {e}"),
                "dead_lettered_at_ms": m.sent_at_ms,
            }),
        })
        .collect())
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

pub fn run(args: &ListArgs) -> Result<(), CliError> {
    let state = match &args.state {
        Some(s) => Some(DeliveryState::parse(&s.to_ascii_uppercase()).ok_or_else(|| {
            CliError::Invalid(format!(
                "--state {s:?}: one of ACCEPTED, QUEUED, IN_PROGRESS, RETRYING, AGGREGATED, COMPLETED, FAILED"
            ))
        })?),
        None => None,
    };
    let since_ms = match &args.since {
        Some(s) => Some(SystemClock.now_ms() - parse_since(s).map_err(CliError::Invalid)?),
        None => None,
    };
    let store = open(&args.db)?;
    let filter = ListFilter {
        state,
        since_ms,
        kind: args.kind.clone(),
        limit: args.limit,
    };
    let rows = runtime().block_on(alerts(&store, filter))?;
    if args.json {
        println!("{}", Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<20}  {:<11}  {:<28}  {:<18}  {:<12}  last error",
        "updated", "state", "alert", "record type", "number"
    );
    for r in &rows {
        println!(
            "{:<20}  {:<11}  {:<28}  {:<18}  {:<12}  {}",
            text(&r["updated_at"]),
            text(&r["state"]),
            text(&r["alert_id"]),
            text(&r["record_type"]),
            text(&r["servicenow"]["number"]),
            r["last_error"].as_str().unwrap_or("")
        );
    }
    println!("{} alerts", rows.len());
    Ok(())
}

pub fn run_dlq(command: &DlqCommand) -> Result<(), CliError> {
    let DlqCommand::List(args) = command;
    let store = open(&args.db)?;
    let rows = runtime().block_on(dead_letters(&store, args.limit))?;
    if args.json {
        println!("{}", Value::Array(rows));
        return Ok(());
    }
    if rows.is_empty() {
        println!("the dead-letter queue is empty");
        return Ok(());
    }
    println!("{:<28}  {:<18}  {:<10}  error", "alert", "record type", "class");
    for r in &rows {
        println!(
            "{:<28}  {:<18}  {:<10}  {}",
            text(&r["alert_id"]),
            text(&r["record_type"]),
            text(&r["error_class"]),
            r["error"].as_str().unwrap_or("")
        );
    }
    println!("{} dead-lettered", rows.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_number_and_a_unit() {
        assert_eq!(parse_since("90s"), Ok(90_000));
        assert_eq!(parse_since("30m"), Ok(1_800_000));
        assert_eq!(parse_since("2d"), Ok(172_800_000));
        assert!(parse_since("2w").unwrap_err().contains("s, m, h or d"));
        assert!(parse_since("soon").unwrap_err().contains("e.g. 30m"));
    }
}
