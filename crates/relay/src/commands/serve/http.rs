//! The local HTTP server: the pipeline's router (the same one the ingest function serves) with the local
//! routes `/healthz`, `/metrics`, `/v1/ops/summary` and the operator page `/ops` merged in, and the request trace and timeout layers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use relay_local::LocalStore;
use relay_ports::AlertQueue;
use serde_json::json;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use super::ServeArgs;
use super::build::Local;
use super::guard::{self, Guard, LOOPBACK_HOSTS};
use crate::error::CliError;

/// A request taking longer than this is answered 408 (the pipeline's own calls are bounded well below).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Latency histogram buckets (milliseconds) for the Prometheus export.
const LATENCY_BUCKETS_MS: [f64; 14] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0, 15_000.0, 60_000.0, 300_000.0,
];

pub async fn listen(args: &ServeArgs) -> Result<tokio::net::TcpListener, CliError> {
    let host = if args.public { [0, 0, 0, 0] } else { [127, 0, 0, 1] };
    tokio::net::TcpListener::bind(SocketAddr::from((host, args.port)))
        .await
        .map_err(|e| CliError::failed(format!("cannot listen on port {}: {e}", args.port)))
}

/// The process's Prometheus recorder, installed on first use (once: callers on several threads wait for the
/// first, as a second install fails).
pub fn prometheus() -> Result<&'static PrometheusHandle, CliError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let _installing = INSTALL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("Ms".into()), &LATENCY_BUCKETS_MS)
        .and_then(|b| b.install_recorder())
        .map_err(|e| CliError::failed(format!("cannot install the metrics recorder: {e}")))?;
    relay_pipeline::telemetry::describe();
    Ok(HANDLE.get_or_init(|| handle))
}

#[derive(Clone)]
struct LocalState {
    store: LocalStore,
    metrics: &'static PrometheusHandle,
    servicenow_url: String,
    simulator: bool,
    config_hash: String,
}

pub fn app(local: &Local, args: &ServeArgs) -> Router {
    let metrics = prometheus().expect("the metrics recorder installs once per process");
    let state = LocalState {
        store: local.store.clone(),
        metrics,
        servicenow_url: local.servicenow_url.clone(),
        simulator: local.simulator.is_some(),
        config_hash: local.config_hash.clone(),
    };
    let local_routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/v1/ops/summary", get(summary))
        .route("/ops", get(ops_page))
        .with_state(state);
    let allowed_hosts = if args.public && args.allowed_host.is_empty() {
        None
    } else {
        let mut hosts: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| h.to_string()).collect();
        hosts.extend(args.allowed_host.iter().map(|h| h.trim().to_ascii_lowercase()));
        Some(Arc::new(hosts))
    };
    let guard = Guard {
        allowed_hosts,
        read_token: local.read_token.clone(),
        metrics_need_token: args.public,
        body_timeout: Duration::from_secs(args.body_timeout_seconds),
    };
    let scheme = if args.tls_cert.is_some() { "https" } else { "http" };
    relay_pipeline::http::routes(local.ingest.clone(), scheme)
        .merge(local_routes)
        .layer(axum::middleware::from_fn_with_state(guard, guard::check))
        .layer(TraceLayer::new_for_http())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
}

/// Liveness: the database answers. Nothing about the deployment (paths, URLs, counts) is disclosed.
async fn healthz(State(app): State<LocalState>) -> Response {
    match app.store.queue("realtime").depth().await {
        Ok(_) => axum::Json(json!({"status": "ok"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "healthz: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

/// The deployment at a glance, for operators (behind the read token): queue depths, the ServiceNow target,
/// the database and the config hash.
async fn summary(State(app): State<LocalState>) -> Response {
    let mut depths = serde_json::Map::new();
    for name in ["realtime", "batch", "dlq"] {
        match app.store.queue(name).depth().await {
            Ok(d) => depths.insert(name.into(), d.into()),
            Err(e) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"error": format!("the database does not answer: {e}")})),
                )
                    .into_response();
            }
        };
    }
    axum::Json(json!({
        "servicenow": {"url": app.servicenow_url, "simulator": app.simulator},
        "database": app.store.path().display().to_string(),
        "config_hash": app.config_hash,
        "queues": depths,
    }))
    .into_response()
}

/// The operator page (behind the read token).
async fn ops_page(State(app): State<LocalState>) -> Response {
    super::ops::page(&app.store, app.servicenow_url.clone(), app.simulator).await
}

async fn metrics_text(State(app): State<LocalState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}
