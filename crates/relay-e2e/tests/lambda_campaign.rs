//! The fault campaign on the Lambda handlers (issue 13). `ingest`, `deliver` and `flush` run as Lambda
//! invokes them, over SQS, DynamoDB and SNS on moto and the ServiceNow simulator. Meanwhile the driver:
//! - injects every simulator fault class, late commits and slow calls included;
//! - times out flush invocations at random points: the invocation gets a deadline, and at that deadline
//!   Lambda ends it (its future is dropped wherever it is);
//! - runs overlapping flushes, as when EventBridge retries an invocation that timed out;
//! - hands the same SQS messages to two deliver invocations at once, and puts copies of queued realtime
//!   and batch messages back on their queues (SQS's at-least-once delivery, a failed delete);
//! - times out deliver invocations, whose messages the event source mapping then leaves on the queue.
//!
//! Threads are on (repeat realtime alerts become work notes on their thread's record). At the end every
//! accepted alert must be in exactly one ServiceNow record that lists it (its own, as a note, or as an
//! aggregate's member, each once), or in the
//! dead-letter queue with a failure notice: `N passed, 0 lost, 0 duplicated`. `RELAY_CAMPAIGN_SEED`,
//! `RELAY_CAMPAIGN_SECONDS`, `RELAY_CAMPAIGN_ALERTS` and `RELAY_CAMPAIGN_DRAIN_SECONDS` set the run, as for
//! the local campaign (crates/relay/tests/fault_campaign.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use relay_aws::testing::TestQueue;
use relay_e2e::campaign::{
    CampaignSettings, FAULT_CLASSES, MAX_LATE_COMMIT_MS, Stores, Verdict, listings, random_fault, templates,
    thread_notes, threaded_config,
};
use relay_e2e::lambda::{Stack, StackOptions};
use relay_ports::{AlertQueue, Clock, DeliveryState, ReceivedMessage, SystemClock};
use serde_json::json;
use servicenow_sim::{Fault, FaultKind, SimConfig};

/// The late aggregate's size: one alert more than an aggregate's description shows in full, so its record
/// gets a member list to upload (the upload the ended flush is caught in).
const LATE_GROUP: usize = relay_core::batch::DESCRIBED_MEMBERS + 1;

/// What the driver did, printed with the verdict.
#[derive(Debug, Default)]
struct Chaos {
    faults: BTreeMap<&'static str, u32>,
    flushes: u32,
    /// Flush invocations Lambda ended at their deadline (the future dropped mid-work).
    ended_flushes: u32,
    /// Of those, ended after their Batch API request was sent.
    ended_after_batch_call: u32,
    overlapping_flushes: u32,
    batch_copies: u32,
    deliver_invocations: u32,
    timed_out_delivers: u32,
    twin_delivers: u32,
    realtime_copies: u32,
}

/// What the event source mapping does with an invocation's answer: delete every message it did not report
/// as failed.
async fn settle_like_the_event_source(s: &Stack, from: &TestQueue, messages: &[ReceivedMessage], failed: &[String]) {
    let queue = from.adapter(&s.sdk);
    for m in messages.iter().filter(|m| !failed.contains(&m.message_id)) {
        // a copy's made-up receipt handle cannot be deleted; the original's can
        let _ = queue.delete(&m.receipt).await;
    }
}

/// Put a copy of each message back on `queue` and make the original visible again at once.
async fn put_copies(queue: &dyn AlertQueue, messages: &[ReceivedMessage]) -> u32 {
    let mut n = 0;
    for m in messages {
        if queue.send(&m.body, Duration::ZERO).await.is_ok() {
            n += 1;
        }
        let _ = queue.change_visibility(&m.receipt, Duration::ZERO).await;
    }
    n
}

/// Whether a Batch API request reached the simulator at or after `since_ms`.
fn batch_call_since(s: &Stack, since_ms: i64) -> bool {
    s.sim
        .requests()
        .iter()
        .any(|r| r.at >= since_ms && r.path.ends_with("/batch") && !r.via_batch)
}

/// A flush invocation with deadline `limit`, ended by Lambda after `end` (default: at `limit`), counted
/// from its Batch API request when `after_batch_call`. Returns (ended, ended after its Batch API request).
async fn flush_invocation(s: &Stack, limit: Duration, end: Option<Duration>, after_batch_call: bool) -> (bool, bool) {
    let started_ms = SystemClock.now_ms();
    let ender = async {
        if after_batch_call {
            while !batch_call_since(s, started_ms) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tokio::time::sleep(end.unwrap_or(limit)).await;
    };
    let ended = tokio::select! {
        _ = s.invoke_flush_within(limit) => false,
        _ = ender => true,
    };
    (ended, ended && batch_call_since(s, started_ms))
}

/// Poll the realtime queue and flush, as the event source mapping and the schedule would, until every
/// accepted alert is final or `deadline` passed; whether they all are.
async fn drain(s: &Stack, accepted: &BTreeSet<String>, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        s.poll_critical(Duration::ZERO).await;
        s.poll_realtime(Duration::from_millis(500)).await;
        s.invoke_flush().await;
        if drained(s, accepted).await {
            return true;
        }
    }
    false
}

/// Whether every accepted alert is final (completed or failed) and both queues are empty.
async fn drained(s: &Stack, accepted: &BTreeSet<String>) -> bool {
    if s.depth(&s.realtime).await > 0 || s.depth(&s.critical).await > 0 || s.depth(&s.batch).await > 0 {
        return false;
    }
    for id in accepted {
        match s.entry(id).await {
            Some(e) if matches!(e.state, DeliveryState::Completed | DeliveryState::Failed) => {}
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn lambda_campaign_every_accepted_alert_is_in_exactly_one_record_or_dead_lettered() {
    let settings = CampaignSettings::from_env(200, Duration::from_secs(30));
    let s = match Stack::start(StackOptions {
        // deliverers race on one item, and moto's conditional writes are not atomic on their own
        atomic_dynamo: true,
        // critical alerts on their own queue, as template.yaml deploys it
        critical_lane: true,
        // nothing reaches the end of its window during the campaign: every alert must be delivered
        window: Duration::from_secs(3_600),
        // a flush that was ended holds its sealed aggregates until its deadline
        flush_budget: Duration::from_secs(6),
        // no create after an ambiguous one until a late commit would show
        settle: Duration::from_millis(MAX_LATE_COMMIT_MS + 1_000),
        sim: SimConfig {
            request_log_capacity: 2_000,
            ..SimConfig::default()
        },
        // threads on: repeat realtime alerts become work notes, under the same faults
        config: Some(threaded_config()),
        ..StackOptions::default()
    })
    .await
    {
        Some(s) => s,
        None => return,
    };
    println!("{}", settings.describe("lambda fault campaign"));
    let prefix = format!("lc{:x}-", settings.seed & 0xffff_ffff);
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let templates = templates();
    let started = Instant::now();
    let chaos_end = started + settings.chaos;
    let plan: Vec<(String, Vec<u8>, Duration, bool)> = (0..settings.alerts)
        .map(|n| {
            let mut alert = templates[rng.random_range(0..templates.len())].clone();
            let id = format!("{prefix}{n}");
            alert["alert_id"] = json!(id);
            let at = settings.chaos.mul_f64(n as f64 / settings.alerts.max(1) as f64 * 0.8);
            (id, serde_json::to_vec(&alert).unwrap(), at, rng.random_bool(0.05))
        })
        .collect();

    let seed = settings.seed;
    let chaos = std::sync::Mutex::new(Chaos::default());
    let count = |f: &dyn Fn(&mut Chaos)| f(&mut chaos.lock().unwrap());

    // The monitoring product: every alert posted at its time; 5 % re-sent after their 202.
    let sender = async {
        let mut accepted = BTreeSet::new();
        for (id, body, at, repeat) in &plan {
            tokio::time::sleep_until((started + *at).into()).await;
            for attempt in 0..5 {
                let reply = s.post(body, &format!("wh-{id}-{attempt}")).await;
                if reply.status == 202 {
                    accepted.insert(id.clone());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if *repeat {
                let again = s.post(body, &format!("wh-{id}-again")).await;
                assert_eq!(again.status, 202, "a re-sent webhook: {:?}", again.body);
            }
        }
        accepted
    };

    // ServiceNow: every fault class once in a shuffled order, then classes at random.
    let faults = async {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xfa);
        let mut classes: Vec<usize> = (0..FAULT_CLASSES).collect();
        classes.shuffle(&mut rng);
        while Instant::now() < chaos_end {
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..=1_500))).await;
            let class = classes.pop().unwrap_or_else(|| rng.random_range(0..FAULT_CLASSES));
            let fault = random_fault(&mut rng, class);
            count(&|c| *c.faults.entry(fault.kind.name()).or_default() += fault.count);
            s.sim.inject(fault);
        }
    };

    // The event source mappings: two concurrent pollers of the realtime queue, one of the critical queue.
    let poller = |k: u64, from: &'static str| {
        let (s, count) = (&s, &count);
        async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (0x100 + k));
            let from = if from == "critical" { &s.critical } else { &s.realtime };
            let queue = from.adapter(&s.sdk);
            while Instant::now() < chaos_end {
                let messages = queue.receive(10, Duration::from_secs(1)).await.expect("receive");
                if messages.is_empty() {
                    continue;
                }
                count(&|c| c.deliver_invocations += 1);
                match rng.random_range(0..10) {
                    0 => {
                        // the invocation times out: Lambda ends it, the mapping deletes nothing
                        let limit = Duration::from_millis(rng.random_range(20..=2_500));
                        let _ = tokio::time::timeout(limit, s.invoke_deliver(s.sqs_event(from, &messages))).await;
                        count(&|c| c.timed_out_delivers += 1);
                    }
                    1 => {
                        // the same messages handed to two invocations at once
                        let twins: Vec<ReceivedMessage> = messages
                            .iter()
                            .map(|m| ReceivedMessage {
                                receipt: format!("{}-second-receive", m.receipt),
                                ..m.clone()
                            })
                            .collect();
                        let (a, b) = tokio::join!(
                            s.invoke_deliver(s.sqs_event(from, &messages)),
                            s.invoke_deliver(s.sqs_event(from, &twins)),
                        );
                        settle_like_the_event_source(s, from, &messages, &Stack::failed_ids(&a)).await;
                        settle_like_the_event_source(s, from, &twins, &Stack::failed_ids(&b)).await;
                        count(&|c| c.twin_delivers += 1);
                    }
                    2 => {
                        // copies of these messages are on the queue too
                        let n = put_copies(&queue, &messages).await;
                        count(&|c| c.realtime_copies += n);
                    }
                    _ => {
                        let r = s.invoke_deliver(s.sqs_event(from, &messages)).await;
                        settle_like_the_event_source(s, from, &messages, &Stack::failed_ids(&r)).await;
                    }
                }
            }
        }
    };

    // The schedule: a flush every 0.5–2 s, each an invocation with a deadline (the function timeout).
    // Most are ended before they finish: right after their Batch API request (while the member list
    // uploads), at a random early point (the sandbox fails: out of memory, a crash), or at their deadline
    // (slow writes overrun it); some overlap another (EventBridge's retry of a failed invocation).
    let flusher = async {
        let (s, count) = (&s, &count);
        let mut rng = StdRng::seed_from_u64(seed ^ 0xf1);
        let batch = s.batch.adapter(&s.sdk);
        let invocation = |limit: Duration, end: Option<Duration>, after_batch_call: bool| async move {
            let (ended, sent) = flush_invocation(s, limit, end, after_batch_call).await;
            count(&|c| {
                c.flushes += 1;
                c.ended_flushes += u32::from(ended);
                c.ended_after_batch_call += u32::from(sent);
            });
        };
        while Instant::now() < chaos_end {
            tokio::time::sleep(Duration::from_millis(rng.random_range(500..=2_000))).await;
            let short = Duration::from_millis(rng.random_range(1_000..=5_000));
            let early = Duration::from_millis(rng.random_range(20..=1_500));
            let normal = Duration::from_secs(8);
            match rng.random_range(0..10) {
                0..=2 => {
                    s.sim
                        .inject(Fault::new(FaultKind::Latency { ms: 2_000 }).on_table("sys_attachment"));
                    let after = Duration::from_millis(rng.random_range(0..=400));
                    invocation(normal, Some(after), true).await;
                }
                3 | 4 => invocation(normal, Some(early), false).await,
                5 => {
                    // slow writes (the Batch API request among them: its table is none) overrun the deadline
                    s.sim
                        .inject(Fault::new(FaultKind::Latency { ms: 4_000 }).times(3).on_method("POST"));
                    invocation(short, None, false).await;
                }
                6 => {
                    tokio::join!(invocation(short, Some(early), false), invocation(normal, None, false));
                    count(&|c| c.overlapping_flushes += 1);
                }
                7 => {
                    let messages = batch.receive(10, Duration::ZERO).await.expect("receive");
                    let n = put_copies(&batch, &messages).await;
                    count(&|c| c.batch_copies += n);
                    invocation(normal, None, false).await;
                }
                _ => invocation(normal, None, false).await,
            }
        }
    };

    let (mut accepted, ..) = tokio::join!(
        sender,
        faults,
        poller(1, "realtime"),
        poller(2, "realtime"),
        poller(3, "critical"),
        flusher
    );
    s.sim.clear_faults();
    let chaos_took = started.elapsed();

    // Drain: deliver and flush as the mappings and the schedule would, until every alert is final.
    let drain_deadline = Instant::now() + settings.drain;
    let mut is_drained = drain(&s, &accepted, drain_deadline).await;

    // Then one flush ended for certain right after its Batch API request, while it uploads the member list
    // of an aggregate (low alerts of one employee, one more than its description shows in full, so it has a
    // member list): the records exist, the ledger and the queue do not say so yet. The next flushes must
    // finish it.
    let low = templates
        .iter()
        .find(|t| t["severity"] == "low")
        .expect("a low-severity sample");
    for n in settings.alerts..settings.alerts + LATE_GROUP {
        let mut alert = low.clone();
        let id = format!("{prefix}{n}");
        alert["alert_id"] = json!(id);
        // an employee without a thread: the flush batches them (it would hand a thread's alerts to its record)
        alert["employee"]["id"] = json!("E-LATE-GROUP");
        let reply = s.post(&serde_json::to_vec(&alert).unwrap(), &format!("wh-{id}")).await;
        assert_eq!(reply.status, 202, "{:?}", reply.body);
        accepted.insert(id);
    }
    s.sim
        .inject(Fault::new(FaultKind::Latency { ms: 3_000 }).on_table("sys_attachment"));
    let (ended, sent) = flush_invocation(&s, Duration::from_secs(8), Some(Duration::from_millis(200)), true).await;
    assert!(ended && sent, "the flush was ended after its Batch API request");
    count(&|c| {
        c.flushes += 1;
        c.ended_flushes += 1;
        c.ended_after_batch_call += 1;
    });
    // its members' batch messages come back after the batch queue's visibility timeout (60 s here); then a
    // flush resumes the sealed aggregate
    is_drained &= drain(&s, &accepted, Instant::now() + settings.drain).await;
    // a create still to commit late would show now
    tokio::time::sleep(Duration::from_millis(MAX_LATE_COMMIT_MS + 1_000)).await;
    let took = started.elapsed();

    // What ServiceNow holds, what the ledger says, what was dead-lettered and notified.
    let records = listings(&s.sim, &prefix);
    let dead_letters = s
        .drain(&s.dlq, Duration::from_secs(1))
        .await
        .into_iter()
        .map(|m| m.body);
    let notified: BTreeSet<String> = s
        .notices(Duration::from_secs(2))
        .await
        .into_iter()
        .map(|n| n.notice.alert_id)
        .collect();
    let stores = Stores::collect(s.ports.ledger.as_ref(), &accepted, dead_letters, notified).await;
    let verdict = Verdict::judge(&accepted, &records, &stores);
    println!(
        "lambda fault campaign: seed {}; {} accepted of {}; {:?}; chaos {} s, total {} s, drained: {is_drained}",
        settings.seed,
        accepted.len(),
        settings.alerts + LATE_GROUP,
        chaos.lock().unwrap(),
        chaos_took.as_secs(),
        took.as_secs(),
    );
    for d in &stores.dead_letter_reasons {
        println!("  DEAD-LETTERED {d}");
    }
    let notes = thread_notes(&records);
    println!("lambda campaign: {notes} alerts delivered as work notes on their thread's record");
    println!("{}", verdict.report(settings.seed));
    verdict.assert_holds(settings.seed, is_drained, settings.drain);
    assert!(
        notes > 0,
        "no alert became a thread note: the campaign did not exercise threads"
    );
}
