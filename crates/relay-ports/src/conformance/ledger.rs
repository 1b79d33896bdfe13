//! The [`Ledger`] checks: the helpers and sample entries they share, and [`run_ledger_suite`]. The checks
//! themselves are grouped by operation: `intake` (accept, get, mark_queued, forget), `claim` (claims,
//! leases, fencing, concurrency), `settle` (complete, retry_later, fail), `reopen` and `aggregate`.

use crate::{Accept, Claim, Clock, DeliveryState, Ledger, LedgerEntry, RecordRef, SystemClock};

use super::unique_id;

mod aggregate;
mod claim;
mod intake;
mod reopen;
mod settle;
mod watch;

pub use aggregate::ledger_aggregate_seals_all_or_nothing;
pub use claim::{
    ledger_claim_busy_then_takeover, ledger_claim_final_states, ledger_claim_from_each_claimable_state,
    ledger_concurrent_accepts_write_once, ledger_concurrent_claims_grant_exactly_one, ledger_extend_keeps_the_claim,
    ledger_fencing_refuses_a_stale_holder,
};
pub use intake::{
    ledger_accept_new_then_duplicate, ledger_expired_entries_are_absent, ledger_forget,
    ledger_get_round_trips_every_field, ledger_mark_queued,
};
pub use reopen::{ledger_reopen, ledger_reopen_keeps_lookup_and_extends_expiry};
pub use settle::{ledger_complete, ledger_fail, ledger_retry_later, ledger_retry_windows};
pub use watch::{ledger_observe_is_a_compare_and_set, ledger_watched_lists_live_watch_entries_in_key_order};

/// The lease the ledger checks claim with.
pub const LEASE_MS: i64 = 60_000;

/// How many concurrent callers the concurrency checks start.
pub const CONCURRENT_CALLERS: usize = 12;

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
        note: false,
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
    ledger_watched_lists_live_watch_entries_in_key_order(ledger).await;
    ledger_observe_is_a_compare_and_set(ledger).await;
}
