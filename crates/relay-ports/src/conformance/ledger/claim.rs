//! Ledger checks of claims: from each state, busy and taken over, final states, concurrent callers,
//! fencing of a stale holder, and `extend`.

use crate::{Accept, Claim, DeliveryState, Ledger, LedgerEntry, PortError, RetryLater};

use super::{
    CONCURRENT_CALLERS, LEASE_MS, accepted, claimed, must_get, now, sample_entry, sample_record, token, unique_id,
};

/// `claim` is granted from `Accepted`, `Queued` and `Retrying`: `InProgress`, attempts + 1, lease set.
pub async fn ledger_claim_from_each_claimable_state(ledger: &dyn Ledger) {
    let t = now();
    // Accepted
    let a = accepted(ledger, "claim-accepted", t).await;
    let got = claimed(ledger, &a.alert_id, t + 5).await;
    assert_eq!(got.state, DeliveryState::InProgress);
    assert_eq!(got.attempts, 1, "the first claim must count attempt 1");
    assert_eq!(
        got.lease_until_ms,
        Some(t + 5 + LEASE_MS),
        "lease_until_ms = now_ms + lease_ms"
    );
    assert_eq!(got.updated_at_ms, t + 5);
    assert_eq!(
        got.first_received_at_ms, a.first_received_at_ms,
        "claim must keep first_received_at_ms"
    );
    assert_eq!(
        got.correlation_id, a.correlation_id,
        "claim must keep the routing fields"
    );
    assert_eq!(
        must_get(ledger, &a.alert_id).await,
        got,
        "Claimed must carry the stored entry"
    );

    // Queued
    let q = accepted(ledger, "claim-queued", t).await;
    ledger.mark_queued(&q.alert_id, t + 1).await.expect("mark_queued");
    let got = claimed(ledger, &q.alert_id, t + 6).await;
    assert_eq!((got.state, got.attempts), (DeliveryState::InProgress, 1));

    // Retrying: the claim clears nothing it should keep (needs_lookup, last error).
    ledger
        .retry_later(
            &q.alert_id,
            token(ledger, &q.alert_id).await,
            &RetryLater::new("ambiguous", "timed out").needing_lookup(true),
            t + 7,
        )
        .await
        .expect("retry_later");
    let got = claimed(ledger, &q.alert_id, t + 8).await;
    assert_eq!(got.state, DeliveryState::InProgress);
    assert_eq!(got.attempts, 2, "a claim from Retrying must increment attempts");
    assert_eq!(got.lease_until_ms, Some(t + 8 + LEASE_MS));
    assert!(got.needs_lookup, "claim must keep needs_lookup");

    // Missing
    let missing = unique_id("claim-missing");
    assert_eq!(
        ledger.claim(&missing, t, LEASE_MS).await.expect("claim missing"),
        Claim::Missing
    );
    assert_eq!(
        ledger.get(&missing).await.expect("get"),
        None,
        "claim must not create entries"
    );
}

/// While a lease is held other claims are `Busy { lease_until_ms }` (also at exactly `lease_until_ms`);
/// after it expires the next claim takes over and counts another attempt.
pub async fn ledger_claim_busy_then_takeover(ledger: &dyn Ledger) {
    let t = now();
    let e = accepted(ledger, "lease", t).await;
    let held = claimed(ledger, &e.alert_id, t).await;
    let until = t + LEASE_MS;
    assert_eq!(held.lease_until_ms, Some(until));
    for at in [t, t + 1, until - 1, until] {
        assert_eq!(
            ledger
                .claim(&e.alert_id, at, LEASE_MS)
                .await
                .expect("claim while leased"),
            Claim::Busy { lease_until_ms: until },
            "a claim at {at} (lease until {until}) must be Busy"
        );
    }
    assert_eq!(
        must_get(ledger, &e.alert_id).await,
        held,
        "a Busy claim must change nothing"
    );
    let taken = claimed(ledger, &e.alert_id, until + 1).await;
    assert_eq!(taken.attempts, 2, "a takeover must count a new attempt");
    assert_eq!(taken.lease_until_ms, Some(until + 1 + LEASE_MS));
    let third = claimed(ledger, &e.alert_id, until + 2 + LEASE_MS).await;
    assert_eq!(third.attempts, 3, "attempts must keep counting");
}

/// Claims of a `Completed` or `Failed` entry return it (unchanged, attempts not incremented).
pub async fn ledger_claim_final_states(ledger: &dyn Ledger) {
    let t = now();
    let c = accepted(ledger, "claim-completed", t).await;
    claimed(ledger, &c.alert_id, t + 1).await;
    ledger
        .complete(&c.alert_id, token(ledger, &c.alert_id).await, &sample_record(3), t + 2)
        .await
        .expect("complete");
    let done = must_get(ledger, &c.alert_id).await;
    match ledger
        .claim(&c.alert_id, t + 3, LEASE_MS)
        .await
        .expect("claim completed")
    {
        Claim::Completed(e) => assert_eq!(e, done, "Completed must carry the stored entry"),
        other => panic!("claim of a Completed entry must be Completed, got {other:?}"),
    }
    assert_eq!(
        must_get(ledger, &c.alert_id).await,
        done,
        "claiming a Completed entry must change nothing"
    );

    let f = accepted(ledger, "claim-failed", t).await;
    claimed(ledger, &f.alert_id, t + 1).await;
    ledger
        .fail(
            &f.alert_id,
            token(ledger, &f.alert_id).await,
            "permanent",
            "ACL denied",
            t + 2,
        )
        .await
        .expect("fail");
    let failed = must_get(ledger, &f.alert_id).await;
    match ledger.claim(&f.alert_id, t + 3, LEASE_MS).await.expect("claim failed") {
        Claim::Failed(e) => assert_eq!(e, failed, "Failed must carry the stored entry"),
        other => panic!("claim of a Failed entry must be Failed, got {other:?}"),
    }
    assert_eq!(
        must_get(ledger, &f.alert_id).await,
        failed,
        "claiming a Failed entry must change nothing"
    );
}

/// Many concurrent claims of one alert: exactly one `Claimed`, every other one `Busy`; attempts = 1.
pub async fn ledger_concurrent_claims_grant_exactly_one(ledger: &dyn Ledger) {
    let t = now();
    let e = accepted(ledger, "race", t).await;
    ledger.mark_queued(&e.alert_id, t).await.expect("mark_queued");
    let results =
        futures::future::join_all((0..CONCURRENT_CALLERS).map(|_| ledger.claim(&e.alert_id, t + 1, LEASE_MS))).await;
    let mut winners = 0;
    for r in results {
        match r.expect("concurrent claim") {
            Claim::Claimed(_) => winners += 1,
            Claim::Busy { lease_until_ms } => assert_eq!(lease_until_ms, t + 1 + LEASE_MS),
            other => panic!("a concurrent claim must be Claimed or Busy, got {other:?}"),
        }
    }
    assert_eq!(
        winners, 1,
        "exactly one of {CONCURRENT_CALLERS} concurrent claims must win"
    );
    assert_eq!(
        must_get(ledger, &e.alert_id).await.attempts,
        1,
        "losing claims must not count attempts"
    );

    // The same race after the lease expired: still exactly one takes over.
    let after = t + 2 + LEASE_MS;
    let results =
        futures::future::join_all((0..CONCURRENT_CALLERS).map(|_| ledger.claim(&e.alert_id, after, LEASE_MS))).await;
    let winners = results
        .into_iter()
        .filter(|r| matches!(r, Ok(Claim::Claimed(_))))
        .count();
    assert_eq!(
        winners, 1,
        "exactly one concurrent takeover of an expired lease must win"
    );
    assert_eq!(must_get(ledger, &e.alert_id).await.attempts, 2);
}

/// Many concurrent accepts of one alert id: exactly one `New`, the rest `Duplicate`.
pub async fn ledger_concurrent_accepts_write_once(ledger: &dyn Ledger) {
    let t = now();
    let id = unique_id("race-accept");
    let entries: Vec<LedgerEntry> = (0..CONCURRENT_CALLERS)
        .map(|i| {
            let mut e = sample_entry(&id, t);
            e.rule = format!("rule-{i}");
            e
        })
        .collect();
    let results = futures::future::join_all(entries.iter().map(|e| ledger.accept(e))).await;
    let mut new = 0;
    for r in results {
        match r.expect("concurrent accept") {
            Accept::New => new += 1,
            Accept::Duplicate(existing) => assert_eq!(existing.alert_id, id),
        }
    }
    assert_eq!(
        new, 1,
        "exactly one of {CONCURRENT_CALLERS} concurrent accepts must be New"
    );
    let stored = must_get(ledger, &id).await;
    assert!(
        entries.contains(&stored),
        "the stored entry must be one of the accepted ones, intact"
    );
}

/// Fencing: every claim increments `claim_token`; after a takeover the first holder's token is stale, and
/// `complete`, `retry_later`, `fail` and `extend` with it answer `Stale` and write nothing; the new holder's
/// token works.
pub async fn ledger_fencing_refuses_a_stale_holder(ledger: &dyn Ledger) {
    let t = now();
    let e = accepted(ledger, "fence", t).await;
    assert_eq!(e.claim_token, 0, "an entry never claimed is at token 0");
    let first = claimed(ledger, &e.alert_id, t + 1).await;
    assert_eq!(first.claim_token, 1, "the first claim is token 1");
    // the first holder's lease runs out mid-call; a second deliverer takes over
    let second = claimed(ledger, &e.alert_id, t + 2 + LEASE_MS).await;
    assert!(
        second.claim_token > first.claim_token,
        "a takeover must issue a newer token ({} after {})",
        second.claim_token,
        first.claim_token
    );
    let stale = first.claim_token;
    let is_stale = |what: &str, r: Result<(), PortError>| match r {
        Err(PortError::Stale(_)) => {}
        other => panic!("{what} with a stale token must be Err(Stale), got {other:?}"),
    };
    is_stale(
        "complete",
        ledger
            .complete(&e.alert_id, stale, &sample_record(50), t + 3 + LEASE_MS)
            .await,
    );
    is_stale(
        "retry_later",
        ledger
            .retry_later(
                &e.alert_id,
                stale,
                &RetryLater::new("retryable", "503"),
                t + 3 + LEASE_MS,
            )
            .await,
    );
    is_stale(
        "fail",
        ledger
            .fail(&e.alert_id, stale, "permanent", "late", t + 3 + LEASE_MS)
            .await,
    );
    is_stale(
        "extend",
        ledger
            .extend(&e.alert_id, stale, t + 3 + LEASE_MS, LEASE_MS)
            .await
            .map(|_| ()),
    );
    assert_eq!(
        must_get(ledger, &e.alert_id).await,
        second,
        "refused writes must leave the new holder's entry untouched"
    );
    // the current holder completes; a stale completion afterwards still cannot replace the record
    ledger
        .complete(&e.alert_id, second.claim_token, &sample_record(51), t + 4 + LEASE_MS)
        .await
        .expect("complete by the current holder");
    ledger
        .complete(&e.alert_id, second.claim_token, &sample_record(52), t + 5 + LEASE_MS)
        .await
        .expect("completing again with the same token is idempotent");
    is_stale(
        "complete after completion",
        ledger
            .complete(&e.alert_id, stale, &sample_record(53), t + 6 + LEASE_MS)
            .await,
    );
    let done = must_get(ledger, &e.alert_id).await;
    assert_eq!(done.state, DeliveryState::Completed);
    assert_eq!(done.record, Some(sample_record(51)), "the first record is kept");
    assert_eq!(
        done.claim_token, second.claim_token,
        "only claims (and reopen) move the token"
    );
}

/// `extend`: the holder keeps its claim past the original lease (`max(lease, now + lease_ms)`), so a later
/// claim is `Busy`; on an entry not `InProgress` it is `Stale`; on a missing id `NotFound`.
pub async fn ledger_extend_keeps_the_claim(ledger: &dyn Ledger) {
    let t = now();
    let e = accepted(ledger, "extend", t).await;
    let held = claimed(ledger, &e.alert_id, t + 1).await;
    let original = held.lease_until_ms.expect("a claim sets the lease");
    let until = ledger
        .extend(&e.alert_id, held.claim_token, t + LEASE_MS, LEASE_MS)
        .await
        .expect("extend by the holder");
    assert_eq!(until, t + 2 * LEASE_MS, "extend sets now + lease_ms");
    // an extend that would shorten the lease leaves it
    assert_eq!(
        ledger
            .extend(&e.alert_id, held.claim_token, t + 2, 10)
            .await
            .expect("extend"),
        until,
        "extend never shortens a lease"
    );
    let got = must_get(ledger, &e.alert_id).await;
    assert_eq!(got.lease_until_ms, Some(until));
    assert_eq!(got.attempts, held.attempts, "extend is not an attempt");
    assert_eq!(got.claim_token, held.claim_token, "extend keeps the token");
    assert!(until > original);
    assert_eq!(
        ledger.claim(&e.alert_id, original + 1, LEASE_MS).await.expect("claim"),
        Claim::Busy { lease_until_ms: until },
        "past the original lease the extended claim still holds"
    );
    ledger
        .retry_later(
            &e.alert_id,
            held.claim_token,
            &RetryLater::new("retryable", "503"),
            t + 3,
        )
        .await
        .expect("retry_later");
    match ledger.extend(&e.alert_id, held.claim_token, t + 4, LEASE_MS).await {
        Err(PortError::Stale(_)) => {}
        other => panic!("extend of a Retrying entry must be Err(Stale), got {other:?}"),
    }
    let missing = unique_id("extend-missing");
    match ledger.extend(&missing, 0, t, LEASE_MS).await {
        Err(PortError::NotFound(_)) => {}
        other => panic!("extend of a missing id must be Err(NotFound), got {other:?}"),
    }
}
