//! `relay load` (hidden): the reproducible load benchmark of the local mode. Starts `relay serve` (this
//! binary) on a fresh database with the built-in simulator, sends signed alerts over HTTP at a fixed rate
//! (open loop: the schedule does not wait for answers), waits until every accepted alert is delivered, and
//! reports throughput, webhook → record latency (from the send to the ledger's completion time, which is
//! written after ServiceNow answered with the record), exactly-once counts and the server's peak RSS.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use relay_local::LocalStore;
use relay_ports::{Clock, DeliveryState, SystemClock};
use serde_json::Value;

use crate::settings;

#[derive(Args, Debug)]
pub struct LoadArgs {
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

const SAMPLES: [(&str, &str); 20] = [
    ("dlp-critical", include_str!("../../../events/alerts/dlp-critical.json")),
    ("dlp-high", include_str!("../../../events/alerts/dlp-high.json")),
    ("dlp-medium", include_str!("../../../events/alerts/dlp-medium.json")),
    ("dlp-low", include_str!("../../../events/alerts/dlp-low.json")),
    (
        "policy-violation-critical",
        include_str!("../../../events/alerts/policy-violation-critical.json"),
    ),
    (
        "policy-violation-high",
        include_str!("../../../events/alerts/policy-violation-high.json"),
    ),
    (
        "policy-violation-medium",
        include_str!("../../../events/alerts/policy-violation-medium.json"),
    ),
    (
        "policy-violation-low",
        include_str!("../../../events/alerts/policy-violation-low.json"),
    ),
    (
        "behavioral-anomaly-critical",
        include_str!("../../../events/alerts/behavioral-anomaly-critical.json"),
    ),
    (
        "behavioral-anomaly-high",
        include_str!("../../../events/alerts/behavioral-anomaly-high.json"),
    ),
    (
        "behavioral-anomaly-medium",
        include_str!("../../../events/alerts/behavioral-anomaly-medium.json"),
    ),
    (
        "behavioral-anomaly-low",
        include_str!("../../../events/alerts/behavioral-anomaly-low.json"),
    ),
    (
        "productivity-critical",
        include_str!("../../../events/alerts/productivity-critical.json"),
    ),
    (
        "productivity-high",
        include_str!("../../../events/alerts/productivity-high.json"),
    ),
    (
        "productivity-medium",
        include_str!("../../../events/alerts/productivity-medium.json"),
    ),
    (
        "productivity-low",
        include_str!("../../../events/alerts/productivity-low.json"),
    ),
    (
        "custom-critical",
        include_str!("../../../events/alerts/custom-critical.json"),
    ),
    ("custom-high", include_str!("../../../events/alerts/custom-high.json")),
    (
        "custom-medium",
        include_str!("../../../events/alerts/custom-medium.json"),
    ),
    ("custom-low", include_str!("../../../events/alerts/custom-low.json")),
];

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Stops the server (SIGTERM, then SIGKILL) when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn load(args: &LoadArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &LoadArgs) -> Result<(), String> {
    let templates: Vec<Value> = SAMPLES
        .iter()
        .filter(|(name, _)| match args.mix.as_str() {
            "critical" => name.ends_with("-critical"),
            "realtime" => name.ends_with("-critical") || name.ends_with("-high"),
            _ => true,
        })
        .map(|(_, text)| serde_json::from_str(text).map_err(|e| format!("sample: {e}")))
        .collect::<Result<_, _>>()?;
    if !["critical", "realtime", "all"].contains(&args.mix.as_str()) {
        return Err(format!("--mix must be critical, realtime or all (got {:?})", args.mix));
    }
    let dir = std::env::temp_dir().join(format!("relay-load-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let db = dir.join("relay.db");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["serve", "--port", "0", "--batch-window-seconds", "2", "--workers"])
        .arg(args.workers.to_string())
        .arg("--db")
        .arg(&db)
        .env("RELAY_LOG", "warn")
        .env_remove("RELAY_WEBHOOK_SECRET")
        .env_remove("RELAY_WEBHOOK_SECRET_FILE")
        .env_remove("SERVICENOW_INSTANCE_URL")
        .env_remove("RELAY_SERVICENOW_FILE")
        .env_remove("RELAY_CONFIG_PATH")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start relay serve: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let pid = child.id();
    let server = Server(child);
    let (mut url, mut sim) = (String::new(), String::new());
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.map_err(|e| e.to_string())?;
        let find_url = |l: &str| {
            l.split_whitespace()
                .find(|w| w.starts_with("http://"))
                .map(str::to_owned)
        };
        if line.trim_start().starts_with("listening") {
            url = find_url(&line).unwrap_or_default();
        }
        if line.contains("built-in simulator at") {
            sim = find_url(&line).unwrap_or_default();
        }
        if line == "ready" {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    if url.is_empty() || sim.is_empty() {
        return Err("relay serve did not print its addresses".into());
    }
    let (keys, _) = settings::signing_secrets(None, &db, false).map_err(|e| e.to_string())?;
    let keys = Arc::new(keys);
    let total = args.rate * args.duration;
    println!(
        "load: {total} alerts at {}/s for {} s, mix {}, against {url}",
        args.rate, args.duration, args.mix
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = rt.block_on(async {
        let http = reqwest::Client::builder().pool_max_idle_per_host(args.connections).build().map_err(|e| e.to_string())?;
        let sem = Arc::new(tokio::sync::Semaphore::new(args.connections));
        let started = Instant::now();
        let mut handles = Vec::with_capacity(total as usize);
        let mut sent_at = Vec::with_capacity(total as usize);
        for i in 0..total {
            let due = started + Duration::from_secs_f64(i as f64 / args.rate as f64);
            tokio::time::sleep_until(due.into()).await;
            let mut alert = templates[i as usize % templates.len()].clone();
            let id = format!("load-{i}");
            alert["alert_id"] = Value::String(id.clone());
            let body = serde_json::to_vec(&alert).map_err(|e| e.to_string())?;
            let permit = sem.clone().acquire_owned().await.map_err(|e| e.to_string())?;
            let (http, keys, url) = (http.clone(), keys.clone(), url.clone());
            let t0 = SystemClock.now_ms();
            sent_at.push((id, t0));
            handles.push(tokio::spawn(async move {
                let _permit = permit;
                let wid = format!("msg_load_{i}");
                let ts = t0 / 1000;
                let sig = keys.sign(&wid, ts, &body);
                let t = Instant::now();
                let r = http
                    .post(format!("{url}/v1/alerts"))
                    .header("content-type", "application/json")
                    .header("webhook-id", &wid)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", sig)
                    .body(body)
                    .send()
                    .await;
                (r.map(|r| r.status().as_u16()).unwrap_or(0), t.elapsed().as_micros() as i64)
            }));
        }
        let offered_s = started.elapsed().as_secs_f64();
        let mut ack_us = Vec::with_capacity(handles.len());
        let mut accepted = 0u64;
        let mut errors = std::collections::BTreeMap::<u16, u64>::new();
        for h in handles {
            let (status, us) = h.await.map_err(|e| e.to_string())?;
            ack_us.push(us);
            if status == 202 {
                accepted += 1;
            } else {
                *errors.entry(status).or_default() += 1;
            }
        }
        let send_s = started.elapsed().as_secs_f64();
        // wait until every queue is empty
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let h: Value = http.get(format!("{url}/healthz")).send().await.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())?;
            let q = &h["queues"];
            if q["realtime"] == 0 && q["batch"] == 0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("queues not drained after 120 s: {q}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let store = LocalStore::open(&db).map_err(|e| e.to_string())?;
        let done = store.ledger().list_in_state(DeliveryState::Completed, u32::MAX).await.map_err(|e| e.to_string())?;
        let failed = store.ledger().list_in_state(DeliveryState::Failed, u32::MAX).await.map_err(|e| e.to_string())?;
        let completed_at: std::collections::HashMap<&str, (i64, &str)> =
            done.iter().map(|e| (e.alert_id.as_str(), (e.updated_at_ms, e.severity.as_str()))).collect();
        let first_send = sent_at.first().map(|s| s.1).unwrap_or(0);
        let mut lat = Vec::new();
        let mut last_done = first_send;
        for (id, t0) in &sent_at {
            if let Some((t, sev)) = completed_at.get(id.as_str()) {
                last_done = last_done.max(*t);
                if *sev == "critical" || args.mix != "all" {
                    lat.push(t - t0);
                }
            }
        }
        lat.sort_unstable();
        ack_us.sort_unstable();
        // exactly once: every delivered alert is one record in the simulator
        let mut records = 0usize;
        let mut correlation = std::collections::HashSet::new();
        for table in settings::mapped_tables(&relay_core::Config::default_config()) {
            let v: Value = http.get(format!("{sim}/sim/records/{table}")).send().await.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())?;
            for r in v["result"].as_array().cloned().unwrap_or_default() {
                records += 1;
                correlation.insert(r["correlation_id"].as_str().unwrap_or("").to_string());
            }
        }
        let delivered_alerts = sent_at.iter().filter(|(id, _)| completed_at.contains_key(id.as_str())).count();
        let span_s = (last_done - first_send) as f64 / 1000.0;
        Ok::<_, String>(format!(
            "| {mix} | {rate}/s × {dur} s | {total} | {accepted} | {errs} | {offered:.0}/s | {delivered} in {span:.1} s = **{thr:.0}/s** | {p50} ms | **{p99} ms** | {max} ms | {a50:.1} / {a99:.1} ms | {records} records, {uniq} distinct, {failed} failed | {rss} MiB |",
            mix = args.mix,
            rate = args.rate,
            dur = args.duration,
            errs = if errors.is_empty() { "0".to_string() } else { format!("{errors:?}") },
            offered = total as f64 / offered_s.max(send_s.min(offered_s)),
            delivered = delivered_alerts,
            span = span_s,
            thr = delivered_alerts as f64 / span_s.max(0.001),
            p50 = percentile(&lat, 0.5),
            p99 = percentile(&lat, 0.99),
            max = lat.last().copied().unwrap_or(0),
            a50 = percentile(&ack_us, 0.5) as f64 / 1000.0,
            a99 = percentile(&ack_us, 0.99) as f64 / 1000.0,
            uniq = correlation.len(),
            failed = failed.len(),
            rss = peak_rss_kib(pid).unwrap_or(0) / 1024,
        ))
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    let row = result?;
    println!(
        "| mix | offered | sent | accepted | errors | send rate | delivered (first send → last record) | e2e p50 | e2e p99 | e2e max | HTTP ack p50 / p99 | exactly once | server peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!("{row}");
    if let Some(path) = &args.append {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| e.to_string())?;
        writeln!(f, "{row}").map_err(|e| e.to_string())?;
    }
    Ok(())
}
