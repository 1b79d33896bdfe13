//! `servicenow-sim --port N [--config F]`: run the simulator until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use servicenow_sim::{SimConfig, SimError, Simulator};

#[derive(Parser, Debug)]
#[command(
    name = "servicenow-sim",
    about = "Stateful ServiceNow REST simulator with fault injection"
)]
struct Args {
    /// Port to listen on (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to bind. The /sim control API answers loopback peers only.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// YAML configuration (users, tables, data policies, rate limits...); default instance when absent.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Config(#[from] SimError),
    #[error("cannot bind {host}:{port}: {source}")]
    Bind {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the simulator: {0}")]
    Start(#[source] std::io::Error),
    #[error("cannot wait for Ctrl-C: {0}")]
    Signal(#[source] std::io::Error),
}

async fn run(args: Args) -> Result<(), RunError> {
    let config = match &args.config {
        Some(path) => SimConfig::from_yaml_file(path)?,
        None => SimConfig::default(),
    };
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|source| RunError::Bind {
            host: args.host.clone(),
            port: args.port,
            source,
        })?;
    let sim = Simulator::serve(listener, config).map_err(RunError::Start)?;
    println!("listening on {}", sim.base_url());
    tokio::signal::ctrl_c().await.map_err(RunError::Signal)?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("servicenow-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
