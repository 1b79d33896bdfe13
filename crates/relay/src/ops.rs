//! Operator commands: `send`, `status`, `test-connection`, `replay-dlq`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use relay_local::LocalStore;
use relay_pipeline::envelope::{Envelope, Item};
use relay_pipeline::ingest::status_body;
use relay_ports::{Clock, Ledger, SystemClock};
use serde_json::{Value, json};
use servicenow_client::{ClientConfig, Outcome, ServiceNowClient, StaticCredentials};

use crate::settings;

/// Exit codes shared by the operator commands.
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_INVALID: u8 = crate::error::EXIT_INVALID;

const DEFAULT_URL: &str = "http://127.0.0.1:8080";

use crate::error::runtime;

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

// ---------------------------------------------------------------------------------------------------------
// send
// ---------------------------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Alert webhook bodies (JSON files).
    #[arg(required = true)]
    pub alerts: Vec<PathBuf>,
    /// The relay's base URL.
    #[arg(long, env = "RELAY_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// Signing secret file (`{"secrets": [...]}` or a bare `whsec_…`). Default: RELAY_WEBHOOK_SECRET, else
    /// webhook-secret.json next to --db.
    #[arg(long, env = "RELAY_WEBHOOK_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// The local database whose directory holds the generated secret (see `relay serve --db`).
    #[arg(long, env = "RELAY_DB", default_value = settings::DEFAULT_DB)]
    pub db: PathBuf,
    /// Wait until each accepted alert is delivered (or failed), up to this many seconds, and print its
    /// ServiceNow record. Batched alerts wait for the next flush.
    #[arg(long, num_args = 0..=1, default_missing_value = "30")]
    pub wait: Option<u64>,
}

pub fn send(args: &SendArgs) -> ExitCode {
    let (keys, _) = match settings::signing_secrets(args.secret_file.as_deref(), &args.db, false) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let mut bodies = Vec::new();
    for p in &args.alerts {
        match std::fs::read(p) {
            Ok(b) => bodies.push((p, b)),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", p.display());
                return ExitCode::from(EXIT_INVALID);
            }
        }
    }
    let base = args.url.trim_end_matches('/').to_string();
    runtime().block_on(async move {
        let http = reqwest::Client::new();
        let mut all_ok = true;
        for (path, body) in bodies {
            let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            let ts = now_ms() / 1000;
            let sig = keys.sign(&id, ts, &body);
            let resp = http
                .post(format!("{base}/v1/alerts"))
                .header("content-type", "application/json")
                .header("webhook-id", &id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sig)
                .body(body)
                .send()
                .await;
            let (status, reply) = match resp {
                Ok(r) => (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null)),
                Err(e) => {
                    eprintln!("{}: cannot reach {base}: {e}", path.display());
                    all_ok = false;
                    continue;
                }
            };
            println!("{}: HTTP {status} {}", path.display(), reply);
            if !(200..300).contains(&status) {
                all_ok = false;
                continue;
            }
            if let (Some(limit), Some(id)) = (args.wait, reply["alert_id"].as_str()) {
                match wait_for(&http, &base, id, Duration::from_secs(limit)).await {
                    Some(s) if s["state"] == "COMPLETED" => println!(
                        "  delivered: {} {} {}",
                        s["servicenow"]["table"].as_str().unwrap_or(""),
                        s["servicenow"]["number"].as_str().unwrap_or("(no number)"),
                        s["servicenow"]["link"].as_str().unwrap_or("")
                    ),
                    Some(s) => {
                        println!("  state {} after {limit} s: {}", s["state"], s["last_error"]);
                        if s["state"] == "FAILED" {
                            all_ok = false;
                        }
                    }
                    None => {
                        println!("  no status after {limit} s");
                        all_ok = false;
                    }
                }
            }
        }
        if all_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FAILED)
        }
    })
}

async fn wait_for(http: &reqwest::Client, base: &str, id: &str, limit: Duration) -> Option<Value> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/v1/alerts/{id}")).send().await
            && let Ok(v) = r.json::<Value>().await
        {
            if v["state"] == "COMPLETED" || v["state"] == "FAILED" {
                return Some(v);
            }
            last = Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

// ---------------------------------------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The alert id.
    pub alert_id: String,
    /// Read the local database directly (default when --url is not given).
    #[arg(long, env = "RELAY_DB", conflicts_with = "url")]
    pub db: Option<PathBuf>,
    /// Ask a running relay (local `relay serve` or the deployed API) instead.
    #[arg(long)]
    pub url: Option<String>,
}

pub fn status(args: &StatusArgs) -> ExitCode {
    runtime().block_on(async {
        let (code, body) = if let Some(url) = &args.url {
            let url = format!("{}/v1/alerts/{}", url.trim_end_matches('/'), args.alert_id);
            match reqwest::get(&url).await {
                Ok(r) => (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null)),
                Err(e) => {
                    eprintln!("error: cannot reach {url}: {e}");
                    return ExitCode::from(EXIT_FAILED);
                }
            }
        } else {
            let db = args.db.clone().unwrap_or_else(|| PathBuf::from(settings::DEFAULT_DB));
            if !db.exists() {
                eprintln!("error: no database at {} (give --db or --url)", db.display());
                return ExitCode::from(EXIT_INVALID);
            }
            let store = match LocalStore::open(&db) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_FAILED);
                }
            };
            match store.ledger().get(&args.alert_id).await {
                Ok(Some(e)) => (200, status_body(&e)),
                Ok(None) => (
                    404,
                    json!({"error": format!("no alert with id {:?} is known", args.alert_id)}),
                ),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_FAILED);
                }
            }
        };
        println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
        match code {
            200 => ExitCode::SUCCESS,
            404 => crate::error::CliError::NotFound(args.alert_id.clone()).exit_code(),
            _ => crate::error::CliError::Reported.exit_code(),
        }
    })
}

// ---------------------------------------------------------------------------------------------------------
// test-connection
// ---------------------------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct TestConnectionArgs {
    /// Routing config whose tables are checked. Default: the shipped config.
    #[arg(long, env = "RELAY_CONFIG_PATH")]
    pub config: Option<PathBuf>,
    /// The instance: a JSON file in the ServiceNow secret format. Default: the SERVICENOW_* variables.
    #[arg(long, env = "RELAY_SERVICENOW_FILE")]
    pub servicenow_file: Option<PathBuf>,
    /// Seconds allowed per request.
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
}

/// The verdict for one table, in the operator's words.
pub fn verdict(outcome: &Outcome) -> (bool, String) {
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
            } else if *status == 400 && text.to_ascii_lowercase().contains("invalid table") {
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

pub fn test_connection(args: &TestConnectionArgs) -> ExitCode {
    let (config, _) = match settings::load_config(args.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let sn = match settings::servicenow_settings(args.servicenow_file.as_deref()) {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!(
                "error: no ServiceNow instance configured: give --servicenow-file or set SERVICENOW_INSTANCE_URL \
                 (+ SERVICENOW_USERNAME/SERVICENOW_PASSWORD)"
            );
            return ExitCode::from(EXIT_INVALID);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let mut cc = ClientConfig::new(sn.instance_url.clone());
    cc.total_timeout = Duration::from_secs(args.timeout.max(1));
    cc.connect_timeout = cc.total_timeout.min(Duration::from_secs(5));
    let client = match ServiceNowClient::new(cc, Arc::new(StaticCredentials(sn.credentials))) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let tables = settings::mapped_tables(&config);
    println!(
        "ServiceNow {} — {} tables mapped by config {}",
        sn.instance_url,
        tables.len(),
        config.hash
    );
    let rows = runtime().block_on(async {
        let mut rows = Vec::new();
        for table in &tables {
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
            let outcome = client.create_record(table, &fields).await;
            let (mut ok, mut text) = verdict(&outcome);
            if let Outcome::Created(rec) = &outcome {
                let shown = rec.number.clone().unwrap_or_else(|| rec.sys_id.clone());
                match client.delete_record(table, &rec.sys_id).await {
                    Ok(()) => text = format!("OK (created and deleted {shown})"),
                    Err(o) => {
                        ok = false;
                        text = format!(
                            "created {shown} but could not delete it (delete it by hand): {}",
                            verdict(&o).1
                        );
                    }
                }
            }
            rows.push((table.clone(), ok, text));
        }
        rows
    });
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(5).max(5);
    println!("{:<width$}  {:<4}  detail", "table", "ok");
    for (table, ok, text) in &rows {
        println!("{table:<width$}  {:<4}  {text}", if *ok { "yes" } else { "NO" });
    }
    let failed = rows.iter().filter(|r| !r.1).count();
    if failed == 0 {
        println!("all {} tables OK", rows.len());
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} tables failed", rows.len());
        ExitCode::from(EXIT_FAILED)
    }
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

    pub fn exit_code(&self) -> ExitCode {
        if self.errors > 0 {
            ExitCode::from(EXIT_FAILED)
        } else {
            ExitCode::SUCCESS
        }
    }
}

pub fn replay_dlq(args: &ReplayArgs) -> ExitCode {
    if args.aws {
        return match crate::replay_aws::AwsTarget::from_args(args) {
            Ok(target) => runtime().block_on(crate::replay_aws::replay(&target, args.dry_run)),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_INVALID)
            }
        };
    }
    if !args.db.exists() {
        eprintln!("error: no database at {} (give --db)", args.db.display());
        return ExitCode::from(EXIT_INVALID);
    }
    let store = match LocalStore::open(&args.db) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
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
                Err(e) => {
                    eprintln!("error: cannot read the dead-letter queue: {e}");
                    return ExitCode::from(EXIT_FAILED);
                }
            };
            if page.is_empty() {
                break;
            }
            after = page.last().map(|m| m.message_id.clone());
            messages.extend(page);
        }
        if messages.is_empty() {
            println!("the dead-letter queue is empty: nothing to replay");
            return ExitCode::SUCCESS;
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
        tally.exit_code()
    })
}
