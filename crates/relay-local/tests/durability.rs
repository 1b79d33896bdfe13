//! Crash safety: a child process writes to the store and is killed with SIGKILL mid-loop; everything it
//! acknowledged before the kill must be in the file after reopening, once, and the file must be intact.
//!
//! The child is this test binary itself, running the ignored test `crash_child_writes_until_killed` with
//! `RELAY_LOCAL_CRASH_DB` set.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use relay_local::LocalStore;
use relay_ports::{AlertQueue, Claim, Clock, DeliveryState, Ledger, LedgerEntry, RecordRef, SystemClock};

const DB_VAR: &str = "RELAY_LOCAL_CRASH_DB";
const ROUND_VAR: &str = "RELAY_LOCAL_CRASH_ROUND";

fn entry(alert_id: &str, now: i64) -> LedgerEntry {
    LedgerEntry {
        alert_id: alert_id.into(),
        webhook_id: None,
        state: DeliveryState::Accepted,
        attempts: 0,
        first_received_at_ms: now,
        updated_at_ms: now,
        lease_until_ms: None,
        needs_lookup: false,
        rule: "r".into(),
        record_type: "incident".into(),
        table: "incident".into(),
        severity: "critical".into(),
        delivery: "realtime".into(),
        correlation_id: format!("relay:{alert_id}"),
        config_hash: "sha256:x".into(),
        record: None,
        last_error_class: None,
        last_error: None,
        expires_at_s: now / 1000 + 86_400,
        claim_token: 0,
        no_create_before_ms: None,
        not_before_ms: None,
        aggregate: None,
        plan: None,
    }
}

/// The child: four ingest loops (accept → send → mark_queued, then print `ACK id`) and two delivery loops
/// (receive → claim → complete → delete, then print `DONE id`), forever, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child half of kill_9_mid_write_loses_nothing_acknowledged; runs only when spawned by it"]
async fn crash_child_writes_until_killed() {
    let path = std::env::var(DB_VAR).expect("spawned by the durability test with RELAY_LOCAL_CRASH_DB set");
    let round = std::env::var(ROUND_VAR).unwrap_or_default();
    let store = LocalStore::open(&path).expect("child opens the store");
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (ledger, queue, round) = (store.ledger(), store.queue("realtime"), round.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("r{round}-w{w}-{i}");
                let now = SystemClock.now_ms();
                ledger.accept(&entry(&id, now)).await.expect("accept");
                queue.send(&id, Duration::ZERO).await.expect("send");
                ledger.mark_queued(&id, now).await.expect("mark_queued");
                println!("ACK {id}");
            }
        }));
    }
    for _ in 0..2 {
        let (ledger, queue) = (store.ledger(), store.queue("realtime"));
        tasks.push(tokio::spawn(async move {
            loop {
                for m in queue.receive(5, Duration::from_millis(50)).await.expect("receive") {
                    let now = SystemClock.now_ms();
                    match ledger.claim(&m.body, now, 60_000).await.expect("claim") {
                        Claim::Claimed(held) => {
                            let record = RecordRef {
                                table: "incident".into(),
                                sys_id: format!("sys-{}", m.body),
                                number: None,
                                link: String::new(),
                                note: false,
                            };
                            ledger
                                .complete(&m.body, held.claim_token, &record, now)
                                .await
                                .expect("complete");
                            queue.delete(&m.receipt).await.expect("delete");
                            println!("DONE {}", m.body);
                        }
                        other => panic!("unexpected claim result {other:?}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Spawn the child on `path`, wait until it acknowledged `min_acks` ingests and `min_done` deliveries,
/// SIGKILL it, and return what it acknowledged.
fn run_child_and_kill(
    path: &std::path::Path,
    round: u32,
    min_acks: usize,
    min_done: usize,
) -> (Vec<String>, Vec<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash_child_writes_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DB_VAR, path)
        .env(ROUND_VAR, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (mut acks, mut done) = (Vec::new(), Vec::new());
    for line in stdout.lines() {
        let line = line.expect("read child output");
        if let Some(id) = line.strip_prefix("ACK ") {
            acks.push(id.to_string());
        } else if let Some(id) = line.strip_prefix("DONE ") {
            done.push(id.to_string());
        }
        if acks.len() >= min_acks && done.len() >= min_done {
            break;
        }
    }
    child.kill().expect("SIGKILL the child"); // std's kill is SIGKILL on Unix: no clean shutdown
    child.wait().unwrap();
    assert!(
        acks.len() >= min_acks && done.len() >= min_done,
        "the child stopped early: {} acks",
        acks.len()
    );
    (acks, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_write_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let (mut acked, mut delivered) = (BTreeSet::new(), BTreeSet::new());
    for round in 0..3 {
        let (acks, done) = run_child_and_kill(&path, round, 400, 50);
        acked.extend(acks);
        delivered.extend(done);
    }

    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok", "the file must be intact after the kills");
    }

    let store = LocalStore::open(&path).expect("reopen after the kills");
    let ledger = store.ledger();
    let queue = store.queue("realtime");
    let mut on_queue: BTreeMap<String, usize> = BTreeMap::new();
    let messages = queue.list(1_000_000).await.unwrap();
    for m in &messages {
        *on_queue.entry(m.body.clone()).or_default() += 1;
    }
    assert!(on_queue.values().all(|n| *n == 1), "a message was stored twice");
    for id in &acked {
        let e = ledger
            .get(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged alert {id} was lost"));
        if delivered.contains(id) {
            assert_eq!(e.state, DeliveryState::Completed, "{id} was completed before the kill");
            assert_eq!(e.attempts, 1, "{id} was claimed once");
            assert_eq!(e.record.unwrap().sys_id, format!("sys-{id}"));
            assert!(
                !on_queue.contains_key(id),
                "{id} was deleted from the queue before the kill"
            );
        } else {
            assert_ne!(
                e.state,
                DeliveryState::Accepted,
                "{id} was marked queued before the kill"
            );
            // Either still on the queue, or delivered by a child that was killed before printing DONE.
            assert!(
                on_queue.contains_key(id)
                    || e.state == DeliveryState::Completed
                    || e.state == DeliveryState::InProgress,
                "acknowledged message {id} is neither on the queue nor delivered"
            );
        }
    }
    // Every completed entry's message is gone or will be re-received and acked without a second record:
    // claim of a completed alert answers Completed.
    for m in messages.iter().take(20) {
        if let Some(e) = ledger.get(&m.body).await.unwrap()
            && e.state == DeliveryState::Completed
        {
            assert!(matches!(
                ledger.claim(&m.body, SystemClock.now_ms(), 1000).await.unwrap(),
                Claim::Completed(_)
            ));
        }
    }
}
