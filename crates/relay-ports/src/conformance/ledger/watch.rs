//! Ledger checks of the records' watch entries: `watched` (the live `Queued` watch entries in key order,
//! paged) and `observe` (compare-and-set of the last known state, `done` ending the watch).

use crate::{Accept, DeliveryState, Ledger, LedgerEntry, WATCH_DELIVERY};

use super::{must_get, now, sample_entry, sample_record, unique_id};

fn watch_entry(key: &str, at: i64) -> LedgerEntry {
    LedgerEntry {
        state: DeliveryState::Queued,
        delivery: WATCH_DELIVERY.into(),
        record: Some(sample_record(3)),
        webhook_id: None,
        ..sample_entry(key, at)
    }
}

/// The watch entries of `prefix`, paged through `watched` with pages of `page`.
async fn watched_under(ledger: &dyn Ledger, prefix: &str, page: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = Some(prefix.to_string());
    loop {
        let got = ledger.watched(after.as_deref(), page).await.expect("watched");
        assert!(got.len() <= page as usize, "a page holds at most `limit` entries");
        let Some(last) = got.last() else { break };
        for pair in got.windows(2) {
            assert!(pair[0].alert_id < pair[1].alert_id, "ascending key order");
        }
        after = Some(last.alert_id.clone());
        let mine: Vec<String> = got
            .iter()
            .map(|e| e.alert_id.clone())
            .filter(|k| k.starts_with(prefix))
            .collect();
        let done = mine.len() < got.len();
        out.extend(mine);
        if done {
            // past this check's keys: the rest belongs to other checks on a shared ledger
            break;
        }
    }
    out
}

/// `watched` lists the live `Queued` watch entries (not other deliveries, not other states, not expired
/// ones) after a key, in key order, in pages of at most `limit`.
pub async fn ledger_watched_lists_live_watch_entries_in_key_order(ledger: &dyn Ledger) {
    let t = now();
    let prefix = format!("{}:", unique_id("watch"));
    let keys: Vec<String> = (0..5).map(|i| format!("{prefix}{i}")).collect();
    for k in keys.iter().rev() {
        assert_eq!(ledger.accept(&watch_entry(k, t)).await.expect("accept"), Accept::New);
    }
    // not watched: another delivery, another state, expired
    let alert = sample_entry(&format!("{prefix}alert"), t);
    ledger.accept(&alert).await.expect("accept");
    let mut done = watch_entry(&format!("{prefix}done"), t);
    done.state = DeliveryState::Completed;
    ledger.accept(&done).await.expect("accept");
    let mut expired = watch_entry(&format!("{prefix}expired"), t);
    expired.expires_at_s = t / 1000 - 10;
    ledger.accept(&expired).await.expect("accept");

    assert_eq!(watched_under(ledger, &prefix, 2).await, keys, "pages of 2");
    assert_eq!(watched_under(ledger, &prefix, 100).await, keys, "one page");
    let after_two = ledger.watched(Some(&keys[1]), 2).await.expect("watched after a key");
    assert_eq!(after_two[0].alert_id, keys[2], "strictly after the key");
    assert_eq!(after_two[0], must_get(ledger, &keys[2]).await, "the whole entry");
}

/// `observe` sets the plan only from the expected one; `done` completes the entry, which leaves the
/// watch list.
pub async fn ledger_observe_is_a_compare_and_set(ledger: &dyn Ledger) {
    let t = now();
    let prefix = format!("{}:", unique_id("observe"));
    let key = format!("{prefix}record");
    ledger.accept(&watch_entry(&key, t)).await.expect("accept");
    assert!(
        ledger
            .observe(&key, None, r#"{"state":"1"}"#, false, t + 1)
            .await
            .expect("observe"),
        "from no plan"
    );
    let e = must_get(ledger, &key).await;
    assert_eq!(e.plan.as_deref(), Some(r#"{"state":"1"}"#));
    assert_eq!((e.updated_at_ms, e.state), (t + 1, DeliveryState::Queued));
    assert!(
        !ledger
            .observe(&key, None, r#"{"state":"9"}"#, false, t + 2)
            .await
            .expect("observe"),
        "a stale expectation writes nothing"
    );
    assert_eq!(must_get(ledger, &key).await.plan.as_deref(), Some(r#"{"state":"1"}"#));
    assert!(
        ledger
            .observe(&key, Some(r#"{"state":"1"}"#), r#"{"state":"7"}"#, true, t + 3)
            .await
            .expect("observe")
    );
    let e = must_get(ledger, &key).await;
    assert_eq!(
        (e.plan.as_deref(), e.state),
        (Some(r#"{"state":"7"}"#), DeliveryState::Completed)
    );
    assert!(
        watched_under(ledger, &prefix, 10).await.is_empty(),
        "done: no longer watched"
    );
    let missing = unique_id("observe-missing");
    assert!(
        !ledger
            .observe(&missing, None, "{}", false, t)
            .await
            .expect("observe missing")
    );
}
