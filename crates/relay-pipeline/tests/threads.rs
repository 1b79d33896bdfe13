//! Threads (issue 14, docs/record-lifecycle.md): repeat realtime alerts of one thread become work notes on
//! the record its first alert opened, through the real pipeline over SQLite and the simulator.

mod common;

use common::{Harness, Options, alert_body, harness, journal_of, total};
use relay_core::Config;
use relay_core::profile::Dedupe;
use relay_ports::DeliveryState;
use serde_json::json;
use servicenow_sim::{Fault, FaultKind};

fn threaded_config() -> Config {
    let mut config = Config::default_config();
    config.threads.enabled = true;
    config
}

async fn threaded() -> Harness {
    harness(Options {
        config: threaded_config(),
        ..Options::default()
    })
    .await
}

fn marker(h: &Harness, alert_id: &str) -> String {
    Dedupe::marker(&relay_core::correlation_id(
        &h.router.config().correlation_prefix,
        alert_id,
    ))
}

async fn post(h: &Harness, id: &str, employee: &str) {
    let reply = h
        .post(&alert_body(id, "dlp", "critical", employee), &format!("wh-{id}"))
        .await;
    assert_eq!(reply.status, 202, "{id}");
}

#[tokio::test]
async fn repeat_alerts_of_a_thread_become_work_notes_on_its_open_record() {
    let h = threaded().await;
    for id in ["t-1", "t-2", "t-3"] {
        post(&h, id, "E1001").await;
        h.deliver_all().await;
    }
    let sirs = h.sim.records("sn_si_incident");
    assert_eq!(sirs.len(), 1, "one security incident for the thread: {sirs:#?}");
    let sir = sirs[0]["sys_id"].as_str().unwrap().to_string();
    let notes = journal_of(&h, &sir);
    assert_eq!(notes.len(), 2, "the 2nd and 3rd alerts are notes: {notes:#?}");
    for (note, id) in notes.iter().zip(["t-2", "t-3"]) {
        let text = note["value"].as_str().unwrap();
        assert!(text.contains(&marker(&h, id)), "{text}");
        assert!(text.contains(id), "the note names its alert: {text}");
    }
    let first = h.state("t-1").await;
    assert_eq!(first.state, DeliveryState::Completed);
    assert!(!first.record.as_ref().unwrap().note, "the first alert made the record");
    for id in ["t-2", "t-3"] {
        let e = h.state(id).await;
        assert_eq!(e.state, DeliveryState::Completed, "{id}");
        let r = e.record.unwrap();
        assert_eq!(r.sys_id, sir, "{id} maps to the thread's record");
        assert!(r.note, "{id} is a note");
    }
    let m = h.metrics.take();
    assert_eq!(total(&m, "ThreadNotes", &[]), 2);
    assert_eq!(total(&m, "RecordsCreated", &[]), 1);

    // another employee's alert is another thread
    post(&h, "t-4", "E2002").await;
    h.deliver_all().await;
    assert_eq!(h.sim.records("sn_si_incident").len(), 2);
}

#[tokio::test]
async fn alerts_of_one_thread_arriving_together_open_one_record() {
    let h = threaded().await;
    let ids: Vec<String> = (0..6).map(|i| format!("burst-{i}")).collect();
    for id in &ids {
        post(&h, id, "E1001").await;
    }
    // delivered concurrently: all six are handed out in one receive
    h.deliver_all().await;
    let sirs = h.sim.records("sn_si_incident");
    assert_eq!(sirs.len(), 1, "{sirs:#?}");
    let sir = sirs[0]["sys_id"].as_str().unwrap().to_string();
    let notes = journal_of(&h, &sir);
    assert_eq!(notes.len(), 5, "{notes:#?}");
    let mut notes_seen = 0;
    for id in &ids {
        let e = h.state(id).await;
        assert_eq!(e.state, DeliveryState::Completed, "{id}");
        let r = e.record.unwrap();
        assert_eq!(r.sys_id, sir);
        if r.note {
            notes_seen += 1;
            let mine = notes
                .iter()
                .filter(|n| n["value"].as_str().unwrap().contains(&marker(&h, id)))
                .count();
            assert_eq!(mine, 1, "exactly one note for {id}");
        }
    }
    assert_eq!(notes_seen, 5);
}

#[tokio::test]
async fn an_alert_after_its_threads_record_is_closed_opens_a_new_record_that_references_it() {
    let h = threaded().await;
    post(&h, "c-1", "E1001").await;
    h.deliver_all().await;
    let first = h.sim.records("sn_si_incident")[0]["sys_id"]
        .as_str()
        .unwrap()
        .to_string();
    // an analyst walks it along the NIST flow and closes it
    for state in ["16", "18", "19", "20", "100"] {
        h.sim
            .act_as(None, "sn_si_incident", &first, json!({"state": state}))
            .unwrap_or_else(|e| panic!("to {state}: {e:?}"));
    }
    h.sim
        .act_as(
            None,
            "sn_si_incident",
            &first,
            json!({"state": "3", "close_code": "Investigation completed", "close_notes": "done"}),
        )
        .unwrap();

    post(&h, "c-2", "E1001").await;
    h.deliver_all().await;
    let sirs = h.sim.records("sn_si_incident");
    assert_eq!(sirs.len(), 2, "a closed record takes no notes: a new one is opened");
    let second = sirs.iter().find(|r| r["sys_id"] != first.as_str()).unwrap();
    assert_eq!(
        second["parent_security_incident"],
        first.as_str(),
        "the new record references the closed one"
    );
    assert!(
        journal_of(&h, &first).is_empty(),
        "nothing written to the closed record"
    );
    let e = h.state("c-2").await;
    assert!(!e.record.as_ref().unwrap().note);

    // the thread goes on in the new record
    post(&h, "c-3", "E1001").await;
    h.deliver_all().await;
    assert_eq!(h.sim.records("sn_si_incident").len(), 2);
    let second_id = second["sys_id"].as_str().unwrap();
    assert_eq!(journal_of(&h, second_id).len(), 1);
    assert_eq!(h.state("c-3").await.record.unwrap().sys_id, second_id);
}

#[tokio::test]
async fn a_note_whose_answer_was_lost_is_found_in_the_journal_not_written_again() {
    let h = threaded().await;
    post(&h, "a-1", "E1001").await;
    h.deliver_all().await;
    let sir = h.sim.records("sn_si_incident")[0]["sys_id"]
        .as_str()
        .unwrap()
        .to_string();
    // the note commits, its answer is lost
    h.sim.inject(Fault {
        kind: FaultKind::TimeoutAfterWrite,
        count: 1,
        table: Some("sn_si_incident".into()),
        method: Some("PATCH".into()),
    });
    post(&h, "a-2", "E1001").await;
    h.deliver_all().await;
    let e = h.state("a-2").await;
    assert_eq!(e.state, DeliveryState::Completed);
    assert!(e.needs_lookup, "the lost answer made the attempt ambiguous");
    assert!(e.attempts >= 2, "{e:?}");
    let notes = journal_of(&h, &sir);
    assert_eq!(notes.len(), 1, "the retry found the note: {notes:#?}");
    assert!(notes[0]["value"].as_str().unwrap().contains(&marker(&h, "a-2")));
    assert_eq!(
        h.sim.records("sn_si_incident").len(),
        1,
        "and made no record of its own"
    );
}

#[tokio::test]
async fn a_record_whose_first_create_failed_is_still_one_record_for_the_thread() {
    let h = threaded().await;
    // the opener's create is refused once (503): the thread is released, its retry opens the record
    h.sim.inject(Fault {
        kind: FaultKind::ServerError { status: 503 },
        count: 1,
        table: Some("sn_si_incident".into()),
        method: Some("POST".into()),
    });
    post(&h, "r-1", "E1001").await;
    h.deliver_all().await;
    post(&h, "r-2", "E1001").await;
    h.deliver_all().await;
    let sirs = h.sim.records("sn_si_incident");
    assert_eq!(sirs.len(), 1, "{sirs:#?}");
    assert!(h.state("r-2").await.record.unwrap().note);
}

#[tokio::test]
async fn without_threads_every_alert_is_its_own_record() {
    let h = harness(common::without_threads()).await;
    for id in ["n-1", "n-2"] {
        post(&h, id, "E1001").await;
        h.deliver_all().await;
    }
    assert_eq!(h.sim.records("sn_si_incident").len(), 2);
    assert!(h.sim.records("sys_journal_field").is_empty());
}

#[tokio::test]
async fn an_opener_whose_create_lost_its_answer_keeps_the_thread_to_one_record() {
    let h = threaded().await;
    // the first alert's create commits but its answer is lost
    h.sim.inject(Fault {
        kind: FaultKind::TimeoutAfterWrite,
        count: 1,
        table: Some("sn_si_incident".into()),
        method: Some("POST".into()),
    });
    post(&h, "o-1", "E1001").await;
    h.deliverer
        .poll_once(10, std::time::Duration::from_millis(30))
        .await
        .unwrap();
    assert_eq!(
        h.sim.records("sn_si_incident").len(),
        1,
        "the lost answer's record exists"
    );
    assert!(h.state("o-1").await.needs_lookup);
    // a second alert of the thread while the first is being retried: it must not open another record
    post(&h, "o-2", "E1001").await;
    h.deliver_all().await;
    let sirs = h.sim.records("sn_si_incident");
    assert_eq!(sirs.len(), 1, "{sirs:#?}");
    let sir = sirs[0]["sys_id"].as_str().unwrap();
    let first = h.state("o-1").await.record.unwrap();
    assert_eq!((first.sys_id.as_str(), first.note), (sir, false));
    let second = h.state("o-2").await.record.unwrap();
    assert_eq!((second.sys_id.as_str(), second.note), (sir, true));
    assert_eq!(journal_of(&h, sir).len(), 1);
}

#[tokio::test]
async fn a_thread_past_its_escalation_threshold_raises_the_records_priority_once() {
    let mut config = threaded_config();
    config.threads.escalation = vec![relay_core::config::Escalation {
        priority: "P1".into(),
        alerts: Some(3),
        peak_risk: None,
        sum_risk: Some(80),
        channels: None,
    }];
    let h = harness(Options {
        config,
        ..Options::default()
    })
    .await;
    // high DLP alerts: a security incident at priority 2
    for (n, id) in ["x-1", "x-2", "x-3", "x-4"].into_iter().enumerate() {
        let reply = h
            .post(&alert_body(id, "dlp", "high", "E1001"), &format!("wh-{id}"))
            .await;
        assert_eq!(reply.status, 202);
        h.deliver_all().await;
        let sirs = h.sim.records("sn_si_incident");
        assert_eq!(sirs.len(), 1);
        let expected = if n < 2 { "2" } else { "1" };
        assert_eq!(sirs[0]["priority"], expected, "after {} alerts", n + 1);
    }
    let sir = h.sim.records("sn_si_incident")[0]["sys_id"]
        .as_str()
        .unwrap()
        .to_string();
    let notes = journal_of(&h, &sir);
    let escalations: Vec<&str> = notes
        .iter()
        .map(|n| n["value"].as_str().unwrap())
        .filter(|v| v.starts_with("[relay-escalated P1]"))
        .collect();
    assert_eq!(escalations.len(), 1, "raised once: {notes:#?}");
    assert!(
        escalations[0].contains("3 alerts, peak risk 30, total risk 90"),
        "the note says why: {}",
        escalations[0]
    );
    assert!(
        escalations[0].contains("Thresholds: alerts ≥ 3, total risk ≥ 80."),
        "{}",
        escalations[0]
    );
    assert_eq!(total(&h.metrics.take(), "ThreadEscalations", &[]), 1);
}

async fn with_closed_policy(policy: relay_core::config::ClosedPolicy) -> Harness {
    let mut config = threaded_config();
    config.threads.closed = policy;
    harness(Options {
        config,
        ..Options::default()
    })
    .await
}

/// A custom alert (an incident) of the thread, delivered: its record's sys_id.
async fn incident_alert(h: &Harness, id: &str) -> String {
    let reply = h
        .post(&alert_body(id, "custom", "critical", "E1001"), &format!("wh-{id}"))
        .await;
    assert_eq!(reply.status, 202);
    h.deliver_all().await;
    h.state(id).await.record.unwrap().sys_id
}

fn resolve_incident(h: &Harness, sys_id: &str) {
    h.sim
        .act_as(
            None,
            "incident",
            sys_id,
            json!({"state": "6", "close_code": "Solution provided", "close_notes": "fixed"}),
        )
        .unwrap();
}

fn incident(h: &Harness, sys_id: &str) -> serde_json::Value {
    h.sim
        .records("incident")
        .into_iter()
        .find(|r| r["sys_id"] == sys_id)
        .unwrap()
}

#[tokio::test]
async fn with_the_reopen_policy_a_resolved_incident_is_reopened_and_noted() {
    let h = with_closed_policy(relay_core::config::ClosedPolicy::Reopen).await;
    let inc = incident_alert(&h, "ro-1").await;
    resolve_incident(&h, &inc);
    assert_eq!(incident_alert(&h, "ro-2").await, inc, "the same incident");
    assert_eq!(h.sim.records("incident").len(), 1);
    assert_eq!(incident(&h, &inc)["state"], "2", "reopened to In Progress");
    let notes = journal_of(&h, &inc);
    assert!(
        notes
            .iter()
            .any(|n| n["value"].as_str().unwrap().starts_with("[relay-reopened ")),
        "{notes:#?}"
    );
    assert!(h.state("ro-2").await.record.unwrap().note);
    // a closed incident cannot be reopened: the next alert opens a new one that references it
    resolve_incident(&h, &inc);
    h.sim.act_as(None, "incident", &inc, json!({"state": "7"})).unwrap();
    let next = incident_alert(&h, "ro-3").await;
    assert_ne!(next, inc);
    assert_eq!(incident(&h, &next)["parent_incident"], inc.as_str());
}

#[tokio::test]
async fn with_the_note_only_policy_a_resolved_incident_is_noted_and_stays_resolved() {
    let h = with_closed_policy(relay_core::config::ClosedPolicy::NoteOnly).await;
    let inc = incident_alert(&h, "no-1").await;
    resolve_incident(&h, &inc);
    assert_eq!(incident_alert(&h, "no-2").await, inc);
    assert_eq!(incident(&h, &inc)["state"], "6");
    assert_eq!(journal_of(&h, &inc).len(), 1);
    assert_eq!(h.sim.records("incident").len(), 1);
}

#[tokio::test]
async fn by_default_a_resolved_incident_gets_a_new_linked_one() {
    let h = threaded().await;
    let inc = incident_alert(&h, "nl-1").await;
    resolve_incident(&h, &inc);
    let next = incident_alert(&h, "nl-2").await;
    assert_ne!(next, inc);
    assert_eq!(incident(&h, &next)["parent_incident"], inc.as_str());
    assert_eq!(incident(&h, &inc)["state"], "6", "the resolved one is left alone");
}

/// Batch alerts (medium, low) of an employee whose thread has an open record: the flush does not batch
/// them into a record of their own but hands them to the thread, and they become one note listing them
/// all (a lone one, its own note); the alerts map to the thread's record, and their resolutions count
/// towards closing it. Another employee's batch alerts are batched as without threads.
#[tokio::test]
async fn a_batch_aggregate_of_an_open_thread_becomes_one_note_listing_its_alerts() {
    let h = threaded().await;
    post(&h, "o-1", "E1001").await;
    h.deliver_all().await;
    let sir = h.state("o-1").await.record.unwrap().sys_id;
    for (id, employee, severity) in [
        ("b-1", "E1001", "medium"),
        ("b-2", "E1001", "low"),
        ("b-3", "E1001", "medium"),
        ("x-1", "E2002", "low"),
        ("x-2", "E2002", "low"),
    ] {
        let reply = h
            .post(&alert_body(id, "dlp", severity, employee), &format!("wh-{id}"))
            .await;
        assert_eq!(reply.status, 202, "{id}");
    }
    let report = h.flusher.flush().await;
    assert_eq!(
        (report.alerts, report.threaded, report.created),
        (5, 1, 1),
        "{report:?}"
    );
    h.deliver_all().await;
    let sirs = h.sim.records("sn_si_incident");
    assert_eq!(sirs.len(), 2, "the thread's SIR and E2002's aggregate: {sirs:#?}");
    let notes = journal_of(&h, &sir);
    assert_eq!(notes.len(), 1, "one note for the aggregate: {notes:#?}");
    let text = notes[0]["value"].as_str().unwrap();
    for id in ["b-1", "b-2", "b-3"] {
        assert!(text.contains(&marker(&h, id)), "each member is marked: {text}");
        assert!(text.contains(&format!("- {id} (")), "and listed: {text}");
        let e = h.state(id).await;
        assert_eq!(e.state, DeliveryState::Completed, "{id}: {e:?}");
        let r = e.record.unwrap();
        assert!(r.note && r.sys_id == sir, "{id} is noted on the thread's record");
    }
    assert!(text.contains("3 more alerts of this thread, batched"), "{text}");
    // a second flush has nothing left, and a duplicated delivery does not note twice
    assert_eq!(h.flusher.flush().await.alerts, 0);
    h.deliver_all().await;
    assert_eq!(journal_of(&h, &sir).len(), 1);

    // every alert of the record resolved: the opener and the aggregate's three members
    for id in ["o-1", "b-1", "b-2"] {
        let body = serde_json::to_vec(&json!({"schema_version": "2", "event": "resolved", "alert_id": id})).unwrap();
        assert_eq!(h.post(&body, &format!("wh-{id}-r")).await.status, 202);
        h.deliver_all().await;
        let state = h
            .sim
            .records("sn_si_incident")
            .into_iter()
            .find(|r| r["sys_id"] == sir.as_str())
            .unwrap()["state"]
            .clone();
        assert_ne!(state, "3", "b-3 is still open after {id}");
    }
    let body = serde_json::to_vec(&json!({"schema_version": "2", "event": "resolved", "alert_id": "b-3"})).unwrap();
    assert_eq!(h.post(&body, "wh-b-3-r").await.status, 202);
    h.deliver_all().await;
    let closed = h
        .sim
        .records("sn_si_incident")
        .into_iter()
        .find(|r| r["sys_id"] == sir.as_str())
        .unwrap();
    assert_eq!(closed["state"], "3", "all four ended: {closed:#}");
}

/// The thread's escalation counts each member of an aggregate's note.
#[tokio::test]
async fn an_aggregates_members_count_towards_the_threads_escalation() {
    let mut config = threaded_config();
    config.threads.escalation = vec![relay_core::config::Escalation {
        priority: "P1".into(),
        alerts: Some(4),
        peak_risk: None,
        sum_risk: None,
        channels: None,
    }];
    let h = harness(Options {
        config,
        ..Options::default()
    })
    .await;
    let reply = h.post(&alert_body("e-1", "dlp", "high", "E1001"), "wh-e-1").await;
    assert_eq!(reply.status, 202);
    h.deliver_all().await;
    assert_eq!(h.sim.records("sn_si_incident")[0]["priority"], "2");
    for id in ["e-2", "e-3", "e-4"] {
        assert_eq!(
            h.post(&alert_body(id, "dlp", "low", "E1001"), &format!("wh-{id}"))
                .await
                .status,
            202
        );
    }
    assert_eq!(h.flusher.flush().await.threaded, 1);
    h.deliver_all().await;
    assert_eq!(
        h.sim.records("sn_si_incident")[0]["priority"],
        "1",
        "1 + 3 alerts reach the step"
    );
}
