//! `relay serve`: the local mode. Builds the SQLite adapters and a ServiceNow client (a real instance or
//! the built-in simulator), and runs the shared pipelines — the same HTTP router, deliverer and flusher the
//! Lambda functions run — with `/healthz` and `/metrics` (Prometheus) beside them.

use std::path::PathBuf;

use clap::Args;

use crate::error::CliError;
use crate::settings;

mod build;
mod http;
mod tasks;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: settings::ConfigOption,
    /// The SQLite database holding the queues and the ledger (created with its directory when missing).
    #[arg(long, env = "RELAY_DB", default_value = settings::DEFAULT_DB)]
    pub db: PathBuf,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "RELAY_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Listen on every interface (0.0.0.0) instead of 127.0.0.1. Put a TLS proxy in front.
    #[arg(long)]
    pub public: bool,
    /// The webhook signing secret: a JSON file `{"secrets": ["whsec_…"]}` or a bare `whsec_…` line.
    /// Default: RELAY_WEBHOOK_SECRET, else webhook-secret.json next to the database (generated on first start).
    #[arg(long, env = "RELAY_WEBHOOK_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    #[command(flatten)]
    pub servicenow: settings::ServiceNowOption,
    /// Port of the built-in simulator (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub simulator_port: u16,
    /// Simulator instance definition (YAML, see servicenow-sim); default: the standard demo instance.
    #[arg(long)]
    pub simulator_config: Option<PathBuf>,
    /// Concurrent delivery workers (each takes up to 10 alerts at a time).
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Batch flush period in seconds. Default: the config's batch_window_seconds (300).
    #[arg(long)]
    pub batch_window_seconds: Option<u64>,
    /// Time allowed for one ServiceNow HTTP exchange (connect, send, answer).
    #[arg(long, default_value_t = 10)]
    pub servicenow_timeout_seconds: u64,
    /// How long a delivery attempt holds an alert; after a crash, unfinished alerts resume after this.
    /// Default and minimum: the longest attempt (lookup + create, each a token request and a request,
    /// each repeated after a 401: 8 x --servicenow-timeout-seconds) plus 5 s.
    #[arg(long)]
    pub lease_seconds: Option<u64>,
    /// The retry window: alerts not delivered within it are dead-lettered.
    #[arg(long, env = "RELAY_RETRY_WINDOW_SECONDS", default_value_t = 86_400)]
    pub retry_window_seconds: u64,
    /// Fsync every commit (survives power loss, slower). Default: survives a killed process.
    #[arg(long)]
    pub fsync: bool,
}

/// Serve until SIGINT or SIGTERM, then finish the work in progress; exit 1 when it cannot start.
pub fn run(args: ServeArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let local = build::Local::build(&args).await?;
    let listener = http::listen(&args).await?;
    let addr = listener.local_addr().map_err(CliError::failed)?;
    let base_url = format!("http://{addr}");
    local.banner(&args, &base_url);
    let app = http::app(&local);
    let tasks = tasks::start(&local);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(tasks::shutdown_signal(tasks.token.clone()))
        .await;
    println!("shutting down: finishing deliveries and the flush in progress");
    tasks.stop().await;
    if let Some(s) = local.simulator {
        s.shutdown().await;
    }
    println!("stopped");
    served.map_err(|e| CliError::failed(format!("server error: {e}")))
}
