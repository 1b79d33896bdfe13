//! Platform rules the simulator models beyond the dictionary (issue 12): the HR case's assignment-group
//! qualifier, rate-limit counts committed every 30 s, the policy exception's validity dates and the
//! employee document's file with the job that purges documents without one.
#![allow(clippy::field_reassign_with_default)]

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use servicenow_sim::SimConfig;
use servicenow_sim::config::{ApiKind, FormRulePolicy, QualifierPolicy, RateLimitRule, UserConfig};

async fn status_and_body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Create by display value and answer the stored record.
async fn created(sim: &servicenow_sim::RunningSim, table: &str, body: Value) -> Value {
    let (s, body) = status_and_body(create_by_display(sim, table, "relay", body).await).await;
    assert_eq!(s, 201, "{table}: {body}");
    body["result"].clone()
}

fn hr_case(group: &str) -> Value {
    json!({"hr_service": "Productivity Review", "opened_for": "Alex Kim", "assignment_group": group})
}

#[tokio::test]
async fn an_hr_case_keeps_only_a_human_resources_assignment_group() {
    let sim = start().await;
    let groups = sim.records("sys_user_group");
    let type_of = |name: &str| {
        groups
            .iter()
            .find(|g| g["name"] == name)
            .and_then(|g| g.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    for hr in [
        "HR Partners",
        "HR Partners - Engineering",
        "HR Partners - Finance",
        "HR Partners - Sales",
    ] {
        assert_eq!(type_of(hr), "human_resources", "{hr}");
    }
    assert_eq!(
        groups.len(),
        11,
        "the typed rows describe the configured groups, they add none"
    );
    let (s, kept) =
        status_and_body(create_by_display(&sim, "sn_hr_core_case", "relay", hr_case("HR Partners")).await).await;
    assert_eq!(s, 201);
    assert_eq!(
        kept["result"]["assignment_group"]["value"],
        sys_id_of(&sim, "sys_user_group", "name", "HR Partners")
    );
    // a non-HR group: left empty (the default), the case is still written
    let (s, blank) =
        status_and_body(create_by_display(&sim, "sn_hr_core_case", "relay", hr_case("Service Desk")).await).await;
    assert_eq!(s, 201);
    assert_eq!(blank["result"]["assignment_group"], "", "{blank}");
    // the qualifier binds the HR case only
    let body = json!({"short_description": "x", "assignment_group": "Service Desk"});
    let (s, inc) = status_and_body(create_by_display(&sim, "incident", "relay", body).await).await;
    assert_eq!(s, 201);
    assert_eq!(
        inc["result"]["assignment_group"]["value"],
        sys_id_of(&sim, "sys_user_group", "name", "Service Desk")
    );
    sim.shutdown().await;

    for (policy, status) in [(QualifierPolicy::Reject, 400), (QualifierPolicy::Ignore, 201)] {
        let mut config = SimConfig::default();
        config.qualified_reference = policy;
        let sim = start_with(config).await;
        let (s, body) =
            status_and_body(create_by_display(&sim, "sn_hr_core_case", "relay", hr_case("Service Desk")).await).await;
        assert_eq!(s, status, "{policy:?}: {body}");
        if status == 400 {
            assert!(error_detail(&body).contains("reference qualifier"), "{body}");
            assert!(sim.records("sn_hr_core_case").is_empty());
        } else {
            let sd = sys_id_of(&sim, "sys_user_group", "name", "Service Desk");
            assert_eq!(sim.records("sn_hr_core_case")[0]["assignment_group"], sd.as_str());
        }
        sim.shutdown().await;
    }
}

fn relay_rule(per_hour: u32) -> RateLimitRule {
    RateLimitRule {
        name: "relay table".into(),
        sys_id: Some("0f1e2d3c4b5a69788796a5b4c3d2e1f0".into()),
        table: None,
        user: Some("relay".into()),
        role: None,
        api: ApiKind::Table,
        per_hour,
    }
}

#[tokio::test]
async fn rate_limit_counts_commit_every_30_seconds_so_a_burst_overshoots_and_is_refused_late() {
    let mut config = SimConfig::default();
    assert_eq!(
        config.rate_limit_commit_interval_s, 30,
        "the documented commit interval"
    );
    config.rate_limits = vec![relay_rule(2)];
    let sim = start_with(config).await;
    // step to the start of a commit period, so the burst below stays inside one
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    sim.advance_clock(Duration::from_secs((30 - now.rem_euclid(30)) as u64));
    for i in 0..5 {
        let resp = create(&sim, "incident", "relay", incident(&format!("burst {i}"))).await;
        assert_eq!(
            resp.status().as_u16(),
            201,
            "request {i}: the count is not committed yet"
        );
        assert_eq!(resp.headers()["x-ratelimit-limit"], "2");
    }
    assert_eq!(sim.records("incident").len(), 5, "the burst overshot the limit of 2");
    sim.advance_clock(Duration::from_secs(30));
    let late = create(&sim, "incident", "relay", incident("late")).await;
    assert_eq!(late.status().as_u16(), 429, "refused once the count is committed");
    assert!(late.headers().contains_key("retry-after"));
    assert_eq!(sim.records("incident").len(), 5);
    sim.shutdown().await;

    // 0: counts are exact
    let mut config = SimConfig::default();
    config.rate_limit_commit_interval_s = 0;
    config.rate_limits = vec![relay_rule(2)];
    let sim = start_with(config).await;
    for _ in 0..2 {
        create_ok(&sim, "incident", "relay", incident("exact")).await;
    }
    assert_eq!(
        create(&sim, "incident", "relay", incident("exact"))
            .await
            .status()
            .as_u16(),
        429
    );
    sim.shutdown().await;
}

fn exception(valid_from: &str, valid_to: &str) -> Value {
    json!({"policy": "Acceptable Use Policy", "short_description": "USB", "valid_from": valid_from,
           "valid_to": valid_to})
}

fn day(offset: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::days(offset))
        .date()
        .to_string()
}

#[tokio::test]
async fn a_policy_exception_valid_to_must_follow_valid_from_and_not_be_past() {
    let sim = start().await;
    let table = "sn_compliance_policy_exception";
    for (from, to, why) in [
        (day(-40), day(-10), "in the past"),
        (day(5), day(3), "before valid_from"),
        (day(5), day(5), "equal to valid_from"),
    ] {
        let (s, body) = status_and_body(create_by_display(&sim, table, "relay", exception(&from, &to)).await).await;
        assert_eq!(s, 403, "{why}: {body}");
        assert_eq!(body["error"]["message"], "Operation Failed");
        assert!(
            error_detail(&body).starts_with("Valid to must be after Valid from and cannot be a past date"),
            "{why}: {body}"
        );
    }
    assert!(sim.records(table).is_empty());
    // today counts as not past; a past valid_from is allowed
    let ok = created(&sim, table, exception(&day(-3), &day(0))).await;
    let id = ok["sys_id"].as_str().unwrap().to_string();
    created(&sim, table, exception(&day(-3), &format!("{} 12:00:00", day(30)))).await;
    // updates are checked too
    let resp = req(&sim, Method::PATCH, &format!("/api/now/table/{table}/{id}"), "relay")
        .body(json!({"valid_to": day(-1)}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    sim.shutdown().await;

    let mut config = SimConfig::default();
    config.date_rules_on_api = FormRulePolicy::Ignore;
    let sim = start_with(config).await;
    created(&sim, table, exception(&day(-40), &day(-10))).await;
    sim.shutdown().await;
}

async fn attach(sim: &servicenow_sim::RunningSim, user: &str, table: &str, sys_id: &str) -> u16 {
    client()
        .post(format!(
            "{}/api/now/attachment/file?table_name={table}&table_sys_id={sys_id}&file_name=review.txt",
            sim.base_url()
        ))
        .basic_auth(user, Some(password(user)))
        .header("Accept", "application/json")
        .header("Content-Type", "text/plain")
        .body("the document")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn document() -> Value {
    json!({"employee": "Dana Reyes", "document_type": "Performance Documentation"})
}

#[tokio::test]
async fn an_employee_document_without_its_file_is_purged_by_the_daily_cleanup_job() {
    let mut config = SimConfig::default();
    config.users.push(UserConfig {
        name: "other-writer".into(),
        password: password("other-writer"),
        roles: vec!["sn_hr_ef.document_writer".into()],
    });
    let sim = start_with(config).await;
    let table = "sn_hr_ef_employee_document";
    let with_file = created(&sim, table, document()).await["sys_id"]
        .as_str()
        .unwrap()
        .to_string();
    let without = created(&sim, table, document()).await["sys_id"]
        .as_str()
        .unwrap()
        .to_string();
    // the writer reads and updates its own documents (the document type's security policy grants it)
    assert_eq!(
        get_json(&sim, &format!("/api/now/table/{table}/{with_file}"), "relay")
            .await
            .0,
        200
    );
    assert_eq!(
        get_json(&sim, &format!("/api/now/table/{table}/{with_file}"), "other-writer")
            .await
            .0,
        404
    );
    assert_eq!(
        attach(&sim, "other-writer", table, &with_file).await,
        404,
        "another writer cannot see it"
    );
    assert_eq!(attach(&sim, "relay", table, &with_file).await, 201);
    assert_eq!(sim.records(table).len(), 2, "the job has not run yet");
    sim.advance_clock(Duration::from_secs(86_400));
    let left: Vec<String> = sim
        .records(table)
        .iter()
        .map(|r| r["sys_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, vec![with_file.clone()], "the document without a file is gone");
    assert_eq!(
        get_json(&sim, &format!("/api/now/table/{table}/{without}"), "admin")
            .await
            .0,
        404
    );
    // a document created after the run lives until the next one
    let late = created(&sim, table, document()).await["sys_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sim.records(table).len(), 2, "{late}");
    sim.advance_clock(Duration::from_secs(86_400));
    assert_eq!(sim.records(table).len(), 1);
    sim.shutdown().await;

    // no job configured: documents stay
    let mut config = SimConfig::default();
    for t in config.tables.iter_mut().filter(|t| t.name == table) {
        t.purge_without_attachment = None;
    }
    let sim = start_with(config).await;
    created(&sim, table, document()).await;
    sim.advance_clock(Duration::from_secs(3 * 86_400));
    assert_eq!(sim.records(table).len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_attachment_needs_write_access_to_its_record() {
    let sim = start().await;
    // readonly may read incidents but not write them
    let inc = create_ok(&sim, "incident", "admin", incident("x")).await;
    let id = inc["sys_id"].as_str().unwrap();
    assert_eq!(
        get_json(&sim, &format!("/api/now/table/incident/{id}"), "readonly")
            .await
            .0,
        200
    );
    assert_eq!(attach(&sim, "readonly", "incident", id).await, 403);
    assert_eq!(attach(&sim, "relay", "incident", id).await, 201);
    sim.shutdown().await;
}
