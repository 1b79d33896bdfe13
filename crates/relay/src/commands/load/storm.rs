//! `relay load --profile storm`: the alert storm of BENCHMARKS.md ("Alert storm"). Alert `i` of 10,000, sent
//! evenly over 60 s, has severity by `i % 100` (0 critical, 1–9 high, 10–49 medium, 50–99 low), alert type
//! `(i + i / 100) % 5` (so every type sees every severity), and employee `(i × 7919) % 500`; the 500
//! employees are `sys_user` rows created first through the Table API as the simulator's admin. The server is
//! `relay serve --simulator-profile realistic --batch-window-seconds 60`, run twice on fresh databases: the
//! relay's delivery, then `--naive-delivery` (one FIFO lane, a fixed 8 calls, no breaker). `--scale F`
//! scales the alerts, the seconds, the employees and the window (the test command runs a small storm).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use relay_core::Config;
use serde::Serialize;
use serde_json::{Value, json};
use servicenow_sim::LoggedRequest;

use super::{
    LoadArgs, SIM_ADMIN, Server, in_temp_dir, percentile, runtime, sample, send_all, settled, simulator_records,
};
use crate::api::RelayApi;
use crate::error::CliError;
use crate::settings;

/// The alert types, as the sample alerts name them; `(i + i / 100) % 5` picks one.
const TYPES: [&str; 5] = [
    "dlp",
    "policy-violation",
    "behavioral-anomaly",
    "productivity",
    "custom",
];
const SEVERITIES: [&str; 4] = ["critical", "high", "medium", "low"];

/// How long the queues may take to settle after the last send (the last batch window closes up to one
/// window after it, and its Batch API calls run their items one after another).
const SETTLE_LIMIT: Duration = Duration::from_secs(900);

/// The storm at `--scale`.
#[derive(Debug, Clone, Serialize)]
struct Plan {
    alerts: u64,
    seconds: f64,
    employees: u64,
    batch_window_seconds: u64,
}

impl Plan {
    fn scaled(scale: f64) -> Result<Plan, CliError> {
        if !(scale > 0.0 && scale <= 1.0) {
            return Err(CliError::Invalid(format!(
                "--scale must be greater than 0 and at most 1 (got {scale})"
            )));
        }
        Ok(Plan {
            alerts: ((10_000.0 * scale).round() as u64).max(100),
            seconds: 60.0 * scale,
            employees: ((500.0 * scale).round() as u64).max(10),
            batch_window_seconds: ((60.0 * scale).round() as u64).max(1),
        })
    }

    /// Index into SEVERITIES of alert `i`.
    fn severity(i: u64) -> usize {
        match i % 100 {
            0 => 0,
            1..=9 => 1,
            10..=49 => 2,
            _ => 3,
        }
    }

    fn employee(&self, n: u64) -> String {
        format!("S{n:04}")
    }

    fn alert(&self, i: u64, templates: &HashMap<(usize, usize), Value>) -> Value {
        let kind = ((i + i / 100) % TYPES.len() as u64) as usize;
        let mut alert = templates[&(kind, Plan::severity(i))].clone();
        alert["alert_id"] = Value::String(format!("storm-{i}"));
        alert["employee"]["id"] = Value::String(self.employee((i * 7919) % self.employees));
        alert
    }
}

/// Webhook → record latency of one severity.
#[derive(Debug, Clone, Serialize)]
struct Latency {
    sent: u64,
    delivered: u64,
    p50_ms: i64,
    p99_ms: i64,
    max_ms: i64,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
struct Figures {
    accepted: u64,
    /// Non-202 answers to the webhook, by status (0: no answer).
    rejected: BTreeMap<u16, u64>,
    severity: BTreeMap<String, Latency>,
    /// From the first send until the last medium/low alert's record.
    last_batch_record_s: f64,
    /// HTTP requests the relay made to ServiceNow (a Batch API request is one).
    servicenow_requests: u64,
    /// Of them, Batch API requests, and the Table API operations they carried.
    batch_requests: u64,
    batch_items: u64,
    /// `servicenow_requests` / accepted alerts.
    calls_per_alert: f64,
    /// Answers with status ≥ 400, by status.
    error_answers: BTreeMap<u16, u64>,
    /// 429 answers in each minute from the first send.
    throttled_per_minute: Vec<u64>,
    records: usize,
    distinct_records: usize,
    duplicated: usize,
    /// Accepted alerts whose ledger entry is not COMPLETED (failed ones included).
    not_delivered: u64,
    failed: u64,
    /// The adaptive limit at the end (`ServiceNowConcurrencyLimit`), when the server exports it.
    concurrency_limit: Option<f64>,
    peak_rss_mib: u64,
}

/// Run the storm twice and give the side-by-side table (or the JSON object with `--json`).
pub(super) fn run(args: &LoadArgs) -> Result<String, CliError> {
    let plan = Plan::scaled(args.scale)?;
    let mut templates = HashMap::new();
    for (t, kind) in TYPES.iter().enumerate() {
        for (s, severity) in SEVERITIES.iter().enumerate() {
            templates.insert((t, s), sample(&format!("{kind}-{severity}"))?);
        }
    }
    let keep = args.requests_log.as_deref();
    let ours = in_temp_dir(|dir| {
        logged(dir, keep, "relay", |log| {
            measure(args, &plan, &templates, dir, log, false)
        })
    })?;
    let naive = in_temp_dir(|dir| {
        logged(dir, keep, "naive", |log| {
            measure(args, &plan, &templates, dir, log, true)
        })
    })?;
    if args.json {
        return serde_json::to_string_pretty(&json!({"plan": plan, "relay": ours, "naive": naive}))
            .map_err(CliError::failed);
    }
    Ok(table(&plan, &ours, &naive))
}

/// `run` with the server's log in `dir` (kept as `<keep>/storm-<name>.log` when asked); when it fails, the
/// log's last lines go to stderr (otherwise its warnings are counted: a storm's retries would fill the
/// terminal).
fn logged(
    dir: &Path,
    keep: Option<&Path>,
    name: &str,
    run: impl FnOnce(&Path) -> Result<Figures, CliError>,
) -> Result<Figures, CliError> {
    let log = dir.join("serve.log");
    let result = run(&log);
    if let Some(keep) = keep {
        let _ = std::fs::copy(&log, keep.join(format!("storm-{name}.log")));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let warnings = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .count();
    match &result {
        Ok(_) => eprintln!("storm: the server logged {warnings} warnings and errors"),
        Err(_) => {
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("storm: the server's last log lines:");
            for line in &lines[lines.len().saturating_sub(20)..] {
                eprintln!("  {line}");
            }
        }
    }
    result
}

fn measure(
    args: &LoadArgs,
    plan: &Plan,
    templates: &HashMap<(usize, usize), Value>,
    dir: &Path,
    log: &Path,
    naive: bool,
) -> Result<Figures, CliError> {
    let db = &dir.join("relay.db");
    let mut extra: Vec<String> = ["--simulator-profile", "realistic", "--batch-window-seconds"]
        .map(String::from)
        .into();
    extra.push(plan.batch_window_seconds.to_string());
    if naive {
        extra.push("--naive-delivery".into());
    } else {
        extra.push("--servicenow-max-concurrency".into());
        extra.push(args.servicenow_max_concurrency.to_string());
    }
    let server = Server::start(args.workers, db, &extra, Some(log))?;
    let (keys, _) = settings::signing_secrets(None, db, false).map_err(CliError::failed)?;
    eprintln!(
        "storm ({}): {} alerts over {:.1} s, {} employees, batch window {} s, against {}",
        if naive { "naive delivery" } else { "relay delivery" },
        plan.alerts,
        plan.seconds,
        plan.employees,
        plan.batch_window_seconds,
        server.url
    );
    runtime()?.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(args.connections)
            .build()
            .map_err(CliError::failed)?;
        seed_employees(&http, &server.simulator_url, plan).await?;
        let api = RelayApi::new(http.clone(), &server.url);
        let rate = plan.alerts as f64 / plan.seconds;
        let sent = send_all(
            plan.alerts,
            rate,
            args.connections,
            |i| plan.alert(i, templates),
            &api,
            Arc::new(keys),
        )
        .await?;
        let (done, failed) = settled(db, SETTLE_LIMIT).await?;
        let completed_at: HashMap<&str, i64> = done.iter().map(|e| (e.alert_id.as_str(), e.updated_at_ms)).collect();

        let first_send = sent.sent_at.first().map_or(0, |s| s.1);
        let mut latency: [Vec<i64>; 4] = Default::default();
        let mut counts = [0u64; 4];
        let mut last_batch = first_send;
        for (i, (id, t0)) in sent.sent_at.iter().enumerate() {
            let s = Plan::severity(i as u64);
            counts[s] += 1;
            if let Some(t) = completed_at.get(id.as_str()) {
                latency[s].push(t - t0);
                if s >= 2 {
                    last_batch = last_batch.max(*t);
                }
            }
        }
        let severity = SEVERITIES
            .iter()
            .zip(latency.iter_mut().zip(counts))
            .map(|(name, (l, sent))| {
                l.sort_unstable();
                let figures = Latency {
                    sent,
                    delivered: l.len() as u64,
                    p50_ms: percentile(l, 0.5),
                    p99_ms: percentile(l, 0.99),
                    max_ms: l.last().copied().unwrap_or(0),
                };
                (name.to_string(), figures)
            })
            .collect();
        let delivered = sent
            .sent_at
            .iter()
            .filter(|(id, _)| completed_at.contains_key(id.as_str()))
            .count() as u64;

        let calls = relay_calls(&http, &server.simulator_url).await?;
        if let Some(dir) = &args.requests_log {
            let lines: Vec<String> = calls
                .iter()
                .map(|c| serde_json::to_string(c).unwrap_or_default())
                .collect();
            let path = dir.join(format!("storm-{}.jsonl", if naive { "naive" } else { "relay" }));
            std::fs::write(&path, lines.join("\n"))
                .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
        }
        let batch_requests = calls
            .iter()
            .filter(|r| !r.via_batch && r.path.contains("/batch"))
            .count() as u64;
        let servicenow_requests = calls.iter().filter(|r| !r.via_batch).count() as u64;
        let mut error_answers = BTreeMap::new();
        let mut throttled_per_minute = Vec::new();
        for r in calls.iter().filter(|r| !r.via_batch && r.status >= 400) {
            *error_answers.entry(r.status).or_insert(0u64) += 1;
            if r.status == 429 {
                let minute = ((r.at - first_send).max(0) / 60_000) as usize;
                if throttled_per_minute.len() <= minute {
                    throttled_per_minute.resize(minute + 1, 0);
                }
                throttled_per_minute[minute] += 1;
            }
        }
        let (records, distinct_records) =
            simulator_records(&http, &server.simulator_url, &Config::default_config()).await?;
        Ok(Figures {
            accepted: sent.accepted,
            rejected: sent.errors.clone(),
            severity,
            last_batch_record_s: (last_batch - first_send) as f64 / 1000.0,
            servicenow_requests,
            batch_requests,
            batch_items: calls.iter().filter(|r| r.via_batch).count() as u64,
            calls_per_alert: servicenow_requests as f64 / (sent.accepted.max(1)) as f64,
            error_answers,
            throttled_per_minute,
            records,
            distinct_records,
            duplicated: records.saturating_sub(distinct_records),
            not_delivered: sent.accepted.saturating_sub(delivered),
            failed: failed.len() as u64,
            concurrency_limit: concurrency_limit(&http, &server.url).await,
            peak_rss_mib: server.peak_rss_kib().unwrap_or(0) / 1024,
        })
    })
}

/// Create the plan's employees in `sys_user` (as the simulator's admin, 16 at a time), so that every
/// alert's person is found and the HR cases, which require one, can be created.
async fn seed_employees(http: &reqwest::Client, simulator_url: &str, plan: &Plan) -> Result<(), CliError> {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(16));
    let mut handles = Vec::new();
    for n in 0..plan.employees {
        let number = plan.employee(n);
        let row = json!({
            "user_name": number.to_lowercase(),
            "employee_number": number,
            "first_name": "Storm",
            "last_name": format!("Employee {n}"),
            "name": format!("Storm Employee {n}"),
            "email": format!("{}@example.com", number.to_lowercase()),
        });
        let permit = in_flight.clone().acquire_owned().await.map_err(CliError::failed)?;
        let request = http
            .post(format!("{simulator_url}/api/now/table/sys_user"))
            .basic_auth(SIM_ADMIN.0, Some(SIM_ADMIN.1))
            .json(&row);
        handles.push(tokio::spawn(async move {
            let _permit = permit;
            request.send().await.map(|r| r.status().as_u16())
        }));
    }
    for h in handles {
        match h.await.map_err(CliError::failed)? {
            Ok(201) => {}
            Ok(status) => {
                return Err(CliError::Failed(format!(
                    "the simulator answered {status} to creating a storm employee in sys_user"
                )));
            }
            Err(e) => return Err(CliError::Failed(format!("creating a storm employee in sys_user: {e}"))),
        }
    }
    Ok(())
}

/// The simulator's request log without the admin's requests (the seeding).
async fn relay_calls(http: &reqwest::Client, simulator_url: &str) -> Result<Vec<LoggedRequest>, CliError> {
    #[derive(serde::Deserialize)]
    struct Log {
        result: Vec<LoggedRequest>,
    }
    let log: Log = http
        .get(format!("{simulator_url}/sim/requests"))
        .send()
        .await
        .map_err(CliError::failed)?
        .json()
        .await
        .map_err(|e| CliError::Failed(format!("the simulator's request log: {e}")))?;
    Ok(log
        .result
        .into_iter()
        .filter(|r| r.user.as_deref() != Some(SIM_ADMIN.0))
        .collect())
}

/// The `ServiceNowConcurrencyLimit` gauge from the server's `/metrics`, if it has one.
async fn concurrency_limit(http: &reqwest::Client, url: &str) -> Option<f64> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .filter(|l| l.starts_with("ServiceNowConcurrencyLimit"))
        .find_map(|l| l.split_whitespace().last()?.parse().ok())
}

/// The side-by-side Markdown table: one row per figure, the two runs, and naive ÷ relay where a ratio says
/// something.
fn table(plan: &Plan, ours: &Figures, naive: &Figures) -> String {
    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.1}×", a / b)
        } else {
            "–".into()
        }
    };
    let secs = |ms: i64| format!("{:.1} s", ms as f64 / 1000.0);
    for name in SEVERITIES {
        let (a, b) = (&ours.severity[name], &naive.severity[name]);
        for (what, x, y) in [
            ("p50", a.p50_ms, b.p50_ms),
            ("p99", a.p99_ms, b.p99_ms),
            ("max", a.max_ms, b.max_ms),
        ] {
            rows.push((
                format!("{name} {what} (webhook → record; {} sent)", a.sent),
                secs(x),
                secs(y),
                ratio(y as f64, x as f64),
            ));
        }
    }
    rows.push((
        "time until the last batch record".into(),
        format!("{:.1} s", ours.last_batch_record_s),
        format!("{:.1} s", naive.last_batch_record_s),
        ratio(naive.last_batch_record_s, ours.last_batch_record_s),
    ));
    rows.push((
        "ServiceNow requests (of them Batch API; items)".into(),
        format!(
            "{} ({}; {})",
            ours.servicenow_requests, ours.batch_requests, ours.batch_items
        ),
        format!(
            "{} ({}; {})",
            naive.servicenow_requests, naive.batch_requests, naive.batch_items
        ),
        ratio(naive.servicenow_requests as f64, ours.servicenow_requests as f64),
    ));
    rows.push((
        "ServiceNow calls per alert".into(),
        format!("{:.3}", ours.calls_per_alert),
        format!("{:.3}", naive.calls_per_alert),
        ratio(naive.calls_per_alert, ours.calls_per_alert),
    ));
    let per_minute = |f: &Figures| {
        let total: u64 = f.throttled_per_minute.iter().sum();
        let minutes: Vec<String> = f.throttled_per_minute.iter().map(u64::to_string).collect();
        format!(
            "{total} (per minute: {})",
            if minutes.is_empty() {
                "0".into()
            } else {
                minutes.join(", ")
            }
        )
    };
    rows.push(("429 answers".into(), per_minute(ours), per_minute(naive), String::new()));
    let errors = |f: &Figures| format!("{:?}", f.error_answers);
    rows.push((
        "answers ≥ 400 by status".into(),
        errors(ours),
        errors(naive),
        String::new(),
    ));
    let exactly = |f: &Figures| {
        format!(
            "{} records, {} distinct: {} duplicated; {} of {} accepted not delivered ({} failed)",
            f.records, f.distinct_records, f.duplicated, f.not_delivered, f.accepted, f.failed
        )
    };
    rows.push((
        "records, lost, duplicated".into(),
        exactly(ours),
        exactly(naive),
        String::new(),
    ));
    let limit = |f: &Figures| f.concurrency_limit.map_or("–".into(), |l| format!("{l:.0}"));
    rows.push((
        "concurrency limit at the end".into(),
        limit(ours),
        limit(naive),
        String::new(),
    ));
    rows.push((
        "server peak RSS".into(),
        format!("{} MiB", ours.peak_rss_mib),
        format!("{} MiB", naive.peak_rss_mib),
        ratio(naive.peak_rss_mib as f64, ours.peak_rss_mib as f64),
    ));
    let mut out = format!(
        "storm: {} alerts over {:.0} s, {} employees, batch window {} s, realistic simulator\n\n\
         | figure | relay | naive | naive ÷ relay |\n|---|---|---|---|\n",
        plan.alerts, plan.seconds, plan.employees, plan.batch_window_seconds
    );
    for (what, a, b, r) in rows {
        out.push_str(&format!("| {what} | {a} | {b} | {r} |\n"));
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storm_mix_is_the_documented_one() {
        let plan = Plan::scaled(1.0).unwrap();
        assert_eq!(
            (plan.alerts, plan.employees, plan.batch_window_seconds),
            (10_000, 500, 60)
        );
        let mut per_severity = [0u64; 4];
        let mut types_of_critical = std::collections::BTreeSet::new();
        for i in 0..plan.alerts {
            per_severity[Plan::severity(i)] += 1;
            if Plan::severity(i) == 0 {
                types_of_critical.insert((i + i / 100) % 5);
            }
        }
        assert_eq!(per_severity, [100, 900, 4000, 5000], "1 % / 9 % / 40 % / 50 %");
        assert_eq!(types_of_critical.len(), 5, "every alert type has critical alerts");
        assert!(Plan::scaled(0.0).is_err() && Plan::scaled(1.5).is_err() && Plan::scaled(f64::NAN).is_err());
        let small = Plan::scaled(0.05).unwrap();
        assert_eq!(
            (small.alerts, small.employees, small.batch_window_seconds),
            (500, 25, 3)
        );
    }

    #[test]
    fn every_storm_alert_is_a_valid_sample_with_its_own_id_and_employee() {
        let plan = Plan::scaled(0.05).unwrap();
        let mut templates = HashMap::new();
        for (t, kind) in TYPES.iter().enumerate() {
            for (s, severity) in SEVERITIES.iter().enumerate() {
                templates.insert((t, s), sample(&format!("{kind}-{severity}")).unwrap());
            }
        }
        let alert = plan.alert(101, &templates);
        assert_eq!(alert["alert_id"], "storm-101");
        assert_eq!(alert["severity"], "high");
        assert_eq!(alert["employee"]["id"], plan.employee(101 * 7919 % plan.employees));
        let parsed = relay_core::Alert::from_value(&alert);
        assert!(parsed.is_ok(), "{parsed:?}");
    }
}
