mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use servicenow_sim::{Fault, FaultKind};

async fn try_create(sim: &servicenow_sim::RunningSim, timeout: Duration) -> Result<reqwest::Response, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap()
        .post(format!("{}/api/now/table/incident", sim.base_url()))
        .basic_auth("relay", Some("relay-password"))
        .header("Accept", "application/json")
        .header("Content-Type", "application/json")
        .body(json!({"short_description": "f", "correlation_id": "alert-f"}).to_string())
        .send()
        .await
}

#[tokio::test]
async fn server_errors_then_success_and_filters() {
    let sim = start().await;
    sim.inject(
        Fault::new(FaultKind::ServerError { status: 503 })
            .times(2)
            .on_table("incident")
            .on_method("POST"),
    );
    sim.inject(Fault::new(FaultKind::ServerError { status: 502 }).on_table("problem"));
    // a GET does not consume the POST fault
    let (s, _) = get_json(&sim, "/api/now/table/incident", "relay").await;
    assert_eq!(s, 200);
    for _ in 0..2 {
        let r = create(&sim, "incident", "relay", incident("x")).await;
        assert_eq!(r.status().as_u16(), 503);
    }
    assert!(sim.records("incident").is_empty());
    create_ok(&sim, "incident", "relay", incident("x")).await;
    let p = create(&sim, "problem", "relay", incident("p")).await;
    assert_eq!(p.status().as_u16(), 502);
    let faulted: Vec<_> = sim.requests().into_iter().filter(|r| r.fault.is_some()).collect();
    assert_eq!(faulted.len(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn cleared_faults_apply_no_more_and_records_stay() {
    let sim = start().await;
    create_ok(&sim, "incident", "relay", incident("kept")).await;
    sim.inject(Fault::new(FaultKind::ServerError { status: 503 }).times(5));
    assert_eq!(
        create(&sim, "incident", "relay", incident("x")).await.status().as_u16(),
        503
    );
    sim.clear_faults();
    create_ok(&sim, "incident", "relay", incident("y")).await;
    assert_eq!(sim.records("incident").len(), 2, "the record created before stays");
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_rate_limit() {
    let sim = start().await;
    sim.inject(Fault::new(FaultKind::RateLimited { retry_after_s: 7 }));
    let r = create(&sim, "incident", "relay", incident("x")).await;
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert!(r.headers().contains_key("x-ratelimit-reset"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Rate limit exceeded");
    assert!(sim.records("incident").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn revoke_tokens_once() {
    let mut config = servicenow_sim::SimConfig::default();
    config.oauth.client_credentials_enabled = true;
    let sim = start_with(config).await;
    let get_token = || async {
        let v: Value = client()
            .post(format!("{}/oauth_token.do", sim.base_url()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "relay-client"),
                ("client_secret", "relay-client-secret"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["access_token"].as_str().unwrap().to_string()
    };
    let send = |token: String| {
        client()
            .post(format!("{}/api/now/table/incident", sim.base_url()))
            .bearer_auth(token)
            .header("Accept", "application/json")
            .header("Content-Type", "application/json")
            .body(incident("t").to_string())
            .send()
    };
    let old = get_token().await;
    sim.inject(Fault::new(FaultKind::RevokeTokens).on_table("incident"));
    assert_eq!(send(old.clone()).await.unwrap().status().as_u16(), 401);
    assert_eq!(
        send(old).await.unwrap().status().as_u16(),
        401,
        "the old token stays revoked"
    );
    let fresh = get_token().await;
    assert_eq!(send(fresh).await.unwrap().status().as_u16(), 201);
    assert_eq!(sim.records("incident").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn latency_delays_the_answer() {
    let sim = start().await;
    sim.inject(Fault::new(FaultKind::Latency { ms: 300 }));
    let started = Instant::now();
    let r = try_create(&sim, Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert!(started.elapsed() >= Duration::from_millis(300));
    sim.shutdown().await;
}

#[tokio::test]
async fn timeout_after_write_commits_but_never_answers() {
    let sim = start().await;
    sim.inject(Fault::new(FaultKind::TimeoutAfterWrite).on_table("incident"));
    let err = try_create(&sim, Duration::from_millis(500)).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let recs = sim.records("incident");
    assert_eq!(recs.len(), 1, "the record was committed");
    assert_eq!(recs[0]["correlation_id"], "alert-f");
    let logged = sim
        .requests()
        .into_iter()
        .find(|r| r.fault.as_deref() == Some("timeout_after_write"))
        .unwrap();
    assert_eq!(logged.status, 0);
    // the simulator keeps serving
    assert_eq!(
        try_create(&sim, Duration::from_secs(5))
            .await
            .unwrap()
            .status()
            .as_u16(),
        201
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn connection_reset_before_and_after_commit() {
    let sim = start().await;
    sim.inject(Fault::new(FaultKind::ConnectionReset { after_commit: false }));
    let err = try_create(&sim, Duration::from_secs(5)).await.unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert!(
        sim.records("incident").is_empty(),
        "reset before commit: nothing stored"
    );
    sim.inject(Fault::new(FaultKind::ConnectionReset { after_commit: true }));
    let err = try_create(&sim, Duration::from_secs(5)).await.unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert_eq!(sim.records("incident").len(), 1, "reset after commit: stored once");
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_and_truncated_bodies_after_commit() {
    let sim = start().await;
    for kind in [FaultKind::MalformedJson, FaultKind::TruncatedJson] {
        sim.inject(Fault::new(kind.clone()));
        let r = try_create(&sim, Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{kind:?}");
        let text = r.text().await.unwrap();
        assert!(
            serde_json::from_str::<Value>(&text).is_err(),
            "{kind:?} body parsed: {text}"
        );
    }
    assert_eq!(sim.records("incident").len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn transaction_cancelled_after_commit() {
    let sim = start().await;
    sim.inject(Fault::new(FaultKind::TransactionCancelled));
    let r = try_create(&sim, Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "Transaction cancelled: maximum execution time exceeded"
    );
    assert_eq!(sim.records("incident").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn control_api_over_http() {
    let sim = start().await;
    let base = sim.base_url();
    let c = client();
    let fault = json!({"kind": {"type": "server_error", "status": 500}, "table": "incident"});
    assert_eq!(
        c.post(format!("{base}/sim/faults"))
            .json(&fault)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    let bad = c
        .post(format!("{base}/sim/faults"))
        .json(&json!({"kind": {"type": "nope"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert_eq!(
        create(&sim, "incident", "relay", incident("x")).await.status().as_u16(),
        500
    );
    create_ok(&sim, "incident", "relay", incident("x")).await;
    let recs: Value = c
        .get(format!("{base}/sim/records/incident"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(recs["result"].as_array().unwrap().len(), 1);
    let log: Value = c
        .get(format!("{base}/sim/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let log = log["result"].as_array().unwrap();
    assert!(log.iter().any(|r| r["status"] == 500 && r["fault"] == "server_error"));
    assert!(log.iter().any(|r| r["status"] == 201 && r["user"] == "relay"));
    assert_eq!(
        c.post(format!("{base}/sim/clock"))
            .json(&json!({"advance_s": 10}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    assert_eq!(
        c.post(format!("{base}/sim/reset"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    assert!(sim.records("incident").is_empty());
    assert!(sim.requests().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_late_commit_commits_after_the_client_gave_up() {
    let sim = start().await;
    sim.inject(
        Fault::new(FaultKind::LateCommit { ms: 600 })
            .on_table("incident")
            .on_method("POST"),
    );
    let started = Instant::now();
    let err = try_create(&sim, Duration::from_millis(150)).await.unwrap_err();
    assert!(err.is_timeout(), "the client gave up: {err}");
    assert!(
        sim.records("incident").is_empty(),
        "nothing committed when the client gave up"
    );
    tokio::time::sleep(Duration::from_millis(700).saturating_sub(started.elapsed())).await;
    let records = sim.records("incident");
    assert_eq!(records.len(), 1, "the insert committed after the client had gone");
    assert_eq!(records[0]["correlation_id"], "alert-f");
    let logged: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.fault.as_deref() == Some("late_commit"))
        .collect();
    assert_eq!(logged.len(), 1, "logged once, when it committed");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_late_commit_answers_a_client_that_waits() {
    let sim = start().await;
    sim.inject(Fault::new(FaultKind::LateCommit { ms: 200 }).on_method("POST"));
    let started = Instant::now();
    let r = try_create(&sim, Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "answered after the delay"
    );
    assert_eq!(sim.records("incident").len(), 1);
    sim.shutdown().await;
}
