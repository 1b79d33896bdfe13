#![allow(dead_code)]

use reqwest::{Client, RequestBuilder, Response};
use serde_json::{Value, json};
use servicenow_sim::{RunningSim, SimConfig, Simulator};

pub async fn start() -> RunningSim {
    Simulator::start(SimConfig::default()).await.expect("simulator starts")
}

pub async fn start_with(config: SimConfig) -> RunningSim {
    Simulator::start(config).await.expect("simulator starts")
}

pub fn client() -> Client {
    Client::builder().build().expect("client")
}

pub fn password(user: &str) -> String {
    format!("{user}-password")
}

/// A JSON request as the Table API wants it (Accept + Content-Type), with Basic auth.
pub fn req(sim: &RunningSim, method: reqwest::Method, path: &str, user: &str) -> RequestBuilder {
    client()
        .request(method, format!("{}{path}", sim.base_url()))
        .basic_auth(user, Some(password(user)))
        .header("Accept", "application/json")
        .header("Content-Type", "application/json")
}

pub async fn create(sim: &RunningSim, table: &str, user: &str, body: Value) -> Response {
    req(sim, reqwest::Method::POST, &format!("/api/now/table/{table}"), user)
        .body(body.to_string())
        .send()
        .await
        .expect("request sent")
}

pub async fn create_ok(sim: &RunningSim, table: &str, user: &str, body: Value) -> Value {
    let resp = create(sim, table, user, body).await;
    assert_eq!(resp.status().as_u16(), 201, "create in {table} failed");
    resp.json::<Value>().await.expect("json")["result"].clone()
}

pub async fn get_json(sim: &RunningSim, path: &str, user: &str) -> (u16, Value) {
    let resp = req(sim, reqwest::Method::GET, path, user).send().await.expect("sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub fn incident(desc: &str) -> Value {
    json!({"short_description": desc, "impact": "2", "urgency": "2"})
}

pub fn error_detail(body: &Value) -> String {
    body["error"]["detail"].as_str().unwrap_or("").to_string()
}

/// Create with `sysparm_input_display_value=true` (reference fields by display value).
pub async fn create_by_display(sim: &RunningSim, table: &str, user: &str, body: Value) -> Response {
    req(
        sim,
        reqwest::Method::POST,
        &format!("/api/now/table/{table}?sysparm_input_display_value=true"),
        user,
    )
    .body(body.to_string())
    .send()
    .await
    .expect("request sent")
}

/// sys_id of the record of `table` whose `field` is `value` (reference data).
pub fn sys_id_of(sim: &RunningSim, table: &str, field: &str, value: &str) -> String {
    sim.records(table)
        .iter()
        .find(|r| r[field] == value)
        .unwrap_or_else(|| panic!("{table} has no record with {field}={value}"))["sys_id"]
        .as_str()
        .unwrap()
        .to_string()
}
