//! A realistic instance: latency per API, the API_INT transaction limit (429 over it), batches holding one
//! thread while their items run one after another, and the `realistic` profile. Timing bounds are loose
//! (behaviour, not a benchmark).

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use servicenow_sim::config::{Latency, TransactionLimit};
use servicenow_sim::{RunningSim, SimConfig, SimProfile, Simulator};

/// Every Table API write takes exactly `ms` (median = p99).
fn fixed_writes(ms: f64) -> SimConfig {
    let mut config = SimConfig::default();
    config.latency.table_write = Some(Latency {
        median_ms: ms,
        p99_ms: ms,
    });
    config
}

fn limited(mut config: SimConfig, max_concurrent: usize, queue_depth: usize) -> SimConfig {
    config.transactions = Some(TransactionLimit {
        max_concurrent,
        queue_depth,
    });
    config
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

/// Send `n` creates at once, each on its own connection.
async fn creates_at_once(sim: &RunningSim, n: usize) -> Vec<Answer> {
    join_all((0..n).map(|i| async move {
        let resp = create(sim, "incident", "relay", incident(&format!("at once {i}"))).await;
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        Answer {
            status,
            headers,
            body: resp.text().await.unwrap(),
        }
    }))
    .await
}

fn count(answers: &[Answer], status: u16) -> usize {
    answers.iter().filter(|a| a.status == status).count()
}

#[tokio::test]
async fn table_writes_take_the_configured_median() {
    let mut config = SimConfig::default();
    config.latency.seed = 11;
    config.latency.table_write = Some(Latency {
        median_ms: 150.0,
        p99_ms: 600.0,
    });
    let sim = start_with(config).await;
    let mut took = Vec::new();
    for i in 0..21 {
        let started = Instant::now();
        create_ok(&sim, "incident", "relay", incident(&format!("timed {i}"))).await;
        took.push(started.elapsed());
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        (Duration::from_millis(75)..Duration::from_millis(300)).contains(&median),
        "median {median:?} not within [0.5x, 2x] of 150 ms"
    );
    // reads have no latency set: they answer at once
    let started = Instant::now();
    let (status, _) = get_json(&sim, "/api/now/table/incident?sysparm_limit=1", "relay").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_millis(500), "reads stay instant");
}

#[tokio::test]
async fn over_the_transaction_limit_answers_429_and_at_it_does_not() {
    let sim = start_with(limited(fixed_writes(400.0), 4, 0)).await;
    let at_limit = creates_at_once(&sim, 4).await;
    assert_eq!(count(&at_limit, 201), 4, "four at once fit four threads");

    let over = creates_at_once(&sim, 6).await;
    assert_eq!(count(&over, 201), 4);
    assert_eq!(count(&over, 429), 2, "no queue: two rejected");
    let rejected = over.iter().find(|a| a.status == 429).unwrap();
    assert_eq!(rejected.body, "Too Many Requests");
    assert!(
        rejected.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    for absent in ["retry-after", "x-ratelimit-limit", "x-ratelimit-rule"] {
        assert!(!rejected.headers.contains_key(absent), "{absent} is not sent");
    }
    assert_eq!(sim.records("incident").len(), 8, "a rejected request commits nothing");
    let logged = sim.requests().iter().filter(|r| r.status == 429).count();
    assert_eq!(logged, 2, "rejections are logged");
}

#[tokio::test]
async fn the_queue_holds_requests_until_a_thread_is_free() {
    let sim = start_with(limited(fixed_writes(300.0), 2, 1)).await;
    let started = Instant::now();
    let answers = creates_at_once(&sim, 4).await;
    assert_eq!(count(&answers, 201), 3, "two running, one queued");
    assert_eq!(count(&answers, 429), 1, "the fourth finds the queue full");
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "the queued one ran after a running one"
    );
}

fn batch_item(id: &str) -> Value {
    json!({"id": id, "method": "POST", "url": "/api/now/table/incident",
           "headers": [{"name": "Content-Type", "value": "application/json"},
                       {"name": "Accept", "value": "application/json"}],
           "body": B64.encode(incident(id).to_string()), "exclude_response_headers": true})
}

#[tokio::test]
async fn a_batch_holds_one_thread_while_its_items_run_one_after_another() {
    let sim = start_with(limited(fixed_writes(100.0), 1, 0)).await;
    let items: Vec<Value> = (0..5).map(|i| batch_item(&format!("i{i}"))).collect();
    let batch = async {
        let started = Instant::now();
        let resp = req(&sim, Method::POST, "/api/now/v1/batch", "relay")
            .body(json!({"batch_request_id": "b1", "rest_requests": items}).to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap(), started.elapsed())
    };
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        create(&sim, "incident", "relay", incident("meanwhile"))
            .await
            .status()
            .as_u16()
    };
    let ((status, body, took), other) = tokio::join!(batch, meanwhile);
    assert_eq!(status, 200);
    let serviced = body["serviced_requests"].as_array().unwrap();
    assert_eq!(serviced.len(), 5, "every item ran on the batch's one thread");
    assert!(
        serviced
            .iter()
            .all(|s| s["status_code"] == 201 && s["execution_time"] == 100)
    );
    assert!(
        (Duration::from_millis(450)..Duration::from_millis(1500)).contains(&took),
        "5 items x 100 ms, took {took:?}"
    );
    assert_eq!(other, 429, "the batch held the only thread");
    assert_eq!(create(&sim, "incident", "relay", incident("after")).await.status(), 201);
}

#[tokio::test]
async fn batch_item_latency_counts_against_the_batch_time_quota() {
    let mut config = fixed_writes(100.0);
    config.batch.time_quota_ms = 250;
    let sim = start_with(config).await;
    let items: Vec<Value> = (0..5).map(|i| batch_item(&format!("q{i}"))).collect();
    let resp = req(&sim, Method::POST, "/api/now/v1/batch", "relay")
        .body(json!({"batch_request_id": "b2", "rest_requests": items}).to_string())
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["serviced_requests"].as_array().unwrap().len(),
        3,
        "100 + 100 + 100 ms passes 250"
    );
    assert_eq!(body["unserviced_requests"], json!(["q3", "q4"]));
}

#[tokio::test]
async fn the_realistic_profile_loads_and_serves() {
    let config = SimProfile::Realistic.config();
    config.validate().expect("the realistic profile validates");
    assert_eq!(config.latency.table_write.unwrap().median_ms, 150.0);
    assert_eq!(
        config.transactions,
        Some(TransactionLimit {
            max_concurrent: 16,
            queue_depth: 50
        })
    );
    assert_eq!(config.rate_limits.len(), 1);
    let sim = Simulator::start(config).await.unwrap();
    let resp = create(&sim, "incident", "relay", incident("realistic")).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.headers()["x-ratelimit-limit"],
        "10000",
        "the profile's rate-limit rule covers it"
    );

    let instant = SimProfile::Instant.config();
    assert!(instant.transactions.is_none() && instant.rate_limits.is_empty());
    assert_eq!(instant.latency, Default::default(), "instant: no latency");
}

#[test]
fn latency_and_limits_come_from_yaml_and_bad_values_are_named() {
    let cfg = SimConfig::from_yaml_str(
        "latency: {seed: 3, table_write: {median_ms: 150, p99_ms: 900}}\ntransactions: {max_concurrent: 16, queue_depth: 50}\n",
    )
    .unwrap();
    assert_eq!(cfg.latency.table_write.unwrap().p99_ms, 900.0);
    assert_eq!(cfg.transactions.unwrap().queue_depth, 50);
    let err = SimConfig::from_yaml_str("latency: {event: {median_ms: 100, p99_ms: 50}}\n").unwrap_err();
    assert!(err.to_string().contains("latency.event"), "{err}");
    let err = SimConfig::from_yaml_str("transactions: {max_concurrent: 0}\n").unwrap_err();
    assert!(err.to_string().contains("max_concurrent"), "{err}");
}
