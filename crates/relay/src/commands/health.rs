//! `relay health`: ask a running relay's `/healthz` (the container healthcheck); exit 0 when it answers
//! `{"status":"ok"}`.

use clap::Args;

use super::runtime;
use crate::api::{DEFAULT_URL, RelayApi};
use crate::error::CliError;

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// The relay's base URL.
    #[arg(long, env = "RELAY_URL", default_value = DEFAULT_URL)]
    pub url: String,
}

pub fn run(args: &HealthArgs) -> Result<(), CliError> {
    let api = RelayApi::new(reqwest::Client::new(), &args.url);
    let body = runtime()
        .block_on(api.get_json("/healthz"))
        .map_err(|e| CliError::Failed(format!("{}/healthz: {e}", api.base_url())))?;
    if body["status"] == "ok" {
        println!("ok");
        Ok(())
    } else {
        Err(CliError::Failed(format!("{}/healthz answered {body}", api.base_url())))
    }
}
