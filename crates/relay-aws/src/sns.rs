//! [`Notifier`] over Amazon SNS.

use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;
use relay_ports::{FailureNotice, Notifier, PortError};

use crate::error::port_error;

/// SNS limits a subject to 100 printable ASCII characters.
const MAX_SUBJECT: usize = 100;

/// Publishes each [`FailureNotice`] to one topic: the message is the notice as JSON (it never holds the
/// alert payload), the subject a one-line summary, and `severity`, `record_type` and `error_class` are
/// also message attributes so subscriptions can filter on them.
#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: Client,
    topic_arn: String,
}

impl SnsNotifier {
    pub fn new(config: &aws_config::SdkConfig, topic_arn: impl Into<String>) -> Self {
        Self::from_client(Client::new(config), topic_arn)
    }

    pub fn from_client(client: Client, topic_arn: impl Into<String>) -> Self {
        SnsNotifier {
            client,
            topic_arn: topic_arn.into(),
        }
    }

    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }
}

/// The subject line of a notice: `Alert delivery failed (critical security_incident, permanent): <id>`,
/// reduced to printable ASCII and cut to SNS's 100 characters.
pub fn notice_subject(notice: &FailureNotice) -> String {
    let text = format!(
        "Alert delivery failed ({} {}, {}): {}",
        notice.severity, notice.record_type, notice.error_class, notice.alert_id
    );
    let mut subject: String = text
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .take(MAX_SUBJECT)
        .collect();
    subject.truncate(subject.trim_end().len());
    subject
}

#[async_trait]
impl Notifier for SnsNotifier {
    async fn delivery_failed(&self, notice: &FailureNotice) -> Result<(), PortError> {
        let message = serde_json::to_string(notice)
            .map_err(|e| PortError::Rejected(format!("SNS Publish: notice is not serialisable: {e}")))?;
        let mut publish = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(notice_subject(notice))
            .message(message);
        for (name, value) in [
            ("severity", &notice.severity),
            ("record_type", &notice.record_type),
            ("error_class", &notice.error_class),
        ] {
            // SNS refuses empty attribute values.
            if value.is_empty() {
                continue;
            }
            let attr = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| PortError::Rejected(format!("SNS Publish: attribute {name}: {e}")))?;
            publish = publish.message_attributes(name, attr);
        }
        publish
            .send()
            .await
            .map_err(|e| port_error(&format!("SNS Publish to {}", self.topic_arn), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(alert_id: &str) -> FailureNotice {
        FailureNotice {
            alert_id: alert_id.into(),
            severity: "critical".into(),
            record_type: "security_incident".into(),
            table: "sn_si_incident".into(),
            rule: "r".into(),
            correlation_id: "relay:x".into(),
            error_class: "permanent".into(),
            error: "ACL".into(),
            attempts: 1,
            first_received_at_ms: 0,
        }
    }

    #[test]
    fn subject_is_readable_ascii_and_short() {
        assert_eq!(
            notice_subject(&notice("a-1")),
            "Alert delivery failed (critical security_incident, permanent): a-1"
        );
        let long = notice_subject(&notice(&format!("ünï\ncode-{}", "x".repeat(200))));
        assert_eq!(long.len(), MAX_SUBJECT);
        assert!(long.chars().all(|c| c.is_ascii_graphic() || c == ' '), "{long}");
    }
}
