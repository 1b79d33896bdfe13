//! Every pipeline path emits its telemetry events: the metric with its dimensions and, where the event has
//! one, its audit line — over the real adapters of the harness (SQLite, the simulator over HTTP).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use relay_pipeline::WebhookRequest;
use relay_ports::AlertQueue;
use serde_json::Value;
use servicenow_sim::{Fault, FaultKind};

/// Audit and log lines (JSON) written on this thread while the guard lives.
struct Lines {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Lines {
    fn start() -> Lines {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(writer.clone()))
            .finish();
        Lines {
            buf,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// The audit events seen so far, as JSON.
    fn audit(&self) -> Vec<Value> {
        let text = String::from_utf8(self.buf.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["target"] == "audit")
            .collect()
    }
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn events<'a>(audit: &'a [Value], event: &str) -> Vec<&'a Value> {
    audit.iter().filter(|v| v["event"] == event).collect()
}

#[tokio::test]
async fn ingest_emits_accepted_duplicate_and_every_rejection_reason() {
    let lines = Lines::start();
    let h = harness(Options::default()).await;
    let usb = sample("seed-usb-copy-847-files.json");
    assert_eq!(h.post(&usb, "wh-1").await.status, 202);
    assert_eq!(h.post(&usb, "wh-1").await.status, 202);
    // a bad signature, a wrong content type, an invalid body, a body over the limit
    let ts = now_s().to_string();
    for (content_type, signature, body, status) in [
        ("application/json", "v1,AAAA", usb.clone(), 401),
        ("text/plain", "", usb.clone(), 415),
        ("application/json", "", br#"{"alert_id": 1}"#.to_vec(), 400),
        ("application/json", "", vec![b' '; 300 * 1024], 413),
    ] {
        let signature = if signature.is_empty() {
            h.keys.sign("wh-x", ts.parse().unwrap(), &body)
        } else {
            signature.to_string()
        };
        let r = h
            .ingest
            .accept(
                WebhookRequest {
                    content_type: Some(content_type),
                    webhook_id: Some("wh-x"),
                    webhook_timestamp: Some(&ts),
                    webhook_signature: Some(&signature),
                    body: &body,
                },
                "http://relay.test",
            )
            .await;
        assert_eq!(r.status, status, "{:?}", r.body);
    }
    let m = h.metrics.take();
    assert_eq!(
        total(&m, "AlertsAccepted", &[("Severity", "critical"), ("AlertType", "dlp")]),
        1,
        "{m:?}"
    );
    assert_eq!(total(&m, "AlertsDuplicate", &[("Severity", "critical")]), 1);
    for reason in ["signature", "not_json", "invalid", "too_large"] {
        assert_eq!(total(&m, "AlertsRejected", &[("Reason", reason)]), 1, "{reason}: {m:?}");
    }
    // the queue is down: the alert is routed (and audited), then refused as unavailable
    let mut down = harness(Options::default()).await;
    down.rebuild_ingest(|p| p.critical = Arc::new(DownQueue));
    assert_eq!(down.post(&usb, "wh-2").await.status, 503);
    let m = down.metrics.take();
    assert_eq!(total(&m, "AlertsRejected", &[("Reason", "unavailable")]), 1, "{m:?}");
    assert_eq!(total(&m, "AlertsAccepted", &[]), 0, "{m:?}");
    let audit = lines.audit();
    let routed = events(&audit, "routed");
    // accepted, duplicate, and the alert routed before its enqueue failed
    assert_eq!(routed.len(), 3, "{audit:?}");
    let first = routed[0];
    for field in [
        "alert_id",
        "rule",
        "table",
        "priority",
        "assignment_group",
        "config_hash",
    ] {
        assert!(first.get(field).is_some(), "routed lacks {field}: {first}");
    }
    assert_eq!(first["rule"], "dlp-usb-mass-copy");
    assert_eq!(routed[1]["duplicate"], true);
    assert!(
        !audit.iter().any(|v| v.to_string().contains("847 files")),
        "the payload's text never reaches the audit trail"
    );
}

#[tokio::test]
async fn delivery_emits_created_latency_call_and_retry_events() {
    let lines = Lines::start();
    let h = harness(Options::default()).await;
    h.sim.inject(Fault {
        kind: FaultKind::ServerError { status: 503 },
        count: 1,
        table: Some("sn_si_incident".into()),
        method: Some("POST".into()),
    });
    h.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    h.deliver_all().await;
    let m = h.metrics.take();
    assert_eq!(
        total(
            &m,
            "RecordsCreated",
            &[("RecordType", "security_incident"), ("Severity", "critical")]
        ),
        1,
        "{m:?}"
    );
    assert_eq!(total(&m, "DeliveryLatencyMs", &[("Severity", "critical")]), 1);
    assert_eq!(total(&m, "DeliveryRetries", &[("ErrorClass", "retryable")]), 1);
    assert_eq!(total(&m, "ServiceNowCallMs", &[("Outcome", "retryable")]), 1);
    assert!(total(&m, "ServiceNowCallMs", &[("Outcome", "created")]) >= 1);
    let audit = lines.audit();
    let retrying = events(&audit, "retrying");
    assert_eq!(retrying.len(), 1, "{audit:?}");
    assert_eq!(retrying[0]["error_class"], "retryable");
    let delivered = events(&audit, "delivered");
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0]["number"].as_str().unwrap().starts_with("SIR"));
    assert_eq!(delivered[0]["attempts"], 2);
}

#[tokio::test]
async fn give_ups_and_unreadable_messages_emit_failed_with_their_class() {
    let lines = Lines::start();
    let h = harness(Options {
        username: "readonly",
        ..Options::default()
    })
    .await;
    h.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    h.realtime.send("{not an envelope", Duration::ZERO).await.unwrap();
    h.deliver_all().await;
    let m = h.metrics.take();
    assert_eq!(total(&m, "DeliveryFailed", &[("ErrorClass", "permanent")]), 1, "{m:?}");
    assert_eq!(total(&m, "DeliveryFailed", &[("ErrorClass", "unreadable")]), 1, "{m:?}");
    let audit = lines.audit();
    let failed = events(&audit, "failed");
    assert_eq!(failed.len(), 2, "{audit:?}");
    assert!(
        failed
            .iter()
            .any(|f| f["error_class"] == "permanent" && f["alert_id"] == "emon-20261120-7f3a9c")
    );
    assert!(failed.iter().any(|f| f["error_class"] == "unreadable"));
}

#[tokio::test]
async fn a_flush_emits_batch_size_and_one_record_per_aggregate() {
    let h = harness(Options::default()).await;
    for i in 0..4 {
        let body = alert_body(&format!("low-{i}"), "policy_violation", "low", "E7");
        assert_eq!(h.post(&body, &format!("wh-{i}")).await.status, 202);
    }
    let report = h.flusher.flush().await;
    assert_eq!(
        (report.alerts, report.records, report.batch_calls),
        (4, 1, 1),
        "{report:?}"
    );
    let m = h.metrics.take();
    assert_eq!(total(&m, "BatchSize", &[]), 1, "{m:?}");
    assert_eq!(total(&m, "RecordsCreated", &[("Severity", "batch")]), 1, "{m:?}");
    assert_eq!(total(&m, "DeliveryLatencyMs", &[]), 4, "one latency sample per alert");
    assert_eq!(
        total(
            &m,
            "AlertsAccepted",
            &[("Severity", "low"), ("AlertType", "policy_violation")]
        ),
        4
    );
}
