//! `relay test-connection`: in every table a route of the config can take, create a marked test record the
//! way the table's record profile fills it (its defaults and data-policy fields; the person fields name the
//! integration user itself), look it up by its dedupe key, and delete it — or, where the integration user may
//! not delete (the usual case on a real instance), name the record to delete by hand. Reported per table in
//! the operator's words (missing role, data policy, auth, hibernating, …).

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use relay_ports::{Clock, SystemClock};
use servicenow_client::{ClientConfig, Expect, Outcome, RecordKey, ServiceNowClient, StaticCredentials};

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
    let username = instance.credentials.username().map(str::to_owned);
    let mut client_config = ClientConfig::new(instance.instance_url.clone());
    client_config.total_timeout = Duration::from_secs(args.timeout.max(1));
    client_config.connect_timeout = client_config.total_timeout.min(Duration::from_secs(5));
    let client = ServiceNowClient::new(client_config, Arc::new(StaticCredentials(instance.credentials)))
        .map_err(CliError::invalid)?;
    let targets: Vec<(String, relay_core::Profile)> = config
        .routed_targets()
        .into_iter()
        .filter(|(record_type, _)| *record_type != relay_core::RecordType::ItomEvent)
        .map(|(record_type, table)| {
            let profile = config.profile_for(record_type, &table).clone();
            (table, profile)
        })
        .collect();
    if !args.json {
        println!(
            "ServiceNow {} — {} tables routed by config {}",
            instance.instance_url,
            targets.len(),
            config.hash
        );
    }
    let checks = runtime().block_on(async {
        // the person fields of a test record name the integration user itself (a real alert names the employee)
        let me = match &username {
            Some(u) => client.find_user("user_name", u).await.ok().flatten(),
            None => None,
        };
        let mut checks = Vec::new();
        for (table, profile) in targets {
            checks.push(check_table(&client, table, &profile, me.as_deref()).await);
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

/// Create a marked record in `table` as its profile fills it, look it up by its key, and delete it again.
async fn check_table(
    client: &ServiceNowClient,
    table: String,
    profile: &relay_core::Profile,
    me: Option<&str>,
) -> TableCheck {
    let key = format!("relay-connection-test:{}", uuid::Uuid::new_v4().simple());
    let now_unix = SystemClock.now_ms() / 1000;
    let mut fields = profile.probe_fields(&key, now_unix);
    if let Some(me) = me {
        for f in &profile.person_fields {
            fields.insert(f.clone(), me.into());
        }
    }
    let outcome = client.create_record(&table, &fields).await;
    let (ok, detail) = verdict(&outcome);
    let Outcome::Created(record) = &outcome else {
        return TableCheck { table, ok, detail };
    };
    let shown = record.number.clone().unwrap_or_else(|| record.sys_id.clone());
    let expect = match profile.dedupe.matching {
        relay_core::DedupeMatch::Equals => Expect::Equals,
        relay_core::DedupeMatch::Contains => Expect::Contains(relay_core::Dedupe::marker(&key)),
    };
    let lookup = RecordKey {
        field: &profile.dedupe.field,
        value: &key,
        expect,
    };
    // a retry finds an earlier attempt's record only through this lookup: a table where it fails is not usable
    let (found_ok, found) = match client.find_by_key(&table, &lookup).await {
        Ok(Some(_)) => (true, format!("found again by {}", profile.dedupe.field)),
        Ok(None) => (
            false,
            format!(
                "NOT found again by {}: the integration user may not read what it created, so a retry could \
                 create the record twice",
                profile.dedupe.field
            ),
        ),
        Err(o) => (
            false,
            format!("lookup by {} failed: {}", profile.dedupe.field, verdict(&o).1),
        ),
    };
    let found = match note_check(client, &table, profile, &record.sys_id).await {
        Some(note) => format!("{found}, {note}"),
        None => found,
    };
    let (state_ok, found) = match state_check(client, &table, profile, &record.sys_id).await {
        Some((ok, state)) => (ok, format!("{found}, {state}")),
        None => (true, found),
    };
    let found_ok = found_ok && state_ok;
    let (ok, detail) = match client.delete_record(&table, &record.sys_id).await {
        Ok(()) => (found_ok, format!("created {shown}, {found}, deleted")),
        // integration roles usually may not delete: the check stands, the record stays for a human
        Err(Outcome::Permanent { status: 403, .. }) => (
            found_ok,
            format!("created {shown}, {found}; the integration user may not delete: delete {shown} by hand"),
        ),
        Err(o) => (
            false,
            format!(
                "created {shown} ({found}) but could not delete it (delete it by hand): {}",
                verdict(&o).1
            ),
        ),
    };
    let detail = if ok { format!("OK ({detail})") } else { detail };
    TableCheck { table, ok, detail }
}

/// Where the table has a journal (its profile's `lifecycle.journal`): a note written to the test record and
/// read back from `sys_journal_field`, the only place a note can be checked after a lost answer. A note
/// that cannot be written or read back is reported, not failed: a thread's alert whose note is refused gets
/// its own record, and one whose note cannot be read back may be noted twice, never lost.
async fn note_check(
    client: &ServiceNowClient,
    table: &str,
    profile: &relay_core::Profile,
    sys_id: &str,
) -> Option<String> {
    let journal = profile.lifecycle.journal.as_deref()?;
    let note = format!("[Alert Relay connection test] {}", uuid::Uuid::new_v4().simple());
    if let Err(o) = client.add_journal_entry(table, sys_id, journal, &note).await {
        return Some(format!("a note to {journal} is refused ({})", verdict(&o).1));
    }
    Some(match client.journal(table, sys_id, journal).await {
        Ok(entries) if entries.iter().any(|e| e.value == note) => "note read back".to_string(),
        Ok(_) => "note written but NOT read back from sys_journal_field (grant audit_viewer, \
                  infra/servicenow-roles.md): a note whose answer is lost could not be checked"
            .to_string(),
        Err(o) => format!("note written, journal read failed: {}", verdict(&o).1),
    })
}

/// Where the table's profile resolves records (`lifecycle.resolve`): the test record's state read back (what
/// the sync and every resolution read) and moved one step of its resolution (the first write of the walk
/// from the state it is in), then read again. A state that cannot be read, or a move refused for a missing
/// role, fails the table: lifecycle events could never resolve its records and the sync would not see them.
async fn state_check(
    client: &ServiceNowClient,
    table: &str,
    profile: &relay_core::Profile,
    sys_id: &str,
) -> Option<(bool, String)> {
    let resolve = profile.lifecycle.resolve.as_ref()?;
    let read = |what: &'static str| async move {
        match client.read_records(table, &[sys_id], &["state"]).await {
            Ok(rows) => match rows.first().and_then(|r| r.get("state")).and_then(|s| s.as_str()) {
                Some(s) => Ok(s.to_string()),
                None => Err(format!(
                    "its state is NOT readable {what} (the sync and resolutions read it)"
                )),
            },
            Err(o) => Err(format!("reading its state {what} failed: {}", verdict(&o).1)),
        }
    };
    let from = match read("").await {
        Ok(s) => s,
        Err(why) => return Some((false, why)),
    };
    let step = resolve
        .writes_from(&from, "[Alert Relay connection test] state change check")
        .swap_remove(0);
    let to = step
        .get("state")
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .to_string();
    match client.update_record(table, sys_id, &step).await {
        Ok(()) => {}
        Err(o @ Outcome::Permanent { status: 403, .. }) => {
            return Some((
                false,
                format!(
                    "state change {from} → {to} REFUSED ({}): lifecycle events cannot resolve records here \
                     (infra/servicenow-roles.md)",
                    verdict(&o).1
                ),
            ));
        }
        Err(o) => {
            return Some((
                true,
                format!("state change {from} → {to} not checked: {}", verdict(&o).1),
            ));
        }
    }
    Some(match read("after the change").await {
        Ok(now) if now == to => (true, format!("state change {from} → {to} allowed")),
        Ok(now) => (
            false,
            format!("state change {from} → {to} accepted but the state reads {now}"),
        ),
        Err(why) => (false, why),
    })
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
