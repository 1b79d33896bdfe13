//! Ledger checks of an alert's intake: `accept`, `get`, expiry, `mark_queued`, `forget`.

use crate::{Accept, DeliveryState, Ledger, RecordRef};

use super::{accepted, claimed, must_get, now, sample_entry, sample_record, token, unique_id};

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
