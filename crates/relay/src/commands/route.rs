//! `relay route`: the routing dry-run. Validates an alert and prints the routing decision as JSON; nothing
//! is sent anywhere.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use relay_core::{Alert, Router};
use relay_ports::Clock;
use serde_json::json;

use crate::error::CliError;
use crate::settings;

#[derive(Args, Debug)]
pub struct RouteArgs {
    /// The alert webhook body (JSON file; `-` reads standard input).
    pub alert: PathBuf,
    #[command(flatten)]
    pub config: settings::ConfigOption,
}

/// An alert that does not validate: every problem, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid alert:\n{}", .0.join("\n"))]
struct AlertProblems(Vec<String>);

/// Print the decision (exit 0), or the problems as JSON on stdout and one per line on stderr (exit 2).
/// An input that cannot be read exits 1.
pub fn run(args: &RouteArgs) -> Result<(), CliError> {
    let (config, _) = args.config.load().map_err(CliError::invalid)?;
    let key = settings::pseudonym_key().map_err(CliError::invalid)?;
    let router = Router::with_pseudonym_key(config, key).map_err(CliError::invalid)?;
    let body = read_input(&args.alert).map_err(CliError::failed)?;
    match Alert::from_slice(&body) {
        Ok(alert) => {
            let d = router.route_at(&alert, relay_ports::SystemClock.now_ms().div_euclid(1000));
            print_json(&json!({
                "alert_id": d.alert_id,
                "rule": d.rule,
                "record_type": d.record_type,
                "table": d.table,
                "impact": d.impact,
                "urgency": d.urgency,
                "priority": d.priority,
                "servicenow_priority": d.servicenow_priority,
                "priority_method": d.priority_method,
                "priority_note": priority_note(&d),
                "profile": d.profile,
                "dedupe_field": d.dedupe.field,
                "assignment_group": d.assignment_group,
                "delivery": d.delivery,
                "correlation_id": d.correlation_id,
                "fields": d.fields,
                "config_hash": d.config_hash,
                "ignored_fields": alert.ignored_fields,
                "missing_details": alert.missing_details,
                "person_lookup": d.person.as_ref().map(|p| json!({"match_by": p.match_by, "fields": p.fields})),
                "attaches_chart": d.chart.is_some(),
            }));
            Ok(())
        }
        Err(invalid) => {
            print_json(&json!({"error": "invalid alert", "problems": invalid.problems}));
            let lines = invalid.problems.iter().map(ToString::to_string).collect();
            Err(CliError::invalid(AlertProblems(lines)))
        }
    }
}

/// What priority the record really gets on its table, in words.
fn priority_note(d: &relay_core::Decision) -> String {
    use relay_core::PriorityMethod;
    match (d.priority_method, d.servicenow_priority) {
        (PriorityMethod::ImpactUrgency, Some(p)) => {
            format!(
                "{p}: {} computes it from impact {} × urgency {}",
                d.table, d.impact, d.urgency
            )
        }
        (PriorityMethod::Direct, Some(p)) => format!("{p}: written as priority on {}", d.table),
        (PriorityMethod::HrService, _) => format!("set by the case's HR service on {}", d.table),
        _ => format!(
            "{} has no priority the relay sets (the table's default applies)",
            d.table
        ),
    }
}

/// The alert input could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {input}: {source}")]
struct UnreadableInput {
    /// The file, or "standard input".
    input: String,
    #[source]
    source: std::io::Error,
}

/// The file's bytes, or standard input's for `-`.
fn read_input(path: &Path) -> Result<Vec<u8>, UnreadableInput> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        return match std::io::stdin().read_to_end(&mut buf) {
            Ok(_) => Ok(buf),
            Err(source) => Err(UnreadableInput {
                input: "standard input".into(),
                source,
            }),
        };
    }
    std::fs::read(path).map_err(|source| UnreadableInput {
        input: path.display().to_string(),
        source,
    })
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
