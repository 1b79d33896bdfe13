use super::*;
use relay_ports::ManualClock;
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct CountingStore {
    value: std::sync::Mutex<String>,
    fetches: AtomicUsize,
    down: AtomicBool,
}

impl CountingStore {
    fn new(value: &str) -> Arc<Self> {
        Arc::new(CountingStore {
            value: value.to_string().into(),
            fetches: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        })
    }
    fn set(&self, value: &str) {
        *self.value.lock().unwrap() = value.into();
    }
    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SecretStore for CountingStore {
    async fn fetch(&self, id: &str) -> Result<String, PortError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if id == "missing" {
            return Err(PortError::NotFound(id.into()));
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(PortError::Unavailable("secret service down".into()));
        }
        Ok(self.value.lock().unwrap().clone())
    }
}

fn doc(list: &[&str]) -> String {
    serde_json::json!({ "secrets": list }).to_string()
}

#[tokio::test]
async fn the_parsed_value_is_cached_until_the_ttl_and_refetched_after() {
    let a = crate::signature::generate_secret();
    let b = crate::signature::generate_secret();
    let store = CountingStore::new(&doc(&[&a]));
    let clock = Arc::new(ManualClock::new(0));
    let keys = WebhookKeys::new(store.clone(), "wh", Duration::from_secs(60), clock.clone());
    let first = keys.get().await.unwrap();
    assert!(
        Arc::ptr_eq(&first, &keys.get().await.unwrap()),
        "the same parsed value while fresh"
    );
    assert_eq!(store.fetches(), 1);

    store.set(&doc(&[&b, &a]));
    clock.advance(Duration::from_secs(61));
    let rotated = keys.get().await.unwrap();
    assert_eq!(rotated.len(), 2);
    assert_eq!(store.fetches(), 2);
    let signed_b = WebhookSecrets::parse(&[&b]).unwrap().sign("msg_2", 100, b"{}");
    assert!(
        rotated
            .verify(Some("msg_2"), Some("100"), Some(&signed_b), b"{}", 100)
            .is_ok()
    );
    assert!(
        first
            .verify(Some("msg_2"), Some("100"), Some(&signed_b), b"{}", 100)
            .is_err()
    );
}

#[tokio::test]
async fn a_refresh_is_granted_only_to_a_copy_old_enough() {
    let a = crate::signature::generate_secret();
    let store = CountingStore::new(&doc(&[&a]));
    let clock = Arc::new(ManualClock::new(0));
    let keys = WebhookKeys::new(store.clone(), "wh", Duration::from_secs(300), clock.clone());
    keys.get().await.unwrap();
    // a burst of bad signatures within a minute of the fetch forces no refetch
    for _ in 0..50 {
        assert!(!keys.refresh_if_older_than(Duration::from_secs(60)).await);
        keys.get().await.unwrap();
    }
    assert_eq!(store.fetches(), 1);
    clock.advance(Duration::from_secs(61));
    assert!(keys.refresh_if_older_than(Duration::from_secs(60)).await);
    keys.get().await.unwrap();
    assert_eq!(store.fetches(), 2);
}

#[tokio::test]
async fn while_the_store_is_down_the_last_good_value_is_served_and_fetches_are_spaced() {
    let a = crate::signature::generate_secret();
    let store = CountingStore::new(&doc(&[&a]));
    let clock = Arc::new(ManualClock::new(0));
    let keys = WebhookKeys::new(store.clone(), "wh", Duration::from_secs(60), clock.clone());
    let good = keys.get().await.unwrap();
    store.down.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(61));
    for _ in 0..20 {
        assert!(Arc::ptr_eq(&good, &keys.get().await.unwrap()));
    }
    assert_eq!(
        store.fetches(),
        2,
        "one failed fetch, then the cached value without asking again"
    );
    clock.advance(Duration::from_secs(2));
    keys.get().await.unwrap();
    assert_eq!(store.fetches(), 3, "tried again after the hold");
}

#[tokio::test]
async fn without_a_good_value_errors_name_the_secret_and_the_problem() {
    let store = CountingStore::new("{\"secrets\": [\"short\"]}");
    let clock = Arc::new(ManualClock::new(0));
    let keys = WebhookKeys::new(store.clone(), "wh", Duration::from_secs(60), clock.clone());
    let e = keys.get().await.unwrap_err();
    assert!(matches!(e, SecretError::Malformed { .. }));
    assert!(
        e.to_string().contains("wh") && e.to_string().contains("shorter than 16 bytes"),
        "{e}"
    );
    let missing = WebhookKeys::new(store, "missing", Duration::from_secs(1), clock);
    let e = missing.get().await.unwrap_err();
    assert!(
        matches!(
            e,
            SecretError::Unavailable {
                source: PortError::NotFound(_),
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn servicenow_secret_documents_parse_per_auth_kind_and_name_missing_fields() {
    let basic = ServiceNowSettings::from_document(
        r#"{"instance_url":"https://x.service-now.com","username":"relay","password":"pw-SECRET"}"#,
    )
    .unwrap();
    assert_eq!(basic.credentials.kind(), "basic");
    assert!(!format!("{basic:?}").contains("pw-SECRET"));
    match &basic.credentials {
        Credentials::Basic { password, .. } => assert_eq!(password.expose_secret(), "pw-SECRET"),
        other => panic!("{other:?}"),
    }
    let cc = ServiceNowSettings::from_document(
        r#"{"instance_url":"https://x","auth":"oauth_client_credentials","client_id":"c","client_secret":"s"}"#,
    )
    .unwrap();
    assert_eq!(cc.credentials.kind(), "oauth_client_credentials");
    let e =
        ServiceNowSettings::from_document(r#"{"instance_url":"https://x","auth":"oauth_password","client_id":"c"}"#)
            .unwrap_err()
            .to_string();
    assert!(
        e.contains("lacks \"client_secret\"") && e.contains("oauth_password"),
        "{e}"
    );
    let e = ServiceNowSettings::from_document(r#"{"instance_url":"https://x","auth":"kerberos"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("kerberos") && e.contains("oauth_client_credentials"), "{e}");
    assert!(matches!(
        ServiceNowSettings::from_document("nope"),
        Err(ServiceNowSecretError::Invalid(_))
    ));
    let e = ServiceNowSettings::from_document("{}").unwrap_err().to_string();
    assert!(e.contains("instance_url"), "{e}");
    assert!(matches!(
        ServiceNowSettings::from_document(r#"{"instance_url":" ","username":"u","password":"p"}"#),
        Err(ServiceNowSecretError::EmptyUrl)
    ));
}

#[tokio::test]
async fn a_target_without_a_usable_secret_is_retryable() {
    let store = CountingStore::new("{}");
    let clock = Arc::new(ManualClock::new(0));
    let t = ServiceNowTarget::from_secret(
        Arc::new(CachedSecret::new(store, "sn", Duration::from_secs(60), clock)),
        |url: &str| ClientConfig::new(url),
    );
    match t.client().await {
        Err(Outcome::Retryable { reason, .. }) => assert!(reason.contains("instance_url"), "{reason}"),
        other => panic!("unexpected {other:?}"),
    }
}
