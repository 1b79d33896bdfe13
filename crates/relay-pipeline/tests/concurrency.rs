//! The adaptive concurrency limit against an instance with few REST threads: the instance answers 429 to
//! what its API_INT pool cannot take, the limit halves and holds what reaches the instance, and every alert
//! still becomes exactly one record. The same storm with a fixed limit above the instance's shows what the
//! mechanism saves.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use relay_pipeline::Deliverer;
use relay_pipeline::concurrency::ConcurrencyMode;
use relay_ports::{AlertQueue, DeliveryState};
use servicenow_sim::SimConfig;
use servicenow_sim::config::{Latency, LatencyConfig, TransactionLimit};

const ALERTS: usize = 120;
const TABLE: &str = "sn_compliance_policy_exception";

/// An instance with 4 REST threads and no queue: a fifth concurrent call is answered 429 at once.
fn four_threads() -> SimConfig {
    SimConfig {
        transactions: Some(TransactionLimit {
            max_concurrent: 4,
            queue_depth: 0,
        }),
        latency: LatencyConfig {
            seed: 16,
            table_read: Some(Latency {
                median_ms: 40.0,
                p99_ms: 120.0,
            }),
            table_write: Some(Latency {
                median_ms: 80.0,
                p99_ms: 240.0,
            }),
            ..LatencyConfig::default()
        },
        ..SimConfig::default()
    }
}

/// `ALERTS` high alerts delivered by four deliverers of one process (each handling up to ten messages at
/// once, so up to 40 attempts want a call at the same time). Returns the 429s the instance answered and the
/// limit at the end.
async fn storm(concurrency: ConcurrencyMode) -> (usize, usize) {
    let h = harness_with(
        Options {
            concurrency: Some(concurrency),
            max_receives: Some(1_000),
            window: Duration::from_secs(600),
            ..Options::default()
        },
        four_threads(),
    )
    .await;
    for i in 0..ALERTS {
        let body = alert_body(&format!("s-{i}"), "policy_violation", "high", &format!("E{i}"));
        assert_eq!(h.post(&body, &format!("wh-{i}")).await.status, 202);
    }
    let delivery = h.flusher.delivery.clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (deliverer, realtime) = (Arc::new(Deliverer::new(delivery.clone())), h.realtime.clone());
            tokio::spawn(async move {
                while realtime.depth().await.unwrap() > 0 && Instant::now() < deadline {
                    deliverer.poll_once(10, Duration::from_millis(20)).await.unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    for i in 0..ALERTS {
        let e = h.state(&format!("s-{i}")).await;
        assert_eq!(e.state, DeliveryState::Completed, "s-{i}: {e:?}");
    }
    let records = h.sim.records(TABLE);
    let keys: HashSet<String> = records
        .iter()
        .map(|r| r["description"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(records.len(), ALERTS, "one record per alert");
    assert_eq!(keys.len(), ALERTS, "none twice");
    let throttled = h.sim.requests().iter().filter(|r| r.status == 429).count();
    (throttled, delivery.concurrency().limit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adaptive_limit_learns_the_instances_threads_where_a_fixed_one_keeps_being_refused() {
    // started far above what the instance takes, as after a quiet period on a bigger instance
    let (adaptive_429s, limit) = storm(ConcurrencyMode::Adaptive { initial: 16, max: 16 }).await;
    let (fixed_429s, _) = storm(ConcurrencyMode::Fixed(16)).await;
    assert!(adaptive_429s > 0, "the instance refused the first wave");
    assert!(
        limit <= 6,
        "the limit came down to about the instance's 4 threads (now {limit})"
    );
    assert!(
        adaptive_429s * 3 <= fixed_429s,
        "the adaptive limit was refused {adaptive_429s} times, the fixed one {fixed_429s}: halving on a 429 \
         must spare the instance most of them"
    );
}
