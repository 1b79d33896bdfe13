//! Logs and metrics as Lambda wants them.
//!
//! * Logs: JSON (or text) as Lambda's advanced logging controls ask (`AWS_LAMBDA_LOG_FORMAT`,
//!   `AWS_LAMBDA_LOG_LEVEL`, `RUST_LOG` when those are unset). Event fields sit at the top level
//!   (`{"level":…,"target":"audit","event":"routed","alert_id":…}`), which the stack's Logs Insights queries,
//!   metric filters and dashboard widgets read; each line also carries the invocation's span, with its
//!   `requestId` and `xrayTraceId`.
//! * Metrics: the pipeline's `metrics` series exported as CloudWatch Embedded Metric Format, flushed once at
//!   the end of each invocation (one document per label set), with the `Service` dimension, a `ColdStart`
//!   count on the first invocation, and the request id and trace id as properties.

use metrics_cloudwatch_embedded::Collector;

use crate::{LambdaError, Settings};

/// Install the log subscriber.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .map(|l| l.to_ascii_lowercase());
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(true);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.without_time().try_init()
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

/// Install the EMF exporter for `service` (`ingest`, `deliver`, `flush`) as the process's metrics recorder.
pub fn init_metrics(settings: &Settings, service: &'static str) -> Result<&'static Collector, LambdaError> {
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(settings.metrics_namespace.clone())
        .with_dimension("Service", service)
        .lambda_cold_start_metric("ColdStart")
        .with_lambda_request_id("RequestId")
        .with_lambda_xray_trace_id("XRayTraceId")
        .init()
        .map_err(|e| LambdaError::Metrics(e.to_string()))?;
    relay_pipeline::telemetry::describe();
    Ok(collector)
}
