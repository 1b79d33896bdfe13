//! [`AlertQueue`] over Amazon SQS.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};
use relay_ports::{AlertQueue, PortError, ReceivedMessage};

use crate::error::port_error;

/// The longest `DelaySeconds` SQS accepts (15 minutes). Longer `send` delays are capped to it: a message
/// that must wait longer is received and put back with [`AlertQueue::change_visibility`] (visibility, up to 12 h).
pub const MAX_DELAY: Duration = relay_ports::MAX_SEND_DELAY;
/// The longest visibility timeout SQS accepts (12 hours); longer `change_visibility` delays are capped to it.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);
/// The longest long-poll wait SQS accepts; longer `receive` waits are capped to it.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// The largest message body SQS accepts (256 KiB).
pub use relay_ports::MAX_MESSAGE_BYTES;
/// SQS returns at most 10 messages per receive.
const MAX_BATCH: u32 = 10;

/// One SQS queue (standard or FIFO-less), addressed by URL.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    /// How long a received message stays invisible; `None` = the queue's own setting.
    visibility_timeout: Option<Duration>,
}

impl SqsQueue {
    /// A queue adapter for `queue_url` using the shared SDK configuration.
    pub fn new(config: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        Self::from_client(Client::new(config), queue_url)
    }

    /// A queue adapter over an existing client (several queues may share one client).
    pub fn from_client(client: Client, queue_url: impl Into<String>) -> Self {
        SqsQueue {
            client,
            url: queue_url.into(),
            visibility_timeout: None,
        }
    }

    /// This handle with its own visibility timeout for received messages (capped at [`MAX_VISIBILITY`])
    /// instead of the queue's setting.
    pub fn with_visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = Some(timeout);
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Whole seconds, rounded up (a delay is a lower bound: never shorten it), capped at `max`.
fn seconds_up(d: Duration, max: Duration) -> i32 {
    let d = d.min(max);
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.min(max.as_secs()) as i32
}

#[async_trait]
impl AlertQueue for SqsQueue {
    /// `delay` is capped at [`MAX_DELAY`] (SQS `DelaySeconds`); see there for longer delays.
    async fn send(&self, body: &str, delay: Duration) -> Result<String, PortError> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(PortError::Rejected(format!(
                "SQS SendMessage to {}: body is {} bytes, over the {MAX_MESSAGE_BYTES}-byte limit",
                self.url,
                body.len()
            )));
        }
        if body.is_empty() {
            return Err(PortError::Rejected(format!(
                "SQS SendMessage to {}: body is empty",
                self.url
            )));
        }
        let out = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(seconds_up(delay, MAX_DELAY))
            .send()
            .await
            .map_err(|e| port_error(&format!("SQS SendMessage to {}", self.url), e))?;
        out.message_id
            .ok_or_else(|| PortError::Unavailable(format!("SQS SendMessage to {}: answer without MessageId", self.url)))
    }

    /// Long-polls for up to `wait` (capped at [`MAX_WAIT`]); `max` is capped at 10.
    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<ReceivedMessage>, PortError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.min(MAX_BATCH) as i32)
            .wait_time_seconds(seconds_up(wait, MAX_WAIT))
            .set_visibility_timeout(self.visibility_timeout.map(|v| seconds_up(v, MAX_VISIBILITY)))
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| port_error(&format!("SQS ReceiveMessage from {}", self.url), e))?;
        out.messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let missing = |what: &str| {
                    PortError::Unavailable(format!("SQS ReceiveMessage from {}: message without {what}", self.url))
                };
                let sent_at_ms = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|v| v.parse::<i64>().ok())
                    .ok_or_else(|| missing("a SentTimestamp"))?;
                let receive_count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse::<u32>().ok())
                    .ok_or_else(|| missing("an ApproximateReceiveCount"))?;
                Ok(ReceivedMessage {
                    message_id: m.message_id.ok_or_else(|| missing("a MessageId"))?,
                    receipt: m.receipt_handle.ok_or_else(|| missing("a ReceiptHandle"))?,
                    body: m.body.unwrap_or_default(),
                    sent_at_ms,
                    receive_count,
                })
            })
            .collect()
    }

    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| port_error(&format!("SQS DeleteMessage on {}", self.url), e))?;
        Ok(())
    }

    /// `DeleteMessageBatch`, ten receipts per call.
    async fn delete_batch(&self, receipts: &[String]) -> Vec<Result<(), PortError>> {
        let mut out: Vec<Result<(), PortError>> = Vec::with_capacity(receipts.len());
        for chunk in receipts.chunks(MAX_BATCH as usize) {
            let base = out.len();
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .ok()
                })
                .collect();
            out.extend(chunk.iter().map(|_| {
                Err(PortError::Unavailable(format!(
                    "SQS DeleteMessageBatch on {}: no result for the entry",
                    self.url
                )))
            }));
            match self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(resp) => {
                    for ok in resp.successful() {
                        if let Ok(i) = ok.id().parse::<usize>() {
                            out[base + i] = Ok(());
                        }
                    }
                    for failed in resp.failed() {
                        if let Ok(i) = failed.id().parse::<usize>() {
                            let why = format!(
                                "SQS DeleteMessageBatch on {}: {} {}",
                                self.url,
                                failed.code(),
                                failed.message().unwrap_or("")
                            );
                            out[base + i] = Err(if failed.sender_fault() {
                                PortError::Rejected(why)
                            } else {
                                PortError::Unavailable(why)
                            });
                        }
                    }
                }
                Err(e) => {
                    let e = port_error(&format!("SQS DeleteMessageBatch on {}", self.url), e);
                    for r in &mut out[base..] {
                        *r = Err(e.clone());
                    }
                }
            }
        }
        out
    }

    /// `ChangeMessageVisibility`; `delay` is capped at [`MAX_VISIBILITY`].
    async fn change_visibility(&self, receipt: &str, delay: Duration) -> Result<(), PortError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds_up(delay, MAX_VISIBILITY))
            .send()
            .await
            .map_err(|e| port_error(&format!("SQS ChangeMessageVisibility on {}", self.url), e))?;
        Ok(())
    }

    /// `ApproximateNumberOfMessages` + `…NotVisible` + `…Delayed`.
    async fn depth(&self) -> Result<u64, PortError> {
        let names = [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        ];
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| port_error(&format!("SQS GetQueueAttributes of {}", self.url), e))?;
        let attrs = out.attributes.unwrap_or_default();
        let mut total = 0u64;
        for name in names {
            let value = attrs.get(&name).map(String::as_str).unwrap_or("0");
            total += value.parse::<u64>().map_err(|_| {
                PortError::Unavailable(format!(
                    "SQS GetQueueAttributes of {}: {} is not a number: {value:?}",
                    self.url,
                    name.as_str()
                ))
            })?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_and_cap() {
        assert_eq!(seconds_up(Duration::ZERO, MAX_DELAY), 0);
        assert_eq!(seconds_up(Duration::from_millis(1), MAX_DELAY), 1);
        assert_eq!(seconds_up(Duration::from_millis(1500), MAX_DELAY), 2);
        assert_eq!(seconds_up(Duration::from_secs(900), MAX_DELAY), 900);
        assert_eq!(seconds_up(Duration::from_secs(3600), MAX_DELAY), 900);
        assert_eq!(seconds_up(Duration::from_secs(86_400), MAX_VISIBILITY), 43_200);
        assert_eq!(seconds_up(Duration::from_secs(u64::MAX), MAX_WAIT), 20);
    }
}
