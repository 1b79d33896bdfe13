//! `relay serve`: the local mode. Builds the SQLite adapters and a ServiceNow client (a real instance or
//! the built-in simulator), and runs the shared pipelines — the same HTTP router, deliverer and flusher the
//! Lambda functions run — with `/healthz` and `/metrics` (Prometheus) beside them.

use std::path::PathBuf;

use clap::Args;
use servicenow_sim::SimProfile;

use crate::error::CliError;
use crate::settings;

mod build;
mod guard;
mod http;
mod listener;
mod ops;
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
    /// Listen on every interface (0.0.0.0) instead of 127.0.0.1. Give --tls-cert/--tls-key, or put a TLS
    /// proxy in front (docs/local-mode.md).
    #[arg(long)]
    pub public: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "RELAY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "RELAY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Host names the server answers to besides localhost, 127.0.0.1 and [::1] (comma-separated); other
    /// Host headers get 421 (DNS rebinding). With --public and none given, any host is answered.
    #[arg(long, env = "RELAY_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_host: Vec<String>,
    /// Networks webhooks may come from: addresses or CIDR networks, comma-separated (the monitoring
    /// product's egress addresses). A webhook from elsewhere gets 403 before its signature is checked.
    /// Default: any. Behind a reverse proxy the source is the proxy: filter there (docs/local-mode.md).
    #[arg(long = "allow-source", env = "RELAY_ALLOWED_SOURCES")]
    pub allowed_sources: Option<String>,
    /// The read token of GET /v1/alerts/{id} and the operator page (one line). Default: RELAY_READ_TOKEN,
    /// else read-token next to the database (generated on first start).
    #[arg(long, env = "RELAY_READ_TOKEN_FILE")]
    pub read_token_file: Option<PathBuf>,
    /// A client must send a request's headers within this many seconds (also the TLS handshake and the
    /// keep-alive idle time).
    #[arg(long, default_value_t = 10)]
    pub header_timeout_seconds: u64,
    /// A client must send a request's body within this many seconds (else 408).
    #[arg(long, default_value_t = 30)]
    pub body_timeout_seconds: u64,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
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
    #[arg(long, conflicts_with = "simulator_profile")]
    pub simulator_config: Option<PathBuf>,
    /// Simulator profile: `instant` (the demo instance, answering at once) or `realistic` (per-API latency,
    /// 16 concurrent REST transactions, a rate-limit rule; see servicenow-sim API.md).
    #[arg(long, value_enum, default_value_t = SimProfile::Instant)]
    pub simulator_profile: SimProfile,
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
    /// Send signed callbacks (Standard Webhooks: record.created, record.updated, record.state_changed) to
    /// this URL of the monitoring product (https unless loopback). Needs --callback-secret-file.
    #[arg(long, env = "RELAY_CALLBACK_URL")]
    pub callback_url: Option<String>,
    /// The file holding the callbacks' signing secret (`whsec_…`, or `{"secrets": ["whsec_…"]}`), which the
    /// receiver verifies them with; its own secret, not the webhooks' one.
    #[arg(long, env = "RELAY_CALLBACK_SECRET_FILE")]
    pub callback_secret_file: Option<std::path::PathBuf>,
    /// Take pushes from ServiceNow (`POST /v1/servicenow/changes`, signed by a business rule) with the
    /// secret in this file (`whsec_…` or `{"secrets": […]}`); without it the route answers 404.
    #[arg(long, env = "RELAY_PUSH_SECRET_FILE")]
    pub push_secret_file: Option<std::path::PathBuf>,
    /// How often the sync reads the relay's records back from ServiceNow (state changes → the status API
    /// and `record.state_changed` callbacks); 0 turns it off. One read call per 100 watched records.
    #[arg(long, env = "RELAY_SYNC_INTERVAL_SECONDS", default_value_t = 60)]
    pub sync_interval_seconds: u64,
    /// Fsync every commit (survives power loss, slower). Default: survives a killed process.
    #[arg(long)]
    pub fsync: bool,
    /// The most ServiceNow calls in flight at once; the limit is learned below it (it grows while latency
    /// holds and backs off on 429/503 or rising latency).
    #[arg(long, env = "RELAY_SERVICENOW_MAX_CONCURRENCY", default_value_t = 16)]
    pub servicenow_max_concurrency: usize,
    /// Deliver as a plain worker pool does, to measure what the lanes, the adaptive limit and the breaker
    /// save (`relay load --naive`): one FIFO lane for every realtime alert, a fixed limit of 8 calls, no
    /// circuit breaker. Never for production.
    #[arg(long, hide = true)]
    pub naive_delivery: bool,
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
    let tls = match listener::tls_files(args.tls_cert.as_ref(), args.tls_key.as_ref())? {
        Some((cert, key)) => Some(listener::tls_acceptor(&cert, &key)?),
        None => None,
    };
    if args.header_timeout_seconds == 0 || args.body_timeout_seconds == 0 || args.max_connections == 0 {
        return Err(CliError::invalid(
            "--header-timeout-seconds, --body-timeout-seconds and --max-connections must be at least 1",
        ));
    }
    let local = build::Local::build(&args).await?;
    let listener = http::listen(&args).await?;
    let addr = listener.local_addr().map_err(CliError::failed)?;
    let base_url = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
    local.banner(&args, &base_url, tls.is_some());
    let app = http::app(&local, &args);
    let tasks = tasks::start(&local);
    let limits = listener::Limits {
        header_timeout: std::time::Duration::from_secs(args.header_timeout_seconds),
        max_connections: args.max_connections,
    };
    let token = tasks.token.clone();
    tokio::spawn(tasks::shutdown_signal(token.clone()));
    listener::serve(listener, app, tls, limits, token, std::time::Duration::from_secs(5)).await;
    println!("shutting down: finishing deliveries and the flush in progress");
    tasks.stop().await;
    if let Some(s) = local.simulator {
        s.shutdown().await;
    }
    println!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests;
