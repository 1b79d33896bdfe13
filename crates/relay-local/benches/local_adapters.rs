//! Per-alert cost of the SQLite adapters.
//!
//! - `queue/send_receive_delete`: one message through the queue, one caller (latency of one message).
//! - `ledger/accept_claim_complete`: one alert through the ledger, one caller.
//! - `alert_lifecycle/concurrent_32/<durability>`: what local mode does per alert — accept, send,
//!   mark_queued, receive, claim, complete, delete — with 32 alerts in flight at once (16 ingest and 16
//!   delivery tasks), so the writer thread's group commit is exercised. Time per alert; throughput is its
//!   inverse.
//!
//! Run: `cargo bench -p relay-local --bench local_adapters`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use relay_local::{Durability, LocalStore, StoreOptions};
use relay_ports::conformance::sample_entry;
use relay_ports::{AlertQueue, Claim, Clock, Ledger, RecordRef, SystemClock};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn record(id: &str) -> RecordRef {
    RecordRef {
        table: "incident".into(),
        sys_id: format!("sys-{id}"),
        number: None,
        link: String::new(),
        note: false,
    }
}

fn open(dir: &tempfile::TempDir, durability: Durability) -> LocalStore {
    let options = StoreOptions {
        durability,
        ..StoreOptions::default()
    };
    LocalStore::open_with(dir.path().join("bench.db"), options).unwrap()
}

fn single_caller(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, Durability::ProcessCrash);
    let queue = store.queue("realtime");
    let ledger = store.ledger();

    c.bench_function("queue/send_receive_delete", |b| {
        b.iter(|| {
            rt.block_on(async {
                queue
                    .send(r#"{"alert_id":"x","severity":"critical"}"#, Duration::ZERO)
                    .await
                    .unwrap();
                let m = queue.receive(1, Duration::from_secs(1)).await.unwrap().remove(0);
                queue.delete(&m.receipt).await.unwrap();
            })
        })
    });

    let mut n = 0u64;
    c.bench_function("ledger/accept_claim_complete", |b| {
        b.iter(|| {
            n += 1;
            let id = format!("bench-ledger-{n}");
            rt.block_on(async {
                let now = SystemClock.now_ms();
                ledger.accept(&sample_entry(&id, now)).await.unwrap();
                let Claim::Claimed(held) = ledger.claim(&id, now, 60_000).await.unwrap() else {
                    panic!("the claim must be granted")
                };
                ledger.complete(&id, held.claim_token, &record(&id), now).await.unwrap();
            })
        })
    });
}

/// Run `alerts` alerts through the whole lifecycle with `in_flight` ingest and delivery tasks each.
async fn lifecycle(store: &LocalStore, prefix: &str, alerts: u64, in_flight: u64) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..in_flight {
        let (ledger, queue, prefix) = (store.ledger(), store.queue("realtime"), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            for i in (w..alerts).step_by(in_flight as usize) {
                let id = format!("{prefix}-{i}");
                let now = SystemClock.now_ms();
                ledger.accept(&sample_entry(&id, now)).await.unwrap();
                queue.send(&id, Duration::ZERO).await.unwrap();
                ledger.mark_queued(&id, now).await.unwrap();
            }
        }));
    }
    let delivered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..in_flight {
        let (ledger, queue, delivered) = (store.ledger(), store.queue("realtime"), Arc::clone(&delivered));
        tasks.push(tokio::spawn(async move {
            while delivered.load(std::sync::atomic::Ordering::Relaxed) < alerts {
                for m in queue.receive(1, Duration::from_millis(20)).await.unwrap() {
                    let now = SystemClock.now_ms();
                    if let Claim::Claimed(held) = ledger.claim(&m.body, now, 60_000).await.unwrap() {
                        ledger
                            .complete(&m.body, held.claim_token, &record(&m.body), now)
                            .await
                            .unwrap();
                    }
                    queue.delete(&m.receipt).await.unwrap();
                    delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn concurrent(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("alert_lifecycle");
    group.sample_size(10);
    for (name, durability) in [
        ("process_crash", Durability::ProcessCrash),
        ("power_loss", Durability::PowerLoss),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, durability);
        let mut round = 0u64;
        group.bench_function(format!("concurrent_32/{name}"), |b| {
            b.iter_custom(|iters| {
                round += 1;
                let prefix = format!("r{round}");
                // `iters` alerts per sample: the reported time is per alert.
                rt.block_on(lifecycle(&store, &prefix, iters, 16))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, single_caller, concurrent);
criterion_main!(benches);
