//! The [`AlertQueue`] checks (each needs a fresh, empty queue), and [`run_queue_suite`].

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::{AlertQueue, Clock, PortError, ReceivedMessage, SystemClock};

/// The shortest visibility timeout a queue handed to the queue checks may have.
pub const MIN_QUEUE_VISIBILITY: Duration = Duration::from_secs(20);

async fn receive_one(queue: &dyn AlertQueue, wait: Duration) -> Option<ReceivedMessage> {
    let mut got = queue.receive(1, wait).await.expect("receive");
    assert!(got.len() <= 1, "receive(max = 1) returned {} messages", got.len());
    got.pop()
}

/// Receive until `want` distinct messages arrived or `deadline` passed.
async fn receive_all(queue: &dyn AlertQueue, want: usize, deadline: Duration) -> Vec<ReceivedMessage> {
    let start = Instant::now();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    while out.len() < want && start.elapsed() < deadline {
        for m in queue.receive(10, Duration::from_secs(1)).await.expect("receive") {
            assert!(
                seen.insert(m.message_id.clone()),
                "message {} received twice while invisible",
                m.message_id
            );
            out.push(m);
        }
    }
    out
}

/// Poll `depth` until it equals `want` (depth is approximate and may lag a little).
async fn assert_depth(queue: &dyn AlertQueue, want: u64, why: &str) {
    let start = Instant::now();
    loop {
        let d = queue.depth().await.expect("depth");
        if d == want {
            return;
        }
        if start.elapsed() > Duration::from_secs(5) {
            panic!("depth should be {want} ({why}), is {d}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `send` then `receive`: same id and body, `sent_at_ms` near the send time; `delete` removes it for good.
pub async fn queue_send_receive_delete(queue: &dyn AlertQueue) {
    assert_depth(queue, 0, "a fresh queue").await;
    assert!(
        queue
            .receive(10, Duration::ZERO)
            .await
            .expect("receive empty")
            .is_empty(),
        "fresh queue not empty"
    );
    let body = r#"{"alert_id":"a-1","text":"ünïcode ✓ \"quoted\" <tag> & more"}"#;
    let before = SystemClock.now_ms();
    let id = queue.send(body, Duration::ZERO).await.expect("send");
    let after = SystemClock.now_ms();
    assert!(!id.is_empty(), "send must return a message id");
    let m = receive_one(queue, Duration::from_secs(5))
        .await
        .expect("the sent message must be received");
    assert_eq!(m.message_id, id, "receive must report the id send returned");
    assert_eq!(m.body, body, "the body must arrive unchanged");
    assert!(!m.receipt.is_empty(), "a received message must carry a receipt");
    assert!(
        m.sent_at_ms >= before - 2_000 && m.sent_at_ms <= after + 2_000,
        "sent_at_ms {} should be the send time ({before}..{after})",
        m.sent_at_ms
    );
    queue.delete(&m.receipt).await.expect("delete");
    assert_depth(queue, 0, "after delete").await;
    assert!(
        queue
            .receive(10, Duration::from_secs(1))
            .await
            .expect("receive")
            .is_empty(),
        "deleted message came back"
    );
}

/// A delayed message is invisible until its delay passed (and counted by `depth` meanwhile).
pub async fn queue_delay_is_respected(queue: &dyn AlertQueue) {
    let start = Instant::now();
    let id = queue
        .send("delayed", Duration::from_secs(2))
        .await
        .expect("send delayed");
    assert!(
        receive_one(queue, Duration::ZERO).await.is_none(),
        "a delayed message must not be received at once"
    );
    assert_depth(queue, 1, "a delayed message counts").await;
    let mut got = None;
    while got.is_none() && start.elapsed() < Duration::from_secs(10) {
        got = receive_one(queue, Duration::from_secs(1)).await;
    }
    let got = got.expect("the delayed message must arrive after its delay");
    assert!(
        start.elapsed() >= Duration::from_millis(1_900),
        "received after {:?}, before the 2 s delay",
        start.elapsed()
    );
    assert_eq!(got.message_id, id);
    queue.delete(&got.receipt).await.expect("delete");
}

/// A received message is invisible to other receivers; `change_visibility(delay)` brings it back after `delay`
/// (not before), with the same id, body and `sent_at_ms`, and the new receipt deletes it.
pub async fn queue_visibility_and_change_visibility(queue: &dyn AlertQueue) {
    let id = queue.send("visibility", Duration::ZERO).await.expect("send");
    let first = receive_one(queue, Duration::from_secs(5)).await.expect("receive");
    assert_eq!(first.receive_count, 1, "the first receive counts 1");
    assert!(
        receive_one(queue, Duration::from_secs(1)).await.is_none(),
        "a received message must be invisible"
    );
    assert_depth(queue, 1, "an in-flight message counts").await;

    let start = Instant::now();
    queue
        .change_visibility(&first.receipt, Duration::from_secs(2))
        .await
        .expect("change_visibility");
    assert!(
        receive_one(queue, Duration::ZERO).await.is_none(),
        "change_visibility(2 s) must not show it at once"
    );
    let mut again = None;
    while again.is_none() && start.elapsed() < Duration::from_secs(10) {
        again = receive_one(queue, Duration::from_secs(1)).await;
    }
    let again = again.expect("the message must reappear after the change_visibility delay");
    assert!(
        start.elapsed() >= Duration::from_millis(1_900),
        "reappeared after {:?}, before 2 s",
        start.elapsed()
    );
    assert_eq!(
        (again.message_id.as_str(), again.body.as_str()),
        (id.as_str(), "visibility")
    );
    assert_eq!(
        again.sent_at_ms, first.sent_at_ms,
        "sent_at_ms is the first send time, not the receive time"
    );
    assert_eq!(again.receive_count, 2, "every receive is counted");

    // change_visibility(0) shows it at once.
    queue
        .change_visibility(&again.receipt, Duration::ZERO)
        .await
        .expect("change_visibility(0)");
    let third = receive_one(queue, Duration::from_secs(3))
        .await
        .expect("change_visibility(0) must show it at once");
    assert_eq!(third.message_id, id);
    assert_eq!(third.receive_count, 3, "every receive is counted");
    queue
        .delete(&third.receipt)
        .await
        .expect("delete with the latest receipt");
    assert_depth(queue, 0, "after delete").await;
}

/// `receive` honours `max`; every message is received exactly once while invisible; `depth` counts
/// visible and in-flight messages and drops on delete.
pub async fn queue_receive_many_and_depth(queue: &dyn AlertQueue) {
    let mut ids = BTreeSet::new();
    for i in 0..5 {
        ids.insert(queue.send(&format!("m{i}"), Duration::ZERO).await.expect("send"));
    }
    assert_eq!(ids.len(), 5, "message ids must be distinct");
    assert_depth(queue, 5, "five sent").await;
    let two = queue.receive(2, Duration::from_secs(2)).await.expect("receive 2");
    assert!(
        !two.is_empty() && two.len() <= 2,
        "receive(max = 2) returned {}",
        two.len()
    );
    let mut got = two;
    let rest = receive_all(queue, 5 - got.len(), Duration::from_secs(10)).await;
    got.extend(rest);
    let got_ids: BTreeSet<String> = got.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(got_ids, ids, "every sent message must be received exactly once");
    assert_depth(queue, 5, "received but not deleted").await;
    for m in &got[..3] {
        queue.delete(&m.receipt).await.expect("delete");
    }
    assert_depth(queue, 2, "three of five deleted").await;
}

/// `delete` with a receipt the queue never issued is an error.
pub async fn queue_delete_with_unknown_receipt_fails(queue: &dyn AlertQueue) {
    let err = queue.delete("not-a-receipt").await;
    assert!(err.is_err(), "delete with an unknown receipt must fail, got {err:?}");
}

/// `delete_batch` removes every message it names (more than one service call's worth) and reports a bad
/// receipt as an error without failing the others.
pub async fn queue_delete_batch(queue: &dyn AlertQueue) {
    for i in 0..13 {
        queue.send(&format!("m-{i}"), Duration::ZERO).await.expect("send");
    }
    let mut receipts = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while receipts.len() < 13 && std::time::Instant::now() < deadline {
        for m in queue.receive(10, Duration::from_secs(1)).await.expect("receive") {
            receipts.push(m.receipt);
        }
    }
    assert_eq!(receipts.len(), 13, "every sent message must be received");
    receipts.insert(5, "not-a-receipt".into());
    let results = queue.delete_batch(&receipts).await;
    assert_eq!(results.len(), receipts.len(), "one result per receipt");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.is_err(), i == 5, "result {i}: {r:?}");
    }
    assert_depth(queue, 0, "after delete_batch").await;
    assert!(queue.delete_batch(&[]).await.is_empty());
}

/// Every queue check, each against a fresh queue from `make`.
/// A body over [`crate::MAX_MESSAGE_BYTES`] (SQS's 256 KiB) or an empty one is `Rejected`, naming its size,
/// and leaves nothing on the queue; a body of exactly the limit is taken.
pub async fn queue_refuses_empty_and_oversized_bodies(queue: &dyn AlertQueue) {
    let big = "x".repeat(crate::MAX_MESSAGE_BYTES + 1);
    match queue.send(&big, Duration::ZERO).await {
        Err(PortError::Rejected(msg)) => assert!(
            msg.contains(&format!("{} bytes", crate::MAX_MESSAGE_BYTES + 1)),
            "the refusal names the size: {msg}"
        ),
        other => panic!("an oversized body must be Rejected, got {other:?}"),
    }
    assert!(
        matches!(queue.send("", Duration::ZERO).await, Err(PortError::Rejected(_))),
        "an empty body must be Rejected"
    );
    assert_depth(queue, 0, "a rejected send leaves nothing on the queue").await;
    let exact = "y".repeat(crate::MAX_MESSAGE_BYTES);
    queue
        .send(&exact, Duration::ZERO)
        .await
        .expect("a body of exactly the limit is accepted");
}

pub async fn run_queue_suite<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Box<dyn AlertQueue>>,
{
    queue_send_receive_delete(make().await.as_ref()).await;
    queue_delay_is_respected(make().await.as_ref()).await;
    queue_visibility_and_change_visibility(make().await.as_ref()).await;
    queue_receive_many_and_depth(make().await.as_ref()).await;
    queue_delete_with_unknown_receipt_fails(make().await.as_ref()).await;
    queue_delete_batch(make().await.as_ref()).await;
    queue_refuses_empty_and_oversized_bodies(make().await.as_ref()).await;
}
