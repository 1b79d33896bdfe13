//! Secrets as the pipeline uses them: fetched from the [`SecretStore`], parsed once, and the parsed value
//! cached with a TTL. A rejection (a signature mismatch, a 401) may ask for a refetch, so a rotated secret is
//! picked up without a restart; while the store cannot be reached the last good value keeps being served.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use relay_ports::{Clock, PortError, SecretStore};
use secrecy::SecretString;
use serde::Deserialize;
use servicenow_client::{ClientConfig, ClientError, CredentialSource, Credentials, Outcome, ServiceNowClient};
use tokio::sync::{Mutex, OnceCell};

use crate::signature::{SecretFormatError, WebhookSecrets};

/// A secret's text as a typed value.
pub trait SecretDocument: Sized + Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;
    fn parse(text: &str) -> Result<Self, Self::Error>;
}

impl SecretDocument for WebhookSecrets {
    type Error = SecretFormatError;
    fn parse(text: &str) -> Result<Self, SecretFormatError> {
        WebhookSecrets::from_document(text)
    }
}

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {id} is unavailable: {source}")]
    Unavailable {
        id: String,
        #[source]
        source: PortError,
    },
    #[error("secret {id} is malformed: {source}")]
    Malformed {
        id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A failed fetch is not repeated for this long (waiters get the last good value, or the same error).
const FAILED_FETCH_HOLD: Duration = Duration::from_secs(1);

struct Cache<T> {
    value: Option<(Arc<T>, i64)>,
    /// A rejection asked for a fresh copy.
    stale: bool,
    last_failure_ms: Option<i64>,
}

/// One secret, parsed, cached for `ttl`. Concurrent callers share one fetch.
pub struct CachedSecret<T> {
    store: Arc<dyn SecretStore>,
    id: String,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    cache: Mutex<Cache<T>>,
}

/// The webhook signing secrets (`{"secrets": ["whsec_…", …]}`).
pub type WebhookKeys = CachedSecret<WebhookSecrets>;

impl<T: SecretDocument> CachedSecret<T> {
    pub fn new(store: Arc<dyn SecretStore>, id: impl Into<String>, ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        CachedSecret {
            store,
            id: id.into(),
            ttl,
            clock,
            cache: Mutex::new(Cache {
                value: None,
                stale: false,
                last_failure_ms: None,
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The parsed value: from the cache while fresh, else fetched and parsed. When the fetch or the parse
    /// fails but an earlier value exists, that value is served (and the failure logged).
    pub async fn get(&self) -> Result<Arc<T>, SecretError> {
        let now = self.clock.now_ms();
        let mut cache = self.cache.lock().await;
        if let Some((v, at)) = &cache.value
            && !cache.stale
            && now - at < self.ttl.as_millis() as i64
        {
            return Ok(v.clone());
        }
        let recently_failed = cache
            .last_failure_ms
            .is_some_and(|t| now - t < FAILED_FETCH_HOLD.as_millis() as i64);
        if recently_failed && let Some((v, _)) = &cache.value {
            return Ok(v.clone());
        }
        match self.fetch().await {
            Ok(v) => {
                let v = Arc::new(v);
                *cache = Cache {
                    value: Some((v.clone(), now)),
                    stale: false,
                    last_failure_ms: None,
                };
                Ok(v)
            }
            Err(e) => {
                cache.last_failure_ms = Some(now);
                match &cache.value {
                    Some((v, _)) => {
                        tracing::warn!(secret = %self.id, error = %e, "secret refresh failed; using the cached value");
                        Ok(v.clone())
                    }
                    None => Err(e),
                }
            }
        }
    }

    async fn fetch(&self) -> Result<T, SecretError> {
        let text = self
            .store
            .fetch(&self.id)
            .await
            .map_err(|source| SecretError::Unavailable {
                id: self.id.clone(),
                source,
            })?;
        T::parse(&text).map_err(|e| SecretError::Malformed {
            id: self.id.clone(),
            source: Box::new(e),
        })
    }

    /// After a rejection: ask for a fresh copy on the next [`get`](Self::get) when the cached one is at
    /// least `min_age` old (so a burst of bad requests cannot force a fetch each). Says whether it did.
    pub async fn refresh_if_older_than(&self, min_age: Duration) -> bool {
        let now = self.clock.now_ms();
        let mut cache = self.cache.lock().await;
        match &cache.value {
            Some((_, at)) if now - at < min_age.as_millis() as i64 => false,
            _ => {
                cache.stale = true;
                true
            }
        }
    }
}

/// The authentication kinds of the ServiceNow secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AuthKind {
    #[default]
    #[serde(rename = "basic")]
    Basic,
    #[serde(rename = "oauth_password")]
    OAuthPassword,
    #[serde(rename = "oauth_client_credentials")]
    OAuthClientCredentials,
}

/// The ServiceNow secret document as stored:
/// `{"instance_url": "https://x.service-now.com", "auth": "basic" | "oauth_password" |
/// "oauth_client_credentials", "username", "password", "client_id", "client_secret"}`.
#[derive(Deserialize)]
struct ServiceNowDocument {
    instance_url: String,
    #[serde(default)]
    auth: AuthKind,
    username: Option<String>,
    password: Option<SecretString>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
}

/// Why the ServiceNow secret document is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ServiceNowSecretError {
    #[error("the ServiceNow secret is not a valid document: {0}")]
    Invalid(#[source] serde_json::Error),
    #[error("the ServiceNow secret lacks \"{field}\" (needed for auth {auth})")]
    Missing { field: &'static str, auth: &'static str },
    #[error("the ServiceNow secret's instance_url is empty")]
    EmptyUrl,
}

/// The ServiceNow instance and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct ServiceNowSettings {
    pub instance_url: String,
    pub credentials: Credentials,
}

impl SecretDocument for ServiceNowSettings {
    type Error = ServiceNowSecretError;
    fn parse(text: &str) -> Result<Self, ServiceNowSecretError> {
        ServiceNowSettings::from_document(text)
    }
}

impl ServiceNowSettings {
    pub fn from_document(doc: &str) -> Result<ServiceNowSettings, ServiceNowSecretError> {
        let d: ServiceNowDocument = serde_json::from_str(doc).map_err(ServiceNowSecretError::Invalid)?;
        if d.instance_url.trim().is_empty() {
            return Err(ServiceNowSecretError::EmptyUrl);
        }
        let auth = match d.auth {
            AuthKind::Basic => "basic",
            AuthKind::OAuthPassword => "oauth_password",
            AuthKind::OAuthClientCredentials => "oauth_client_credentials",
        };
        fn need<V>(v: Option<V>, field: &'static str, auth: &'static str) -> Result<V, ServiceNowSecretError> {
            v.ok_or(ServiceNowSecretError::Missing { field, auth })
        }
        let username = || need(d.username.clone().filter(|u| !u.is_empty()), "username", auth);
        let password = || need(d.password.clone(), "password", auth);
        let client_id = || need(d.client_id.clone().filter(|c| !c.is_empty()), "client_id", auth);
        let client_secret = || need(d.client_secret.clone(), "client_secret", auth);
        let credentials = match d.auth {
            AuthKind::Basic => Credentials::Basic {
                username: username()?,
                password: password()?,
            },
            AuthKind::OAuthPassword => Credentials::OAuthPassword {
                client_id: client_id()?,
                client_secret: client_secret()?,
                username: username()?,
                password: password()?,
            },
            AuthKind::OAuthClientCredentials => Credentials::OAuthClientCredentials {
                client_id: client_id()?,
                client_secret: client_secret()?,
            },
        };
        Ok(ServiceNowSettings {
            instance_url: d.instance_url,
            credentials,
        })
    }
}

/// Credentials read from the ServiceNow secret on demand; a 401 makes the next call refetch the secret.
pub struct SecretCredentials {
    secret: Arc<CachedSecret<ServiceNowSettings>>,
}

impl SecretCredentials {
    pub fn new(secret: Arc<CachedSecret<ServiceNowSettings>>) -> Self {
        SecretCredentials { secret }
    }
}

#[async_trait]
impl CredentialSource for SecretCredentials {
    async fn credentials(&self) -> Result<Credentials, ClientError> {
        match self.secret.get().await {
            Ok(s) => Ok(s.credentials.clone()),
            Err(e @ SecretError::Unavailable { .. }) => Err(ClientError::CredentialsUnavailable(e.to_string())),
            Err(e @ SecretError::Malformed { .. }) => Err(ClientError::InvalidCredentials(e.to_string())),
        }
    }

    async fn invalidate(&self) {
        self.secret.refresh_if_older_than(Duration::ZERO).await;
    }
}

/// The ServiceNow client, built on first use (the instance URL is in the secret; fetching it lazily keeps
/// cold starts short).
pub struct ServiceNowTarget {
    secret: Option<Arc<CachedSecret<ServiceNowSettings>>>,
    config: Box<dyn Fn(&str) -> ClientConfig + Send + Sync>,
    client: OnceCell<ServiceNowClient>,
}

impl ServiceNowTarget {
    /// A client that already exists (local mode, tests).
    pub fn ready(client: ServiceNowClient) -> Self {
        ServiceNowTarget {
            secret: None,
            config: Box::new(|url: &str| ClientConfig::new(url)),
            client: OnceCell::from(client),
        }
    }

    /// A client built from the ServiceNow secret on first use; `config` turns the instance URL into the
    /// client settings (timeouts).
    pub fn from_secret(
        secret: Arc<CachedSecret<ServiceNowSettings>>,
        config: impl Fn(&str) -> ClientConfig + Send + Sync + 'static,
    ) -> Self {
        ServiceNowTarget {
            secret: Some(secret),
            config: Box::new(config),
            client: OnceCell::new(),
        }
    }

    /// The client, or the outcome to treat this attempt as (retryable while the secret is unreachable or
    /// malformed: an operator can fix it within the retry window).
    pub async fn client(&self) -> Result<ServiceNowClient, Outcome> {
        let retryable = |reason: String| Outcome::Retryable {
            retry_after: None,
            reason,
        };
        self.client
            .get_or_try_init(|| async {
                let secret = self
                    .secret
                    .as_ref()
                    .ok_or_else(|| retryable("no ServiceNow target configured".into()))?;
                let settings = secret.get().await.map_err(|e| {
                    tracing::error!(secret = %secret.id(), error = %e, "ServiceNow secret unusable");
                    retryable(e.to_string())
                })?;
                let creds: Arc<dyn CredentialSource> = Arc::new(SecretCredentials::new(secret.clone()));
                ServiceNowClient::new((self.config)(&settings.instance_url), creds).map_err(|e| {
                    tracing::error!(error = %e, "cannot build the ServiceNow client");
                    retryable(e.to_string())
                })
            })
            .await
            .cloned()
    }
}

#[cfg(test)]
mod tests;
