//! The three pipelines end to end over real adapters (see `common` for the harness).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use relay_pipeline::WebhookRequest;
use relay_ports::{AlertQueue, Clock, DeliveryState, ReceivedMessage, SystemClock};
use serde_json::Value;
use servicenow_client::{ClientConfig, Credentials, ServiceNowClient, StaticCredentials};
use servicenow_sim::{Fault, FaultKind, SimConfig};

#[tokio::test]
async fn seed_scenarios_become_the_right_records() {
    let h = harness(Options::default()).await;
    for (file, id) in [
        ("seed-usb-copy-847-files.json", "usb"),
        ("seed-after-hours-prod-db-admin.json", "db"),
        ("seed-productivity-non-work-browsing.json", "hr"),
    ] {
        let r = h.post(&sample(file), &format!("wh-{id}")).await;
        assert_eq!(r.status, 202, "{file}: {:?}", r.body);
    }
    h.deliver_all().await;
    let report = h.flusher.flush().await;
    assert_eq!(
        (report.alerts, report.created, report.batch_calls),
        (1, 1, 1),
        "{report:?}"
    );

    let sir = h.sim.records("sn_si_incident");
    assert_eq!(sir.len(), 1);
    // a security incident takes priority as written (no lookup computes it), with impact × urgency beside
    assert_eq!(
        (
            sir[0]["impact"].as_str(),
            sir[0]["urgency"].as_str(),
            sir[0]["priority"].as_str()
        ),
        (Some("1"), Some("1"), Some("1"))
    );
    let text = sir[0]["description"].as_str().unwrap();
    assert!(
        text.contains("Files copied: 847") && text.contains("Channel: usb"),
        "{text}"
    );
    assert_eq!(sir[0]["assignment_group.display_value"], "Security Operations");
    assert!(sir[0]["number"].as_str().unwrap().starts_with("SIR"));
    assert!(
        h.sim.records("task").is_empty(),
        "nothing is inserted into the bare task table"
    );
    let task = h.sim.records("sn_si_task");
    assert_eq!(task.len(), 1);
    assert_eq!(
        (
            task[0]["impact"].as_str(),
            task[0]["urgency"].as_str(),
            task[0]["priority"].as_str()
        ),
        (Some("1"), Some("2"), Some("2"))
    );
    let text = task[0]["description"].as_str().unwrap();
    for line in [
        "Systems accessed: prod-db-01",
        "Duration: 47 minutes",
        "Applications used: psql, DBeaver",
    ] {
        assert!(text.contains(line), "{line} missing: {text}");
    }
    assert_eq!(task[0]["assignment_group.display_value"], "IT Security");
    assert!(
        task[0]["short_description"]
            .as_str()
            .unwrap()
            .starts_with("Security Review:")
    );
    let hr = h.sim.records("sn_hr_core_case");
    assert_eq!(hr.len(), 1);
    assert_eq!(
        (hr[0]["impact"].as_str(), hr[0]["urgency"].as_str()),
        (Some("2"), Some("2"))
    );
    assert_eq!(hr[0]["assignment_group.display_value"], "HR Partners - Engineering");
    assert_eq!(hr[0]["hr_service.display_value"], "Productivity Review");
    // no category on an HR case; its priority is the HR service's (Productivity Review: 3), not the relay's
    assert!(hr[0].get("category").is_none(), "{:?}", hr[0]);
    assert_eq!(hr[0]["priority"], "3", "{:?}", hr[0]);

    // the ledger holds the cross-system reference
    let e = h.state("emon-20261120-7f3a9c").await;
    assert_eq!(e.state, DeliveryState::Completed);
    let rec = e.record.unwrap();
    assert_eq!(rec.number.as_deref(), sir[0]["number"].as_str());
    assert_eq!(rec.sys_id, sir[0]["sys_id"].as_str().unwrap());
    let status = h.ingest.status("emon-20261120-7f3a9c").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["state"], "COMPLETED");
    assert_eq!(status.json()["servicenow"]["number"], sir[0]["number"]);
    assert_eq!(h.ingest.status("nope").await.status, 404);

    // one RecordsCreated per record, by record type: two realtime records and the one batch aggregate
    let m = h.metrics.take();
    assert_eq!(total(&m, "RecordsCreated", &[]), 3, "{m:?}");
    for rt in ["security_incident", "task", "hr_case"] {
        assert_eq!(total(&m, "RecordsCreated", &[("RecordType", rt)]), 1, "{rt} in {m:?}");
    }
}

#[tokio::test]
async fn a_resent_webhook_is_accepted_again_but_queued_once() {
    let h = harness(Options::default()).await;
    let body = sample("seed-usb-copy-847-files.json");
    let first = h.post(&body, "wh-1").await;
    let second = h.post(&body, "wh-1").await;
    assert_eq!((first.status, second.status), (202, 202));
    assert_eq!(
        (
            first.json()["duplicate"].as_bool(),
            second.json()["duplicate"].as_bool()
        ),
        (Some(false), Some(true))
    );
    assert_eq!(
        first.json()["status_url"],
        "http://relay.test/v1/alerts/emon-20261120-7f3a9c"
    );
    assert_eq!(h.realtime.depth().await.unwrap(), 1);
    h.deliver_all().await;
    assert_eq!(
        h.post(&body, "wh-2").await.json()["duplicate"],
        true,
        "same alert id, new webhook id"
    );
    h.deliver_all().await;
    assert_eq!(h.sim.records("sn_si_incident").len(), 1);
}

#[tokio::test]
async fn rejected_webhooks_get_clear_errors_and_nothing_is_queued() {
    let h = harness(Options::default()).await;
    let body = sample("dlp-critical.json");
    let ts = now_s().to_string();
    let sig = h.keys.sign("wh", now_s(), &body);
    let req = |ct: Option<&'static str>, sig: Option<String>, body: Vec<u8>, ts: String| (ct, sig, body, ts);
    let cases = [
        (
            req(
                Some("application/json"),
                Some("v1,AAAA".into()),
                body.clone(),
                ts.clone(),
            ),
            401,
            "no signature matches",
        ),
        (
            req(Some("application/json"), None, body.clone(), ts.clone()),
            401,
            "missing header webhook-signature",
        ),
        (
            req(
                Some("application/json"),
                Some(sig.clone()),
                body.clone(),
                (now_s() - 600).to_string(),
            ),
            401,
            "replay window",
        ),
        (
            req(Some("text/plain"), Some(sig.clone()), body.clone(), ts.clone()),
            415,
            "Content-Type",
        ),
        (
            req(Some("application/json"), Some(sig), vec![b' '; 300 * 1024], ts.clone()),
            413,
            "limit is 262144",
        ),
    ];
    for ((ct, sig, body, ts), status, needle) in cases {
        let r = h
            .ingest
            .accept(
                WebhookRequest {
                    content_type: ct,
                    webhook_id: Some("wh"),
                    webhook_timestamp: Some(&ts),
                    webhook_signature: sig.as_deref(),
                    body: &body,
                },
                "http://relay.test",
            )
            .await;
        assert_eq!(r.status, status, "{needle}: {:?}", r.body);
        assert!(r.json()["error"].as_str().unwrap().contains(needle), "{:?}", r.body);
    }
    let bad = std::fs::read(repo().join("events/invalid/bad-values.json")).unwrap();
    let r = h.post(&bad, "wh-bad").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["problems"].as_array().unwrap().len(), 7, "{:?}", r.body);
    assert_eq!(h.realtime.depth().await.unwrap() + h.batch.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn queue_down_answers_503_and_the_senders_retry_is_accepted_afresh() {
    let mut h = harness(Options::default()).await;
    let body = sample("seed-usb-copy-847-files.json");
    // the seed alert is critical: it goes to the critical lane
    h.rebuild_ingest(|p| p.critical = Arc::new(DownQueue));
    let r = h.post(&body, "wh-1").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.retry_after, Some(5));
    assert!(
        h.ports.ledger.get("emon-20261120-7f3a9c").await.unwrap().is_none(),
        "nothing half-accepted"
    );
    h.rebuild_ingest(|_| {});
    let r = h.post(&body, "wh-1").await;
    assert_eq!((r.status, r.json()["duplicate"].as_bool()), (202, Some(false)));
    h.deliver_all().await;
    assert_eq!(h.sim.records("sn_si_incident").len(), 1);
}

#[tokio::test]
async fn two_deliverers_racing_on_one_message_create_one_record() {
    let h = harness(Options::default()).await;
    h.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    let msg = h.realtime.receive(1, Duration::ZERO).await.unwrap().remove(0);
    // the same message delivered twice (SQS at-least-once), handled concurrently
    let copy = ReceivedMessage {
        receipt: "stale".into(),
        ..msg.clone()
    };
    h.sim.inject(Fault {
        kind: FaultKind::Latency { ms: 200 },
        count: 1,
        table: Some("sn_si_incident".into()),
        method: None,
    });
    let (a, b) = tokio::join!(h.deliverer.handle(&msg), h.deliverer.handle(&copy));
    let done = [a, b]
        .iter()
        .filter(|d| **d == relay_pipeline::Disposition::Done)
        .count();
    assert_eq!(done, 1, "one finished, the other waits for the lease: {a:?} {b:?}");
    assert_eq!(h.sim.records("sn_si_incident").len(), 1);
    // when the waiting copy comes back, the ledger says COMPLETED and ServiceNow is not called again
    let before = h.sim.requests().len();
    assert_eq!(h.deliverer.handle(&copy).await, relay_pipeline::Disposition::Done);
    assert_eq!(h.sim.requests().len(), before);
}

#[tokio::test]
async fn a_call_slower_than_the_lease_keeps_its_claim_so_no_second_deliverer_creates() {
    // the lease is far shorter than the call: only the renewal while the call is in flight keeps the claim
    let h = harness(Options {
        lease: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    h.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    let msg = h.realtime.receive(1, Duration::ZERO).await.unwrap().remove(0);
    let copy = ReceivedMessage {
        receipt: "stale".into(),
        ..msg.clone()
    };
    h.sim.inject(Fault {
        kind: FaultKind::Latency { ms: 650 },
        count: 2,
        table: Some("sn_si_incident".into()),
        method: Some("POST".into()),
    });
    let first = h.deliverer.handle(&msg);
    let second = async {
        // the copy arrives after the first claim's original lease ran out, while its create is in flight
        tokio::time::sleep(Duration::from_millis(450)).await;
        h.deliverer.handle(&copy).await
    };
    let (a, b) = tokio::join!(first, second);
    assert_eq!(a, relay_pipeline::Disposition::Done, "the slow attempt completes");
    assert_eq!(
        b,
        relay_pipeline::Disposition::RetryLater,
        "the copy finds the claim renewed and waits"
    );
    assert_eq!(h.sim.records("sn_si_incident").len(), 1, "exactly one record");
    let e = h.state("emon-20261120-7f3a9c").await;
    assert_eq!((e.state, e.attempts, e.claim_token), (DeliveryState::Completed, 1, 1));
}

#[tokio::test]
async fn an_insert_that_commits_after_the_client_gave_up_is_found_not_created_again() {
    // the client gives up after 800 ms; ServiceNow commits the insert 1.5 s after it arrived (a REST
    // transaction keeps running up to its quota when the client has gone); the settle window covers it
    let h = harness(Options {
        settle: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    h.sim.inject(Fault {
        kind: FaultKind::LateCommit { ms: 1500 },
        count: 1,
        table: Some("sn_si_incident".into()),
        method: Some("POST".into()),
    });
    h.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    let msg = h.realtime.receive(1, Duration::ZERO).await.unwrap().remove(0);
    assert_eq!(h.deliverer.handle(&msg).await, relay_pipeline::Disposition::RetryLater);
    let e = h.state("emon-20261120-7f3a9c").await;
    assert_eq!(e.last_error_class.as_deref(), Some("ambiguous"));
    let window = e
        .no_create_before_ms
        .expect("a settle window after the ambiguous create");
    assert!(window >= e.updated_at_ms + 2000, "the window is the settle time: {e:?}");
    // a copy of the message arriving at once (at-least-once delivery) looks up, finds nothing yet, and
    // does not create
    let copy = ReceivedMessage {
        receipt: "copy".into(),
        ..msg.clone()
    };
    let posts = |h: &Harness| {
        h.sim
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/sn_si_incident"))
            .count()
    };
    assert_eq!(h.deliverer.handle(&copy).await, relay_pipeline::Disposition::RetryLater);
    assert_eq!(
        posts(&h),
        0,
        "no create inside the settle window (the late insert is not logged yet)"
    );
    // the message was delayed to the end of the window; by then the late insert has committed
    h.deliver_all().await;
    assert_eq!(h.sim.records("sn_si_incident").len(), 1, "exactly one record");
    assert_eq!(posts(&h), 1, "the only insert is the first one");
    let e = h.state("emon-20261120-7f3a9c").await;
    assert_eq!(e.state, DeliveryState::Completed);
    assert_eq!(
        e.record.unwrap().sys_id,
        h.sim.records("sn_si_incident")[0]["sys_id"].as_str().unwrap()
    );
}

#[tokio::test]
async fn a_replay_after_an_ambiguous_last_attempt_finds_the_record_instead_of_creating_again() {
    // the retry window is over at the first failure: the ambiguous attempt is the last one
    let h = harness(Options {
        window: Duration::from_millis(1),
        ..Options::default()
    })
    .await;
    h.sim.inject(Fault {
        kind: FaultKind::TimeoutAfterWrite,
        count: 1,
        table: Some("sn_si_incident".into()),
        method: Some("POST".into()),
    });
    h.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    h.deliver_all().await;
    let e = h.state("emon-20261120-7f3a9c").await;
    assert_eq!(e.state, DeliveryState::Failed);
    assert!(e.needs_lookup, "the give-up keeps the ambiguous attempt's needs_lookup");
    assert_eq!(
        h.sim.records("sn_si_incident").len(),
        1,
        "the lost answer's record exists"
    );
    assert_eq!(h.dlq.depth().await.unwrap(), 1);

    let dead = h.dlq.receive(1, Duration::ZERO).await.unwrap().remove(0);
    let env = relay_pipeline::envelope::Envelope::from_json(&dead.body).unwrap();
    let reopened = relay_pipeline::replay::replay_one(
        h.ports.ledger.as_ref(),
        &h.realtime,
        h.ports.critical.as_ref(),
        &h.dlq,
        &dead,
        &env,
        SystemClock.now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(reopened, 1);
    let e = h.state("emon-20261120-7f3a9c").await;
    assert!(e.needs_lookup, "reopen keeps needs_lookup");
    assert!(
        e.expires_at_s > now_s() + 29 * 24 * 3600,
        "reopen restarts the retention"
    );
    h.deliver_all().await;
    let e = h.state("emon-20261120-7f3a9c").await;
    assert_eq!(e.state, DeliveryState::Completed);
    assert_eq!(h.sim.records("sn_si_incident").len(), 1, "found, not created again");
}

async fn deliver_through_fault(kind: FaultKind, count: u32) -> (Harness, relay_ports::LedgerEntry) {
    let h = harness(Options::default()).await;
    h.sim.inject(Fault {
        kind,
        count,
        table: Some("sn_si_incident".into()),
        method: Some("POST".into()),
    });
    assert_eq!(h.post(&sample("seed-usb-copy-847-files.json"), "wh").await.status, 202);
    h.deliver_all().await;
    let e = h.state("emon-20261120-7f3a9c").await;
    (h, e)
}

#[tokio::test]
async fn every_fault_class_ends_in_exactly_one_record() {
    let cases = [
        (FaultKind::ServerError { status: 503 }, 3, "retryable", false),
        (FaultKind::ServerError { status: 502 }, 1, "retryable", false),
        (FaultKind::RateLimited { retry_after_s: 1 }, 1, "retryable", false),
        (FaultKind::TimeoutAfterWrite, 1, "ambiguous", true),
        (FaultKind::TruncatedJson, 1, "ambiguous", true),
        (FaultKind::MalformedJson, 1, "ambiguous", true),
        // a reset after the request was sent is ambiguous to the client, committed or not
        (FaultKind::ConnectionReset { after_commit: false }, 1, "ambiguous", true),
        (FaultKind::ConnectionReset { after_commit: true }, 1, "ambiguous", true),
        (FaultKind::TransactionCancelled, 1, "ambiguous", true),
        (FaultKind::RevokeTokens, 1, "", false),
    ];
    for (kind, count, class, lookup) in cases {
        let name = kind.name();
        let (h, e) = deliver_through_fault(kind, count).await;
        let records = h.sim.records("sn_si_incident");
        assert_eq!(records.len(), 1, "{name}: exactly one record");
        assert_eq!(e.state, DeliveryState::Completed, "{name}");
        assert_eq!(
            e.record.as_ref().unwrap().sys_id,
            records[0]["sys_id"].as_str().unwrap(),
            "{name}"
        );
        if !class.is_empty() {
            assert_eq!(e.last_error_class.as_deref(), Some(class), "{name}");
            assert!(e.attempts >= 2, "{name}: retried");
        }
        assert_eq!(e.needs_lookup, lookup, "{name}");
        if lookup {
            let gets = h
                .sim
                .requests()
                .iter()
                .filter(|r| r.method == "GET" && r.query.contains("correlation_id"))
                .count();
            assert!(gets >= 1, "{name}: looked the record up before creating again");
        }
        assert_eq!(h.dlq.depth().await.unwrap(), 0, "{name}");
    }
}

#[tokio::test]
async fn retry_after_from_a_429_is_respected() {
    let h = harness(Options::default()).await;
    h.sim.inject(Fault {
        kind: FaultKind::RateLimited { retry_after_s: 2 },
        count: 1,
        table: Some("sn_si_incident".into()),
        method: None,
    });
    h.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    let started = std::time::Instant::now();
    h.deliverer.poll_once(10, Duration::from_millis(50)).await.unwrap();
    let e = h.state("emon-20261120-7f3a9c").await;
    assert_eq!(
        (e.state, e.last_error_class.as_deref()),
        (DeliveryState::Retrying, Some("retryable"))
    );
    // not visible again before the server's Retry-After
    assert!(
        h.realtime
            .receive(10, Duration::from_millis(1500))
            .await
            .unwrap()
            .is_empty()
    );
    let msgs = h.realtime.receive(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(msgs.len(), 1);
    assert!(started.elapsed() >= Duration::from_secs(2));
    h.deliverer.handle(&msgs[0]).await;
    assert_eq!(h.sim.records("sn_si_incident").len(), 1);
}

#[tokio::test]
async fn a_permanent_error_dead_letters_at_once_with_a_notification() {
    // the integration user without rights: 403 ACL
    let h = harness(Options {
        username: "readonly",
        ..Options::default()
    })
    .await;
    h.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    h.deliver_all().await;
    let e = h.state("emon-20261120-7f3a9c").await;
    assert_eq!(e.state, DeliveryState::Failed);
    assert_eq!(e.attempts, 1);
    assert_eq!(e.last_error_class.as_deref(), Some("permanent"));
    assert!(e.last_error.as_deref().unwrap().contains("403"), "{:?}", e.last_error);
    let dead = h.dlq.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(dead.len(), 1);
    let env: Value = serde_json::from_str(&dead[0].body).unwrap();
    assert_eq!(env["dead_letter"]["error_class"], "permanent");
    let notes = h.store.notifications_for("emon-20261120-7f3a9c").await.unwrap();
    assert_eq!(notes.len(), 1);
    assert!(notes[0].notice.error.contains("ACL") || notes[0].notice.error.contains("403"));
    assert!(h.sim.records("sn_si_incident").is_empty());
}

#[tokio::test]
async fn servicenow_down_for_the_whole_window_dead_letters_and_notifies() {
    let h = harness(Options {
        window: Duration::from_millis(600),
        ..Options::default()
    })
    .await;
    h.sim.set_hibernating(true);
    h.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.dlq.depth().await.unwrap() == 0 && std::time::Instant::now() < deadline {
        h.deliverer.poll_once(10, Duration::from_millis(50)).await.unwrap();
    }
    let e = h.state("emon-20261120-7f3a9c").await;
    assert_eq!(e.state, DeliveryState::Failed);
    assert_eq!(e.last_error_class.as_deref(), Some("window_exhausted"));
    assert!(e.attempts >= 3, "retried within the window: {}", e.attempts);
    assert!(
        e.last_error.as_deref().unwrap().contains("hibernat"),
        "{:?}",
        e.last_error
    );
    assert_eq!(
        h.store.notifications_for("emon-20261120-7f3a9c").await.unwrap().len(),
        1
    );
    assert_eq!(h.realtime.depth().await.unwrap(), 0, "acknowledged, not looping");
}

#[tokio::test]
async fn five_hundred_low_alerts_become_few_records_in_few_batch_calls() {
    let h = harness(Options::default()).await;
    for i in 0..500 {
        let body = alert_body(
            &format!("low-{i:03}"),
            "policy_violation",
            "low",
            &format!("E{}", i % 20),
        );
        assert_eq!(h.post(&body, &format!("wh-{i}")).await.status, 202);
    }
    assert_eq!(h.batch.depth().await.unwrap(), 500);
    let report = h.flusher.flush().await;
    assert_eq!(report.alerts, 500, "{report:?}");
    // grouped by employee + alert type + window: 20 records, or up to 40 when the posts straddle a window
    // boundary (one more record per employee seen after it)
    assert!((20..=40).contains(&report.records), "{report:?}");
    assert!(report.batch_calls as f64 / 500.0 <= 0.05, "{report:?}");
    let records = h.sim.records("sn_compliance_policy_exception");
    assert_eq!(records.len(), report.records);
    assert_eq!(h.batch.depth().await.unwrap(), 0);
    for i in [0, 250, 499] {
        assert_eq!(h.state(&format!("low-{i:03}")).await.state, DeliveryState::Completed);
    }
    let listed: usize = records
        .iter()
        .map(|r| r["description"].as_str().unwrap().matches("\n- ").count())
        .sum();
    assert_eq!(listed, 500, "every alert is listed in its record");
    // one RecordsCreated per aggregate record (not per alert it lists), one latency sample per alert
    let m = h.metrics.take();
    assert_eq!(total(&m, "RecordsCreated", &[]), report.records as u64, "{report:?}");
    assert_eq!(total(&m, "DeliveryLatencyMs", &[]), 500);
}

#[tokio::test]
async fn unserviced_batch_items_go_through_the_retry_path_and_are_delivered() {
    let mut sim = SimConfig::default();
    sim.batch.max_serviced_items = Some(3);
    let h = harness_with(Options::default(), sim).await;
    for i in 0..10 {
        // ten different employees: ten records
        h.post(
            &alert_body(&format!("u-{i}"), "policy_violation", "medium", &format!("E{i}")),
            &format!("wh-{i}"),
        )
        .await;
    }
    let report = h.flusher.flush().await;
    assert_eq!(
        (report.records, report.created, report.retried),
        (10, 3, 7),
        "{report:?}"
    );
    assert_eq!(h.batch.depth().await.unwrap(), 0);
    h.deliver_all().await;
    let records = h.sim.records("sn_compliance_policy_exception");
    assert_eq!(records.len(), 10);
    for i in 0..10 {
        assert_eq!(h.state(&format!("u-{i}")).await.state, DeliveryState::Completed);
    }
}

#[tokio::test]
async fn a_failed_aggregate_is_retried_as_one_record_covering_every_alert() {
    let h = harness(Options::default()).await;
    for i in 0..4 {
        h.post(
            &alert_body(&format!("g-{i}"), "policy_violation", "low", "E1"),
            &format!("wh-{i}"),
        )
        .await;
    }
    h.sim.inject(Fault {
        kind: FaultKind::ServerError { status: 503 },
        count: 1,
        table: None,
        method: Some("POST".into()),
    });
    let report = h.flusher.flush().await;
    assert_eq!(
        (report.records, report.created, report.retried),
        (1, 0, 1),
        "{report:?}"
    );
    h.deliver_all().await;
    let records = h.sim.records("sn_compliance_policy_exception");
    assert_eq!(records.len(), 1);
    assert!(
        records[0]["short_description"]
            .as_str()
            .unwrap()
            .starts_with("4 Policy violation alerts")
    );
    for i in 0..4 {
        let e = h.state(&format!("g-{i}")).await;
        assert_eq!(e.state, DeliveryState::Completed);
        assert_eq!(e.record.unwrap().sys_id, records[0]["sys_id"].as_str().unwrap());
    }
}

#[tokio::test]
async fn an_unreadable_message_is_dead_lettered_not_retried_forever() {
    let h = harness(Options::default()).await;
    h.realtime.send("{not an envelope", Duration::ZERO).await.unwrap();
    h.deliver_all().await;
    assert_eq!(h.realtime.depth().await.unwrap(), 0);
    let dead = h.dlq.receive(1, Duration::ZERO).await.unwrap();
    assert_eq!(dead[0].body, "{not an envelope");
}

#[tokio::test]
async fn a_deliverer_that_died_mid_call_is_taken_over_without_a_second_record() {
    let h = harness(Options::default()).await;
    h.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    let msg = h.realtime.receive(1, Duration::ZERO).await.unwrap().remove(0);
    let env = relay_pipeline::Envelope::from_json(&msg.body).unwrap();
    // the first deliverer claims, creates the record, and is killed before it records anything
    let now = SystemClock.now_ms();
    assert!(matches!(
        h.ports.ledger.claim("emon-20261120-7f3a9c", now, 1).await.unwrap(),
        relay_ports::Claim::Claimed(_)
    ));
    let client = ServiceNowClient::new(
        ClientConfig::new(h.sim.base_url()),
        Arc::new(StaticCredentials(Credentials::Basic {
            username: "relay".into(),
            password: "relay-password".into(),
        })),
    )
    .unwrap();
    assert_eq!(client.create_record(env.table(), env.fields()).await.class(), "created");
    tokio::time::sleep(Duration::from_millis(5)).await;
    // the message comes back; the lease has expired; the takeover looks the record up first
    assert_eq!(h.deliverer.handle(&msg).await, relay_pipeline::Disposition::Done);
    assert_eq!(h.sim.records("sn_si_incident").len(), 1);
    let e = h.state("emon-20261120-7f3a9c").await;
    assert_eq!((e.state, e.attempts), (DeliveryState::Completed, 2));
}

#[tokio::test]
async fn the_productivity_hr_case_carries_its_weekly_trend_chart_as_a_png() {
    let h = harness(Options::default()).await;
    let r = h
        .post(&sample("seed-productivity-non-work-browsing.json"), "wh-chart")
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    h.deliver_all().await;
    let report = h.flusher.flush().await;
    assert_eq!(report.created, 1, "{report:?}");
    let hr = h.sim.records("sn_hr_core_case");
    assert_eq!(hr.len(), 1);
    let case = hr[0]["sys_id"].as_str().unwrap();
    let attachments: Vec<Value> = h
        .sim
        .records("sys_attachment")
        .into_iter()
        .filter(|a| a["table_sys_id"] == case)
        .collect();
    assert_eq!(attachments.len(), 1, "{attachments:?}");
    assert_eq!(attachments[0]["file_name"], "productivity-trend.png");
    assert_eq!(attachments[0]["content_type"], "image/png");
    let bytes = h
        .sim
        .attachment_content(attachments[0]["sys_id"].as_str().unwrap())
        .unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&bytes[12..16], b"IHDR");
}

#[tokio::test]
async fn a_failed_chart_upload_leaves_one_hr_case_and_the_alert_delivered() {
    let h = harness(Options::default()).await;
    h.sim.inject(Fault {
        kind: FaultKind::ServerError { status: 500 },
        count: 5,
        table: Some("sys_attachment".into()),
        method: None,
    });
    let r = h
        .post(&sample("seed-productivity-non-work-browsing.json"), "wh-chart-fail")
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    h.deliver_all().await;
    let report = h.flusher.flush().await;
    assert_eq!(report.created, 1, "{report:?}");
    assert_eq!(
        h.sim.records("sn_hr_core_case").len(),
        1,
        "the case is not created again"
    );
    assert!(h.sim.records("sys_attachment").is_empty());
    assert_eq!(h.state("emon-20261122-5c9e10").await.state, DeliveryState::Completed);
}
