//! Queue semantics beyond the shared suite: visibility timeouts on a hand-moved clock, stale receipts,
//! limits, operator helpers (list / move_to / remove), wake-ups, two stores on one file.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use relay_local::{LocalStore, StoreOptions};
use relay_ports::{AlertQueue, Clock, ManualClock, PortError};
use tempfile::TempDir;

const T0: i64 = 1_750_000_000_000;

fn store_with_clock() -> (TempDir, LocalStore, Arc<ManualClock>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(T0));
    let options = StoreOptions {
        clock: Arc::clone(&clock) as Arc<dyn Clock>,
        ..StoreOptions::default()
    };
    let store = LocalStore::open_with(dir.path().join("q.db"), options).expect("open");
    (dir, store, clock)
}

#[tokio::test]
async fn a_received_message_reappears_after_the_visibility_timeout_unless_deleted() {
    let (_dir, store, clock) = store_with_clock();
    let q = store.queue("realtime").with_visibility_timeout(Duration::from_secs(30));
    let id = q.send("a", Duration::ZERO).await.unwrap();
    let first = q.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 1);
    clock.advance(Duration::from_secs(29));
    assert!(
        q.receive(10, Duration::ZERO).await.unwrap().is_empty(),
        "invisible before the timeout"
    );
    clock.advance(Duration::from_secs(2));
    let again = q.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(again.len(), 1, "visible again after the timeout");
    assert_eq!(again[0].message_id, id);
    assert_ne!(again[0].receipt, first[0].receipt, "every receive issues a new receipt");
    assert_eq!(q.list(10).await.unwrap()[0].receive_count, 2);
}

#[tokio::test]
async fn a_stale_receipt_neither_deletes_nor_delays_the_new_lease() {
    let (_dir, store, clock) = store_with_clock();
    let q = store.queue("realtime").with_visibility_timeout(Duration::from_secs(10));
    q.send("a", Duration::ZERO).await.unwrap();
    let old = q.receive(1, Duration::ZERO).await.unwrap().remove(0);
    clock.advance(Duration::from_secs(11));
    let new = q.receive(1, Duration::ZERO).await.unwrap().remove(0);

    match q.delete(&old.receipt).await {
        Err(PortError::NotFound(m)) => assert!(m.contains("stale"), "{m}"),
        other => panic!("stale delete must be NotFound, got {other:?}"),
    }
    assert!(matches!(
        q.change_visibility(&old.receipt, Duration::ZERO).await,
        Err(PortError::NotFound(_))
    ));
    assert_eq!(
        q.depth().await.unwrap(),
        1,
        "the stale receipt must not delete the message"
    );
    assert!(
        q.receive(1, Duration::ZERO).await.unwrap().is_empty(),
        "the new lease still holds"
    );
    q.delete(&new.receipt).await.expect("the current receipt deletes");
    assert_eq!(q.depth().await.unwrap(), 0);
    assert!(
        matches!(q.delete(&new.receipt).await, Err(PortError::NotFound(_))),
        "second delete is an error"
    );
}

#[tokio::test]
async fn a_receipt_of_one_queue_does_nothing_on_another() {
    let (_dir, store, _clock) = store_with_clock();
    let realtime = store.queue("realtime");
    let batch = store.queue("batch");
    realtime.send("a", Duration::ZERO).await.unwrap();
    let m = realtime.receive(1, Duration::ZERO).await.unwrap().remove(0);
    assert!(matches!(batch.delete(&m.receipt).await, Err(PortError::NotFound(_))));
    assert_eq!(realtime.depth().await.unwrap(), 1);
    assert_eq!(batch.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn delays_and_retry_after_follow_the_clock() {
    let (_dir, store, clock) = store_with_clock();
    let q = store.queue("realtime");
    q.send("later", Duration::from_secs(60)).await.unwrap();
    assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(q.list(10).await.unwrap()[0].visible_at_ms, T0 + 60_000);
    clock.advance(Duration::from_secs(60));
    let m = q.receive(10, Duration::ZERO).await.unwrap().remove(0);
    q.change_visibility(&m.receipt, Duration::from_secs(3600))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(3599));
    assert!(
        q.receive(10, Duration::ZERO).await.unwrap().is_empty(),
        "retry_after(1 h) hides it for an hour"
    );
    clock.advance(Duration::from_secs(1));
    let again = q.receive(10, Duration::ZERO).await.unwrap().remove(0);
    assert_eq!(again.sent_at_ms, T0, "sent_at_ms is the send time");
}

#[tokio::test]
async fn out_of_range_requests_are_rejected_with_the_limit_named() {
    let (_dir, store, _clock) = store_with_clock();
    let q = store.queue("realtime");
    match q.send("x", Duration::from_secs(901)).await {
        Err(PortError::Rejected(m)) => assert!(m.contains("send delay"), "{m}"),
        other => panic!("{other:?}"),
    }
    let big = "x".repeat(256 * 1024 + 1);
    match q.send(&big, Duration::ZERO).await {
        Err(PortError::Rejected(m)) => assert!(m.contains("262145 bytes"), "{m}"),
        other => panic!("{other:?}"),
    }
    for max in [0, 11] {
        match q.receive(max, Duration::ZERO).await {
            Err(PortError::Rejected(m)) => assert!(m.contains("receive max"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    q.send("x", Duration::ZERO).await.unwrap();
    let m = q.receive(1, Duration::ZERO).await.unwrap().remove(0);
    match q
        .change_visibility(&m.receipt, Duration::from_secs(12 * 3600 + 1))
        .await
    {
        Err(PortError::Rejected(m)) => assert!(m.contains("change_visibility delay"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(q.delete("garbage").await, Err(PortError::NotFound(_))));
    assert_eq!(q.depth().await.unwrap(), 1, "nothing rejected was written");
}

#[tokio::test]
async fn receive_returns_oldest_first_and_at_most_max() {
    let (_dir, store, _clock) = store_with_clock();
    let q = store.queue("batch");
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(q.send(&format!("m{i}"), Duration::ZERO).await.unwrap());
    }
    let mut got = Vec::new();
    loop {
        let batch = q.receive(10, Duration::ZERO).await.unwrap();
        assert!(batch.len() <= 10);
        if batch.is_empty() {
            break;
        }
        got.extend(batch.into_iter().map(|m| m.message_id));
    }
    assert_eq!(got, ids, "every message once, in send order");
}

#[tokio::test]
async fn list_reads_without_receiving_and_move_to_replays_atomically() {
    let (_dir, store, _clock) = store_with_clock();
    let dlq = store.queue("dlq");
    let realtime = store.queue("realtime");
    for i in 0..5 {
        dlq.send(&format!("dead-{i}"), Duration::ZERO).await.unwrap();
    }
    let listed = dlq.list(3).await.unwrap();
    assert_eq!(
        listed.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["dead-0", "dead-1", "dead-2"]
    );
    let rest = dlq.list_after(Some(&listed[2].message_id), 10).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert!(listed.iter().all(|m| m.receive_count == 0), "list must not receive");
    assert_eq!(
        dlq.receive(10, Duration::ZERO).await.unwrap().len(),
        5,
        "listed messages stay visible"
    );

    let moved = dlq
        .move_to(&listed[0].message_id, &realtime)
        .await
        .unwrap()
        .expect("moved");
    assert_ne!(moved, listed[0].message_id);
    assert_eq!(
        dlq.move_to(&listed[0].message_id, &realtime).await.unwrap(),
        None,
        "already moved"
    );
    let m = realtime.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!((m.len(), m[0].body.as_str()), (1, "dead-0"));
    assert_eq!(dlq.depth().await.unwrap(), 4);
    assert!(dlq.remove(&listed[1].message_id).await.unwrap());
    assert!(!dlq.remove(&listed[1].message_id).await.unwrap());
    assert_eq!(dlq.depth().await.unwrap(), 3);
    assert!(
        dlq.list_after(Some("no-such-id"), 1).await.is_err(),
        "paging after an unknown id is an error"
    );

    let other_dir = tempfile::tempdir().unwrap();
    let other = LocalStore::open(other_dir.path().join("other.db")).unwrap();
    assert!(
        dlq.move_to(&listed[2].message_id, &other.queue("realtime"))
            .await
            .is_err(),
        "across files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_receiver_is_woken_by_a_send() {
    let dir = tempfile::tempdir().unwrap();
    // A long poll interval: only the in-process signal can deliver the message before the wait ends.
    let options = StoreOptions {
        poll_interval: Duration::from_secs(30),
        ..StoreOptions::default()
    };
    let store = LocalStore::open_with(dir.path().join("w.db"), options).unwrap();
    let q = store.queue("realtime");
    let receiver = {
        let q = q.clone();
        tokio::spawn(async move { q.receive(1, Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = std::time::Instant::now();
    let id = q.send("wake", Duration::ZERO).await.unwrap();
    let got = receiver.await.unwrap().unwrap();
    assert_eq!(got[0].message_id, id);
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "woken by the send, not by the 20 s wait ending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_with_wait_returns_empty_after_the_wait() {
    let (_dir, store, _clock) = store_with_clock();
    let q = store.queue("realtime");
    let started = std::time::Instant::now();
    assert!(q.receive(10, Duration::from_millis(200)).await.unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_never_receive_a_message_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = LocalStore::open(&path).unwrap();
    let b = LocalStore::open(&path).unwrap();
    let qa = a.queue("realtime");
    let qb = b.queue("realtime");
    let mut sent = BTreeSet::new();
    for i in 0..200 {
        let q = if i % 2 == 0 { &qa } else { &qb };
        sent.insert(q.send(&format!("m{i}"), Duration::ZERO).await.unwrap());
    }
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let q = if worker % 2 == 0 { qa.clone() } else { qb.clone() };
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = q.receive(3, Duration::from_millis(100)).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                for m in batch {
                    q.delete(&m.receipt).await.unwrap();
                    got.push(m.message_id);
                }
            }
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "a message was received twice");
    assert_eq!(unique, sent, "every message was received");
    assert_eq!(qa.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn a_critical_message_sent_after_a_backlog_is_received_first_and_keeps_its_priority_on_retry() {
    let (_dir, store, clock) = store_with_clock();
    let realtime = store.queue("realtime").with_visibility_timeout(Duration::from_secs(30));
    let critical = store.queue("realtime").critical_lane();
    for i in 0..200 {
        realtime.send(&format!("high-{i}"), Duration::ZERO).await.unwrap();
    }
    clock.advance(Duration::from_secs(1));
    let id = critical.send("critical", Duration::ZERO).await.unwrap();
    assert_eq!(
        realtime.depth().await.unwrap(),
        201,
        "the whole queue counts every lane"
    );
    assert_eq!(
        critical.depth().await.unwrap(),
        1,
        "the critical lane counts its own messages"
    );

    let first = realtime.receive(3, Duration::ZERO).await.unwrap();
    let bodies: Vec<&str> = first.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(
        bodies,
        ["critical", "high-0", "high-1"],
        "critical first, then the backlog in send order"
    );

    // a retry (visibility change by receipt) keeps the message critical, from either handle
    realtime
        .change_visibility(&first[0].receipt, Duration::from_secs(5))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(6));
    let again = realtime.receive(1, Duration::ZERO).await.unwrap();
    assert_eq!((again[0].message_id.as_str(), again[0].receive_count), (id.as_str(), 2));

    // the critical lane hands out critical messages only
    critical
        .change_visibility(&again[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    let lane: Vec<String> = critical
        .receive(10, Duration::ZERO)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(lane, ["critical"]);
    assert!(
        critical.receive(10, Duration::ZERO).await.unwrap().is_empty(),
        "no high alert on the critical lane"
    );
}

#[tokio::test]
async fn a_critical_lane_receiver_is_woken_by_a_critical_send() {
    let (_dir, store, _clock) = store_with_clock();
    let critical = store.queue("realtime").critical_lane();
    let waiting = tokio::spawn({
        let critical = critical.clone();
        async move { critical.receive(1, Duration::from_secs(30)).await }
    });
    tokio::task::yield_now().await;
    store.queue("realtime").send("high", Duration::ZERO).await.unwrap();
    critical.send("critical", Duration::ZERO).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got[0].body, "critical");
}

#[tokio::test]
async fn a_message_moved_to_the_critical_lane_is_critical_there() {
    let (_dir, store, _clock) = store_with_clock();
    let dlq = store.queue("dlq");
    let realtime = store.queue("realtime");
    realtime.send("high", Duration::ZERO).await.unwrap();
    let dead = dlq.send("critical", Duration::ZERO).await.unwrap();
    dlq.move_to(&dead, &realtime.clone().critical_lane())
        .await
        .unwrap()
        .unwrap();
    let got = realtime.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(
        got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["critical", "high"]
    );
}
