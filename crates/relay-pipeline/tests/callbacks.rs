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

async fn post(h: &Harness, body: &[u8], webhook_id: &str) {
    let reply = h.post(body, webhook_id).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
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
    for id in ["u-1", "u-2", "u-3"] {
        post(&h, &event("resolved", id), &format!("wh-{id}-r")).await;
        h.deliver_all().await;
    }
    assert_eq!(h.sim.records("sn_si_incident")[0]["state"], "3", "closed by the walk");
    // nothing is left to send
    h.deliver_all().await;

    receiver.verify_all(common::now_s());
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
    assert_eq!(changed[0]["data"]["close_code"], "Investigation completed");
    assert_eq!(changed[0]["data"]["disposition"], "resolved");
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
    receiver.verify_all(common::now_s());
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
    receiver.verify_all(common::now_s());
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
