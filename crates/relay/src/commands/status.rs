//! `relay status`: the delivery state and ServiceNow record of one alert, read from the local database or
//! from a running relay's API.

use std::path::{Path, PathBuf};

use clap::Args;
use relay_local::LocalStore;
use relay_pipeline::ingest::status_of;
use relay_ports::Ledger;
use secrecy::SecretString;
use serde_json::{Value, json};

use super::runtime;
use crate::api::RelayApi;
use crate::error::CliError;
use crate::settings;

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
    /// With --url: the read token file of that relay. Default: RELAY_READ_TOKEN, else read-token next to
    /// RELAY_DB (or the default database); none when neither exists (the deployed API uses IAM instead).
    #[arg(long, env = "RELAY_READ_TOKEN_FILE")]
    pub read_token_file: Option<PathBuf>,
}

/// Print the status as JSON (the API's body); exit 3 for an unknown alert.
pub fn run(args: &StatusArgs) -> Result<(), CliError> {
    let (code, body) = runtime().block_on(async {
        match &args.url {
            Some(url) => {
                let token = client_read_token(args.read_token_file.as_deref(), None)?;
                let api = RelayApi::new(reqwest::Client::new(), url).with_read_token(token);
                from_api(&api, &args.alert_id).await
            }
            None => from_database(args.db.as_ref(), &args.alert_id).await,
        }
    })?;
    println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
    match code {
        200 => Ok(()),
        404 => Err(CliError::NotFound(format!(
            "no alert with id {:?} is known",
            args.alert_id
        ))),
        _ => Err(CliError::Reported),
    }
}

/// The read token a client command sends: `file` (must be readable), else `RELAY_READ_TOKEN`, else the
/// file next to `db` (default: RELAY_DB or the default database) when it exists, else none.
pub fn client_read_token(file: Option<&Path>, db: Option<&Path>) -> Result<Option<SecretString>, CliError> {
    let db = db
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("RELAY_DB").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(settings::DEFAULT_DB));
    if file.is_none() && std::env::var_os("RELAY_READ_TOKEN").is_none() && !settings::read_token_next_to(&db).exists() {
        return Ok(None);
    }
    settings::read_token(file, &db, false)
        .map(|(t, _)| Some(t))
        .map_err(CliError::invalid)
}

async fn from_api(api: &RelayApi, alert_id: &str) -> Result<(u16, Value), CliError> {
    let answer = api
        .alert_status(alert_id)
        .await
        .map_err(|e| CliError::Failed(format!("cannot reach {}: {e}", api.alert_url(alert_id))))?;
    Ok((answer.status, answer.body))
}

/// The same body the API answers, from the ledger in the database file.
async fn from_database(db: Option<&PathBuf>, alert_id: &str) -> Result<(u16, Value), CliError> {
    let db = db.cloned().unwrap_or_else(|| PathBuf::from(settings::DEFAULT_DB));
    if !db.exists() {
        return Err(CliError::Invalid(format!(
            "no database at {} (give --db or --url)",
            db.display()
        )));
    }
    let store = LocalStore::open(&db).map_err(CliError::failed)?;
    match store
        .ledger()
        .get(&relay_pipeline::alert_key(alert_id))
        .await
        .map_err(CliError::failed)?
    {
        Some(entry) => Ok((200, status_of(&store.ledger(), &entry).await)),
        None => Ok((404, json!({"error": format!("no alert with id {alert_id:?} is known")}))),
    }
}
