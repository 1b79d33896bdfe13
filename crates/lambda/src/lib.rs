//! Everything between the Lambda runtime and the pipeline (`relay-pipeline`).
//!
//! * [`Settings`]: the functions' environment, read once at init, every problem named.
//! * [`Adapters`]: the ports on AWS (SQS, DynamoDB, Secrets Manager, SNS) derived from ONE `SdkConfig`.
//! * [`ingest::IngestHandler`] (API Gateway HTTP API v2), [`deliver::DeliverHandler`] (SQS batch with
//!   partial batch responses) and [`flush::FlushHandler`] (EventBridge schedule).
//!
//! Init never calls AWS (unless the routing config asks for pseudonymisation: then the key is fetched once);
//! secrets are fetched on first use and cached for [`Settings::secret_ttl`].

use std::sync::Arc;

use relay_core::Router;
use relay_core::config::Config;
use relay_pipeline::CachedSecret;
use relay_ports::{AlertQueue, Clock, Ledger, Notifier, SecretStore, SystemClock};

/// The allocator of every Lambda binary (and of this crate's tests and benchmarks): the pipeline allocates
/// many small strings per alert, and mimalloc serves them markedly faster than the system allocator (see
/// BENCHMARKS.md, "Routing core").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod deliver;
pub mod flush;
pub mod ingest;
mod settings;
#[cfg(feature = "testing")]
pub mod testing;

pub use settings::Settings;

/// Why a function could not start.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    /// The environment is incomplete or malformed.
    #[error("invalid settings: {0}")]
    Settings(String),
    /// The routing config could not be read or is invalid.
    #[error("routing config {path}: {message}")]
    Config { path: String, message: String },
    /// The router refused the config (e.g. pseudonymisation without a key).
    #[error("router: {0}")]
    Router(String),
    /// A secret needed at init could not be fetched.
    #[error("secret {id}: {message}")]
    Secret { id: String, message: String },
    /// The Lambda runtime stopped with an error.
    #[error("Lambda runtime: {0}")]
    Runtime(String),
}

/// The ports the functions run over.
#[derive(Clone)]
pub struct Adapters {
    pub ledger: Arc<dyn Ledger>,
    pub realtime: Arc<dyn AlertQueue>,
    pub batch: Arc<dyn AlertQueue>,
    pub dlq: Arc<dyn AlertQueue>,
    pub secrets: Arc<dyn SecretStore>,
    pub notifier: Arc<dyn Notifier>,
    pub clock: Arc<dyn Clock>,
}

impl Adapters {
    /// The AWS adapters named by `settings`, every client derived from `sdk` (one SQS client for the three
    /// queues). Builds clients only: no AWS call is made here.
    pub fn aws(settings: &Settings, sdk: &aws_config::SdkConfig) -> Adapters {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        Adapters {
            ledger: Arc::new(relay_aws::DynamoLedger::new(sdk, &settings.ledger_table)),
            realtime: Arc::new(relay_aws::SqsQueue::from_client(
                sqs.clone(),
                &settings.realtime_queue_url,
            )),
            batch: Arc::new(relay_aws::SqsQueue::from_client(sqs.clone(), &settings.batch_queue_url)),
            dlq: Arc::new(relay_aws::SqsQueue::from_client(sqs, &settings.dlq_url)),
            secrets: Arc::new(relay_aws::SecretsManagerStore::new(sdk)),
            notifier: Arc::new(relay_aws::SnsNotifier::new(sdk, &settings.failure_topic_arn)),
            clock: Arc::new(SystemClock),
        }
    }

    /// A secret from the store, cached for `settings.secret_ttl`.
    pub fn cached_secret(&self, settings: &Settings, id: &str) -> Arc<CachedSecret> {
        Arc::new(CachedSecret::new(
            self.secrets.clone(),
            id,
            settings.secret_ttl,
            self.clock.clone(),
        ))
    }
}

/// JSON (or text) logs as Lambda's advanced logging controls ask: honours `AWS_LAMBDA_LOG_FORMAT` and
/// `AWS_LAMBDA_LOG_LEVEL` (`RUST_LOG` when those are unset).
///
/// Unlike the runtime's default subscriber, JSON lines carry the event's fields at the top level
/// (`{"level":…,"target":"audit","event":"routed","alert_id":…}`), which is what the stack's Logs Insights
/// queries, metric filters and dashboard widgets read.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .map(|l| l.to_ascii_lowercase());
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(true);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init()
    } else {
        builder.without_time().try_init()
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

/// The routing config: `RELAY_CONFIG_PATH` when set, the compiled-in default otherwise.
pub fn load_config(settings: &Settings) -> Result<Config, LambdaError> {
    let Some(path) = &settings.config_path else {
        return Ok(Config::default_config());
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| LambdaError::Config {
        path: shown.clone(),
        message: format!("cannot read: {e}"),
    })?;
    Config::from_yaml(&text).map_err(|e| LambdaError::Config {
        path: shown,
        message: e.to_string(),
    })
}

/// The router for `config`. When the config pseudonymises employees, the key is fetched from
/// `PSEUDONYM_SECRET_ARN` now (the only AWS call at init, and only then).
pub async fn build_router(
    settings: &Settings,
    config: Config,
    secrets: &dyn SecretStore,
) -> Result<Router, LambdaError> {
    let key = match (&settings.pseudonym_secret_arn, config.privacy.pseudonymise_employee) {
        (Some(arn), true) => {
            let value = secrets.fetch(arn).await.map_err(|e| LambdaError::Secret {
                id: arn.clone(),
                message: e.to_string(),
            })?;
            Some(value.trim().as_bytes().to_vec())
        }
        (None, true) => {
            return Err(LambdaError::Settings(
                "the routing config sets privacy.pseudonymise_employee but PSEUDONYM_SECRET_ARN is not set".into(),
            ));
        }
        (_, false) => None,
    };
    Router::new(config, key).map_err(|e| LambdaError::Router(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MemoryLedger, MemoryNotifier, MemoryQueue, MemorySecrets};
    use std::time::Duration;

    fn settings() -> Settings {
        Settings::from_lookup(|k| {
            (k.ends_with("_URL") || k.ends_with("_ARN") || k.ends_with("_TABLE")).then(|| format!("test-{k}"))
        })
        .unwrap()
    }

    fn adapters(secrets: MemorySecrets) -> Adapters {
        let q = || Arc::new(MemoryQueue::new(Duration::from_secs(30)));
        Adapters {
            ledger: Arc::new(MemoryLedger::new()),
            realtime: q(),
            batch: q(),
            dlq: q(),
            secrets: Arc::new(secrets),
            notifier: Arc::new(MemoryNotifier::default()),
            clock: Arc::new(SystemClock),
        }
    }

    #[tokio::test]
    async fn init_errors_name_the_config_file_and_the_missing_key() {
        let mut s = settings();
        s.config_path = Some("/nonexistent/relay.yaml".into());
        let e = load_config(&s).unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/relay.yaml") && e.contains("cannot read"),
            "{e}"
        );

        let dir = std::env::temp_dir().join(format!("relay-lambda-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "version: 7\n").unwrap();
        s.config_path = Some(bad.clone());
        let e = load_config(&s).unwrap_err().to_string();
        assert!(e.contains("bad.yaml"), "{e}");

        let mut config = Config::default_config();
        config.privacy.pseudonymise_employee = true;
        let none = MemorySecrets::default();
        let e = build_router(&settings(), config.clone(), &none)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("PSEUDONYM_SECRET_ARN"), "{e}");
        let mut s = settings();
        s.pseudonym_secret_arn = Some("pseudo".into());
        let e = build_router(&s, config.clone(), &none).await.unwrap_err().to_string();
        assert!(e.contains("secret pseudo") && e.contains("not found"), "{e}");
        let with = MemorySecrets::new([("pseudo".to_string(), "a-key-of-at-least-16-bytes".to_string())]);
        assert!(build_router(&s, config, &with).await.is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn handlers_build_without_fetching_any_secret() {
        // an empty secret store: init must not ask it for anything
        let a = adapters(MemorySecrets::default());
        let s = settings();
        assert!(
            ingest::IngestHandler::new(&s, &a, relay_pipeline::Metrics::off())
                .await
                .is_ok()
        );
        let _ = deliver::DeliverHandler::new(&s, &a, relay_pipeline::Metrics::off());
        let f = flush::FlushHandler::new(&s, &a, relay_pipeline::Metrics::off()).unwrap();
        assert_eq!(f.settings.drain_budget, s.flush_budget);
    }
}
