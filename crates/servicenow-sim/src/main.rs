//! `servicenow-sim --port N [--config F]`: run the simulator until Ctrl-C.

use std::path::PathBuf;

use clap::Parser;
use servicenow_sim::{SimConfig, Simulator};

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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => SimConfig::from_yaml_file(path)?,
        None => SimConfig::default(),
    };
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|e| format!("cannot bind {}:{}: {e}", args.host, args.port))?;
    let sim = Simulator::serve(listener, config)?;
    println!("listening on {}", sim.base_url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
