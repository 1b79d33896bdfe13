//! The shared port conformance suite (`relay_ports::conformance`) against SQS and DynamoDB on moto_server.
//! One test per check, so a failure names the semantic that broke.
//!
//! The ledger talks to moto through `AtomicDynamo`: moto applies conditional writes without a lock, so
//! only with requests serialised does it give DynamoDB's per-item atomicity the race checks rely on.

use relay_aws::testing::{AtomicDynamo, create_ledger_table, create_queue, moto_endpoint};
use relay_aws::{DynamoLedger, SqsQueue, sdk_config};
use relay_ports::conformance as suite;

/// A ledger on a fresh table, and the proxy it talks through (stops when dropped).
async fn ledger() -> Option<(DynamoLedger, AtomicDynamo)> {
    let endpoint = moto_endpoint()?;
    let config = sdk_config().await;
    let table = create_ledger_table(&config, "ledger").await;
    let proxy = AtomicDynamo::start(&endpoint).await;
    Some((DynamoLedger::from_client(proxy.client(&config), table), proxy))
}

async fn queue() -> Option<SqsQueue> {
    moto_endpoint()?;
    let config = sdk_config().await;
    let q = create_queue(&config, "conf", suite::MIN_QUEUE_VISIBILITY.as_secs() as u32 + 10).await;
    Some(q.adapter(&config))
}

macro_rules! ledger_checks {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            let Some((ledger, _proxy)) = ledger().await else { return };
            suite::$check(&ledger).await;
        }
    )*};
}

macro_rules! queue_checks {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            let Some(queue) = queue().await else { return };
            suite::$check(&queue).await;
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

queue_checks!(
    queue_send_receive_delete,
    queue_delay_is_respected,
    queue_visibility_and_change_visibility,
    queue_receive_many_and_depth,
    queue_delete_with_unknown_receipt_fails,
    queue_delete_batch,
    queue_refuses_empty_and_oversized_bodies,
);

/// The whole ledger suite against one shared table, as `run_ledger_suite` promises it can run.
#[tokio::test]
async fn whole_ledger_suite_on_one_table() {
    let Some((ledger, _proxy)) = ledger().await else { return };
    suite::run_ledger_suite(&ledger).await;
}

/// Concurrent claims from separate tasks on a multi-threaded runtime, each with its own client.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_from_separate_clients_grant_exactly_one() {
    let Some((first, proxy)) = ledger().await else { return };
    let endpoint = proxy.endpoint.clone();
    let table = first.table().to_string();
    let t = relay_ports::Clock::now_ms(&relay_ports::SystemClock);
    let entry = suite::sample_entry(&suite::unique_id("multi-client"), t);
    relay_ports::Ledger::accept(&first, &entry).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (table, endpoint) = (table.clone(), endpoint.clone());
        let id = entry.alert_id.clone();
        tasks.push(tokio::spawn(async move {
            let config = sdk_config().await;
            let client = aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&config)
                    .endpoint_url(endpoint)
                    .build(),
            );
            let ledger = DynamoLedger::from_client(client, table);
            relay_ports::Ledger::claim(&ledger, &id, t + 1, 30_000).await.unwrap()
        }));
    }
    let claims = futures::future::join_all(tasks).await;
    let won = claims
        .iter()
        .filter(|c| matches!(c, Ok(relay_ports::Claim::Claimed(_))))
        .count();
    assert_eq!(won, 1, "exactly one deliverer may win: {claims:?}");
    assert_eq!(
        relay_ports::Ledger::get(&first, &entry.alert_id)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        1
    );
}
