//! The conformance suite: one set of checks every [`Ledger`] and [`AlertQueue`] adapter must pass.
//!
//! Enabled by the `conformance` cargo feature (use it from `[dev-dependencies]` only). Each check is a
//! plain `async fn` that panics with a message naming the broken semantic. Run them from an adapter's own
//! tests, one `#[tokio::test]` per check (so a failure names the semantic) or all at once with
//! [`run_ledger_suite`] / [`run_queue_suite`]:
//!
//! ```ignore
//! #[tokio::test]
//! async fn ledger_conforms() {
//!     let ledger = MyLedger::open(...).await;
//!     relay_ports::conformance::run_ledger_suite(&ledger).await;
//! }
//!
//! #[tokio::test]
//! async fn queue_conforms() {
//!     relay_ports::conformance::run_queue_suite(|| async {
//!         Box::new(MyQueue::create_fresh(...).await) as Box<dyn AlertQueue>
//!     })
//!     .await;
//! }
//! ```
//!
//! # What the suite expects of the system under test
//! - **Ledger**: one ledger may be shared by every check (each check uses fresh, unique alert ids). The
//!   `now_ms` arguments are close to the real clock, because `accept` and `get` have no `now` argument and
//!   must judge expiry (`expires_at_s`) against the real clock: an entry whose `expires_at_s` lies in the
//!   past is treated as absent by `get` and may be overwritten by `accept`.
//! - **Queue**: every check gets a fresh, empty queue from the factory. Its visibility timeout must be at
//!   least [`MIN_QUEUE_VISIBILITY`] so a received message stays invisible for the whole check. The queue
//!   checks sleep for a few seconds in total (delays of 1–2 s).
//!
//! # Behaviour the trait docs leave open, fixed here so both adapters agree
//! - `mark_queued` and `forget` on a missing alert id: `Ok(())`, nothing is created.
//! - `forget` deletes only an `Accepted` entry; any other state is left alone.
//! - `complete`, `retry_later` and `fail` on a missing alert id: `Err(PortError::NotFound)`, nothing is created.
//! - `reopen` on a missing alert id: `Ok(false)`.
//! - `retry_later` and `fail` clear the lease (`lease_until_ms = None`); `complete` too.
//! - `Busy` reports the holder's `lease_until_ms`; a claim at exactly `lease_until_ms` is still `Busy`
//!   (the lease expires when `lease_until_ms < now_ms`).
//! - Claims that return `Completed`, `Failed` or `Busy` do not increment `attempts`.
//! - Every state change sets `updated_at_ms` to the call's `now_ms`.
//! - `delete` with a receipt the queue never issued is an `Err`.
//! - `extend` on a missing alert id: `Err(PortError::NotFound)`; on an entry that is not `InProgress` with
//!   the caller's token: `Err(PortError::Stale)`.
//! - A stale token is refused even when the write would be a no-op (completing a `Completed` entry).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{
    Accept, AlertQueue, Claim, Clock, DeliveryState, Ledger, LedgerEntry, PortError, ReceivedMessage, RecordRef,
    RetryLater, SystemClock,
};

/// The shortest visibility timeout a queue handed to the queue checks may have.
pub const MIN_QUEUE_VISIBILITY: Duration = Duration::from_secs(20);

/// The lease the ledger checks claim with.
pub const LEASE_MS: i64 = 60_000;

/// How many concurrent callers the concurrency checks start.
pub const CONCURRENT_CALLERS: usize = 12;

/// A process-unique id with a readable prefix (`conf-claim-1718000000000-42-7`).
pub fn unique_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "conf-{prefix}-{}-{}-{}",
        SystemClock.now_ms(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fully populated `Accepted` entry for `alert_id`, received at `now_ms`, expiring in 7 days.
pub fn sample_entry(alert_id: &str, now_ms: i64) -> LedgerEntry {
    LedgerEntry {
        alert_id: alert_id.to_string(),
        webhook_id: Some(format!("msg_{alert_id}")),
        state: DeliveryState::Accepted,
        attempts: 0,
        first_received_at_ms: now_ms,
        updated_at_ms: now_ms,
        lease_until_ms: None,
        needs_lookup: false,
        rule: "insider-threat-critical".into(),
        record_type: "security_incident".into(),
        table: "sn_si_incident".into(),
        severity: "critical".into(),
        delivery: "realtime".into(),
        correlation_id: format!("relay:{alert_id}"),
        config_hash: "sha256:0123456789abcdef".into(),
        record: None,
        last_error_class: None,
        last_error: None,
        expires_at_s: now_ms / 1000 + 7 * 24 * 3600,
        claim_token: 0,
        no_create_before_ms: None,
        not_before_ms: None,
        aggregate: None,
        plan: None,
    }
}

fn sample_record(n: u32) -> RecordRef {
    RecordRef {
        table: "sn_si_incident".into(),
        sys_id: format!("{n:032x}"),
        number: Some(format!("SIR{n:07}")),
        link: format!("https://example.service-now.com/sn_si_incident.do?sys_id={n:032x}"),
    }
}

fn now() -> i64 {
    SystemClock.now_ms()
}

/// The entry's current claim token (0 when it has none or is missing): what a caller that just read it holds.
async fn token(ledger: &dyn Ledger, alert_id: &str) -> u64 {
    match ledger.get(alert_id).await {
        Ok(e) => e.map_or(0, |e| e.claim_token),
        Err(e) => panic!("get({alert_id}) failed: {e}"),
    }
}

/// An expiry far in the future (what `reopen` is given: the retention counted from the replay).
fn far_expiry() -> i64 {
    now() / 1000 + 30 * 24 * 3600
}

async fn must_get(ledger: &dyn Ledger, alert_id: &str) -> LedgerEntry {
    match ledger.get(alert_id).await {
        Ok(Some(e)) => e,
        Ok(None) => panic!("get({alert_id}) found no entry, expected one"),
        Err(e) => panic!("get({alert_id}) failed: {e}"),
    }
}

/// Accept a fresh sample entry and return it.
async fn accepted(ledger: &dyn Ledger, prefix: &str, at: i64) -> LedgerEntry {
    let entry = sample_entry(&unique_id(prefix), at);
    let got = ledger.accept(&entry).await.expect("accept a fresh entry");
    assert_eq!(got, Accept::New, "accept of a fresh alert id must answer New");
    entry
}

async fn claimed(ledger: &dyn Ledger, alert_id: &str, at: i64) -> LedgerEntry {
    match ledger.claim(alert_id, at, LEASE_MS).await.expect("claim") {
        Claim::Claimed(e) => e,
        other => panic!("claim of {alert_id} should be Claimed, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Ledger checks
// ---------------------------------------------------------------------------------------------------------

/// `get` returns exactly what `accept` wrote (every field round-trips); a missing id gives `None`.
pub async fn ledger_get_round_trips_every_field(ledger: &dyn Ledger) {
    let t = now();
    let mut entry = sample_entry(&unique_id("roundtrip"), t);
    // Populate the optional fields too, including text that needs escaping.
    entry.webhook_id = Some("msg_2Lx \"quoted\" ünïcode".into());
    entry.last_error_class = Some("retryable".into());
    entry.last_error = Some("HTTP 503: <html>Service Unavailable</html>".into());
    entry.needs_lookup = true;
    entry.attempts = 3;
    entry.lease_until_ms = Some(t + 5);
    entry.record = Some(sample_record(7));
    assert_eq!(ledger.accept(&entry).await.expect("accept"), Accept::New);
    assert_eq!(
        must_get(ledger, &entry.alert_id).await,
        entry,
        "get must return the entry as accepted"
    );

    let mut bare = sample_entry(&unique_id("roundtrip-bare"), t);
    bare.webhook_id = None;
    bare.record = Some(RecordRef {
        number: None,
        ..sample_record(8)
    });
    assert_eq!(ledger.accept(&bare).await.expect("accept"), Accept::New);
    assert_eq!(
        must_get(ledger, &bare.alert_id).await,
        bare,
        "None fields must stay None"
    );

    let missing = unique_id("missing");
    assert_eq!(
        ledger.get(&missing).await.expect("get missing"),
        None,
        "get of an unknown id must be None"
    );
}

/// `accept` answers `New` once, then `Duplicate` carrying the stored entry (the second write is dropped).
pub async fn ledger_accept_new_then_duplicate(ledger: &dyn Ledger) {
    let t = now();
    let first = accepted(ledger, "dup", t).await;
    let mut second = sample_entry(&first.alert_id, t + 1000);
    second.rule = "some-other-rule".into();
    second.webhook_id = Some("msg_other".into());
    match ledger.accept(&second).await.expect("second accept") {
        Accept::Duplicate(existing) => assert_eq!(existing, first, "Duplicate must carry the first entry"),
        Accept::New => panic!("second accept of the same alert id must be Duplicate"),
    }
    assert_eq!(
        must_get(ledger, &first.alert_id).await,
        first,
        "the duplicate must not overwrite anything"
    );

    // A duplicate of an entry that moved on reports its current state.
    claimed(ledger, &first.alert_id, t + 2000).await;
    match ledger.accept(&first).await.expect("third accept") {
        Accept::Duplicate(existing) => assert_eq!(existing.state, DeliveryState::InProgress),
        Accept::New => panic!("accept of a claimed alert must be Duplicate"),
    }
}

/// An entry whose `expires_at_s` is in the past is invisible to `get` and may be overwritten by `accept`.
pub async fn ledger_expired_entries_are_absent(ledger: &dyn Ledger) {
    let t = now();
    let mut old = sample_entry(&unique_id("expired"), t - 10 * 86_400_000);
    old.expires_at_s = t / 1000 - 60;
    assert_eq!(ledger.accept(&old).await.expect("accept expired"), Accept::New);
    assert_eq!(
        ledger.get(&old.alert_id).await.expect("get"),
        None,
        "get must filter out expired entries"
    );
    let fresh = sample_entry(&old.alert_id, t);
    assert_eq!(
        ledger.accept(&fresh).await.expect("accept over expired"),
        Accept::New,
        "accept must overwrite an expired entry"
    );
    assert_eq!(must_get(ledger, &fresh.alert_id).await, fresh);
}

/// `mark_queued`: `Accepted` → `Queued`; a no-op in every other state and for a missing id.
pub async fn ledger_mark_queued(ledger: &dyn Ledger) {
    let t = now();
    let e = accepted(ledger, "queued", t).await;
    ledger.mark_queued(&e.alert_id, t + 10).await.expect("mark_queued");
    let got = must_get(ledger, &e.alert_id).await;
    assert_eq!(
        got.state,
        DeliveryState::Queued,
        "mark_queued must move Accepted to Queued"
    );
    assert_eq!(got.updated_at_ms, t + 10, "mark_queued must set updated_at_ms");
    assert_eq!(got.attempts, 0);
    ledger
        .mark_queued(&e.alert_id, t + 20)
        .await
        .expect("second mark_queued");
    assert_eq!(
        must_get(ledger, &e.alert_id).await,
        got,
        "mark_queued on Queued must change nothing"
    );

    // A claimed (or later) entry must not be moved back.
    let held = claimed(ledger, &e.alert_id, t + 30).await;
    ledger
        .mark_queued(&e.alert_id, t + 40)
        .await
        .expect("mark_queued on InProgress");
    assert_eq!(
        must_get(ledger, &e.alert_id).await,
        held,
        "mark_queued on InProgress must change nothing"
    );
    ledger
        .complete(&e.alert_id, token(ledger, &e.alert_id).await, &sample_record(1), t + 50)
        .await
        .expect("complete");
    let done = must_get(ledger, &e.alert_id).await;
    ledger
        .mark_queued(&e.alert_id, t + 60)
        .await
        .expect("mark_queued on Completed");
    assert_eq!(
        must_get(ledger, &e.alert_id).await,
        done,
        "mark_queued on Completed must change nothing"
    );

    let missing = unique_id("queued-missing");
    ledger
        .mark_queued(&missing, t)
        .await
        .expect("mark_queued of a missing id is Ok");
    assert_eq!(
        ledger.get(&missing).await.expect("get"),
        None,
        "mark_queued must not create entries"
    );
}

/// `forget` deletes an `Accepted` entry (a later accept is `New`), leaves other states alone, and is
/// `Ok` for a missing id.
pub async fn ledger_forget(ledger: &dyn Ledger) {
    let t = now();
    let e = accepted(ledger, "forget", t).await;
    ledger.forget(&e.alert_id).await.expect("forget");
    assert_eq!(
        ledger.get(&e.alert_id).await.expect("get"),
        None,
        "forget must delete an Accepted entry"
    );
    assert_eq!(
        ledger.accept(&e).await.expect("re-accept"),
        Accept::New,
        "re-accept after forget must be New"
    );

    ledger.mark_queued(&e.alert_id, t + 1).await.expect("mark_queued");
    let queued = must_get(ledger, &e.alert_id).await;
    ledger.forget(&e.alert_id).await.expect("forget of a Queued entry");
    assert_eq!(
        must_get(ledger, &e.alert_id).await,
        queued,
        "forget must not delete a Queued entry"
    );

    claimed(ledger, &e.alert_id, t + 2).await;
    ledger
        .complete(&e.alert_id, token(ledger, &e.alert_id).await, &sample_record(2), t + 3)
        .await
        .expect("complete");
    let done = must_get(ledger, &e.alert_id).await;
    ledger.forget(&e.alert_id).await.expect("forget of a Completed entry");
    assert_eq!(
        must_get(ledger, &e.alert_id).await,
        done,
        "forget must not delete a Completed entry"
    );

    ledger
        .forget(&unique_id("forget-missing"))
        .await
        .expect("forget of a missing id is Ok");
}

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
/// cleared); `Completed` and `Failed` entries are left alone; a missing id is `NotFound`.
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

/// Every ledger check, in order, against one ledger.
pub async fn run_ledger_suite(ledger: &dyn Ledger) {
    ledger_get_round_trips_every_field(ledger).await;
    ledger_accept_new_then_duplicate(ledger).await;
    ledger_expired_entries_are_absent(ledger).await;
    ledger_mark_queued(ledger).await;
    ledger_forget(ledger).await;
    ledger_claim_from_each_claimable_state(ledger).await;
    ledger_claim_busy_then_takeover(ledger).await;
    ledger_claim_final_states(ledger).await;
    ledger_complete(ledger).await;
    ledger_retry_later(ledger).await;
    ledger_fail(ledger).await;
    ledger_reopen(ledger).await;
    ledger_concurrent_claims_grant_exactly_one(ledger).await;
    ledger_concurrent_accepts_write_once(ledger).await;
    ledger_fencing_refuses_a_stale_holder(ledger).await;
    ledger_extend_keeps_the_claim(ledger).await;
    ledger_retry_windows(ledger).await;
    ledger_reopen_keeps_lookup_and_extends_expiry(ledger).await;
    ledger_aggregate_seals_all_or_nothing(ledger).await;
}

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

// ---------------------------------------------------------------------------------------------------------
// Queue checks (each needs a fresh, empty queue)
// ---------------------------------------------------------------------------------------------------------

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
