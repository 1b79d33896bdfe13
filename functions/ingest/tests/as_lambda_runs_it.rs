//! The ingest binary as Lambda runs it: the real `bootstrap` against a stub runtime API on loopback, AWS on
//! moto_server. Checks what only the process shows: one EMF document per invocation (plus the cold-start
//! count on the first), carrying the request id, and log lines carrying the request id and X-Ray trace id.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay_aws::testing;
use relay_e2e::runtime::{Answer, Invocation, StubRuntime};
use relay_pipeline::WebhookSecrets;
use relay_ports::{Clock, SystemClock};
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn signed_event(alert: &str, webhook_id: &str) -> Value {
    let body = std::fs::read_to_string(relay_e2e::lambda::repo().join("events/alerts").join(alert)).unwrap();
    let ts = SystemClock.now_ms() / 1000;
    let sig = WebhookSecrets::parse(&[SECRET])
        .unwrap()
        .sign(webhook_id, ts, body.as_bytes());
    let mut e = relay_e2e::lambda::envelope("apigw-post-alert.json");
    e["headers"]["webhook-id"] = webhook_id.into();
    e["headers"]["webhook-timestamp"] = ts.to_string().into();
    e["headers"]["webhook-signature"] = sig.into();
    e["headers"]["content-length"] = body.len().to_string().into();
    e["body"] = body.into();
    e
}

#[tokio::test]
async fn one_emf_document_per_invocation_and_logs_carry_the_request_and_trace_ids() {
    let Some(endpoint) = testing::moto_endpoint() else {
        return;
    };
    let sdk = relay_aws::sdk_config().await;
    let (realtime, batch, dlq, table) = tokio::join!(
        testing::create_queue(&sdk, "realtime", 30),
        testing::create_queue(&sdk, "batch", 60),
        testing::create_queue(&sdk, "dlq", 30),
        testing::create_ledger_table(&sdk, "ledger"),
    );
    let webhook_secret = testing::create_secret(&sdk, "webhook", &json!({"secrets": [SECRET]}).to_string()).await;
    let runtime = StubRuntime::start().await;
    let invocations = [
        (
            "req-cold-1",
            "Root=1-6740a000-000000000000000000000001;Sampled=1",
            "seed-usb-copy-847-files.json",
        ),
        (
            "req-warm-2",
            "Root=1-6740a000-000000000000000000000002;Sampled=1",
            "dlp-high.json",
        ),
    ];
    for (request_id, trace_id, alert) in invocations {
        runtime.push(Invocation {
            request_id: request_id.into(),
            trace_id: trace_id.into(),
            event: signed_event(alert, &format!("msg-{request_id}")),
        });
    }

    let mut child = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", runtime.api())
        .env("AWS_LAMBDA_FUNCTION_NAME", "relay-ingest")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("REALTIME_QUEUE_URL", &realtime.url)
        .env("BATCH_QUEUE_URL", &batch.url)
        .env("DLQ_URL", &dlq.url)
        .env("LEDGER_TABLE", &table)
        .env("WEBHOOK_SECRET_ARN", &webhook_secret)
        .env(
            "SERVICENOW_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:unused",
        )
        .env("FAILURE_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:unused")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the ingest binary");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
    }
    let answers = runtime.wait_for_answers(2, Duration::from_secs(30)).await;
    // the function asks for its next event only after the previous one's metrics were flushed
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while runtime.next_calls() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = child.kill();
    let _ = child.wait();
    let lines = lines.lock().unwrap().clone();
    assert_eq!(answers.len(), 2, "answers {answers:?}; output:\n{}", lines.join("\n"));
    for (answer, (request_id, ..)) in answers.iter().zip(invocations) {
        match answer {
            Answer::Response { request_id: id, body } => {
                assert_eq!(id, request_id);
                assert_eq!(body["statusCode"], 202, "{body}");
            }
            other => panic!("{other:?}\n{}", lines.join("\n")),
        }
    }

    let json_lines: Vec<Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let emf: Vec<&Value> = json_lines.iter().filter(|v| v.get("_aws").is_some()).collect();
    let of = |id: &str| -> Vec<&Value> { emf.iter().copied().filter(|d| d["RequestId"] == id).collect() };
    let warm = of("req-warm-2");
    assert_eq!(warm.len(), 1, "one EMF document for the warm invocation: {warm:?}");
    let doc = warm[0];
    assert_eq!(doc["Service"], "ingest");
    assert_eq!(
        (&doc["AlertsAccepted"], &doc["Severity"], &doc["AlertType"]),
        (&json!(1), &json!("high"), &json!("dlp"))
    );
    assert_eq!(doc["XRayTraceId"], invocations[1].1);
    let directive = &doc["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "AlertRelay");
    assert_eq!(directive["Dimensions"][0], json!(["Service", "Severity", "AlertType"]));
    let cold: Vec<&Value> = emf.iter().copied().filter(|d| d.get("ColdStart").is_some()).collect();
    assert_eq!(cold.len(), 1, "one cold start: {cold:?}");
    let first = of("req-cold-1");
    assert!(
        first
            .iter()
            .any(|d| d["AlertsAccepted"] == 1 && d["Severity"] == "critical"),
        "{first:?}"
    );

    // every audit line of an invocation names it
    let routed: Vec<&Value> = json_lines
        .iter()
        .filter(|v| v["target"] == "audit" && v["event"] == "routed")
        .collect();
    assert_eq!(routed.len(), 2, "{routed:?}");
    for (line, (request_id, trace_id, _)) in routed.iter().zip(invocations) {
        assert_eq!(line["span"]["requestId"], request_id, "{line}");
        assert_eq!(line["span"]["xrayTraceId"], trace_id, "{line}");
    }
}
