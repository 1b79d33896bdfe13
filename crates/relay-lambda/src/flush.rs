//! The flush function: an EventBridge scheduled event → [`Flusher::flush`], then the sync
//! ([`Syncer::sync_until`]: the relay's records read back, state changes recorded and called back) in the
//! time left → both reports as JSON.
//!
//! The drain budget is `FLUSH_BUDGET_SECONDS`, shortened to half the invocation's remaining time when the
//! deadline is nearer, so sending and storing results still fit in the function timeout. Anything left
//! undelivered stays on the batch queue (or goes to the realtime queue's retry path) for the next run; a
//! sync cut short by the deadline goes on at the next run.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::LambdaEvent;
use metrics_cloudwatch_embedded::Collector;
use relay_pipeline::sync::{SyncReport, Syncer};
use relay_pipeline::{FlushReport, FlushSettings, Flusher, Ports};
use serde::Serialize;

use crate::deliver::delivery;
use crate::{LambdaError, Settings, load_config};

/// What the flush function runs: the flush, then the sync.
pub struct FlushFunction {
    pub flusher: Flusher,
    pub syncer: Syncer,
}

/// What one invocation did: the flush's report, with the sync's under `sync`.
#[derive(Debug, Clone, Serialize)]
pub struct FlushRun {
    #[serde(flatten)]
    pub flush: FlushReport,
    pub sync: SyncReport,
}

/// The flusher over `ports`, with the routing config's batch window and settings, and the sync over the
/// same delivery with the config's record profiles.
pub fn flusher(settings: &Settings, ports: &Ports) -> Result<FlushFunction, LambdaError> {
    let config = load_config(settings)?;
    let delivery = Arc::new(delivery(settings, ports));
    Ok(FlushFunction {
        flusher: Flusher::new(
            delivery.clone(),
            FlushSettings {
                drain_budget: settings.flush_budget,
                ..FlushSettings::from_config(&config)
            },
        ),
        syncer: Syncer::new(delivery, Arc::new(config), settings.servicenow_timeout),
    })
}

/// Run one flush. `event.context.deadline` (epoch ms; 0 = none) bounds the whole flush: it ends a second
/// before the invocation's deadline, draining at most half the remaining time and keeping at most half of it
/// for settling.
pub async fn handle(function: &FlushFunction, event: LambdaEvent<EventBridgeEvent>) -> Result<FlushRun, Infallible> {
    let flusher = &function.flusher;
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
    let flush = this_run.flush_until(deadline).await;
    let sync = function.syncer.sync_until(deadline).await;
    Ok(FlushRun { flush, sync })
}

/// How long before the invocation's deadline a flush ends (the report must still be returned).
const INVOCATION_MARGIN: Duration = Duration::from_secs(1);

/// Serve scheduled events until the runtime stops, flushing the metrics after each one.
pub async fn run(function: FlushFunction, metrics: &'static Collector) -> Result<(), LambdaError> {
    let function = Arc::new(function);
    let service = lambda_runtime::service_fn(move |event: LambdaEvent<EventBridgeEvent>| {
        let function = function.clone();
        async move { handle(&function, event).await }
    });
    metrics_cloudwatch_embedded::lambda::service::run(metrics, service)
        .await
        .map_err(|e| LambdaError::Runtime(e.to_string()))
}
