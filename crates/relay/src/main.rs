//! `relay`: the Alert Relay command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod route;

#[derive(Parser)]
#[command(name = "relay", version, about = "Employee-monitoring alerts → ServiceNow records")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Dry-run: validate an alert and print the routing decision as JSON (exit 0), or every validation
    /// problem (exit 2). Nothing is sent anywhere.
    Route(route::RouteArgs),
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a routing config and list every problem with the rule it is in (exit 2 when invalid).
    Check(route::CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Route(args) => route::route(&args),
        Command::Config(ConfigCommand::Check(args)) => route::check(&args),
    }
}
