//! Retry timing over the real adapters (SQLite queue and ledger, the simulator over HTTP): the receive
//! limit the relay watches itself, a Retry-After longer than a queue delay, and the circuit breaker shared
//! by the deliverers of a process.

mod common;

use std::time::Duration;

use common::*;
use relay_ports::{AlertQueue, Clock, DeliveryState, SystemClock};
use serde_json::Value;
use servicenow_sim::{Fault, FaultKind};

const USB: &str = "emon-20261120-7f3a9c";

fn posts(h: &Harness) -> usize {
    h.sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/sn_si_incident"))
        .count()
}

#[tokio::test]
async fn a_message_near_its_receive_limit_is_dead_lettered_by_the_relay_with_a_notice() {
    // limit 13: the relay gives up itself from the 3rd receive, well inside the 60 s window
    let h = harness(Options {
        max_receives: Some(13),
        ..Options::default()
    })
    .await;
    h.sim.inject(Fault {
        kind: FaultKind::ServerError { status: 502 },
        count: 1_000,
        table: Some("sn_si_incident".into()),
        method: Some("POST".into()),
    });
    assert_eq!(h.post(&sample("seed-usb-copy-847-files.json"), "wh").await.status, 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.dlq.depth().await.unwrap() == 0 && std::time::Instant::now() < deadline {
        h.deliverer.poll_once(10, Duration::from_millis(50)).await.unwrap();
    }
    let e = h.state(USB).await;
    assert_eq!(e.state, DeliveryState::Failed);
    assert_eq!(e.last_error_class.as_deref(), Some("receive_limit"));
    // claims on receives 1, 2 and 3; the 3rd gives up without a call
    assert_eq!(e.attempts, 3);
    assert_eq!(posts(&h), 2);
    let dead = h.dlq.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(dead.len(), 1);
    let env: Value = serde_json::from_str(&dead[0].body).unwrap();
    assert_eq!(env["dead_letter"]["error_class"], "receive_limit");
    let notes = h.store.notifications_for(USB).await.unwrap();
    assert_eq!(notes.len(), 1, "one notice");
    assert_eq!(notes[0].notice.error_class, "receive_limit");
    assert!(notes[0].notice.error.contains("3 times"), "{}", notes[0].notice.error);
    assert_eq!(
        h.realtime.depth().await.unwrap(),
        0,
        "acknowledged, not left to the redrive"
    );
}

#[tokio::test]
async fn a_retry_after_longer_than_the_queue_can_carry_is_kept_in_the_ledger_and_the_message_waits_the_longest_it_can()
{
    let h = harness(Options {
        window: Duration::from_secs(48 * 3600),
        max_retry_after: Duration::from_secs(24 * 3600),
        ..Options::default()
    })
    .await;
    let retry_after = Duration::from_secs(20 * 3600);
    h.sim.inject(Fault {
        kind: FaultKind::RateLimited {
            retry_after_s: retry_after.as_secs(),
        },
        count: 1,
        table: Some("sn_si_incident".into()),
        method: None,
    });
    h.post(&sample("seed-usb-copy-847-files.json"), "wh").await;
    let before = SystemClock.now_ms();
    h.deliverer.poll_once(10, Duration::from_millis(50)).await.unwrap();
    let e = h.state(USB).await;
    assert_eq!(e.state, DeliveryState::Retrying);
    // Retry-After plus jitter above it (0.5 × a quarter): never earlier than the server asked
    let not_before = e.not_before_ms.expect("the Retry-After is in the ledger");
    let asked = before + retry_after.as_millis() as i64;
    assert!(not_before >= asked, "{not_before} < {asked}");
    assert!(not_before <= asked + (retry_after / 8).as_millis() as i64 + 5_000);
    // the queue holds the message as long as it may (11.5 h), not the 20 h it cannot carry
    let queued = h.realtime.list(10).await.unwrap();
    assert_eq!(queued.len(), 1);
    let longest = relay_pipeline::defaults::LONGEST_REDELAY.as_millis() as i64;
    assert!(
        (queued[0].visible_at_ms - before - longest).abs() < 5_000,
        "visible again after {} ms",
        queued[0].visible_at_ms - before
    );
    assert!(queued[0].visible_at_ms < not_before);
    // when it comes back early (as it will after 11.5 h), the claim answers NotBefore: no attempt, no
    // call, and it is delayed again
    let attempts = e.attempts;
    let calls = h.sim.requests().len();
    let id = queued[0].message_id.clone();
    h.realtime.remove(&id).await.unwrap();
    h.realtime.send(&queued[0].body, Duration::ZERO).await.unwrap();
    h.deliverer.poll_once(10, Duration::from_millis(50)).await.unwrap();
    let again = h.state(USB).await;
    assert_eq!((again.attempts, again.state), (attempts, DeliveryState::Retrying));
    assert_eq!(
        h.sim.requests().len(),
        calls,
        "no ServiceNow call before the Retry-After"
    );
    let queued = h.realtime.list(10).await.unwrap();
    assert_eq!(queued.len(), 1, "kept, not dropped");
    assert!(
        queued[0].visible_at_ms > SystemClock.now_ms() + 3_600_000,
        "delayed again"
    );
}

#[tokio::test]
async fn a_429_closes_the_instance_to_every_deliverer_until_its_retry_after_then_one_probe_goes() {
    // five alerts of one employee, each its own record (its create is the call counted)
    let h = harness(without_threads()).await;
    h.sim.inject(Fault {
        kind: FaultKind::RateLimited { retry_after_s: 2 },
        count: 1,
        table: Some("sn_si_incident".into()),
        method: None,
    });
    assert_eq!(h.post(&sample("seed-usb-copy-847-files.json"), "wh").await.status, 202);
    h.deliverer.poll_once(10, Duration::from_millis(50)).await.unwrap();
    assert_eq!(posts(&h), 1, "answered 429");
    let closed = h.deliverer.delivery.closed_until().expect("the breaker is open");
    assert!(closed >= SystemClock.now_ms() + 1_000);

    // four more alerts while it is open: none is claimed or sent
    let ids: Vec<String> = (0..4).map(|i| format!("breaker-{i}")).collect();
    for id in &ids {
        let mut alert: Value = serde_json::from_slice(&sample("seed-usb-copy-847-files.json")).unwrap();
        alert["alert_id"] = Value::String(id.clone());
        let reply = h.post(&serde_json::to_vec(&alert).unwrap(), id).await;
        assert_eq!(reply.status, 202);
    }
    h.deliverer.poll_once(10, Duration::from_millis(200)).await.unwrap();
    assert_eq!(posts(&h), 1, "no call while the breaker is open");
    for id in &ids {
        let e = h.state(id).await;
        assert_eq!((e.attempts, e.state), (0, DeliveryState::Queued), "{id}: not claimed");
    }

    // after it closes, one probe call goes first; the others wait for its outcome
    tokio::time::sleep(Duration::from_millis(
        (closed - SystemClock.now_ms()).max(0) as u64 + 700,
    ))
    .await;
    let got = h.realtime.receive(10, Duration::from_secs(2)).await.unwrap();
    assert!(got.len() >= 2, "several messages are due: {}", got.len());
    let out = h.deliverer.handle_all(got).await;
    assert_eq!(posts(&h), 2, "one probe call, not one per message");
    for (m, d) in out {
        if d == relay_pipeline::Disposition::Done {
            h.realtime.delete(&m.receipt).await.unwrap();
        }
    }
    assert!(
        h.deliverer.delivery.closed_until().is_none(),
        "the probe's success closed it"
    );
    h.deliver_all().await;
    assert_eq!(h.sim.records("sn_si_incident").len(), 5);
    for id in ids.iter().map(String::as_str).chain([USB]) {
        assert_eq!(h.state(id).await.state, DeliveryState::Completed, "{id}");
    }
}
