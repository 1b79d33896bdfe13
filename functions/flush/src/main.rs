//! flush: EventBridge schedule → drain the batch queue, aggregate, send through the Batch API.

use relay_lambda::{Adapters, LambdaError, Settings, flush};
use relay_pipeline::Metrics;

#[tokio::main]
async fn main() -> Result<(), LambdaError> {
    relay_lambda::init_logging();
    let settings = Settings::from_env()?;
    let sdk = relay_aws::sdk_config().await;
    let adapters = Adapters::aws(&settings, &sdk);
    let metrics = Metrics::emf(&settings.metrics_namespace, "flush");
    flush::run(flush::FlushHandler::new(&settings, &adapters, metrics)?).await
}
