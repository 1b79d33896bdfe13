//! `relay route` and `relay config check`: the routing dry-run tools.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use relay_core::{Alert, Router};
use serde_json::json;

/// Exit code for invalid input (an alert or a config that fails validation).
pub const EXIT_INVALID: u8 = 2;

#[derive(Args)]
pub struct RouteArgs {
    /// The alert webhook body (JSON file; `-` reads standard input).
    pub alert: PathBuf,
    /// Routing config (YAML). Default: the shipped config/relay.yaml compiled into this binary.
    #[arg(long, env = "RELAY_CONFIG_PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Args)]
pub struct CheckArgs {
    /// Routing config (YAML). Default: the shipped config.
    pub file: Option<PathBuf>,
}

fn read_input(path: &PathBuf) -> Result<Vec<u8>, String> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub fn route(args: &RouteArgs) -> ExitCode {
    let config = match crate::settings::load_config(args.config.as_ref()) {
        Ok((c, _)) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let router = match Router::new(config, crate::settings::pseudonym_key()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let body = match read_input(&args.alert) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match Alert::from_slice(&body) {
        Ok(alert) => {
            let d = router.route(&alert);
            print_json(&json!({
                "alert_id": d.alert_id,
                "rule": d.rule,
                "record_type": d.record_type,
                "table": d.table,
                "impact": d.impact,
                "urgency": d.urgency,
                "priority": d.priority,
                "servicenow_priority": d.servicenow_priority,
                "assignment_group": d.assignment_group,
                "delivery": d.delivery,
                "correlation_id": d.correlation_id,
                "fields": d.fields,
                "config_hash": d.config_hash,
                "ignored_fields": alert.ignored_fields,
            }));
            ExitCode::SUCCESS
        }
        Err(invalid) => {
            print_json(&json!({"error": "invalid alert", "problems": invalid.problems}));
            for p in &invalid.problems {
                eprintln!("{p}");
            }
            ExitCode::from(EXIT_INVALID)
        }
    }
}

pub fn check(args: &CheckArgs) -> ExitCode {
    match crate::settings::load_config(args.file.as_ref()) {
        Ok((c, _)) => {
            let name = args
                .file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "built-in config".into());
            println!("{name}: OK ({} rules, config hash {})", c.rules.len(), c.hash);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}
