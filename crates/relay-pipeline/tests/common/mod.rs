//! The harness of the pipeline tests: the three pipelines over real adapters — a real SQLite file
//! (relay-local) for the queues and the ledger, and real HTTP to the in-process ServiceNow simulator. The
//! backoff schedule is compressed (milliseconds instead of minutes) so retries and an exhausted window
//! happen within a test. Metrics go to a recorder local to the test's thread.

#![allow(dead_code)] // each test binary uses part of the harness

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use relay_core::config::Config;
use relay_core::{BackoffPolicy, Router};
use relay_local::{LocalStore, SqliteQueue};
use relay_pipeline::{
    Deliverer, Delivery, DeliverySettings, FlushSettings, Flusher, Ingest, IngestSettings, Ports, Reply,
    ServiceNowTarget, SigningKeys, WebhookRequest, WebhookSecrets,
};
use relay_ports::{AlertQueue, Clock, PortError, ReceivedMessage, SystemClock};
use serde_json::json;
use servicenow_client::{ClientConfig, Credentials, ServiceNowClient, StaticCredentials};
use servicenow_sim::{RunningSim, SimConfig, Simulator};

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
use relay_pipeline::callback::receiver::CALLBACK_SECRET;

pub fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

pub fn sample(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("events/alerts").join(name)).unwrap()
}

/// A queue that refuses every send (the queue service is down).
pub struct DownQueue;

#[async_trait]
impl AlertQueue for DownQueue {
    async fn send(&self, _: &str, _: Duration) -> Result<String, PortError> {
        Err(PortError::Unavailable("queue service down".into()))
    }
    async fn receive(&self, _: u32, _: Duration) -> Result<Vec<ReceivedMessage>, PortError> {
        Ok(vec![])
    }
    async fn delete(&self, _: &str) -> Result<(), PortError> {
        Ok(())
    }
    async fn change_visibility(&self, _: &str, _: Duration) -> Result<(), PortError> {
        Ok(())
    }
    async fn depth(&self) -> Result<u64, PortError> {
        Ok(0)
    }
}

/// The metrics recorded on this thread while it lives (the tests run on tokio's current-thread runtime,
/// so every task of a test records here).
pub struct Captured {
    snapshotter: Snapshotter,
    _guard: metrics::LocalRecorderGuard<'static>,
}

/// One recorded series: name, labels (sorted), value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub kind: MetricKind,
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// Counter total, or the number of histogram samples.
    pub count: u64,
}

impl Captured {
    pub fn start() -> Captured {
        let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
        let snapshotter = recorder.snapshotter();
        let guard = metrics::set_default_local_recorder(recorder);
        Captured {
            snapshotter,
            _guard: guard,
        }
    }

    /// Every series recorded since the last call (histogram samples are taken; counters are totals).
    pub fn take(&self) -> Vec<Series> {
        self.snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value): (CompositeKey, _, _, DebugValue)| {
                let (kind, key) = key.into_parts();
                let mut labels: Vec<(String, String)> = key
                    .labels()
                    .map(|l| (l.key().to_string(), l.value().to_string()))
                    .collect();
                labels.sort();
                let count = match value {
                    DebugValue::Counter(n) => n,
                    DebugValue::Histogram(v) => v.len() as u64,
                    DebugValue::Gauge(_) => 1,
                };
                Series {
                    kind,
                    name: key.name().to_string(),
                    labels,
                    count,
                }
            })
            .filter(|s| s.count > 0)
            .collect()
    }
}

/// The total of `name` over the series in `all` whose labels include `labels`.
pub fn total(all: &[Series], name: &str, labels: &[(&str, &str)]) -> u64 {
    all.iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.count)
        .sum()
}

pub struct Harness {
    pub _dir: tempfile::TempDir,
    pub sim: RunningSim,
    pub store: LocalStore,
    pub realtime: SqliteQueue,
    pub batch: SqliteQueue,
    pub dlq: SqliteQueue,
    pub ports: Ports,
    pub router: Arc<Router>,
    pub ingest: Ingest,
    pub deliverer: Deliverer,
    pub flusher: Flusher,
    pub keys: WebhookSecrets,
    pub metrics: Captured,
}

pub struct Options {
    pub config: Config,
    pub window: Duration,
    pub username: &'static str,
    pub batch_settings: Option<relay_core::config::BatchSettings>,
    /// The deliverers' claim lease.
    pub lease: Duration,
    /// The settle window after an ambiguous create.
    pub settle: Duration,
    /// The realtime queue's receive limit (`None`: derived from the backoff policy).
    pub max_receives: Option<u32>,
    /// The longest server Retry-After honoured.
    pub max_retry_after: Duration,
    /// The limit of concurrent ServiceNow calls (`None`: the default, adaptive).
    pub concurrency: Option<relay_pipeline::concurrency::ConcurrencyMode>,
    /// Send callbacks here, signed with [`CALLBACK_SECRET`].
    pub callback_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: Config::default_config(),
            window: Duration::from_secs(60),
            username: "relay",
            batch_settings: None,
            lease: Duration::from_secs(5),
            settle: Duration::from_millis(50),
            max_receives: None,
            max_retry_after: Duration::from_secs(5),
            concurrency: None,
            callback_url: None,
        }
    }
}

pub async fn harness(opts: Options) -> Harness {
    harness_with(opts, SimConfig::default()).await
}

pub async fn harness_with(opts: Options, sim_config: SimConfig) -> Harness {
    let metrics = Captured::start();
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("relay.db")).unwrap();
    let realtime = store.queue("realtime");
    let batch = store.queue("batch");
    let dlq = store.queue("dlq");
    let sim = Simulator::start(sim_config).await.unwrap();
    let mut cc = ClientConfig::new(sim.base_url());
    cc.total_timeout = Duration::from_millis(800);
    cc.connect_timeout = Duration::from_millis(500);
    let password = format!("{}-password", opts.username);
    let client = ServiceNowClient::new(
        cc,
        Arc::new(StaticCredentials(Credentials::Basic {
            username: opts.username.into(),
            password: password.into(),
        })),
    )
    .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ports = Ports {
        ledger: Arc::new(store.ledger()),
        realtime: Arc::new(realtime.clone()),
        critical: Arc::new(realtime.clone().critical_lane()),
        batch: Arc::new(batch.clone()),
        dlq: Arc::new(dlq.clone()),
        secrets: Arc::new(relay_local::LocalSecretStore::new()),
        notifier: Arc::new(store.notifier()),
        clock,
    };
    let keys = WebhookSecrets::parse(&[SECRET]).unwrap();
    let batch_settings = opts.batch_settings.clone().unwrap_or_else(|| opts.config.batch.clone());
    let router = Arc::new(Router::new(opts.config, None).unwrap());
    let ingest = Ingest::new(
        &ports,
        router.clone(),
        SigningKeys::Fixed(keys.clone()),
        IngestSettings::default(),
    );
    let backoff = BackoffPolicy {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(100),
        window: opts.window,
        max_retry_after: opts.max_retry_after,
    };
    let defaults = DeliverySettings::for_policy(backoff);
    let delivery = Delivery::new(
        &ports,
        ServiceNowTarget::ready(client),
        DeliverySettings {
            concurrency: opts.concurrency.unwrap_or(defaults.concurrency),
            backoff,
            lease: opts.lease,
            ledger_retention: Duration::from_secs(3600),
            settle: opts.settle,
            max_receives: opts
                .max_receives
                .unwrap_or_else(|| relay_pipeline::defaults::max_receive_count(&backoff)),
            ..defaults
        },
    )
    .with_jitter(Arc::new(|| 0.5))
    .with_callbacks(opts.callback_url.as_deref().map(|url| {
        let store = relay_local::LocalSecretStore::new().with_secret("callback", CALLBACK_SECRET);
        let keys = relay_pipeline::WebhookKeys::new(
            Arc::new(store),
            "callback",
            Duration::from_secs(60),
            Arc::new(SystemClock),
        );
        relay_pipeline::callback::Callbacks::new(url, keys, Duration::from_millis(800)).unwrap()
    }));
    let delivery = Arc::new(delivery);
    let deliverer = Deliverer::new(delivery.clone());
    let flusher = Flusher::new(
        delivery,
        FlushSettings {
            drain_budget: Duration::from_secs(20),
            budget: Duration::from_secs(40),
            settle_reserve: Duration::from_secs(2),
            max_messages: 10_000,
            window: Duration::from_secs(300),
            batch: batch_settings,
            receive_wait: Duration::from_millis(50),
        },
    );
    Harness {
        _dir: dir,
        sim,
        store,
        realtime,
        batch,
        dlq,
        ports,
        router,
        ingest,
        deliverer,
        flusher,
        keys,
        metrics,
    }
}

pub fn now_s() -> i64 {
    SystemClock.now_ms() / 1000
}

impl Harness {
    /// Ingest again over ports changed by `edit` (a queue that is down, say).
    pub fn rebuild_ingest(&mut self, edit: impl FnOnce(&mut Ports)) {
        let mut ports = self.ports.clone();
        edit(&mut ports);
        self.ingest = Ingest::new(
            &ports,
            self.router.clone(),
            SigningKeys::Fixed(self.keys.clone()),
            IngestSettings::default(),
        );
    }

    pub async fn post(&self, body: &[u8], webhook_id: &str) -> Reply {
        let ts = now_s();
        let sig = self.keys.sign(webhook_id, ts, body);
        let ts = ts.to_string();
        self.ingest
            .accept(
                WebhookRequest {
                    content_type: Some("application/json"),
                    webhook_id: Some(webhook_id),
                    webhook_timestamp: Some(&ts),
                    webhook_signature: Some(&sig),
                    body,
                },
                "http://relay.test",
            )
            .await
    }

    /// Run the realtime worker until the queue is empty (delayed retries included), at most 15 s.
    pub async fn deliver_all(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while self.realtime.depth().await.unwrap() > 0 && std::time::Instant::now() < deadline {
            self.deliverer.poll_once(10, Duration::from_millis(30)).await.unwrap();
        }
    }

    /// `GET /v1/alerts/{id}`'s document.
    pub async fn status(&self, alert_id: &str) -> serde_json::Value {
        self.ingest.status(alert_id).await.json()
    }

    pub async fn state(&self, alert_id: &str) -> relay_ports::LedgerEntry {
        self.ports.ledger.get(alert_id).await.unwrap().expect("ledger entry")
    }
}

pub fn alert_body(id: &str, alert_type: &str, severity: &str, employee: &str) -> Vec<u8> {
    let mut v = json!({
        "alert_id": id, "alert_type": alert_type, "severity": severity,
        "occurred_at": "2026-11-20T14:03:00Z",
        "employee": {"id": employee, "department": "Sales"},
        "description": format!("activity of {id}"), "risk_score": 30,
        "evidence_url": format!("https://monitor.example.com/a/{id}")
    });
    if alert_type == "custom" {
        v["rule"] = json!({"id": "r1", "name": "Rule one"});
    }
    serde_json::to_vec(&v).unwrap()
}

/// The work notes the simulator keeps for the record `sys_id`, oldest first.
pub fn journal_of(h: &Harness, sys_id: &str) -> Vec<serde_json::Value> {
    h.sim
        .records("sys_journal_field")
        .into_iter()
        .filter(|e| e["element_id"] == sys_id && e["element"] == "work_notes")
        .collect()
}

/// Options whose config has threads off: every alert is a record of its own, for tests about something
/// else that send several alerts of one employee and type.
pub fn without_threads() -> Options {
    let mut config = Config::default_config();
    config.threads.enabled = false;
    Options {
        config,
        ..Options::default()
    }
}

/// A ledger over another with faults a test switches on: `complete` of one key fails once; `observe`
/// fails once `fail_observe_after` calls have passed (a process cut off between two of its writes).
pub struct FaultyLedger {
    pub inner: Arc<dyn relay_ports::Ledger>,
    pub fail_complete_once: std::sync::Mutex<Option<String>>,
    /// How many more `observe` calls pass before they fail (u32::MAX: all pass).
    pub fail_observe_after: std::sync::atomic::AtomicU32,
}

impl FaultyLedger {
    pub fn over(inner: Arc<dyn relay_ports::Ledger>) -> FaultyLedger {
        FaultyLedger {
            inner,
            fail_complete_once: std::sync::Mutex::new(None),
            fail_observe_after: std::sync::atomic::AtomicU32::new(u32::MAX),
        }
    }
}

#[async_trait]
impl relay_ports::Ledger for FaultyLedger {
    async fn accept(&self, e: &relay_ports::LedgerEntry) -> Result<relay_ports::Accept, PortError> {
        self.inner.accept(e).await
    }
    async fn mark_queued(&self, id: &str, now: i64) -> Result<(), PortError> {
        self.inner.mark_queued(id, now).await
    }
    async fn forget(&self, id: &str) -> Result<(), PortError> {
        self.inner.forget(id).await
    }
    async fn claim(&self, id: &str, now: i64, lease: i64) -> Result<relay_ports::Claim, PortError> {
        self.inner.claim(id, now, lease).await
    }
    async fn extend(&self, id: &str, token: u64, now: i64, lease: i64) -> Result<i64, PortError> {
        self.inner.extend(id, token, now, lease).await
    }
    async fn complete(&self, id: &str, token: u64, r: &relay_ports::RecordRef, now: i64) -> Result<(), PortError> {
        let failing = {
            let mut f = self.fail_complete_once.lock().unwrap();
            if f.as_deref() == Some(id) { f.take() } else { None }
        };
        if failing.is_some() {
            return Err(PortError::Unavailable("ledger write failed".into()));
        }
        self.inner.complete(id, token, r, now).await
    }
    async fn retry_later(&self, id: &str, token: u64, r: &relay_ports::RetryLater, now: i64) -> Result<(), PortError> {
        self.inner.retry_later(id, token, r, now).await
    }
    async fn fail(&self, id: &str, token: u64, c: &str, e: &str, now: i64) -> Result<(), PortError> {
        self.inner.fail(id, token, c, e, now).await
    }
    async fn reopen(&self, id: &str, token: u64, now: i64, expires: i64) -> Result<bool, PortError> {
        self.inner.reopen(id, token, now, expires).await
    }
    async fn get(&self, id: &str) -> Result<Option<relay_ports::LedgerEntry>, PortError> {
        self.inner.get(id).await
    }
    async fn aggregate(
        &self,
        plan: &relay_ports::LedgerEntry,
        members: &[(String, u64)],
        now: i64,
    ) -> Result<(), PortError> {
        self.inner.aggregate(plan, members, now).await
    }
    async fn watched(&self, after: Option<&str>, limit: u32) -> Result<Vec<relay_ports::LedgerEntry>, PortError> {
        self.inner.watched(after, limit).await
    }
    async fn observe(
        &self,
        key: &str,
        expected: Option<&str>,
        plan: &str,
        done: bool,
        now: i64,
    ) -> Result<bool, PortError> {
        use std::sync::atomic::Ordering::SeqCst;
        let passes = self
            .fail_observe_after
            .fetch_update(SeqCst, SeqCst, |n| {
                Some(if n == u32::MAX { n } else { n.saturating_sub(1) })
            })
            .expect("always Some");
        if passes == 0 {
            return Err(PortError::Unavailable("ledger write failed".into()));
        }
        self.inner.observe(key, expected, plan, done, now).await
    }
}
