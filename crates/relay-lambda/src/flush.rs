//! The flush function: an EventBridge scheduled event → [`Flusher::flush`] → the [`FlushReport`] as JSON.
//!
//! The drain budget is `FLUSH_BUDGET_SECONDS`, shortened to half the invocation's remaining time when the
//! deadline is nearer, so sending and storing results still fit in the function timeout. Anything left
//! undelivered stays on the batch queue (or goes to the realtime queue's retry path) for the next run.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::LambdaEvent;
use metrics_cloudwatch_embedded::Collector;
use relay_pipeline::{FlushReport, FlushSettings, Flusher, Ports};

use crate::deliver::delivery;
use crate::{LambdaError, Settings, load_config};

/// The flusher over `ports`, with the routing config's batch window and settings.
pub fn flusher(settings: &Settings, ports: &Ports) -> Result<Flusher, LambdaError> {
    let config = load_config(settings)?;
    Ok(Flusher::new(
        Arc::new(delivery(settings, ports)),
        FlushSettings {
            drain_budget: settings.flush_budget,
            ..FlushSettings::from_config(&config)
        },
    ))
}

/// Run one flush. `event.context.deadline` (epoch ms; 0 = none) bounds the whole flush: it ends a second
/// before the invocation's deadline, draining at most half the remaining time and keeping at most half of it
/// for settling.
pub async fn handle(flusher: &Flusher, event: LambdaEvent<EventBridgeEvent>) -> Result<FlushReport, Infallible> {
    let mut settings = flusher.settings.clone();
    let now = flusher.delivery.ports.clock.now_ms();
    let mut deadline = now + settings.budget.as_millis() as i64;
    let invocation_deadline = event.context.deadline as i64;
    if invocation_deadline > 0 {
        let remaining = (invocation_deadline - now).max(0) as u64;
        settings.drain_budget = settings.drain_budget.min(Duration::from_millis(remaining / 2));
        settings.settle_reserve = settings.settle_reserve.min(Duration::from_millis(remaining / 2));
        deadline = deadline.min(invocation_deadline - INVOCATION_MARGIN.as_millis() as i64);
    }
    tracing::info!(
        schedule = event
            .payload
            .resources
            .as_ref()
            .and_then(|r| r.first())
            .map(String::as_str)
            .unwrap_or(""),
        budget_ms = settings.drain_budget.as_millis() as u64,
        deadline_in_ms = deadline - now,
        "flush started"
    );
    let this_run = Flusher::new(flusher.delivery.clone(), settings);
    // the pipeline logs the "flush finished" summary itself
    Ok(this_run.flush_until(deadline).await)
}

/// How long before the invocation's deadline a flush ends (the report must still be returned).
const INVOCATION_MARGIN: Duration = Duration::from_secs(1);

/// Serve scheduled events until the runtime stops, flushing the metrics after each one.
pub async fn run(flusher: Flusher, metrics: &'static Collector) -> Result<(), LambdaError> {
    let flusher = Arc::new(flusher);
    let service = lambda_runtime::service_fn(move |event: LambdaEvent<EventBridgeEvent>| {
        let flusher = flusher.clone();
        async move { handle(&flusher, event).await }
    });
    metrics_cloudwatch_embedded::lambda::service::run(metrics, service)
        .await
        .map_err(|e| LambdaError::Runtime(e.to_string()))
}
