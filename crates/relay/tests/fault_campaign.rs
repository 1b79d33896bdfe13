//! The fault campaign: exactly once under adversarial timing, black-box against the real `relay` binary.
//!
//! The ServiceNow simulator runs in this test process and outlives every relay process; `relay serve` is
//! pointed at it as an external instance (loopback HTTP) with a short batch window, so batches are flushed
//! all through the campaign. A driver sends signed alerts of every severity (critical/high realtime,
//! medium/low batched, many per employee + alert type so aggregates form) while, at random points, it
//! kills the relay (SIGKILL and SIGTERM, some of them while a flush has created its records and not yet
//! settled them), injects every simulator fault class, and restarts the relay on the same SQLite file. A
//! webhook not answered 202 is sent again, as a monitoring product retries; a few answered ones are sent
//! again too (at-least-once senders). Only alerts answered 202 count as accepted.
//!
//! The relay runs with threads on, so repeat realtime alerts of one employee and type become work notes on
//! their thread's record. At the end (faults cleared, the relay running until its queues are drained) every
//! accepted alert must be in exactly one ServiceNow record that lists it — a single alert's record by its
//! correlation key, a thread's later alerts by the keys of its work notes (each noted once), an aggregate
//! by the alert ids in its description and its attached member list — or in the dead-letter
//! queue with a failure notice; no record may list an alert twice or repeat another record's key. The
//! test prints `N passed, L lost, D duplicated` and asserts L == 0 and D == 0.
//!
//! Reproducible: the seed is printed; `RELAY_CAMPAIGN_SEED` sets it. `RELAY_CAMPAIGN_SECONDS` (chaos phase,
//! default 40), `RELAY_CAMPAIGN_ALERTS` (default 500) and `RELAY_CAMPAIGN_DRAIN_SECONDS` (default 120) make
//! a longer run (docs/local-mode.md, "Fault campaign").

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use relay_e2e::campaign::{
    CampaignSettings, FAULT_CLASSES, MAX_LATE_COMMIT_MS, Stores, Verdict, listings, random_fault, templates,
    thread_notes, threaded_config,
};
use relay_local::LocalStore;
use relay_pipeline::WebhookSecrets;
use relay_pipeline::callback::receiver::{CALLBACK_SECRET, Receiver};
use relay_ports::{AlertQueue, DeliveryState, Ledger};
use serde_json::json;
use servicenow_sim::{Fault, FaultKind, RunningSim, SimConfig, Simulator};

const BIN: &str = env!("CARGO_BIN_EXE_relay");

/// The batch window (and flush period) of the relay under test.
const WINDOW_MS: u64 = 3_000;

// --- the relay process ------------------------------------------------------------------------------------

struct Relay {
    child: Child,
    url: String,
}

fn start_relay(dir: &Path, args: &[String]) -> Relay {
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .env("RELAY_LOG", "error")
        .env_remove("RELAY_WEBHOOK_SECRET")
        .env_remove("RELAY_WEBHOOK_SECRET_FILE")
        .env_remove("SERVICENOW_INSTANCE_URL")
        .env_remove("RELAY_CONFIG_PATH")
        .env_remove("RELAY_DB")
        .args(["serve", "--port", "0", "--db"])
        .arg(dir.join("relay.db"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("relay serve starts");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut url = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening") {
                url = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .map(str::to_owned);
            }
            if line == "ready" {
                let _ = tx.send(url.take());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Some(url)) => Relay { child, url },
        _ => {
            let _ = child.kill();
            panic!("relay serve did not become ready");
        }
    }
}

impl Relay {
    fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for the graceful shutdown; true when it exited 0 in time.
    fn sigterm(mut self, patience: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- the sender -------------------------------------------------------------------------------------------

/// What the senders share: where the relay listens now (None while it is down), and what it accepted.
#[derive(Default)]
struct Senders {
    url: Mutex<Option<String>>,
    accepted: Mutex<BTreeSet<String>>,
    /// Webhooks sent again after a non-202 answer or no answer.
    resent: AtomicUsize,
    /// Webhooks sent again although answered 202 (an at-least-once sender).
    repeated: AtomicUsize,
    /// Alerts never answered 202 before the senders gave up.
    abandoned: Mutex<Vec<String>>,
    /// Lifecycle events answered 202: event id → the alert it is about.
    events: Mutex<BTreeMap<String, String>>,
}

async fn post(http: &reqwest::Client, url: &str, keys: &WebhookSecrets, body: &[u8], webhook_id: &str) -> Option<u16> {
    post_answer(http, url, keys, body, webhook_id)
        .await
        .map(|(status, _)| status)
}

/// POST a signed body; the status and the JSON answer.
async fn post_answer(
    http: &reqwest::Client,
    url: &str,
    keys: &WebhookSecrets,
    body: &[u8],
    webhook_id: &str,
) -> Option<(u16, serde_json::Value)> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let r = http
        .post(format!("{url}/v1/alerts"))
        .header("content-type", "application/json")
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", keys.sign(webhook_id, ts, body))
        .body(body.to_vec())
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.unwrap_or_default()))
}

/// Send a lifecycle event for `alert_id` until it is answered 202 (a 404 while its alert is not accepted
/// yet, after a kill, is sent again), or `give_up` passes; record its event id.
async fn send_event_until_accepted(
    shared: Arc<Senders>,
    keys: Arc<WebhookSecrets>,
    alert_id: String,
    kind: &'static str,
    give_up: Instant,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let body = serde_json::to_vec(&json!({"schema_version": "2", "event": kind, "alert_id": alert_id,
        "resolution": {"reason": "campaign", "note": "handled"}}))
    .unwrap();
    let webhook_id = format!("msg-{alert_id}-{kind}");
    while Instant::now() < give_up {
        let url = shared.url.lock().unwrap().clone();
        if let Some(url) = url
            && let Some((202, reply)) = post_answer(&http, &url, &keys, &body, &webhook_id).await
            && let Some(event_id) = reply["event_id"].as_str()
        {
            shared.events.lock().unwrap().insert(event_id.to_string(), alert_id);
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Send one alert until it is answered 202 (or `give_up` passes); maybe send it once more afterwards.
async fn send_until_accepted(
    shared: Arc<Senders>,
    keys: Arc<WebhookSecrets>,
    id: String,
    body: Vec<u8>,
    repeat: bool,
    give_up: Instant,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let webhook_id = format!("msg-{id}");
    let mut tries = 0;
    loop {
        let url = shared.url.lock().unwrap().clone();
        if let Some(url) = url {
            tries += 1;
            if tries > 1 {
                shared.resent.fetch_add(1, Ordering::Relaxed);
            }
            if post(&http, &url, &keys, &body, &webhook_id).await == Some(202) {
                shared.accepted.lock().unwrap().insert(id.clone());
                break;
            }
        }
        if Instant::now() > give_up {
            shared.abandoned.lock().unwrap().push(id);
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if repeat {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let url = shared.url.lock().unwrap().clone();
        if let Some(url) = url {
            shared.repeated.fetch_add(1, Ordering::Relaxed);
            let _ = post(&http, &url, &keys, &body, &webhook_id).await;
        }
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Wait until the simulator executes a Batch API item from now on (a flush is creating its records), for
/// at most `patience`. (The simulator's clock is the system's: the campaign never advances it.)
async fn wait_for_batch_items(sim: &RunningSim, patience: Duration) -> bool {
    let since = unix_ms();
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if sim.requests().iter().rev().any(|r| r.via_batch && r.at >= since) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[derive(Default, Debug)]
struct Chaos {
    sigkill: usize,
    sigterm: usize,
    /// Kills while a flush had created its records and was uploading or settling them.
    mid_flush: usize,
    /// Kills shortly after a flush tick (draining, claiming, calling or settling).
    at_flush_tick: usize,
    /// SIGTERMs not finished within the patience (then killed).
    slow_stops: usize,
    faults: BTreeMap<&'static str, u32>,
}

// --- reading back what happened ---------------------------------------------------------------------------

/// Whether the relay has nothing left to do for `accepted`: both queues empty and every alert final.
async fn drained(
    store: &LocalStore,
    accepted: &BTreeSet<String>,
    events: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let ledger = store.ledger();
    for id in accepted {
        match ledger.get(id).await.map_err(|e| e.to_string())? {
            Some(e) if matches!(e.state, DeliveryState::Completed | DeliveryState::Failed) => {}
            _ => return Ok(false),
        }
    }
    // an event is done once applied; one whose alert was given up waits for a replay (not drained here)
    for (event, alert) in events {
        let alert_failed =
            matches!(ledger.get(alert).await.map_err(|e| e.to_string())?, Some(e) if e.state == DeliveryState::Failed);
        match ledger.get(event).await.map_err(|e| e.to_string())? {
            Some(e) if e.state == DeliveryState::Completed => {}
            _ if alert_failed => {}
            _ => return Ok(false),
        }
    }
    if !store
        .queue("batch")
        .list(1)
        .await
        .map_err(|e| e.to_string())?
        .is_empty()
    {
        return Ok(false);
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_campaign_every_accepted_alert_is_in_exactly_one_record_or_dead_lettered() {
    let settings = CampaignSettings::from_env(500, Duration::from_secs(40));
    println!("{}", settings.describe("fault campaign"));
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let prefix = format!("fc{:x}-", settings.seed & 0xffff_ffff);
    let dir = tempfile::tempdir().unwrap();
    // a short request log: the driver scans it while waiting for a flush
    let sim = Simulator::start(SimConfig {
        request_log_capacity: 2_000,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let sn = dir.path().join("servicenow.json");
    std::fs::write(
        &sn,
        json!({"instance_url": sim.base_url(), "auth": "basic", "username": "relay", "password": "relay-password"})
            .to_string(),
    )
    .unwrap();
    // threads on: repeat realtime alerts of one employee and type become work notes, under the same faults
    let config = dir.path().join("relay.yaml");
    std::fs::write(&config, threaded_config()).unwrap();
    // callbacks on, to a receiver that refuses one request in eight (the relay retries them), and the sync
    let script: Vec<u16> = (0..5_000)
        .map(|_| if rng.random_ratio(1, 8) { 503 } else { 200 })
        .collect();
    let receiver = Receiver::start(&script).await;
    let callback_secret = dir.path().join("callback-secret");
    std::fs::write(&callback_secret, CALLBACK_SECRET).unwrap();
    let args: Vec<String> = [
        "--callback-url",
        &receiver.url,
        "--callback-secret-file",
        callback_secret.to_str().unwrap(),
        "--sync-interval-seconds",
        "2",
        "--config",
        config.to_str().unwrap(),
        "--servicenow-file",
        sn.to_str().unwrap(),
        "--servicenow-timeout-seconds",
        "2",
        "--batch-window-seconds",
        &(WINDOW_MS / 1000).to_string(),
        "--workers",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let relay = start_relay(dir.path(), &args);
    let mut ready_at = Instant::now();
    let keys = Arc::new(
        WebhookSecrets::from_document(&std::fs::read_to_string(dir.path().join("webhook-secret.json")).unwrap())
            .unwrap(),
    );
    let shared = Arc::new(Senders::default());
    *shared.url.lock().unwrap() = Some(relay.url.clone());
    let mut relay = Some(relay);

    // The alerts: every type and severity, several per employee + type in each window (aggregates).
    let templates = templates();
    let started = Instant::now();
    let chaos_end = started + settings.chaos;
    let give_up = chaos_end + Duration::from_secs(60);
    let plan: Vec<(String, Vec<u8>, Duration, bool)> = (0..settings.alerts)
        .map(|n| {
            let mut alert = templates[rng.random_range(0..templates.len())].clone();
            let id = format!("{prefix}{n}");
            alert["alert_id"] = json!(id);
            let at = settings.chaos.mul_f64(n as f64 / settings.alerts.max(1) as f64);
            (id, serde_json::to_vec(&alert).unwrap(), at, rng.random_bool(0.05))
        })
        .collect();
    // lifecycle events for one alert in five, a few seconds after it, under the same kills and faults
    let mut events: Vec<(String, &'static str, Duration)> = Vec::new();
    for (id, _, at, _) in &plan {
        if rng.random_ratio(1, 5) {
            let kind = ["updated", "resolved", "dismissed"][rng.random_range(0..3)];
            events.push((
                id.clone(),
                kind,
                *at + Duration::from_millis(rng.random_range(2_000..=6_000)),
            ));
        }
    }
    let sending_events = {
        let (shared, keys) = (shared.clone(), keys.clone());
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for (id, kind, at) in events {
                tokio::time::sleep_until((started + at).into()).await;
                tasks.push(tokio::spawn(send_event_until_accepted(
                    shared.clone(),
                    keys.clone(),
                    id,
                    kind,
                    give_up,
                )));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };
    let sending = {
        let (shared, keys) = (shared.clone(), keys.clone());
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for (id, body, at, repeat) in plan {
                tokio::time::sleep_until((started + at).into()).await;
                tasks.push(tokio::spawn(send_until_accepted(
                    shared.clone(),
                    keys.clone(),
                    id,
                    body,
                    repeat,
                    give_up,
                )));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };

    // The chaos: faults and kills at random points until the end of the campaign.
    let mut chaos = Chaos::default();
    let patience = Duration::from_secs(90);
    // every fault class once in a shuffled order, then classes at random
    let mut classes: Vec<usize> = (0..FAULT_CLASSES).collect();
    classes.shuffle(&mut rng);
    while Instant::now() < chaos_end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..=1_500))).await;
        let action = rng.random_range(0..10);
        if action < 6 {
            let class = classes.pop().unwrap_or_else(|| rng.random_range(0..FAULT_CLASSES));
            let fault = random_fault(&mut rng, class);
            *chaos.faults.entry(fault.kind.name()).or_default() += fault.count;
            sim.inject(fault);
            continue;
        }
        if action == 9 {
            // hold the flush in its member-list upload, after the Batch API created the records
            sim.inject(Fault::new(FaultKind::Latency { ms: 2_500 }).on_table("sys_attachment"));
            if !wait_for_batch_items(&sim, Duration::from_secs(8)).await {
                continue;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..=400))).await;
            chaos.mid_flush += 1;
        } else if action == 8 {
            // at a flush tick of this process (every batch window from its start), with slow calls: the
            // kill lands while the flush drains, claims, calls the Batch API or settles
            sim.inject(Fault::new(FaultKind::Latency { ms: 1_000 }).times(3).on_method("POST"));
            let since = ready_at.elapsed().as_millis() as u64;
            let next_tick = (since / WINDOW_MS + 1) * WINDOW_MS;
            tokio::time::sleep(Duration::from_millis(next_tick - since + rng.random_range(0..=1_200))).await;
            chaos.at_flush_tick += 1;
        }
        *shared.url.lock().unwrap() = None;
        let r = relay.take().unwrap();
        if rng.random_bool(0.6) {
            chaos.sigkill += 1;
            r.sigkill();
        } else {
            chaos.sigterm += 1;
            if !r.sigterm(patience) {
                chaos.slow_stops += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..=1_500))).await;
        let r = start_relay(dir.path(), &args);
        ready_at = Instant::now();
        *shared.url.lock().unwrap() = Some(r.url.clone());
        relay = Some(r);
    }
    sim.clear_faults();
    sending.await.unwrap();
    sending_events.await.unwrap();
    let chaos_took = started.elapsed();

    // Drain: the relay runs until both queues are empty and every accepted alert is final.
    let accepted = shared.accepted.lock().unwrap().clone();
    let events = shared.events.lock().unwrap().clone();
    let store = LocalStore::open(dir.path().join("relay.db")).unwrap();
    let drain_deadline = Instant::now() + settings.drain;
    let mut is_drained = false;
    while Instant::now() < drain_deadline {
        if drained(&store, &accepted, &events).await.unwrap_or(false) {
            is_drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !is_drained {
        // name what is left, for the report
        let ledger = store.ledger();
        for key in accepted.iter().chain(events.keys()).take(100_000) {
            if let Ok(Some(e)) = ledger.get(key).await
                && !matches!(e.state, DeliveryState::Completed | DeliveryState::Failed)
            {
                println!(
                    "  NOT DRAINED {key}: {} after {} attempts, last error ({}) {}",
                    e.state.as_str(),
                    e.attempts,
                    e.last_error_class.as_deref().unwrap_or("-"),
                    e.last_error.as_deref().unwrap_or("-")
                );
            }
        }
    }
    // a create that was still to commit late would show now
    tokio::time::sleep(Duration::from_millis(MAX_LATE_COMMIT_MS + 1_000)).await;
    // and the callbacks still on their way are delivered
    let realtime = store.queue("realtime");
    let callbacks_deadline = Instant::now() + Duration::from_secs(60);
    while realtime.depth().await.unwrap_or(1) > 0 && Instant::now() < callbacks_deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stopped_cleanly = relay.take().unwrap().sigterm(patience);
    let took = started.elapsed();

    // What ServiceNow holds, what the ledger says, what was dead-lettered and notified.
    let records = listings(&sim, &prefix);
    let dead_letters = store
        .queue("dlq")
        .list(100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body);
    let notified: BTreeSet<String> = store
        .recent_notifications(100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.notice.alert_id)
        .collect();
    let stores = Stores::collect(&store.ledger(), &accepted, dead_letters, notified).await;
    let verdict = Verdict::judge(&accepted, &records, &stores);

    println!(
        "fault campaign: seed {}; {} accepted of {} sent ({} re-sent after no 202, {} repeated after a 202, {} abandoned); \
         kills: {} SIGKILL, {} SIGTERM ({} slow), {} mid-flush, {} at a flush tick; faults injected: {:?}; \
         chaos {} s, total {} s, drained: {}, last stop clean: {}",
        settings.seed,
        accepted.len(),
        settings.alerts,
        shared.resent.load(Ordering::Relaxed),
        shared.repeated.load(Ordering::Relaxed),
        shared.abandoned.lock().unwrap().len(),
        chaos.sigkill,
        chaos.sigterm,
        chaos.slow_stops,
        chaos.mid_flush,
        chaos.at_flush_tick,
        chaos.faults,
        chaos_took.as_secs(),
        took.as_secs(),
        is_drained,
        stopped_cleanly
    );
    for d in &stores.dead_letter_reasons {
        println!("  DEAD-LETTERED {d}");
    }
    // threads were exercised: some accepted alerts are work notes on their thread's record
    let notes = thread_notes(&records);
    println!("fault campaign: {notes} alerts delivered as work notes on their thread's record");
    println!("{}", verdict.report(settings.seed));
    verdict.assert_holds(settings.seed, is_drained, settings.drain);

    // Lifecycle events: each one whose alert has its record is applied, and noted on it exactly once (a
    // kill or a lost answer never writes its note twice, never loses it).
    let journal = sim.records("sys_journal_field");
    let ledger = store.ledger();
    let mut applied = 0;
    let mut wrong = Vec::new();
    for (event, alert) in &events {
        let alert_entry = ledger.get(alert).await.unwrap();
        let Some(record) = alert_entry.as_ref().and_then(|e| e.record.clone()) else {
            continue;
        };
        let state = ledger.get(event).await.unwrap().map(|e| e.state);
        let notes = journal
            .iter()
            .filter(|j| j["element_id"] == record.sys_id.as_str())
            .filter(|j| relay_pipeline::lifecycle::is_marked(j["value"].as_str().unwrap_or_default(), event))
            .count();
        if state == Some(DeliveryState::Completed) && notes == 1 {
            applied += 1;
        } else {
            wrong.push(format!("{event} (alert {alert}): {state:?}, {notes} notes"));
        }
    }
    println!(
        "fault campaign: lifecycle events: {} accepted, {applied} applied and noted once",
        events.len()
    );
    assert!(
        wrong.is_empty(),
        "lifecycle events not applied exactly once: {wrong:#?}"
    );
    assert!(
        applied > 0,
        "no lifecycle event was applied: the campaign did not exercise them"
    );

    // Callbacks: each record the relay made was reported created exactly once (one webhook id, however
    // often a kill made it arrive), none that it did not make, each thread note once; all signed.
    receiver.verify_all();
    let got = receiver.received();
    let mut created: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut noted: BTreeSet<String> = BTreeSet::new();
    for c in &got {
        let v = c.json();
        match v["type"].as_str() {
            Some("record.created") => {
                created
                    .entry(v["data"]["record"]["sys_id"].as_str().unwrap_or_default().to_string())
                    .or_default()
                    .insert(c.id.clone());
            }
            Some("record.updated") if v["data"]["change"] == "thread_note" => {
                for a in v["data"]["alert_ids"].as_array().into_iter().flatten() {
                    noted.insert(a.as_str().unwrap_or_default().to_string());
                }
            }
            _ => {}
        }
    }
    // an Event Management event's create answers no sys_id: those are not followed here
    created.remove("");
    let made: BTreeSet<&str> = records
        .iter()
        .filter(|r| r.table != "em_event")
        .map(|r| r.sys_id.as_str())
        .collect();
    let unreported: Vec<&&str> = made.iter().filter(|s| !created.contains_key(**s)).collect();
    let twice: Vec<(&String, &BTreeSet<String>)> = created.iter().filter(|(_, ids)| ids.len() > 1).collect();
    let unknown: Vec<&String> = created.keys().filter(|s| !made.contains(s.as_str())).collect();
    println!(
        "fault campaign: callbacks: {} requests, {} records reported created, {} alerts reported as thread notes",
        got.len(),
        created.len(),
        noted.len()
    );
    assert!(
        unreported.is_empty() && twice.is_empty() && unknown.is_empty(),
        "record.created: {} records not reported {unreported:?}, {} under two ids {twice:?}, {} not made {unknown:?}",
        unreported.len(),
        twice.len(),
        unknown.len()
    );
    assert_eq!(
        noted.len(),
        notes,
        "each alert noted on its thread's record is reported"
    );
    assert!(
        notes > 0,
        "no alert became a thread note: the campaign did not exercise threads"
    );
    sim.shutdown().await;
}
