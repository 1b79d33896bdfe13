//! `relay load` (hidden): the reproducible load benchmark of the local mode. Starts `relay serve` (this
//! binary) on a fresh database with the built-in simulator, sends signed alerts over HTTP at a fixed rate
//! (open loop: the schedule does not wait for answers), waits until every accepted alert is delivered, and
//! reports throughput, webhook → record latency (from the send to the ledger's completion time, which is
//! written after ServiceNow answered with the record), exactly-once counts and the server's peak RSS.
//! `--profile storm` (storm.rs) runs the alert storm against the realistic simulator, once with the
//! relay's delivery and once with the naive one, side by side.

mod storm;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use relay_core::Config;
use relay_local::LocalStore;
use relay_pipeline::WebhookSecrets;
use relay_ports::{Clock, DeliveryState, LedgerEntry, SystemClock};
use serde_json::Value;

use crate::api::RelayApi;
use crate::error::CliError;
use crate::settings;

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// `throughput` (the default: `--rate` alerts/s of `--mix` for `--duration` s against the instant
    /// simulator) or `storm` (10,000 alerts in 60 s over 500 employees against the realistic simulator, run
    /// twice: the relay's delivery, then `--naive-delivery`; BENCHMARKS.md gives the mix).
    #[arg(long, default_value = "throughput")]
    pub profile: String,
    /// `storm` only: scale the storm's alerts, seconds, employees and batch window by this factor (0 < F ≤ 1).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// `storm` only: print the two runs' figures as one JSON object instead of the Markdown table.
    #[arg(long)]
    pub json: bool,
    /// `storm` only: `relay serve --servicenow-max-concurrency` of the relay's run (the naive run keeps its
    /// fixed 8).
    #[arg(long, default_value_t = 16)]
    pub servicenow_max_concurrency: usize,
    /// `storm` only: write the relay's ServiceNow calls (the simulator's request log, one JSON object per
    /// line) to `storm-relay.jsonl` and `storm-naive.jsonl` in this directory.
    #[arg(long)]
    pub requests_log: Option<PathBuf>,
    /// Alerts per second to offer.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Seconds to keep sending.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Which sample alerts: `critical` (all realtime, critical only), `realtime` (critical + high),
    /// `all` (every type × severity; medium/low go through the batch flush).
    #[arg(long, default_value = "realtime")]
    pub mix: String,
    /// Concurrent HTTP requests in flight at most.
    #[arg(long, default_value_t = 128)]
    pub connections: usize,
    /// `relay serve --workers`.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Append the result as a Markdown table row to this file.
    #[arg(long)]
    pub append: Option<PathBuf>,
}

/// How long the throughput run's queues may take to drain after the last send.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// The user the simulator's `admin` account stands for, excluded from the relay's call counts.
const SIM_ADMIN: (&str, &str) = ("admin", "admin-password");

const HEADER: &str = "| mix | offered | sent | accepted | errors | send rate | delivered (first send → last record) | \
                      e2e p50 | e2e p99 | e2e max | HTTP ack p50 / p99 | exactly once | server peak RSS |\n\
                      |---|---|---|---|---|---|---|---|---|---|---|---|---|";

const SAMPLES: [(&str, &str); 20] = [
    (
        "dlp-critical",
        include_str!("../../../../../events/alerts/dlp-critical.json"),
    ),
    ("dlp-high", include_str!("../../../../../events/alerts/dlp-high.json")),
    (
        "dlp-medium",
        include_str!("../../../../../events/alerts/dlp-medium.json"),
    ),
    ("dlp-low", include_str!("../../../../../events/alerts/dlp-low.json")),
    (
        "policy-violation-critical",
        include_str!("../../../../../events/alerts/policy-violation-critical.json"),
    ),
    (
        "policy-violation-high",
        include_str!("../../../../../events/alerts/policy-violation-high.json"),
    ),
    (
        "policy-violation-medium",
        include_str!("../../../../../events/alerts/policy-violation-medium.json"),
    ),
    (
        "policy-violation-low",
        include_str!("../../../../../events/alerts/policy-violation-low.json"),
    ),
    (
        "behavioral-anomaly-critical",
        include_str!("../../../../../events/alerts/behavioral-anomaly-critical.json"),
    ),
    (
        "behavioral-anomaly-high",
        include_str!("../../../../../events/alerts/behavioral-anomaly-high.json"),
    ),
    (
        "behavioral-anomaly-medium",
        include_str!("../../../../../events/alerts/behavioral-anomaly-medium.json"),
    ),
    (
        "behavioral-anomaly-low",
        include_str!("../../../../../events/alerts/behavioral-anomaly-low.json"),
    ),
    (
        "productivity-critical",
        include_str!("../../../../../events/alerts/productivity-critical.json"),
    ),
    (
        "productivity-high",
        include_str!("../../../../../events/alerts/productivity-high.json"),
    ),
    (
        "productivity-medium",
        include_str!("../../../../../events/alerts/productivity-medium.json"),
    ),
    (
        "productivity-low",
        include_str!("../../../../../events/alerts/productivity-low.json"),
    ),
    (
        "custom-critical",
        include_str!("../../../../../events/alerts/custom-critical.json"),
    ),
    (
        "custom-high",
        include_str!("../../../../../events/alerts/custom-high.json"),
    ),
    (
        "custom-medium",
        include_str!("../../../../../events/alerts/custom-medium.json"),
    ),
    (
        "custom-low",
        include_str!("../../../../../events/alerts/custom-low.json"),
    ),
];

/// Run the benchmark and print its Markdown table row (and append it to `--append`).
pub fn run(args: &LoadArgs) -> Result<(), CliError> {
    let text = match args.profile.as_str() {
        "throughput" => {
            let templates = templates(&args.mix)?;
            let row = in_temp_dir(|dir| measure(args, &templates, &dir.join("relay.db")))?;
            format!("{HEADER}\n{row}")
        }
        "storm" => storm::run(args)?,
        other => {
            return Err(CliError::Invalid(format!(
                "--profile must be throughput or storm (got {other:?})"
            )));
        }
    };
    println!("{text}");
    if let Some(path) = &args.append {
        let cannot = |e: std::io::Error| CliError::Failed(format!("cannot append to {}: {e}", path.display()));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(cannot)?;
        // the throughput table's header is in BENCHMARKS.md already: append its row only
        let appended = if args.profile == "throughput" {
            text.lines().last().unwrap_or_default().to_string()
        } else {
            text.clone()
        };
        writeln!(f, "{appended}").map_err(cannot)?;
    }
    Ok(())
}

/// `f` with a fresh private temporary directory, removed afterwards.
fn in_temp_dir<T>(f: impl FnOnce(&Path) -> Result<T, CliError>) -> Result<T, CliError> {
    let dir = std::env::temp_dir().join(format!("relay-load-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|e| CliError::Failed(format!("{}: {e}", dir.display())))?;
    let result = f(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The sample alert `name` (e.g. `dlp-critical`).
fn sample(name: &str) -> Result<Value, CliError> {
    let (_, text) = SAMPLES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| CliError::Failed(format!("no sample alert {name}")))?;
    serde_json::from_str(text).map_err(|e| CliError::Failed(format!("sample {name}: {e}")))
}

/// The sample alerts of `mix`.
fn templates(mix: &str) -> Result<Vec<Value>, CliError> {
    let wanted = |name: &str| match mix {
        "critical" => Some(name.ends_with("-critical")),
        "realtime" => Some(name.ends_with("-critical") || name.ends_with("-high")),
        "all" => Some(true),
        _ => None,
    };
    if wanted("").is_none() {
        return Err(CliError::Invalid(format!(
            "--mix must be critical, realtime or all (got {mix:?})"
        )));
    }
    SAMPLES
        .iter()
        .filter(|(name, _)| wanted(name) == Some(true))
        .map(|(name, _)| sample(name))
        .collect()
}

/// A `relay serve` child on `db` with the built-in simulator; stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: std::process::Child,
    url: String,
    simulator_url: String,
}

impl Server {
    /// `relay serve --port 0 --workers N --db DB` with `extra` arguments; its log (stderr) goes to `log`
    /// when given, else to this process's stderr.
    fn start(workers: usize, db: &Path, extra: &[String], log: Option<&Path>) -> Result<Server, CliError> {
        let exe = std::env::current_exe().map_err(|e| CliError::Failed(format!("cannot find this binary: {e}")))?;
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::File::create(path).map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?,
            ),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(exe)
            .stderr(stderr)
            .args(["serve", "--port", "0", "--workers"])
            .arg(workers.to_string())
            .args(extra)
            .arg("--db")
            .arg(db)
            .env("RELAY_LOG", "warn")
            .env_remove("RELAY_WEBHOOK_SECRET")
            .env_remove("RELAY_WEBHOOK_SECRET_FILE")
            .env_remove("SERVICENOW_INSTANCE_URL")
            .env_remove("RELAY_SERVICENOW_FILE")
            .env_remove("RELAY_CONFIG_PATH")
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| CliError::Failed(format!("cannot start relay serve: {e}")))?;
        let stdout = child.stdout.take();
        let mut server = Server {
            child,
            url: String::new(),
            simulator_url: String::new(),
        };
        let mut lines = BufReader::new(stdout.ok_or_else(|| CliError::failed("relay serve has no stdout"))?).lines();
        let url_in = |line: &str| {
            line.split_whitespace()
                .find(|w| w.starts_with("http://"))
                .map(str::to_owned)
                .unwrap_or_default()
        };
        for line in lines.by_ref() {
            let line = line.map_err(|e| CliError::Failed(format!("reading relay serve's output: {e}")))?;
            if line.trim_start().starts_with("listening") {
                server.url = url_in(&line);
            }
            if line.contains("built-in simulator at") {
                server.simulator_url = url_in(&line);
            }
            if line == "ready" {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        if server.url.is_empty() || server.simulator_url.is_empty() {
            return Err(CliError::failed("relay serve did not print its addresses"));
        }
        Ok(server)
    }

    /// The server's peak resident set (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the send phase saw.
struct Sent {
    /// (alert id, send time in ms) in send order.
    sent_at: Vec<(String, i64)>,
    /// HTTP answer times, µs, sorted.
    ack_us: Vec<i64>,
    accepted: u64,
    /// Count per non-202 status (0: no answer).
    errors: BTreeMap<u16, u64>,
    /// Seconds the schedule took to offer every alert.
    offered_s: f64,
    /// Seconds until every answer was in.
    answered_s: f64,
}

fn measure(args: &LoadArgs, templates: &[Value], db: &Path) -> Result<String, CliError> {
    let server = Server::start(args.workers, db, &["--batch-window-seconds".into(), "2".into()], None)?;
    let (keys, _) = settings::signing_secrets(None, db, false).map_err(CliError::failed)?;
    let total = args.rate * args.duration;
    println!(
        "load: {total} alerts at {}/s for {} s, mix {}, against {}",
        args.rate, args.duration, args.mix, server.url
    );
    runtime()?.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(args.connections)
            .build()
            .map_err(CliError::failed)?;
        let api = RelayApi::new(http.clone(), &server.url);
        let alert = |i: u64| {
            let mut alert = templates[i as usize % templates.len()].clone();
            alert["alert_id"] = Value::String(format!("load-{i}"));
            alert
        };
        let sent = send_all(total, args.rate as f64, args.connections, alert, &api, Arc::new(keys)).await?;
        let (done, failed) = settled(db, DRAIN_LIMIT).await?;
        let (records, distinct) = simulator_records(&http, &server.simulator_url, &Config::default_config()).await?;

        let completed_at: HashMap<&str, (i64, &str)> = done
            .iter()
            .map(|e| (e.alert_id.as_str(), (e.updated_at_ms, e.severity.as_str())))
            .collect();
        let first_send = sent.sent_at.first().map(|s| s.1).unwrap_or(0);
        let mut latency_ms = Vec::new();
        let mut last_done = first_send;
        for (id, t0) in &sent.sent_at {
            if let Some((t, severity)) = completed_at.get(id.as_str()) {
                last_done = last_done.max(*t);
                if *severity == "critical" || args.mix != "all" {
                    latency_ms.push(t - t0);
                }
            }
        }
        latency_ms.sort_unstable();
        let delivered = sent
            .sent_at
            .iter()
            .filter(|(id, _)| completed_at.contains_key(id.as_str()))
            .count();
        let span_s = (last_done - first_send) as f64 / 1000.0;
        let errors = if sent.errors.is_empty() {
            "0".to_string()
        } else {
            format!("{:?}", sent.errors)
        };
        Ok(format!(
            "| {mix} | {rate}/s × {dur} s | {total} | {accepted} | {errors} | {offered:.0}/s | {delivered} in {span_s:.1} s \
             = **{thr:.0}/s** | {p50} ms | **{p99} ms** | {max} ms | {a50:.1} / {a99:.1} ms | {records} records, \
             {distinct} distinct, {failed} failed | {rss} MiB |",
            mix = args.mix,
            rate = args.rate,
            dur = args.duration,
            accepted = sent.accepted,
            offered = total as f64 / sent.offered_s.max(sent.answered_s.min(sent.offered_s)),
            thr = delivered as f64 / span_s.max(0.001),
            p50 = percentile(&latency_ms, 0.5),
            p99 = percentile(&latency_ms, 0.99),
            max = latency_ms.last().copied().unwrap_or(0),
            a50 = percentile(&sent.ack_us, 0.5) as f64 / 1000.0,
            a99 = percentile(&sent.ack_us, 0.99) as f64 / 1000.0,
            failed = failed.len(),
            rss = server.peak_rss_kib().unwrap_or(0) / 1024,
        ))
    })
}

/// The load tool's own runtime (one thread: the server gets the rest of the machine).
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))
}

/// Send alerts `alert(0) … alert(total − 1)` on a fixed schedule of `rate` per second (open loop), at most
/// `connections` in flight.
async fn send_all(
    total: u64,
    rate: f64,
    connections: usize,
    alert: impl Fn(u64) -> Value,
    api: &RelayApi,
    keys: Arc<WebhookSecrets>,
) -> Result<Sent, CliError> {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(connections));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(total as usize);
    let mut sent_at = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let alert = alert(i);
        let id = alert["alert_id"].as_str().unwrap_or_default().to_string();
        let body = serde_json::to_vec(&alert).map_err(CliError::failed)?;
        let permit = in_flight.clone().acquire_owned().await.map_err(CliError::failed)?;
        let (api, keys) = (api.clone(), keys.clone());
        let t0 = SystemClock.now_ms();
        sent_at.push((id, t0));
        handles.push(tokio::spawn(async move {
            let _permit = permit;
            let t = Instant::now();
            let status = api
                .post_alert(&keys, &format!("msg_load_{i}"), t0 / 1000, body)
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            (status, t.elapsed().as_micros() as i64)
        }));
    }
    let offered_s = started.elapsed().as_secs_f64();
    let mut ack_us = Vec::with_capacity(handles.len());
    let mut accepted = 0u64;
    let mut errors = BTreeMap::<u16, u64>::new();
    for h in handles {
        let (status, us) = h.await.map_err(CliError::failed)?;
        ack_us.push(us);
        if status == 202 {
            accepted += 1;
        } else {
            *errors.entry(status).or_default() += 1;
        }
    }
    ack_us.sort_unstable();
    Ok(Sent {
        sent_at,
        ack_us,
        accepted,
        errors,
        offered_s,
        answered_s: started.elapsed().as_secs_f64(),
    })
}

/// Once no alert is waiting ([`wait_until_settled`]): the ledger's completed entries and the failed ones.
async fn settled(db: &Path, limit: Duration) -> Result<(Vec<LedgerEntry>, Vec<LedgerEntry>), CliError> {
    let store = LocalStore::open(db).map_err(CliError::failed)?;
    wait_until_settled(&store, limit).await?;
    let ledger = store.ledger();
    let mut lists = Vec::new();
    for state in [DeliveryState::Completed, DeliveryState::Failed] {
        lists.push(ledger.list_in_state(state, u32::MAX).await.map_err(CliError::failed)?);
    }
    let failed = lists.pop().unwrap_or_default();
    Ok((lists.pop().unwrap_or_default(), failed))
}

/// Wait until no ledger entry is waiting any more (every accepted alert is delivered or failed), reading the
/// server's database (WAL: the server keeps writing meanwhile).
async fn wait_until_settled(store: &LocalStore, limit: Duration) -> Result<(), CliError> {
    const WAITING: [DeliveryState; 5] = [
        DeliveryState::Accepted,
        DeliveryState::Queued,
        DeliveryState::InProgress,
        DeliveryState::Retrying,
        DeliveryState::Aggregated,
    ];
    let deadline = Instant::now() + limit;
    loop {
        let mut waiting = Vec::new();
        for state in WAITING {
            let n = store
                .ledger()
                .list_in_state(state, u32::MAX)
                .await
                .map_err(CliError::failed)?
                .len();
            if n > 0 {
                waiting.push(format!("{n} {}", state.as_str()));
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CliError::Failed(format!(
                "alerts still waiting {} s after the last send: {}",
                limit.as_secs(),
                waiting.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Exactly once: (records, distinct relay keys) over every table `config` routes to (the key read from each
/// table's dedupe field, as its profile writes it).
async fn simulator_records(
    http: &reqwest::Client,
    simulator_url: &str,
    config: &Config,
) -> Result<(usize, usize), CliError> {
    let mut records = 0usize;
    let mut keys = HashSet::new();
    for (record_type, table) in settings::mapped_tables(config) {
        let dedupe = &config.profile_for(record_type, &table).dedupe;
        let v: Value = sim_json(http, &format!("{simulator_url}/sim/records/{table}"), "records").await?;
        for r in v["result"].as_array().cloned().unwrap_or_default() {
            records += 1;
            // a record without the key counts once: a second one shows as a duplicate
            let key = dedupe
                .key_in(r[dedupe.field.as_str()].as_str().unwrap_or(""))
                .unwrap_or("");
            keys.insert(format!("{table}/{key}"));
        }
    }
    Ok((records, keys.len()))
}

/// A JSON document from the simulator's own API (`/sim/...`); `what` names it in an error.
async fn sim_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    what: &str,
) -> Result<T, CliError> {
    let answer = http
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| CliError::Failed(format!("the simulator's {what} ({url}): {e}")))?;
    answer
        .json()
        .await
        .map_err(|e| CliError::Failed(format!("the simulator's {what} ({url}): {e}")))
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
