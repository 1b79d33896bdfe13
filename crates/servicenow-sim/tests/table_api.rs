#![allow(clippy::field_reassign_with_default)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use servicenow_sim::SimConfig;
use servicenow_sim::config::ReferencePolicy;

#[tokio::test]
async fn numbering_sys_ids_and_string_values() {
    let sim = start().await;
    let a = create_ok(
        &sim,
        "incident",
        "relay",
        json!({"short_description": "a", "impact": 2, "urgency": 1}),
    )
    .await;
    let b = create_ok(&sim, "incident", "relay", incident("b")).await;
    let t = create_ok(&sim, "task", "relay", json!({"short_description": "t"})).await;
    let resp = create_by_display(
        &sim,
        "sn_ti_observable",
        "relay",
        json!({"type": "IPv4 address", "value": "10.0.0.1"}),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 201);
    let o = resp.json::<Value>().await.unwrap()["result"].clone();
    assert_eq!(a["number"], "INC0010001");
    assert_eq!(b["number"], "INC0010002");
    assert_eq!(t["number"], "TASK0010001");
    assert!(o.get("number").is_none(), "sn_ti_observable has no number: {o}");
    let id = a["sys_id"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(a["impact"], "2", "numbers are stored as strings");
    for (k, v) in a.as_object().unwrap() {
        assert!(v.is_string(), "{k} is not a string: {v}");
    }
    // versioned paths address the same table
    let v1 = create_ok(&sim, "incident", "relay", incident("c")).await;
    assert_eq!(v1["number"], "INC0010003");
    let resp = req(&sim, Method::POST, "/api/now/v2/table/incident", "relay")
        .body(incident("d").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .contains("/api/now/table/incident/")
    );
    assert_eq!(sim.records("incident").len(), 4);
    // reset restarts the counters
    sim.reset();
    assert!(sim.records("incident").is_empty());
    assert_eq!(
        create_ok(&sim, "incident", "relay", incident("e")).await["number"],
        "INC0010001"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn priority_comes_from_impact_and_urgency() {
    let sim = start().await;
    let cases = [
        ("1", "1", "1"),
        ("1", "2", "2"),
        ("2", "1", "2"),
        ("2", "2", "3"),
        ("2", "3", "4"),
        ("3", "3", "5"),
    ];
    for (impact, urgency, expected) in cases {
        let r = create_ok(
            &sim,
            "incident",
            "relay",
            json!({"short_description": "p", "impact": impact, "urgency": urgency, "priority": "1"}),
        )
        .await;
        assert_eq!(r["priority"], expected, "impact {impact} urgency {urgency}");
    }
    let default = create_ok(
        &sim,
        "incident",
        "relay",
        json!({"short_description": "d", "priority": "1"}),
    )
    .await;
    assert_eq!(
        default["priority"], "5",
        "defaults impact 3 urgency 3, written priority ignored"
    );
    let p = create_ok(
        &sim,
        "problem",
        "relay",
        json!({"short_description": "p", "impact": "1", "urgency": "1"}),
    )
    .await;
    assert_eq!(p["number"], "PRB0010001");
    assert_eq!(p["priority"], "1");
    // updating urgency recomputes
    let id = default["sys_id"].as_str().unwrap();
    let resp = req(&sim, Method::PATCH, &format!("/api/now/table/incident/{id}"), "relay")
        .body(json!({"urgency": "1", "impact": "1"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["result"]["priority"], "1");
    assert_eq!(body["result"]["sys_mod_count"], "1");
    sim.shutdown().await;
}

#[tokio::test]
async fn reference_fields_by_display_value_and_sys_id() {
    let sim = start().await;
    let url = "/api/now/table/incident?sysparm_input_display_value=true";
    let resp = req(&sim, Method::POST, url, "relay")
        .body(json!({"short_description": "x", "assignment_group": "Security Operations"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let r: Value = resp.json().await.unwrap();
    let group = &r["result"]["assignment_group"];
    let gid = group["value"].as_str().unwrap().to_string();
    assert_eq!(gid.len(), 32);
    assert!(
        group["link"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/api/now/table/sys_user_group/{gid}"))
    );
    assert_eq!(
        sim.records("incident")[0]["assignment_group.display_value"],
        "Security Operations"
    );

    // by sys_id, without links, limited fields
    let resp = req(
        &sim,
        Method::POST,
        "/api/now/table/incident?sysparm_exclude_reference_link=true&sysparm_fields=number,assignment_group",
        "relay",
    )
    .body(json!({"short_description": "y", "assignment_group": gid}).to_string())
    .send()
    .await
    .unwrap();
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["result"], json!({"number": "INC0010002", "assignment_group": gid}));

    // default policy: an unknown name leaves the reference empty, with no error
    let resp = req(&sim, Method::POST, url, "relay")
        .body(json!({"short_description": "z", "assignment_group": "No Such Team"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    // a name is not looked up without sysparm_input_display_value
    let resp = create(
        &sim,
        "incident",
        "relay",
        json!({"short_description": "z", "assignment_group": "Compliance"}),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 201);
    let recs = sim.records("incident");
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[2]["assignment_group"], "");
    assert_eq!(recs[3]["assignment_group"], "");
    sim.shutdown().await;
}

#[tokio::test]
async fn ambiguous_and_unknown_reference_policies() {
    let mut config = SimConfig::default();
    config.groups.push("Compliance".into());
    let sim = start_with(config.clone()).await;
    let url = "/api/now/table/incident?sysparm_input_display_value=true";
    let resp = req(&sim, Method::POST, url, "relay")
        .body(json!({"short_description": "x", "assignment_group": "Compliance"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(error_detail(&body).contains("Ambiguous"), "{body}");
    sim.shutdown().await;

    config.ambiguous_reference = ReferencePolicy::First;
    config.unknown_reference = ReferencePolicy::Blank;
    let sim = start_with(config).await;
    for name in ["Compliance", "Nobody"] {
        let resp = req(&sim, Method::POST, url, "relay")
            .body(json!({"short_description": "x", "assignment_group": name}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "{name}");
    }
    let recs = sim.records("incident");
    assert_eq!(recs[0]["assignment_group.display_value"], "Compliance");
    assert_eq!(recs[1]["assignment_group"], "", "unknown name left blank");
    sim.shutdown().await;

    // reject: an unknown name is a 400 naming the field and value, nothing stored
    let config = SimConfig {
        unknown_reference: ReferencePolicy::Reject,
        ..SimConfig::default()
    };
    let sim = start_with(config).await;
    let resp = req(&sim, Method::POST, url, "relay")
        .body(json!({"short_description": "z", "assignment_group": "No Such Team"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Invalid reference");
    assert!(
        error_detail(&body).contains("No Such Team") && error_detail(&body).contains("assignment_group"),
        "{body}"
    );
    assert!(sim.records("incident").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn header_checks_and_invalid_table() {
    let sim = start().await;
    header_checks(&sim, false).await;
    sim.shutdown().await;
    let config = SimConfig {
        require_accept_header: true,
        require_content_type_header: true,
        ..SimConfig::default()
    };
    let sim = start_with(config).await;
    header_checks(&sim, true).await;
    sim.shutdown().await;
}

/// Accept and Content-Type default to JSON (c_TableAPI) unless the instance is set to require them.
async fn header_checks(sim: &servicenow_sim::RunningSim, strict: bool) {
    let missing_status = if strict { "HTTP/1.1 400" } else { "HTTP/1.1 201" };
    let url = format!("{}/api/now/table/incident", sim.base_url());
    let body = incident("h").to_string();
    // reqwest always sends Accept, so the missing-Accept case goes over a raw socket
    let raw = format!(
        "POST /api/now/table/incident HTTP/1.1\r\nHost: x\r\nAuthorization: Basic cmVsYXk6cmVsYXktcGFzc3dvcmQ=\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(sim.local_addr()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, raw.as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
        .await
        .unwrap();
    assert!(answer.starts_with(missing_status), "{answer}");
    if !strict {
        let json_body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        assert!(json_body.contains("\"result\""), "answered in JSON: {answer}");
    }
    let html_only = client()
        .post(&url)
        .basic_auth("relay", Some("relay-password"))
        .header("Accept", "text/html")
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(html_only.status().as_u16(), 406);
    let no_ct = client()
        .post(&url)
        .basic_auth("relay", Some("relay-password"))
        .header("Accept", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(no_ct.status().as_u16(), if strict { 400 } else { 201 });
    let text = client()
        .post(&url)
        .basic_auth("relay", Some("relay-password"))
        .header("Accept", "application/json")
        .header("Content-Type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(text.status().as_u16(), 415);
    let bad_json = req(sim, Method::POST, "/api/now/table/incident", "relay")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status().as_u16(), 400);
    let invalid = create(sim, "u_nope", "admin", incident("x")).await;
    assert_eq!(invalid.status().as_u16(), 400);
    let v: Value = invalid.json().await.unwrap();
    assert_eq!(v["error"]["message"], "Invalid table u_nope");
    assert_eq!(v["status"], "failure");
    let unauth = client()
        .post(&url)
        .header("Accept", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status().as_u16(), 401);
    let v: Value = unauth.json().await.unwrap();
    assert_eq!(v["error"]["message"], "User Not Authenticated");
    let wrong = client()
        .get(&url)
        .basic_auth("relay", Some("nope"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let expected = if strict { 0 } else { 2 };
    assert_eq!(
        sim.records("incident").len(),
        expected,
        "only the defaulted requests wrote"
    );
}

async fn delete(sim: &servicenow_sim::RunningSim, table: &str, id: &str, user: &str) -> u16 {
    req(sim, Method::DELETE, &format!("/api/now/table/{table}/{id}"), user)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn acl_roles_read_write_delete() {
    let sim = start().await;
    let denied = create(&sim, "incident", "readonly", incident("r")).await;
    assert_eq!(denied.status().as_u16(), 403);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Operation Failed");
    assert_eq!(
        error_detail(&body),
        "ACL Exception Insert Failed due to security constraints"
    );

    // itil reads every incident; deleting needs admin
    let mine = create_ok(&sim, "incident", "relay", incident("mine")).await;
    let theirs = create_ok(&sim, "incident", "admin", incident("theirs")).await;
    let (mine_id, theirs_id) = (mine["sys_id"].as_str().unwrap(), theirs["sys_id"].as_str().unwrap());
    let (s, _) = get_json(&sim, &format!("/api/now/table/incident/{theirs_id}"), "relay").await;
    assert_eq!(s, 200);
    let (_, list) = get_json(&sim, "/api/now/table/incident", "readonly").await;
    assert_eq!(
        list["result"].as_array().unwrap().len(),
        2,
        "itil_read reads everything"
    );
    assert_eq!(
        delete(&sim, "incident", mine_id, "relay").await,
        403,
        "itil may not delete"
    );
    assert_eq!(delete(&sim, "incident", mine_id, "readonly").await, 403);
    assert_eq!(delete(&sim, "incident", mine_id, "admin").await, 204);

    // sn_si.integration_user: creates, reads and updates only its own SIRs, cannot delete
    let sir = create_ok(&sim, "sn_si_incident", "relay", incident("sir")).await;
    let other = create_ok(&sim, "sn_si_incident", "admin", incident("analyst's")).await;
    let (sir_id, other_id) = (sir["sys_id"].as_str().unwrap(), other["sys_id"].as_str().unwrap());
    let (s, _) = get_json(&sim, &format!("/api/now/table/sn_si_incident/{sir_id}"), "relay").await;
    assert_eq!(s, 200);
    let (s, body) = get_json(&sim, &format!("/api/now/table/sn_si_incident/{other_id}"), "relay").await;
    assert_eq!(s, 404);
    assert_eq!(body["error"]["message"], "No Record found");
    let (_, list) = get_json(&sim, "/api/now/table/sn_si_incident", "relay").await;
    assert_eq!(list["result"].as_array().unwrap().len(), 1, "query hides others' SIRs");
    let patch = req(
        &sim,
        Method::PATCH,
        &format!("/api/now/table/sn_si_incident/{sir_id}"),
        "relay",
    )
    .body(json!({"work_notes": "more"}).to_string())
    .send()
    .await
    .unwrap();
    assert_eq!(patch.status().as_u16(), 200);
    assert_eq!(delete(&sim, "sn_si_incident", sir_id, "relay").await, 403);

    // a restricted SIR is invisible even to its creator
    let restrict = req(
        &sim,
        Method::PATCH,
        &format!("/api/now/table/sn_si_incident/{sir_id}"),
        "admin",
    )
    .body(json!({"restricted": "true"}).to_string())
    .send()
    .await
    .unwrap();
    assert_eq!(restrict.status().as_u16(), 200);
    let (s, _) = get_json(&sim, &format!("/api/now/table/sn_si_incident/{sir_id}"), "relay").await;
    assert_eq!(s, 404);
    let (_, list) = get_json(&sim, "/api/now/table/sn_si_incident", "relay").await;
    assert!(list["result"].as_array().unwrap().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn data_policy_lists_mandatory_fields() {
    let sim = start().await;
    let resp = create(
        &sim,
        "incident",
        "relay",
        json!({"description": "no short description"}),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Operation Failed");
    assert_eq!(
        error_detail(&body),
        "Data Policy Exception: \n\tThe following fields are mandatory: short_description"
    );
    // HR case: hr_service and opened_for by default
    let resp = create(
        &sim,
        "sn_hr_core_case",
        "relay",
        json!({"short_description": "x", "opened_for": ""}),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = resp.json().await.unwrap();
    assert!(
        error_detail(&body).ends_with("mandatory: hr_service, opened_for"),
        "{body}"
    );
    assert!(sim.records("sn_hr_core_case").is_empty());
    sim.shutdown().await;

    // a data policy added in the config
    let mut config = SimConfig::default();
    let inc = config.tables.iter_mut().find(|t| t.name == "incident").unwrap();
    inc.mandatory.push("caller_id".into());
    let sim = start_with(config).await;
    let resp = create(&sim, "incident", "relay", incident("x")).await;
    assert_eq!(resp.status().as_u16(), 403);
    let resp = create_by_display(
        &sim,
        "incident",
        "relay",
        json!({"short_description": "x", "caller_id": "Alex Kim"}),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 201);
    sim.shutdown().await;
}

#[tokio::test]
async fn long_values_are_truncated() {
    let sim = start().await;
    let long = "x".repeat(300);
    let r = create_ok(
        &sim,
        "incident",
        "relay",
        json!({"short_description": long, "correlation_id": long}),
    )
    .await;
    assert_eq!(r["short_description"].as_str().unwrap().len(), 160);
    assert_eq!(r["correlation_id"].as_str().unwrap().len(), 100);
    sim.shutdown().await;
}

#[tokio::test]
async fn payload_limit() {
    let mut config = SimConfig::default();
    config.max_content_length = 1000;
    let sim = start_with(config).await;
    let resp = create(
        &sim,
        "incident",
        "relay",
        json!({"short_description": "x", "description": "y".repeat(2000)}),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 413);
    assert!(sim.records("incident").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn yaml_config_overrides_defaults() {
    let cfg = SimConfig::from_yaml_str(
        "oauth:\n  access_token_lifetime_s: 60\nrate_limits:\n  - name: relay-table\n    user: relay\n    api: table\n    per_hour: 5\n",
    )
    .unwrap();
    assert_eq!(cfg.oauth.access_token_lifetime_s, 60);
    assert_eq!(cfg.users.len(), 4, "users keep their defaults");
    let err = SimConfig::from_yaml_str("nonsense_key: 1\n").unwrap_err().to_string();
    assert!(err.contains("nonsense_key"), "{err}");
    let err = SimConfig::from_yaml_str(
        "import_sets:\n  - staging_table: s\n    target_table: nowhere\n    transform_map: m\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("nowhere"), "{err}");
    let missing = std::path::Path::new("/nonexistent/sim.yaml");
    let err = SimConfig::from_yaml_file(missing).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/sim.yaml"), "{err}");
    let source = std::error::Error::source(&err).expect("the I/O error is the source");
    assert!(source.downcast_ref::<std::io::Error>().is_some(), "{source:?}");
}
