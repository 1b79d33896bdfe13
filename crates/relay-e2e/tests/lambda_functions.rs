//! The three Lambda handlers over real AWS APIs (moto_server) and the ServiceNow simulator, invoked with
//! the events Lambda sends (events/lambda/*.json). These prove the wiring: the pipeline's own logic is
//! tested in crates/relay-pipeline.

use std::time::{Duration, Instant};

use relay_e2e::lambda::{Stack, StackOptions, alert_body, sample};
use relay_ports::{AlertQueue, Clock, DeliveryState, ReceivedMessage};
use serde_json::{Value, json};
use servicenow_sim::{Fault, FaultKind, SimConfig};

const USB: &str = "emon-20261120-7f3a9c";

macro_rules! stack {
    ($opts:expr) => {
        match Stack::start($opts).await {
            Some(s) => s,
            None => return,
        }
    };
}

#[tokio::test]
async fn seed_scenarios_flow_through_ingest_deliver_and_flush() {
    let s = stack!(StackOptions::default());
    let mut ids = Vec::new();
    for (file, wh) in [
        ("seed-usb-copy-847-files.json", "wh-usb"),
        ("seed-after-hours-prod-db-admin.json", "wh-db"),
        ("seed-productivity-non-work-browsing.json", "wh-hr"),
    ] {
        let r = s.post(&sample(file), wh).await;
        assert_eq!(r.status, 202, "{file}: {:?}", r.body);
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        let id = r.body["alert_id"].as_str().unwrap().to_string();
        assert_eq!(
            r.body["status_url"],
            format!("https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/v1/alerts/{id}"),
            "the status link comes from the API Gateway request context"
        );
        ids.push((id, r.body["delivery"].as_str().unwrap().to_string()));
    }
    // critical/high → realtime; medium/low → batch
    assert_eq!(s.depth(&s.realtime).await, 2);
    assert_eq!(s.depth(&s.batch).await, 1);
    for (id, _) in &ids {
        assert_eq!(s.entry(id).await.unwrap().state, DeliveryState::Queued, "{id}");
    }

    s.deliver_until_empty(Duration::from_secs(20)).await;
    let report = s.invoke_flush().await;
    assert_eq!(
        (report["alerts"].as_u64(), report["created"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );

    let sir = s.sim.records("sn_si_incident");
    assert_eq!(sir.len(), 1);
    assert_eq!(sir[0]["assignment_group.display_value"], "Security Operations");
    assert!(sir[0]["number"].as_str().unwrap().starts_with("SIR"));
    assert_eq!(sir[0]["priority"], "1");
    // the security review is a Security Incident Response task at priority 2, never a bare task
    assert!(s.sim.records("task").is_empty());
    let task = s.sim.records("sn_si_task");
    assert_eq!(task.len(), 1);
    assert_eq!(task[0]["assignment_group.display_value"], "IT Security");
    assert_eq!(task[0]["priority"], "2");
    let hr = s.sim.records("sn_hr_core_case");
    assert_eq!(hr.len(), 1);
    assert_eq!(hr[0]["assignment_group.display_value"], "HR Partners - Engineering");

    // GET /v1/alerts/{alert_id}: state, attempts and the ServiceNow number — the cross-system reference
    let st = s.status(USB).await;
    assert_eq!(st.status, 200, "{:?}", st.body);
    assert_eq!(st.body["state"], "COMPLETED");
    assert_eq!(st.body["attempts"], 1);
    assert_eq!(st.body["servicenow"]["table"], "sn_si_incident");
    assert_eq!(st.body["servicenow"]["number"], sir[0]["number"]);
    assert_eq!(st.body["servicenow"]["sys_id"], sir[0]["sys_id"]);
    for (id, _) in &ids {
        assert_eq!(s.status(id).await.body["state"], "COMPLETED", "{id}");
    }
    let missing = s.status("emon-unknown").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body["error"].as_str().unwrap().contains("emon-unknown"));
}

#[tokio::test]
async fn other_routes_and_methods_get_json_404_and_405() {
    let s = stack!(StackOptions::default());
    let mut get_list = s.signed_event(b"{}", "wh");
    get_list["requestContext"]["http"]["method"] = "GET".into();
    let r = s.invoke_ingest(get_list).await;
    assert_eq!(
        (r.status, r.headers.get("allow").map(String::as_str)),
        (405, Some("POST")),
        "{:?}",
        r.body
    );
    let mut delete = relay_e2e::lambda::envelope("apigw-get-status.json");
    delete["requestContext"]["http"]["method"] = "DELETE".into();
    let r = s.invoke_ingest(delete).await;
    assert_eq!(
        (r.status, r.headers.get("allow").map(String::as_str)),
        (405, Some("GET,HEAD"))
    );
    let mut other = s.signed_event(b"{}", "wh");
    other["rawPath"] = "/v2/things".into();
    other["requestContext"]["http"]["path"] = "/v2/things".into();
    let r = s.invoke_ingest(other).await;
    assert_eq!(r.status, 404);
    assert!(r.body["error"].as_str().unwrap().contains("/v2/things"), "{:?}", r.body);
}

#[tokio::test]
async fn a_resent_webhook_is_answered_202_and_queued_once() {
    let s = stack!(StackOptions::default());
    let body = sample("seed-usb-copy-847-files.json");
    let first = s.post(&body, "wh-1").await;
    let again = s.post(&body, "wh-1").await;
    assert_eq!((first.status, again.status), (202, 202));
    assert_eq!(
        (first.body["duplicate"].as_bool(), again.body["duplicate"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(s.depth(&s.realtime).await, 1, "enqueued once");
    s.deliver_until_empty(Duration::from_secs(20)).await;
    assert_eq!(s.sim.records("sn_si_incident").len(), 1);
}

#[tokio::test]
async fn rejected_requests_get_clear_json_errors_and_nothing_is_queued_or_recorded() {
    let s = stack!(StackOptions::default());
    let body = sample("dlp-critical.json");
    let ok = s.signed_event(&body, "wh");
    let with = |changes: &[(&str, Option<&str>)]| {
        let mut e = ok.clone();
        for (k, v) in changes {
            match v {
                Some(v) => e["headers"][*k] = (*v).into(),
                None => {
                    e["headers"].as_object_mut().unwrap().remove(*k);
                }
            }
        }
        e
    };
    let stale = (relay_ports::SystemClock.now_ms() / 1000 - 600).to_string();
    let mut tampered = ok.clone();
    tampered["body"] = String::from_utf8(body.clone())
        .unwrap()
        .replace("critical", "low")
        .into();
    let cases: Vec<(Value, u16, &str)> = vec![
        (with(&[("webhook-signature", Some("v1,AAAA"))]), 401, "signature"),
        (with(&[("webhook-signature", None)]), 401, "webhook-signature"),
        (with(&[("webhook-timestamp", Some(&stale))]), 401, "replay window"),
        (tampered, 401, "signature"),
        (with(&[("content-type", Some("text/plain"))]), 415, "Content-Type"),
        (
            s.signed_event(&vec![b' '; 300 * 1024], "wh-big"),
            413,
            "limit is 262144",
        ),
        (s.signed_event(b"{not json", "wh-nj"), 400, "invalid alert"),
        (
            s.signed_event(
                &std::fs::read(relay_e2e::lambda::repo().join("events/invalid/bad-values.json")).unwrap(),
                "wh-bad",
            ),
            400,
            "invalid alert",
        ),
    ];
    for (event, status, needle) in cases {
        let r = s.invoke_ingest(event).await;
        assert_eq!(r.status, status, "{needle}: {:?}", r.body);
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        assert!(
            r.body["error"].as_str().unwrap().contains(needle),
            "{needle}: {:?}",
            r.body
        );
    }
    let bad = s.signed_event(
        &std::fs::read(relay_e2e::lambda::repo().join("events/invalid/bad-values.json")).unwrap(),
        "wh-bad2",
    );
    let r = s.invoke_ingest(bad).await;
    assert!(
        r.body["problems"].as_array().unwrap().len() >= 2,
        "every problem is listed: {:?}",
        r.body
    );
    assert_eq!(s.depth(&s.realtime).await + s.depth(&s.batch).await, 0);
    assert!(
        s.sim.requests().is_empty(),
        "ServiceNow is never called for a rejected webhook"
    );
}

#[tokio::test]
async fn a_base64_encoded_body_is_decoded_before_the_signature_check() {
    let s = stack!(StackOptions::default());
    let event = Stack::as_base64(s.signed_event(&sample("seed-usb-copy-847-files.json"), "wh-b64"));
    assert_eq!(event["isBase64Encoded"], true);
    let r = s.invoke_ingest(event).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["alert_id"], USB);
}

#[tokio::test]
async fn an_unwritable_queue_answers_503_with_retry_after_and_leaves_nothing_in_the_ledger() {
    let endpoint = match relay_aws::testing::moto_endpoint() {
        Some(e) => e,
        None => return,
    };
    let missing = format!(
        "{}/123456789012/relay-test-no-such-queue-{}",
        endpoint.trim_end_matches('/'),
        std::process::id()
    );
    let s = stack!(StackOptions {
        realtime_queue_url: Some(missing),
        ..StackOptions::default()
    });
    let r = s.post(&sample("seed-usb-copy-847-files.json"), "wh-503").await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("5"));
    assert!(
        r.body["error"].as_str().unwrap().contains("NOT accepted"),
        "{:?}",
        r.body
    );
    assert!(s.entry(USB).await.is_none(), "nothing half-accepted");
    assert_eq!(s.status(USB).await.status, 404);
}

#[tokio::test]
async fn one_message_delivered_twice_concurrently_creates_one_record() {
    let s = stack!(StackOptions {
        atomic_dynamo: true,
        ..StackOptions::default()
    });
    assert_eq!(s.post(&sample("seed-usb-copy-847-files.json"), "wh").await.status, 202);
    let queue = s.realtime.adapter(&s.sdk);
    let msg = queue.receive(1, Duration::from_secs(2)).await.unwrap().remove(0);
    // SQS's at-least-once delivery: the same message handed to two concurrent invocations
    let copy = ReceivedMessage {
        receipt: format!("{}-second-receive", msg.receipt),
        ..msg.clone()
    };
    s.sim
        .inject(Fault::new(FaultKind::Latency { ms: 300 }).on_table("sn_si_incident"));
    let (a, b) = tokio::join!(
        s.invoke_deliver(s.sqs_event(&s.realtime, std::slice::from_ref(&msg))),
        s.invoke_deliver(s.sqs_event(&s.realtime, std::slice::from_ref(&copy))),
    );
    let failed = a.batch_item_failures.len() + b.batch_item_failures.len();
    assert_eq!(
        failed, 1,
        "one invocation delivered, the other reports its copy for retry: {a:?} {b:?}"
    );
    let retried = a
        .batch_item_failures
        .iter()
        .chain(&b.batch_item_failures)
        .next()
        .unwrap();
    assert_eq!(retried.item_identifier, msg.message_id);
    assert_eq!(s.sim.records("sn_si_incident").len(), 1);
    let e = s.entry(USB).await.unwrap();
    assert_eq!((e.state, e.attempts), (DeliveryState::Completed, 1));
    // the copy comes back: acknowledged from the ledger, ServiceNow is not called again
    let calls = s.sim.requests().len();
    let again = s.invoke_deliver(s.sqs_event(&s.realtime, &[copy])).await;
    assert!(again.batch_item_failures.is_empty());
    assert_eq!(s.sim.requests().len(), calls);
}

async fn through_fault(kind: FaultKind, count: u32) -> Option<(Stack, relay_ports::LedgerEntry)> {
    let s = Stack::start(StackOptions::default()).await?;
    s.sim.inject(
        Fault::new(kind)
            .times(count)
            .on_table("sn_si_incident")
            .on_method("POST"),
    );
    assert_eq!(s.post(&sample("seed-usb-copy-847-files.json"), "wh").await.status, 202);
    s.deliver_until_empty(Duration::from_secs(30)).await;
    let e = s.entry(USB).await.unwrap();
    Some((s, e))
}

#[tokio::test]
async fn every_simulator_fault_class_ends_in_exactly_one_record() {
    let cases = [
        (FaultKind::ServerError { status: 503 }, 2, "retryable", false),
        (FaultKind::RateLimited { retry_after_s: 1 }, 1, "retryable", false),
        (FaultKind::Latency { ms: 3000 }, 1, "ambiguous", true),
        (FaultKind::TimeoutAfterWrite, 1, "ambiguous", true),
        (FaultKind::TruncatedJson, 1, "ambiguous", true),
        (FaultKind::MalformedJson, 1, "ambiguous", true),
        (FaultKind::ConnectionReset { after_commit: false }, 1, "ambiguous", true),
        (FaultKind::ConnectionReset { after_commit: true }, 1, "ambiguous", true),
        (FaultKind::TransactionCancelled, 1, "ambiguous", true),
        (FaultKind::RevokeTokens, 1, "", false),
    ];
    let mut runs = tokio::task::JoinSet::new();
    for (kind, count, class, lookup) in cases {
        runs.spawn(async move {
            let name = kind.name();
            let (s, e) = through_fault(kind, count).await?;
            let records = s.sim.records("sn_si_incident");
            assert_eq!(records.len(), 1, "{name}: exactly one record");
            assert_eq!(e.state, DeliveryState::Completed, "{name}: {e:?}");
            assert_eq!(
                e.record.as_ref().unwrap().sys_id,
                records[0]["sys_id"].as_str().unwrap(),
                "{name}"
            );
            if !class.is_empty() {
                assert_eq!(e.last_error_class.as_deref(), Some(class), "{name}");
                assert!(e.attempts >= 2, "{name}: retried ({})", e.attempts);
            }
            assert_eq!(e.needs_lookup, lookup, "{name}");
            if lookup {
                // ambiguous then retried: the retry looked the record up by correlation id first
                let lookups = s
                    .sim
                    .requests()
                    .iter()
                    .filter(|r| r.method == "GET" && r.query.contains("correlation_id"))
                    .count();
                assert!(lookups >= 1, "{name}: looked up before creating again");
            }
            assert_eq!(s.depth(&s.dlq).await, 0, "{name}");
            assert_eq!(s.depth(&s.realtime).await, 0, "{name}");
            Some(name)
        });
    }
    let mut done = Vec::new();
    while let Some(r) = runs.join_next().await {
        if let Some(name) = r.expect("a fault case panicked") {
            done.push(name);
        }
    }
    assert!(done.is_empty() || done.len() == 10, "{done:?}");
}

#[tokio::test]
async fn a_429_retry_after_sets_the_message_visibility() {
    let s = stack!(StackOptions::default());
    s.sim
        .inject(Fault::new(FaultKind::RateLimited { retry_after_s: 3 }).on_table("sn_si_incident"));
    s.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    let started = Instant::now();
    let (n, failed) = s.poll_realtime(Duration::from_secs(2)).await;
    assert_eq!((n, failed.len()), (1, 1), "the message is reported for retry");
    let e = s.entry(USB).await.unwrap();
    assert_eq!(
        (e.state, e.last_error_class.as_deref()),
        (DeliveryState::Retrying, Some("retryable"))
    );
    // ChangeMessageVisibility(3 s): invisible until then (the queue's own timeout is 30 s)
    let queue = s.realtime.adapter(&s.sdk);
    assert!(
        queue.receive(10, Duration::from_millis(1500)).await.unwrap().is_empty(),
        "visible too early"
    );
    let mut back = Vec::new();
    while back.is_empty() && started.elapsed() < Duration::from_secs(10) {
        back = queue.receive(10, Duration::from_secs(1)).await.unwrap();
    }
    assert_eq!(back.len(), 1, "the message is visible again after the Retry-After");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    let response = s.invoke_deliver(s.sqs_event(&s.realtime, &back)).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(s.sim.records("sn_si_incident").len(), 1);
}

#[tokio::test]
async fn a_permanent_error_dead_letters_at_once_and_notifies() {
    let s = stack!(StackOptions {
        username: "readonly",
        ..StackOptions::default()
    });
    s.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    let (n, failed) = s.poll_realtime(Duration::from_secs(2)).await;
    assert_eq!(
        (n, failed.len()),
        (1, 0),
        "acknowledged: no retry for a permanent error"
    );
    let e = s.entry(USB).await.unwrap();
    assert_eq!(
        (e.state, e.attempts, e.last_error_class.as_deref()),
        (DeliveryState::Failed, 1, Some("permanent"))
    );
    assert!(
        e.last_error.as_deref().unwrap().contains("403"),
        "ServiceNow's answer is kept: {:?}",
        e.last_error
    );
    let dead = s.drain(&s.dlq, Duration::from_secs(2)).await;
    assert_eq!(dead.len(), 1);
    let env: Value = serde_json::from_str(&dead[0].body).unwrap();
    assert_eq!(env["dead_letter"]["error_class"], "permanent");
    let notices = s.notices(Duration::from_secs(3)).await;
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].notice.alert_id, USB);
    assert_eq!(notices[0].notice.error_class, "permanent");
    // (not a bare "847": the notice's ids and timestamps may contain those digits)
    for payload in ["847 files", "2.3 GB", "USB mass-storage", "source-code share"] {
        assert!(
            !notices[0].message.contains(payload),
            "no alert payload in the notification: {payload}"
        );
    }
    assert_eq!(s.status(USB).await.body["state"], "FAILED");
    assert_eq!(s.depth(&s.realtime).await, 0);
}

#[tokio::test]
async fn near_the_receive_limit_the_deliverer_dead_letters_with_a_notice_before_the_redrive_would() {
    // a receive limit of 12 (maxReceiveCount): the deliverer gives up at receive 2, before SQS's redrive
    // would move the message to the DLQ with no notice and the ledger RETRYING
    let s = stack!(StackOptions {
        max_receives: Some(12),
        ..StackOptions::default()
    });
    s.sim.inject(
        Fault::new(FaultKind::ServerError { status: 500 })
            .times(100)
            .on_table("sn_si_incident")
            .on_method("POST"),
    );
    s.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    let (n, failed) = s.poll_realtime(Duration::from_secs(2)).await;
    assert_eq!((n, failed.len()), (1, 1), "the first receive attempts and fails");
    let e = s.entry(USB).await.unwrap();
    assert_eq!((e.state, e.attempts), (DeliveryState::Retrying, 1), "{e:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.depth(&s.dlq).await == 0 && Instant::now() < deadline {
        s.poll_realtime(Duration::from_secs(1)).await;
    }
    let e = s.entry(USB).await.unwrap();
    assert_eq!(
        (e.state, e.last_error_class.as_deref()),
        (DeliveryState::Failed, Some("receive_limit")),
        "given up at the second receive: {e:?}"
    );
    let creates = s
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/sn_si_incident"))
        .count();
    assert_eq!(creates, 1, "no attempt at the limit");
    let dead = s.drain(&s.dlq, Duration::from_secs(2)).await;
    assert_eq!(dead.len(), 1);
    let env: Value = serde_json::from_str(&dead[0].body).unwrap();
    assert_eq!(env["dead_letter"]["error_class"], "receive_limit");
    let notices = s.notices(Duration::from_secs(3)).await;
    assert_eq!(notices.len(), 1, "one delivery-failure notification");
    assert_eq!(
        (
            notices[0].notice.alert_id.as_str(),
            notices[0].notice.error_class.as_str()
        ),
        (USB, "receive_limit")
    );
    assert_eq!(s.depth(&s.realtime).await, 0, "acknowledged, not left to the redrive");
}

#[tokio::test]
async fn servicenow_down_for_the_whole_window_dead_letters_and_publishes_to_sns() {
    let s = stack!(StackOptions {
        window: Duration::from_secs(4),
        ..StackOptions::default()
    });
    s.sim.set_hibernating(true);
    s.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut polls = 0;
    while s.depth(&s.dlq).await == 0 && Instant::now() < deadline {
        s.poll_realtime(Duration::from_secs(1)).await;
        polls += 1;
    }
    let e = s.entry(USB).await.unwrap();
    assert_eq!(e.state, DeliveryState::Failed, "{e:?}");
    assert_eq!(e.last_error_class.as_deref(), Some("window_exhausted"));
    assert!(
        e.attempts >= 2,
        "retried within the window: {} attempts, {polls} polls",
        e.attempts
    );
    let dead = s.drain(&s.dlq, Duration::from_secs(2)).await;
    assert_eq!(dead.len(), 1);
    let notices = s.notices(Duration::from_secs(3)).await;
    assert_eq!(notices.len(), 1, "one delivery-failure notification");
    assert_eq!(notices[0].notice.error_class, "window_exhausted");
    assert_eq!(notices[0].notice.attempts, e.attempts);
    assert_eq!(s.depth(&s.realtime).await, 0, "acknowledged, not looping");
    assert!(s.sim.records("sn_si_incident").is_empty());
}

#[tokio::test]
async fn an_unreadable_sqs_message_is_dead_lettered_not_failing_its_neighbours() {
    let s = stack!(StackOptions::default());
    s.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    let queue = s.realtime.adapter(&s.sdk);
    queue.send("{not an envelope", Duration::ZERO).await.unwrap();
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while messages.len() < 2 && Instant::now() < deadline {
        messages.extend(queue.receive(10, Duration::from_secs(1)).await.unwrap());
    }
    assert_eq!(messages.len(), 2);
    let response = s.invoke_deliver(s.sqs_event(&s.realtime, &messages)).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(s.sim.records("sn_si_incident").len(), 1);
    let dead = s.drain(&s.dlq, Duration::from_secs(2)).await;
    assert_eq!(
        dead.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["{not an envelope"]
    );
}

#[tokio::test]
async fn five_hundred_low_alerts_become_grouped_records_in_few_batch_calls() {
    let s = stack!(StackOptions::default());
    // sent one after another, as one webhook sender would (with ten concurrent senders against moto the
    // batch queue's depth once read 430 of 500 while every post was answered 202: not yet explained)
    for i in 0..500 {
        let body = alert_body(
            &format!("low-{i:03}"),
            "policy_violation",
            "low",
            &format!("E{}", i % 20),
        );
        let r = s.post(&body, &format!("wh-{i}")).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
    }
    assert_eq!(s.depth(&s.batch).await, 500);
    let report = s.invoke_flush().await;
    let n = |k: &str| report[k].as_u64().unwrap() as usize;
    assert_eq!(n("alerts"), 500, "{report}");
    // grouped by employee + alert type + 5-minute window: 20 records, or up to 40 when the posts straddle a
    // window boundary (20 in the first window plus one per employee seen after it: fewer than 20 when the
    // boundary falls within the last 20 posts)
    assert!((20..=40).contains(&n("records")), "{report}");
    assert!(n("batch_calls") as f64 / 500.0 <= 0.05, "{report}");
    let batch_requests = s
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/batch") && !r.via_batch)
        .count();
    assert_eq!(
        batch_requests,
        n("batch_calls"),
        "the report counts real Batch API requests"
    );
    let records = s.sim.records("sn_compliance_policy_exception");
    assert_eq!(records.len(), n("records"), "{report}");
    assert_eq!(s.depth(&s.batch).await, 0, "every flushed message deleted");
    for i in [0, 250, 499] {
        let st = s.status(&format!("low-{i:03}")).await;
        assert_eq!(st.body["state"], "COMPLETED", "{:?}", st.body);
        assert!(
            st.body["servicenow"]["number"].as_str().unwrap().starts_with("PER"),
            "{:?}",
            st.body
        );
    }
}

#[tokio::test]
async fn unserviced_batch_items_are_retried_through_deliver_and_delivered() {
    let mut sim = SimConfig::default();
    sim.batch.max_serviced_items = Some(3);
    let s = stack!(StackOptions {
        sim,
        ..StackOptions::default()
    });
    for i in 0..10 {
        let body = alert_body(&format!("u-{i}"), "policy_violation", "medium", &format!("E{i}"));
        assert_eq!(s.post(&body, &format!("wh-{i}")).await.status, 202);
    }
    let report = s.invoke_flush().await;
    let n = |k: &str| report[k].as_u64().unwrap();
    assert_eq!((n("records"), n("created"), n("retried")), (10, 3, 7), "{report}");
    assert_eq!(s.depth(&s.batch).await, 0, "nothing left on the batch queue");
    assert_eq!(
        s.depth(&s.realtime).await,
        7,
        "unserviced items are on the realtime retry path"
    );
    s.deliver_until_empty(Duration::from_secs(30)).await;
    assert_eq!(s.sim.records("sn_compliance_policy_exception").len(), 10);
    for i in 0..10 {
        assert_eq!(
            s.entry(&format!("u-{i}")).await.unwrap().state,
            DeliveryState::Completed,
            "u-{i}"
        );
    }
}

// ----- the critical lane: ingest sends critical alerts to the critical queue, deliver handles a batch from
// either event source mapping and puts a retried message back on the queue it came from

fn with_critical_lane() -> StackOptions {
    StackOptions {
        critical_lane: true,
        ..StackOptions::default()
    }
}

#[tokio::test]
async fn critical_alerts_go_to_the_critical_queue_and_both_queues_are_delivered() {
    let s = stack!(with_critical_lane());
    assert_eq!(
        s.post(&sample("seed-usb-copy-847-files.json"), "wh-usb").await.status,
        202
    );
    let high = alert_body("high-1", "policy_violation", "high", "E7");
    assert_eq!(s.post(&high, "wh-high").await.status, 202);
    assert_eq!((s.depth(&s.critical).await, s.depth(&s.realtime).await), (1, 1));

    let (n, failed) = s.poll_critical(Duration::from_secs(2)).await;
    assert_eq!((n, failed.len()), (1, 0));
    assert_eq!(s.entry(USB).await.unwrap().state, DeliveryState::Completed);
    assert_eq!(
        s.entry("high-1").await.unwrap().state,
        DeliveryState::Queued,
        "the other lane waits for its own poll"
    );

    let (n, failed) = s.poll_realtime(Duration::from_secs(2)).await;
    assert_eq!((n, failed.len()), (1, 0));
    assert_eq!(s.entry("high-1").await.unwrap().state, DeliveryState::Completed);
    assert_eq!((s.depth(&s.critical).await, s.depth(&s.realtime).await), (0, 0));
}

#[tokio::test]
async fn without_a_critical_queue_critical_alerts_use_the_realtime_queue() {
    let s = stack!(StackOptions::default());
    assert_eq!(
        s.post(&sample("seed-usb-copy-847-files.json"), "wh-usb").await.status,
        202
    );
    assert_eq!((s.depth(&s.critical).await, s.depth(&s.realtime).await), (0, 1));
    s.deliver_until_empty(Duration::from_secs(10)).await;
    assert_eq!(s.entry(USB).await.unwrap().state, DeliveryState::Completed);
}

#[tokio::test]
async fn a_retried_critical_alert_stays_on_the_critical_queue() {
    let s = stack!(with_critical_lane());
    s.sim.inject(
        Fault::new(FaultKind::ServerError { status: 503 })
            .times(1)
            .on_table("sn_si_incident")
            .on_method("POST"),
    );
    assert_eq!(
        s.post(&sample("seed-usb-copy-847-files.json"), "wh-usb").await.status,
        202
    );
    let (n, failed) = s.poll_critical(Duration::from_secs(2)).await;
    assert_eq!((n, failed.len()), (1, 1), "the 503 is reported for retry");
    assert_eq!(s.entry(USB).await.unwrap().state, DeliveryState::Retrying);
    assert_eq!((s.depth(&s.critical).await, s.depth(&s.realtime).await), (1, 0));

    // back after its retry delay (not the 30 s visibility timeout): delayed on the queue it came from
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.entry(USB).await.unwrap().state != DeliveryState::Completed && Instant::now() < deadline {
        s.poll_critical(Duration::from_secs(1)).await;
    }
    let e = s.entry(USB).await.unwrap();
    assert_eq!((e.state, e.attempts), (DeliveryState::Completed, 2));
    assert_eq!(s.depth(&s.realtime).await, 0, "never on the realtime queue");
    assert_eq!(s.sim.records("sn_si_incident").len(), 1);
}

#[tokio::test]
async fn threads_and_lifecycle_events_through_the_lambda_handlers() {
    let config = relay_e2e::campaign::threaded_config();
    let receiver = relay_pipeline::callback::receiver::Receiver::start(&[503]).await;
    let s = stack!(StackOptions {
        config: Some(config),
        callback_url: Some(receiver.url.clone()),
        push: true,
        ..StackOptions::default()
    });
    // three USB copies of one employee, delivered one after another: one SIR, two work notes
    let mut ids = Vec::new();
    for n in 1..=3 {
        let id = format!("emon-lambda-thread-{n}");
        let mut v: Value = serde_json::from_slice(&sample("seed-usb-copy-847-files.json")).unwrap();
        v["alert_id"] = json!(id);
        let r = s.post(&serde_json::to_vec(&v).unwrap(), &format!("wh-{id}")).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        s.deliver_until_empty(Duration::from_secs(20)).await;
        ids.push(id);
    }
    let sirs = s.sim.records("sn_si_incident");
    assert_eq!(sirs.len(), 1, "{sirs:#?}");
    let sir = sirs[0]["sys_id"].as_str().unwrap().to_string();
    let notes = |s: &Stack| {
        s.sim
            .records("sys_journal_field")
            .into_iter()
            .filter(|j| j["element_id"] == sir.as_str())
            .count()
    };
    assert_eq!(notes(&s), 2);
    let st = s.status(&ids[1]).await;
    assert_eq!(st.body["servicenow"]["sys_id"], sir.as_str(), "{:?}", st.body);
    assert_eq!(st.body["servicenow"]["note"], true);

    // a resolution for each: the SIR closes with the last one, through its state flow
    for (n, id) in ids.iter().enumerate() {
        let body = serde_json::to_vec(&json!({"event": "resolved", "alert_id": id})).unwrap();
        let r = s.post(&body, &format!("wh-{id}-resolved")).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        s.deliver_until_empty(Duration::from_secs(20)).await;
        let state = s.sim.records("sn_si_incident")[0]["state"].clone();
        assert_eq!(state, if n < 2 { "10" } else { "3" }, "after {} resolutions", n + 1);
    }
    assert_eq!(
        s.sim.records("sn_si_incident")[0]["close_code"],
        "Investigation completed"
    );
    assert_eq!(notes(&s), 5, "two thread notes and three resolution notes");
    // the scheduled flush function syncs after flushing: it reads the SIR back and finds it closed
    let run = s.invoke_flush().await;
    assert_eq!(run["sync"]["records"], 1, "{run}");
    assert_eq!(run["sync"]["changes"], 1, "{run}");
    assert_eq!(run["sync"]["finished"], 1, "closed is final: {run}");
    s.deliver_until_empty(Duration::from_secs(20)).await;
    let st = s.status(&ids[0]).await;
    assert_eq!(st.body["servicenow"]["state"], "3", "{:?}", st.body);
    assert_eq!(st.body["servicenow"]["disposition"], "resolved", "{:?}", st.body);
    let unknown = s
        .post(
            br#"{"event": "dismissed", "alert_id": "emon-never-sent"}"#,
            "wh-unknown",
        )
        .await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    // the next alert: a new SIR that references the closed one
    let mut v: Value = serde_json::from_slice(&sample("seed-usb-copy-847-files.json")).unwrap();
    v["alert_id"] = json!("emon-lambda-thread-4");
    assert_eq!(s.post(&serde_json::to_vec(&v).unwrap(), "wh-4").await.status, 202);
    s.deliver_until_empty(Duration::from_secs(20)).await;
    let sirs = s.sim.records("sn_si_incident");
    assert_eq!(sirs.len(), 2);
    let second = sirs.iter().find(|r| r["sys_id"] != sir.as_str()).unwrap();
    assert_eq!(second["parent_security_incident"], sir.as_str());

    // the monitoring product heard of each: signed, once each (the first answer, a 503, was retried)
    receiver.verify_all();
    let got = receiver.received();
    let accepted: Vec<_> = got.iter().skip(1).collect();
    let ids: std::collections::BTreeSet<&str> = accepted.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), accepted.len(), "each change once: {got:#?}");
    assert_eq!(got[0].id, got[1].id, "the refused callback came back with its id");
    let kinds: Vec<String> = accepted.iter().map(|c| c.kind()).collect();
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    // two SIRs, two thread notes + three resolution notes, one closure
    assert_eq!(
        (
            count("record.created"),
            count("record.updated"),
            count("record.state_changed")
        ),
        (2, 5, 1),
        "{kinds:?}"
    );
    let first = accepted[0].json();
    assert_eq!(first["type"], "record.created");
    assert_eq!(first["data"]["record"]["sys_id"], sir.as_str());
    assert!(
        first["data"]["record"]["number"].as_str().unwrap().starts_with("SIR"),
        "{first}"
    );
    let closed = accepted
        .iter()
        .find(|c| c.kind() == "record.state_changed")
        .unwrap()
        .json();
    assert_eq!(closed["data"]["state"], "3");
    assert_eq!(closed["data"]["close_code"], "Investigation completed");
}
