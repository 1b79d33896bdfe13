//! The shared port conformance suite (`relay_ports::conformance`) against the SQLite adapters.

use std::sync::Arc;

use relay_local::{LocalStore, SqliteLedger};
use relay_ports::AlertQueue;
use relay_ports::conformance as suite;
use tempfile::TempDir;

fn store() -> (TempDir, LocalStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::open(dir.path().join("relay.db")).expect("open store");
    (dir, store)
}

fn ledger() -> (TempDir, SqliteLedger) {
    let (dir, store) = store();
    (dir, store.ledger())
}

macro_rules! ledger_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_dir, ledger) = ledger();
            suite::$name(&ledger).await;
        }
    )*};
}

ledger_checks!(
    ledger_get_round_trips_every_field,
    ledger_accept_new_then_duplicate,
    ledger_expired_entries_are_absent,
    ledger_mark_queued,
    ledger_forget,
    ledger_claim_from_each_claimable_state,
    ledger_claim_busy_then_takeover,
    ledger_claim_final_states,
    ledger_complete,
    ledger_retry_later,
    ledger_fail,
    ledger_reopen,
    ledger_concurrent_claims_grant_exactly_one,
    ledger_concurrent_accepts_write_once,
    ledger_fencing_refuses_a_stale_holder,
    ledger_extend_keeps_the_claim,
    ledger_retry_windows,
    ledger_reopen_keeps_lookup_and_extends_expiry,
    ledger_watched_lists_live_watch_entries_in_key_order,
    ledger_observe_is_a_compare_and_set,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_ledger_suite_passes_on_one_shared_ledger() {
    let (_dir, ledger) = ledger();
    suite::run_ledger_suite(&ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_suite_passes_with_a_fresh_queue_per_check() {
    let (_dir, store) = store();
    let store = Arc::new(store);
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    suite::run_queue_suite(|| {
        let store = Arc::clone(&store);
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            Box::new(
                store
                    .queue(&format!("conformance-{n}"))
                    .with_visibility_timeout(suite::MIN_QUEUE_VISIBILITY),
            ) as Box<dyn AlertQueue>
        }
    })
    .await;
}
