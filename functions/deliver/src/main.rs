//! deliver: SQS realtime and critical queues → ServiceNow, one record per alert, partial batch responses for retries.

use std::sync::Arc;

use relay_lambda::{LambdaError, Settings, aws_ports, deliver, telemetry};

// The pipeline allocates many small strings per alert; mimalloc serves them faster (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), LambdaError> {
    telemetry::init_logging();
    let settings = Settings::from_env()?;
    let metrics = telemetry::init_metrics(&settings, "deliver")?;
    let ports = aws_ports(&settings, &relay_aws::sdk_config().await);
    let lanes = deliver::Lanes::new(&settings, Arc::new(deliver::delivery(&settings, &ports)));
    deliver::run(lanes, metrics).await
}
