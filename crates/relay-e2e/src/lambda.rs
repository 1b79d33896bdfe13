//! A whole Lambda stack per test: uniquely named queues, ledger table, secrets and topic on moto_server,
//! the ServiceNow simulator on a loopback port, and the three handlers built from explicit [`Settings`]
//! (a compressed retry schedule instead of the environment's).
//!
//! Handlers are invoked as Lambda invokes them: API Gateway v2 events go through `lambda_http`'s adapter
//! (JSON in, the serialized API Gateway response out); SQS batches are real `ReceiveMessage` results put
//! into the SQS event envelope, and [`Stack::poll_realtime`] (or [`Stack::poll_critical`]) deletes what the handler did not report as
//! failed, as the event source mapping does; the flush gets the scheduled event.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lambda_http::Service;
use lambda_http::request::LambdaRequest;
use lambda_runtime::{Context, LambdaEvent};
use relay_aws::testing::{self, AtomicDynamo, PublishedNotice, TestQueue, TestTopic};
use relay_core::BackoffPolicy;
use relay_lambda::{Settings, aws_ports, deliver, flush, ingest};
use relay_pipeline::{Ingest, Ports, WebhookSecrets};
use relay_ports::{AlertQueue, Clock, LedgerEntry, ReceivedMessage, SystemClock};
use serde_json::{Value, json};
use servicenow_sim::{RunningSim, SimConfig, Simulator};

/// The webhook signing secret every stack uses.
pub const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A sample alert body from `events/alerts`.
pub fn sample(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("events/alerts").join(name)).unwrap_or_else(|e| panic!("events/alerts/{name}: {e}"))
}

/// A Lambda event envelope from `events/lambda`.
pub fn envelope(name: &str) -> Value {
    let path = repo().join("events/lambda").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A minimal valid alert.
pub fn alert_body(id: &str, alert_type: &str, severity: &str, employee: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "alert_id": id, "alert_type": alert_type, "severity": severity,
        "occurred_at": "2026-11-20T14:03:00Z",
        "employee": {"id": employee, "department": "Sales"},
        "description": format!("activity of {id}"), "risk_score": 30,
        "evidence_url": format!("https://monitor.example.com/a/{id}")
    }))
    .expect("alert JSON")
}

/// The push secret of a stack started with [`StackOptions::push`].
pub const PUSH_SECRET: &str = "whsec_cHVzaC1zZWNyZXQtb2YtdGhlLWJ1c2luZXNzLXJ1bGU=";

/// How a stack differs from the default one.
pub struct StackOptions {
    /// The retry window (RETRY_WINDOW_SECONDS, compressed).
    pub window: Duration,
    pub sim: SimConfig,
    /// The ServiceNow user in the ServiceNow secret (password `<user>-password`).
    pub username: &'static str,
    /// Send DynamoDB requests through [`AtomicDynamo`] (needed when deliverers race on one item).
    pub atomic_dynamo: bool,
    /// Use this realtime queue URL instead of the created queue (e.g. one that does not exist).
    pub realtime_queue_url: Option<String>,
    /// The flush's budget (FLUSH_BUDGET_SECONDS, whole seconds).
    pub flush_budget: Duration,
    /// How long no create follows an ambiguous one (compressed: 50 ms).
    pub settle: Duration,
    /// The realtime queue's receive limit the deliverer watches (default: derived from the retry policy,
    /// as on AWS).
    pub max_receives: Option<u32>,
    /// Set `CRITICAL_QUEUE_URL` to the stack's critical queue (as template.yaml does). Off by default: the
    /// stack then behaves as one from before the critical lane (critical alerts on the realtime queue).
    pub critical_lane: bool,
    /// A routing config (YAML) for the ingest function (`RELAY_CONFIG_PATH`); the compiled-in default
    /// otherwise.
    pub config: Option<String>,
    /// Set `PUSH_SECRET_ARN` to a secret holding [`PUSH_SECRET`] (the push endpoint on).
    pub push: bool,
    /// Set `CALLBACK_URL` to this receiver and `CALLBACK_SECRET_ARN` to a secret holding
    /// [`relay_pipeline::callback::receiver::CALLBACK_SECRET`].
    pub callback_url: Option<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            window: Duration::from_secs(120),
            sim: SimConfig::default(),
            username: "relay",
            atomic_dynamo: false,
            realtime_queue_url: None,
            flush_budget: Duration::from_secs(60),
            settle: Duration::from_millis(50),
            max_receives: None,
            critical_lane: false,
            config: None,
            callback_url: None,
            push: false,
        }
    }
}

/// An HTTP answer as API Gateway would send it on.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

/// One test's Lambda stack.
pub struct Stack {
    pub sdk: aws_config::SdkConfig,
    pub sim: RunningSim,
    pub settings: Settings,
    pub ports: Ports,
    pub realtime: TestQueue,
    /// Always created; used only with [`StackOptions::critical_lane`].
    pub critical: TestQueue,
    pub batch: TestQueue,
    pub dlq: TestQueue,
    pub topic: TestTopic,
    pub ingest: Arc<Ingest>,
    pub lanes: deliver::Lanes,
    pub flusher: flush::FlushFunction,
    pub signing: WebhookSecrets,
    _atomic: Option<AtomicDynamo>,
    _config_dir: Option<tempfile::TempDir>,
}

impl Stack {
    /// A fresh stack, or `None` when moto is not running (the test then returns: see
    /// [`testing::moto_endpoint`] for the skip/require rule).
    pub async fn start(opts: StackOptions) -> Option<Stack> {
        let endpoint = testing::moto_endpoint()?;
        let sdk = relay_aws::sdk_config().await;
        let sim = Simulator::start(opts.sim)
            .await
            .expect("start the ServiceNow simulator");
        let (realtime, critical, batch, dlq, table, topic) = tokio::join!(
            testing::create_queue(&sdk, "realtime", 30),
            testing::create_queue(&sdk, "critical", 30),
            testing::create_queue(&sdk, "batch", 60),
            testing::create_queue(&sdk, "dlq", 30),
            testing::create_ledger_table(&sdk, "ledger"),
            testing::create_topic(&sdk, "failures"),
        );
        let webhook_secret =
            testing::create_secret(&sdk, "webhook", &json!({"secrets": [SIGNING_SECRET]}).to_string()).await;
        let servicenow_secret = testing::create_secret(
            &sdk,
            "servicenow",
            &json!({"instance_url": sim.base_url(), "auth": "basic", "username": opts.username,
                    "password": format!("{}-password", opts.username)})
            .to_string(),
        )
        .await;
        let mut env: HashMap<&str, String> = HashMap::from([
            (
                "REALTIME_QUEUE_URL",
                opts.realtime_queue_url.clone().unwrap_or_else(|| realtime.url.clone()),
            ),
            ("BATCH_QUEUE_URL", batch.url.clone()),
            ("DLQ_URL", dlq.url.clone()),
            ("LEDGER_TABLE", table.clone()),
            ("WEBHOOK_SECRET_ARN", webhook_secret),
            ("SERVICENOW_SECRET_ARN", servicenow_secret),
            ("FAILURE_TOPIC_ARN", topic.topic_arn.clone()),
            ("RETRY_WINDOW_SECONDS", opts.window.as_secs().max(1).to_string()),
            ("FLUSH_BUDGET_SECONDS", opts.flush_budget.as_secs().max(1).to_string()),
        ]);
        if opts.critical_lane {
            env.insert("CRITICAL_QUEUE_URL", critical.url.clone());
        }
        if opts.push {
            let secret = json!({"secrets": [PUSH_SECRET]}).to_string();
            env.insert("PUSH_SECRET_ARN", testing::create_secret(&sdk, "push", &secret).await);
        }
        if let Some(url) = &opts.callback_url {
            let secret = json!({"secrets": [relay_pipeline::callback::receiver::CALLBACK_SECRET]}).to_string();
            env.insert("CALLBACK_URL", url.clone());
            env.insert(
                "CALLBACK_SECRET_ARN",
                testing::create_secret(&sdk, "callback", &secret).await,
            );
        }
        let config_dir = opts.config.as_ref().map(|yaml| {
            let dir = tempfile::tempdir().expect("a directory for the config");
            let path = dir.path().join("relay.yaml");
            std::fs::write(&path, yaml).expect("write the config");
            env.insert("RELAY_CONFIG_PATH", path.display().to_string());
            dir
        });
        let mut settings = Settings::from_lookup(|k| env.get(k).cloned()).expect("settings");
        settings.backoff = BackoffPolicy {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(100),
            window: opts.window,
            max_retry_after: Duration::from_secs(5),
        };
        settings.lease = Duration::from_secs(5);
        settings.servicenow_timeout = Duration::from_millis(1500);
        settings.ledger_retention = Duration::from_secs(3600);
        settings.settle = opts.settle;

        let mut ports = aws_ports(&settings, &sdk);
        let atomic = if opts.atomic_dynamo {
            let proxy = AtomicDynamo::start(&endpoint).await;
            ports.ledger = Arc::new(relay_aws::DynamoLedger::from_client(proxy.client(&sdk), &table));
            Some(proxy)
        } else {
            None
        };
        let ingest = ingest::ingest(&settings, &ports).await.expect("ingest pipeline");
        let mut delivery = deliver::delivery(&settings, &ports);
        if let Some(limit) = opts.max_receives {
            delivery.settings.max_receives = limit;
        }
        let lanes = deliver::Lanes::new(&settings, Arc::new(delivery));
        let flusher = flush::flusher(&settings, &ports).expect("flush pipeline");
        Some(Stack {
            sdk,
            sim,
            settings,
            ports,
            realtime,
            critical,
            batch,
            dlq,
            topic,
            ingest: Arc::new(ingest),
            lanes,
            flusher,
            signing: WebhookSecrets::parse(&[SIGNING_SECRET]).expect("signing secret"),
            _atomic: atomic,
            _config_dir: config_dir,
        })
    }

    // ----- ingest -----------------------------------------------------------------------------------

    /// Invoke the ingest function with an API Gateway v2 event (JSON), as Lambda does.
    pub async fn invoke_ingest(&self, event: Value) -> HttpReply {
        let request: LambdaRequest = serde_json::from_value(event).expect("an API Gateway v2 event");
        // the router's answer turned into a Lambda response inside the service, as lambda_http does, so
        // this future stays `Send` (lambda_http's adapter is not, over an axum body)
        let app = tower::ServiceBuilder::new()
            .and_then(|r: axum::response::Response| async move {
                Ok::<_, std::convert::Infallible>(lambda_http::IntoResponse::into_response(r).await)
            })
            .service(ingest::app(self.ingest.clone()));
        let mut adapter = lambda_http::Adapter::from(app);
        let response = adapter
            .call(LambdaEvent::new(request, Context::default()))
            .await
            .expect("infallible");
        let v = serde_json::to_value(&response).expect("the response serializes");
        let headers = v["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let text = v["body"].as_str().unwrap_or("");
        HttpReply {
            status: v["statusCode"].as_u64().expect("statusCode") as u16,
            headers,
            body: serde_json::from_str(text).unwrap_or_else(|e| panic!("reply body is not JSON ({e}): {text}")),
        }
    }

    /// The POST envelope with `body` and these headers (set or replaced; `None` removes the header).
    pub fn post_event(&self, body: &[u8], headers: &[(&str, Option<&str>)]) -> Value {
        let mut event = envelope("apigw-post-alert.json");
        match std::str::from_utf8(body) {
            Ok(text) => event["body"] = json!(text),
            Err(_) => {
                event["body"] = json!(STANDARD.encode(body));
                event["isBase64Encoded"] = json!(true);
            }
        }
        event["headers"]["content-length"] = json!(body.len().to_string());
        for (name, value) in headers {
            match value {
                Some(v) => event["headers"][*name] = json!(v),
                None => {
                    event["headers"].as_object_mut().expect("headers").remove(*name);
                }
            }
        }
        event
    }

    /// The same event with its body base64-encoded (as API Gateway sends binary media types).
    pub fn as_base64(mut event: Value) -> Value {
        let text = event["body"].as_str().expect("a text body").to_string();
        event["body"] = json!(STANDARD.encode(text.as_bytes()));
        event["isBase64Encoded"] = json!(true);
        event
    }

    /// A correctly signed POST event for `body`.
    pub fn signed_event(&self, body: &[u8], webhook_id: &str) -> Value {
        let ts = SystemClock.now_ms() / 1000;
        let sig = self.signing.sign(webhook_id, ts, body);
        self.post_event(
            body,
            &[
                ("webhook-id", Some(webhook_id)),
                ("webhook-timestamp", Some(&ts.to_string())),
                ("webhook-signature", Some(&sig)),
            ],
        )
    }

    /// POST a signed alert.
    pub async fn post(&self, body: &[u8], webhook_id: &str) -> HttpReply {
        self.invoke_ingest(self.signed_event(body, webhook_id)).await
    }

    /// `POST /v1/servicenow/changes` as a business rule sends it: `body` signed with `secret` (the stack's
    /// push secret is [`PUSH_SECRET`]).
    pub async fn push(&self, body: &[u8], secret: &str) -> HttpReply {
        let ts = SystemClock.now_ms() / 1000;
        let id = format!("push-{ts}-{}", body.len());
        let sig = WebhookSecrets::parse(&[secret]).expect("a secret").sign(&id, ts, body);
        let mut event = self.post_event(
            body,
            &[
                ("webhook-id", Some(&id)),
                ("webhook-timestamp", Some(&ts.to_string())),
                ("webhook-signature", Some(&sig)),
            ],
        );
        event["rawPath"] = json!("/v1/servicenow/changes");
        event["requestContext"]["http"]["path"] = json!("/v1/servicenow/changes");
        event["routeKey"] = json!("POST /v1/servicenow/changes");
        self.invoke_ingest(event).await
    }

    /// `GET /v1/alerts/{alert_id}` with the IAM-authorized envelope.
    pub async fn status(&self, alert_id: &str) -> HttpReply {
        let mut event = envelope("apigw-get-status.json");
        let path = format!("/v1/alerts/{alert_id}");
        event["rawPath"] = json!(path);
        event["requestContext"]["http"]["path"] = json!(path);
        event["pathParameters"]["alert_id"] = json!(alert_id);
        self.invoke_ingest(event).await
    }

    /// The ledger entry of `alert_id`.
    pub async fn entry(&self, alert_id: &str) -> Option<LedgerEntry> {
        self.ports.ledger.get(alert_id).await.expect("ledger get")
    }

    // ----- deliver ------------------------------------------------------------------------------------

    /// The SQS event Lambda would build for these received messages.
    pub fn sqs_event(&self, queue: &TestQueue, messages: &[ReceivedMessage]) -> SqsEvent {
        let template = envelope("sqs-batch.json")["Records"][0].clone();
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let mut r = template.clone();
                r["messageId"] = json!(m.message_id);
                r["receiptHandle"] = json!(m.receipt);
                r["body"] = json!(m.body);
                r["attributes"]["SentTimestamp"] = json!(m.sent_at_ms.to_string());
                r["attributes"]["ApproximateReceiveCount"] = json!(m.receive_count.to_string());
                r["eventSourceARN"] = json!(queue.arn);
                r
            })
            .collect();
        serde_json::from_value(json!({ "Records": records })).expect("an SQS event")
    }

    /// Invoke the deliver function with an SQS batch; returns the partial batch response (checked to
    /// serialize as Lambda expects).
    pub async fn invoke_deliver(&self, event: SqsEvent) -> SqsBatchResponse {
        let response = deliver::handle(&self.lanes, LambdaEvent::new(event, Context::default()))
            .await
            .expect("infallible");
        let v = serde_json::to_value(&response).expect("serializes");
        assert!(v["batchItemFailures"].is_array(), "{v}");
        response
    }

    /// One event-source-mapping poll of the realtime queue: receive up to 10, invoke deliver, delete what
    /// was not reported failed. Returns how many messages were handled and the failed message ids.
    pub async fn poll_realtime(&self, wait: Duration) -> (usize, Vec<String>) {
        self.poll(&self.realtime, wait).await
    }

    /// [`Stack::poll_realtime`] of the critical queue (its own event source mapping).
    pub async fn poll_critical(&self, wait: Duration) -> (usize, Vec<String>) {
        self.poll(&self.critical, wait).await
    }

    /// The message ids a partial batch response reports for retry (the rest the mapping deletes).
    pub fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
        response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect()
    }

    async fn poll(&self, from: &TestQueue, wait: Duration) -> (usize, Vec<String>) {
        let queue = from.adapter(&self.sdk);
        let messages = queue.receive(10, wait).await.expect("receive from the queue");
        if messages.is_empty() {
            return (0, vec![]);
        }
        let response = self.invoke_deliver(self.sqs_event(from, &messages)).await;
        let failed = Stack::failed_ids(&response);
        for m in &messages {
            if !failed.contains(&m.message_id) {
                queue.delete(&m.receipt).await.expect("delete a handled message");
            }
        }
        (messages.len(), failed)
    }

    /// Poll the realtime queue until it is empty (retries included) or `timeout` passed.
    pub async fn deliver_until_empty(&self, timeout: Duration) {
        let queue = self.realtime.adapter(&self.sdk);
        let deadline = Instant::now() + timeout;
        while queue.depth().await.expect("depth") > 0 && Instant::now() < deadline {
            self.poll_realtime(Duration::from_secs(1)).await;
        }
    }

    // ----- flush --------------------------------------------------------------------------------------

    /// Invoke the flush function with the scheduled event; returns its JSON result.
    pub async fn invoke_flush(&self) -> Value {
        self.flush_with(Context::default()).await
    }

    /// Invoke the flush function as an invocation whose deadline is `timeout` from now (the function
    /// timeout). Lambda ends an invocation at its deadline: wrap this in `tokio::time::timeout(timeout, …)`
    /// to drop it there.
    pub async fn invoke_flush_within(&self, timeout: Duration) -> Value {
        let mut context = Context::default();
        context.deadline = (SystemClock.now_ms() + timeout.as_millis() as i64) as u64;
        self.flush_with(context).await
    }

    async fn flush_with(&self, context: Context) -> Value {
        let event: EventBridgeEvent =
            serde_json::from_value(envelope("scheduled-flush.json")).expect("scheduled event");
        let report = flush::handle(&self.flusher, LambdaEvent::new(event, context))
            .await
            .expect("infallible");
        serde_json::to_value(&report).expect("the report serializes")
    }

    // ----- observation --------------------------------------------------------------------------------

    /// Every message on `queue` (taken and deleted), waiting up to `wait` for the first.
    pub async fn drain(&self, queue: &TestQueue, wait: Duration) -> Vec<ReceivedMessage> {
        let q = queue.adapter(&self.sdk);
        let mut out = Vec::new();
        let mut wait = wait;
        loop {
            let got = q.receive(10, wait).await.expect("receive");
            if got.is_empty() {
                return out;
            }
            for m in &got {
                q.delete(&m.receipt).await.expect("delete");
            }
            out.extend(got);
            wait = Duration::ZERO;
        }
    }

    /// Approximate number of messages on `queue`.
    pub async fn depth(&self, queue: &TestQueue) -> u64 {
        queue.adapter(&self.sdk).depth().await.expect("depth")
    }

    /// The delivery-failure notifications published to the topic.
    pub async fn notices(&self, wait: Duration) -> Vec<PublishedNotice> {
        testing::read_notices(&self.sdk, &self.topic, wait).await
    }
}
