//! Adapter-specific behaviour on moto_server: secrets, notifications, limits, and error mapping.

use std::time::Duration;

use relay_aws::testing::{
    create_ledger_table, create_queue, create_queue_with_dlq, create_secret, create_topic, moto_endpoint, read_notices,
    rotate_secret, unique_name,
};
use relay_aws::{DynamoLedger, SecretsManagerStore, SnsNotifier, SqsQueue, sdk_config};
use relay_ports::conformance::{sample_entry, unique_id};
use relay_ports::{
    AlertQueue, Claim, Clock, FailureNotice, Ledger, Notifier, PortError, RecordRef, SecretStore, SystemClock,
};

fn notice(alert_id: &str) -> FailureNotice {
    FailureNotice {
        alert_id: alert_id.into(),
        severity: "critical".into(),
        record_type: "security_incident".into(),
        table: "sn_si_incident".into(),
        rule: "insider-threat-critical".into(),
        correlation_id: format!("relay:{alert_id}"),
        error_class: "permanent".into(),
        error: "Operation Failed: ACL denied create on sn_si_incident".into(),
        attempts: 1,
        first_received_at_ms: 1_718_000_000_000,
    }
}

// ---- Secrets Manager -------------------------------------------------------------------------------------

#[tokio::test]
async fn secret_is_fetched_by_arn_and_by_name_and_rotation_is_seen() {
    if moto_endpoint().is_none() {
        return;
    }
    let config = sdk_config().await;
    let value = r#"{"secrets":["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}"#;
    let arn = create_secret(&config, "webhook", value).await;
    let store = SecretsManagerStore::new(&config);
    assert_eq!(store.fetch(&arn).await.unwrap(), value);
    let name = arn.rsplit(':').next().unwrap().rsplit_once('-').unwrap().0.to_string();
    assert_eq!(
        store.fetch(&name).await.unwrap(),
        value,
        "a secret name works as well as its ARN"
    );

    let rotated = r#"{"secrets":["whsec_new","whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}"#;
    rotate_secret(&config, &arn, rotated).await;
    assert_eq!(
        store.fetch(&arn).await.unwrap(),
        rotated,
        "fetch must return the current version"
    );
}

#[tokio::test]
async fn missing_secret_is_not_found_and_empty_id_is_rejected() {
    if moto_endpoint().is_none() {
        return;
    }
    let store = SecretsManagerStore::new(&sdk_config().await);
    let missing = unique_name("no-such-secret");
    match store.fetch(&missing).await {
        Err(PortError::NotFound(msg)) => assert!(msg.contains(&missing), "the error names the secret: {msg}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(store.fetch("").await, Err(PortError::Rejected(_))));
}

// ---- SNS -------------------------------------------------------------------------------------------------

#[tokio::test]
async fn failure_notice_is_published_with_subject_and_attributes() {
    if moto_endpoint().is_none() {
        return;
    }
    let config = sdk_config().await;
    let topic = create_topic(&config, "failures").await;
    let notifier = SnsNotifier::new(&config, &topic.topic_arn);
    let sent = notice(&unique_id("notice"));
    notifier.delivery_failed(&sent).await.unwrap();

    let got = read_notices(&config, &topic, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "one notification expected: {got:?}");
    let n = &got[0];
    assert_eq!(n.notice, sent, "the message is the notice as JSON");
    assert_eq!(
        n.subject.as_deref(),
        Some(
            format!(
                "Alert delivery failed (critical security_incident, permanent): {}",
                sent.alert_id
            )
            .as_str()
        )
    );
    assert_eq!(n.attributes.get("severity").map(String::as_str), Some("critical"));
    assert_eq!(n.attributes.get("error_class").map(String::as_str), Some("permanent"));
    assert_eq!(
        n.attributes.get("record_type").map(String::as_str),
        Some("security_incident")
    );
    let json: serde_json::Value = serde_json::from_str(&n.message).unwrap();
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert!(
        !keys.iter().any(|k| k.contains("payload")),
        "no payload in the notice: {keys:?}"
    );
}

#[tokio::test]
async fn publishing_to_a_missing_topic_fails_clearly() {
    if moto_endpoint().is_none() {
        return;
    }
    let config = sdk_config().await;
    let arn = format!("arn:aws:sns:us-east-1:123456789012:{}", unique_name("no-topic"));
    let err = SnsNotifier::new(&config, &arn)
        .delivery_failed(&notice("a-1"))
        .await
        .unwrap_err();
    match err {
        PortError::NotFound(msg) => assert!(msg.contains(&arn), "the error names the topic: {msg}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

// ---- SQS limits ------------------------------------------------------------------------------------------

#[tokio::test]
async fn long_delays_are_capped_not_refused() {
    if moto_endpoint().is_none() {
        return;
    }
    let config = sdk_config().await;
    let queue = create_queue(&config, "caps", 30).await.adapter(&config);
    queue
        .send("later", Duration::from_secs(3600))
        .await
        .expect("a delay over 900 s is capped");
    assert_eq!(queue.depth().await.unwrap(), 1);
    assert!(
        queue.receive(10, Duration::ZERO).await.unwrap().is_empty(),
        "still delayed"
    );

    queue.send("now", Duration::ZERO).await.unwrap();
    let m = queue
        .receive(1, Duration::from_secs(5))
        .await
        .unwrap()
        .pop()
        .expect("receive");
    queue
        .change_visibility(&m.receipt, Duration::from_secs(11 * 3600))
        .await
        .expect("an 11 h visibility is accepted");
    assert!(
        queue.receive(10, Duration::ZERO).await.unwrap().is_empty(),
        "invisible for 11 h"
    );
    assert_eq!(
        queue.receive(0, Duration::ZERO).await.unwrap(),
        vec![],
        "max = 0 receives nothing"
    );
}

#[tokio::test]
async fn bad_receipts_are_rejected() {
    if moto_endpoint().is_none() {
        return;
    }
    let config = sdk_config().await;
    let queue = create_queue(&config, "receipts", 30).await.adapter(&config);
    match queue.change_visibility("not-a-receipt", Duration::from_secs(5)).await {
        Err(PortError::Rejected(msg)) => assert!(msg.contains("ChangeMessageVisibility"), "{msg}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    match queue.delete("not-a-receipt").await {
        Err(PortError::Rejected(msg)) => assert!(msg.contains("DeleteMessage"), "{msg}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn redrive_moves_a_message_to_the_dead_letter_queue() {
    if moto_endpoint().is_none() {
        return;
    }
    let config = sdk_config().await;
    let (main, dlq) = create_queue_with_dlq(&config, "redrive", 1, 1).await;
    let (main, dlq) = (main.adapter(&config), dlq.adapter(&config));
    let id = main.send("poison", Duration::ZERO).await.unwrap();
    assert_eq!(main.receive(1, Duration::from_secs(5)).await.unwrap()[0].message_id, id);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        main.receive(10, Duration::from_secs(1)).await.unwrap().is_empty(),
        "moved after 1 receive"
    );
    let dead = dlq.receive(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].message_id.as_str(), dead[0].body.as_str()),
        (id.as_str(), "poison")
    );
}

// ---- Error mapping ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_queue_is_not_found() {
    let Some(endpoint) = moto_endpoint() else { return };
    let config = sdk_config().await;
    let url = format!("{endpoint}/123456789012/{}", unique_name("no-queue"));
    let queue = SqsQueue::new(&config, &url);
    for result in [
        queue.send("x", Duration::ZERO).await.map(|_| ()),
        queue.receive(1, Duration::ZERO).await.map(|_| ()),
        queue.depth().await.map(|_| ()),
    ] {
        match result {
            Err(PortError::NotFound(msg)) => assert!(msg.contains(&url), "the error names the queue: {msg}"),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_missing_table_is_not_found() {
    if moto_endpoint().is_none() {
        return;
    }
    let config = sdk_config().await;
    let table = unique_name("no-table");
    let ledger = DynamoLedger::new(&config, &table);
    let now = SystemClock.now_ms();
    let entry = sample_entry("a-1", now);
    let results = [
        ledger.accept(&entry).await.map(|_| ()),
        ledger.get("a-1").await.map(|_| ()),
        ledger.claim("a-1", now, 1000).await.map(|_| ()),
        ledger.mark_queued("a-1", now).await,
        ledger.forget("a-1").await,
    ];
    for result in results {
        match result {
            Err(PortError::NotFound(msg)) => assert!(msg.contains(&table), "the error names the table: {msg}"),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable() {
    if moto_endpoint().is_none() {
        return;
    }
    // A loopback port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // (AWS_ENDPOINT_URL from the environment overrides the SdkConfig's endpoint, so set it per client.)
    let config = sdk_config().await;
    let endpoint = format!("http://{closed}");
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&config)
            .endpoint_url(&endpoint)
            .build(),
    );
    let queue = SqsQueue::from_client(sqs, format!("{endpoint}/123456789012/q"));
    let sent = queue.send("x", Duration::ZERO).await;
    assert!(matches!(sent, Err(PortError::Unavailable(_))), "{sent:?}");
    let dynamo = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .endpoint_url(&endpoint)
            .build(),
    );
    let ledger = DynamoLedger::from_client(dynamo, "t");
    let got = ledger.get("a").await;
    assert!(matches!(got, Err(PortError::Unavailable(_))), "{got:?}");
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&config)
            .endpoint_url(&endpoint)
            .build(),
    );
    let store = SecretsManagerStore::from_client(secrets);
    let fetched = store.fetch("s").await;
    assert!(matches!(fetched, Err(PortError::Unavailable(_))), "{fetched:?}");
}

// ---- DynamoDB specifics ----------------------------------------------------------------------------------

#[tokio::test]
async fn ledger_table_has_ttl_on_expires_at() {
    if moto_endpoint().is_none() {
        return;
    }
    let config = sdk_config().await;
    let table = create_ledger_table(&config, "ttl").await;
    let ttl = aws_sdk_dynamodb::Client::new(&config)
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let desc = ttl.time_to_live_description.unwrap();
    assert_eq!(desc.attribute_name.as_deref(), Some("expires_at"));

    // The entry's expiry is stored in the TTL attribute, as epoch seconds.
    let ledger = DynamoLedger::new(&config, &table);
    let entry = sample_entry(&unique_id("ttl"), SystemClock.now_ms());
    ledger.accept(&entry).await.unwrap();
    let raw = aws_sdk_dynamodb::Client::new(&config)
        .get_item()
        .table_name(&table)
        .key(
            "alert_id",
            aws_sdk_dynamodb::types::AttributeValue::S(entry.alert_id.clone()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(raw["expires_at"].as_n().unwrap(), &entry.expires_at_s.to_string());
    assert_eq!(raw["state"].as_s().unwrap(), "ACCEPTED");
}

#[tokio::test]
async fn malformed_items_and_bad_arguments_are_rejected() {
    if moto_endpoint().is_none() {
        return;
    }
    let config = sdk_config().await;
    let table = create_ledger_table(&config, "malformed").await;
    let ledger = DynamoLedger::new(&config, &table);
    use aws_sdk_dynamodb::types::AttributeValue as A;
    aws_sdk_dynamodb::Client::new(&config)
        .put_item()
        .table_name(&table)
        .item("alert_id", A::S("broken".into()))
        .item("state", A::S("DONE".into()))
        .item("expires_at", A::N("99999999999".into()))
        .send()
        .await
        .unwrap();
    match ledger.get("broken").await {
        Err(PortError::Rejected(msg)) => assert!(msg.contains("broken") && msg.contains("DONE"), "{msg}"),
        other => panic!("expected Rejected, got {other:?}"),
    }

    let now = SystemClock.now_ms();
    let entry = sample_entry(&unique_id("args"), now);
    ledger.accept(&entry).await.unwrap();
    assert!(matches!(
        ledger.claim(&entry.alert_id, now, 0).await,
        Err(PortError::Rejected(_))
    ));
    let mut nameless = entry.clone();
    nameless.alert_id.clear();
    assert!(matches!(ledger.accept(&nameless).await, Err(PortError::Rejected(_))));
    // Nothing was changed by the refused calls.
    assert_eq!(ledger.get(&entry.alert_id).await.unwrap(), Some(entry.clone()));
    let Claim::Claimed(held) = ledger.claim(&entry.alert_id, now, 1_000).await.unwrap() else {
        panic!("the claim must be granted")
    };
    let record = RecordRef {
        table: "incident".into(),
        sys_id: "abc".into(),
        number: None,
        link: "l".into(),
        note: false,
    };
    ledger
        .complete(&entry.alert_id, held.claim_token, &record, now + 1)
        .await
        .unwrap();
    assert_eq!(ledger.get(&entry.alert_id).await.unwrap().unwrap().record, Some(record));
}

/// The watch entries' index: only a `QUEUED` watch entry carries `watch_shard`, `observe` with `done`
/// removes it; a page the filter empties (expired entries still in the index) is skipped, not returned
/// empty (which would end the caller's paging); an expired entry cannot be observed; a NULL plan is unset.
#[tokio::test]
async fn watch_entries_live_in_the_sparse_index() {
    if moto_endpoint().is_none() {
        return;
    }
    use aws_sdk_dynamodb::types::AttributeValue as A;
    let config = sdk_config().await;
    let table = create_ledger_table(&config, "watched").await;
    let ledger = DynamoLedger::new(&config, &table);
    let raw = aws_sdk_dynamodb::Client::new(&config);
    let raw_item = |key: String| {
        let raw = raw.clone();
        let table = table.clone();
        async move {
            raw.get_item()
                .table_name(&table)
                .key("alert_id", A::S(key))
                .consistent_read(true)
                .send()
                .await
                .unwrap()
                .item
                .unwrap()
        }
    };
    let now = SystemClock.now_ms();
    let watch = |key: &str| relay_ports::LedgerEntry {
        state: relay_ports::DeliveryState::Queued,
        delivery: relay_ports::WATCH_DELIVERY.into(),
        ..sample_entry(key, now)
    };
    for i in 0..5 {
        let mut expired = watch(&format!("w:{i}"));
        expired.expires_at_s = now / 1000 - 10;
        ledger.accept(&expired).await.unwrap();
    }
    let live = watch("w:9");
    ledger.accept(&live).await.unwrap();
    let plain = sample_entry("w:plain", now);
    ledger.accept(&plain).await.unwrap();
    assert_eq!(raw_item(live.alert_id.clone()).await["watch_shard"], A::S("1".into()));
    assert!(!raw_item(plain.alert_id.clone()).await.contains_key("watch_shard"));

    let page = ledger.watched(None, 2).await.unwrap();
    assert_eq!(page, vec![live.clone()], "past the pages of expired entries");
    assert!(ledger.watched(Some("w:9"), 2).await.unwrap().is_empty());
    assert!(
        !ledger.observe("w:0", None, "{}", false, now).await.unwrap(),
        "expired: missing"
    );

    // a NULL plan is no plan
    raw.update_item()
        .table_name(&table)
        .key("alert_id", A::S(live.alert_id.clone()))
        .update_expression("SET #plan = :null")
        .expression_attribute_names("#plan", "plan")
        .expression_attribute_values(":null", A::Null(true))
        .send()
        .await
        .unwrap();
    assert!(
        !ledger
            .observe(&live.alert_id, Some("{}"), "{\"a\":1}", false, now)
            .await
            .unwrap()
    );
    assert!(
        ledger
            .observe(&live.alert_id, None, "{\"a\":1}", false, now + 1)
            .await
            .unwrap()
    );
    assert_eq!(
        raw_item(live.alert_id.clone()).await["watch_shard"],
        A::S("1".into()),
        "still watched"
    );
    assert!(
        ledger
            .observe(&live.alert_id, Some("{\"a\":1}"), "{\"a\":2}", true, now + 2)
            .await
            .unwrap()
    );
    let done = raw_item(live.alert_id.clone()).await;
    assert!(!done.contains_key("watch_shard"), "done: out of the index");
    assert_eq!(done["state"], A::S("COMPLETED".into()));
    assert!(ledger.watched(None, 10).await.unwrap().is_empty());
}
