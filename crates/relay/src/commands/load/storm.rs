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
    LoadArgs, SIM_ADMIN, Server, in_temp_dir, percentile, runtime, sample, send_all, settled, sim_json,
    simulator_records,
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
    let log: Log = sim_json(http, &format!("{simulator_url}/sim/requests"), "request log").await?;
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
    type Show<'a> = &'a dyn Fn(&Figures) -> String;
    type Size<'a> = &'a dyn Fn(&Figures) -> f64;
    let mut rows: Vec<[String; 4]> = Vec::new();
    // One row: the figure of each run and, when it has a size, naive ÷ relay.
    let mut row = |what: String, show: Show, size: Option<Size>| {
        let ratio = match size {
            Some(size) if size(ours) > 0.0 => format!("{:.1}×", size(naive) / size(ours)),
            Some(_) => "–".into(),
            None => String::new(),
        };
        rows.push([what, show(ours), show(naive), ratio]);
    };
    let secs = |ms: i64| format!("{:.1} s", ms as f64 / 1000.0);
    for name in SEVERITIES {
        let stat = |what: &str, f: &Figures| {
            let s = &f.severity[name];
            match what {
                "p50" => s.p50_ms,
                "p99" => s.p99_ms,
                _ => s.max_ms,
            }
        };
        for what in ["p50", "p99", "max"] {
            row(
                format!("{name} {what} (webhook → record; {} sent)", ours.severity[name].sent),
                &|f| secs(stat(what, f)),
                Some(&|f| stat(what, f) as f64),
            );
        }
    }
    row(
        "time until the last batch record".into(),
        &|f| format!("{:.1} s", f.last_batch_record_s),
        Some(&|f| f.last_batch_record_s),
    );
    row(
        "ServiceNow requests (of them Batch API; items)".into(),
        &|f| format!("{} ({}; {})", f.servicenow_requests, f.batch_requests, f.batch_items),
        Some(&|f| f.servicenow_requests as f64),
    );
    row(
        "ServiceNow calls per alert".into(),
        &|f| format!("{:.3}", f.calls_per_alert),
        Some(&|f| f.calls_per_alert),
    );
    row(
        "429 answers".into(),
        &|f| {
            let total: u64 = f.throttled_per_minute.iter().sum();
            let minutes: Vec<String> = f.throttled_per_minute.iter().map(u64::to_string).collect();
            let minutes = if minutes.is_empty() {
                "0".into()
            } else {
                minutes.join(", ")
            };
            format!("{total} (per minute: {minutes})")
        },
        None,
    );
    row(
        "answers ≥ 400 by status".into(),
        &|f| format!("{:?}", f.error_answers),
        None,
    );
    row(
        "records, lost, duplicated".into(),
        &|f| {
            format!(
                "{} records, {} distinct: {} duplicated; {} of {} accepted not delivered ({} failed)",
                f.records, f.distinct_records, f.duplicated, f.not_delivered, f.accepted, f.failed
            )
        },
        None,
    );
    row(
        "concurrency limit at the end".into(),
        &|f| f.concurrency_limit.map_or("–".into(), |l| format!("{l:.0}")),
        None,
    );
    row(
        "server peak RSS".into(),
        &|f| format!("{} MiB", f.peak_rss_mib),
        Some(&|f| f.peak_rss_mib as f64),
    );
    let mut out = format!(
        "storm: {} alerts over {:.0} s, {} employees, batch window {} s, realistic simulator\n\n\
         | figure | relay | naive | naive ÷ relay |\n|---|---|---|---|\n",
        plan.alerts, plan.seconds, plan.employees, plan.batch_window_seconds
    );
    for [what, a, b, r] in rows {
        out.push_str(&format!("| {what} | {a} | {b} | {r} |\n"));
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(scale: i64) -> Figures {
        let severity = SEVERITIES
            .iter()
            .map(|name| {
                let latency = Latency {
                    sent: 10,
                    delivered: 10,
                    p50_ms: 1_000 * scale,
                    p99_ms: 2_000 * scale,
                    max_ms: 3_000 * scale,
                };
                (name.to_string(), latency)
            })
            .collect();
        Figures {
            accepted: 40,
            rejected: BTreeMap::new(),
            severity,
            last_batch_record_s: 60.0 * scale as f64,
            servicenow_requests: 10 * scale as u64,
            batch_requests: 2,
            batch_items: 30,
            calls_per_alert: 0.25 * scale as f64,
            error_answers: BTreeMap::from([(429, 3)]),
            throttled_per_minute: vec![1, 2],
            records: 40,
            distinct_records: 40,
            duplicated: 0,
            not_delivered: 0,
            failed: 0,
            concurrency_limit: None,
            peak_rss_mib: 0,
        }
    }

    #[test]
    fn the_table_has_one_row_per_figure_with_naive_over_relay() {
        let plan = Plan::scaled(0.01).unwrap();
        let text = table(&plan, &figures(1), &figures(4));
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| figure"))
            .collect();
        assert_eq!(rows.len(), SEVERITIES.len() * 3 + 8, "{text}");
        assert!(
            text.contains(&format!(
                "| {} p99 (webhook → record; 10 sent) | 2.0 s | 8.0 s | 4.0× |",
                SEVERITIES[0]
            )),
            "{text}"
        );
        assert!(
            text.contains("| ServiceNow calls per alert | 0.250 | 1.000 | 4.0× |"),
            "{text}"
        );
        assert!(
            text.contains("| 429 answers | 3 (per minute: 1, 2) | 3 (per minute: 1, 2) |  |"),
            "{text}"
        );
        // a size of 0 in the relay's run has no ratio
        assert!(text.contains("| server peak RSS | 0 MiB | 0 MiB | – |"), "{text}");
        assert!(text.contains("| concurrency limit at the end | – | – |  |"), "{text}");
    }

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
