//! Lifecycle events (issue 14, schema version 2): an update, resolution or dismissal of an alert already
//! sent becomes a work note on its record, and the record is resolved (or closed as a false positive) once
//! every alert it covers has ended — through the real pipeline over SQLite and the simulator, whose state
//! flows refuse any shortcut.

mod common;

use std::time::Duration;

use common::{Harness, Options, alert_body, harness, journal_of, sample, total};
use relay_core::Config;
use relay_ports::{AlertQueue, DeliveryState};
use serde_json::{Value, json};
use servicenow_sim::{Fault, FaultKind};

fn event(kind: &str, alert_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schema_version": "2", "event": kind, "alert_id": alert_id,
        "resolution": {"reason": "remediated", "note": format!("{kind} by the analyst in the monitoring product")}
    }))
    .unwrap()
}

fn record(h: &Harness, table: &str, sys_id: &str) -> Value {
    h.sim
        .records(table)
        .into_iter()
        .find(|r| r["sys_id"] == sys_id)
        .expect("the record")
}

/// A harness whose config turns threads on.
async fn threaded() -> Harness {
    let mut config = Config::default_config();
    config.threads.enabled = true;
    harness(Options {
        config,
        ..Options::default()
    })
    .await
}

/// Post `body` as `webhook_id`, expecting 202; the reply.
async fn accepted(h: &Harness, body: &[u8], webhook_id: &str) -> Value {
    let reply = h.post(body, webhook_id).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    reply.json()
}

/// An alert delivered: its record's sys_id.
async fn delivered(h: &Harness, id: &str, alert_type: &str) -> String {
    accepted(h, &alert_body(id, alert_type, "critical", "E1042"), &format!("wh-{id}")).await;
    h.deliver_all().await;
    let e = h.state(id).await;
    assert_eq!(e.state, DeliveryState::Completed, "{e:?}");
    e.record.unwrap().sys_id
}

#[tokio::test]
async fn a_resolution_notes_the_incident_and_resolves_it_with_its_close_code() {
    let h = harness(Options::default()).await;
    let inc = delivered(&h, "i-1", "custom").await;
    let reply = accepted(&h, &event("resolved", "i-1"), "wh-i-1-resolved").await;
    assert_eq!(reply["event"], "resolved");
    assert_eq!(reply["duplicate"], false);
    let event_id = reply["event_id"].as_str().unwrap().to_string();
    h.deliver_all().await;
    let r = record(&h, "incident", &inc);
    assert_eq!(r["state"], "6", "resolved: {r:#}");
    assert_eq!(r["close_code"], "Solution provided");
    assert!(r["close_notes"].as_str().unwrap().contains("resolved"), "{r:#}");
    let notes = journal_of(&h, &inc);
    assert_eq!(notes.len(), 1, "{notes:#?}");
    let text = notes[0]["value"].as_str().unwrap();
    assert!(text.contains(&format!("[relay-key {event_id}]")), "{text}");
    assert!(text.contains("resolved by the analyst"), "the sender's note: {text}");
    let e = h.state(&event_id).await;
    assert_eq!(e.state, DeliveryState::Completed);
    assert_eq!(e.record.as_ref().unwrap().sys_id, inc);
    assert_eq!(total(&h.metrics.take(), "LifecycleEvents", &[("Resolved", "true")]), 1);
    // the same webhook again is a duplicate: no second note
    let again = accepted(&h, &event("resolved", "i-1"), "wh-i-1-resolved").await;
    assert_eq!(again["duplicate"], true);
    h.deliver_all().await;
    assert_eq!(journal_of(&h, &inc).len(), 1);
}

#[tokio::test]
async fn a_security_incident_walks_its_state_flow_to_closed() {
    // the simulator refuses Draft → Closed: the resolution passes Analysis … Review first
    let h = harness(Options::default()).await;
    let sir = delivered(&h, "s-1", "dlp").await;
    accepted(&h, &event("resolved", "s-1"), "wh-s-1-r").await;
    h.deliver_all().await;
    let r = record(&h, "sn_si_incident", &sir);
    assert_eq!(r["state"], "3", "{r:#}");
    assert_eq!(r["close_code"], "Investigation completed");
    assert_eq!(h.state("s-1").await.state, DeliveryState::Completed);
}

#[tokio::test]
async fn a_dismissed_productivity_alert_cancels_its_hr_case_as_a_false_positive() {
    let h = harness(Options::default()).await;
    let mut v: Value = serde_json::from_slice(&sample("seed-productivity-non-work-browsing.json")).unwrap();
    v["severity"] = json!("high");
    accepted(&h, &serde_json::to_vec(&v).unwrap(), "wh-p").await;
    h.deliver_all().await;
    let case = h.state("emon-20261122-5c9e10").await.record.expect("an HR case").sys_id;
    let body = std::fs::read(common::repo().join("events/lifecycle/productivity-dismissed.json")).unwrap();
    accepted(&h, &body, "wh-p-dismissed").await;
    h.deliver_all().await;
    let r = record(&h, "sn_hr_core_case", &case);
    assert_eq!(r["state"], "7", "cancelled as a false positive: {r:#}");
    assert!(r["close_notes"].as_str().unwrap().contains("false positive"), "{r:#}");
    let notes = journal_of(&h, &case);
    assert!(
        notes[0]["value"]
            .as_str()
            .unwrap()
            .contains("scheduled certification course")
    );
}

#[tokio::test]
async fn an_update_is_a_note_and_changes_no_state() {
    let h = harness(Options::default()).await;
    let inc = delivered(&h, "u-1", "custom").await;
    accepted(&h, &event("updated", "u-1"), "wh-u-1").await;
    h.deliver_all().await;
    assert_eq!(record(&h, "incident", &inc)["state"], "1");
    assert_eq!(journal_of(&h, &inc).len(), 1);
}

#[tokio::test]
async fn an_event_for_an_unknown_alert_is_answered_404_and_changes_nothing() {
    let h = harness(Options::default()).await;
    let reply = h.post(&event("resolved", "never-sent"), "wh-x").await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    let body = reply.json();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no alert with id \"never-sent\" was accepted"),
        "{body}"
    );
    assert_eq!(h.realtime.depth().await.unwrap(), 0, "nothing queued");
    assert!(h.sim.records("sys_journal_field").is_empty());
}

#[tokio::test]
async fn an_event_sent_just_before_its_alert_waits_for_it() {
    let h = harness(Options::default()).await;
    let body = event("resolved", "e-1");
    let early = h.post(&body, "wh-e-1-r");
    let late = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        h.post(&alert_body("e-1", "custom", "critical", "E1042"), "wh-e-1")
            .await
    };
    let (early, late) = tokio::join!(early, late);
    assert_eq!(late.status, 202);
    assert_eq!(early.status, 202, "the event waited for its alert: {}", early.body);
    // delivered in any order: the event waits until its alert has a record
    h.deliver_all().await;
    let inc = h.state("e-1").await.record.unwrap().sys_id;
    assert_eq!(record(&h, "incident", &inc)["state"], "6");
}

#[tokio::test]
async fn lost_answers_on_the_note_and_the_state_write_apply_each_once() {
    let h = harness(Options::default()).await;
    let inc = delivered(&h, "l-1", "custom").await;
    // the note commits and its answer is lost; then the state write's answer is lost too
    h.sim.inject(Fault {
        kind: FaultKind::TimeoutAfterWrite,
        count: 2,
        table: Some("incident".into()),
        method: Some("PATCH".into()),
    });
    let id = accepted(&h, &event("resolved", "l-1"), "wh-l-1").await["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    h.deliver_all().await;
    let e = h.state(&id).await;
    assert_eq!(e.state, DeliveryState::Completed, "{e:?}");
    assert!(
        e.attempts >= 3,
        "two ambiguous attempts, then the one that found both done: {e:?}"
    );
    assert_eq!(journal_of(&h, &inc).len(), 1, "the note is written once");
    assert_eq!(record(&h, "incident", &inc)["state"], "6");
}

#[tokio::test]
async fn a_thread_is_resolved_when_its_last_alert_is() {
    let h = threaded().await;
    // three USB copies for one employee: one security incident, two notes
    let sir = delivered(&h, "th-1", "dlp").await;
    for id in ["th-2", "th-3"] {
        assert_eq!(delivered(&h, id, "dlp").await, sir);
    }
    assert_eq!(h.sim.records("sn_si_incident").len(), 1);
    for (n, id) in ["th-1", "th-2"].into_iter().enumerate() {
        accepted(&h, &event("resolved", id), &format!("wh-{id}-r")).await;
        h.deliver_all().await;
        assert_eq!(
            record(&h, "sn_si_incident", &sir)["state"],
            "10",
            "after {} resolutions one alert is still open",
            n + 1
        );
    }
    accepted(&h, &event("resolved", "th-3"), "wh-th-3-r").await;
    h.deliver_all().await;
    let r = record(&h, "sn_si_incident", &sir);
    assert_eq!(r["state"], "3", "{r:#}");
    assert_eq!(r["close_code"], "Investigation completed");
    // a fourth alert after that: a new incident that references the first
    let next = delivered(&h, "th-4", "dlp").await;
    assert_ne!(next, sir);
    assert_eq!(
        record(&h, "sn_si_incident", &next)["parent_security_incident"],
        sir.as_str()
    );
}

#[tokio::test]
async fn a_thread_whose_alerts_were_all_dismissed_closes_as_a_false_positive() {
    let h = threaded().await;
    let sir = delivered(&h, "fp-1", "dlp").await;
    assert_eq!(delivered(&h, "fp-2", "dlp").await, sir);
    for id in ["fp-1", "fp-2"] {
        accepted(&h, &event("dismissed", id), &format!("wh-{id}-d")).await;
        h.deliver_all().await;
    }
    let r = record(&h, "sn_si_incident", &sir);
    assert_eq!(r["state"], "3");
    assert_eq!(r["close_code"], "False positive", "{r:#}");
}

#[tokio::test]
async fn markers_written_into_an_alerts_text_cannot_close_its_record() {
    let h = threaded().await;
    let sir = delivered(&h, "fg-1", "dlp").await;
    // an employee-chosen file name that spells the relay's markers, in the second alert's description
    let prefix = &h.router.config().correlation_prefix;
    let mut v: Value = serde_json::from_slice(&alert_body("fg-2", "dlp", "critical", "E1042")).unwrap();
    v["description"] = json!(format!(
        "[relay-resolved {prefix}:fg-2] [relay-key {prefix}:fg-9] copied '[relay-resolved {prefix}:fg-2].zip'"
    ));
    accepted(&h, &serde_json::to_vec(&v).unwrap(), "wh-fg-2").await;
    h.deliver_all().await;
    assert_eq!(h.state("fg-2").await.record.unwrap().sys_id, sir);
    // the first alert's resolution must not close the record: fg-2 is still open
    accepted(&h, &event("resolved", "fg-1"), "wh-fg-1-r").await;
    h.deliver_all().await;
    assert_eq!(record(&h, "sn_si_incident", &sir)["state"], "10");
    // and fg-9, which the text names, is no alert of the record: resolving fg-2 closes it
    accepted(&h, &event("resolved", "fg-2"), "wh-fg-2-r").await;
    h.deliver_all().await;
    assert_eq!(record(&h, "sn_si_incident", &sir)["state"], "3");
}

#[tokio::test]
async fn a_resolution_continues_the_flow_from_where_an_analyst_left_the_record() {
    let h = harness(Options::default()).await;
    let sir = delivered(&h, "m-1", "dlp").await;
    for state in ["16", "18"] {
        h.sim
            .act_as(None, "sn_si_incident", &sir, json!({"state": state}))
            .unwrap();
    }
    accepted(&h, &event("resolved", "m-1"), "wh-m-1-r").await;
    h.deliver_all().await;
    assert_eq!(record(&h, "sn_si_incident", &sir)["state"], "3");
    assert_eq!(h.dlq.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn resolutions_of_one_record_delivered_together_close_it_once() {
    let h = threaded().await;
    let sir = delivered(&h, "cc-1", "dlp").await;
    assert_eq!(delivered(&h, "cc-2", "dlp").await, sir);
    for id in ["cc-1", "cc-2"] {
        accepted(&h, &event("resolved", id), &format!("wh-{id}-r")).await;
    }
    // both events are handed out in one receive and walk the record concurrently
    h.deliver_all().await;
    assert_eq!(record(&h, "sn_si_incident", &sir)["state"], "3");
    assert_eq!(h.dlq.depth().await.unwrap(), 0, "no event was given up on");
}
