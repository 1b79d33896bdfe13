//! `relay sign`: sign an alert file with the webhook secret, for calling the relay by hand: the Standard
//! Webhooks headers as JSON, or (`--apigw-event`) a complete API Gateway HTTP API (payload 2.0) event for
//! `sam local invoke` / `cargo lambda invoke` of the ingest function.

use std::path::PathBuf;

use clap::Args;
use relay_ports::{Clock, SystemClock};
use serde_json::{Value, json};

use crate::error::CliError;
use crate::settings;

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The alert webhook body (JSON file).
    pub alert: PathBuf,
    /// Write a signed API Gateway v2 event (POST /v1/alerts) instead of the headers.
    #[arg(long)]
    pub apigw_event: bool,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Signing secret file (`{"secrets": [...]}` or a bare `whsec_…`). Default: RELAY_WEBHOOK_SECRET, else
    /// webhook-secret.json next to --db.
    #[arg(long, env = "RELAY_WEBHOOK_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// The local database whose directory holds the generated secret.
    #[arg(long, env = "RELAY_DB", default_value = settings::DEFAULT_DB)]
    pub db: PathBuf,
    /// The webhook message id (default: a fresh `msg_…`).
    #[arg(long)]
    pub webhook_id: Option<String>,
}

/// The API Gateway HTTP API (payload format 2.0) event of a signed `POST /v1/alerts`.
pub fn apigw_event(body: &str, headers: &Value, now_ms: i64) -> Value {
    let domain = "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com";
    let mut all = json!({
        "content-type": "application/json",
        "content-length": body.len().to_string(),
        "host": domain,
        "user-agent": "relay-sign",
        "x-forwarded-proto": "https",
    });
    if let (Some(all), Some(signed)) = (all.as_object_mut(), headers.as_object()) {
        all.extend(signed.clone());
    }
    json!({
        "version": "2.0",
        "routeKey": "POST /v1/alerts",
        "rawPath": "/v1/alerts",
        "rawQueryString": "",
        "headers": all,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "domainName": domain,
            "domainPrefix": "a1b2c3d4e5",
            "http": {"method": "POST", "path": "/v1/alerts", "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "relay-sign"},
            "requestId": format!("relay-sign-{now_ms}"),
            "routeKey": "POST /v1/alerts",
            "stage": "$default",
            "timeEpoch": now_ms,
        },
        "body": body,
        "isBase64Encoded": false,
    })
}

pub fn run(args: &SignArgs) -> Result<(), CliError> {
    let (keys, _) =
        settings::signing_secrets(args.secret_file.as_deref(), &args.db, false).map_err(CliError::invalid)?;
    let body = std::fs::read_to_string(&args.alert)
        .map_err(|e| CliError::Invalid(format!("cannot read {}: {e}", args.alert.display())))?;
    let now_ms = SystemClock.now_ms();
    let webhook_id = args
        .webhook_id
        .clone()
        .unwrap_or_else(|| format!("msg_{}", uuid::Uuid::new_v4().simple()));
    let timestamp_s = now_ms / 1000;
    let headers = json!({
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp_s.to_string(),
        "webhook-signature": keys.sign(&webhook_id, timestamp_s, body.as_bytes()),
    });
    let doc = if args.apigw_event {
        apigw_event(&body, &headers, now_ms)
    } else {
        headers
    };
    let text = serde_json::to_string_pretty(&doc).map_err(CliError::failed)? + "\n";
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
