#![allow(clippy::field_reassign_with_default)]

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use servicenow_sim::SimConfig;
use servicenow_sim::config::{ApiKind, RateLimitRule};

async fn token(sim: &servicenow_sim::RunningSim, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = client()
        .post(format!("{}/oauth_token.do", sim.base_url()))
        .form(form)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn bearer_create(sim: &servicenow_sim::RunningSim, token: &str) -> reqwest::Response {
    client()
        .post(format!("{}/api/now/table/incident", sim.base_url()))
        .bearer_auth(token)
        .header("Accept", "application/json")
        .header("Content-Type", "application/json")
        .body(incident("oauth").to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn oauth_grants_refresh_and_expiry() {
    let mut config = SimConfig::default();
    config.oauth.client_credentials_enabled = true;
    let sim = start_with(config).await;
    let client_id = ("client_id", "relay-client");
    let secret = ("client_secret", "relay-client-secret");
    let (s, t) = token(
        &sim,
        &[
            ("grant_type", "password"),
            client_id,
            secret,
            ("username", "relay"),
            ("password", "relay-password"),
        ],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 1799);
    let access = t["access_token"].as_str().unwrap().to_string();
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(bearer_create(&sim, &access).await.status().as_u16(), 201);

    // expiry → 401 envelope
    sim.advance_clock(Duration::from_secs(1800));
    let expired = bearer_create(&sim, &access).await;
    assert_eq!(expired.status().as_u16(), 401);
    let body: Value = expired.json().await.unwrap();
    assert_eq!(body["error"]["message"], "User Not Authenticated");

    // refresh_token grant
    let (s, t2) = token(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            client_id,
            secret,
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        bearer_create(&sim, t2["access_token"].as_str().unwrap())
            .await
            .status()
            .as_u16(),
        201
    );

    // client_credentials acts as relay
    let (s, t3) = token(&sim, &[("grant_type", "client_credentials"), client_id, secret]).await;
    assert_eq!(s, 200);
    assert!(t3.get("refresh_token").is_none());
    assert_eq!(
        bearer_create(&sim, t3["access_token"].as_str().unwrap())
            .await
            .status()
            .as_u16(),
        201
    );
    assert!(sim.records("incident").iter().all(|r| r["sys_created_by"] == "relay"));

    // failures: wrong secret, wrong password, JSON body, unknown grant, bad refresh token
    let denied = json!({"error_description": "access_denied", "error": "server_error"});
    let (s, b) = token(
        &sim,
        &[("grant_type", "client_credentials"), client_id, ("client_secret", "x")],
    )
    .await;
    assert_eq!((s, b), (401, denied.clone()));
    let (s, _) = token(
        &sim,
        &[
            ("grant_type", "password"),
            client_id,
            secret,
            ("username", "relay"),
            ("password", "x"),
        ],
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = token(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            client_id,
            secret,
            ("refresh_token", "nope"),
        ],
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = token(&sim, &[("grant_type", "implicit"), client_id, secret]).await;
    assert_eq!(s, 401);
    let json_body = client()
        .post(format!("{}/oauth_token.do", sim.base_url()))
        .json(&json!({"grant_type": "client_credentials", "client_id": "relay-client", "client_secret": "relay-client-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_body.status().as_u16(),
        401,
        "JSON bodies fail, form-urlencoded only"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn client_credentials_needs_the_system_property_and_hardening_disables_the_password_grant() {
    let cc = [
        ("grant_type", "client_credentials"),
        ("client_id", "relay-client"),
        ("client_secret", "relay-client-secret"),
    ];
    let pw = [
        ("grant_type", "password"),
        ("client_id", "relay-client"),
        ("client_secret", "relay-client-secret"),
        ("username", "relay"),
        ("password", "relay-password"),
    ];
    let denied = json!({"error_description": "access_denied", "error": "server_error"});
    // default instance: glide.oauth.inbound.client.credential.grant_type.enabled is false
    let sim = start().await;
    assert_eq!(token(&sim, &cc).await, (401, denied.clone()));
    assert_eq!(token(&sim, &pw).await.0, 200, "the password grant works by default");
    sim.shutdown().await;

    // glide.oauth.inbound.ropc.grant_type.disabled = true
    let mut config = SimConfig::default();
    config.oauth.password_grant_disabled = true;
    config.oauth.client_credentials_enabled = true;
    let sim = start_with(config).await;
    assert_eq!(token(&sim, &pw).await, (401, denied));
    let (s, t) = token(&sim, &cc).await;
    assert_eq!(s, 200);
    assert_eq!(
        bearer_create(&sim, t["access_token"].as_str().unwrap())
            .await
            .status()
            .as_u16(),
        201
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn oauth_lifetime_is_configurable() {
    let mut config = SimConfig::default();
    config.oauth.access_token_lifetime_s = 60;
    config.oauth.client_credentials_enabled = true;
    let sim = start_with(config).await;
    let (_, t) = token(
        &sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "relay-client"),
            ("client_secret", "relay-client-secret"),
        ],
    )
    .await;
    assert_eq!(t["expires_in"], 59);
    sim.advance_clock(Duration::from_secs(61));
    assert_eq!(
        bearer_create(&sim, t["access_token"].as_str().unwrap())
            .await
            .status()
            .as_u16(),
        401
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_per_user_per_hour() {
    let mut config = SimConfig::default();
    // exact counts here; the 30 s commit is tested in platform_rules.rs
    config.rate_limit_commit_interval_s = 0;
    config.rate_limits.push(RateLimitRule {
        name: "relay table api".into(),
        sys_id: Some("0f1e2d3c4b5a69788796a5b4c3d2e1f0".into()),
        table: None,
        user: Some("relay".into()),
        role: None,
        api: ApiKind::Table,
        per_hour: 3,
    });
    let sim = start_with(config).await;
    for _ in 0..3 {
        create_ok(&sim, "incident", "relay", incident("r")).await;
    }
    let limited = create(&sim, "incident", "relay", incident("r")).await;
    assert_eq!(limited.status().as_u16(), 429);
    let h = limited.headers().clone();
    assert_eq!(h["x-ratelimit-limit"], "3");
    assert_eq!(
        h["x-ratelimit-rule"], "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "the rule's sys_id"
    );
    let reset: i64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert_eq!(reset % 3600, 0, "resets at the next hour");
    let retry: i64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Rate limit exceeded");
    assert_eq!(
        error_detail(&body),
        "Rate limit of 3 requests per hour for Table API exceeded"
    );
    assert_eq!(sim.records("incident").len(), 3, "the limited request was not executed");
    // other users are not limited; the next hour is a new window
    create_ok(&sim, "incident", "admin", incident("a")).await;
    sim.advance_clock(Duration::from_secs(3600));
    create_ok(&sim, "incident", "relay", incident("r")).await;
    sim.shutdown().await;
}

async fn query(sim: &servicenow_sim::RunningSim, q: &str) -> (Vec<String>, String) {
    let resp = client()
        .get(format!("{}/api/now/table/incident", sim.base_url()))
        .query(&[("sysparm_query", q), ("sysparm_fields", "correlation_id")])
        .basic_auth("admin", Some("admin-password"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let total = resp.headers()["x-total-count"].to_str().unwrap().to_string();
    let v: Value = resp.json().await.unwrap();
    let ids = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["correlation_id"].as_str().unwrap().to_string())
        .collect();
    (ids, total)
}

#[tokio::test]
async fn encoded_queries() {
    let sim = start().await;
    for (cid, urgency, desc) in [
        ("alert-1", "1", "disk full"),
        ("alert-2", "2", "Data exfiltration"),
        ("alert-3", "3", ""),
        ("other-4", "1", "dlp"),
    ] {
        create_ok(
            &sim,
            "incident",
            "relay",
            json!({"short_description": "s", "correlation_id": cid, "urgency": urgency, "description": desc}),
        )
        .await;
    }
    assert_eq!(query(&sim, "correlation_id=alert-2").await.0, ["alert-2"]);
    assert_eq!(query(&sim, "correlation_id!=alert-2").await.0.len(), 3);
    assert_eq!(
        query(&sim, "correlation_id=alert-1^ORcorrelation_id=alert-3").await.0,
        ["alert-1", "alert-3"]
    );
    assert_eq!(
        query(&sim, "urgency=1^correlation_idSTARTSWITHalert").await.0,
        ["alert-1"]
    );
    assert_eq!(
        query(&sim, "correlation_id=alert-1^NQurgency=3").await.0,
        ["alert-1", "alert-3"]
    );
    assert_eq!(
        query(&sim, "correlation_idSTARTSWITHalert^ORDERBYDESCcorrelation_id")
            .await
            .0,
        ["alert-3", "alert-2", "alert-1"]
    );
    assert_eq!(
        query(&sim, "ORDERBYurgency^ORDERBYDESCcorrelation_id").await.0,
        ["other-4", "alert-1", "alert-2", "alert-3"]
    );
    assert_eq!(query(&sim, "descriptionISEMPTY").await.0, ["alert-3"]);
    assert_eq!(query(&sim, "descriptionISNOTEMPTY").await.0.len(), 3);
    assert_eq!(query(&sim, "descriptionLIKEexfil").await.0, ["alert-2"]);
    assert_eq!(
        query(&sim, "correlation_idINalert-1,other-4").await.0,
        ["alert-1", "other-4"]
    );
    assert_eq!(query(&sim, "correlation_id=nothing").await, (vec![], "0".to_string()));

    // injection: a "value" carrying ^OR widens the lookup to every record
    let injected = "nothing^ORcorrelation_idISNOTEMPTY";
    let (rows, total) = query(&sim, &format!("correlation_id={injected}")).await;
    assert_eq!(rows.len(), 4, "injection visible: {rows:?}");
    assert_eq!(total, "4");
    // an invalid part is dropped silently: more rows come back
    assert_eq!(query(&sim, "correlation_id=alert-1^%%bogus").await.0, ["alert-1"]);
    assert_eq!(query(&sim, "%%bogus").await.0.len(), 4);

    // sysparm_limit and X-Total-Count
    let resp = req(&sim, Method::GET, "/api/now/table/incident?sysparm_limit=2", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-total-count"], "4");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["result"].as_array().unwrap().len(), 2);
    sim.shutdown().await;

    let mut config = SimConfig::default();
    config.invalid_query_returns_no_rows = true;
    let sim = start_with(config).await;
    create_ok(
        &sim,
        "incident",
        "relay",
        json!({"short_description": "s", "correlation_id": "a"}),
    )
    .await;
    assert!(query(&sim, "%%bogus").await.0.is_empty());
    sim.shutdown().await;
}
