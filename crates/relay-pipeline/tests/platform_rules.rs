//! The product against the platform rules of issue 12: an HR case goes to a human_resources group, a policy
//! exception's valid_to is never in the past, and an employee document carries its file (so the cleanup job
//! keeps it).

mod common;

use std::time::Duration;

use common::*;
use relay_core::Config;
use relay_ports::DeliveryState;
use serde_json::json;

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

#[tokio::test]
async fn an_employee_document_is_uploaded_with_its_file_and_survives_the_cleanup_job() {
    let yaml = std::fs::read_to_string(repo().join("config/relay.yaml")).unwrap();
    let yaml = yaml.replacen(
        "rules:\n",
        "rules:\n  - name: document-it\n    when: {field: alert_type, eq: custom}\n    record_type: employee_document\n",
        1,
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let h = harness(Options {
        config,
        ..Options::default()
    })
    .await;
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
