//! The queue message written for every accepted alert: `Envelope::to_json` (sonic-rs's serializer) against
//! serde_json's serializer on the same envelope, and reading it back as the deliverer does.
//!
//! `cargo bench -p relay-pipeline --bench envelope`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relay_core::{Alert, Config, Router};
use relay_pipeline::Envelope;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn envelope() -> Envelope {
    let alert = Alert::from_slice(include_bytes!("../../../events/alerts/seed-usb-copy-847-files.json")).unwrap();
    let decision = Router::new(Config::default_config(), None).unwrap().route(&alert);
    Envelope::alert(
        decision,
        Some("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W".into()),
        1_795_000_000_000,
    )
}

fn serialize(c: &mut Criterion) {
    let envelope = envelope();
    let text = envelope.to_json();
    assert_eq!(
        Envelope::from_json(&text).unwrap(),
        envelope,
        "what is written reads back the same"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        serde_json::to_value(&envelope).unwrap()
    );
    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("to_json", |b| b.iter(|| black_box(black_box(&envelope).to_json())));
    // what to_json did before: serde_json into the same pre-sized buffer
    group.bench_function("serde_json::to_writer", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(4096);
            serde_json::to_writer(&mut out, black_box(&envelope)).unwrap();
            black_box(String::from_utf8(out).unwrap())
        })
    });
    group.bench_function("from_json", |b| {
        b.iter(|| black_box(Envelope::from_json(black_box(&text)).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, serialize);
criterion_main!(benches);
