//! The batch flush under adversarial sizes and timing, over real adapters (see `common` for the harness).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use relay_core::fields::MAX_DESCRIPTION_FIELD;
use relay_pipeline::{Deliverer, FlushSettings, Flusher, Ports};
use relay_ports::{AlertQueue, DeliveryState};
use serde_json::json;
use servicenow_sim::{Fault, FaultKind};

const TABLE: &str = "sn_compliance_policy_exception";

/// An alert with the longest activity text and a long evidence link the schema allows.
fn long_body(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "alert_id": format!("long-{i:03}-{}", "x".repeat(100)), "alert_type": "policy_violation",
        "severity": "low", "occurred_at": "2026-11-20T14:03:00Z",
        "employee": {"id": "E1", "department": "Sales"},
        "description": format!("activity {i} {}", "é".repeat(3980)), "risk_score": 20,
        "evidence_url": format!("https://monitor.example.com/a/{i}/{}", "p".repeat(1900))
    }))
    .unwrap()
}

/// Every alert id → the sys_ids of the records whose description or attached member list names it.
fn listing(h: &Harness) -> HashMap<String, Vec<String>> {
    listing_of(h, "long-")
}

/// [`listing`] of the alert ids that start with `prefix`.
fn listing_of(h: &Harness, prefix: &str) -> HashMap<String, Vec<String>> {
    let attachments = h.sim.records("sys_attachment");
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for r in h.sim.records(TABLE) {
        let sys_id = r["sys_id"].as_str().unwrap().to_string();
        let desc = r["description"].as_str().unwrap();
        assert!(
            desc.chars().count() <= MAX_DESCRIPTION_FIELD,
            "description of {} chars",
            desc.chars().count()
        );
        let mut text = desc.to_string();
        for a in attachments.iter().filter(|a| a["table_sys_id"] == sys_id.as_str()) {
            assert_eq!(a["file_name"], "alerts.txt");
            let content = h.sim.attachment_content(a["sys_id"].as_str().unwrap()).unwrap();
            text.push_str(&String::from_utf8(content).unwrap());
        }
        for id in text
            .split(|c: char| c.is_whitespace() || c == ':' || c == ',' || c == '(' || c == ')')
            .filter(|w| w.starts_with(prefix))
        {
            let list = out.entry(id.to_string()).or_default();
            if !list.contains(&sys_id) {
                list.push(sys_id.clone());
            }
        }
    }
    out
}

#[tokio::test]
async fn huge_aggregates_are_split_to_fit_the_queue_and_every_member_is_listed() {
    let h = harness(Options::default()).await;
    let n = 100;
    for i in 0..n {
        let reply = h.post(&long_body(i), &format!("wh-{i}")).await;
        assert_eq!(reply.status, 202, "{reply:?}");
    }
    // the Batch API is down for this flush: the aggregates take the realtime retry path
    h.sim.inject(Fault {
        kind: FaultKind::ServerError { status: 503 },
        count: 1,
        table: None,
        method: Some("POST".into()),
    });
    let report = h.flusher.flush().await;
    assert_eq!(report.alerts, n, "{report:?}");
    assert_eq!(
        report.left, 0,
        "an aggregate did not fit the realtime queue: {report:?}"
    );
    assert_eq!(h.batch.depth().await.unwrap(), 0);
    h.deliver_all().await;
    assert_eq!(h.realtime.depth().await.unwrap(), 0);

    let records = h.sim.records(TABLE);
    assert!(records.len() > 1 && records.len() < n, "{} records", records.len());
    let listed = listing(&h);
    for i in 0..n {
        let id = format!("long-{i:03}-{}", "x".repeat(100));
        let e = h.state(&id).await;
        assert_eq!(e.state, DeliveryState::Completed, "{id}");
        let sys_id = e.record.unwrap().sys_id;
        assert_eq!(
            listed.get(&id),
            Some(&vec![sys_id]),
            "{id} must be listed by its record only"
        );
    }
}

#[tokio::test]
async fn an_aggregate_created_by_the_batch_api_names_its_first_members_and_attaches_all() {
    let h = harness(Options::default()).await;
    let n = 60;
    for i in 0..n {
        h.post(&long_body(i), &format!("wh-{i}")).await;
    }
    let report = h.flusher.flush().await;
    assert_eq!((report.alerts, report.left), (n, 0), "{report:?}");
    let records = h.sim.records(TABLE);
    assert_eq!(records.len(), report.created, "{report:?}");
    assert!(records.len() < n);
    let listed = listing(&h);
    for i in 0..n {
        let id = format!("long-{i:03}-{}", "x".repeat(100));
        let sys_id = h.state(&id).await.record.unwrap().sys_id;
        assert_eq!(listed.get(&id), Some(&vec![sys_id]), "{id}");
    }
    // the description shows the first member's activity and counts what it cannot name
    let desc = records[0]["description"].as_str().unwrap();
    assert!(desc.contains("activity "), "{desc}");
}

#[tokio::test]
async fn a_flush_ends_by_its_deadline_and_the_next_one_delivers_the_rest_once() {
    let h = harness(Options {
        batch_settings: Some(relay_core::config::BatchSettings {
            max_requests_per_batch: 2,
            ..relay_core::config::BatchSettings::default()
        }),
        ..Options::default()
    })
    .await;
    let n = 40;
    for i in 0..n {
        // forty employees: forty records, twenty Batch API calls of two (a few at once: more than the
        // flush below has time for)
        let body = alert_body(&format!("d-{i}"), "policy_violation", "low", &format!("E{i}"));
        h.post(&body, &format!("wh-{i}")).await;
    }
    // every call is slow (but answers within the client's timeout)
    h.sim.inject(Fault {
        kind: FaultKind::Latency { ms: 400 },
        count: 1000,
        table: None,
        method: None,
    });
    let short = Flusher::new(
        h.flusher.delivery.clone(),
        FlushSettings {
            budget: Duration::from_millis(2_000),
            settle_reserve: Duration::from_millis(500),
            ..h.flusher.settings.clone()
        },
    );
    let started = Instant::now();
    let report = short.flush().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2_500),
        "the flush took {took:?}: {report:?}"
    );
    assert!(report.created > 0 && report.created < n, "{report:?}");
    assert_eq!(report.created + report.deferred, n, "{report:?}");
    // the deferred alerts are claimable again at once, not held until their lease ends
    for i in 0..n {
        let e = h.state(&format!("d-{i}")).await;
        assert!(
            matches!(e.state, DeliveryState::Completed | DeliveryState::Retrying),
            "d-{i} is {:?}",
            e.state
        );
    }
    // a deferred alert was never sent: its claim did not count, so it is neither looked up nor sent alone
    for i in 0..n {
        let e = h.state(&format!("d-{i}")).await;
        if e.state == DeliveryState::Retrying {
            assert_eq!(e.attempts, 0, "d-{i}: {e:?}");
        }
    }
    let lookups_before = lookups(&h);
    let next = h.flusher.flush().await;
    assert_eq!(
        (next.alerts, next.created),
        (report.deferred, report.deferred),
        "{next:?}"
    );
    assert_eq!(
        lookups(&h),
        lookups_before,
        "the next flush looked no deferred record up"
    );
    assert_eq!(h.batch.depth().await.unwrap(), 0);
    let records = h.sim.records(TABLE);
    assert_eq!(records.len(), n, "one record per alert, none twice");
    for i in 0..n {
        assert_eq!(h.state(&format!("d-{i}")).await.state, DeliveryState::Completed);
    }
}

/// Dedupe lookups (Table API reads) on the flushed table so far.
fn lookups(h: &Harness) -> usize {
    h.sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.table.as_deref() == Some(TABLE))
        .count()
}

#[tokio::test]
async fn a_member_whose_complete_failed_is_completed_by_the_aggregates_retry() {
    let h = harness(Options::default()).await;
    for i in 0..4 {
        h.post(
            &alert_body(&format!("m-{i}"), "policy_violation", "low", "E1"),
            &format!("wh-{i}"),
        )
        .await;
    }
    // the Batch API fails: the aggregate takes the realtime path
    h.sim.inject(Fault {
        kind: FaultKind::ServerError { status: 503 },
        count: 1,
        table: None,
        method: Some("POST".into()),
    });
    let report = h.flusher.flush().await;
    assert_eq!(report.retried, 1, "{report:?}");

    // the realtime deliverer creates the record, then one member's ledger write fails
    let d = &h.flusher.delivery;
    let ports = Ports {
        ledger: {
            let ledger = FaultyLedger::over(Arc::new(h.store.ledger()));
            *ledger.fail_complete_once.lock().unwrap() = Some("m-2".into());
            Arc::new(ledger)
        },
        realtime: Arc::new(h.realtime.clone().with_visibility_timeout(Duration::from_secs(1))),
        ..h.ports.clone()
    };
    let deliverer = Deliverer::new(Arc::new(d.with_ports(ports)));
    let deadline = Instant::now() + Duration::from_secs(15);
    while h.realtime.depth().await.unwrap() > 0 && Instant::now() < deadline {
        deliverer.poll_once(10, Duration::from_millis(100)).await.unwrap();
    }
    let records = h.sim.records(TABLE);
    assert_eq!(records.len(), 1, "one record for the aggregate");
    let sys_id = records[0]["sys_id"].as_str().unwrap();
    for i in 0..4 {
        let e = h.state(&format!("m-{i}")).await;
        assert_eq!(e.state, DeliveryState::Completed, "m-{i}");
        assert_eq!(e.record.unwrap().sys_id, sys_id);
    }
}

#[tokio::test]
async fn an_alert_id_shaped_like_an_aggregate_key_is_its_own_alert() {
    let h = harness(Options::default()).await;
    for i in 0..2 {
        h.post(
            &alert_body(&format!("k-{i}"), "policy_violation", "low", "E1"),
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
    assert_eq!(h.flusher.flush().await.retried, 1);
    // the aggregate waits on the realtime queue under its own ledger key
    let msgs = h.realtime.list(10).await.unwrap();
    assert_eq!(msgs.len(), 1);
    let key = relay_pipeline::Envelope::from_json(&msgs[0].body).unwrap().ledger_key();
    assert!(key.starts_with("batch:"), "{key}");

    // an alert whose id is exactly that key is a new alert, not a re-sent webhook
    let reply = h.post(&alert_body(&key, "dlp", "critical", "E2"), "wh-x").await;
    assert_eq!(reply.status, 202, "{reply:?}");
    h.deliver_all().await;
    let own = h.ingest.status(&key).await;
    assert_eq!(own.status, 200);
    let body: serde_json::Value = serde_json::from_str(&own.body).unwrap();
    assert_eq!(
        (body["alert_id"].as_str(), body["state"].as_str()),
        (Some(key.as_str()), Some("COMPLETED"))
    );
    for i in 0..2 {
        assert_eq!(h.state(&format!("k-{i}")).await.state, DeliveryState::Completed);
    }
    let own = h.state(&relay_pipeline::alert_key(&key)).await.record.unwrap();
    assert_ne!(own.table, TABLE);
    assert_eq!(h.sim.records(&own.table).len(), 1, "the alert's own record");
    assert_eq!(h.sim.records(TABLE).len(), 1, "the aggregate's record");
}

/// Issue 13, case 1: a flush that is killed after its Batch API call created an aggregate, before it settled
/// anything. When the aggregate's alerts come back, an alert of the same group and window that arrived
/// meanwhile must get a record of its own: it is never completed against the earlier record, which does not
/// list it, and the earlier alerts are never listed twice.
/// A flusher over the harness whose drained batch messages come back after a second (a killed flush's
/// messages), with a 3 s budget.
fn flusher_whose_messages_return_after_a_second(h: &Harness) -> Arc<Flusher> {
    let ports = Ports {
        batch: Arc::new(h.batch.clone().with_visibility_timeout(Duration::from_secs(1))),
        ..h.ports.clone()
    };
    Arc::new(Flusher::new(
        Arc::new(h.flusher.delivery.with_ports(ports)),
        FlushSettings {
            budget: Duration::from_secs(3),
            settle_reserve: Duration::from_secs(1),
            ..h.flusher.settings.clone()
        },
    ))
}

/// Run a flush whose Batch API call commits and never answers, and kill it (abort the task) once the
/// records exist: the process died waiting for the answer.
async fn kill_flush_after_its_batch_call_commits(h: &Harness, flusher: &Arc<Flusher>) {
    h.sim.inject(Fault {
        kind: FaultKind::TimeoutAfterWrite,
        count: 1,
        table: None,
        method: Some("POST".into()),
    });
    let running = tokio::spawn({
        let f = flusher.clone();
        async move { f.flush().await }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.sim.records(TABLE).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.abort();
    assert!(
        running.await.unwrap_err().is_cancelled(),
        "the flush was killed mid-call"
    );
}

#[tokio::test]
async fn a_flush_killed_after_sending_an_aggregate_never_completes_a_later_alert_against_it() {
    let h = harness(Options::default()).await;
    // the killed flush's messages come back after a second
    let flusher = flusher_whose_messages_return_after_a_second(&h);
    for i in 0..3 {
        let reply = h
            .post(
                &alert_body(&format!("kf-{i}"), "policy_violation", "low", "E1"),
                &format!("wh-{i}"),
            )
            .await;
        assert_eq!(reply.status, 202);
    }
    // the Batch API call commits, and its answer never comes: the process dies while waiting for it
    kill_flush_after_its_batch_call_commits(&h, &flusher).await;
    let first = h.sim.records(TABLE);
    assert_eq!(first.len(), 1, "the aggregate was created before the kill");
    for i in 0..3 {
        assert_eq!(
            h.state(&format!("kf-{i}")).await.state,
            DeliveryState::Aggregated,
            "kf-{i}"
        );
    }

    // a new alert of the same employee, type and window arrives; the old messages come back
    let reply = h
        .post(&alert_body("kf-3", "policy_violation", "low", "E1"), "wh-3")
        .await;
    assert_eq!(reply.status, 202);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let report = flusher.flush().await;
    assert_eq!((report.resumed, report.alerts), (3, 1), "{report:?}");
    h.deliver_all().await;

    let records = h.sim.records(TABLE);
    assert_eq!(records.len(), 2, "the aggregate once, the later alert alone");
    let listed = listing_of(&h, "kf-");
    let aggregate = first[0]["sys_id"].as_str().unwrap().to_string();
    for i in 0..4 {
        let id = format!("kf-{i}");
        let e = h.state(&id).await;
        assert_eq!(e.state, DeliveryState::Completed, "{id}");
        let sys_id = e.record.unwrap().sys_id;
        assert_eq!(
            listed.get(&id),
            Some(&vec![sys_id.clone()]),
            "{id} is listed by its own record only"
        );
        assert_eq!(sys_id == aggregate, i < 3, "{id}");
    }
}

/// Issue 13, case 6: while a failed aggregate waits on the realtime retry path, a second copy of one of its
/// alerts' batch messages (SQS at-least-once, a failed delete) must not be delivered on its own.
#[tokio::test]
async fn a_lone_alert_a_killed_flush_sent_is_never_grouped_into_a_second_record() {
    let h = harness(Options {
        lease: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    // the killed flush's message comes back after a second, when its claim has run out too
    let flusher = flusher_whose_messages_return_after_a_second(&h);
    let reply = h
        .post(&alert_body("kl-0", "policy_violation", "low", "E2"), "wh-0")
        .await;
    assert_eq!(reply.status, 202);
    // its record (a group of one) is committed by the Batch API, and the process dies waiting for the answer
    kill_flush_after_its_batch_call_commits(&h, &flusher).await;
    assert_eq!(h.sim.records(TABLE).len(), 1, "its record was created before the kill");

    // more alerts of the same employee, type and window arrive; the old message comes back
    for i in 1..4 {
        let reply = h
            .post(
                &alert_body(&format!("kl-{i}"), "policy_violation", "low", "E2"),
                &format!("wh-{i}"),
            )
            .await;
        assert_eq!(reply.status, 202);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let report = flusher.flush().await;
    assert_eq!(report.alerts, 4, "{report:?}");
    h.deliver_all().await;

    let listed = listing_of(&h, "kl-");
    for i in 0..4 {
        let id = format!("kl-{i}");
        let e = h.state(&id).await;
        assert_eq!(e.state, DeliveryState::Completed, "{id}");
        assert_eq!(
            listed.get(&id),
            Some(&vec![e.record.unwrap().sys_id]),
            "{id} is listed by exactly one record, the one its ledger names"
        );
    }
    assert_eq!(
        h.sim.records(TABLE).len(),
        2,
        "kl-0 alone (found again), the later three together"
    );
}

#[tokio::test]
async fn a_copy_of_a_members_batch_message_is_delivered_with_its_aggregate_only() {
    let h = harness(Options::default()).await;
    for i in 0..3 {
        h.post(
            &alert_body(&format!("cp-{i}"), "policy_violation", "low", "E1"),
            &format!("wh-{i}"),
        )
        .await;
    }
    let copy = h
        .batch
        .list(10)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.body.contains("\"cp-0\""))
        .unwrap()
        .body;
    h.sim.inject(Fault {
        kind: FaultKind::ServerError { status: 503 },
        count: 1,
        table: None,
        method: Some("POST".into()),
    });
    let report = h.flusher.flush().await;
    assert_eq!(
        report.retried, 1,
        "the aggregate takes the realtime retry path: {report:?}"
    );

    // the copy arrives while the aggregate waits
    h.batch.send(&copy, Duration::ZERO).await.unwrap();
    let again = h.flusher.flush().await;
    assert_eq!((again.resumed, again.alerts, again.created), (1, 0, 0), "{again:?}");
    assert!(h.sim.records(TABLE).is_empty(), "nothing created on its own");
    h.deliver_all().await;

    let records = h.sim.records(TABLE);
    assert_eq!(records.len(), 1, "one record, for the aggregate");
    let listed = listing_of(&h, "cp-");
    let sys_id = records[0]["sys_id"].as_str().unwrap().to_string();
    for i in 0..3 {
        let e = h.state(&format!("cp-{i}")).await;
        assert_eq!(e.state, DeliveryState::Completed, "cp-{i}");
        assert_eq!(e.record.unwrap().sys_id, sys_id);
        assert_eq!(listed.get(&format!("cp-{i}")), Some(&vec![sys_id.clone()]));
    }
    assert_eq!(h.batch.depth().await.unwrap(), 0);
}

/// Issue 13, case 9: after the Batch API answered 429 with a Retry-After, the next flush calls nothing and
/// claims nothing: its messages wait (with jitter) until the instance takes calls again.
#[tokio::test]
async fn a_flush_while_servicenow_asked_to_wait_calls_nothing_and_holds_the_batch() {
    let h = harness(Options::default()).await;
    for i in 0..3 {
        h.post(
            &alert_body(&format!("rl-{i}"), "policy_violation", "low", &format!("E{i}")),
            &format!("wh-{i}"),
        )
        .await;
    }
    h.sim.inject(Fault {
        // (under the harness's longest honoured Retry-After, 5 s)
        kind: FaultKind::RateLimited { retry_after_s: 4 },
        count: 1,
        table: None,
        method: Some("POST".into()),
    });
    let first = h.flusher.flush().await;
    assert_eq!(first.retried, 3, "{first:?}");
    assert!(
        h.flusher.delivery.closed_until().is_some(),
        "the 429 closed the instance to calls"
    );

    for i in 3..5 {
        h.post(
            &alert_body(&format!("rl-{i}"), "policy_violation", "low", &format!("E{i}")),
            &format!("wh-{i}"),
        )
        .await;
    }
    let calls = h.sim.requests().len();
    let second = h.flusher.flush().await;
    assert_eq!((second.messages, second.left, second.alerts), (2, 2, 0), "{second:?}");
    assert_eq!(h.sim.requests().len(), calls, "no call while ServiceNow asked to wait");
    for i in 3..5 {
        let e = h.state(&format!("rl-{i}")).await;
        assert_eq!(
            (e.state, e.attempts),
            (DeliveryState::Queued, 0),
            "rl-{i} was not claimed"
        );
    }
    // the held messages come back no earlier than the Retry-After
    let now = relay_ports::Clock::now_ms(&relay_ports::SystemClock);
    for m in h.batch.list(10).await.unwrap() {
        assert!(
            m.visible_at_ms >= now + 3_000,
            "visible again in {} ms",
            m.visible_at_ms - now
        );
    }
}

#[tokio::test]
async fn a_batch_refused_for_an_hour_moves_to_the_realtime_queue_and_the_ledger_keeps_the_wait() {
    // a queue send waits 15 minutes at most: the flush sends the retry with that delay and the ledger
    // entry carries the hour, so the message coming back early is put back, not sent
    let h = harness(Options {
        max_retry_after: Duration::from_secs(7_200),
        window: Duration::from_secs(24 * 3600),
        ..Options::default()
    })
    .await;
    for i in 0..3 {
        let body = alert_body(&format!("hour-{i}"), "policy_violation", "low", &format!("E{i}"));
        h.post(&body, &format!("wh-hour-{i}")).await;
    }
    h.sim.inject(Fault {
        kind: FaultKind::RateLimited { retry_after_s: 3_600 },
        count: 1,
        table: None,
        method: Some("POST".into()),
    });
    let report = h.flusher.flush().await;
    assert_eq!((report.retried, report.left, report.created), (3, 0, 0), "{report:?}");
    assert_eq!(h.batch.depth().await.unwrap(), 0, "the batch messages are done with");
    assert_eq!(
        h.realtime.depth().await.unwrap(),
        3,
        "each record waits on the realtime queue"
    );
    let in_an_hour = relay_ports::Clock::now_ms(&relay_ports::SystemClock) + 3_500_000;
    for i in 0..3 {
        let e = h.state(&format!("hour-{i}")).await;
        assert_eq!(e.state, DeliveryState::Retrying, "hour-{i}: {e:?}");
        assert!(
            e.not_before_ms.is_some_and(|t| t >= in_an_hour),
            "hour-{i} waits the hour: {e:?}"
        );
    }
    assert!(h.sim.records(TABLE).is_empty());
}
