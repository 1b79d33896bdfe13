//! Ledger checks of `aggregate`: a batch aggregate sealed all or nothing.

use crate::{Claim, DeliveryState, Ledger, LedgerEntry, PortError, RetryLater};

use super::{LEASE_MS, accepted, claimed, far_expiry, must_get, now, sample_entry, sample_record, token, unique_id};

/// An aggregate's plan entry, claimed by its sealer (token 1), holding `plan` as its message.
fn sample_plan(at: i64) -> LedgerEntry {
    let mut p = sample_entry(&format!("batch:{}", unique_id("plan")), at);
    p.state = DeliveryState::InProgress;
    p.attempts = 1;
    p.claim_token = 1;
    p.lease_until_ms = Some(at + LEASE_MS);
    p.delivery = "batch".into();
    p.plan = Some(format!("{{\"v\":1,\"plan\":\"{}\"}}", "é".repeat(2000)));
    p
}

/// `aggregate` writes the plan and seals every member in one step, or writes nothing: a member not held
/// under the caller's token, or an existing plan, refuses the whole seal. A sealed member refuses claims
/// (`Aggregated`), ignores `retry_later`, is completed or failed with its current token, and a replayed
/// member returns to `Aggregated`.
pub async fn ledger_aggregate_seals_all_or_nothing(ledger: &dyn Ledger) {
    let t = now();
    let mut members = Vec::new();
    for _ in 0..3 {
        let e = accepted(ledger, "agg", t).await;
        let c = claimed(ledger, &e.alert_id, t + 1).await;
        members.push((c.alert_id.clone(), c.claim_token));
    }
    // one member's token is stale: nothing is written
    let plan = sample_plan(t + 2);
    let mut stale = members.clone();
    stale[2].1 += 1;
    let refused = ledger.aggregate(&plan, &stale, t + 2).await;
    assert!(matches!(refused, Err(PortError::Stale(_))), "stale member: {refused:?}");
    assert_eq!(ledger.get(&plan.alert_id).await.expect("get"), None, "no plan written");
    for (key, token) in &members {
        let e = must_get(ledger, key).await;
        assert_eq!(
            (e.state, e.claim_token, e.aggregate.as_deref()),
            (DeliveryState::InProgress, *token, None)
        );
    }
    // too many members, or a key twice: rejected
    let many: Vec<(String, u64)> = (0..crate::MAX_AGGREGATE_MEMBERS + 1)
        .map(|i| (format!("m{i}"), 1))
        .collect();
    assert!(matches!(
        ledger.aggregate(&plan, &many, t + 2).await,
        Err(PortError::Rejected(_))
    ));
    let twice = vec![members[0].clone(), members[0].clone()];
    assert!(matches!(
        ledger.aggregate(&plan, &twice, t + 2).await,
        Err(PortError::Rejected(_))
    ));

    ledger.aggregate(&plan, &members, t + 3).await.expect("seal");
    assert_eq!(
        must_get(ledger, &plan.alert_id).await,
        plan,
        "the plan is stored as given"
    );
    for (key, token) in &members {
        let e = must_get(ledger, key).await;
        assert_eq!(e.state, DeliveryState::Aggregated, "{key}");
        assert_eq!(e.aggregate.as_deref(), Some(plan.alert_id.as_str()));
        assert_eq!(e.claim_token, token + 1, "sealing fences the member's earlier holder");
        assert_eq!(e.lease_until_ms, None);
        match ledger.claim(key, t + 4 + 2 * LEASE_MS, LEASE_MS).await.expect("claim") {
            Claim::Aggregated(got) => assert_eq!(got, e),
            other => panic!("a sealed member must answer Aggregated, got {other:?}"),
        }
        // the sealer's old token can no longer write it
        assert!(matches!(
            ledger.complete(key, *token, &sample_record(50), t + 5).await,
            Err(PortError::Stale(_))
        ));
        // retry_later leaves it alone
        ledger
            .retry_later(key, e.claim_token, &RetryLater::new("retryable", "x"), t + 5)
            .await
            .expect("retry_later of a sealed member");
        assert_eq!(must_get(ledger, key).await.state, DeliveryState::Aggregated);
    }
    // a second seal of the same plan is refused, and changes nothing
    let again = ledger.aggregate(&plan, &[], t + 6).await;
    assert!(matches!(again, Err(PortError::Stale(_))), "existing plan: {again:?}");

    // members are completed (or failed) by the aggregate's outcome, with their current token
    let (done, failed) = (&members[0].0, &members[1].0);
    ledger
        .complete(done, token(ledger, done).await, &sample_record(51), t + 7)
        .await
        .expect("complete a sealed member");
    assert_eq!(must_get(ledger, done).await.state, DeliveryState::Completed);
    ledger
        .fail(failed, token(ledger, failed).await, "permanent", "HTTP 400", t + 7)
        .await
        .expect("fail a sealed member");
    assert!(
        ledger
            .reopen(failed, token(ledger, failed).await, t + 8, far_expiry())
            .await
            .expect("reopen")
    );
    let replayed = must_get(ledger, failed).await;
    assert_eq!(
        (replayed.state, replayed.aggregate.as_deref()),
        (DeliveryState::Aggregated, Some(plan.alert_id.as_str())),
        "a replayed member goes back to its aggregate"
    );
}
