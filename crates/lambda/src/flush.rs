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
use relay_pipeline::{Delivery, FlushReport, FlushSettings, Flusher, Metrics};
use relay_ports::AlertQueue;

use crate::deliver::delivery;
use crate::{Adapters, LambdaError, Settings, load_config};

/// The flush handler: one per function instance.
#[derive(Clone)]
pub struct FlushHandler {
    pub delivery: Arc<Delivery>,
    pub batch_queue: Arc<dyn AlertQueue>,
    pub settings: FlushSettings,
}

impl FlushHandler {
    pub fn new(settings: &Settings, adapters: &Adapters, metrics: Metrics) -> Result<Self, LambdaError> {
        let config = load_config(settings)?;
        Ok(FlushHandler {
            delivery: Arc::new(delivery(settings, adapters, metrics)),
            batch_queue: adapters.batch.clone(),
            settings: FlushSettings {
                drain_budget: settings.flush_budget,
                batch: config.batch.clone(),
                ..FlushSettings::default()
            },
        })
    }

    /// Run one flush. `event.context.deadline` (epoch ms; 0 = none) bounds the drain budget.
    pub async fn handle(&self, event: LambdaEvent<EventBridgeEvent>) -> Result<FlushReport, Infallible> {
        let mut settings = self.settings.clone();
        let deadline_ms = event.context.deadline as i64;
        if deadline_ms > 0 {
            let remaining = (deadline_ms - self.delivery.clock.now_ms()).max(0) as u64;
            settings.drain_budget = settings.drain_budget.min(Duration::from_millis(remaining / 2));
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
            "flush started"
        );
        let flusher = Flusher {
            delivery: self.delivery.clone(),
            batch_queue: self.batch_queue.clone(),
            settings,
        };
        // the pipeline logs the "flush finished" summary itself
        Ok(flusher.flush().await)
    }
}

/// Serve scheduled events until the runtime stops.
pub async fn run(handler: FlushHandler) -> Result<(), LambdaError> {
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<EventBridgeEvent>| {
            let handler = handler.clone();
            async move { handler.handle(event).await }
        },
    ))
    .await
    .map_err(|e| LambdaError::Runtime(e.to_string()))
}
