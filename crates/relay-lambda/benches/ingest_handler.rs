//! Ingest handler throughput in-process: the Lambda HTTP request → signature check (secret from the cached
//! secret document) → parse → validate → route → ledger → enqueue → JSON reply, over the in-memory queue
//! and ledger, on a current_thread runtime (one core).
//!
//! * `accept_to_202`: the pipeline's part alone (webhook headers and body → 202 reply).
//! * `request_to_202`: the same through the Lambda adapter (`lambda_http::Request` → `Response`), 2,000
//!   requests built first.
//! * `fresh_request_to_202`: as `request_to_202`, each request built just before it is handled.
//! * `event_json_to_response_json`: as Lambda hands it over, JSON event in and JSON response out.
//!
//! `cargo bench -p relay-lambda --bench ingest_handler`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lambda_http::request::LambdaRequest;
use lambda_http::{Request, Service};
use relay_lambda::{Settings, ingest};
use relay_pipeline::{Ingest, Ports, WebhookRequest, WebhookSecrets};
use relay_ports::memory::{MemoryLedger, MemoryNotifier, MemoryQueue, MemorySecrets};
use relay_ports::{Clock, SystemClock};
use tower::ServiceExt;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CHUNK: u64 = 2_000;
/// The status link's base, as the Lambda adapter derives it from the sample event's request context.
const STATUS_BASE: &str = "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com";

struct Bench {
    ingest: Arc<Ingest>,
    ledger: Arc<MemoryLedger>,
    realtime: Arc<MemoryQueue>,
    batch: Arc<MemoryQueue>,
    keys: WebhookSecrets,
    template: serde_json::Value,
    next: u64,
}

fn alert(i: u64) -> Vec<u8> {
    let severity = ["critical", "high", "medium", "low"][(i % 4) as usize];
    serde_json::to_vec(&serde_json::json!({
        "schema_version": "1",
        "alert_id": format!("bench-{i}"), "alert_type": "dlp", "severity": severity,
        "occurred_at": "2026-11-20T14:03:00Z",
        "employee": {"id": format!("E{}", i % 500), "department": "Finance"},
        "description": "Uploaded 12 spreadsheets tagged Confidential to a personal cloud drive", "risk_score": 87,
        "evidence_url": format!("https://monitor.example.com/alerts/bench-{i}"),
        "details": {"file_count": 12, "bytes": 5_242_880, "channel": "cloud_upload"}
    }))
    .unwrap()
}

impl Bench {
    async fn new() -> Bench {
        let env = |k: &str| {
            (!k.starts_with("CALLBACK_") && (k.ends_with("_URL") || k.ends_with("_ARN") || k.ends_with("_TABLE")))
                .then(|| format!("bench-{k}"))
        };
        let settings = Settings::from_lookup(env).unwrap();
        let ledger = Arc::new(MemoryLedger::new());
        let realtime = Arc::new(MemoryQueue::new(Duration::from_secs(30)));
        let batch = Arc::new(MemoryQueue::new(Duration::from_secs(30)));
        let secrets = MemorySecrets::new([(
            settings.webhook_secret_arn.clone(),
            serde_json::json!({"secrets": [SECRET]}).to_string(),
        )]);
        let ports = Ports {
            ledger: ledger.clone(),
            realtime: realtime.clone(),
            critical: realtime.clone(),
            batch: batch.clone(),
            dlq: Arc::new(MemoryQueue::new(Duration::from_secs(30))),
            secrets: Arc::new(secrets),
            notifier: Arc::new(MemoryNotifier::default()),
            clock: Arc::new(SystemClock),
        };
        let ingest = ingest::ingest(&settings, &ports).await.unwrap();
        let template: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../events/lambda/apigw-post-alert.json"
            ))
            .unwrap(),
        )
        .unwrap();
        Bench {
            ingest: Arc::new(ingest),
            ledger,
            realtime,
            batch,
            keys: WebhookSecrets::parse(&[SECRET]).unwrap(),
            template,
            next: 0,
        }
    }

    /// The next alert's webhook, signed now: id, timestamp, signature header and body.
    fn webhook(&mut self) -> (String, String, String, Vec<u8>) {
        self.next += 1;
        let body = alert(self.next);
        let id = format!("msg_{}", self.next);
        let ts = SystemClock.now_ms() / 1000;
        let signature = self.keys.sign(&id, ts, &body);
        (id, ts.to_string(), signature, body)
    }

    /// The API Gateway v2 event for the next alert, signed now.
    fn event(&mut self) -> serde_json::Value {
        let (id, ts, signature, body) = self.webhook();
        let mut e = self.template.clone();
        e["headers"]["webhook-id"] = id.into();
        e["headers"]["webhook-timestamp"] = ts.into();
        e["headers"]["webhook-signature"] = signature.into();
        e["body"] = String::from_utf8(body).unwrap().into();
        e
    }

    fn reset(&self) {
        self.ledger.clear();
        self.realtime.clear();
        self.batch.clear();
    }
}

fn to_request(event: serde_json::Value) -> Request {
    let lr: LambdaRequest = serde_json::from_value(event).unwrap();
    lr.into()
}

/// Runs `iters` iterations as chunks of at most [`CHUNK`] (`chunk(n)` prepares and times `n` of them) and
/// sums the times measured.
fn in_chunks(iters: u64, mut chunk: impl FnMut(u64) -> Duration) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        total += chunk(n);
        left -= n;
    }
    total
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut b = rt.block_on(Bench::new());
    let mut group = c.benchmark_group("ingest_handler");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));

    // The handler proper: lambda_http::Request in, Response out.
    group.bench_function("request_to_202", |bencher| {
        bencher.iter_custom(|iters| {
            in_chunks(iters, |n| {
                b.reset();
                let requests: Vec<Request> = (0..n).map(|_| to_request(b.event())).collect();
                let app = ingest::app(b.ingest.clone());
                let started = Instant::now();
                rt.block_on(async {
                    for r in requests {
                        let resp = app.clone().oneshot(r).await.unwrap();
                        assert_eq!(resp.status(), 202);
                    }
                });
                started.elapsed()
            })
        })
    });

    // The pipeline's own part, which the Lambda adapter wraps: webhook headers and body in, the 202 reply out —
    // signature, parse, validate, route, ledger, enqueue — without lambda_http's request and response types.
    group.bench_function("accept_to_202", |bencher| {
        bencher.iter_custom(|iters| {
            in_chunks(iters, |n| {
                b.reset();
                let webhooks: Vec<(String, String, String, Vec<u8>)> = (0..n).map(|_| b.webhook()).collect();
                let ingest = b.ingest.clone();
                let started = Instant::now();
                rt.block_on(async {
                    for (id, ts, signature, body) in &webhooks {
                        let reply = ingest
                            .accept(
                                WebhookRequest {
                                    content_type: Some("application/json"),
                                    webhook_id: Some(id),
                                    webhook_timestamp: Some(ts),
                                    webhook_signature: Some(signature),
                                    body,
                                },
                                STATUS_BASE,
                            )
                            .await;
                        assert_eq!(reply.status, 202, "{}", reply.body);
                    }
                });
                started.elapsed()
            })
        })
    });

    // The same handler work, but each request is built just before it is handled and timed on its own, as in
    // a Lambda instance (the runtime builds the request, then calls the handler): the request's memory is
    // warm. `request_to_202` above builds 2,000 requests first, so each one is cache-cold when handled.
    group.bench_function("fresh_request_to_202", |bencher| {
        bencher.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let app = ingest::app(b.ingest.clone());
            for i in 0..iters {
                if i % CHUNK == 0 {
                    b.reset();
                }
                let request = to_request(b.event());
                rt.block_on(async {
                    let started = Instant::now();
                    let resp = app.clone().oneshot(request).await.unwrap();
                    assert_eq!(resp.status(), 202);
                    drop(resp);
                    total += started.elapsed();
                });
            }
            total
        })
    });

    // As Lambda hands it over: the API Gateway JSON event deserialized, adapted and answered, the response
    // serialized back to JSON.
    group.bench_function("event_json_to_response_json", |bencher| {
        bencher.iter_custom(|iters| {
            in_chunks(iters, |n| {
                b.reset();
                let events: Vec<String> = (0..n).map(|_| b.event().to_string()).collect();
                let mut adapter = lambda_http::Adapter::from(ingest::app(b.ingest.clone()));
                let started = Instant::now();
                rt.block_on(async {
                    for e in events {
                        let lr: LambdaRequest = serde_json::from_str(&e).unwrap();
                        let ev = lambda_runtime::LambdaEvent::new(lr, lambda_runtime::Context::default());
                        let resp = adapter.call(ev).await.unwrap();
                        let out = serde_json::to_string(&resp).unwrap();
                        assert!(out.contains("202"));
                    }
                });
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
