//! `relay config check`: validate a routing config and list every problem with the rule it is in.

use std::path::PathBuf;

use clap::Args;

use crate::error::CliError;
use crate::settings;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Routing config (YAML). Default: the shipped config.
    pub file: Option<PathBuf>,
}

/// Print the rule count and hash (exit 0), or every problem (exit 2).
pub fn run(args: &CheckArgs) -> Result<(), CliError> {
    let (config, _) = settings::load_config(args.file.as_ref()).map_err(CliError::invalid)?;
    let name = args
        .file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "built-in config".into());
    println!("{name}: OK ({} rules, config hash {})", config.rules.len(), config.hash);
    Ok(())
}
