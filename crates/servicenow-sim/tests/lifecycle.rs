//! A record's life after creation (issue 14): journal fields kept in `sys_journal_field`, the state models
//! with their mandatory close fields and the `active` flag, and an analyst acting on records through the
//! control API.
#![allow(clippy::field_reassign_with_default)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use servicenow_sim::SimConfig;
use servicenow_sim::config::{FormRulePolicy, UserConfig};

async fn patch(sim: &servicenow_sim::RunningSim, table: &str, sys_id: &str, user: &str, body: Value) -> (u16, Value) {
    let resp = req(sim, Method::PATCH, &format!("/api/now/table/{table}/{sys_id}"), user)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A security incident created by `user`, as JSON (`sys_id`, `number`).
async fn new_sir(sim: &servicenow_sim::RunningSim, user: &str, desc: &str) -> Value {
    create_ok(sim, "sn_si_incident", user, json!({"short_description": desc})).await
}

/// Walk a security incident from Draft to Review along the NIST Stateful flow (setup-assistant-reference:
/// Draft > Analysis > Contain > Eradicate > Recover, then Review), as `user` (None: the analyst).
fn to_review(sim: &servicenow_sim::RunningSim, user: Option<&str>, sys_id: &str) {
    for state in ["16", "18", "19", "20", "100"] {
        sim.act_as(user, "sn_si_incident", sys_id, json!({"state": state}))
            .unwrap_or_else(|e| panic!("to {state}: {e:?}"));
    }
}

fn journal_of(sim: &servicenow_sim::RunningSim, sys_id: &str) -> Vec<Value> {
    sim.records("sys_journal_field")
        .into_iter()
        .filter(|e| e["element_id"] == sys_id)
        .collect()
}

#[tokio::test]
async fn a_work_note_is_a_journal_entry_not_a_field_of_the_record() {
    let sim = start().await;
    let mut body = incident("usb copy");
    body["work_notes"] = json!("first note, written with the record");
    let inc = create_ok(&sim, "incident", "relay", body).await;
    let id = inc["sys_id"].as_str().unwrap().to_string();

    let (s, _) = patch(&sim, "incident", &id, "relay", json!({"work_notes": "a repeat alert"})).await;
    assert_eq!(s, 200);
    // an empty value adds no entry
    let (s, _) = patch(&sim, "incident", &id, "relay", json!({"work_notes": "  "})).await;
    assert_eq!(s, 200);

    let entries = journal_of(&sim, &id);
    assert_eq!(entries.len(), 2, "{entries:?}");
    let values: Vec<&str> = entries.iter().map(|e| e["value"].as_str().unwrap()).collect();
    assert_eq!(values, ["first note, written with the record", "a repeat alert"]);
    for e in &entries {
        assert_eq!(e["element"], "work_notes");
        assert_eq!(e["name"], "incident");
        assert_eq!(e["sys_created_by"], "relay");
    }
    // the record itself reads back without the journal text
    let (s, read) = get_json(&sim, &format!("/api/now/table/incident/{id}"), "relay").await;
    assert_eq!(s, 200);
    assert!(read["result"].get("work_notes").is_none_or(|v| v == ""), "{read}");
    assert!(sim.records("incident")[0].get("work_notes").is_none());

    // the journal is queryable over the Table API by audit_viewer (the relay holds it), not by every
    // user who may read the incident
    let path = format!("/api/now/table/sys_journal_field?sysparm_query=element_id={id}^element=work_notes");
    let (s, list) = get_json(&sim, &path, "relay").await;
    assert_eq!(s, 200);
    assert_eq!(list["result"].as_array().unwrap().len(), 2, "{list}");
    let (s, list) = get_json(&sim, &path, "readonly").await;
    assert_eq!((s, list["result"].as_array().unwrap().len()), (200, 0), "{list}");
    // and cannot be written directly
    let resp = create(
        &sim,
        "sys_journal_field",
        "relay",
        json!({"element_id": id, "value": "x"}),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 403);
    sim.shutdown().await;
}

#[tokio::test]
async fn journal_entries_read_through_the_record_when_the_instance_allows_it() {
    let mut cfg = SimConfig::default();
    cfg.journal_read_through_record = true;
    // an integration user without audit_viewer: reads only the SIRs it created
    cfg.users.push(UserConfig {
        name: "agent".into(),
        password: "agent-password".into(),
        roles: vec!["sn_si.integration_user".into()],
    });
    let sim = start_with(cfg).await;
    let own = new_sir(&sim, "agent", "own").await;
    let other = new_sir(&sim, "admin", "analyst's").await;
    let (own_id, other_id) = (own["sys_id"].as_str().unwrap(), other["sys_id"].as_str().unwrap());
    assert_eq!(
        patch(&sim, "sn_si_incident", own_id, "agent", json!({"work_notes": "mine"}))
            .await
            .0,
        200
    );
    assert_eq!(
        patch(
            &sim,
            "sn_si_incident",
            other_id,
            "admin",
            json!({"work_notes": "theirs"})
        )
        .await
        .0,
        200
    );
    let path = "/api/now/table/sys_journal_field?sysparm_query=element=work_notes";
    let values = |list: &Value| -> Vec<String> {
        list["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["value"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, list) = get_json(&sim, path, "agent").await;
    assert_eq!(s, 200);
    assert_eq!(
        values(&list),
        ["mine"],
        "entries of records it may not read stay hidden"
    );
    // audit_viewer reads every entry, whatever the record: the exposure infra/servicenow-roles.md names
    let (_, all) = get_json(&sim, path, "relay").await;
    assert_eq!(values(&all), ["mine", "theirs"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn resolving_an_incident_needs_its_close_code_and_notes_and_closing_makes_it_inactive() {
    let sim = start().await;
    let inc = create_ok(&sim, "incident", "relay", incident("after-hours access")).await;
    let id = inc["sys_id"].as_str().unwrap().to_string();
    let stored = |sim: &servicenow_sim::RunningSim| sim.records("incident")[0].clone();
    assert_eq!(stored(&sim)["active"], "true");

    let (s, body) = patch(
        &sim,
        "incident",
        &id,
        "relay",
        json!({"state": "6", "work_notes": "resolving"}),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(
        journal_of(&sim, &id).is_empty(),
        "a refused write adds no journal entry"
    );
    let detail = error_detail(&body);
    assert!(
        detail.contains("mandatory when the state is Resolved: close_code, close_notes"),
        "{detail}"
    );
    assert_eq!(stored(&sim)["state"], "1", "nothing written");

    let resolve = json!({"state": "6", "close_code": "Solution provided", "close_notes": "all alerts resolved"});
    let (s, _) = patch(&sim, "incident", &id, "relay", resolve).await;
    assert_eq!(s, 200);
    let r = stored(&sim);
    assert_eq!(r["state"], "6");
    // the close fields stay mandatory while it is resolved: clearing them is refused
    let (s, _) = patch(&sim, "incident", &id, "relay", json!({"close_notes": ""})).await;
    assert_eq!(s, 403);
    assert_eq!(
        r["active"], "true",
        "a resolved incident stays active until it is closed"
    );
    assert_eq!(r["resolved_by"], sys_id_of(&sim, "sys_user", "user_name", "relay"));
    assert!(!r["resolved_at"].as_str().unwrap().is_empty());

    // reopened by the caller: back to In Progress, active
    let (s, _) = patch(&sim, "incident", &id, "relay", json!({"state": "2"})).await;
    assert_eq!(s, 200);
    assert_eq!(stored(&sim)["active"], "true");
    // resolved again, then closed (the close fields are still on the record; Closed follows Resolved only):
    // inactive, closed_at/closed_by set
    let (s, _) = patch(&sim, "incident", &id, "relay", json!({"state": "6"})).await;
    assert_eq!(s, 200);
    let (s, _) = patch(&sim, "incident", &id, "relay", json!({"state": "7"})).await;
    assert_eq!(s, 200);
    let r = stored(&sim);
    assert_eq!(r["active"], "false");
    assert!(!r["closed_at"].as_str().unwrap().is_empty());
    // Closed is final: the relay may neither reopen it nor add a note; admin may
    let (s, body) = patch(&sim, "incident", &id, "relay", json!({"state": "2"})).await;
    assert_eq!(s, 403, "{body}");
    assert!(
        error_detail(&body).contains("is Closed: a record in a final state cannot be updated or reopened"),
        "{body}"
    );
    let (s, _) = patch(&sim, "incident", &id, "relay", json!({"work_notes": "late repeat"})).await;
    assert_eq!(s, 403);
    assert!(journal_of(&sim, &id).is_empty());
    let (s, _) = patch(&sim, "incident", &id, "admin", json!({"work_notes": "admin note"})).await;
    assert_eq!(s, 200);
    // cancelling another incident needs no close fields
    let other = create_ok(&sim, "incident", "relay", incident("duplicate")).await;
    let (s, _) = patch(
        &sim,
        "incident",
        other["sys_id"].as_str().unwrap(),
        "relay",
        json!({"state": "8"}),
    )
    .await;
    assert_eq!(s, 200);
    sim.shutdown().await;

    // an instance whose close rule binds the form only lets the bare resolve through, and one that lets
    // closed records be updated takes the reopen (New → Closed and Closed → In Progress are no moves of the
    // incident's state flow: this instance does not enforce the flow either)
    let mut cfg = SimConfig::default();
    cfg.state_rules_on_api = FormRulePolicy::Ignore;
    cfg.final_state_writes = FormRulePolicy::Ignore;
    cfg.state_transition_writes = FormRulePolicy::Ignore;
    let sim = start_with(cfg).await;
    let inc = create_ok(&sim, "incident", "relay", incident("x")).await;
    let closed = create_ok(&sim, "incident", "relay", incident("closed")).await;
    let closed_id = closed["sys_id"].as_str().unwrap();
    assert_eq!(
        patch(&sim, "incident", closed_id, "relay", json!({"state": "7"}))
            .await
            .0,
        200
    );
    assert_eq!(
        patch(&sim, "incident", closed_id, "relay", json!({"state": "2"}))
            .await
            .0,
        200
    );
    let (s, _) = patch(
        &sim,
        "incident",
        inc["sys_id"].as_str().unwrap(),
        "relay",
        json!({"state": "6"}),
    )
    .await;
    assert_eq!(s, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn closing_a_security_incident_needs_its_close_code_and_notes() {
    let sim = start().await;
    let sir = new_sir(&sim, "relay", "usb copy").await;
    let id = sir["sys_id"].as_str().unwrap();
    // a security incident is closed from Review (t_ClosingSecIncidents)
    to_review(&sim, Some("relay"), id);
    let (s, body) = patch(&sim, "sn_si_incident", id, "relay", json!({"state": "3"})).await;
    assert_eq!(s, 403);
    assert!(error_detail(&body).contains("close_code, close_notes"), "{body}");
    let close = json!({"state": "3", "close_code": "False positive", "close_notes": "dismissed"});
    assert_eq!(patch(&sim, "sn_si_incident", id, "relay", close).await.0, 200);
    let r = &sim.records("sn_si_incident")[0];
    assert_eq!(r["active"], "false");
    assert_eq!(r["close_code"], "False positive");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_analyst_acts_on_records_through_the_control_api() {
    let sim = start().await;
    let sir = new_sir(&sim, "relay", "usb copy").await;
    let id = sir["sys_id"].as_str().unwrap().to_string();

    // over HTTP: reassign and note, as the default instance's analyst (agent roles, not admin)
    let resp = client()
        .post(format!("{}/sim/records/sn_si_incident/{id}", sim.base_url()))
        .json(&json!({"fields": {"assignment_group": "Security Operations", "work_notes": "taking this"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let row: Value = resp.json().await.unwrap();
    assert_eq!(
        row["result"]["assignment_group"],
        sys_id_of(&sim, "sys_user_group", "name", "Security Operations"),
        "references by display value"
    );
    let notes = journal_of(&sim, &id);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["sys_created_by"], "analyst");

    // the same rules as the Table API: the state flow, the close fields, the user's write ACL
    let (status, message) = sim
        .act_as(None, "sn_si_incident", &id, json!({"state": "3"}))
        .unwrap_err();
    assert_eq!(status, 403);
    assert!(
        message.contains("Invalid state transition from Draft to Closed"),
        "{message}"
    );
    to_review(&sim, None, &id);
    let (status, message) = sim
        .act_as(None, "sn_si_incident", &id, json!({"state": "3"}))
        .unwrap_err();
    assert_eq!(status, 403);
    assert!(message.contains("close_code"), "{message}");
    let closed = sim
        .act_as(
            None,
            "sn_si_incident",
            &id,
            json!({"state": "3", "close_code": "Resolved", "close_notes": "done"}),
        )
        .unwrap();
    assert_eq!(closed["active"], "false");
    // closed is final for the analyst too; admin may still write
    let (status, message) = sim
        .act_as(None, "sn_si_incident", &id, json!({"work_notes": "one more"}))
        .unwrap_err();
    assert_eq!(status, 403);
    assert!(
        message.contains("is Closed: a record in a final state cannot be updated"),
        "{message}"
    );
    assert!(
        sim.act_as(Some("admin"), "sn_si_incident", &id, json!({"work_notes": "admin"}))
            .is_ok()
    );
    let theirs = new_sir(&sim, "admin", "analyst's").await;
    let err = sim
        .act_as(
            Some("relay"),
            "sn_si_incident",
            theirs["sys_id"].as_str().unwrap(),
            json!({"work_notes": "x"}),
        )
        .unwrap_err();
    assert_eq!(err.0, 403);
    assert_eq!(sim.act_as(None, "incident", "0123", json!({})).unwrap_err().0, 404);

    // bad control requests name the problem
    let resp = client()
        .post(format!("{}/sim/records/sn_si_incident/{id}", sim.base_url()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    sim.shutdown().await;
}

#[test]
fn a_table_with_journal_fields_needs_the_journal_table() {
    let mut cfg = SimConfig::default();
    cfg.tables.retain(|t| t.name != "sys_journal_field");
    let err = cfg.validate().unwrap_err();
    assert!(err.to_string().contains("sys_journal_field"), "{err}");
}

#[test]
fn a_state_rule_naming_a_field_the_table_lacks_is_a_config_error() {
    let mut cfg = SimConfig::default();
    let incident = cfg.tables.iter_mut().find(|t| t.name == "incident").unwrap();
    incident.state_rules[0].mandatory.push("u_close_reason".into());
    let err = cfg.validate().unwrap_err().to_string();
    assert_eq!(
        err,
        "table incident: state_rules.mandatory names field u_close_reason, which the table does not have"
    );
}

#[tokio::test]
async fn a_state_move_the_flow_does_not_declare_is_refused_and_nothing_is_written() {
    let sim = start().await;
    let inc = create_ok(&sim, "incident", "relay", incident("usb copy")).await;
    let id = inc["sys_id"].as_str().unwrap().to_string();
    let stored = |sim: &servicenow_sim::RunningSim| sim.records("incident")[0].clone();
    let before = stored(&sim);

    // New → Closed in one write, with every close field and a work note: Closed follows Resolved only
    let close = json!({"state": "7", "close_code": "Solution provided", "close_notes": "done",
                       "work_notes": "closing"});
    let (s, body) = patch(&sim, "incident", &id, "relay", close).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["message"], "Operation Failed", "{body}");
    let detail = error_detail(&body);
    assert!(
        detail.starts_with("Invalid state transition from New to Closed"),
        "{detail}"
    );
    assert!(
        detail.contains("may move to In Progress, Resolved, Canceled"),
        "{detail}"
    );
    assert_eq!(stored(&sim), before, "the record is unchanged");
    assert!(
        journal_of(&sim, &id).is_empty(),
        "a refused write adds no journal entry"
    );
    // the analyst is refused the same way
    let (status, message) = sim
        .act_as(
            None,
            "incident",
            &id,
            json!({"state": "7", "close_code": "x", "close_notes": "y"}),
        )
        .unwrap_err();
    assert_eq!(status, 403);
    assert!(
        message.contains("Invalid state transition from New to Closed"),
        "{message}"
    );

    // a declared move goes through; setting the same state again is no move; neither is a write without it
    let (s, _) = patch(&sim, "incident", &id, "relay", json!({"state": "2"})).await;
    assert_eq!(s, 200);
    let (s, _) = patch(
        &sim,
        "incident",
        &id,
        "relay",
        json!({"state": "2", "work_notes": "still on it"}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = patch(
        &sim,
        "incident",
        &id,
        "relay",
        json!({"short_description": "usb copy (847 files)"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(stored(&sim)["state"], "2");
    // In Progress → New is no move either
    let (s, body) = patch(&sim, "incident", &id, "relay", json!({"state": "1"})).await;
    assert_eq!(s, 403, "{body}");
    assert!(error_detail(&body).contains("from In Progress to New"), "{body}");

    // resolve, then the documented reopen (reopening-incident: Resolved → In Progress), then resolve and close
    let resolve = json!({"state": "6", "close_code": "Solution provided", "close_notes": "resolved"});
    assert_eq!(patch(&sim, "incident", &id, "relay", resolve.clone()).await.0, 200);
    assert_eq!(
        patch(&sim, "incident", &id, "relay", json!({"state": "2"})).await.0,
        200
    );
    assert_eq!(patch(&sim, "incident", &id, "relay", resolve).await.0, 200);
    assert_eq!(
        patch(&sim, "incident", &id, "relay", json!({"state": "7"})).await.0,
        200
    );
    // Closed is still final
    let (s, body) = patch(&sim, "incident", &id, "relay", json!({"state": "2"})).await;
    assert_eq!(s, 403);
    assert!(
        error_detail(&body).contains("a record in a final state cannot be updated"),
        "{body}"
    );

    // admin passes the flow, as it passes the final states (the close fields still bind it)
    let other = create_ok(&sim, "incident", "relay", incident("duplicate")).await;
    let other_id = other["sys_id"].as_str().unwrap();
    let (s, body) = patch(
        &sim,
        "incident",
        other_id,
        "admin",
        json!({"state": "7", "close_code": "Duplicate", "close_notes": "closed by admin"}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_instance_that_does_not_enforce_the_flow_takes_any_move_but_closed_stays_closed() {
    let mut cfg = SimConfig::default();
    cfg.state_transition_writes = FormRulePolicy::Ignore;
    let sim = start_with(cfg).await;
    let inc = create_ok(&sim, "incident", "relay", incident("usb copy")).await;
    let id = inc["sys_id"].as_str().unwrap();
    let close = json!({"state": "7", "close_code": "Solution provided", "close_notes": "done"});
    let (s, body) = patch(&sim, "incident", id, "relay", close).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(sim.records("incident")[0]["active"], "false");
    let sir = new_sir(&sim, "relay", "usb copy").await;
    let close = json!({"state": "3", "close_code": "False positive", "close_notes": "dismissed"});
    let (s, body) = patch(&sim, "sn_si_incident", sir["sys_id"].as_str().unwrap(), "relay", close).await;
    assert_eq!(s, 200, "{body}");
    // the final state still holds
    let (s, _) = patch(&sim, "incident", id, "relay", json!({"state": "2"})).await;
    assert_eq!(s, 403);
    sim.shutdown().await;

    // and the other way round: an instance letting closed records be updated still refuses the reopen the
    // flow does not declare
    let mut cfg = SimConfig::default();
    cfg.final_state_writes = FormRulePolicy::Ignore;
    let sim = start_with(cfg).await;
    let inc = create_ok(&sim, "incident", "relay", incident("usb copy")).await;
    let id = inc["sys_id"].as_str().unwrap();
    let resolve = json!({"state": "6", "close_code": "Solution provided", "close_notes": "done"});
    assert_eq!(patch(&sim, "incident", id, "relay", resolve).await.0, 200);
    assert_eq!(patch(&sim, "incident", id, "relay", json!({"state": "7"})).await.0, 200);
    assert_eq!(
        patch(&sim, "incident", id, "relay", json!({"work_notes": "late"}))
            .await
            .0,
        200
    );
    let (s, body) = patch(&sim, "incident", id, "relay", json!({"state": "2"})).await;
    assert_eq!(s, 403, "{body}");
    assert!(
        error_detail(&body).contains("Invalid state transition from Closed to In Progress"),
        "{body}"
    );
    assert!(error_detail(&body).contains("may move to no other state"), "{body}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_security_incident_follows_the_nist_stateful_flow() {
    let sim = start().await;
    let sir = new_sir(&sim, "relay", "usb copy").await;
    let id = sir["sys_id"].as_str().unwrap();
    // Draft → Closed (a false positive dismissed at once) skips the process: refused
    let close = json!({"state": "3", "close_code": "False positive", "close_notes": "dismissed"});
    let (s, body) = patch(&sim, "sn_si_incident", id, "relay", close.clone()).await;
    assert_eq!(s, 403, "{body}");
    assert!(
        error_detail(&body).contains(
            "Invalid state transition from Draft to Closed: sn_si_incident SIR0010001 in Draft may move to Analysis"
        ),
        "{body}"
    );
    // skipping one step is refused too; going back as well (unidirectional)
    assert_eq!(
        patch(&sim, "sn_si_incident", id, "relay", json!({"state": "18"}))
            .await
            .0,
        403
    );
    assert_eq!(
        patch(&sim, "sn_si_incident", id, "relay", json!({"state": "16"}))
            .await
            .0,
        200
    );
    assert_eq!(
        patch(&sim, "sn_si_incident", id, "relay", json!({"state": "10"}))
            .await
            .0,
        403
    );
    // Cancelled is no state of the process definition: no move leads there
    assert_eq!(
        patch(&sim, "sn_si_incident", id, "relay", json!({"state": "7"}))
            .await
            .0,
        403
    );
    for state in ["18", "19", "20", "100"] {
        assert_eq!(
            patch(&sim, "sn_si_incident", id, "relay", json!({"state": state}))
                .await
                .0,
            200,
            "{state}"
        );
    }
    assert_eq!(patch(&sim, "sn_si_incident", id, "relay", close).await.0, 200);
    assert_eq!(sim.records("sn_si_incident")[0]["state"], "3");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_record_is_inserted_in_one_of_its_tables_initial_states() {
    let sim = start().await;
    // a security incident may start in Draft or Analysis ("if the Analyst starts with the Analysis state")
    let sir = create_ok(
        &sim,
        "sn_si_incident",
        "relay",
        json!({"short_description": "x", "state": "16"}),
    )
    .await;
    assert_eq!(sir["state"], "16");
    let mut body = incident("created resolved");
    body["state"] = json!("6");
    body["close_code"] = json!("Solution provided");
    body["close_notes"] = json!("n");
    let resp = create(&sim, "incident", "relay", body.clone()).await;
    assert_eq!(resp.status().as_u16(), 403);
    let err: Value = resp.json().await.unwrap();
    assert!(
        error_detail(&err).contains("Invalid initial state Resolved: a new incident record starts in New"),
        "{err}"
    );
    assert!(sim.records("incident").is_empty(), "nothing written");
    // admin may insert in any state; so may anyone on an instance that does not check it
    assert_eq!(
        create(&sim, "incident", "admin", body.clone()).await.status().as_u16(),
        201
    );
    sim.shutdown().await;
    let mut cfg = SimConfig::default();
    cfg.initial_state_inserts = FormRulePolicy::Ignore;
    let sim = start_with(cfg).await;
    assert_eq!(create(&sim, "incident", "relay", body).await.status().as_u16(), 201);
    sim.shutdown().await;
}

#[test]
fn the_shipped_state_flows_agree_with_the_documented_moves() {
    let tables = SimConfig::default().resolved_tables().unwrap();
    let t = |n: &str| tables.iter().find(|t| t.name == n).unwrap().clone();
    let (inc, sir, sit, hr, prb) = (
        t("incident"),
        t("sn_si_incident"),
        t("sn_si_task"),
        t("sn_hr_core_case"),
        t("problem"),
    );
    // incident: the relay's resolve and false-positive moves from New, the reopen
    assert!(inc.transition_allowed("1", "6") && inc.transition_allowed("1", "8"));
    assert!(inc.transition_allowed("6", "2") && inc.transition_allowed("6", "7"));
    assert!(!inc.transition_allowed("1", "7") && !inc.transition_allowed("7", "2"));
    assert!(inc.transition_allowed("3", "3"), "the same state is no move");
    // security incident: sequential, closed from Review only
    assert!(!sir.transition_allowed("10", "3") && sir.transition_allowed("100", "3"));
    // response task: each state's choice array; Cancelled from every open state
    assert!(!sit.transition_allowed("10", "3") && sit.transition_allowed("18", "3"));
    assert!(["1", "10", "16", "18"].iter().all(|s| sit.transition_allowed(s, "7")));
    // HR case: Draft and Awaiting Approval "can only be changed to Ready, Closed Complete, Closed Incomplete,
    // Cancelled, or Suspended"
    assert!(!hr.transition_allowed("1", "18") && hr.transition_allowed("1", "3"));
    assert!(hr.transition_allowed("10", "3") && hr.transition_allowed("10", "7"));
    // problem: assessed before it is resolved; Re-analyze reopens a closed problem
    assert!(!prb.transition_allowed("101", "106") && prb.transition_allowed("107", "103"));
    // every table with a state model has a flow and initial states; the table defaults start there
    for t in tables.iter().filter(|t| !t.state_rules.is_empty()) {
        assert!(
            !t.state_transitions.is_empty() && !t.initial_states.is_empty(),
            "{}",
            t.name
        );
        let default = &t.defaults["state"];
        assert!(t.initial_state_allowed(default), "{}: default state {default}", t.name);
    }
    // a table without a flow takes any move
    assert!(t("sn_compliance_policy_exception").transition_allowed("1", "3"));
}

#[test]
fn a_state_flow_naming_a_state_the_table_lacks_is_a_config_error() {
    let mut cfg = SimConfig::default();
    let incident = cfg.tables.iter_mut().find(|t| t.name == "incident").unwrap();
    incident.state_transitions.get_mut("1").unwrap().push("5".into());
    let err = cfg.validate().unwrap_err().to_string();
    assert_eq!(
        err,
        "table incident: state_transitions names state 5, which is not one of the table's state choices"
    );
}
