//! Client create round-trip against the in-process simulator (loopback HTTP, keep-alive pool).
//!
//! `cargo bench -p servicenow-client --bench client_create`
//! Criterion measures the mean/median per create; a manual sample loop afterwards prints median and p99
//! (criterion does not report percentiles).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use serde_json::json;
use servicenow_client::{ClientConfig, Credentials, Outcome, ServiceNowClient, StaticCredentials};
use servicenow_sim::{SimConfig, Simulator};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = rt.block_on(Simulator::start(SimConfig::default())).unwrap();
    let fields = json!({
        "short_description": "Data exfiltration alert",
        "impact": "1", "urgency": "2",
        "assignment_group": "Security Operations",
        "correlation_id": "bench-1",
    })
    .as_object()
    .unwrap()
    .clone();
    let mut results = Vec::new();
    for (label, creds) in [
        (
            "basic",
            Credentials::Basic {
                username: "relay".into(),
                password: "relay-password".into(),
            },
        ),
        (
            "oauth",
            Credentials::OAuthPassword {
                client_id: "relay-client".into(),
                client_secret: "relay-client-secret".into(),
                username: "relay".into(),
                password: "relay-password".into(),
            },
        ),
    ] {
        let client =
            ServiceNowClient::new(ClientConfig::new(sim.base_url()), Arc::new(StaticCredentials(creds))).unwrap();
        let create = || {
            let outcome = rt.block_on(client.create_record("incident", &fields));
            assert!(matches!(outcome, Outcome::Created(_)), "{outcome:?}");
        };
        let mut criterion = Criterion::default()
            .configure_from_args()
            .sample_size(50)
            .measurement_time(Duration::from_secs(5));
        criterion.bench_function(&format!("client_create_round_trip/{label}"), |b| b.iter(create));
        sim.reset();

        // Manual samples for percentiles.
        for _ in 0..200 {
            create();
        }
        let mut samples: Vec<Duration> = (0..5_000)
            .map(|_| {
                let t = Instant::now();
                create();
                t.elapsed()
            })
            .collect();
        samples.sort();
        let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        results.push((label, samples.len(), pct(0.5), pct(0.99), pct(0.999)));
        sim.reset();
        criterion.final_summary();
    }
    for (label, n, p50, p99, p999) in results {
        println!(
            "client create round-trip ({label}), {n} sequential samples: median {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            p999.as_secs_f64() * 1e6
        );
    }
    rt.block_on(sim.shutdown());
}
