//! Test fixtures on moto_server (feature `testing`): uniquely named queues, ledger tables, secrets and
//! topics, and the "is moto running?" rule every AWS test follows.
//!
//! ```ignore
//! let Some(_endpoint) = relay_aws::testing::moto_endpoint() else { return };
//! let config = relay_aws::sdk_config().await;
//! let queue = relay_aws::testing::create_queue(&config, "realtime", 30).await;
//! ```
//!
//! The helpers panic on failure: they are for tests only.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use relay_ports::FailureNotice;

use crate::SqsQueue;

/// The moto endpoint the tests should use, or `None` when the test should skip.
///
/// Reads `AWS_ENDPOINT_URL`. When it is unset: with `RELAY_REQUIRE_MOTO=1` this panics (the test command
/// promised moto); otherwise it prints a loud skip line and returns `None`.
pub fn moto_endpoint() -> Option<String> {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var("RELAY_REQUIRE_MOTO").as_deref() == Ok("1") {
                panic!("RELAY_REQUIRE_MOTO=1 but AWS_ENDPOINT_URL is not set: start moto_server (scripts/test.sh)");
            }
            eprintln!("########## skipped: moto not running, use scripts/test.sh ##########");
            None
        }
    }
}

/// A unique resource name: `relay-test-<prefix>-<uuid>` (cut to 80 characters, SQS's limit).
pub fn unique_name(prefix: &str) -> String {
    let mut name = format!("relay-test-{prefix}-{}", uuid::Uuid::new_v4().simple());
    name.truncate(80);
    name
}

/// A queue created for a test.
#[derive(Debug, Clone)]
pub struct TestQueue {
    pub name: String,
    pub url: String,
    pub arn: String,
}

impl TestQueue {
    /// The adapter for this queue.
    pub fn adapter(&self, config: &aws_config::SdkConfig) -> SqsQueue {
        SqsQueue::new(config, &self.url)
    }
}

async fn queue_with(
    config: &aws_config::SdkConfig,
    prefix: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> TestQueue {
    let client = aws_sdk_sqs::Client::new(config);
    let name = unique_name(prefix);
    let out = client
        .create_queue()
        .queue_name(&name)
        .set_attributes(Some(attributes.into_iter().collect::<HashMap<_, _>>()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("create queue {name}: {}", aws_sdk_sqs::error::DisplayErrorContext(e)));
    let url = out.queue_url.expect("CreateQueue answered without a QueueUrl");
    let attrs = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "get attributes of {name}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        });
    let arn = attrs
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("GetQueueAttributes answered without a QueueArn");
    TestQueue { name, url, arn }
}

/// A fresh standard queue with the given visibility timeout (seconds) and 4 days' retention.
pub async fn create_queue(config: &aws_config::SdkConfig, prefix: &str, visibility_timeout_s: u32) -> TestQueue {
    queue_with(
        config,
        prefix,
        vec![
            (QueueAttributeName::VisibilityTimeout, visibility_timeout_s.to_string()),
            (QueueAttributeName::MessageRetentionPeriod, "345600".into()),
        ],
    )
    .await
}

/// A fresh queue plus its dead-letter queue: after `max_receive_count` receives SQS moves a message to
/// the DLQ (the safety net; the deliverer normally dead-letters itself). Returns `(queue, dlq)`.
pub async fn create_queue_with_dlq(
    config: &aws_config::SdkConfig,
    prefix: &str,
    visibility_timeout_s: u32,
    max_receive_count: u32,
) -> (TestQueue, TestQueue) {
    let dlq = queue_with(
        config,
        &format!("{prefix}-dlq"),
        vec![(QueueAttributeName::MessageRetentionPeriod, "1209600".into())],
    )
    .await;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq.arn,
        "maxReceiveCount": max_receive_count.to_string(),
    })
    .to_string();
    let queue = queue_with(
        config,
        prefix,
        vec![
            (QueueAttributeName::VisibilityTimeout, visibility_timeout_s.to_string()),
            (QueueAttributeName::MessageRetentionPeriod, "345600".into()),
            (QueueAttributeName::RedrivePolicy, redrive),
        ],
    )
    .await;
    (queue, dlq)
}

/// A fresh ledger table: partition key `alert_id` (S), on-demand billing, TTL on `expires_at`, and the
/// sparse global secondary index `watched` (hash key `watch_shard` (S), range key `alert_id`, projection
/// ALL) the watch entries are listed through, as `template.yaml` declares it. Returns the table name.
pub async fn create_ledger_table(config: &aws_config::SdkConfig, prefix: &str) -> String {
    let client = aws_sdk_dynamodb::Client::new(config);
    let name = unique_name(prefix);
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! { panic!("{what} of table {name}: {e}") };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute definition")
    };
    let key = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .expect("key schema")
    };
    client
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("alert_id"))
        .attribute_definitions(attribute("watch_shard"))
        .key_schema(key("alert_id", KeyType::Hash))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("watched")
                .key_schema(key("watch_shard", KeyType::Hash))
                .key_schema(key("alert_id", KeyType::Range))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .expect("global secondary index"),
        )
        .send()
        .await
        .unwrap_or_else(|e| fail("CreateTable", &aws_sdk_dynamodb::error::DisplayErrorContext(e)));
    client
        .update_time_to_live()
        .table_name(&name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires_at")
                .build()
                .expect("ttl spec"),
        )
        .send()
        .await
        .unwrap_or_else(|e| fail("UpdateTimeToLive", &aws_sdk_dynamodb::error::DisplayErrorContext(e)));
    name
}

/// A fresh secret holding `value`. Returns its ARN.
pub async fn create_secret(config: &aws_config::SdkConfig, prefix: &str, value: &str) -> String {
    let client = aws_sdk_secretsmanager::Client::new(config);
    let name = unique_name(prefix);
    let out = client
        .create_secret()
        .name(&name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create secret {name}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            )
        });
    out.arn.expect("CreateSecret answered without an ARN")
}

/// Store a new current value in an existing secret (a rotation).
pub async fn rotate_secret(config: &aws_config::SdkConfig, secret_id: &str, value: &str) {
    aws_sdk_secretsmanager::Client::new(config)
        .put_secret_value()
        .secret_id(secret_id)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "rotate secret {secret_id}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            )
        });
}

/// An SNS topic and a queue subscribed to it, so a test can read what was published.
#[derive(Debug, Clone)]
pub struct TestTopic {
    pub topic_arn: String,
    /// Receives every message published to the topic, wrapped in SNS's JSON envelope (see [`read_notices`]).
    pub subscriber: TestQueue,
}

/// A fresh topic with an SQS subscription.
pub async fn create_topic(config: &aws_config::SdkConfig, prefix: &str) -> TestTopic {
    let sns = aws_sdk_sns::Client::new(config);
    let name = unique_name(prefix);
    let topic_arn = sns
        .create_topic()
        .name(&name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create topic {name}: {}", aws_sdk_sns::error::DisplayErrorContext(e)))
        .topic_arn
        .expect("CreateTopic answered without a TopicArn");
    let subscriber = create_queue(config, &format!("{prefix}-sub"), 30).await;
    sns.subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(&subscriber.arn)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "subscribe {} to {topic_arn}: {}",
                subscriber.arn,
                aws_sdk_sns::error::DisplayErrorContext(e)
            )
        });
    TestTopic { topic_arn, subscriber }
}

/// One notification as an SNS subscriber sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedNotice {
    pub subject: Option<String>,
    /// The raw message text (the notice JSON).
    pub message: String,
    pub notice: FailureNotice,
    /// Message attributes (name → string value).
    pub attributes: HashMap<String, String>,
}

/// Take (and delete) every notification that reached the topic's subscriber queue, waiting up to
/// `wait` for the first one.
pub async fn read_notices(
    config: &aws_config::SdkConfig,
    topic: &TestTopic,
    wait: std::time::Duration,
) -> Vec<PublishedNotice> {
    use relay_ports::AlertQueue;
    let queue = topic.subscriber.adapter(config);
    let mut out = Vec::new();
    let mut wait = wait;
    loop {
        let batch = queue
            .receive(10, wait)
            .await
            .expect("receive from the topic's subscriber queue");
        if batch.is_empty() {
            return out;
        }
        for m in batch {
            out.push(parse_envelope(&m.body));
            queue.delete(&m.receipt).await.expect("delete a read notification");
        }
        wait = std::time::Duration::ZERO;
    }
}

/// Parse SNS's JSON envelope (`{"Type":"Notification","Subject":..,"Message":..,"MessageAttributes":..}`).
pub fn parse_envelope(body: &str) -> PublishedNotice {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("SNS envelope is not JSON ({e}): {body}"));
    let message = v["Message"]
        .as_str()
        .unwrap_or_else(|| panic!("SNS envelope without Message: {body}"))
        .to_string();
    let notice =
        serde_json::from_str(&message).unwrap_or_else(|e| panic!("message is not a FailureNotice ({e}): {message}"));
    let attributes = v["MessageAttributes"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, a)| a["Value"].as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default();
    PublishedNotice {
        subject: v["Subject"].as_str().map(str::to_string),
        message,
        notice,
        attributes,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Atomic DynamoDB in front of moto
// ---------------------------------------------------------------------------------------------------------

/// A loopback proxy that forwards DynamoDB requests to moto_server ONE AT A TIME.
///
/// moto_server handles requests on several threads and evaluates a condition expression and applies the
/// write without a lock, so two truly concurrent conditional writes on one item can both succeed there
/// (measured: about one run in three of 12 concurrent claims granted two or three). Real DynamoDB applies
/// each conditional write atomically per item. Tests that race deliverers against one ledger entry point
/// their DynamoDB client at this proxy to get DynamoDB's guarantee back. It listens on 127.0.0.1 port 0
/// and stops when dropped.
#[derive(Debug)]
pub struct AtomicDynamo {
    pub endpoint: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

struct Upstream {
    url: String,
    http: reqwest::Client,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl AtomicDynamo {
    /// Start a proxy to `moto_endpoint` on the current runtime.
    pub async fn start(moto_endpoint: &str) -> AtomicDynamo {
        use std::sync::Arc;
        let upstream = Arc::new(Upstream {
            url: moto_endpoint.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder().no_proxy().build().expect("HTTP client"),
            one_at_a_time: tokio::sync::Mutex::new(()),
        });
        let app = axum::Router::new().fallback(forward).with_state(upstream);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the DynamoDB proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        AtomicDynamo {
            endpoint,
            shutdown: Some(tx),
        }
    }

    /// A DynamoDB client that talks to moto through this proxy.
    pub fn client(&self, config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(config)
                .endpoint_url(&self.endpoint)
                .build(),
        )
    }
}

impl Drop for AtomicDynamo {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn forward(
    axum::extract::State(upstream): axum::extract::State<std::sync::Arc<Upstream>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, format!("proxy: body: {e}")).into_response(),
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut outgoing = upstream
        .http
        .request(parts.method, format!("{}{path}", upstream.url))
        .body(body);
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
            outgoing = outgoing.header(name, value);
        }
    }
    let _turn = upstream.one_at_a_time.lock().await;
    let answer = match outgoing.send().await {
        Ok(a) => a,
        Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, format!("proxy: moto: {e}")).into_response(),
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = match answer.bytes().await {
        Ok(b) => b,
        Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, format!("proxy: moto body: {e}")).into_response(),
    };
    drop(_turn);
    let mut response = axum::response::Response::new(axum::body::Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if name != axum::http::header::TRANSFER_ENCODING && name != axum::http::header::CONTENT_LENGTH {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}
