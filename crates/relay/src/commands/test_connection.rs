//! `relay test-connection`: create and delete a marked test record in every table the routing config maps
//! to, and report per table in the operator's words (missing role, data policy, auth, hibernating, …).

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use servicenow_client::{ClientConfig, Outcome, ServiceNowClient, StaticCredentials};

use super::runtime;
use crate::error::CliError;
use crate::settings;

#[derive(Args, Debug)]
pub struct TestConnectionArgs {
    #[command(flatten)]
    pub config: settings::ConfigOption,
    #[command(flatten)]
    pub servicenow: settings::ServiceNowOption,
    /// Seconds allowed per request.
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
    /// Print one JSON document (`instance`, `config_hash`, `tables: [{table, ok, detail}]`, `failed`).
    #[arg(long)]
    pub json: bool,
}

/// The result for one table.
struct TableCheck {
    table: String,
    ok: bool,
    detail: String,
}

/// Print one line per table; exit 1 when any table failed.
pub fn run(args: &TestConnectionArgs) -> Result<(), CliError> {
    let (config, _) = args.config.load().map_err(CliError::invalid)?;
    let instance = args.servicenow.load().map_err(CliError::invalid)?.ok_or_else(|| {
        CliError::invalid(
            "no ServiceNow instance configured: give --servicenow-file or set SERVICENOW_INSTANCE_URL \
                 (+ SERVICENOW_USERNAME/SERVICENOW_PASSWORD)",
        )
    })?;
    let mut client_config = ClientConfig::new(instance.instance_url.clone());
    client_config.total_timeout = Duration::from_secs(args.timeout.max(1));
    client_config.connect_timeout = client_config.total_timeout.min(Duration::from_secs(5));
    let client = ServiceNowClient::new(client_config, Arc::new(StaticCredentials(instance.credentials)))
        .map_err(CliError::invalid)?;
    let tables = settings::mapped_tables(&config);
    if !args.json {
        println!(
            "ServiceNow {} — {} tables mapped by config {}",
            instance.instance_url,
            tables.len(),
            config.hash
        );
    }
    let checks = runtime().block_on(async {
        let mut checks = Vec::new();
        for table in tables {
            checks.push(check_table(&client, table).await);
        }
        checks
    });
    let failed = checks.iter().filter(|c| !c.ok).count();
    if args.json {
        let tables: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| serde_json::json!({"table": c.table, "ok": c.ok, "detail": c.detail}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "instance": instance.instance_url,
                "config_hash": config.hash,
                "tables": tables,
                "failed": failed,
            })
        );
        return if failed == 0 { Ok(()) } else { Err(CliError::Reported) };
    }
    let width = checks.iter().map(|c| c.table.len()).max().unwrap_or(5).max(5);
    println!("{:<width$}  {:<4}  detail", "table", "ok");
    for c in &checks {
        println!(
            "{:<width$}  {:<4}  {}",
            c.table,
            if c.ok { "yes" } else { "NO" },
            c.detail
        );
    }
    if failed == 0 {
        println!("all {} tables OK", checks.len());
        Ok(())
    } else {
        println!("{failed} of {} tables failed", checks.len());
        Err(CliError::Reported)
    }
}

/// Create a marked record in `table` and delete it again.
async fn check_table(client: &ServiceNowClient, table: String) -> TableCheck {
    let marker = format!("relay-connection-test:{}", uuid::Uuid::new_v4().simple());
    let mut fields = serde_json::Map::new();
    fields.insert(
        "short_description".into(),
        "[Alert Relay connection test] safe to delete — created and deleted by `relay test-connection`".into(),
    );
    fields.insert(
        "description".into(),
        "A connection test record. It should have been deleted already.".into(),
    );
    fields.insert("correlation_id".into(), marker.into());
    fields.insert("correlation_display".into(), "AlertRelayTest".into());
    fields.insert("impact".into(), "3".into());
    fields.insert("urgency".into(), "3".into());
    let outcome = client.create_record(&table, &fields).await;
    let (mut ok, mut detail) = verdict(&outcome);
    if let Outcome::Created(record) = &outcome {
        let shown = record.number.clone().unwrap_or_else(|| record.sys_id.clone());
        match client.delete_record(&table, &record.sys_id).await {
            Ok(()) => detail = format!("OK (created and deleted {shown})"),
            Err(o) => {
                ok = false;
                detail = format!(
                    "created {shown} but could not delete it (delete it by hand): {}",
                    verdict(&o).1
                );
            }
        }
    }
    TableCheck { table, ok, detail }
}

/// What a create (or delete) outcome means for the operator: whether the table is usable, and why not.
fn verdict(outcome: &Outcome) -> (bool, String) {
    match outcome {
        Outcome::Created(_) => (true, "OK".into()),
        Outcome::Permanent {
            message,
            detail,
            status,
        } => {
            let text = format!("{message} {}", detail.as_deref().unwrap_or(""));
            let lower = text.to_ascii_lowercase();
            if lower.contains("data policy") || lower.contains("mandatory") {
                (
                    false,
                    format!(
                        "data-policy fields required: {}",
                        text.split_whitespace().collect::<Vec<_>>().join(" ")
                    ),
                )
            } else if *status == 403 {
                (
                    false,
                    format!(
                        "missing role: the integration user may not do this here (403 ACL: {})",
                        text.trim()
                    ),
                )
            } else if *status == 400 && lower.contains("invalid table") {
                (false, format!("table does not exist: {}", text.trim()))
            } else {
                (false, format!("rejected (HTTP {status}): {}", text.trim()))
            }
        }
        Outcome::Auth { message } => (false, format!("auth failed: {message}")),
        Outcome::Retryable { reason, .. } | Outcome::Ambiguous { reason }
            if reason.to_ascii_lowercase().contains("hibernat") =>
        {
            (false, "hibernating: wake the instance up".into())
        }
        Outcome::Retryable { reason, .. } => (false, format!("unreachable: {reason}")),
        Outcome::Ambiguous { reason } => (false, format!("unreachable (no usable answer): {reason}")),
    }
}
