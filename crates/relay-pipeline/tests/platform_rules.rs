//! The product against the platform rules of issue 12: an HR case goes to a human_resources group, a policy
//! exception's valid_to is never in the past, and an employee document carries its file (so the cleanup job
//! keeps it).

mod common;

use std::time::Duration;

use common::*;
use relay_core::Config;
use relay_ports::DeliveryState;
use serde_json::json;
use servicenow_sim::{Fault, FaultKind};

fn body(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn an_hr_case_keeps_its_hr_partner_group_for_every_department() {
    let h = harness(Options::default()).await;
    for (id, employee, department, group) in [
        ("hr-eng", "E1042", "Engineering", "HR Partners - Engineering"),
        ("hr-legal", "E5003", "Legal", "HR Partners"),
    ] {
        let v = json!({
            "alert_id": id, "alert_type": "productivity", "severity": "high",
            "occurred_at": "2026-11-20T14:03:00Z",
            "employee": {"id": employee, "department": department},
            "description": "non-work browsing", "risk_score": 40,
            "evidence_url": "https://monitor.example.com/a/1",
            "details": {"hours_per_day": 5, "categories": ["video"], "weekly_trend": [3.5, 4.2, 5.0]}
        });
        assert_eq!(h.post(&body(v), &format!("wh-{id}")).await.status, 202);
        h.deliver_all().await;
        assert_eq!(h.state(id).await.state, DeliveryState::Completed, "{id}");
        let cases = h.sim.records("sn_hr_core_case");
        let case = cases
            .iter()
            .find(|c| c["correlation_id"].as_str().is_some_and(|k| k.ends_with(id)))
            .unwrap();
        // the instance keeps only a human_resources group on an HR case (it blanks any other)
        assert_eq!(case["assignment_group.display_value"], group, "{id}: {case}");
    }
}

#[tokio::test]
async fn an_old_policy_violation_gets_an_exception_valid_from_now_on() {
    let h = harness(Options::default()).await;
    let occurred = time::OffsetDateTime::now_utc() - time::Duration::days(60);
    let occurred_at = occurred.format(&time::format_description::well_known::Rfc3339).unwrap();
    let v = json!({
        "alert_id": "pv-old", "alert_type": "policy_violation", "severity": "high",
        "occurred_at": occurred_at,
        "employee": {"id": "E5003", "department": "Legal"},
        "description": "blocked file-sharing site", "risk_score": 48,
        "evidence_url": "https://monitor.example.com/a/2",
        "details": {"policy": "AUP", "history_30d": {"violations": 0, "warnings": 2}}
    });
    assert_eq!(h.post(&body(v), "wh-pv-old").await.status, 202);
    h.deliver_all().await;
    assert_eq!(h.state("pv-old").await.state, DeliveryState::Completed);
    let records = h.sim.records("sn_compliance_policy_exception");
    assert_eq!(records.len(), 1);
    let today = time::OffsetDateTime::now_utc().date();
    let valid_to = records[0]["valid_to"].as_str().unwrap();
    assert_eq!(records[0]["valid_from"], occurred.date().to_string());
    assert!(
        valid_to >= (today + time::Duration::days(29)).to_string().as_str(),
        "valid_to {valid_to} runs from the day it was routed"
    );
}

/// The shipped configuration with custom alerts routed to an employee document.
fn document_config() -> Config {
    let yaml = std::fs::read_to_string(repo().join("config/relay.yaml")).unwrap();
    let yaml = yaml.replacen(
        "rules:\n",
        "rules:\n  - name: document-it\n    when: {field: alert_type, eq: custom}\n    record_type: employee_document\n",
        1,
    );
    Config::from_yaml(&yaml).unwrap()
}

async fn document_harness() -> Harness {
    harness(Options {
        config: document_config(),
        ..Options::default()
    })
    .await
}

const DOCUMENTS: &str = "sn_hr_ef_employee_document";

/// The files attached to `record` (a stored row), by name.
fn files_of(h: &Harness, record: &serde_json::Value) -> Vec<String> {
    h.sim
        .records("sys_attachment")
        .iter()
        .filter(|a| a["table_sys_id"] == record["sys_id"])
        .map(|a| a["file_name"].as_str().unwrap().to_string())
        .collect()
}

fn upload_fault(kind: FaultKind, count: u32) -> Fault {
    Fault {
        kind,
        count,
        table: Some("sys_attachment".into()),
        method: Some("POST".into()),
    }
}

#[tokio::test]
async fn an_employee_document_whose_file_upload_fails_is_not_delivered_until_its_file_is_there() {
    let h = document_harness().await;
    h.sim.inject(upload_fault(FaultKind::ServerError { status: 503 }, 1));
    assert_eq!(
        h.post(&alert_body("doc-503", "custom", "high", "E5001"), "wh-doc-503")
            .await
            .status,
        202
    );
    // the first attempt creates the record, its file upload fails: not delivered
    h.deliverer.poll_once(10, Duration::from_millis(30)).await.unwrap();
    let first = h.state("doc-503").await;
    assert_eq!(first.state, DeliveryState::Retrying, "{first:?}");
    let error = first.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("exists but its document file is not uploaded") && error.contains("503"),
        "{error}"
    );
    assert_eq!(h.sim.records(DOCUMENTS).len(), 1);
    // the retry finds the record by its key, sees no file, uploads it once
    h.deliver_all().await;
    let done = h.state("doc-503").await;
    assert_eq!(done.state, DeliveryState::Completed, "{done:?}");
    let docs = h.sim.records(DOCUMENTS);
    assert_eq!(docs.len(), 1, "never a second document");
    assert_eq!(
        done.record.as_ref().unwrap().sys_id,
        docs[0]["sys_id"].as_str().unwrap()
    );
    assert_eq!(files_of(&h, &docs[0]), vec![relay_core::DOCUMENT_FILE.to_string()]);
    assert!(
        h.sim
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/api/now/attachment"),
        "the retry listed the record's attachments"
    );
    // so the daily cleanup keeps it
    h.sim.advance_clock(Duration::from_secs(86_400));
    assert_eq!(h.sim.records(DOCUMENTS).len(), 1);
}

#[tokio::test]
async fn a_document_file_whose_upload_answer_was_lost_is_not_uploaded_twice() {
    let h = document_harness().await;
    // the upload commits, its answer never comes
    h.sim.inject(upload_fault(FaultKind::TimeoutAfterWrite, 1));
    assert_eq!(
        h.post(&alert_body("doc-lost", "custom", "high", "E5001"), "wh-doc-lost")
            .await
            .status,
        202
    );
    h.deliver_all().await;
    let done = h.state("doc-lost").await;
    assert_eq!(done.state, DeliveryState::Completed, "{done:?}");
    assert!(done.attempts >= 2, "{done:?}");
    let docs = h.sim.records(DOCUMENTS);
    assert_eq!(docs.len(), 1);
    assert_eq!(
        files_of(&h, &docs[0]),
        vec![relay_core::DOCUMENT_FILE.to_string()],
        "the file the lost answer stood for is found, not uploaded again"
    );
}

#[tokio::test]
async fn a_flushed_employee_document_whose_file_upload_fails_is_finished_by_the_retry() {
    let h = document_harness().await;
    // an aggregate (two alerts of one employee) and a lone alert, both medium: the flush sends them
    for (id, employee) in [("doc-m1", "E5001"), ("doc-m2", "E5001"), ("doc-m3", "E5002")] {
        assert_eq!(
            h.post(&alert_body(id, "custom", "medium", employee), &format!("wh-{id}"))
                .await
                .status,
            202
        );
    }
    h.sim.inject(upload_fault(FaultKind::ServerError { status: 503 }, 2));
    let report = h.flusher.flush().await;
    assert_eq!((report.alerts, report.left), (3, 0), "{report:?}");
    assert_eq!(h.sim.records(DOCUMENTS).len(), 2, "{report:?}");
    for id in ["doc-m1", "doc-m2", "doc-m3"] {
        assert_ne!(
            h.state(id).await.state,
            DeliveryState::Completed,
            "{id}: its document has no file yet"
        );
    }
    // the realtime retries find both records and upload their files
    h.deliver_all().await;
    let docs = h.sim.records(DOCUMENTS);
    assert_eq!(docs.len(), 2, "never a second document");
    for doc in &docs {
        assert_eq!(files_of(&h, doc), vec![relay_core::DOCUMENT_FILE.to_string()], "{doc}");
    }
    for id in ["doc-m1", "doc-m2", "doc-m3"] {
        let e = h.state(id).await;
        assert_eq!(e.state, DeliveryState::Completed, "{id}: {e:?}");
    }
    h.sim.advance_clock(Duration::from_secs(86_400));
    assert_eq!(h.sim.records(DOCUMENTS).len(), 2);
}

#[tokio::test]
async fn an_employee_document_is_uploaded_with_its_file_and_survives_the_cleanup_job() {
    let h = document_harness().await;
    assert_eq!(
        h.post(&alert_body("doc-1", "custom", "high", "E5001"), "wh-doc-1")
            .await
            .status,
        202
    );
    h.deliver_all().await;
    assert_eq!(h.state("doc-1").await.state, DeliveryState::Completed);
    let docs = h.sim.records("sn_hr_ef_employee_document");
    assert_eq!(docs.len(), 1);
    let doc = &docs[0];
    assert_eq!(doc["employee.display_value"], "Avery Diaz");
    assert_eq!(doc["document_type.display_value"], "Performance Documentation");
    let files = h.sim.records("sys_attachment");
    let file = files
        .iter()
        .find(|a| a["table_sys_id"] == doc["sys_id"])
        .expect("the document's file");
    assert_eq!(file["file_name"], relay_core::DOCUMENT_FILE);
    let text = String::from_utf8(h.sim.attachment_content(file["sys_id"].as_str().unwrap()).unwrap()).unwrap();
    assert!(text.contains("activity of doc-1"), "{text}");
    // the daily "Clean up inactive employee documents" run keeps a document that has its file
    h.sim.advance_clock(Duration::from_secs(86_400));
    assert_eq!(h.sim.records("sn_hr_ef_employee_document").len(), 1);
}

#[tokio::test]
async fn a_policy_exception_replayed_after_its_valid_to_passed_is_valid_from_the_replay_on() {
    use relay_pipeline::envelope::{DeadLetter, Envelope};
    use relay_pipeline::replay::Replay;
    use relay_ports::{AlertQueue, SystemClock};

    let h = harness(Options::default()).await;
    // dead-lettered when it occurred, 60 days ago, and routed then: its valid_to passed 30 days ago
    let occurred = time::OffsetDateTime::now_utc() - time::Duration::days(60);
    let occurred_at = occurred.format(&time::format_description::well_known::Rfc3339).unwrap();
    let alert = relay_core::Alert::from_value(&json!({
        "alert_id": "pv-replayed", "alert_type": "policy_violation", "severity": "high",
        "occurred_at": occurred_at,
        "employee": {"id": "E5003", "department": "Legal"},
        "description": "blocked file-sharing site", "risk_score": 48,
        "evidence_url": "https://monitor.example.com/a/3",
        "details": {"policy": "AUP", "history_30d": {"violations": 0, "warnings": 2}}
    }))
    .unwrap();
    let decision = h.router.route(&alert);
    let today = time::OffsetDateTime::now_utc().date();
    let stale = decision.fields["valid_to"].as_str().unwrap().to_string();
    assert!(stale < today.to_string(), "routed then, valid to {stale}");
    let now = now_s() * 1000;
    let mut env = Envelope::alert(decision, Some("msg-pv-replayed".into()), now);
    let entry = relay_pipeline::ingest::new_entry(&env, None, Duration::from_secs(86_400));
    h.ports.ledger.accept(&entry).await.unwrap();
    h.ports
        .ledger
        .fail(&env.ledger_key(), 0, "retryable", "ServiceNow unavailable", now)
        .await
        .unwrap();
    env.dead_letter = Some(DeadLetter {
        error_class: "retryable".into(),
        error: "gave up after 24 h".into(),
        failed_at_ms: now,
        attempts: 12,
    });
    h.dlq.send(&env.to_json(), Duration::ZERO).await.unwrap();

    let replay = Replay {
        dlq: &h.dlq,
        realtime: &h.realtime,
        critical: &h.realtime,
        ledger: h.ports.ledger.as_ref(),
        clock: &SystemClock,
    };
    let report = replay.run(false, |_| {}).await.unwrap();
    assert_eq!(report.replayed, 1, "{report:?}");
    h.deliver_all().await;
    let e = h.state("pv-replayed").await;
    assert_eq!(
        e.state,
        DeliveryState::Completed,
        "the instance refuses a past valid_to: {e:?}"
    );
    let records = h.sim.records("sn_compliance_policy_exception");
    assert_eq!(records.len(), 1);
    let valid_to = records[0]["valid_to"].as_str().unwrap();
    assert!(
        valid_to >= (today + time::Duration::days(29)).to_string().as_str(),
        "valid to {valid_to}: 30 days from the replay"
    );
    assert_eq!(records[0]["valid_from"], occurred.date().to_string());
}
