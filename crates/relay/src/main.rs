//! `relay`: the Alert Relay command line. This file only parses the command line and dispatches; each
//! command lives in `commands/` and returns a [`CliError`] that [`error::exit`] prints and maps to an exit
//! code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{
    config_check, health, list, load, replay, report, route, send, serve, sign, status, test_connection,
};
use crate::error::CliError;

mod api;
mod commands;
mod error;
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
#[allow(clippy::large_enum_variant)] // parsed once per process: boxing would only add an indirection
enum Command {
    /// Run the whole pipeline on this machine: HTTP ingest, SQLite queues and ledger, delivery workers,
    /// batch flush, and a built-in ServiceNow simulator unless a real instance is configured.
    Serve(serve::ServeArgs),
    /// Sign alert files with the webhook secret and POST them to a running relay; print the answers.
    Send(send::SendArgs),
    /// Sign an alert file: the webhook headers as JSON, or a signed API Gateway v2 event (`--apigw-event`)
    /// for `sam local invoke` / `cargo lambda invoke`.
    Sign(sign::SignArgs),
    /// The delivery state and ServiceNow record of one alert (local database or a running relay's API).
    Status(status::StatusArgs),
    /// Create and delete a marked test record in every table the config maps to; report per table.
    TestConnection(test_connection::TestConnectionArgs),
    /// Move dead-lettered alerts back onto the realtime queue for delivery.
    ReplayDlq(replay::ReplayArgs),
    /// Dry-run: validate an alert and print the routing decision as JSON (exit 0), or every validation
    /// problem (exit 2). Nothing is sent anywhere.
    Route(route::RouteArgs),
    /// List alerts from the local database: what came in, where it went, what failed.
    List(list::ListArgs),
    /// Dead-letter queue commands (local database).
    #[command(subcommand)]
    Dlq(list::DlqCommand),
    /// Reports from the local database: `relay report rules` (rule quality: false-positive rates).
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check a running relay's /healthz (exit 0 when it is up; the container healthcheck).
    Health(health::HealthArgs),
    /// Print a shell completion script: `relay completions bash > /etc/bash_completion.d/relay`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Load test: run `relay serve` with the simulator and drive it over HTTP (see BENCHMARKS.md).
    #[command(hide = true)]
    Load(load::LoadArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a routing config and list every problem with the rule it is in (exit 2 when invalid).
    Check(config_check::CheckArgs),
}

/// Logs go to stderr: `RELAY_LOG` filters them, `RELAY_LOG_FORMAT=json` writes one JSON object per line
/// (journald, Loki), and colour is used only on a terminal and never when `NO_COLOR` is set
/// (<https://no-color.org>).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RELAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("RELAY_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        let _ = builder.json().flatten_event(true).try_init();
    } else {
        let _ = builder.with_ansi(colour()).try_init();
    }
}

/// Whether stderr gets ANSI colours.
fn colour() -> bool {
    use_colour(
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    )
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to a non-empty value (<https://no-color.org>:
/// an empty `NO_COLOR` does not count).
fn use_colour(no_color: Option<&std::ffi::OsStr>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

fn dispatch(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve(args) => serve::run(args),
        Command::Send(args) => send::run(&args),
        Command::Sign(args) => sign::run(&args),
        Command::Status(args) => status::run(&args),
        Command::TestConnection(args) => test_connection::run(&args),
        Command::ReplayDlq(args) => replay::run(&args),
        Command::Route(args) => route::run(&args),
        Command::List(args) => list::run(&args),
        Command::Health(args) => health::run(&args),
        Command::Dlq(command) => list::run_dlq(&command),
        Command::Report(command) => report::run(&command),
        Command::Config(ConfigCommand::Check(args)) => config_check::run(&args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "relay", &mut std::io::stdout());
            Ok(())
        }
        Command::Load(args) => load::run(&args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    error::exit(dispatch(cli.command))
}

#[cfg(test)]
mod colour_tests {
    use super::use_colour;
    use std::ffi::OsStr;

    #[test]
    fn no_color_turns_colour_off_on_a_terminal() {
        assert!(use_colour(None, true));
        assert!(!use_colour(Some(OsStr::new("1")), true));
        assert!(
            !use_colour(Some(OsStr::new("false")), true),
            "any non-empty value counts"
        );
        assert!(
            use_colour(Some(OsStr::new("")), true),
            "an empty NO_COLOR does not count"
        );
        assert!(
            !use_colour(None, false),
            "never into a pipe or file (journald, docker logs)"
        );
    }
}
