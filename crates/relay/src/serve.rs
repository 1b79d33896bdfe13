//! `relay serve`: the local mode. Builds the SQLite adapters and a ServiceNow client (a real instance or
//! the built-in simulator) and runs the shared ingest / deliver / flush pipelines behind an axum server
//! with the same routes as the API Gateway deployment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router as HttpRouter;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Args;
use relay_core::{BackoffPolicy, Router};
use relay_local::{LocalStore, StoreOptions};
use relay_pipeline::{
    Deliverer, Delivery, DeliverySettings, FlushSettings, Flusher, Ingest, IngestSettings, Metrics, Reply,
    ServiceNowTarget, SigningKeys, WebhookRequest, random_jitter,
};
use relay_ports::{AlertQueue, Clock, Ledger, SystemClock};
use serde_json::json;
use servicenow_client::{ClientConfig, ServiceNowClient, StaticCredentials};
use servicenow_sim::{RunningSim, SimConfig, Simulator};

use crate::settings::{self, SecretSource};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Routing config (YAML). Default: the shipped config/relay.yaml compiled into this binary.
    #[arg(long, env = "RELAY_CONFIG_PATH")]
    pub config: Option<PathBuf>,
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
    /// A real ServiceNow instance: a JSON file in the ServiceNow secret format. Default: the SERVICENOW_*
    /// environment variables, else the built-in simulator.
    #[arg(long, env = "RELAY_SERVICENOW_FILE")]
    pub servicenow_file: Option<PathBuf>,
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
    /// How long a delivery attempt holds an alert; after a crash, unfinished alerts resume after this.
    #[arg(long, default_value_t = 15)]
    pub lease_seconds: u64,
    /// The retry window: alerts not delivered within it are dead-lettered.
    #[arg(long, env = "RETRY_WINDOW_SECONDS", default_value_t = 86_400)]
    pub retry_window_seconds: u64,
    /// Fsync every commit (survives power loss, slower). Default: survives a killed process.
    #[arg(long)]
    pub fsync: bool,
}

/// What the server shares with its request handlers.
struct AppState {
    ingest: Ingest,
    store: LocalStore,
    base_url: String,
    servicenow_url: String,
    simulator: bool,
    config_hash: String,
}

fn to_response(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], reply.body).into_response();
    if let Some(s) = reply.retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, s.into());
    }
    resp
}

async fn post_alert(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let base = match h("host") {
        Some(host) => format!("http://{host}"),
        None => app.base_url.clone(),
    };
    let req = WebhookRequest {
        content_type: h("content-type"),
        webhook_id: h("webhook-id"),
        webhook_timestamp: h("webhook-timestamp"),
        webhook_signature: h("webhook-signature"),
        body: &body,
    };
    to_response(app.ingest.accept(req, &base).await)
}

async fn get_alert(State(app): State<Arc<AppState>>, UrlPath(id): UrlPath<String>) -> Response {
    to_response(app.ingest.status(&id).await)
}

async fn healthz(State(app): State<Arc<AppState>>) -> Response {
    let mut depths = serde_json::Map::new();
    for name in ["realtime", "batch", "dlq"] {
        match app.store.queue(name).depth().await {
            Ok(d) => depths.insert(name.into(), d.into()),
            Err(e) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"status": "unavailable", "error": e.to_string()})),
                )
                    .into_response();
            }
        };
    }
    axum::Json(json!({
        "status": "ok",
        "servicenow": {"url": app.servicenow_url, "simulator": app.simulator},
        "database": app.store.path().display().to_string(),
        "config_hash": app.config_hash,
        "queues": depths,
    }))
    .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": "no such route; use POST /v1/alerts, GET /v1/alerts/{id}, GET /healthz"})),
    )
        .into_response()
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}

pub fn serve(args: ServeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(run(args))
}

async fn run(args: ServeArgs) -> ExitCode {
    let (config, config_name) = match settings::load_config(args.config.as_ref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let config_hash = config.hash.clone();
    let window = Duration::from_secs(args.batch_window_seconds.unwrap_or(config.batch_window_seconds).max(1));
    let batch_settings = config.batch.clone();
    let router = match Router::new(config, crate::route::pseudonym_key()) {
        Ok(r) => Arc::new(r),
        Err(e) => return fail(e),
    };
    if args.workers == 0 {
        return fail("--workers must be at least 1");
    }
    if args.lease_seconds < 2 {
        return fail("--lease-seconds must be at least 2");
    }

    // the database (and its directory)
    if let Some(dir) = args.db.parent().filter(|d| !d.as_os_str().is_empty())
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        return fail(format!("cannot create the database directory {}: {e}", dir.display()));
    }
    let lease = Duration::from_secs(args.lease_seconds);
    let store = match LocalStore::open_with(
        &args.db,
        StoreOptions {
            durability: if args.fsync {
                relay_local::Durability::PowerLoss
            } else {
                relay_local::Durability::ProcessCrash
            },
            default_visibility_timeout: lease,
            ..StoreOptions::default()
        },
    ) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };

    // signing secrets
    let (keys, secret_source) = match settings::signing_secrets(args.secret_file.as_deref(), &args.db, true) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };

    // ServiceNow: a real instance, or the simulator in this process
    let sn = match settings::servicenow_settings(args.servicenow_file.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut sim: Option<RunningSim> = None;
    let (instance_url, credentials) = match sn {
        Some(s) => (s.instance_url, s.credentials),
        None => {
            let sim_config = match &args.simulator_config {
                Some(p) => match SimConfig::from_yaml_file(p) {
                    Ok(c) => c,
                    Err(e) => return fail(format!("simulator config {}: {e}", p.display())),
                },
                None => SimConfig::default(),
            };
            let listener = match tokio::net::TcpListener::bind(("127.0.0.1", args.simulator_port)).await {
                Ok(l) => l,
                Err(e) => {
                    return fail(format!(
                        "cannot start the simulator on 127.0.0.1:{}: {e}",
                        args.simulator_port
                    ));
                }
            };
            let running = match Simulator::serve(listener, sim_config) {
                Ok(s) => s,
                Err(e) => return fail(format!("cannot start the simulator: {e}")),
            };
            let url = running.base_url();
            sim = Some(running);
            (
                url,
                servicenow_client::Credentials::Basic {
                    username: "relay".into(),
                    password: "relay-password".into(),
                },
            )
        }
    };
    let mut cc = ClientConfig::new(instance_url.clone());
    // an attempt must end well within its lease, so no other worker takes the alert over mid-call
    cc.total_timeout = Duration::from_secs(30).min(lease * 2 / 3);
    cc.connect_timeout = Duration::from_secs(5).min(cc.total_timeout / 2);
    let client = match ServiceNowClient::new(cc, Arc::new(StaticCredentials(credentials))) {
        Ok(c) => c,
        Err(e) => return fail(format!("ServiceNow instance: {e}")),
    };

    // the pipelines over the SQLite adapters
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ledger: Arc<dyn Ledger> = Arc::new(store.ledger());
    let realtime: Arc<dyn AlertQueue> = Arc::new(store.queue("realtime"));
    let batch_queue = store
        .queue("batch")
        .with_visibility_timeout(Duration::from_secs(300).max(window));
    let batch: Arc<dyn AlertQueue> = Arc::new(batch_queue);
    let dlq: Arc<dyn AlertQueue> = Arc::new(store.queue("dlq"));
    let retention = Duration::from_secs(30 * 24 * 3600);
    let ingest = Ingest {
        router,
        keys: SigningKeys::Fixed(keys),
        ledger: ledger.clone(),
        realtime: realtime.clone(),
        batch: batch.clone(),
        clock: clock.clone(),
        metrics: Metrics::off(),
        settings: IngestSettings {
            ledger_retention: retention,
            ..IngestSettings::default()
        },
    };
    let delivery = Arc::new(Delivery {
        servicenow: Arc::new(ServiceNowTarget::ready(client)),
        ledger,
        realtime,
        dlq,
        notifier: Arc::new(store.notifier()),
        clock,
        metrics: Metrics::off(),
        settings: DeliverySettings {
            backoff: BackoffPolicy {
                window: Duration::from_secs(args.retry_window_seconds),
                ..BackoffPolicy::default()
            },
            lease,
            ledger_retention: retention,
        },
        jitter: random_jitter(),
    });
    let deliverer = Deliverer {
        delivery: delivery.clone(),
    };
    let flusher = Flusher {
        delivery,
        batch_queue: batch,
        settings: FlushSettings {
            drain_budget: Duration::from_secs(60).min(window),
            window,
            batch: batch_settings,
            receive_wait: Duration::from_millis(50),
            ..FlushSettings::default()
        },
    };

    // the HTTP server
    let host = if args.public { [0, 0, 0, 0] } else { [127, 0, 0, 1] };
    let listener = match tokio::net::TcpListener::bind(SocketAddr::from((host, args.port))).await {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on port {}: {e}", args.port)),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let base_url = format!("http://{addr}");
    let state = Arc::new(AppState {
        ingest,
        store: store.clone(),
        base_url: base_url.clone(),
        servicenow_url: instance_url.clone(),
        simulator: sim.is_some(),
        config_hash: config_hash.clone(),
    });
    let app = HttpRouter::new()
        .route("/v1/alerts", post(post_alert))
        .route("/v1/alerts/{id}", get(get_alert))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        // bodies up to 1 MiB reach the pipeline, which answers 413 above its own 256 KiB limit
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .with_state(state);

    // banner
    println!("Alert Relay {} — local mode", env!("CARGO_PKG_VERSION"));
    println!("  listening       {base_url}   (POST /v1/alerts, GET /v1/alerts/{{id}}, GET /healthz)");
    if args.public {
        println!("  WARNING         listening on every interface without TLS: put a TLS proxy in front of it");
    }
    println!("  config          {config_name} (hash {config_hash})");
    println!(
        "  database        {} (SQLite, WAL{})",
        args.db.display(),
        if args.fsync { ", fsync per commit" } else { "" }
    );
    match &sim {
        Some(s) => {
            println!("  ServiceNow      built-in simulator at {}  (user relay)", s.base_url());
            println!(
                "                  see the records: curl {}/sim/records/sn_si_incident",
                s.base_url()
            );
        }
        None => println!("  ServiceNow      {instance_url}"),
    }
    match &secret_source {
        SecretSource::File(p) => println!("  signing secret  from {}", p.display()),
        SecretSource::Env => println!("  signing secret  from RELAY_WEBHOOK_SECRET"),
        SecretSource::Generated(p, secret) => {
            println!("  signing secret  generated: {secret}");
            println!(
                "                  stored in {} (mode 0600); configure it in the monitoring tool",
                p.display()
            );
        }
    }
    println!(
        "  delivery        {} workers, lease {} s; batch flush every {} s",
        args.workers,
        lease.as_secs(),
        window.as_secs()
    );
    println!("  try it          relay send events/alerts/seed-usb-copy-847-files.json --url {base_url} --wait");
    println!("ready");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    // workers, flush timer, housekeeping
    let stopping = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..args.workers {
        let d = deliverer.clone();
        let stop = stopping.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = d.poll_once(10, Duration::from_millis(500)).await {
                    tracing::warn!(error = %e, "realtime queue unavailable; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }));
    }
    let flush_stop = stopping.clone();
    let flush_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(window);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if flush_stop.load(Ordering::Relaxed) {
                break;
            }
            let report = flusher.flush().await;
            if report.messages > 0 {
                tracing::info!(?report, "batch flush");
            }
        }
    });
    let purge_store = store.clone();
    let purge_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            if let Err(e) = purge_store.ledger().purge_expired().await {
                tracing::warn!(error = %e, "could not purge expired ledger entries");
            }
        }
    });

    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    println!("shutting down: finishing deliveries in progress");
    stopping.store(true, Ordering::Relaxed);
    flush_task.abort();
    purge_task.abort();
    let _ = tokio::time::timeout(lease, futures_join(tasks)).await;
    if let Some(s) = sim {
        s.shutdown().await;
    }
    println!("stopped");
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("server error: {e}")),
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}
