//! deliver: SQS realtime queue → ServiceNow, one record per alert, partial batch responses for retries.

use relay_lambda::{Adapters, LambdaError, Settings, deliver};
use relay_pipeline::Metrics;

#[tokio::main]
async fn main() -> Result<(), LambdaError> {
    relay_lambda::init_logging();
    let settings = Settings::from_env()?;
    let sdk = relay_aws::sdk_config().await;
    let adapters = Adapters::aws(&settings, &sdk);
    let metrics = Metrics::emf(&settings.metrics_namespace, "deliver");
    deliver::run(deliver::DeliverHandler::new(&settings, &adapters, metrics)).await
}
