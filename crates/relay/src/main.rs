//! `relay`: the Alert Relay command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod error;
mod load;
mod ops;
mod replay_aws;
mod route;
mod serve;
mod settings;

// mimalloc: the pipeline allocates many small strings per alert; see BENCHMARKS.md (Routing core)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "relay", version, about = "Employee-monitoring alerts → ServiceNow records")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline on this machine: HTTP ingest, SQLite queues and ledger, delivery workers,
    /// batch flush, and a built-in ServiceNow simulator unless a real instance is configured.
    Serve(serve::ServeArgs),
    /// Sign alert files with the webhook secret and POST them to a running relay; print the answers.
    Send(ops::SendArgs),
    /// The delivery state and ServiceNow record of one alert (local database or a running relay's API).
    Status(ops::StatusArgs),
    /// Create and delete a marked test record in every table the config maps to; report per table.
    TestConnection(ops::TestConnectionArgs),
    /// Move dead-lettered alerts back onto the realtime queue for delivery.
    ReplayDlq(ops::ReplayArgs),
    /// Dry-run: validate an alert and print the routing decision as JSON (exit 0), or every validation
    /// problem (exit 2). Nothing is sent anywhere.
    Route(route::RouteArgs),
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Load test: run `relay serve` with the simulator and drive it over HTTP (see BENCHMARKS.md).
    #[command(hide = true)]
    Load(load::LoadArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a routing config and list every problem with the rule it is in (exit 2 when invalid).
    Check(route::CheckArgs),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RELAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Send(args) => ops::send(&args),
        Command::Status(args) => ops::status(&args),
        Command::TestConnection(args) => ops::test_connection(&args),
        Command::ReplayDlq(args) => ops::replay_dlq(&args),
        Command::Route(args) => route::route(&args),
        Command::Config(ConfigCommand::Check(args)) => route::check(&args),
        Command::Load(args) => load::load(&args),
    }
}
