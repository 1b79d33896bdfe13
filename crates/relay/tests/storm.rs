//! A small alert storm (`relay load --profile storm --scale 0.05`: 500 alerts in 3 s over 25 employees)
//! against the realistic simulator, with the relay's delivery and with the naive one: nothing is lost or
//! duplicated in either, and with the relay's lanes the critical alerts overtake the realtime backlog that
//! a limit of two concurrent calls builds. The invariants only; BENCHMARKS.md has the full storm's timings.

use std::process::Command;

use serde_json::Value;

#[test]
fn a_small_storm_loses_nothing_duplicates_nothing_and_critical_alerts_overtake_the_backlog() {
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args([
            "load",
            "--profile",
            "storm",
            "--scale",
            "0.05",
            "--servicenow-max-concurrency",
            "2",
            "--json",
        ])
        .output()
        .expect("relay load runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "relay load failed: {stderr}");
    let figures: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert_eq!(figures["plan"]["alerts"], 500);
    for run in ["relay", "naive"] {
        let f = &figures[run];
        assert_eq!(f["accepted"], 500, "{run}: every alert accepted: {f}");
        assert_eq!(f["not_delivered"], 0, "{run}: every alert delivered: {f}");
        assert_eq!(f["failed"], 0, "{run}: {f}");
        assert_eq!(f["duplicated"], 0, "{run}: no record twice: {f}");
        let records = f["records"].as_u64().unwrap();
        // 50 realtime alerts, one record each, and the aggregates of 450 batch alerts
        assert!(records > 50 && records < 500, "{run}: {records} records");
        for severity in ["critical", "high", "medium", "low"] {
            let s = &f["severity"][severity];
            assert_eq!(s["delivered"], s["sent"], "{run} {severity}: {s}");
        }
    }
    let relay = &figures["relay"]["severity"];
    let (critical, high) = (
        relay["critical"]["p50_ms"].as_i64().unwrap(),
        relay["high"]["p50_ms"].as_i64().unwrap(),
    );
    assert!(
        critical < high,
        "critical alerts overtake the backlog of high ones: critical median {critical} ms, high median {high} ms"
    );
}
