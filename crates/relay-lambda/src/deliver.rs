//! The deliver function: an SQS batch from the realtime queue → [`Deliverer::handle_all`] → a partial batch
//! response naming the messages to retry.
//!
//! Each message is handled on its own task: one message's failure (or panic) marks only that message for
//! retry, never the whole invocation. Delivered and dead-lettered messages are left out of
//! `batchItemFailures`, so the event source mapping deletes them.

use std::convert::Infallible;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::LambdaEvent;
use metrics_cloudwatch_embedded::Collector;
use relay_pipeline::{Deliverer, Delivery, DeliverySettings, Disposition, Ports, ServiceNowTarget};
use relay_ports::ReceivedMessage;
use servicenow_client::ClientConfig;

use crate::{LambdaError, Settings, cached_secret};

/// The delivery pipeline shared by deliver and flush: ServiceNow from its secret (fetched on first use,
/// cached, refetched after a 401), over the ports.
pub fn delivery(settings: &Settings, ports: &Ports) -> Delivery {
    let timeout = settings.servicenow_timeout;
    let target = ServiceNowTarget::from_secret(
        cached_secret(settings, ports, &settings.servicenow_secret_arn),
        move |url: &str| {
            let mut config = ClientConfig::new(url);
            config.total_timeout = timeout;
            config.connect_timeout = timeout.min(config.connect_timeout);
            config
        },
    );
    Delivery::new(
        ports,
        target,
        DeliverySettings {
            lease: settings.lease,
            ledger_retention: settings.ledger_retention,
            settle: settings.settle,
            ..DeliverySettings::for_policy(settings.backoff)
        },
    )
}

/// An SQS record as the pipeline sees it. `None` when the record has no message id or receipt handle
/// (nothing can be reported or retried for it).
pub fn received(message: &SqsMessage) -> Option<ReceivedMessage> {
    Some(ReceivedMessage {
        message_id: message.message_id.clone().filter(|s| !s.is_empty())?,
        receipt: message.receipt_handle.clone().filter(|s| !s.is_empty())?,
        body: message.body.clone().unwrap_or_default(),
        sent_at_ms: message
            .attributes
            .get("SentTimestamp")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        // Lambda's SQS event source always sends it; without it the receive limit cannot be watched.
        receive_count: message
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1),
    })
}

/// Handle one SQS batch. Never fails the invocation: problems become per-message retries.
pub async fn handle(deliverer: &Deliverer, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Infallible> {
    let mut messages = Vec::with_capacity(event.payload.records.len());
    for record in &event.payload.records {
        match received(record) {
            Some(m) => messages.push(m),
            None => tracing::error!("SQS record without a message id or receipt handle; skipped"),
        }
    }
    let mut response = SqsBatchResponse::default();
    for (message, disposition) in deliverer.handle_all(messages).await {
        if disposition == Disposition::RetryLater {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message.message_id;
            response.batch_item_failures.push(failure);
        }
    }
    Ok(response)
}

/// Serve SQS batches until the runtime stops, flushing the metrics after each one.
pub async fn run(deliverer: Deliverer, metrics: &'static Collector) -> Result<(), LambdaError> {
    let deliverer = Arc::new(deliverer);
    let service = lambda_runtime::service_fn(move |event: LambdaEvent<SqsEvent>| {
        let deliverer = deliverer.clone();
        async move { handle(&deliverer, event).await }
    });
    metrics_cloudwatch_embedded::lambda::service::run(metrics, service)
        .await
        .map_err(|e| LambdaError::Runtime(e.to_string()))
}
