//! Ledger checks of `reopen` (a replay from the dead-letter queue).

use crate::{DeliveryState, Ledger, PortError, RetryLater};

use super::{LEASE_MS, accepted, claimed, far_expiry, must_get, now, sample_record, token, unique_id};

/// `reopen`: only `Failed` → `Queued` (attempts 0, retry window restarted, true); false otherwise.
pub async fn ledger_reopen(ledger: &dyn Ledger) {
    let t = now();
    let e = accepted(ledger, "reopen", t).await;
    claimed(ledger, &e.alert_id, t + 1).await;
    claimed(ledger, &e.alert_id, t + 2 + LEASE_MS).await;
    ledger
        .fail(
            &e.alert_id,
            token(ledger, &e.alert_id).await,
            "window_exhausted",
            "gave up",
            t + 3 + LEASE_MS,
        )
        .await
        .expect("fail");
    let later = t + 3_600_000;
    assert!(
        ledger
            .reopen(&e.alert_id, token(ledger, &e.alert_id).await, later, far_expiry())
            .await
            .expect("reopen"),
        "reopen of a Failed entry is true"
    );
    let got = must_get(ledger, &e.alert_id).await;
    assert_eq!(got.state, DeliveryState::Queued);
    assert_eq!(got.attempts, 0, "reopen must reset attempts");
    assert_eq!(got.first_received_at_ms, later, "reopen must restart the retry window");
    assert_eq!(got.updated_at_ms, later);
    assert_eq!(got.lease_until_ms, None);
    assert_eq!(got.correlation_id, e.correlation_id);
    let again = claimed(ledger, &e.alert_id, later + 1).await;
    assert_eq!(again.attempts, 1, "the first claim after reopen is attempt 1");

    // Not Failed → false, nothing changed.
    assert!(
        !ledger
            .reopen(&e.alert_id, token(ledger, &e.alert_id).await, later + 2, far_expiry())
            .await
            .expect("reopen InProgress")
    );
    assert_eq!(
        must_get(ledger, &e.alert_id).await,
        again,
        "reopen must not touch an InProgress entry"
    );
    ledger
        .complete(
            &e.alert_id,
            token(ledger, &e.alert_id).await,
            &sample_record(40),
            later + 3,
        )
        .await
        .expect("complete");
    let done = must_get(ledger, &e.alert_id).await;
    assert!(
        !ledger
            .reopen(&e.alert_id, token(ledger, &e.alert_id).await, later + 4, far_expiry())
            .await
            .expect("reopen Completed")
    );
    assert_eq!(
        must_get(ledger, &e.alert_id).await,
        done,
        "reopen must not touch a Completed entry"
    );

    let a = accepted(ledger, "reopen-accepted", t).await;
    assert!(
        !ledger
            .reopen(&a.alert_id, token(ledger, &a.alert_id).await, t + 1, far_expiry())
            .await
            .expect("reopen Accepted")
    );
    assert_eq!(must_get(ledger, &a.alert_id).await, a);

    let missing = unique_id("reopen-missing");
    assert!(
        !ledger
            .reopen(&missing, token(ledger, &missing).await, t, far_expiry())
            .await
            .expect("reopen of a missing id is Ok(false)")
    );
    assert_eq!(
        ledger.get(&missing).await.expect("get"),
        None,
        "reopen must not create entries"
    );
}

/// `fail` then `reopen` keep `needs_lookup` and the settle window; `reopen` raises `expires_at_s`, moves the
/// token on (the failing holder's token is stale afterwards), and with a stale token is `Stale`.
pub async fn ledger_reopen_keeps_lookup_and_extends_expiry(ledger: &dyn Ledger) {
    let t = now();
    let e = accepted(ledger, "reopen-keep", t).await;
    let c = claimed(ledger, &e.alert_id, t + 1).await;
    ledger
        .retry_later(
            &e.alert_id,
            c.claim_token,
            &RetryLater {
                no_create_before_ms: Some(t + 90_000),
                ..RetryLater::new("ambiguous", "timed out").needing_lookup(true)
            },
            t + 2,
        )
        .await
        .expect("retry_later");
    let c = claimed(ledger, &e.alert_id, t + 3).await;
    ledger
        .fail(&e.alert_id, c.claim_token, "window_exhausted", "gave up", t + 4)
        .await
        .expect("fail");
    let failed = must_get(ledger, &e.alert_id).await;
    assert!(failed.needs_lookup, "fail keeps needs_lookup");
    match ledger.reopen(&e.alert_id, c.claim_token + 1, t + 5, far_expiry()).await {
        Err(PortError::Stale(_)) => {}
        other => panic!("reopen with a token other than the entry's must be Err(Stale), got {other:?}"),
    }
    assert_eq!(
        must_get(ledger, &e.alert_id).await,
        failed,
        "a refused reopen changes nothing"
    );
    let expiry = e.expires_at_s + 30 * 24 * 3600;
    assert!(
        ledger
            .reopen(&e.alert_id, c.claim_token, t + 6, expiry)
            .await
            .expect("reopen")
    );
    let got = must_get(ledger, &e.alert_id).await;
    assert_eq!(got.state, DeliveryState::Queued);
    assert!(
        got.needs_lookup,
        "reopen keeps needs_lookup: the next attempt looks up first"
    );
    assert_eq!(
        got.no_create_before_ms,
        Some(t + 90_000),
        "reopen keeps the settle window"
    );
    assert_eq!(got.expires_at_s, expiry, "reopen extends expires_at_s");
    assert!(got.claim_token > c.claim_token, "reopen moves the token on");
    match ledger
        .complete(&e.alert_id, c.claim_token, &sample_record(60), t + 7)
        .await
    {
        Err(PortError::Stale(_)) => {}
        other => panic!("the failing holder's token must be stale after reopen, got {other:?}"),
    }
    // reopen never shortens the expiry
    let c = claimed(ledger, &e.alert_id, t + 8).await;
    ledger
        .fail(&e.alert_id, c.claim_token, "permanent", "x", t + 9)
        .await
        .expect("fail");
    assert!(
        ledger
            .reopen(&e.alert_id, c.claim_token, t + 10, e.expires_at_s)
            .await
            .expect("reopen")
    );
    assert_eq!(must_get(ledger, &e.alert_id).await.expires_at_s, expiry);
}
