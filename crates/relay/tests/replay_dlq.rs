//! `relay replay-dlq`, the real binary, over both back ends: `--aws` against moto_server (real SQS and
//! DynamoDB calls) and `--local` against a real SQLite file.
//!
//! The `--aws` tests need AWS_ENDPOINT_URL (+ dummy credentials and AWS_REGION), as scripts/test.sh exports;
//! they skip loudly otherwise (panic when RELAY_REQUIRE_MOTO=1). Every test creates its own queues and ledger.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use relay_aws::testing::{create_ledger_table, create_queue, moto_endpoint, unique_name};
use relay_aws::{DynamoLedger, SqsQueue};
use relay_core::batch::PlannedRecord;
use relay_core::{Alert, Config, Router};
use relay_pipeline::envelope::{DeadLetter, Envelope};
use relay_pipeline::ingest::new_entry;
use relay_ports::{AlertQueue, Claim, Clock, DeliveryState, Ledger, SystemClock};

const DAY: Duration = Duration::from_secs(86_400);

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// Run the real `relay` binary; the replay settings come only from `args` (and `env`).
fn relay(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay"));
    cmd.args(args)
        .env_remove("DLQ_URL")
        .env_remove("REALTIME_QUEUE_URL")
        .env_remove("LEDGER_TABLE")
        .env_remove("RELAY_DB");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the relay binary runs")
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The text of a run that exited with `code` and printed each of `lines`.
fn expect_exit(o: &Output, code: i32, lines: &[&str]) -> String {
    let text = out(o);
    assert_eq!(o.status.code(), Some(code), "{text}");
    for line in lines {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    text
}

fn sample_alert(name: &str) -> Alert {
    let path = format!("{}/../../events/alerts/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Alert::from_slice(&bytes).unwrap_or_else(|e| panic!("{path} is not a valid alert: {e:?}"))
}

fn router() -> Router {
    Router::new(Config::default_config(), Some(vec![7; 32])).expect("the default config routes")
}

/// The envelope ingest writes for a sample alert, with its alert id made unique.
fn alert_envelope(name: &str) -> Envelope {
    let mut alert = sample_alert(name);
    alert.alert_id = format!("{}-{}", alert.alert_id, uuid::Uuid::new_v4().simple());
    Envelope::alert(
        router().route(&alert),
        Some(format!("msg_{}", uuid::Uuid::new_v4().simple())),
        now_ms(),
    )
}

/// A batch aggregate covering two alerts (what flush dead-letters when it gives up on a batch record).
fn aggregate_envelope() -> Envelope {
    let members = [
        alert_envelope("productivity-low.json"),
        alert_envelope("productivity-medium.json"),
    ];
    let correlation_id = format!("relay:b:{}", uuid::Uuid::new_v4().simple());
    let first = &members[0];
    Envelope::aggregate(
        PlannedRecord {
            correlation_id,
            record_type: first.record_type(),
            table: first.table().to_string(),
            fields: first.fields().clone(),
            dedupe: Default::default(),
            alert_ids: members.iter().map(Envelope::ledger_key).collect(),
            members: vec![0, 1],
            received_at_ms: members.iter().map(|m| m.received_at_ms).collect(),
            member_list: None,
            person: None,
            chart: None,
            thread: None,
            document: None,
            valid_to: None,
        },
        now_ms(),
    )
}

/// The stack in miniature: a DLQ, a realtime queue and a ledger table, all new.
struct Stack {
    config: aws_config::SdkConfig,
    dlq: SqsQueue,
    realtime: SqsQueue,
    ledger: DynamoLedger,
}

impl Stack {
    async fn new() -> Stack {
        let config = relay_aws::sdk_config().await;
        let dlq = create_queue(&config, "replay-dlq", 30).await.adapter(&config);
        let realtime = create_queue(&config, "replay-rt", 30).await.adapter(&config);
        let ledger = DynamoLedger::new(&config, create_ledger_table(&config, "replay-ledger").await);
        Stack {
            config,
            dlq,
            realtime,
            ledger,
        }
    }

    fn flags(&self) -> Vec<String> {
        vec![
            "--dlq-url".into(),
            self.dlq.url().into(),
            "--realtime-queue-url".into(),
            self.realtime.url().into(),
            "--ledger-table".into(),
            self.ledger.table().into(),
        ]
    }

    fn replay(&self, extra: &[&str]) -> Output {
        let flags = self.flags();
        let mut args = vec!["replay-dlq", "--aws"];
        args.extend(flags.iter().map(String::as_str));
        args.extend(extra);
        relay(&args, &[])
    }

    async fn dead_letter(&self, env: &Envelope) -> String {
        dead_letter(&self.ledger, &self.dlq, env).await
    }

    /// (visible, in flight) messages on a queue.
    async fn counts(&self, queue: &SqsQueue) -> (u64, u64) {
        let out = aws_sdk_sqs::Client::new(&self.config)
            .get_queue_attributes()
            .queue_url(queue.url())
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let attrs = out.attributes.unwrap_or_default();
        let get = |n: &QueueAttributeName| attrs.get(n).and_then(|v| v.parse().ok()).unwrap_or(0);
        (
            get(&QueueAttributeName::ApproximateNumberOfMessages),
            get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// Every body on `queue` (received, then deleted).
    async fn drain(&self, queue: &SqsQueue) -> Vec<String> {
        let mut bodies = Vec::new();
        loop {
            let batch = queue.receive(10, Duration::from_millis(200)).await.unwrap();
            if batch.is_empty() {
                return bodies;
            }
            for m in batch {
                queue.delete(&m.receipt).await.unwrap();
                bodies.push(m.body);
            }
        }
    }

    async fn state(&self, key: &str) -> DeliveryState {
        self.ledger
            .get(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no ledger entry {key}"))
            .state
    }
}

/// `env` as deliver dead-letters it after a permanent `error`.
fn dead_lettered(env: &Envelope, error: &str) -> Envelope {
    let mut dead = env.clone();
    dead.dead_letter = Some(DeadLetter {
        error_class: "permanent".into(),
        error: error.into(),
        failed_at_ms: now_ms(),
        attempts: 1,
    });
    dead
}

/// What deliver does when it gives up: every covered ledger entry FAILED, the envelope on the DLQ.
/// Returns the message body.
async fn dead_letter(ledger: &dyn Ledger, dlq: &dyn AlertQueue, env: &Envelope) -> String {
    for key in env.covered_keys() {
        let mut entry = new_entry(env, None, DAY);
        entry.alert_id = key.clone();
        ledger.accept(&entry).await.unwrap();
        ledger
            .fail(&key, 0, "permanent", "data policy: u_case_owner is mandatory", now_ms())
            .await
            .unwrap();
    }
    let body = dead_lettered(env, "data policy: u_case_owner is mandatory").to_json();
    dlq.send(&body, Duration::ZERO).await.unwrap();
    body
}

fn all_keys(envs: &[Envelope]) -> Vec<String> {
    envs.iter().flat_map(Envelope::covered_keys).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_then_replay_moves_messages_and_reopens_the_ledger() {
    let Some(_endpoint) = moto_endpoint() else { return };
    let stack = Stack::new().await;
    let envs = vec![
        alert_envelope("seed-usb-copy-847-files.json"),
        alert_envelope("dlp-critical.json"),
        aggregate_envelope(),
    ];
    let mut bodies = BTreeSet::new();
    for env in &envs {
        bodies.insert(stack.dead_letter(env).await);
    }
    stack.dlq.send("this is not an envelope", Duration::ZERO).await.unwrap();
    let keys = all_keys(&envs);
    assert_eq!(keys.len(), 5);

    // dry run (settings from the environment this time): lists, changes nothing
    let o = relay(
        &["replay-dlq", "--aws", "--dry-run"],
        &[
            ("DLQ_URL", stack.dlq.url()),
            ("REALTIME_QUEUE_URL", stack.realtime.url()),
            ("LEDGER_TABLE", stack.ledger.table()),
        ],
    );
    let text = expect_exit(&o, 0, &[]);
    for env in &envs {
        assert!(text.contains(&format!("would replay {}", env.ledger_key())), "{text}");
    }
    assert!(
        text.contains("permanent: data policy: u_case_owner is mandatory"),
        "{text}"
    );
    assert!(text.contains("unreadable message left in the DLQ"), "{text}");
    assert!(
        text.contains("dry run: 3 of 4 dead-lettered messages would be replayed; 1 unreadable"),
        "{text}"
    );
    // every message visible again at once, nothing sent, nothing reopened
    assert_eq!(stack.counts(&stack.dlq).await, (4, 0), "{text}");
    assert_eq!(stack.counts(&stack.realtime).await, (0, 0));
    for key in &keys {
        assert_eq!(stack.state(key).await, DeliveryState::Failed, "{key}");
    }

    // the replay
    let o = stack.replay(&[]);
    let text = expect_exit(
        &o,
        0,
        &[
            "replayed 3 of 4 messages (5 ledger entries reopened); 1 unreadable left in the DLQ; 0 errors",
            "unreadable message left in the DLQ",
        ],
    );
    // the unreadable message stays, visible again right away
    assert_eq!(stack.counts(&stack.dlq).await, (1, 0), "{text}");
    // the same bodies on the realtime queue
    let moved: BTreeSet<String> = stack.drain(&stack.realtime).await.into_iter().collect();
    assert_eq!(moved, bodies);
    // every covered ledger entry reopened: QUEUED, attempts and window restarted, claimable
    let before = now_ms() - 60_000;
    for key in &keys {
        let entry = stack.ledger.get(key).await.unwrap().unwrap();
        assert_eq!(entry.state, DeliveryState::Queued, "{key}");
        assert_eq!(entry.attempts, 0, "{key}");
        assert!(entry.first_received_at_ms > before, "{key}: window restarted");
        assert!(
            matches!(
                stack.ledger.claim(key, now_ms(), 30_000).await.unwrap(),
                Claim::Claimed(_)
            ),
            "{key}"
        );
    }

    // a second run: only the unreadable message is left
    let o = stack.replay(&[]);
    expect_exit(
        &o,
        0,
        &["replayed 0 of 1 messages (0 ledger entries reopened); 1 unreadable left in the DLQ; 0 errors"],
    );
    let left = stack.drain(&stack.dlq).await;
    assert_eq!(left, vec!["this is not an envelope".to_string()]);

    // empty now
    let o = stack.replay(&[]);
    expect_exit(&o, 0, &["the dead-letter queue is empty: nothing to replay"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_more_than_one_receive_batch() {
    let Some(_endpoint) = moto_endpoint() else { return };
    let stack = Stack::new().await;
    let mut bodies = BTreeSet::new();
    for _ in 0..55 {
        bodies.insert(stack.dead_letter(&alert_envelope("dlp-high.json")).await);
    }
    let o = stack.replay(&[]);
    expect_exit(
        &o,
        0,
        &["replayed 55 of 55 messages (55 ledger entries reopened); 0 unreadable left in the DLQ; 0 errors"],
    );
    assert_eq!(stack.counts(&stack.dlq).await, (0, 0));
    let moved: BTreeSet<String> = stack.drain(&stack.realtime).await.into_iter().collect();
    assert_eq!(moved, bodies);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_whose_send_fails_stays_on_the_dlq() {
    let Some(_endpoint) = moto_endpoint() else { return };
    let stack = Stack::new().await;
    // a FIFO queue as the "realtime" queue: it exists, but refuses a send without a message group
    let fifo_name = format!(
        "{}.fifo",
        unique_name("replay-fifo").chars().take(70).collect::<String>()
    );
    let fifo_url = aws_sdk_sqs::Client::new(&stack.config)
        .create_queue()
        .queue_name(&fifo_name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let env = alert_envelope("seed-usb-copy-847-files.json");
    let body = stack.dead_letter(&env).await;
    let o = relay(
        &[
            "replay-dlq",
            "--aws",
            "--dlq-url",
            stack.dlq.url(),
            "--realtime-queue-url",
            &fifo_url,
            "--ledger-table",
            stack.ledger.table(),
        ],
        &[],
    );
    let text = expect_exit(
        &o,
        1,
        &[
            "could not send it to the realtime queue",
            &fifo_url,
            "replayed 0 of 1 messages (",
            "0 unreadable left in the DLQ; 1 errors",
        ],
    );
    // still on the DLQ, visible again; a later replay (once the target is right) still works
    assert_eq!(stack.counts(&stack.dlq).await, (1, 0), "{text}");
    let o = stack.replay(&[]);
    expect_exit(&o, 0, &["replayed 1 of 1 messages (0 ledger entries reopened)"]);
    assert_eq!(stack.drain(&stack.realtime).await, vec![body]);
    assert_eq!(stack.state(&env.ledger_key()).await, DeliveryState::Queued);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ledger_entry_that_cannot_be_reopened_keeps_its_message_on_the_dlq() {
    let Some(_endpoint) = moto_endpoint() else { return };
    let stack = Stack::new().await;
    let env = alert_envelope("dlp-critical.json");
    stack
        .dlq
        .send(&dead_lettered(&env, "x").to_json(), Duration::ZERO)
        .await
        .unwrap();
    // a FAILED item the ledger cannot read back (no routing attributes): reopen reports an error
    use aws_sdk_dynamodb::types::AttributeValue as V;
    aws_sdk_dynamodb::Client::new(&stack.config)
        .put_item()
        .table_name(stack.ledger.table())
        .item("alert_id", V::S(env.ledger_key()))
        .item("state", V::S("FAILED".into()))
        .item("expires_at", V::N((now_ms() / 1000 + 86_400).to_string()))
        .send()
        .await
        .unwrap();
    let o = stack.replay(&[]);
    let text = expect_exit(
        &o,
        1,
        &[
            &format!("could not reopen the ledger entry {}", env.ledger_key()),
            "left in the DLQ",
            "replayed 0 of 1 messages",
        ],
    );
    assert_eq!(stack.counts(&stack.dlq).await, (1, 0), "{text}");
    assert_eq!(stack.counts(&stack.realtime).await, (0, 0), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_settings_and_missing_resources_are_named() {
    let Some(endpoint) = moto_endpoint() else { return };
    // nothing given: every missing setting named, exit 2, before any AWS call
    let o = relay(&["replay-dlq", "--aws"], &[]);
    let text = expect_exit(&o, 2, &[]);
    for name in [
        "--dlq-url (or DLQ_URL)",
        "--realtime-queue-url (or REALTIME_QUEUE_URL)",
        "--ledger-table",
    ] {
        assert!(text.contains(name), "{name}: {text}");
    }
    assert!(text.contains("sam list stack-outputs"), "{text}");
    // one given (as an environment variable): the other two named
    let o = relay(&["replay-dlq", "--aws", "--dry-run"], &[("DLQ_URL", "http://x")]);
    let text = expect_exit(&o, 2, &[]);
    assert!(!text.contains("--dlq-url") && text.contains("--realtime-queue-url") && text.contains("--ledger-table"));

    let stack = Stack::new().await;
    stack.dead_letter(&alert_envelope("dlp-critical.json")).await;
    let missing_queue = format!(
        "{}/123456789012/{}",
        endpoint.trim_end_matches('/'),
        unique_name("no-such-queue")
    );
    let run = |dlq: &str, realtime: &str, table: &str| {
        relay(
            &[
                "replay-dlq",
                "--aws",
                "--dlq-url",
                dlq,
                "--realtime-queue-url",
                realtime,
                "--ledger-table",
                table,
            ],
            &[],
        )
    };
    // no such DLQ
    let o = run(&missing_queue, stack.realtime.url(), stack.ledger.table());
    expect_exit(&o, 1, &[&format!("cannot read the dead-letter queue {missing_queue}")]);
    // no such realtime queue
    let o = run(stack.dlq.url(), &missing_queue, stack.ledger.table());
    expect_exit(&o, 1, &[&format!("cannot reach the realtime queue {missing_queue}")]);
    // no such ledger table
    let o = run(stack.dlq.url(), stack.realtime.url(), "relay-no-such-table");
    expect_exit(&o, 1, &["cannot read the ledger table relay-no-such-table"]);
    // nothing was touched by any of them
    assert_eq!(stack.counts(&stack.dlq).await, (1, 0));
    assert_eq!(stack.counts(&stack.realtime).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn local_replay_takes_the_same_steps_over_the_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let db_s = db.to_str().unwrap();
    let store = relay_local::LocalStore::open(&db).unwrap();
    let (dlq, realtime, ledger) = (store.queue("dlq"), store.queue("realtime"), store.ledger());
    let envs = vec![alert_envelope("dlp-critical.json"), aggregate_envelope()];
    let mut bodies = BTreeSet::new();
    for env in &envs {
        bodies.insert(dead_letter(&ledger, &dlq, env).await);
    }
    dlq.send("this is not an envelope", Duration::ZERO).await.unwrap();
    let keys = all_keys(&envs);
    assert_eq!(keys.len(), 4);
    let all_visible = |messages: &[relay_local::QueuedMessage]| messages.iter().all(|m| m.visible_at_ms <= now_ms());

    // dry run: lists, changes nothing, leaves every message visible
    let o = relay(&["replay-dlq", "--local", "--db", db_s, "--dry-run"], &[]);
    let text = expect_exit(&o, 0, &[]);
    for env in &envs {
        assert!(text.contains(&format!("would replay {}", env.ledger_key())), "{text}");
    }
    assert!(text.contains("unreadable message left in the DLQ"), "{text}");
    assert!(
        text.contains("dry run: 2 of 3 dead-lettered messages would be replayed; 1 unreadable"),
        "{text}"
    );
    let left = dlq.list(10).await.unwrap();
    assert_eq!(left.len(), 3);
    assert!(all_visible(&left), "{left:?}");
    assert_eq!(realtime.depth().await.unwrap(), 0);
    for key in &keys {
        assert_eq!(
            ledger.get(key).await.unwrap().unwrap().state,
            DeliveryState::Failed,
            "{key}"
        );
    }

    // the replay: the same bodies on the realtime queue, every covered entry reopened
    let o = relay(&["replay-dlq", "--db", db_s], &[]);
    expect_exit(
        &o,
        0,
        &[
            "replayed 2 of 3 messages (4 ledger entries reopened); 1 unreadable left in the DLQ; 0 errors",
            "a running `relay serve` on this database delivers them",
        ],
    );
    let moved: BTreeSet<String> = realtime.list(10).await.unwrap().into_iter().map(|m| m.body).collect();
    assert_eq!(moved, bodies);
    for key in &keys {
        assert_eq!(
            ledger.get(key).await.unwrap().unwrap().state,
            DeliveryState::Queued,
            "{key}"
        );
    }
    // only the unreadable message is left, visible again at once
    let left = dlq.list(10).await.unwrap();
    assert_eq!(
        left.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["this is not an envelope"]
    );
    assert!(all_visible(&left), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_critical_alert_goes_to_the_critical_queue_when_it_is_given() {
    let Some(_endpoint) = moto_endpoint() else { return };
    let stack = Stack::new().await;
    let config = relay_aws::sdk_config().await;
    let critical = create_queue(&config, "replay-crit", 30).await.adapter(&config);
    let (crit, high) = (
        alert_envelope("seed-usb-copy-847-files.json"),
        alert_envelope("dlp-high.json"),
    );
    let crit_body = stack.dead_letter(&crit).await;
    let high_body = stack.dead_letter(&high).await;
    let o = stack.replay(&["--critical-queue-url", critical.url()]);
    expect_exit(&o, 0, &[]);
    assert_eq!(stack.drain(&critical).await, [crit_body]);
    assert_eq!(stack.drain(&stack.realtime).await, [high_body]);
    assert_eq!(stack.state(&crit.ledger_key()).await, DeliveryState::Queued);
}
