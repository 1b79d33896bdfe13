//! Simulator throughput: incident creates per second over keep-alive HTTP/1.1 (client in the same process,
//! so client and simulator share the machine's cores).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use servicenow_sim::{SimConfig, Simulator};

const CREATES_PER_ITER: usize = 400;
const CONCURRENCY: usize = 16;

fn creates(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sim = rt
        .block_on(Simulator::start(SimConfig::default()))
        .expect("simulator starts");
    let url = format!("{}/api/now/table/incident?sysparm_fields=sys_id,number", sim.base_url());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("client");
    let body = serde_json::json!({
        "short_description": "Possible data exfiltration by user 4711",
        "description": "Bulk download of 1,204 files to removable media within 10 minutes",
        "impact": "2", "urgency": "1", "assignment_group": "Security Operations",
        "correlation_id": "alert-0123456789abcdef", "category": "security", "contact_type": "monitoring"
    })
    .to_string();

    let mut group = c.benchmark_group("servicenow_sim");
    group.throughput(Throughput::Elements(CREATES_PER_ITER as u64));
    group.sample_size(30);
    group.bench_function("incident_creates_keepalive_c16", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut tasks = Vec::with_capacity(CONCURRENCY);
                for _ in 0..CONCURRENCY {
                    let (client, url, body) = (client.clone(), url.clone(), body.clone());
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..CREATES_PER_ITER / CONCURRENCY {
                            let resp = client
                                .post(&url)
                                .query(&[("sysparm_input_display_value", "true")])
                                .basic_auth("relay", Some("relay-password"))
                                .header("Accept", "application/json")
                                .header("Content-Type", "application/json")
                                .body(body.clone())
                                .send()
                                .await
                                .expect("request sent");
                            assert_eq!(resp.status().as_u16(), 201);
                            resp.bytes().await.expect("body read");
                        }
                    }));
                }
                for t in tasks {
                    t.await.expect("task");
                }
            })
        })
    });
    group.finish();
    rt.block_on(sim.shutdown());
}

criterion_group!(benches, creates);
criterion_main!(benches);
