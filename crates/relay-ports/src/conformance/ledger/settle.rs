//! Ledger checks of settling an attempt: `complete`, `retry_later` (and its windows), `fail`.

use crate::{Claim, DeliveryState, Ledger, PortError, RetryLater};

use super::{LEASE_MS, accepted, claimed, must_get, now, sample_record, token, unique_id};

/// `complete` stores the record, is idempotent (the first record is kept) and works from any non-final
/// state; on a missing id it is `NotFound`.
pub async fn ledger_complete(ledger: &dyn Ledger) {
    let t = now();
    let e = accepted(ledger, "complete", t).await;
    claimed(ledger, &e.alert_id, t + 1).await;
    ledger
        .complete(&e.alert_id, token(ledger, &e.alert_id).await, &sample_record(10), t + 2)
        .await
        .expect("complete");
    let done = must_get(ledger, &e.alert_id).await;
    assert_eq!(done.state, DeliveryState::Completed);
    assert_eq!(done.record, Some(sample_record(10)));
    assert_eq!(done.attempts, 1);
    assert_eq!(done.updated_at_ms, t + 2);
    assert_eq!(done.lease_until_ms, None, "complete must clear the lease");
    assert_eq!(done.first_received_at_ms, e.first_received_at_ms);

    ledger
        .complete(&e.alert_id, token(ledger, &e.alert_id).await, &sample_record(11), t + 3)
        .await
        .expect("second complete is Ok");
    assert_eq!(
        must_get(ledger, &e.alert_id).await,
        done,
        "a second complete must keep the first record"
    );

    // From Retrying (an ambiguous attempt whose record the lookup found) and straight from Queued.
    let r = accepted(ledger, "complete-retrying", t).await;
    claimed(ledger, &r.alert_id, t + 1).await;
    ledger
        .retry_later(
            &r.alert_id,
            token(ledger, &r.alert_id).await,
            &RetryLater::new("ambiguous", "timeout").needing_lookup(true),
            t + 2,
        )
        .await
        .expect("retry_later");
    ledger
        .complete(&r.alert_id, token(ledger, &r.alert_id).await, &sample_record(12), t + 3)
        .await
        .expect("complete from Retrying");
    let got = must_get(ledger, &r.alert_id).await;
    assert_eq!(
        (got.state, got.record),
        (DeliveryState::Completed, Some(sample_record(12)))
    );
    assert!(got.needs_lookup, "complete must keep needs_lookup");

    let q = accepted(ledger, "complete-queued", t).await;
    ledger.mark_queued(&q.alert_id, t + 1).await.expect("mark_queued");
    ledger
        .complete(&q.alert_id, token(ledger, &q.alert_id).await, &sample_record(13), t + 2)
        .await
        .expect("complete from Queued");
    assert_eq!(must_get(ledger, &q.alert_id).await.state, DeliveryState::Completed);

    let missing = unique_id("complete-missing");
    match ledger
        .complete(&missing, token(ledger, &missing).await, &sample_record(14), t)
        .await
    {
        Err(PortError::NotFound(_)) => {}
        other => panic!("complete of a missing id must be NotFound, got {other:?}"),
    }
    assert_eq!(
        ledger.get(&missing).await.expect("get"),
        None,
        "complete must not create entries"
    );
}

/// `retry_later`: non-final → `Retrying` with the error, lease cleared, `needs_lookup` OR-ed in (never
/// cleared), `attempts` one less when `unsent`; `Completed` and `Failed` entries are left alone; a missing
/// id is `NotFound`.
pub async fn ledger_retry_later(ledger: &dyn Ledger) {
    let t = now();
    let e = accepted(ledger, "retry", t).await;
    claimed(ledger, &e.alert_id, t + 1).await;
    ledger
        .retry_later(
            &e.alert_id,
            token(ledger, &e.alert_id).await,
            &RetryLater::new("ambiguous", "read timed out").needing_lookup(true),
            t + 2,
        )
        .await
        .expect("retry_later");
    let got = must_get(ledger, &e.alert_id).await;
    assert_eq!(got.state, DeliveryState::Retrying);
    assert_eq!(got.lease_until_ms, None, "retry_later must clear the lease");
    assert_eq!(got.last_error_class.as_deref(), Some("ambiguous"));
    assert_eq!(got.last_error.as_deref(), Some("read timed out"));
    assert!(got.needs_lookup);
    assert_eq!(got.attempts, 1, "retry_later must not count an attempt");
    assert_eq!(got.updated_at_ms, t + 2);

    claimed(ledger, &e.alert_id, t + 3).await;
    ledger
        .retry_later(
            &e.alert_id,
            token(ledger, &e.alert_id).await,
            &RetryLater::new("retryable", "HTTP 503").needing_lookup(false),
            t + 4,
        )
        .await
        .expect("retry_later");
    let got = must_get(ledger, &e.alert_id).await;
    assert!(
        got.needs_lookup,
        "retry_later(needs_lookup = false) must not clear needs_lookup"
    );
    assert_eq!(
        got.last_error_class.as_deref(),
        Some("retryable"),
        "the last error replaces the previous one"
    );
    assert_eq!(got.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(got.attempts, 2);

    // needs_lookup stays false when never set.
    let plain = accepted(ledger, "retry-plain", t).await;
    claimed(ledger, &plain.alert_id, t + 1).await;
    ledger
        .retry_later(
            &plain.alert_id,
            token(ledger, &plain.alert_id).await,
            &RetryLater::new("retryable", "HTTP 429").needing_lookup(false),
            t + 2,
        )
        .await
        .expect("retry_later");
    assert!(!must_get(ledger, &plain.alert_id).await.needs_lookup);

    // a released claim that made no call (a deferred flush record) does not count as an attempt
    claimed(ledger, &plain.alert_id, t + 3).await;
    assert_eq!(must_get(ledger, &plain.alert_id).await.attempts, 2);
    ledger
        .retry_later(
            &plain.alert_id,
            token(ledger, &plain.alert_id).await,
            &RetryLater {
                unsent: true,
                ..RetryLater::new("deferred", "the flush reached its deadline first")
            },
            t + 4,
        )
        .await
        .expect("retry_later");
    let got = must_get(ledger, &plain.alert_id).await;
    assert_eq!(
        got.attempts, 1,
        "retry_later(unsent) must take the claim's attempt back"
    );
    assert_eq!(got.state, DeliveryState::Retrying);
    assert!(!got.needs_lookup);

    // Final states are untouched.
    let c = accepted(ledger, "retry-completed", t).await;
    claimed(ledger, &c.alert_id, t + 1).await;
    ledger
        .complete(&c.alert_id, token(ledger, &c.alert_id).await, &sample_record(20), t + 2)
        .await
        .expect("complete");
    let done = must_get(ledger, &c.alert_id).await;
    ledger
        .retry_later(
            &c.alert_id,
            token(ledger, &c.alert_id).await,
            &RetryLater::new("ambiguous", "late").needing_lookup(true),
            t + 3,
        )
        .await
        .expect("retry_later on Completed");
    assert_eq!(
        must_get(ledger, &c.alert_id).await,
        done,
        "retry_later must not touch a Completed entry"
    );

    let f = accepted(ledger, "retry-failed", t).await;
    ledger
        .fail(
            &f.alert_id,
            token(ledger, &f.alert_id).await,
            "permanent",
            "bad table",
            t + 1,
        )
        .await
        .expect("fail");
    let failed = must_get(ledger, &f.alert_id).await;
    ledger
        .retry_later(
            &f.alert_id,
            token(ledger, &f.alert_id).await,
            &RetryLater::new("ambiguous", "late").needing_lookup(true),
            t + 2,
        )
        .await
        .expect("retry_later on Failed");
    assert_eq!(
        must_get(ledger, &f.alert_id).await,
        failed,
        "retry_later must not touch a Failed entry"
    );

    let missing = unique_id("retry-missing");
    match ledger
        .retry_later(
            &missing,
            token(ledger, &missing).await,
            &RetryLater::new("retryable", "x").needing_lookup(false),
            t,
        )
        .await
    {
        Err(PortError::NotFound(_)) => {}
        other => panic!("retry_later of a missing id must be NotFound, got {other:?}"),
    }
    assert_eq!(
        ledger.get(&missing).await.expect("get"),
        None,
        "retry_later must not create entries"
    );
}

/// `fail`: non-final → `Failed` with the error (lease cleared); a `Completed` entry is left alone; a
/// second `fail` keeps the entry `Failed` with the latest error; a missing id is `NotFound`.
pub async fn ledger_fail(ledger: &dyn Ledger) {
    let t = now();
    let e = accepted(ledger, "fail", t).await;
    claimed(ledger, &e.alert_id, t + 1).await;
    ledger
        .fail(
            &e.alert_id,
            token(ledger, &e.alert_id).await,
            "window_exhausted",
            "24 h retry window exhausted",
            t + 2,
        )
        .await
        .expect("fail");
    let got = must_get(ledger, &e.alert_id).await;
    assert_eq!(got.state, DeliveryState::Failed);
    assert_eq!(got.last_error_class.as_deref(), Some("window_exhausted"));
    assert_eq!(got.last_error.as_deref(), Some("24 h retry window exhausted"));
    assert_eq!(got.lease_until_ms, None, "fail must clear the lease");
    assert_eq!(got.attempts, 1);
    assert_eq!(got.updated_at_ms, t + 2);
    assert_eq!(got.record, None);

    // From Queued and Retrying as well.
    let q = accepted(ledger, "fail-queued", t).await;
    ledger.mark_queued(&q.alert_id, t + 1).await.expect("mark_queued");
    ledger
        .fail(&q.alert_id, token(ledger, &q.alert_id).await, "permanent", "ACL", t + 2)
        .await
        .expect("fail from Queued");
    assert_eq!(must_get(ledger, &q.alert_id).await.state, DeliveryState::Failed);
    let r = accepted(ledger, "fail-retrying", t).await;
    claimed(ledger, &r.alert_id, t + 1).await;
    ledger
        .retry_later(
            &r.alert_id,
            token(ledger, &r.alert_id).await,
            &RetryLater::new("retryable", "503").needing_lookup(false),
            t + 2,
        )
        .await
        .expect("retry_later");
    ledger
        .fail(&r.alert_id, token(ledger, &r.alert_id).await, "auth", "401", t + 3)
        .await
        .expect("fail from Retrying");
    assert_eq!(must_get(ledger, &r.alert_id).await.state, DeliveryState::Failed);

    // Completed is final.
    let c = accepted(ledger, "fail-completed", t).await;
    claimed(ledger, &c.alert_id, t + 1).await;
    ledger
        .complete(&c.alert_id, token(ledger, &c.alert_id).await, &sample_record(30), t + 2)
        .await
        .expect("complete");
    let done = must_get(ledger, &c.alert_id).await;
    ledger
        .fail(
            &c.alert_id,
            token(ledger, &c.alert_id).await,
            "permanent",
            "late failure",
            t + 3,
        )
        .await
        .expect("fail on Completed is Ok");
    assert_eq!(
        must_get(ledger, &c.alert_id).await,
        done,
        "fail must not touch a Completed entry"
    );

    let missing = unique_id("fail-missing");
    match ledger
        .fail(&missing, token(ledger, &missing).await, "permanent", "x", t)
        .await
    {
        Err(PortError::NotFound(_)) => {}
        other => panic!("fail of a missing id must be NotFound, got {other:?}"),
    }
    assert_eq!(
        ledger.get(&missing).await.expect("get"),
        None,
        "fail must not create entries"
    );
}

/// `retry_later` keeps the latest settle window (`no_create_before_ms`) and replaces `not_before_ms`; a
/// claim before `not_before_ms` is `NotBefore` and changes nothing, one at or after it is granted.
pub async fn ledger_retry_windows(ledger: &dyn Ledger) {
    let t = now();
    let e = accepted(ledger, "windows", t).await;
    let c1 = claimed(ledger, &e.alert_id, t + 1).await;
    ledger
        .retry_later(
            &e.alert_id,
            c1.claim_token,
            &RetryLater {
                no_create_before_ms: Some(t + 90_000),
                not_before_ms: Some(t + 3_600_000),
                ..RetryLater::new("ambiguous", "timed out").needing_lookup(true)
            },
            t + 2,
        )
        .await
        .expect("retry_later");
    let waiting = must_get(ledger, &e.alert_id).await;
    assert_eq!(waiting.no_create_before_ms, Some(t + 90_000));
    assert_eq!(waiting.not_before_ms, Some(t + 3_600_000));
    assert_eq!(
        ledger.claim(&e.alert_id, t + 60_000, LEASE_MS).await.expect("claim"),
        Claim::NotBefore {
            until_ms: t + 3_600_000
        },
        "a claim before not_before_ms must wait"
    );
    assert_eq!(
        must_get(ledger, &e.alert_id).await,
        waiting,
        "a refused claim changes nothing"
    );
    let c2 = claimed(ledger, &e.alert_id, t + 3_600_000).await;
    assert_eq!(c2.attempts, 2);
    ledger
        .retry_later(
            &e.alert_id,
            c2.claim_token,
            &RetryLater {
                no_create_before_ms: Some(t + 10),
                ..RetryLater::new("retryable", "HTTP 503")
            },
            t + 3_600_001,
        )
        .await
        .expect("retry_later");
    let got = must_get(ledger, &e.alert_id).await;
    assert_eq!(
        got.no_create_before_ms,
        Some(t + 90_000),
        "an earlier settle window must not replace a later one"
    );
    assert_eq!(got.not_before_ms, None, "not_before_ms is replaced (cleared)");
    assert!(got.needs_lookup, "needs_lookup is never cleared");
}
