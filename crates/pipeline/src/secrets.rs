//! Secrets as the pipeline uses them: cached in memory with a TTL, refetched after a rejection (so a
//! rotated secret is picked up without a restart), and parsed into webhook keys or ServiceNow settings.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use relay_ports::{Clock, PortError, SecretStore};
use servicenow_client::{ClientConfig, ClientError, CredentialSource, Credentials, Outcome, ServiceNowClient};
use tokio::sync::{Mutex, OnceCell};

use crate::signature::WebhookSecrets;

/// One secret, cached for `ttl`.
pub struct CachedSecret {
    store: Arc<dyn SecretStore>,
    id: String,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    cached: Mutex<Option<(Arc<str>, i64)>>,
}

impl std::fmt::Debug for CachedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CachedSecret({}, value redacted)", self.id)
    }
}

impl CachedSecret {
    pub fn new(store: Arc<dyn SecretStore>, id: impl Into<String>, ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        CachedSecret {
            store,
            id: id.into(),
            ttl,
            clock,
            cached: Mutex::new(None),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The value, from the cache while fresh (the same `Arc` until it is fetched again).
    pub async fn get(&self) -> Result<Arc<str>, PortError> {
        let now = self.clock.now_ms();
        let mut cached = self.cached.lock().await;
        if let Some((v, at)) = cached.as_ref()
            && now - at < self.ttl.as_millis() as i64
        {
            return Ok(v.clone());
        }
        let v: Arc<str> = self.store.fetch(&self.id).await?.into();
        *cached = Some((v.clone(), now));
        Ok(v)
    }

    /// Age of the cached value in ms (None when nothing is cached).
    pub async fn age_ms(&self) -> Option<i64> {
        self.cached
            .lock()
            .await
            .as_ref()
            .map(|(_, at)| self.clock.now_ms() - at)
    }

    /// Forget the cached value: the next `get` fetches afresh.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}

/// The webhook signing secrets, from a cached secret document (`{"secrets": ["whsec_…", …]}`).
pub struct WebhookKeys {
    secret: CachedSecret,
    /// The last document parsed and its keys: a request re-parses only when the cache fetched anew.
    parsed: std::sync::Mutex<Option<(Arc<str>, Arc<WebhookSecrets>)>>,
}

impl std::fmt::Debug for WebhookKeys {
    /// Redacted: the parse cache holds the secret document.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookKeys({}, value redacted)", self.secret.id())
    }
}

impl WebhookKeys {
    pub fn new(secret: CachedSecret) -> Self {
        WebhookKeys {
            secret,
            parsed: std::sync::Mutex::new(None),
        }
    }

    pub async fn current(&self) -> Result<Arc<WebhookSecrets>, String> {
        let doc = self
            .secret
            .get()
            .await
            .map_err(|e| format!("webhook signing secret unavailable: {e}"))?;
        let mut parsed = self.parsed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seen, keys)) = parsed.as_ref()
            && Arc::ptr_eq(seen, &doc)
        {
            return Ok(keys.clone());
        }
        let keys = Arc::new(WebhookSecrets::from_document(&doc).map_err(|e| e.to_string())?);
        *parsed = Some((doc, keys.clone()));
        Ok(keys)
    }

    /// After a signature mismatch: refetch when the cached copy is older than `min_age` (rotation), and
    /// say whether anything was refetched.
    pub async fn refresh_if_older_than(&self, min_age: Duration) -> bool {
        match self.secret.age_ms().await {
            Some(age) if age < min_age.as_millis() as i64 => false,
            _ => {
                self.secret.invalidate().await;
                true
            }
        }
    }
}

/// The ServiceNow secret document:
/// `{"instance_url": "https://x.service-now.com", "auth": "basic" | "oauth_password" |
/// "oauth_client_credentials", "username", "password", "client_id", "client_secret"}`.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceNowSettings {
    pub instance_url: String,
    pub credentials: Credentials,
}

impl std::fmt::Debug for ServiceNowSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceNowSettings")
            .field("instance_url", &self.instance_url)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl ServiceNowSettings {
    pub fn from_document(doc: &str) -> Result<ServiceNowSettings, String> {
        let v: serde_json::Value =
            serde_json::from_str(doc).map_err(|e| format!("ServiceNow secret is not a JSON object: {e}"))?;
        let field = |k: &str| -> Result<String, String> {
            v.get(k)
                .and_then(|x| x.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| format!("ServiceNow secret lacks \"{k}\""))
        };
        let instance_url = field("instance_url")?;
        let auth = v.get("auth").and_then(|x| x.as_str()).unwrap_or("basic");
        let credentials = match auth {
            "basic" => Credentials::Basic {
                username: field("username")?,
                password: field("password")?,
            },
            "oauth_password" => Credentials::OAuthPassword {
                client_id: field("client_id")?,
                client_secret: field("client_secret")?,
                username: field("username")?,
                password: field("password")?,
            },
            "oauth_client_credentials" => Credentials::OAuthClientCredentials {
                client_id: field("client_id")?,
                client_secret: field("client_secret")?,
            },
            other => {
                return Err(format!(
                    "ServiceNow secret has unknown auth {other:?} (basic, oauth_password, oauth_client_credentials)"
                ));
            }
        };
        Ok(ServiceNowSettings {
            instance_url,
            credentials,
        })
    }
}

/// Credentials read from the ServiceNow secret on demand; a 401 makes the next call refetch the secret.
pub struct SecretCredentials {
    secret: Arc<CachedSecret>,
}

impl SecretCredentials {
    pub fn new(secret: Arc<CachedSecret>) -> Self {
        SecretCredentials { secret }
    }
}

#[async_trait]
impl CredentialSource for SecretCredentials {
    async fn credentials(&self) -> Result<Credentials, ClientError> {
        let doc = self
            .secret
            .get()
            .await
            .map_err(|e| ClientError::CredentialsUnavailable(e.to_string()))?;
        ServiceNowSettings::from_document(&doc)
            .map(|s| s.credentials)
            .map_err(ClientError::InvalidCredentials)
    }

    async fn invalidate(&self) {
        self.secret.invalidate().await;
    }
}

/// The ServiceNow client, built on first use (the instance URL is in the secret; fetching it lazily keeps
/// cold starts short).
pub struct ServiceNowTarget {
    secret: Option<Arc<CachedSecret>>,
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
        secret: Arc<CachedSecret>,
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
        self.client
            .get_or_try_init(|| async {
                let secret = self.secret.as_ref().ok_or_else(|| Outcome::Retryable {
                    retry_after: None,
                    reason: "no ServiceNow target configured".into(),
                })?;
                let doc = secret.get().await.map_err(|e| Outcome::Retryable {
                    retry_after: None,
                    reason: format!("ServiceNow secret unavailable: {e}"),
                })?;
                let settings = ServiceNowSettings::from_document(&doc).map_err(|e| {
                    tracing::error!(secret = %secret.id(), error = %e, "ServiceNow secret is malformed");
                    Outcome::Retryable {
                        retry_after: None,
                        reason: e,
                    }
                })?;
                let creds: Arc<dyn CredentialSource> = Arc::new(SecretCredentials::new(secret.clone()));
                ServiceNowClient::new((self.config)(&settings.instance_url), creds).map_err(|e| {
                    tracing::error!(error = %e, "cannot build the ServiceNow client");
                    Outcome::Retryable {
                        retry_after: None,
                        reason: e.to_string(),
                    }
                })
            })
            .await
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_ports::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountingStore {
        value: std::sync::Mutex<String>,
        fetches: AtomicUsize,
    }

    #[async_trait]
    impl SecretStore for CountingStore {
        async fn fetch(&self, id: &str) -> Result<String, PortError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            if id == "missing" {
                return Err(PortError::NotFound(id.into()));
            }
            Ok(self.value.lock().unwrap().clone())
        }
    }

    #[tokio::test]
    async fn cached_secrets_expire_and_can_be_invalidated() {
        let store = Arc::new(CountingStore {
            value: "one".to_string().into(),
            fetches: AtomicUsize::new(0),
        });
        let clock = Arc::new(ManualClock::new(0));
        let s = CachedSecret::new(store.clone(), "id", Duration::from_secs(60), clock.clone());
        assert_eq!(&*s.get().await.unwrap(), "one");
        *store.value.lock().unwrap() = "two".into();
        assert_eq!(&*s.get().await.unwrap(), "one");
        clock.advance(Duration::from_secs(61));
        assert_eq!(&*s.get().await.unwrap(), "two");
        *store.value.lock().unwrap() = "three".into();
        s.invalidate().await;
        assert_eq!(&*s.get().await.unwrap(), "three");
        assert_eq!(store.fetches.load(Ordering::SeqCst), 3);
        let missing = CachedSecret::new(store, "missing", Duration::from_secs(1), clock);
        assert!(matches!(missing.get().await, Err(PortError::NotFound(_))));
        assert!(!format!("{missing:?}").contains("three"));
    }

    #[tokio::test]
    async fn webhook_keys_are_parsed_once_per_document_and_follow_a_rotation() {
        let a = crate::signature::generate_secret();
        let b = crate::signature::generate_secret();
        let doc = |list: &[&str]| serde_json::json!({ "secrets": list }).to_string();
        let store = Arc::new(CountingStore {
            value: doc(&[&a]).into(),
            fetches: AtomicUsize::new(0),
        });
        let clock = Arc::new(ManualClock::new(0));
        let keys = WebhookKeys::new(CachedSecret::new(
            store.clone(),
            "wh",
            Duration::from_secs(60),
            clock.clone(),
        ));
        let first = keys.current().await.unwrap();
        let shown = format!("{keys:?}");
        assert!(!shown.contains(&a[6..12]) && shown.contains("redacted"), "{shown}");
        assert!(
            Arc::ptr_eq(&first, &keys.current().await.unwrap()),
            "an unchanged document is not parsed again"
        );
        let signed_a = WebhookSecrets::parse(&[&a]).unwrap().sign("msg_1", 100, b"{}");
        assert!(
            first
                .verify(Some("msg_1"), Some("100"), Some(&signed_a), b"{}", 100)
                .is_ok()
        );

        // rotation: the store now holds the new secret beside the old one
        *store.value.lock().unwrap() = doc(&[&b, &a]);
        clock.advance(Duration::from_secs(61));
        let rotated = keys.current().await.unwrap();
        assert_eq!(rotated.len(), 2);
        let signed_b = WebhookSecrets::parse(&[&b]).unwrap().sign("msg_2", 100, b"{}");
        assert!(
            rotated
                .verify(Some("msg_2"), Some("100"), Some(&signed_b), b"{}", 100)
                .is_ok()
        );
        assert!(
            rotated
                .verify(Some("msg_1"), Some("100"), Some(&signed_a), b"{}", 100)
                .is_ok()
        );
        assert!(
            first
                .verify(Some("msg_2"), Some("100"), Some(&signed_b), b"{}", 100)
                .is_err()
        );

        // a broken document is an error, not a silently kept old key set
        *store.value.lock().unwrap() = "{\"secrets\": [\"short\"]}".into();
        clock.advance(Duration::from_secs(61));
        assert!(keys.current().await.unwrap_err().contains("shorter than 16 bytes"));
    }

    #[test]
    fn servicenow_secret_documents_parse_per_auth_kind_and_name_missing_fields() {
        let basic = ServiceNowSettings::from_document(
            r#"{"instance_url":"https://x.service-now.com","username":"relay","password":"pw"}"#,
        )
        .unwrap();
        assert_eq!(basic.credentials.kind(), "basic");
        assert!(!format!("{basic:?}").contains("pw\""));
        let cc = ServiceNowSettings::from_document(
            r#"{"instance_url":"https://x","auth":"oauth_client_credentials","client_id":"c","client_secret":"s"}"#,
        )
        .unwrap();
        assert_eq!(cc.credentials.kind(), "oauth_client_credentials");
        let e = ServiceNowSettings::from_document(
            r#"{"instance_url":"https://x","auth":"oauth_password","client_id":"c"}"#,
        )
        .unwrap_err();
        assert!(e.contains("lacks \"client_secret\""), "{e}");
        assert!(
            ServiceNowSettings::from_document(r#"{"instance_url":"https://x","auth":"kerberos"}"#)
                .unwrap_err()
                .contains("unknown auth")
        );
        assert!(
            ServiceNowSettings::from_document("nope")
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(
            ServiceNowSettings::from_document("{}")
                .unwrap_err()
                .contains("instance_url")
        );
    }

    #[tokio::test]
    async fn a_target_without_a_usable_secret_is_retryable() {
        let store = Arc::new(CountingStore {
            value: "{}".to_string().into(),
            fetches: AtomicUsize::new(0),
        });
        let clock = Arc::new(ManualClock::new(0));
        let t = ServiceNowTarget::from_secret(
            Arc::new(CachedSecret::new(store, "sn", Duration::from_secs(60), clock)),
            |url: &str| ClientConfig::new(url),
        );
        match t.client().await {
            Err(Outcome::Retryable { reason, .. }) => assert!(reason.contains("instance_url")),
            other => panic!("unexpected {other:?}"),
        }
    }
}
