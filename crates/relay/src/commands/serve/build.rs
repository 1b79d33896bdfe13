//! The local composition: the SQLite store as the ports, the ServiceNow target, and the three pipelines
//! built with the same constructors the Lambda functions use.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use relay_core::BackoffPolicy;
use relay_local::{Durability, LocalStore, StoreOptions};
use relay_pipeline::concurrency::ConcurrencyMode;
use relay_pipeline::{
    Delivery, DeliverySettings, FlushSettings, Flusher, Ingest, IngestSettings, Ports, ServiceNowTarget, SigningKeys,
    SourceAllowList, defaults,
};
use relay_ports::SystemClock;
use secrecy::SecretString;
use servicenow_client::{ClientConfig, Credentials, ServiceNowClient, StaticCredentials};
use servicenow_sim::{RunningSim, SimConfig, SimProfile, Simulator};

use super::ServeArgs;
use crate::error::CliError;
use crate::settings::{self, SecretSource, TokenSource};

/// Everything `relay serve` runs.
pub struct Local {
    pub store: LocalStore,
    pub ingest: Arc<Ingest>,
    pub delivery: Arc<Delivery>,
    pub flusher: Arc<Flusher>,
    /// The sync and its interval; None: off.
    pub sync: Option<(Arc<relay_pipeline::sync::Syncer>, Duration)>,
    pub lease: Duration,
    pub window: Duration,
    pub workers: usize,
    /// `--naive-delivery`: no reserved critical worker.
    pub naive: bool,
    pub config_name: String,
    pub config_hash: String,
    pub servicenow_url: String,
    pub simulator: Option<RunningSim>,
    pub secret_source: SecretSource,
    pub read_token: Arc<SecretString>,
    pub token_source: TokenSource,
}

impl Local {
    pub async fn build(args: &ServeArgs) -> Result<Local, CliError> {
        let (config, config_name) = args.config.load().map_err(CliError::invalid)?;
        if args.workers == 0 {
            return Err(CliError::invalid("--workers must be at least 1"));
        }
        if args.servicenow_max_concurrency == 0 {
            return Err(CliError::invalid("--servicenow-max-concurrency must be at least 1"));
        }
        let lease = lease(args)?;
        let config_hash = config.hash.clone();
        let window = Duration::from_secs(args.batch_window_seconds.unwrap_or(config.batch_window_seconds).max(1));
        // the flush's settle reserve follows this relay's exchange timeout, not the Lambda's
        let settle_reserve = defaults::flush_settle_reserve(Duration::from_secs(args.servicenow_timeout_seconds));
        let flush_settings = FlushSettings {
            drain_budget: defaults::FLUSH_DRAIN_BUDGET.min(window),
            budget: defaults::FLUSH_BUDGET.min(window.max(settle_reserve * 2)),
            settle_reserve,
            window,
            receive_wait: Duration::from_millis(50),
            ..FlushSettings::from_config(&config)
        };
        let key = settings::pseudonym_key().map_err(CliError::invalid)?;
        let profiles = Arc::new(config.clone());
        let router = Arc::new(relay_core::Router::with_pseudonym_key(config, key).map_err(CliError::invalid)?);
        let store = open_store(args, lease)?;
        let (keys, secret_source) =
            settings::signing_secrets(args.secret_file.as_deref(), &args.db, true).map_err(CliError::invalid)?;
        let (read_token, token_source) =
            settings::read_token(args.read_token_file.as_deref(), &args.db, true).map_err(CliError::invalid)?;
        let (client, servicenow_url, simulator) = servicenow(args).await?;

        let ports = Ports {
            ledger: Arc::new(store.ledger()),
            realtime: Arc::new(store.queue("realtime")),
            // the realtime queue's critical lane: received first by every worker, and alone by one reserved
            // worker (tasks.rs), so a backlog of high alerts never holds a critical one
            critical: Arc::new(if args.naive_delivery {
                store.queue("realtime")
            } else {
                store.queue("realtime").critical_lane()
            }),
            // a flush ends within its budget and deletes or releases what it drained, so a drained message
            // stays hidden only that long: after a crash mid-flush its alerts are flushed again soon after
            batch: Arc::new(
                store
                    .queue("batch")
                    .with_visibility_timeout(flush_settings.budget + defaults::LEASE_MARGIN),
            ),
            dlq: Arc::new(store.queue("dlq")),
            secrets: Arc::new(relay_local::LocalSecretStore::new()),
            notifier: Arc::new(store.notifier()),
            clock: Arc::new(SystemClock),
        };
        let allowed_sources = SourceAllowList::parse(args.allowed_sources.as_deref().unwrap_or(""))
            .map_err(|e| CliError::invalid(format!("--allow-source: {e}")))?;
        let push = match &args.push_secret_file {
            Some(path) => Some(SigningKeys::Fixed(
                settings::read_secret_file(path).map_err(CliError::invalid)?,
            )),
            None => None,
        };
        let ingest = Ingest::new(
            &ports,
            router,
            SigningKeys::Fixed(keys),
            IngestSettings {
                allowed_sources,
                ..IngestSettings::default()
            },
        )
        .with_push_keys(push);
        let callbacks = callbacks(args, &ports)?;
        let delivery = Arc::new(
            Delivery::new(
                &ports,
                ServiceNowTarget::ready(client),
                DeliverySettings {
                    lease,
                    concurrency: if args.naive_delivery {
                        ConcurrencyMode::Fixed(8)
                    } else {
                        ConcurrencyMode::adaptive_up_to(args.servicenow_max_concurrency)
                    },
                    breaker: !args.naive_delivery,
                    ..DeliverySettings::for_policy(BackoffPolicy {
                        window: Duration::from_secs(args.retry_window_seconds),
                        ..BackoffPolicy::default()
                    })
                },
            )
            .with_callbacks(callbacks),
        );
        let flusher = Arc::new(Flusher::new(delivery.clone(), flush_settings));
        let sync = (args.sync_interval_seconds > 0).then(|| {
            (
                Arc::new(relay_pipeline::sync::Syncer::new(
                    delivery.clone(),
                    profiles,
                    Duration::from_secs(args.servicenow_timeout_seconds),
                )),
                Duration::from_secs(args.sync_interval_seconds),
            )
        });
        Ok(Local {
            store,
            ingest: Arc::new(ingest),
            delivery,
            flusher,
            sync,
            lease,
            window,
            workers: args.workers,
            naive: args.naive_delivery,
            config_name,
            config_hash,
            servicenow_url,
            simulator,
            secret_source,
            read_token: Arc::new(read_token),
            token_source,
        })
    }

    pub fn banner(&self, args: &ServeArgs, base_url: &str, tls: bool) {
        println!("Alert Relay {} — local mode", env!("CARGO_PKG_VERSION"));
        println!(
            "  listening       {base_url}   (POST /v1/alerts, GET /v1/alerts/{{id}}, GET /ops, GET /healthz, GET /metrics)"
        );
        if args.public && !tls {
            let warning = "WARNING: listening on every interface WITHOUT TLS: alerts and the read token cross the \
                           network in clear text; give --tls-cert/--tls-key or put a TLS proxy in front \
                           (docs/local-mode.md)";
            println!("  {warning}");
            eprintln!("{warning}");
        }
        println!("  config          {} (hash {})", self.config_name, self.config_hash);
        if let Some(c) = &self.delivery.callbacks {
            println!("  callbacks       {} (signed, Standard Webhooks)", c.shown_url());
        }
        println!(
            "  database        {} (SQLite, WAL{}; mode 0600)",
            args.db.display(),
            if args.fsync { ", fsync per commit" } else { "" }
        );
        match &self.simulator {
            Some(s) => {
                let profile = match (&args.simulator_config, args.simulator_profile) {
                    (Some(_), _) => "",
                    (None, SimProfile::Instant) => "",
                    (None, SimProfile::Realistic) => ", profile realistic",
                };
                println!(
                    "  ServiceNow      built-in simulator at {}  (user relay{profile})",
                    s.base_url()
                );
                println!(
                    "                  see the records: curl {}/sim/records/sn_si_incident",
                    s.base_url()
                );
            }
            None => println!("  ServiceNow      {}", self.servicenow_url),
        }
        match &self.secret_source {
            SecretSource::File(p) => println!("  signing secret  from {}", p.display()),
            SecretSource::Variable => println!("  signing secret  from RELAY_WEBHOOK_SECRET"),
            SecretSource::Generated { path } => {
                println!("  signing secret  generated, stored in {} (mode 0600)", path.display());
                println!(
                    "                  read it to configure the monitoring tool: jq -r '.secrets[0]' {}",
                    path.display()
                );
            }
        }
        match &self.token_source {
            TokenSource::File(p) => println!("  read token      from {}", p.display()),
            TokenSource::Variable => println!("  read token      from RELAY_READ_TOKEN"),
            TokenSource::Generated(p) => {
                println!("  read token      generated, stored in {} (mode 0600)", p.display());
                println!(
                    "                  use it: curl -H \"Authorization: Bearer $(cat {})\" {base_url}/v1/alerts/ID",
                    p.display()
                );
            }
        }
        println!("  operator page   {base_url}/ops   (any user name, the read token as password)");
        println!(
            "  delivery        {} workers, at most {} ServiceNow calls at once, lease {} s; batch flush every {} s",
            self.workers,
            self.delivery.settings.concurrency.max(),
            self.lease.as_secs(),
            self.window.as_secs()
        );
        println!("  try it          relay send events/alerts/seed-usb-copy-847-files.json --url {base_url} --wait");
        println!("ready");
        let _ = std::io::stdout().flush();
    }
}

fn open_store(args: &ServeArgs, lease: Duration) -> Result<LocalStore, CliError> {
    if let Some(dir) = args.db.parent().filter(|d| !d.as_os_str().is_empty()) {
        relay_local::create_private_dir(dir)
            .map_err(|e| CliError::failed(format!("cannot create the database directory {}: {e}", dir.display())))?;
    }
    LocalStore::open_with(
        &args.db,
        StoreOptions {
            durability: if args.fsync {
                Durability::PowerLoss
            } else {
                Durability::ProcessCrash
            },
            default_visibility_timeout: lease,
            ..StoreOptions::default()
        },
    )
    .map_err(CliError::failed)
}

/// The claim lease: derived from the exchange timeout so it outlasts a whole attempt (a longer one may be
/// given, a shorter one is refused).
fn lease(args: &ServeArgs) -> Result<Duration, CliError> {
    if args.servicenow_timeout_seconds == 0 {
        return Err(CliError::invalid("--servicenow-timeout-seconds must be at least 1"));
    }
    let least = defaults::lease_for_attempts(Duration::from_secs(args.servicenow_timeout_seconds));
    match args.lease_seconds.map(Duration::from_secs) {
        None => Ok(least),
        Some(given) if given >= least => Ok(given),
        Some(given) => Err(CliError::invalid(format!(
            "--lease-seconds {} is shorter than one delivery attempt can take ({} s with \
             --servicenow-timeout-seconds {}): another worker could take an alert over mid-call",
            given.as_secs(),
            least.as_secs(),
            args.servicenow_timeout_seconds
        ))),
    }
}

/// A real instance (from `--servicenow-file` or the `SERVICENOW_*` variables), or the simulator started in
/// this process. Every HTTP exchange is bounded by `--servicenow-timeout-seconds`; the lease is derived
/// from it.
async fn servicenow(args: &ServeArgs) -> Result<(ServiceNowClient, String, Option<RunningSim>), CliError> {
    let (instance_url, credentials, simulator) = match args.servicenow.load().map_err(CliError::invalid)? {
        Some(s) => (s.instance_url, s.credentials, None),
        None => {
            let sim_config = match &args.simulator_config {
                Some(p) => SimConfig::from_yaml_file(p)
                    .map_err(|e| CliError::invalid(format!("simulator config {}: {e}", p.display())))?,
                None => args.simulator_profile.config(),
            };
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.simulator_port))
                .await
                .map_err(|e| {
                    CliError::failed(format!(
                        "cannot start the simulator on 127.0.0.1:{}: {e}",
                        args.simulator_port
                    ))
                })?;
            let running = Simulator::serve(listener, sim_config)
                .map_err(|e| CliError::failed(format!("cannot start the simulator: {e}")))?;
            let credentials = Credentials::Basic {
                username: "relay".into(),
                password: "relay-password".into(),
            };
            (running.base_url(), credentials, Some(running))
        }
    };
    let mut cc = ClientConfig::new(instance_url.clone());
    cc.total_timeout = Duration::from_secs(args.servicenow_timeout_seconds);
    cc.connect_timeout = Duration::from_secs(5).min(cc.total_timeout / 2);
    let client = ServiceNowClient::new(cc, Arc::new(StaticCredentials(credentials)))
        .map_err(|e| CliError::invalid(format!("ServiceNow instance: {e}")))?;
    Ok((client, instance_url, simulator))
}

/// The callbacks to the monitoring product: `--callback-url` signed with the secret in
/// `--callback-secret-file` (read, and checked, at start).
fn callbacks(args: &ServeArgs, ports: &Ports) -> Result<Option<relay_pipeline::callback::Callbacks>, CliError> {
    let Some(url) = args.callback_url.as_deref().filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    let Some(path) = &args.callback_secret_file else {
        return Err(CliError::invalid(
            "--callback-url needs --callback-secret-file: the file holding the secret (whsec_…) the receiver \
             verifies the callbacks with",
        ));
    };
    // read once and checked here: a bad file stops the start, naming it
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::invalid(format!("--callback-secret-file {}: {e}", path.display())))?;
    let keys = relay_pipeline::WebhookSecrets::from_document(&text)
        .map_err(|e| CliError::invalid(format!("--callback-secret-file {}: {e}", path.display())))?;
    if keys.is_empty() {
        return Err(CliError::invalid(format!(
            "--callback-secret-file {} holds no secret",
            path.display()
        )));
    }
    let store = relay_local::LocalSecretStore::new().with_secret("callback", text);
    let keys = relay_pipeline::WebhookKeys::new(
        Arc::new(store),
        "callback",
        defaults::SECRET_REFRESH_AFTER,
        Arc::clone(&ports.clock),
    );
    relay_pipeline::callback::Callbacks::new(url, keys, Duration::from_secs(args.servicenow_timeout_seconds))
        .map(Some)
        .map_err(|e| CliError::invalid(format!("--callback-url: {e}")))
}
