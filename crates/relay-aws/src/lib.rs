//! The ports on AWS: [`SqsQueue`] (SQS), [`DynamoLedger`] (DynamoDB), [`SecretsManagerStore`] (Secrets
//! Manager) and [`SnsNotifier`] (SNS).
//!
//! Build ONE [`SdkConfig`](aws_config::SdkConfig) at start-up with [`sdk_config`] and derive every adapter
//! from it: loading credentials and region once keeps Lambda cold starts short.
//!
//! Every SDK failure becomes a [`PortError`]: throttling, 5xx answers, timeouts and connection failures are
//! `Unavailable` (try again later), a missing queue, table, secret or topic is `NotFound`, and everything else
//! the service refused (validation, access denied) is `Rejected`. The message names the operation and carries
//! the service's error code and message.

mod dynamo;
mod error;
mod secrets;
mod sns;
mod sqs;
#[cfg(feature = "testing")]
pub mod testing;

pub use dynamo::DynamoLedger;
pub use error::port_error;
pub use secrets::SecretsManagerStore;
pub use sns::{SnsNotifier, notice_subject};
pub use sqs::{MAX_DELAY, MAX_MESSAGE_BYTES, MAX_VISIBILITY, MAX_WAIT, SqsQueue};

/// The shared SDK configuration: region, credentials and endpoint from the environment and profile files.
///
/// Honours `AWS_ENDPOINT_URL` (and the per-service `AWS_ENDPOINT_URL_<SERVICE>`), which is how the tests
/// point every client at moto_server.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
}
