//! Cold start of the release `bootstrap` binaries: process start → first
//! `GET /2018-06-01/runtime/invocation/next` against a stub Lambda runtime API on 127.0.0.1.
//!
//! Build the functions first, then run:
//! `cargo build --release -p ingest -p deliver -p flush && cargo bench -p relay-lambda --bench cold_start`
//! (`COLD_START_RUNS` sets the starts per function, default 25). Every variable the functions read is set to
//! a dummy value, so init succeeds without AWS; init makes no AWS call.

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NEXT: &str = "GET /2018-06-01/runtime/invocation/next";

fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
    target.join("release").join(name)
}

/// One start: the time from spawning the process to the runtime's first request line for the next event.
fn start_once(bin: &PathBuf, listener: &TcpListener, function: &str) -> Duration {
    let port = listener.local_addr().unwrap().port();
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "dummy")
        .env("AWS_SECRET_ACCESS_KEY", "dummy")
        .env("AWS_SESSION_TOKEN", "dummy")
        .env(
            "REALTIME_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/123456789012/relay-realtime",
        )
        .env(
            "BATCH_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/123456789012/relay-batch",
        )
        .env("DLQ_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/relay-dlq")
        .env("LEDGER_TABLE", "relay-ledger")
        .env(
            "WEBHOOK_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:relay-webhook",
        )
        .env(
            "SERVICENOW_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:relay-servicenow",
        )
        .env("FAILURE_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:relay-failures")
        .env("RETRY_WINDOW_SECONDS", "86400")
        .env("FLUSH_BUDGET_SECONDS", "60")
        .env("METRICS_NAMESPACE", "AlertRelay")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (build it with cargo build --release)", bin.display()));
    let elapsed = loop {
        match listener.accept() {
            Ok((mut conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                let mut buf = [0u8; 256];
                let mut got = Vec::new();
                while !got.windows(NEXT.len()).any(|w| w == NEXT.as_bytes()) && got.len() < 4096 {
                    let n = conn.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let elapsed = started.elapsed();
                assert!(
                    got.starts_with(NEXT.as_bytes()),
                    "first request was not {NEXT}: {:?}",
                    String::from_utf8_lossy(&got)
                );
                break elapsed;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                    panic!("{function} exited during init ({status}): {err}");
                }
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    panic!("{function}: no runtime request within 10 s");
                }
                std::thread::sleep(Duration::from_micros(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it, and the release
    // binaries it measures need not exist then.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "cold start benchmark: run with `cargo bench -p relay-lambda --bench cold_start` after a release build"
        );
        return;
    }
    let runs: usize = std::env::var("COLD_START_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    println!("cold start: process start -> first {NEXT} ({runs} starts each)");
    for function in ["ingest", "deliver", "flush"] {
        let bin = binary(function);
        // one warm-up start (page cache)
        start_once(&bin, &listener, function);
        let mut times: Vec<Duration> = (0..runs).map(|_| start_once(&bin, &listener, function)).collect();
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
        println!(
            "{function:8} median {:6.2} ms  min {:6.2} ms  p90 {:6.2} ms  max {:6.2} ms  binary {:.1} MiB",
            ms(times[runs / 2]),
            ms(times[0]),
            ms(times[(runs * 9) / 10]),
            ms(times[runs - 1]),
            size as f64 / (1024.0 * 1024.0)
        );
    }
}
