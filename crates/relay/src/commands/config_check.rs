//! `relay config check`: validate a routing config and list every problem with the rule it is in.

use std::path::PathBuf;

use clap::Args;

use crate::error::CliError;
use crate::settings;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Routing config (YAML). Default: RELAY_CONFIG_PATH, else the shipped config.
    #[arg(env = "RELAY_CONFIG_PATH")]
    pub file: Option<PathBuf>,
    /// Print `{"config", "ok", "rules", "config_hash"}` or `{"config", "ok": false, "error"}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Print the rule count and hash (exit 0), or every problem (exit 2).
pub fn run(args: &CheckArgs) -> Result<(), CliError> {
    let name = args
        .file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "built-in config".into());
    let loaded = settings::load_config(args.file.as_ref());
    if args.json {
        return match loaded {
            Ok((config, _)) => {
                println!(
                    "{}",
                    serde_json::json!({"config": name, "ok": true, "rules": config.rules.len(), "config_hash": config.hash})
                );
                Ok(())
            }
            Err(e) => {
                println!(
                    "{}",
                    serde_json::json!({"config": name, "ok": false, "error": e.to_string()})
                );
                Err(CliError::ReportedInvalid)
            }
        };
    }
    let (config, _) = loaded.map_err(CliError::invalid)?;
    println!("{name}: OK ({} rules, config hash {})", config.rules.len(), config.hash);
    Ok(())
}
