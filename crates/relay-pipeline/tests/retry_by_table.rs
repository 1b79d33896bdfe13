//! Retries on every routed table: a transient or ambiguous failure ends in exactly one record of our own,
//! and never in an alert marked delivered against a record that was there before.

mod common;

use std::sync::Arc;

use common::*;
use relay_ports::DeliveryState;
use serde_json::{Map, Value, json};
use servicenow_client::{ClientConfig, Credentials, ServiceNowClient, StaticCredentials};
use servicenow_sim::{Fault, FaultKind};

/// One high alert per routed table of the shipped config (high: delivered at once), for an employee the
/// directory holds (an HR case must be opened for a sys_user).
fn alerts() -> Vec<(&'static str, &'static str, Value)> {
    let base = |id: &str, alert_type: &str, details: Value| {
        json!({
            "alert_id": id, "alert_type": alert_type, "severity": "high",
            "occurred_at": "2026-11-20T14:03:00Z",
            "employee": {"id": "E5002", "department": "Sales", "manager": "M5001"},
            "description": format!("activity of {id}"), "risk_score": 60,
            "evidence_url": format!("https://monitor.example.com/a/{id}"), "details": details
        })
    };
    vec![
        (
            "sn_si_incident",
            "t-sir",
            base(
                "t-sir",
                "dlp",
                json!({"file_count": 5, "bytes": 10, "channel": "email"}),
            ),
        ),
        (
            "sn_si_task",
            "t-task",
            base(
                "t-task",
                "behavioral_anomaly",
                json!({"systems": ["prod-db"], "duration_minutes": 5, "applications": ["psql"],
                       "after_hours": true, "privileged_account": true}),
            ),
        ),
        (
            "sn_risk_risk",
            "t-risk",
            base(
                "t-risk",
                "policy_violation",
                json!({"policy": "P", "history_30d": {"violations": 5, "warnings": 0}}),
            ),
        ),
        (
            "sn_compliance_policy_exception",
            "t-pex",
            base(
                "t-pex",
                "policy_violation",
                json!({"policy": "P", "history_30d": {"violations": 0, "warnings": 1}}),
            ),
        ),
        (
            "sn_hr_core_case",
            "t-hr",
            base(
                "t-hr",
                "productivity",
                json!({"hours_per_day": 1, "categories": [], "weekly_trend": []}),
            ),
        ),
        ("incident", "t-inc", {
            let mut v = base("t-inc", "custom", json!({}));
            v["rule"] = json!({"id": "r1", "name": "Rule one"});
            v
        }),
    ]
}

/// A record the relay user made by hand before (so the relay may read it): an unrelated row the lookup
/// must not take. Its text mentions the alert's correlation id, as a hand-written note might.
async fn unrelated_record(h: &Harness, table: &str, correlation_id: &str) -> String {
    let c = ServiceNowClient::new(
        ClientConfig::new(h.sim.base_url()),
        Arc::new(StaticCredentials(Credentials::Basic {
            username: "relay".into(),
            password: "relay-password".into(),
        })),
    )
    .unwrap();
    let mut f = Map::new();
    // what each table's data policy needs (a field a table lacks is dropped by the instance)
    for (k, v) in [
        ("short_description", "recorded by hand"),
        ("name", "recorded by hand"),
        ("profile", "Corporate"),
        ("policy", "Acceptable Use Policy"),
        ("valid_to", "2099-12-31"),
        ("hr_service", "Productivity Review"),
        ("opened_for", "Alex Kim"),
        (
            "description",
            &*format!("an older record that mentions {correlation_id}"),
        ),
    ] {
        f.insert(k.into(), json!(v));
    }
    match c.create_record(table, &f).await {
        servicenow_client::Outcome::Created(r) => r.sys_id,
        other => panic!("{table}: {other:?}"),
    }
}

#[tokio::test]
async fn every_routed_tables_retry_path_creates_exactly_one_record_of_its_own() {
    for kind in [FaultKind::ServerError { status: 503 }, FaultKind::TimeoutAfterWrite] {
        for (table, id, body) in alerts() {
            let h = harness(Options::default()).await;
            let d = h.router.route(&relay_core::Alert::from_value(&body).unwrap());
            assert_eq!(d.table, table, "{id} routes to {table}");
            let unrelated = unrelated_record(&h, table, &d.correlation_id).await;
            h.sim.inject(Fault {
                kind: kind.clone(),
                count: 1,
                table: Some(table.into()),
                method: Some("POST".into()),
            });
            let r = h.post(&serde_json::to_vec(&body).unwrap(), &format!("wh-{id}")).await;
            assert_eq!(r.status, 202, "{id}: {:?}", r.body);
            h.deliver_all().await;
            let e = h.state(id).await;
            let name = kind.name();
            assert_eq!(e.state, DeliveryState::Completed, "{id} {name}");
            assert!(e.attempts >= 2, "{id} {name}: retried");
            let records = h.sim.records(table);
            assert_eq!(
                records.len(),
                2,
                "{id} {name}: the unrelated record and exactly one of ours"
            );
            let ours = records
                .iter()
                .find(|r| r["sys_id"] != unrelated.as_str())
                .expect("our record");
            let linked = &e.record.as_ref().unwrap().sys_id;
            assert_ne!(linked, &unrelated, "{id} {name}: delivered against an unrelated record");
            assert_eq!(linked, ours["sys_id"].as_str().unwrap(), "{id} {name}");
            // every lookup named the table's own dedupe field and asked for it back
            for req in h
                .sim
                .requests()
                .iter()
                .filter(|r| r.method == "GET" && r.table.as_deref() == Some(table))
            {
                let field = &d.dedupe.field;
                assert!(
                    req.query.contains(&format!("sysparm_query={field}")),
                    "{id}: {}",
                    req.query
                );
                assert!(
                    req.query.contains(&format!("%2C{field}")) || req.query.contains(&format!(",{field}")),
                    "{id}: {}",
                    req.query
                );
            }
            // what was stored carries our key in that field
            let key = ours[d.dedupe.field.as_str()].as_str().unwrap_or_default();
            assert!(key.contains(&d.correlation_id), "{id}: {} = {key:?}", d.dedupe.field);
            if table == "sn_risk_risk" {
                assert!(
                    ours.get("correlation_id").is_none(),
                    "nothing is sent to a field risk lacks"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_alert_with_incomplete_details_is_accepted_and_delivered_with_the_gap_noted() {
    let h = harness(Options::default()).await;
    // no bytes, no channel: once a 400 that lost the alert at the sender
    let body = json!({
        "alert_id": "t-partial", "alert_type": "dlp", "severity": "critical",
        "occurred_at": "2026-11-20T14:03:00Z", "employee": {"id": "E9", "department": "Sales"},
        "description": "copied files", "risk_score": 90,
        "evidence_url": "https://monitor.example.com/a/t-partial", "details": {"file_count": 120}
    });
    let r = h.post(&serde_json::to_vec(&body).unwrap(), "wh-partial").await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    h.deliver_all().await;
    assert_eq!(h.state("t-partial").await.state, DeliveryState::Completed);
    let sir = h.sim.records("sn_si_incident");
    assert_eq!(sir.len(), 1);
    let text = sir[0]["description"].as_str().unwrap();
    assert!(
        text.contains("Not in the alert: details.bytes, details.channel"),
        "{text}"
    );
    assert!(text.contains("Files copied: 120"), "{text}");
    // a detail of the wrong type is still refused, with its path
    let mut bad = body.clone();
    bad["alert_id"] = json!("t-bad");
    bad["details"]["file_count"] = json!("many");
    let r = h.post(&serde_json::to_vec(&bad).unwrap(), "wh-bad").await;
    assert_eq!(r.status, 400);
    assert!(format!("{:?}", r.body).contains("$.details.file_count"), "{:?}", r.body);
}
