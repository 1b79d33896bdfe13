//! The person: the employee resolved to a sys_user for the profile's person fields, cached; a miss is noted
//! on the record, not an error.

mod common;

use common::*;
use serde_json::json;
use servicenow_sim::SimConfig;

/// The sys_id of the directory's user with `employee_number` (the default instance's reference data holds the
/// sample employees).
fn user_id(h: &Harness, employee_number: &str) -> String {
    let users: Vec<_> = h
        .sim
        .records("sys_user")
        .into_iter()
        .filter(|u| u["employee_number"] == employee_number)
        .collect();
    assert_eq!(users.len(), 1, "{employee_number}");
    users[0]["sys_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_hr_case_is_opened_for_and_about_the_employee_found_by_employee_number() {
    let h = harness_with(Options::default(), SimConfig::default()).await;
    let user = user_id(&h, "E2210");
    assert_eq!(
        h.post(&sample("seed-productivity-non-work-browsing.json"), "wh-hr")
            .await
            .status,
        202
    );
    let report = h.flusher.flush().await;
    assert_eq!(report.created, 1, "{report:?}");
    let hr = h.sim.records("sn_hr_core_case");
    assert_eq!(hr.len(), 1);
    assert_eq!(
        (hr[0]["opened_for"].as_str(), hr[0]["subject_person"].as_str()),
        (Some(&*user), Some(&*user))
    );
    // the lookup compared what it read back, and asked sys_user by employee_number
    let gets: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.table.as_deref() == Some("sys_user"))
        .collect();
    assert_eq!(gets.len(), 1);
    assert!(gets[0].query.contains("employee_number%3DE2210"), "{}", gets[0].query);
    assert!(
        gets[0].query.contains("sysparm_fields=sys_id%2Cemployee_number"),
        "{}",
        gets[0].query
    );
}

#[tokio::test]
async fn a_person_not_in_sys_user_is_noted_and_the_record_still_made_and_the_answer_cached() {
    // two alerts of one employee, each its own record
    let h = harness_with(without_threads(), SimConfig::default()).await;
    // an employee the directory does not hold
    let mut first: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("events/alerts/seed-after-hours-prod-db-admin.json")).unwrap(),
    )
    .unwrap();
    first["employee"]["id"] = json!("E9999");
    assert!(
        h.sim
            .records("sys_user")
            .iter()
            .all(|u| u["employee_number"] != "E9999")
    );
    let body = serde_json::to_vec(&first).unwrap();
    assert_eq!(h.post(&body, "wh-1").await.status, 202);
    h.deliver_all().await;
    let mut second: serde_json::Value = serde_json::from_slice(&body).unwrap();
    second["alert_id"] = json!("emon-second");
    assert_eq!(h.post(&serde_json::to_vec(&second).unwrap(), "wh-2").await.status, 202);
    h.deliver_all().await;
    let tasks = h.sim.records("sn_si_task");
    assert_eq!(tasks.len(), 2);
    for t in &tasks {
        assert!(t.get("affected_user").is_none_or(|v| v == ""), "{t:?}");
        let text = t["description"].as_str().unwrap();
        assert!(text.contains("Person: no sys_user has employee_number"), "{text}");
    }
    let lookups = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.table.as_deref() == Some("sys_user"))
        .count();
    assert_eq!(lookups, 1, "the miss is cached for the TTL");
}

/// The HR case's data policy requires `opened_for`: when sys_user cannot be asked right now, the alert is
/// retried (not sent without the person, which the instance refuses and which would dead-letter it).
#[tokio::test]
async fn an_hr_case_waits_for_a_sys_user_lookup_that_fails_now_instead_of_being_refused() {
    let h = harness_with(Options::default(), SimConfig::default()).await;
    let user = user_id(&h, "E2210");
    h.sim.inject(servicenow_sim::Fault {
        kind: servicenow_sim::FaultKind::ServerError { status: 503 },
        count: 1,
        table: Some("sys_user".into()),
        method: Some("GET".into()),
    });
    assert_eq!(
        h.post(&sample("seed-productivity-non-work-browsing.json"), "wh-hr")
            .await
            .status,
        202
    );
    let report = h.flusher.flush().await;
    assert_eq!((report.created, report.retried), (0, 1), "{report:?}");
    assert!(
        h.sim.records("sn_hr_core_case").is_empty(),
        "nothing sent without the person"
    );
    h.deliver_all().await;
    let hr = h.sim.records("sn_hr_core_case");
    assert_eq!(hr.len(), 1);
    assert_eq!(hr[0]["opened_for"].as_str(), Some(&*user));
    assert_eq!(
        relay_ports::AlertQueue::depth(&h.dlq).await.unwrap(),
        0,
        "not dead-lettered"
    );
}
