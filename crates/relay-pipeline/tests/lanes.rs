//! Priority lanes over the local adapters: a critical alert overtakes a backlog of high ones, its retries
//! stay ahead of the backlog, and a replay sends it back to the critical lane.

mod common;

use std::time::Duration;

use common::*;
use relay_pipeline::Envelope;
use relay_pipeline::replay::Replay;
use relay_ports::memory::MemoryQueue;
use relay_ports::{AlertQueue, DeliveryState, SystemClock};
use servicenow_sim::{Fault, FaultKind};

const BACKLOG: usize = 40;

async fn backlog_then_critical(h: &Harness) {
    for i in 0..BACKLOG {
        let body = alert_body(&format!("high-{i}"), "policy_violation", "high", &format!("E{i}"));
        assert_eq!(h.post(&body, &format!("wh-h{i}")).await.status, 202);
    }
    let body = alert_body("crit-1", "policy_violation", "critical", "E-crit");
    assert_eq!(h.post(&body, "wh-c").await.status, 202);
    assert_eq!(h.realtime.depth().await.unwrap(), BACKLOG as u64 + 1);
}

async fn queued_highs(h: &Harness) -> usize {
    let mut n = 0;
    for i in 0..BACKLOG {
        if h.state(&format!("high-{i}")).await.state == DeliveryState::Queued {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn a_critical_alert_accepted_after_a_backlog_of_high_ones_is_delivered_first() {
    let h = harness(Options::default()).await;
    backlog_then_critical(&h).await;

    // one worker round of one message: the critical alert, although it was accepted last
    assert_eq!(h.deliverer.poll_once(1, Duration::from_millis(30)).await.unwrap(), 1);
    assert_eq!(h.state("crit-1").await.state, DeliveryState::Completed);
    assert_eq!(queued_highs(&h).await, BACKLOG, "no high alert was touched before it");

    h.deliver_all().await;
    assert_eq!(queued_highs(&h).await, 0);
    for i in 0..BACKLOG {
        assert_eq!(h.state(&format!("high-{i}")).await.state, DeliveryState::Completed);
    }
}

#[tokio::test]
async fn a_retried_critical_alert_stays_ahead_of_the_backlog() {
    let h = harness(Options::default()).await;
    h.sim.inject(Fault {
        kind: FaultKind::ServerError { status: 503 },
        count: 1,
        table: None,
        method: Some("POST".into()),
    });
    backlog_then_critical(&h).await;

    assert_eq!(h.deliverer.poll_once(1, Duration::from_millis(30)).await.unwrap(), 1);
    let e = h.state("crit-1").await;
    assert_eq!(
        (e.state, e.attempts),
        (DeliveryState::Retrying, 1),
        "the 503 schedules a retry"
    );

    // the retry delay ends (the harness's schedule is ~20-100 ms): the next single receive is the retry
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.state("crit-1").await.state != DeliveryState::Completed && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        h.deliverer.poll_once(1, Duration::from_millis(30)).await.unwrap();
    }
    assert_eq!(h.state("crit-1").await.state, DeliveryState::Completed);
    assert_eq!(h.state("crit-1").await.attempts, 2);
    assert_eq!(
        queued_highs(&h).await,
        BACKLOG,
        "the retry overtook the whole backlog again"
    );
}

#[tokio::test]
async fn a_replayed_critical_alert_goes_back_to_the_critical_queue() {
    let h = harness(Options::default()).await;
    let envelope = |id: &str, severity: &str| {
        let alert = relay_core::Alert::from_slice(&alert_body(id, "policy_violation", severity, "E1")).unwrap();
        Envelope::alert(h.router.route_at(&alert, now_s()), None, now_s() * 1000).to_json()
    };
    let (dlq, realtime, critical) = (
        MemoryQueue::new(Duration::from_secs(30)),
        MemoryQueue::new(Duration::from_secs(30)),
        MemoryQueue::new(Duration::from_secs(30)),
    );
    dlq.send(&envelope("c-1", "critical"), Duration::ZERO).await.unwrap();
    dlq.send(&envelope("h-1", "high"), Duration::ZERO).await.unwrap();
    let replay = Replay {
        dlq: &dlq,
        realtime: &realtime,
        critical: &critical,
        ledger: h.ports.ledger.as_ref(),
        clock: &SystemClock,
    };
    let report = replay.run(false, |_| {}).await.unwrap();
    assert_eq!(report.replayed, 2);
    assert_eq!(keys_on(&critical).await, ["c-1"]);
    assert_eq!(keys_on(&realtime).await, ["h-1"]);
    assert_eq!(dlq.depth().await.unwrap(), 0);
}

async fn keys_on(q: &MemoryQueue) -> Vec<String> {
    let got = q.receive(10, Duration::ZERO).await.unwrap();
    got.into_iter()
        .map(|m| Envelope::from_json(&m.body).unwrap().ledger_key())
        .collect()
}
