use super::*;
use relay_ports::memory::{MemoryLedger, MemoryNotifier, MemoryQueue, MemorySecrets};
use std::time::Duration;

fn settings() -> Settings {
    Settings::from_lookup(|k| {
        (!k.starts_with("CALLBACK_") && (k.ends_with("_URL") || k.ends_with("_ARN") || k.ends_with("_TABLE")))
            .then(|| format!("test-{k}"))
    })
    .unwrap()
}

fn ports(secrets: MemorySecrets) -> Ports {
    let q = || Arc::new(MemoryQueue::new(Duration::from_secs(30)));
    let realtime = q();
    Ports {
        ledger: Arc::new(MemoryLedger::new()),
        // one queue for both lanes, as on a stack without a critical queue
        critical: realtime.clone(),
        realtime,
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

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
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
}

#[tokio::test]
async fn the_pipelines_build_without_fetching_any_secret() {
    // an empty secret store: init must not ask it for anything
    let p = ports(MemorySecrets::default());
    let s = settings();
    assert!(ingest::ingest(&s, &p).await.is_ok());
    let _ = deliver::delivery(&s, &p);
    let f = flush::flusher(&s, &p).unwrap().flusher;
    assert_eq!(f.settings.drain_budget, s.flush_budget);
    assert_eq!(
        f.settings.window,
        Duration::from_secs(Config::default_config().batch_window_seconds),
        "the flush groups by the config's batch window"
    );
}
