//! ingest: API Gateway HTTP API → signature, validation, routing → SQS (realtime or batch queue).

use relay_lambda::{LambdaError, Settings, aws_ports, ingest, telemetry};

// The pipeline allocates many small strings per alert; mimalloc serves them faster (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), LambdaError> {
    telemetry::init_logging();
    let settings = Settings::from_env()?;
    let metrics = telemetry::init_metrics(&settings, "ingest")?;
    let ports = aws_ports(&settings, &relay_aws::sdk_config().await);
    ingest::run(ingest::ingest(&settings, &ports).await?, metrics).await
}
