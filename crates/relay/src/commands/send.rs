//! `relay send`: sign alert files with the webhook secret, POST them to a running relay and print the
//! answers; with `--wait`, follow each accepted alert to its ServiceNow record.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use relay_ports::{Clock, SystemClock};
use serde_json::Value;

use super::runtime;
use crate::api::{Answer, DEFAULT_URL, RelayApi};
use crate::error::CliError;
use crate::settings;

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
    /// With --wait: the relay's read token file. Default: RELAY_READ_TOKEN, else read-token next to --db.
    #[arg(long, env = "RELAY_READ_TOKEN_FILE")]
    pub read_token_file: Option<PathBuf>,
    /// Print one JSON line per file: `{"file", "http_status", "answer", "delivery"}` (`delivery`: the
    /// status document after --wait, or null).
    #[arg(long)]
    pub json: bool,
}

/// Exit 0 when every alert was accepted (and, with `--wait`, delivered); the per-file lines say why not.
pub fn run(args: &SendArgs) -> Result<(), CliError> {
    let (keys, _) =
        settings::signing_secrets(args.secret_file.as_deref(), &args.db, false).map_err(CliError::invalid)?;
    let mut bodies = Vec::new();
    for path in &args.alerts {
        let body =
            std::fs::read(path).map_err(|e| CliError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        bodies.push((path, body));
    }
    let token = match args.wait {
        Some(_) => super::status::client_read_token(args.read_token_file.as_deref(), Some(&args.db))?,
        None => None,
    };
    let api = RelayApi::new(reqwest::Client::new(), &args.url).with_read_token(token);
    let wait = args.wait.map(Duration::from_secs);
    let all_ok = runtime().block_on(async {
        let mut all_ok = true;
        for (path, body) in bodies {
            all_ok &= send_one(&api, &keys, path, body, wait, args.json).await;
        }
        all_ok
    });
    if all_ok { Ok(()) } else { Err(CliError::Reported) }
}

/// POST one file and print its answer (and, with `wait`, its delivery); whether it went well.
async fn send_one(
    api: &RelayApi,
    keys: &relay_pipeline::WebhookSecrets,
    path: &std::path::Path,
    body: Vec<u8>,
    wait: Option<Duration>,
    json: bool,
) -> bool {
    let webhook_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let timestamp_s = SystemClock.now_ms() / 1000;
    let answer = match api.post_alert(keys, &webhook_id, timestamp_s, body).await {
        Ok(response) => Answer::read(response).await,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"file": path.display().to_string(), "http_status": null,
                        "error": format!("cannot reach {}: {e}", api.base_url())})
                );
            } else {
                eprintln!("{}: cannot reach {}: {e}", path.display(), api.base_url());
            }
            return false;
        }
    };
    if json {
        let accepted = (200..300).contains(&answer.status);
        let delivery = match (wait, answer.body["alert_id"].as_str()) {
            (Some(limit), Some(alert_id)) if accepted => wait_for_delivery(api, alert_id, limit).await,
            _ => None,
        };
        let ok = accepted
            && match (&wait, &delivery) {
                (None, _) => true,
                (Some(_), Some(d)) => d["state"] == "COMPLETED" || (d["state"].is_string() && d["state"] != "FAILED"),
                (Some(_), None) => false,
            };
        println!(
            "{}",
            serde_json::json!({"file": path.display().to_string(), "http_status": answer.status,
                "answer": answer.body, "delivery": delivery})
        );
        return ok;
    }
    println!("{}: HTTP {} {}", path.display(), answer.status, answer.body);
    if !(200..300).contains(&answer.status) {
        return false;
    }
    let (Some(limit), Some(alert_id)) = (wait, answer.body["alert_id"].as_str()) else {
        return true;
    };
    match wait_for_delivery(api, alert_id, limit).await {
        Some(s) if s["error"].is_string() => {
            println!(
                "  cannot follow the delivery: {}",
                s["error"].as_str().unwrap_or_default()
            );
            false
        }
        Some(s) if s["state"] == "COMPLETED" => {
            println!(
                "  delivered: {} {} {}",
                s["servicenow"]["table"].as_str().unwrap_or(""),
                s["servicenow"]["number"].as_str().unwrap_or("(no number)"),
                s["servicenow"]["link"].as_str().unwrap_or("")
            );
            true
        }
        Some(s) => {
            println!(
                "  state {} after {} s: {}",
                s["state"],
                limit.as_secs(),
                s["last_error"]
            );
            s["state"] != "FAILED"
        }
        None => {
            println!("  no status after {} s", limit.as_secs());
            false
        }
    }
}

/// Poll the alert's status until it is final (`COMPLETED` or `FAILED`) or `limit` passes; the last status
/// seen, if any.
async fn wait_for_delivery(api: &RelayApi, alert_id: &str, limit: Duration) -> Option<Value> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(answer) = api.alert_status(alert_id).await
            && !answer.body.is_null()
        {
            let final_state = answer.body["state"] == "COMPLETED" || answer.body["state"] == "FAILED";
            if final_state || answer.status == 401 || answer.status == 421 {
                return Some(answer.body);
            }
            last = Some(answer.body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}
