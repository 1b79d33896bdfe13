//! The loop back (issue 14, item 5): signed Standard Webhooks callbacks to the monitoring product —
//! `record.created` with the record's number, `record.updated` for each thread note (with its escalation)
//! and each lifecycle event, `record.state_changed` when the relay resolves the record — delivered through
//! the ledger and the realtime queue, retried like a record, each change once. Real SQLite, real HTTP to
//! the simulator and to a receiver on loopback.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{Harness, Options, alert_body, harness};
use relay_core::Config;
use relay_pipeline::callback::receiver::Receiver;
use relay_pipeline::sync::Syncer;
use relay_pipeline::{Deliverer, Envelope, Item};
use relay_ports::{AlertQueue, DeliveryState, PortError, ReceivedMessage};
use serde_json::{Value, json};

fn event(kind: &str, alert_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schema_version": "2", "event": kind, "alert_id": alert_id,
        "resolution": {"reason": "remediated", "note": "handled in the monitoring product"}
    }))
    .unwrap()
}

async fn with_receiver(script: &[u16], threads: bool) -> (Harness, Receiver) {
    let receiver = Receiver::start(script).await;
    let mut config = Config::default_config();
    config.threads.enabled = threads;
    config.threads.escalation = vec![relay_core::config::Escalation {
        priority: "P1".into(),
        alerts: Some(3),
        peak_risk: None,
        sum_risk: None,
        channels: None,
    }];
    let h = harness(Options {
        config,
        callback_url: Some(receiver.url.clone()),
        ..Options::default()
    })
    .await;
    (h, receiver)
}

/// One sync (the records read back), then the callbacks it queued delivered.
async fn sync(h: &Harness) -> relay_pipeline::sync::SyncReport {
    let syncer = Syncer::new(
        h.deliverer.delivery.clone(),
        Arc::new(h.router.config().clone()),
        Duration::from_millis(800),
    );
    let report = syncer.sync_until(common::now_s() * 1000 + 10_000).await;
    h.deliver_all().await;
    report
}

async fn post(h: &Harness, body: &[u8], webhook_id: &str) {
    let reply = h.post(body, webhook_id).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
}

/// The analyst resolves incident `inc` in the instance.
fn resolve_as_analyst(h: &Harness, inc: &str) {
    h.sim
        .act_as(
            None,
            "incident",
            inc,
            json!({"state": "6", "close_code": "Solution provided", "close_notes": "handled"}),
        )
        .expect("the analyst's resolution");
}

/// The `record.state_changed` callbacks received, in order.
fn state_changes(r: &Receiver) -> Vec<Value> {
    r.received()
        .iter()
        .filter(|c| c.kind() == "record.state_changed")
        .map(|c| c.json())
        .collect()
}

/// The callbacks received, by type, in order.
fn by_type(r: &Receiver) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for c in r.received() {
        out.entry(c.kind()).or_default().push(c.json());
    }
    out
}

#[tokio::test]
async fn a_thread_reports_its_record_then_each_change_signed_and_once() {
    let (h, receiver) = with_receiver(&[], true).await;
    // three high DLP alerts of one employee: one security incident, two notes, raised at the third
    for id in ["u-1", "u-2", "u-3"] {
        post(&h, &alert_body(id, "dlp", "high", "E1042"), &format!("wh-{id}")).await;
        h.deliver_all().await;
    }
    let sirs = h.sim.records("sn_si_incident");
    assert_eq!(sirs.len(), 1);
    let number = sirs[0]["number"].as_str().unwrap().to_string();
    // the first sync sets the record's baseline: nothing changed yet
    let first = sync(&h).await;
    assert_eq!((first.records, first.reads, first.changes), (1, 1, 0), "{first:?}");
    assert_eq!(
        h.status("u-2").await["servicenow"]["state"],
        "10",
        "the status shows the synced state"
    );
    for id in ["u-1", "u-2", "u-3"] {
        post(&h, &event("resolved", id), &format!("wh-{id}-r")).await;
        h.deliver_all().await;
    }
    assert_eq!(h.sim.records("sn_si_incident")[0]["state"], "3", "closed by the walk");
    let second = sync(&h).await;
    assert_eq!((second.changes, second.finished), (1, 1), "closed is final: {second:?}");
    let st = h.status("u-1").await;
    assert_eq!(st["servicenow"]["state"], "3", "{st:#}");
    assert_eq!(st["servicenow"]["disposition"], "resolved");
    assert_eq!(st["servicenow"]["close_code"], "Investigation completed");
    assert_eq!(st["servicenow"]["changed_by"], "relay");
    // nothing is left to send, and a closed record is no longer read
    let third = sync(&h).await;
    assert_eq!((third.records, third.reads), (0, 0), "{third:?}");

    receiver.verify_all();
    let got = receiver.received();
    let ids: BTreeSet<&str> = got.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "each callback once: {got:#?}");
    let types = by_type(&receiver);
    let created = &types["record.created"];
    assert_eq!(created.len(), 1, "{types:#?}");
    assert_eq!(created[0]["data"]["record"]["number"], number.as_str());
    assert_eq!(created[0]["data"]["record"]["table"], "sn_si_incident");
    assert_eq!(created[0]["data"]["alert_ids"], json!(["u-1"]));
    assert!(
        created[0]["data"]["record"]["link"]
            .as_str()
            .unwrap()
            .contains("sn_si_incident")
    );
    let updated = &types["record.updated"];
    let notes: Vec<&Value> = updated
        .iter()
        .filter(|u| u["data"]["change"] == "thread_note")
        .collect();
    let events: Vec<&Value> = updated.iter().filter(|u| u["data"]["change"] == "event").collect();
    assert_eq!(notes.len(), 2, "{updated:#?}");
    assert_eq!(notes[0]["data"]["alert_ids"], json!(["u-2"]));
    assert_eq!(
        notes[1]["data"].get("escalated_to_priority"),
        Some(&json!("1")),
        "the third alert raised it"
    );
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e["data"]["event"] == "resolved"));
    let changed = &types["record.state_changed"];
    assert_eq!(changed.len(), 1, "{changed:#?}");
    assert_eq!(changed[0]["data"]["state"], "3");
    assert_eq!(changed[0]["data"]["previous_state"], "10");
    assert_eq!(changed[0]["data"]["close_code"], "Investigation completed");
    assert_eq!(changed[0]["data"]["disposition"], "resolved");
    assert_eq!(changed[0]["data"]["changed_by"], "relay");
    assert_eq!(changed[0]["data"]["alert_ids"], json!(["u-1"]));
    assert_eq!(changed[0]["data"]["record"]["number"], number.as_str());
    // created came first, the state change last
    assert_eq!(got[0].kind(), "record.created");
    assert_eq!(got.last().unwrap().kind(), "record.state_changed");
    // the callbacks' entries are settled; the alerts' are untouched by them
    for c in &got {
        let e = h.state(&format!("callback:{}", c.id)).await;
        assert_eq!(e.state, DeliveryState::Completed, "{e:?}");
        assert_eq!(e.delivery, "callback");
    }
    let m = h.metrics.take();
    assert_eq!(common::total(&m, "CallbacksSent", &[]), got.len() as u64);
}

#[tokio::test]
async fn a_dismissed_alert_reports_its_hr_case_closed_as_a_false_positive() {
    let (h, receiver) = with_receiver(&[], false).await;
    let mut v: Value = serde_json::from_slice(&common::sample("seed-productivity-non-work-browsing.json")).unwrap();
    v["severity"] = json!("high");
    post(&h, &serde_json::to_vec(&v).unwrap(), "wh-p").await;
    h.deliver_all().await;
    let body = std::fs::read(common::repo().join("events/lifecycle/productivity-dismissed.json")).unwrap();
    post(&h, &body, "wh-p-d").await;
    h.deliver_all().await;
    sync(&h).await;
    receiver.verify_all();
    let types = by_type(&receiver);
    assert_eq!(types["record.created"].len(), 1, "{types:#?}");
    let changed = &types["record.state_changed"];
    assert_eq!(changed.len(), 1, "{types:#?}");
    assert_eq!(changed[0]["data"]["disposition"], "false_positive");
    assert_eq!(changed[0]["data"]["record"]["table"], "sn_hr_core_case");
}

#[tokio::test]
async fn a_failing_receiver_is_retried_until_it_takes_the_callback() {
    let (h, receiver) = with_receiver(&[500, 503], false).await;
    post(&h, &alert_body("f-1", "dlp", "critical", "E1"), "wh-f-1").await;
    h.deliver_all().await;
    let got = receiver.received();
    assert_eq!(got.len(), 3, "two refusals, then accepted: {got:#?}");
    assert!(got.iter().all(|c| c.id == got[0].id), "one webhook id on every attempt");
    receiver.verify_all();
    let e = h.state(&format!("callback:{}", got[0].id)).await;
    assert_eq!(e.state, DeliveryState::Completed);
    assert_eq!(e.attempts, 3);
    assert_eq!(
        h.state("f-1").await.state,
        DeliveryState::Completed,
        "the record does not wait for it"
    );
}

#[tokio::test]
async fn a_receiver_that_refuses_gets_the_callback_dead_lettered_with_a_notice() {
    let (h, receiver) = with_receiver(&[400], false).await;
    post(&h, &alert_body("r-1", "dlp", "critical", "E1"), "wh-r-1").await;
    h.deliver_all().await;
    let got = receiver.received();
    assert_eq!(got.len(), 1, "a 400 is not retried");
    let e = h.state(&format!("callback:{}", got[0].id)).await;
    assert_eq!(e.state, DeliveryState::Failed);
    assert!(e.last_error.as_deref().unwrap().contains("HTTP 400"), "{e:?}");
    let dead = h.dlq.receive(10, Duration::from_millis(50)).await.unwrap();
    assert_eq!(dead.len(), 1);
    let env = Envelope::from_json(&dead[0].body).unwrap();
    assert!(matches!(env.item, Item::Callback { .. }), "{env:?}");
    assert_eq!(env.dead_letter.unwrap().error_class, "permanent");
    assert_eq!(h.state("r-1").await.state, DeliveryState::Completed);
}

/// The realtime queue, refusing the first `fail` sends (a queue outage while a record is recorded).
struct FlakySends {
    inner: Arc<dyn AlertQueue>,
    fail: AtomicU32,
}

#[async_trait]
impl AlertQueue for FlakySends {
    async fn send(&self, body: &str, delay: Duration) -> Result<String, PortError> {
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(PortError::Unavailable("queue service down".into()));
        }
        self.inner.send(body, delay).await
    }
    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<ReceivedMessage>, PortError> {
        self.inner.receive(max, wait).await
    }
    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        self.inner.delete(receipt).await
    }
    async fn change_visibility(&self, receipt: &str, delay: Duration) -> Result<(), PortError> {
        self.inner.change_visibility(receipt, delay).await
    }
    async fn depth(&self) -> Result<u64, PortError> {
        self.inner.depth().await
    }
}

#[tokio::test]
async fn a_callback_that_could_not_be_queued_keeps_the_alert_open_until_it_is_and_is_sent_once() {
    let (h, receiver) = with_receiver(&[], false).await;
    let mut ports = h.ports.clone();
    ports.realtime = Arc::new(FlakySends {
        inner: h.ports.realtime.clone(),
        fail: AtomicU32::new(1),
    });
    let deliverer = Deliverer::new(Arc::new(h.deliverer.delivery.with_ports(ports)));
    post(&h, &alert_body("q-1", "dlp", "critical", "E1"), "wh-q-1").await;
    // the record is created, its callback cannot be queued: the alert is not recorded as done (it would
    // never queue the callback again) but marked for a lookup
    deliverer.poll_once(10, Duration::from_millis(30)).await.unwrap();
    let e = h.state("q-1").await;
    assert_ne!(e.state, DeliveryState::Completed, "{e:?}");
    assert!(e.needs_lookup);
    assert_eq!(h.sim.records("sn_si_incident").len(), 1);
    // the retry finds the record, queues the callback, and completes
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while h.realtime.depth().await.unwrap() > 0 && std::time::Instant::now() < deadline {
        deliverer.poll_once(10, Duration::from_millis(30)).await.unwrap();
    }
    assert_eq!(h.state("q-1").await.state, DeliveryState::Completed);
    assert_eq!(h.sim.records("sn_si_incident").len(), 1, "found, not created again");
    let got = receiver.received();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].kind(), "record.created");
}

#[tokio::test]
async fn a_duplicated_callback_message_is_sent_once() {
    let (h, receiver) = with_receiver(&[], false).await;
    post(&h, &alert_body("d-1", "dlp", "critical", "E1"), "wh-d-1").await;
    // take the alert's message, deliver it (which queues the callback), then copy the callback's message
    h.deliverer.poll_once(1, Duration::from_millis(30)).await.unwrap();
    let msgs = h.realtime.receive(10, Duration::from_millis(30)).await.unwrap();
    assert_eq!(msgs.len(), 1, "the callback's message");
    h.realtime.send(&msgs[0].body, Duration::ZERO).await.unwrap();
    h.realtime
        .change_visibility(&msgs[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    h.deliver_all().await;
    assert_eq!(receiver.received().len(), 1, "the ledger claim dedupes the copy");
}

/// An incident whose analyst resolves it, reopens it and resolves it again: three state changes, each
/// reported once with who made it, under three ids (a second resolution is not the first one again).
#[tokio::test]
async fn the_sync_reports_each_state_change_an_analyst_makes() {
    let (h, receiver) = with_receiver(&[], false).await;
    post(&h, &alert_body("a-1", "custom", "critical", "E7"), "wh-a-1").await;
    h.deliver_all().await;
    let inc = h.state("a-1").await.record.unwrap().sys_id;
    assert_eq!(sync(&h).await.changes, 0, "the baseline");
    assert_eq!(sync(&h).await.changes, 0, "nothing changed: nothing reported");
    let act = |fields: Value| {
        h.sim
            .act_as(None, "incident", &inc, fields)
            .expect("the analyst's change")
    };
    act(json!({"state": "2"}));
    assert_eq!(sync(&h).await.changes, 1);
    act(json!({"state": "6", "close_code": "Solution provided", "close_notes": "USB policy reminder sent"}));
    assert_eq!(sync(&h).await.changes, 1);
    act(json!({"state": "2"}));
    act(json!({"state": "6", "close_code": "Workaround provided", "close_notes": "blocked the device"}));
    // two moves between syncs: the sync sees where the record is now
    assert_eq!(sync(&h).await.changes, 0, "6 again: the same state the last sync saw");
    act(json!({"state": "2"}));
    assert_eq!(sync(&h).await.changes, 1, "reopened");
    act(json!({"state": "6", "close_code": "Workaround provided", "close_notes": "blocked the device"}));
    assert_eq!(sync(&h).await.changes, 1, "resolved again");
    receiver.verify_all();
    let changes: Vec<Value> = state_changes(&receiver);
    let states: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| {
            (
                c["data"]["previous_state"].as_str().unwrap(),
                c["data"]["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(states, [("1", "2"), ("2", "6"), ("6", "2"), ("2", "6")]);
    assert!(
        changes.iter().all(|c| c["data"]["changed_by"] == "analyst"),
        "{changes:#?}"
    );
    assert_eq!(changes[3]["data"]["close_code"], "Workaround provided");
    assert_eq!(changes[1]["data"]["disposition"], "resolved");
    assert_eq!(changes[2]["data"]["disposition"], "open");
    let ids: BTreeSet<String> = receiver.received().iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids.len(), receiver.received().len());
    let st = h.status("a-1").await;
    assert_eq!(
        (
            st["servicenow"]["state"].as_str(),
            st["servicenow"]["changed_by"].as_str()
        ),
        (Some("6"), Some("analyst")),
        "{st:#}"
    );
}

#[tokio::test]
async fn a_sync_cut_off_after_queueing_a_change_reports_it_once_on_the_next_run() {
    let (h, receiver) = with_receiver(&[], false).await;
    post(&h, &alert_body("k-1", "custom", "critical", "E7"), "wh-k-1").await;
    h.deliver_all().await;
    let inc = h.state("k-1").await.record.unwrap().sys_id;
    sync(&h).await;
    h.sim.act_as(None, "incident", &inc, json!({"state": "2"})).unwrap();
    // the sync records the change (pending), queues its callback, and is cut off before it clears the mark
    let ledger = Arc::new(common::FaultyLedger::over(h.ports.ledger.clone()));
    ledger.fail_observe_after.store(1, Ordering::SeqCst);
    let mut ports = h.ports.clone();
    ports.ledger = ledger.clone();
    let cut = Syncer::new(
        Arc::new(h.deliverer.delivery.with_ports(ports)),
        Arc::new(h.router.config().clone()),
        Duration::from_millis(800),
    );
    let report = cut.sync_until(common::now_s() * 1000 + 10_000).await;
    assert_eq!((report.changes, report.errors), (0, 1), "{report:?}");
    h.deliver_all().await;
    assert_eq!(
        receiver.received().len(),
        2,
        "created, and the change queued before the cut"
    );
    // the next runs see the change again, queue it under the same id, and record it
    // the next run queues the pending change again (the same id, taken once) and clears the mark; the
    // analyst's next move is a change of its own
    resolve_as_analyst(&h, &inc);
    assert_eq!(sync(&h).await.changes, 1, "the resolution");
    assert_eq!(sync(&h).await.changes, 0);
    let changed: Vec<_> = state_changes(&receiver);
    let moves: Vec<(&str, &str)> = changed
        .iter()
        .map(|c| {
            (
                c["data"]["previous_state"].as_str().unwrap(),
                c["data"]["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [("1", "2"), ("2", "6")],
        "each change once, none lost: {changed:#?}"
    );
}

#[tokio::test]
async fn two_syncs_at_once_report_a_change_once() {
    let (h, receiver) = with_receiver(&[], false).await;
    for n in 0..3 {
        post(
            &h,
            &alert_body(&format!("c-{n}"), "custom", "critical", &format!("E{n}")),
            &format!("wh-c-{n}"),
        )
        .await;
    }
    h.deliver_all().await;
    sync(&h).await;
    for n in 0..3 {
        let inc = h.state(&format!("c-{n}")).await.record.unwrap().sys_id;
        h.sim.act_as(None, "incident", &inc, json!({"state": "2"})).unwrap();
    }
    let syncer = || {
        Syncer::new(
            h.deliverer.delivery.clone(),
            Arc::new(h.router.config().clone()),
            Duration::from_millis(800),
        )
    };
    let (a, b) = (syncer(), syncer());
    let deadline = common::now_s() * 1000 + 10_000;
    let (ra, rb) = tokio::join!(a.sync_until(deadline), b.sync_until(deadline));
    assert!(ra.changes + rb.changes >= 3, "{ra:?} {rb:?}");
    h.deliver_all().await;
    assert_eq!(sync(&h).await.changes, 0);
    let changed = receiver
        .received()
        .into_iter()
        .filter(|c| c.kind() == "record.state_changed")
        .count();
    assert_eq!(changed, 3, "one per record");
}

#[tokio::test]
async fn the_sync_pages_through_many_records_a_hundred_per_read() {
    let (h, _receiver) = with_receiver(&[], false).await;
    for n in 0..150 {
        post(
            &h,
            &alert_body(&format!("m-{n}"), "custom", "critical", &format!("E{n}")),
            &format!("wh-m-{n}"),
        )
        .await;
    }
    h.deliver_all().await;
    let reads_before = h.sim.requests().len();
    let report = sync(&h).await;
    assert_eq!(
        (report.records, report.reads, report.missing),
        (150, 2, 0),
        "{report:?}"
    );
    let reads: Vec<_> = h.sim.requests()[reads_before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/api/now/table/incident"))
        .cloned()
        .collect();
    assert_eq!(reads.len(), 2, "{reads:#?}");
}

#[tokio::test]
async fn with_the_breaker_open_the_sync_makes_no_call() {
    let (h, _receiver) = with_receiver(&[], false).await;
    post(&h, &alert_body("b-1", "custom", "critical", "E7"), "wh-b-1").await;
    h.deliver_all().await;
    h.deliverer.delivery.observe(&servicenow_client::Outcome::Retryable {
        retry_after: Some(Duration::from_secs(30)),
        reason: "HTTP 429".into(),
    });
    let before = h.sim.requests().len();
    let report = sync(&h).await;
    assert!(
        report.stopped.as_deref().unwrap().contains("circuit breaker"),
        "{report:?}"
    );
    assert_eq!(h.sim.requests().len(), before);
}

#[tokio::test]
async fn a_callback_near_the_receive_limit_is_given_up_with_a_notice() {
    let receiver = Receiver::start(&[500; 20]).await;
    // the deliverer gives a message up 10 receives before the queue's limit: here at its third receive
    let h = harness(Options {
        callback_url: Some(receiver.url.clone()),
        max_receives: Some(13),
        ..Options::default()
    })
    .await;
    post(&h, &alert_body("l-1", "dlp", "critical", "E1"), "wh-l-1").await;
    h.deliver_all().await;
    assert_eq!(h.state("l-1").await.state, DeliveryState::Completed);
    let got = receiver.received();
    assert_eq!(got.len(), 2, "two refused attempts, then given up: {got:#?}");
    let e = h.state(&format!("callback:{}", got[0].id)).await;
    assert_eq!(
        (e.state, e.last_error_class.as_deref()),
        (DeliveryState::Failed, Some("receive_limit")),
        "{e:?}"
    );
    let dead = h.dlq.receive(10, Duration::from_millis(50)).await.unwrap();
    assert_eq!(dead.len(), 1);
    let notices = h.store.notifications_for(&e.alert_id).await.unwrap();
    assert!(
        notices.iter().any(|n| n.notice.error_class == "receive_limit"),
        "{notices:?}"
    );
}

const PUSH_SECRET: &str = "whsec_cHVzaC1zZWNyZXQtb2YtdGhlLWJ1c2luZXNzLXJ1bGU=";

/// The ingest of `h` taking pushes signed with [`PUSH_SECRET`].
fn pushing(h: &Harness) -> relay_pipeline::Ingest {
    relay_pipeline::Ingest::new(
        &h.ports,
        h.router.clone(),
        relay_pipeline::SigningKeys::Fixed(h.keys.clone()),
        relay_pipeline::IngestSettings::default(),
    )
    .with_push_keys(Some(relay_pipeline::SigningKeys::Fixed(
        relay_pipeline::WebhookSecrets::parse(&[PUSH_SECRET]).unwrap(),
    )))
}

/// A push as a business rule sends it, signed with `secret`.
async fn push(ingest: &relay_pipeline::Ingest, body: &Value, secret: &str) -> relay_pipeline::Reply {
    let body = body.to_string();
    let ts = common::now_s();
    let id = format!("push-{}", rand_id());
    let sig = relay_pipeline::WebhookSecrets::parse(&[secret])
        .unwrap()
        .sign(&id, ts, body.as_bytes());
    let ts = ts.to_string();
    ingest
        .push(relay_pipeline::WebhookRequest {
            content_type: Some("application/json"),
            webhook_id: Some(&id),
            webhook_timestamp: Some(&ts),
            webhook_signature: Some(&sig),
            body: body.as_bytes(),
        })
        .await
}

fn rand_id() -> u64 {
    static N: AtomicU32 = AtomicU32::new(0);
    u64::from(N.fetch_add(1, Ordering::SeqCst))
}

#[tokio::test]
async fn a_pushed_change_is_read_back_and_called_back_at_once() {
    let (h, receiver) = with_receiver(&[], false).await;
    post(&h, &alert_body("p-1", "custom", "critical", "E7"), "wh-p-1").await;
    h.deliver_all().await;
    let inc = h.state("p-1").await.record.unwrap().sys_id;
    let ingest = pushing(&h);
    // the analyst resolves it; the business rule pushes; no periodic sync runs
    resolve_as_analyst(&h, &inc);
    let reply = push(&ingest, &json!({"table": "incident", "sys_id": inc}), PUSH_SECRET).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    h.deliver_all().await;
    receiver.verify_all();
    let changed: Vec<Value> = state_changes(&receiver);
    assert_eq!(changed.len(), 1, "{changed:#?}");
    assert_eq!(changed[0]["data"]["state"], "6");
    assert_eq!(changed[0]["data"]["changed_by"], "analyst");
    assert_eq!(h.status("p-1").await["servicenow"]["disposition"], "resolved");
    // the same push again, and the periodic sync after it: the change was reported once
    assert_eq!(
        push(&ingest, &json!({"table": "incident", "sys_id": inc}), PUSH_SECRET)
            .await
            .status,
        202
    );
    h.deliver_all().await;
    assert_eq!(sync(&h).await.changes, 0);
    let n = receiver
        .received()
        .iter()
        .filter(|c| c.kind() == "record.state_changed")
        .count();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_push_is_refused_unless_it_is_signed_and_names_a_record_the_relay_follows() {
    let (h, _receiver) = with_receiver(&[], false).await;
    post(&h, &alert_body("r-1", "custom", "critical", "E7"), "wh-r-1").await;
    h.deliver_all().await;
    let inc = h.state("r-1").await.record.unwrap().sys_id;
    let ingest = pushing(&h);
    let ok = json!({"table": "incident", "sys_id": inc});
    // signed with another secret (the webhooks')
    let r = push(&ingest, &ok, common::SECRET).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // a record the relay did not make
    let r = push(
        &ingest,
        &json!({"table": "incident", "sys_id": "0123456789abcdef0123456789abcdef"}),
        PUSH_SECRET,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("not a record the relay made"), "{}", r.body);
    // bad bodies, named
    for bad in [
        json!({"table": "incident"}),
        json!({"table": "inc;ident", "sys_id": inc}),
        json!({"table": "incident", "sys_id": "x", "more": 1}),
    ] {
        let r = push(&ingest, &bad, PUSH_SECRET).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    // nothing was queued by any of them
    assert_eq!(h.realtime.depth().await.unwrap(), 0);
    // the push endpoint off (no push secret): 404 saying so
    let r = push(&h.ingest, &ok, PUSH_SECRET).await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("push endpoint is off"), "{}", r.body);
    // a record in a final state is no longer followed: 200, nothing queued
    resolve_as_analyst(&h, &inc);
    h.sim
        .act_as(Some("admin"), "incident", &inc, json!({"state": "7"}))
        .unwrap();
    sync(&h).await;
    let r = push(&ingest, &ok, PUSH_SECRET).await;
    assert_eq!(
        (r.status, r.json()["queued"].clone()),
        (200, json!(false)),
        "{}",
        r.body
    );
}
