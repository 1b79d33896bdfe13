#![allow(clippy::field_reassign_with_default)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use servicenow_sim::SimConfig;

fn item(id: &str, body: &Value, auth: Option<(&str, &str)>) -> Value {
    let mut headers = vec![
        json!({"name": "Content-Type", "value": "application/json"}),
        json!({"name": "Accept", "value": "application/json"}),
    ];
    if let Some((u, p)) = auth {
        headers.push(json!({"name": "Authorization", "value": format!("Basic {}", B64.encode(format!("{u}:{p}")))}));
    }
    json!({"id": id, "method": "POST", "url": "/api/now/table/incident?sysparm_fields=sys_id,number",
           "headers": headers, "body": B64.encode(body.to_string()), "exclude_response_headers": true})
}

async fn send_batch(sim: &servicenow_sim::RunningSim, path: &str, items: Vec<Value>) -> (u16, Value) {
    let resp = req(sim, Method::POST, path, "relay")
        .body(json!({"batch_request_id": "b1", "rest_requests": items}).to_string())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

fn item_body(serviced: &Value) -> Value {
    serde_json::from_slice(&B64.decode(serviced["body"].as_str().unwrap()).unwrap()).unwrap()
}

#[tokio::test]
async fn batch_per_item_status_and_auth() {
    let sim = start().await;
    let items = vec![
        item("1", &incident("one"), None),
        item("2", &incident("two"), Some(("readonly", "readonly-password"))),
        item("3", &json!({"description": "no short description"}), None),
        item("4", &incident("four"), Some(("admin", "admin-password"))),
    ];
    let (status, body) = send_batch(&sim, "/api/now/v1/batch", items).await;
    assert_eq!(status, 200);
    assert_eq!(body["batch_request_id"], "b1");
    let serviced = body["serviced_requests"].as_array().unwrap();
    let codes: Vec<u64> = serviced.iter().map(|s| s["status_code"].as_u64().unwrap()).collect();
    assert_eq!(codes, [201, 403, 403, 201]);
    assert_eq!(item_body(&serviced[0])["result"]["number"], "INC0010001");
    assert!(error_detail(&item_body(&serviced[1])).contains("ACL"));
    assert!(error_detail(&item_body(&serviced[2])).contains("Data Policy"));
    assert_eq!(body["unserviced_requests"], json!([]));
    let recs = sim.records("incident");
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["sys_created_by"], "admin", "item 4 ran as its own user");
    assert!(sim.requests().iter().filter(|r| r.via_batch).count() == 4);
    // the version segment is required
    let (status, _) = send_batch(&sim, "/api/now/batch", vec![]).await;
    assert_eq!(status, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn batch_unserviced_when_quota_is_hit() {
    let mut config = SimConfig::default();
    config.batch.max_serviced_items = Some(2);
    let sim = start_with(config).await;
    let items = (1..=4).map(|i| item(&i.to_string(), &incident("q"), None)).collect();
    let (_, body) = send_batch(&sim, "/api/now/v1/batch", items).await;
    assert_eq!(body["serviced_requests"].as_array().unwrap().len(), 2);
    assert_eq!(body["unserviced_requests"], json!(["3", "4"]));
    assert_eq!(sim.records("incident").len(), 2, "unserviced items were not executed");
    sim.shutdown().await;

    let mut config = SimConfig::default();
    config.batch.time_quota_ms = 30_000;
    config.batch.item_execution_ms = 12_000;
    let sim = start_with(config).await;
    let items = (1..=5).map(|i| item(&i.to_string(), &incident("q"), None)).collect();
    let (_, body) = send_batch(&sim, "/api/now/v1/batch", items).await;
    assert_eq!(
        body["unserviced_requests"],
        json!(["4", "5"]),
        "3 × 12 s reach the 30 s quota"
    );
    assert_eq!(sim.records("incident").len(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn import_set_coalesce_inserts_then_updates() {
    let sim = start().await;
    let post = |body: Value| {
        req(&sim, Method::POST, "/api/now/import/u_incident_import", "relay")
            .body(body.to_string())
            .send()
    };
    let first: Value =
        post(json!({"u_short_description": "first", "u_correlation_id": "alert-9", "u_urgency": "1", "u_impact": "1"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(first["staging_table"], "u_incident_import");
    assert!(first["import_set"].as_str().unwrap().starts_with("ISET"));
    let r = &first["result"][0];
    assert_eq!(r["status"], "inserted");
    assert_eq!(r["table"], "incident");
    assert_eq!(r["display_value"], "INC0010001");
    let resp = post(json!({"u_short_description": "second", "u_correlation_id": "alert-9"}))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let second: Value = resp.json().await.unwrap();
    assert_eq!(second["result"][0]["status"], "updated");
    assert_eq!(second["result"][0]["sys_id"], r["sys_id"]);
    let other: Value = post(json!({"u_short_description": "x", "u_correlation_id": "alert-10"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(other["result"][0]["status"], "inserted");
    let recs = sim.records("incident");
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["short_description"], "second");
    assert_eq!(recs[0]["priority"], "1");
    assert_eq!(sim.records("u_incident_import").len(), 3, "staging rows are kept");
    // row error: 201 with status error
    let resp = post(json!({"u_correlation_id": "alert-11"})).await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["result"][0]["status"], "error");
    assert!(
        err["result"][0]["error_message"]
            .as_str()
            .unwrap()
            .contains("short_description")
    );
    // unknown staging table, readonly user
    let bad = req(&sim, Method::POST, "/api/now/import/u_nothing", "relay")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let ro = req(&sim, Method::POST, "/api/now/import/u_incident_import", "readonly")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(ro.status().as_u16(), 403);
    sim.shutdown().await;
}

#[tokio::test]
async fn event_management_deduplicates_by_message_key() {
    let sim = start().await;
    let event = |key: &str, severity: &str| {
        json!({"source": "monitor", "node": "host-1", "type": "dlp", "resource": "usb", "metric_name": "files",
               "severity": severity, "message_key": key, "description": "d", "additional_info": "{\"a\":1}",
               "time_of_event": "2024-01-01 10:00:00"})
    };
    let send = |records: Vec<Value>, user: &'static str| {
        req(&sim, Method::POST, "/api/global/em/jsonv2", user)
            .body(json!({"records": records}).to_string())
            .send()
    };
    let resp = send(vec![event("k1", "2"), event("k1", "1")], "relay").await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["result"]["Default Bulk Endpoint"], "2 events were inserted");
    // a top-level field em_event lacks is dropped; additional_info carries extra data
    let mut extra = event("k2", "3");
    extra["assignment_group"] = json!("IT Operations");
    send(vec![extra], "relay").await.unwrap();
    let events = sim.records("em_event");
    assert_eq!(events.len(), 3);
    assert!(events[2].get("assignment_group").is_none(), "{:?}", events[2]);
    assert_eq!(events[2]["additional_info"], "{\"a\":1}");
    let alerts = sim.records("em_alert");
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0]["message_key"], "k1");
    assert_eq!(alerts[0]["event_count"], "2");
    assert_eq!(alerts[0]["severity"], "1");
    assert_eq!(alerts[0]["number"], "Alert0010001");
    // severity 0 clears
    send(vec![event("k1", "0")], "relay").await.unwrap();
    assert_eq!(sim.records("em_alert")[0]["state"], "Closed");
    let denied = send(vec![event("k3", "1")], "readonly").await.unwrap();
    assert_eq!(denied.status().as_u16(), 403);
    let bad = req(&sim, Method::POST, "/api/global/em/jsonv2", "relay")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn attachments() {
    let sim = start().await;
    let inc = create_ok(&sim, "incident", "relay", incident("with file")).await;
    let id = inc["sys_id"].as_str().unwrap();
    let attach = |table: &'static str, table_sys_id: String, user: &'static str| {
        client()
            .post(format!("{}/api/now/attachment/file", sim.base_url()))
            .query(&[
                ("table_name", table),
                ("table_sys_id", table_sys_id.as_str()),
                ("file_name", "trend.png"),
            ])
            .basic_auth(user, Some(password(user)))
            .header("Accept", "application/json")
            .header("Content-Type", "image/png")
            .body(vec![0x89u8, b'P', b'N', b'G', 1, 2, 3])
            .send()
    };
    let upload = |table_sys_id: String, user: &'static str| attach("incident", table_sys_id, user);
    let resp = upload(id.to_string(), "relay").await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let body: Value = resp.json().await.unwrap();
    let r = &body["result"];
    assert_eq!(r["size_bytes"], "7");
    assert_eq!(r["content_type"], "image/png");
    assert_eq!(r["table_sys_id"], id);
    let link = r["download_link"].as_str().unwrap();
    let bytes = client()
        .get(link)
        .basic_auth("relay", Some("relay-password"))
        .header("Accept", "*/*")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], &[0x89u8, b'P', b'N', b'G', 1, 2, 3]);
    assert_eq!(sim.records("sys_attachment").len(), 1);

    let missing = upload("0".repeat(32), "relay").await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    // a record the user cannot see counts as missing: a SIR that sn_si.integration_user did not create
    let other = create_ok(&sim, "sn_si_incident", "admin", incident("admin's")).await;
    let hidden = attach("sn_si_incident", other["sys_id"].as_str().unwrap().to_string(), "relay")
        .await
        .unwrap();
    assert_eq!(hidden.status().as_u16(), 404);
    assert_eq!(sim.records("sys_attachment").len(), 1);

    // the metadata of many: a query on sys_attachment, read through each attachment's record
    let admin_file = attach("sn_si_incident", other["sys_id"].as_str().unwrap().to_string(), "admin")
        .await
        .unwrap();
    assert_eq!(admin_file.status().as_u16(), 201);
    let list = |query: String, user: &'static str| {
        let url = format!("{}/api/now/attachment", sim.base_url());
        async move {
            let resp = client()
                .get(url)
                .query(&[("sysparm_query", query.as_str())])
                .basic_auth(user, Some(password(user)))
                .header("Accept", "application/json")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            let body: Value = resp.json().await.unwrap();
            body["result"].as_array().unwrap().clone()
        }
    };
    let mine = list(
        format!("table_name=incident^table_sys_id={id}^file_name=trend.png"),
        "relay",
    )
    .await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["table_sys_id"], id);
    assert_eq!(mine[0]["file_name"], "trend.png");
    assert_eq!(
        list(format!("table_sys_id={id}^file_name=other.png"), "relay")
            .await
            .len(),
        0
    );
    // the SIR's file is there for the admin, but not for a user who cannot read the SIR
    let sir = other["sys_id"].as_str().unwrap();
    assert_eq!(list(format!("table_sys_id={sir}"), "admin").await.len(), 1);
    assert_eq!(list(format!("table_sys_id={sir}"), "relay").await.len(), 0);
    assert_eq!(list(String::new(), "relay").await.len(), 1, "only what relay may read");
    sim.shutdown().await;
}

#[tokio::test]
async fn hibernation_answers_html_everywhere() {
    let sim = start().await;
    sim.set_hibernating(true);
    let resp = create(&sim, "incident", "relay", incident("h")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(resp.text().await.unwrap().contains("hibernating"));
    let oauth = client()
        .post(format!("{}/oauth_token.do", sim.base_url()))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(oauth.status().as_u16(), 200);
    assert!(oauth.text().await.unwrap().contains("hibernating"));
    assert!(sim.records("incident").is_empty());
    // woken through the control API
    let wake = client()
        .post(format!("{}/sim/hibernate", sim.base_url()))
        .json(&json!({"on": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(wake.status().as_u16(), 204);
    create_ok(&sim, "incident", "relay", incident("awake")).await;
    sim.shutdown().await;
}
