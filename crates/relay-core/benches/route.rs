//! parse + validate + route + build fields for one alert, against a config of 50 rules where the matching
//! rule is the last one (the worst case: every earlier rule is evaluated and rejected); and parse + validate
//! alone.
//!
//! cargo bench -p relay-core --bench route

use criterion::{Criterion, criterion_group, criterion_main};
use relay_core::{Alert, Config, Router};
use std::hint::black_box;

// the allocator the shipped binaries use (crates/relay-lambda/src/lib.rs for the functions, crates/relay/src/main.rs)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn config_with_50_rules() -> Config {
    let base = relay_core::config::DEFAULT_CONFIG_YAML;
    let (head, _) = base.split_once("\nrules:\n").expect("shipped config has rules");
    let mut yaml = format!("{head}\nrules:\n");
    for i in 0..49 {
        yaml.push_str(&format!(
            "  - name: filler-{i}\n    when:\n      all:\n        - {{field: alert_type, in: [dlp, behavioral_anomaly]}}\n        - {{field: department, eq: Department-{i}}}\n        - any:\n            - {{field: risk_score, gte: {}}}\n            - {{field: details.channel, eq: email}}\n    record_type: incident\n",
            50 + i % 50
        ));
    }
    yaml.push_str(
        "  - name: dlp-usb-mass-copy\n    when:\n      all:\n        - {field: alert_type, eq: dlp}\n        - {field: details.channel, eq: usb}\n        - {field: details.file_count, gte: 100}\n    record_type: security_incident\n    priority: P1\n    assignment_group: Security Operations\n",
    );
    let c = Config::from_yaml(&yaml).expect("bench config is valid");
    assert_eq!(c.rules.len(), 50);
    c
}

fn bench(c: &mut Criterion) {
    let router = Router::new(config_with_50_rules(), None).unwrap();
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/alerts/seed-usb-copy-847-files.json"
    ))
    .unwrap();
    let d = router.route(&Alert::from_slice(&body).unwrap());
    assert_eq!(d.rule, "dlp-usb-mass-copy");

    c.bench_function("validate+route+fields (50 rules, last one matches)", |b| {
        b.iter(|| {
            let alert = Alert::from_slice(black_box(&body)).unwrap();
            black_box(router.route(&alert))
        })
    });
    c.bench_function("parse+validate (sample alert)", |b| {
        b.iter(|| black_box(Alert::from_slice(black_box(&body)).unwrap()))
    });
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    c.bench_function("validate only (from the parsed JSON)", |b| {
        b.iter(|| black_box(Alert::from_value(black_box(&value)).unwrap()))
    });
    let alert = Alert::from_slice(&body).unwrap();
    c.bench_function("route+fields only (50 rules)", |b| {
        b.iter(|| black_box(router.route(black_box(&alert))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
