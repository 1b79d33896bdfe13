//! Opening the file (schema versions, bad paths), two stores on one file, secrets and notifications.

use std::sync::Arc;
use std::time::Duration;

use relay_local::{LocalError, LocalSecretStore, LocalStore, SCHEMA_VERSION, StoreOptions};
use relay_ports::conformance::sample_entry;
use relay_ports::{
    AlertQueue, Claim, Clock, DeliveryState, FailureNotice, Ledger, Notifier, PortError, SecretStore, SystemClock,
};

#[test]
fn a_new_file_is_in_wal_mode_at_the_current_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    let store = LocalStore::open(&path).unwrap();
    assert_eq!(store.path(), path);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!((mode.as_str(), version), ("wal", SCHEMA_VERSION));
    drop(store);
    LocalStore::open(&path).expect("reopening a current file migrates nothing and works");
}

#[tokio::test]
async fn a_version_3_file_keeps_its_queued_messages_and_gains_priorities() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    drop(LocalStore::open(&path).unwrap());
    {
        // the file as a version-3 build left it: no priority column, one message waiting
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP INDEX queue_messages_priority;
             DROP INDEX ledger_watched;
             ALTER TABLE queue_messages DROP COLUMN priority;
             INSERT INTO queue_messages (queue, message_id, body, sent_at_ms, visible_at_ms)
             VALUES ('realtime', 'old-1', 'from v3', 0, 0);
             PRAGMA user_version = 3;",
        )
        .unwrap();
    }
    let store = LocalStore::open(&path).unwrap();
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    // version 5's index of watched records is there (the sync's query names it)
    assert!(
        relay_ports::Ledger::watched(&store.ledger(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let realtime = store.queue("realtime");
    realtime
        .clone()
        .critical_lane()
        .send("critical", Duration::ZERO)
        .await
        .unwrap();
    let got = realtime.receive(10, Duration::ZERO).await.unwrap();
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(
        bodies,
        ["critical", "from v3"],
        "the old message is readable, behind the critical one"
    );
}

#[test]
fn a_file_from_a_newer_build_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    drop(LocalStore::open(&path).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    match LocalStore::open(&path) {
        Err(e @ LocalError::SchemaTooNew { found: 99, .. }) => {
            assert!(e.to_string().contains("schema version 99"), "{e}")
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn a_missing_directory_or_a_non_database_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    match LocalStore::open(dir.path().join("nope/relay.db")) {
        Err(e @ LocalError::Open { .. }) => assert!(e.to_string().contains("does not exist"), "{e}"),
        other => panic!("{other:?}"),
    }
    let junk = dir.path().join("junk.db");
    std::fs::write(
        &junk,
        b"this is not a database, just some text that is long enough to matter..........",
    )
    .unwrap();
    assert!(LocalStore::open(&junk).is_err(), "a non-database file must not open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_grant_one_claim() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = LocalStore::open(&path).unwrap().ledger();
    let b = LocalStore::open(&path).unwrap().ledger();
    for round in 0..20 {
        let now = SystemClock.now_ms();
        let e = sample_entry(&format!("shared-{round}"), now);
        a.accept(&e).await.unwrap();
        let claims = futures::future::join_all((0..10).map(|i| {
            let ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = e.alert_id.clone();
            async move { ledger.claim(&id, now + 1, 60_000).await.unwrap() }
        }))
        .await;
        let winners = claims.iter().filter(|c| matches!(c, Claim::Claimed(_))).count();
        assert_eq!(winners, 1, "round {round}: {claims:?}");
        assert_eq!(b.get(&e.alert_id).await.unwrap().unwrap().attempts, 1);
    }
}

#[tokio::test]
async fn expired_entries_are_listed_nowhere_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("p.db")).unwrap();
    let ledger = store.ledger();
    let now = SystemClock.now_ms();
    let mut old = sample_entry("old", now - 10 * 86_400_000);
    old.expires_at_s = now / 1000 - 1;
    ledger.accept(&old).await.unwrap();
    ledger.accept(&sample_entry("fresh", now)).await.unwrap();
    let accepted = ledger.list_in_state(DeliveryState::Accepted, 10).await.unwrap();
    assert_eq!(
        accepted.iter().map(|e| e.alert_id.as_str()).collect::<Vec<_>>(),
        ["fresh"]
    );
    assert_eq!(ledger.purge_expired().await.unwrap(), 1);
    assert_eq!(ledger.purge_expired().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_past_the_busy_timeout_is_unavailable_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.db");
    let options = StoreOptions {
        busy_timeout: Duration::from_millis(100),
        ..StoreOptions::default()
    };
    let store = LocalStore::open_with(&path, options).unwrap();
    let (ledger, queue) = (store.ledger(), store.queue("realtime"));
    // Another process holds the write lock.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    match ledger.accept(&sample_entry("locked-out", SystemClock.now_ms())).await {
        Err(PortError::Unavailable(m)) => assert!(m.contains("locked") || m.contains("busy"), "{m}"),
        other => panic!("a write blocked past busy_timeout must be Unavailable, got {other:?}"),
    }
    assert!(matches!(
        queue.send("x", Duration::ZERO).await,
        Err(PortError::Unavailable(_))
    ));
    other.execute_batch("COMMIT").unwrap();
    assert_eq!(
        ledger.get("locked-out").await.unwrap(),
        None,
        "a failed accept wrote nothing"
    );
    assert_eq!(queue.depth().await.unwrap(), 0, "a failed send wrote nothing");
    assert_eq!(
        ledger
            .accept(&sample_entry("locked-out", SystemClock.now_ms()))
            .await
            .unwrap(),
        relay_ports::Accept::New,
        "the retry after the lock is released succeeds"
    );
}

fn notice(alert_id: &str) -> FailureNotice {
    FailureNotice {
        alert_id: alert_id.into(),
        severity: "critical".into(),
        record_type: "security_incident".into(),
        table: "sn_si_incident".into(),
        rule: "insider-threat".into(),
        correlation_id: format!("relay:{alert_id}"),
        error_class: "permanent".into(),
        error: "ACL denied".into(),
        attempts: 3,
        first_received_at_ms: 1_750_000_000_000,
    }
}

#[tokio::test]
async fn failure_notices_are_stored_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("n.db")).unwrap();
    let notifier = store.notifier();
    notifier.delivery_failed(&notice("a-1")).await.unwrap();
    notifier.delivery_failed(&notice("a-2")).await.unwrap();
    notifier.delivery_failed(&notice("a-1")).await.unwrap();
    let recent = store.recent_notifications(2).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert!(recent[0].id > recent[1].id, "newest first");
    assert_eq!(recent[0].notice, notice("a-1"));
    let for_a1 = store.notifications_for("a-1").await.unwrap();
    assert_eq!(for_a1.len(), 2);
    assert!(store.notifications_for("nobody").await.unwrap().is_empty());
}

#[tokio::test]
async fn secrets_come_from_the_file_or_the_environment_and_unknown_ids_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets.json");
    std::fs::write(
        &file,
        r#"{"servicenow": {"instance_url": "https://x.service-now.com", "auth": "basic", "username": "relay",
            "password": "relay-password"}, "plain": "value-1", "relay-local-env-test": "from-file"}"#,
    )
    .unwrap();
    let secrets = LocalSecretStore::from_json_file(&file)
        .unwrap()
        .with_env_prefix("RELAY_LOCAL_TEST_SECRET_");
    let sn: serde_json::Value = serde_json::from_str(&secrets.fetch("servicenow").await.unwrap()).unwrap();
    assert_eq!(sn["username"], "relay");
    assert_eq!(secrets.fetch("plain").await.unwrap(), "value-1");

    assert_eq!(
        secrets.env_var_name("relay-local-env-test").unwrap(),
        "RELAY_LOCAL_TEST_SECRET_RELAY_LOCAL_ENV_TEST"
    );
    // SAFETY: no other test in this binary reads or writes this variable.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("RELAY_LOCAL_TEST_SECRET_RELAY_LOCAL_ENV_TEST", "from-env")
    };
    assert_eq!(
        secrets.fetch("relay-local-env-test").await.unwrap(),
        "from-env",
        "the environment wins"
    );

    match secrets.fetch("missing").await {
        Err(PortError::NotFound(m)) => assert!(m.contains("RELAY_LOCAL_TEST_SECRET_MISSING"), "{m}"),
        other => panic!("{other:?}"),
    }
    let debug = format!("{secrets:?}");
    assert!(
        !debug.contains("relay-password") && !debug.contains("value-1"),
        "Debug must redact: {debug}"
    );
    assert!(matches!(
        LocalSecretStore::new()
            .with_secret("k", "v")
            .fetch("k")
            .await
            .as_deref(),
        Ok("v")
    ));
}

#[test]
fn a_bad_secrets_file_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = LocalSecretStore::from_json_file(dir.path().join("none.json")).unwrap_err();
    assert!(missing.to_string().contains("none.json"), "{missing}");
    assert!(
        LocalSecretStore::from_json_str("[1,2]")
            .unwrap_err()
            .contains("top level must be a JSON object")
    );
    assert!(
        LocalSecretStore::from_json_str("{")
            .unwrap_err()
            .contains("not valid JSON")
    );
    assert!(
        LocalSecretStore::from_json_str(r#"{"a": null}"#)
            .unwrap_err()
            .contains("secret \"a\" is null")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_a_hand_moved_clock_judges_expiry_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(relay_ports::ManualClock::new(1_000_000_000_000));
    let options = StoreOptions {
        clock: Arc::clone(&clock) as Arc<dyn Clock>,
        poll_interval: Duration::from_millis(5),
        ..StoreOptions::default()
    };
    let ledger = LocalStore::open_with(dir.path().join("c.db"), options)
        .unwrap()
        .ledger();
    let e = sample_entry("clocked", clock.now_ms()); // expires in 7 days
    ledger.accept(&e).await.unwrap();
    clock.advance(Duration::from_secs(6 * 86_400));
    assert!(ledger.get("clocked").await.unwrap().is_some());
    clock.advance(Duration::from_secs(2 * 86_400));
    assert!(
        ledger.get("clocked").await.unwrap().is_none(),
        "expired by the store's clock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_call_sharing_a_transaction_does_not_undo_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = LocalStore::open(dir.path().join("g.db")).unwrap().ledger();
    let now = SystemClock.now_ms();
    let calls = (0..200).map(|i| {
        let ledger = ledger.clone();
        async move {
            if i % 2 == 0 {
                ledger.accept(&sample_entry(&format!("ok-{i}"), now)).await.map(|_| ())
            } else {
                ledger.fail(&format!("missing-{i}"), 0, "permanent", "x", now).await
            }
        }
    });
    let results = futures::future::join_all(calls).await;
    for (i, r) in results.iter().enumerate() {
        if i % 2 == 0 {
            assert!(r.is_ok(), "{r:?}");
            assert!(
                ledger.get(&format!("ok-{i}")).await.unwrap().is_some(),
                "ok-{i} must be stored"
            );
        } else {
            assert!(matches!(r, Err(PortError::NotFound(_))), "{r:?}");
        }
    }
}

#[cfg(unix)]
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_wal_and_shm_are_created_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a/b");
    relay_local::create_private_dir(&data).unwrap();
    assert_eq!(mode_of(&data), 0o700);
    let path = data.join("relay.db");
    let store = LocalStore::open(&path).unwrap();
    store.queue("realtime").send("{}", Duration::ZERO).await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        assert!(file.exists(), "{} exists while the store is open", file.display());
        assert_eq!(mode_of(&file), 0o600, "{}", file.display());
    }
}

#[cfg(unix)]
#[test]
fn a_database_other_users_can_read_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    drop(LocalStore::open(&path).unwrap());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    match LocalStore::open(&path) {
        Err(e @ LocalError::NotPrivate { mode: 0o644, .. }) => {
            let text = e.to_string();
            assert!(text.contains("other users can read it"), "{text}");
            assert!(text.contains(&format!("chmod 600 {}", path.display())), "{text}");
        }
        other => panic!("expected NotPrivate, got {other:?}"),
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    LocalStore::open(&path).expect("private again: opens");

    // a leftover world-readable WAL is refused as well, by its own name (a database this process never
    // opened, so no writer thread of an earlier handle is still closing the files the test rewrites)
    let path = dir.path().join("copied.db");
    let wal = dir.path().join("copied.db-wal");
    std::fs::write(&wal, b"").unwrap();
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o666)).unwrap();
    match LocalStore::open(&path) {
        Err(LocalError::NotPrivate { path: p, .. }) => assert_eq!(p, wal),
        other => panic!("expected NotPrivate for the WAL, got {other:?}"),
    }
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o600)).unwrap();
    LocalStore::open(&path).expect("private again: opens");
}
