//! A burst of bad signatures cannot make the ingest function hammer Secrets Manager (moto_server): while
//! the cached secret is younger than the refresh age no request refetches it, and when the refetch fails the
//! cached secret keeps being served (valid webhooks are still accepted) and the failed fetch is not
//! repeated per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use relay_e2e::lambda::{SIGNING_SECRET, Stack, StackOptions, alert_body};
use relay_lambda::ingest;
use relay_pipeline::WebhookSecrets;
use relay_pipeline::ingest::WebhookRequest;
use relay_ports::{Clock, ManualClock, PortError, SecretStore, SystemClock};

/// Counts the fetches of each secret it passes on to the real store.
struct Counting {
    inner: Arc<dyn SecretStore>,
    fetches: AtomicUsize,
    failures: AtomicUsize,
}

#[async_trait]
impl SecretStore for Counting {
    async fn fetch(&self, id: &str) -> Result<String, PortError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let r = self.inner.fetch(id).await;
        if r.is_err() {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
}

async fn post(ingest: &relay_pipeline::Ingest, keys: &WebhookSecrets, body: &[u8], id: &str, now_s: i64) -> u16 {
    let ts = now_s.to_string();
    let signature = keys.sign(id, now_s, body);
    ingest
        .accept(
            WebhookRequest {
                content_type: Some("application/json"),
                webhook_id: Some(id),
                webhook_timestamp: Some(&ts),
                webhook_signature: Some(&signature),
                body,
            },
            "https://api.example.com",
        )
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature_bursts_cannot_force_secret_refetches_and_a_failing_refresh_serves_the_cache() {
    let Some(stack) = Stack::start(StackOptions::default()).await else {
        return;
    };
    let counting = Arc::new(Counting {
        inner: stack.ports.secrets.clone(),
        fetches: AtomicUsize::new(0),
        failures: AtomicUsize::new(0),
    });
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let mut ports = stack.ports.clone();
    ports.secrets = counting.clone();
    ports.clock = clock.clone();
    let ingest = ingest::ingest(&stack.settings, &ports).await.expect("ingest pipeline");
    let good = WebhookSecrets::parse(&[SIGNING_SECRET]).unwrap();
    let forged = WebhookSecrets::parse(&[relay_pipeline::signature::generate_secret().as_str()]).unwrap();
    let now_s = || clock.now_ms() / 1000;

    // the first webhook fetches the secret once
    let body = alert_body("burst-1", "policy_violation", "critical", "E1");
    assert_eq!(post(&ingest, &good, &body, "msg-1", now_s()).await, 202);
    assert_eq!(counting.fetches.load(Ordering::SeqCst), 1);

    // 300 forged signatures at once: all 401, no refetch (the cache is younger than the refresh age)
    let burst = futures_burst(&ingest, &forged, 300, now_s()).await;
    assert!(burst.iter().all(|s| *s == 401), "{burst:?}");
    assert_eq!(
        counting.fetches.load(Ordering::SeqCst),
        1,
        "a young cache is never refetched"
    );

    // past the refresh age, with Secrets Manager failing (the secret is gone): one refetch is tried, the
    // cached secret keeps being served, and the burst does not turn into one fetch per request
    clock.advance(stack.settings.secret_ttl.min(Duration::from_secs(61)));
    aws_sdk_secretsmanager::Client::new(&stack.sdk)
        .delete_secret()
        .secret_id(&stack.settings.webhook_secret_arn)
        .force_delete_without_recovery(true)
        .send()
        .await
        .expect("delete the webhook secret in moto");
    let burst = futures_burst(&ingest, &forged, 300, now_s()).await;
    assert!(burst.iter().all(|s| *s == 401), "{burst:?}");
    let after_burst = counting.fetches.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&after_burst),
        "300 forged requests caused {} fetches",
        after_burst - 1
    );
    assert!(
        counting.failures.load(Ordering::SeqCst) >= 1,
        "the refresh really failed"
    );
    let body = alert_body("burst-2", "policy_violation", "critical", "E1");
    assert_eq!(
        post(&ingest, &good, &body, "msg-2", now_s()).await,
        202,
        "a valid webhook is accepted with the cached secret while the refresh fails"
    );
    assert_eq!(
        counting.fetches.load(Ordering::SeqCst),
        after_burst,
        "and costs no fetch"
    );

    // a minute of bursts, one per second: at most one fetch per second, not one per request
    for _ in 0..60 {
        clock.advance(Duration::from_secs(1));
        futures_burst(&ingest, &forged, 20, now_s()).await;
    }
    let total = counting.fetches.load(Ordering::SeqCst) - after_burst;
    assert!(
        total <= 60 * 2,
        "1,200 forged requests over 60 s caused {total} fetches"
    );
}

/// `n` forged webhooks sent concurrently; their statuses.
async fn futures_burst(ingest: &relay_pipeline::Ingest, keys: &WebhookSecrets, n: usize, now_s: i64) -> Vec<u16> {
    let body = alert_body("forged", "policy_violation", "critical", "E9");
    let calls = (0..n).map(|i| {
        let body = body.clone();
        async move { post(ingest, keys, &body, &format!("forged-{i}"), now_s).await }
    });
    futures::future::join_all(calls).await
}
