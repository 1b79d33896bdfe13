//! flush: EventBridge schedule → drain the batch queue, aggregate, send through the Batch API.

use relay_lambda::{LambdaError, Settings, aws_ports, flush, telemetry};

// The pipeline allocates many small strings per alert; mimalloc serves them faster (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), LambdaError> {
    telemetry::init_logging();
    let settings = Settings::from_env()?;
    let metrics = telemetry::init_metrics(&settings, "flush")?;
    let ports = aws_ports(&settings, &relay_aws::sdk_config().await);
    flush::run(flush::flusher(&settings, &ports)?, metrics).await
}
