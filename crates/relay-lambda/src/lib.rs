//! Everything between the Lambda runtime and the pipeline (`relay-pipeline`): the AWS adapters, the
//! environment, logging and the EMF metrics exporter. The pipeline itself — the HTTP router, delivery,
//! flush — is the same code `relay serve` runs.
//!
//! * [`Settings`]: the functions' environment, read once at init, every problem named.
//! * [`aws_ports`]: the ports on AWS (SQS, DynamoDB, Secrets Manager, SNS) derived from ONE `SdkConfig`.
//! * [`ingest`] (API Gateway HTTP API v2 → the pipeline's router), [`deliver`] (SQS batch with partial batch
//!   responses) and [`flush`] (EventBridge schedule).
//! * [`telemetry`]: JSON logs carrying the request id and X-Ray trace id; metrics as one EMF document per
//!   label set per invocation, a cold-start metric, the request id as a property.
//!
//! Init never calls AWS (unless the routing config asks for pseudonymisation: then the key is fetched once);
//! secrets are fetched on first use and cached for [`Settings::secret_ttl`].

use std::sync::Arc;

use relay_core::config::Config;
use relay_core::{PseudonymKey, Router};
use relay_pipeline::{CachedSecret, Ports, SecretDocument};
use relay_ports::{SecretStore, SystemClock};

pub mod deliver;
pub mod flush;
pub mod ingest;
mod settings;
pub mod telemetry;

pub use settings::Settings;

/// Why a function could not start.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    /// The environment is incomplete or malformed.
    #[error("invalid settings: {0}")]
    Settings(String),
    /// The routing config could not be read or is invalid.
    #[error("routing config: {0}")]
    Config(#[from] relay_core::ConfigLoadError),
    /// The router refused the config (e.g. pseudonymisation without a key).
    #[error("router: {0}")]
    Router(#[source] relay_core::RouterError),
    /// A secret needed at init could not be fetched.
    #[error("secret {id}: {source}")]
    Secret {
        id: String,
        #[source]
        source: relay_ports::PortError,
    },
    /// The metrics exporter could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The Lambda runtime stopped with an error.
    #[error("Lambda runtime: {0}")]
    Runtime(String),
}

/// The AWS adapters named by `settings`, every client derived from `sdk` (one SQS client for the three
/// queues). Builds clients only: no AWS call is made here.
pub fn aws_ports(settings: &Settings, sdk: &aws_config::SdkConfig) -> Ports {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    Ports {
        ledger: Arc::new(relay_aws::DynamoLedger::new(sdk, &settings.ledger_table)),
        realtime: Arc::new(relay_aws::SqsQueue::from_client(
            sqs.clone(),
            &settings.realtime_queue_url,
        )),
        critical: Arc::new(relay_aws::SqsQueue::from_client(
            sqs.clone(),
            settings
                .critical_queue_url
                .as_deref()
                .unwrap_or(&settings.realtime_queue_url),
        )),
        batch: Arc::new(relay_aws::SqsQueue::from_client(sqs.clone(), &settings.batch_queue_url)),
        dlq: Arc::new(relay_aws::SqsQueue::from_client(sqs, &settings.dlq_url)),
        secrets: Arc::new(relay_aws::SecretsManagerStore::new(sdk)),
        notifier: Arc::new(relay_aws::SnsNotifier::new(sdk, &settings.failure_topic_arn)),
        clock: Arc::new(SystemClock),
    }
}

/// The secret `id` from the ports' store, parsed and cached for `settings.secret_ttl`.
pub fn cached_secret<T: SecretDocument>(settings: &Settings, ports: &Ports, id: &str) -> Arc<CachedSecret<T>> {
    Arc::new(CachedSecret::new(
        ports.secrets.clone(),
        id,
        settings.secret_ttl,
        ports.clock.clone(),
    ))
}

/// The routing config: `RELAY_CONFIG_PATH` when set, the compiled-in default otherwise (the one loader
/// `relay` uses too).
pub fn load_config(settings: &Settings) -> Result<Config, LambdaError> {
    Ok(Config::load(settings.config_path.as_deref())?.config)
}

/// The router for `config`. When the config pseudonymises employees, the key is fetched from
/// `PSEUDONYM_SECRET_ARN` now (the only AWS call at init, and only then), normalised as the local mode
/// normalises `RELAY_PSEUDONYM_KEY`.
pub async fn build_router(
    settings: &Settings,
    config: Config,
    secrets: &dyn SecretStore,
) -> Result<Router, LambdaError> {
    let key = match (&settings.pseudonym_secret_arn, config.privacy.pseudonymise_employee) {
        (Some(arn), true) => {
            let text = secrets.fetch(arn).await.map_err(|source| LambdaError::Secret {
                id: arn.clone(),
                source,
            })?;
            Some(PseudonymKey::from_secret_text(&text).map_err(LambdaError::Router)?)
        }
        (None, true) => {
            return Err(LambdaError::Settings(
                "the routing config sets privacy.pseudonymise_employee but PSEUDONYM_SECRET_ARN is not set".into(),
            ));
        }
        (_, false) => None,
    };
    Router::with_pseudonym_key(config, key).map_err(LambdaError::Router)
}

#[cfg(test)]
mod tests;
