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
//!
//! The checks are in one file per port: `conformance/ledger.rs` (and the ledger's checks by operation in
//! `conformance/ledger/`) and `conformance/queue.rs`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Clock, SystemClock};

mod ledger;
mod queue;

pub use ledger::{CONCURRENT_CALLERS, LEASE_MS, run_ledger_suite, sample_entry};
pub use ledger::{
    ledger_accept_new_then_duplicate, ledger_aggregate_seals_all_or_nothing, ledger_claim_busy_then_takeover,
    ledger_claim_final_states, ledger_claim_from_each_claimable_state, ledger_complete,
    ledger_concurrent_accepts_write_once, ledger_concurrent_claims_grant_exactly_one,
    ledger_expired_entries_are_absent, ledger_extend_keeps_the_claim, ledger_fail,
    ledger_fencing_refuses_a_stale_holder, ledger_forget, ledger_get_round_trips_every_field, ledger_mark_queued,
    ledger_observe_is_a_compare_and_set, ledger_reopen, ledger_reopen_keeps_lookup_and_extends_expiry,
    ledger_retry_later, ledger_retry_windows, ledger_watched_lists_live_watch_entries_in_key_order,
};
pub use queue::{MIN_QUEUE_VISIBILITY, run_queue_suite};
pub use queue::{
    queue_delay_is_respected, queue_delete_batch, queue_delete_with_unknown_receipt_fails,
    queue_receive_many_and_depth, queue_refuses_empty_and_oversized_bodies, queue_send_receive_delete,
    queue_visibility_and_change_visibility,
};

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
