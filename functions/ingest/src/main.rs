//! ingest: API Gateway HTTP API → signature, validation, routing → SQS (realtime or batch queue).

use relay_lambda::{Adapters, LambdaError, Settings, ingest};
use relay_pipeline::Metrics;

#[tokio::main]
async fn main() -> Result<(), LambdaError> {
    relay_lambda::init_logging();
    let settings = Settings::from_env()?;
    let sdk = relay_aws::sdk_config().await;
    let adapters = Adapters::aws(&settings, &sdk);
    let metrics = Metrics::emf(&settings.metrics_namespace, "ingest");
    let handler = ingest::IngestHandler::new(&settings, &adapters, metrics).await?;
    ingest::run(handler).await
}
