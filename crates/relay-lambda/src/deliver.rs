//! The deliver function: an SQS batch from the realtime queue or the critical queue (two event source
//! mappings, each with its own concurrency) → [`Deliverer::handle_all`] → a partial batch response naming
//! the messages to retry. A message is put back (its visibility changed) on the queue it came from, so a
//! retried critical alert stays on the critical queue.
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
    let callbacks = settings.callback.as_ref().and_then(|c| {
        let keys = relay_pipeline::WebhookKeys::new(
            ports.secrets.clone(),
            c.secret_arn.as_str(),
            settings.secret_ttl,
            ports.clock.clone(),
        );
        // the URL was checked with the settings; what is left is the HTTP client's own setup
        relay_pipeline::callback::Callbacks::new(&c.url, keys, settings.servicenow_timeout)
            .inspect_err(|e| tracing::error!(error = %e, "callbacks are off: the client could not be built"))
            .ok()
    });
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
    .with_callbacks(callbacks)
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

/// The deliverers of the two queues the function reads: a record whose event source is the critical queue
/// is handled (and put back) there, every other one on the realtime queue.
#[derive(Clone)]
pub struct Lanes {
    realtime: Deliverer,
    critical: Deliverer,
    /// The critical queue's name (`CRITICAL_QUEUE_URL`'s last path segment), when it has one of its own.
    critical_queue: Option<String>,
}

impl Lanes {
    pub fn new(settings: &Settings, delivery: Arc<Delivery>) -> Lanes {
        Lanes {
            realtime: Deliverer::new(Arc::clone(&delivery)),
            critical: Deliverer::critical(delivery),
            critical_queue: settings.critical_queue_url.as_deref().and_then(queue_name_of_url),
        }
    }

    /// Whether a record from `event_source_arn` came from the critical queue.
    fn is_critical(&self, event_source_arn: Option<&str>) -> bool {
        match (&self.critical_queue, event_source_arn.and_then(queue_name_of_arn)) {
            (Some(critical), Some(queue)) => critical == queue,
            _ => false,
        }
    }
}

/// The queue name in an SQS queue URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`).
fn queue_name_of_url(url: &str) -> Option<String> {
    url.trim_end_matches('/')
        .rsplit_once('/')
        .map(|(_, name)| name.to_string())
        .filter(|name| !name.is_empty())
}

/// The queue name in an SQS queue ARN (`arn:aws:sqs:<region>:<account>:<name>`).
fn queue_name_of_arn(arn: &str) -> Option<&str> {
    arn.rsplit_once(':')
        .map(|(_, name)| name)
        .filter(|name| !name.is_empty())
}

/// Handle one SQS batch. Never fails the invocation: problems become per-message retries.
pub async fn handle(lanes: &Lanes, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Infallible> {
    let (mut realtime, mut critical) = (Vec::new(), Vec::new());
    for record in &event.payload.records {
        match received(record) {
            Some(m) if lanes.is_critical(record.event_source_arn.as_deref()) => critical.push(m),
            Some(m) => realtime.push(m),
            None => tracing::error!("SQS record without a message id or receipt handle; skipped"),
        }
    }
    let mut response = SqsBatchResponse::default();
    // an event source mapping sends one queue's messages per batch: one of the two is empty
    let (realtime, critical) = tokio::join!(lanes.realtime.handle_all(realtime), lanes.critical.handle_all(critical));
    for (message, disposition) in realtime.into_iter().chain(critical) {
        if disposition == Disposition::RetryLater {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message.message_id;
            response.batch_item_failures.push(failure);
        }
    }
    Ok(response)
}

/// Serve SQS batches until the runtime stops, flushing the metrics after each one.
pub async fn run(lanes: Lanes, metrics: &'static Collector) -> Result<(), LambdaError> {
    let lanes = Arc::new(lanes);
    let service = lambda_runtime::service_fn(move |event: LambdaEvent<SqsEvent>| {
        let lanes = lanes.clone();
        async move { handle(&lanes, event).await }
    });
    metrics_cloudwatch_embedded::lambda::service::run(metrics, service)
        .await
        .map_err(|e| LambdaError::Runtime(e.to_string()))
}

#[cfg(test)]
mod lane_tests {
    use super::*;

    #[test]
    fn queue_names_come_from_urls_and_arns_alike() {
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/relay-critical";
        assert_eq!(queue_name_of_url(url).as_deref(), Some("relay-critical"));
        assert_eq!(
            queue_name_of_url("http://127.0.0.1:5602/123456789012/q/").as_deref(),
            Some("q")
        );
        assert_eq!(queue_name_of_url("no-slash"), None);
        assert_eq!(
            queue_name_of_arn("arn:aws:sqs:eu-west-1:123456789012:relay-critical"),
            Some("relay-critical")
        );
        assert_eq!(queue_name_of_arn("arn:aws:sqs:eu-west-1:123456789012:"), None);
        // a queue whose name merely starts with the critical queue's is not the critical queue
        assert_ne!(
            queue_name_of_arn("arn:aws:sqs:eu-west-1:123456789012:relay-critical-old"),
            queue_name_of_url(url).as_deref()
        );
    }
}
