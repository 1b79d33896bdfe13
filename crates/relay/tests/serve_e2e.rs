//! End to end: the real `relay` binary. `relay serve` runs as a child process on 127.0.0.1 port 0 with a
//! fresh SQLite file; alerts are signed and POSTed over HTTP; records are read from the ServiceNow
//! simulator (the one built into `relay serve`, or one this test runs and points `relay serve` at, when the
//! records must outlive a relay process). Every test stops what it started.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_pipeline::WebhookSecrets;
use serde_json::{Value, json};
use servicenow_sim::{Fault, FaultKind, RunningSim, SimConfig, Simulator};

const BIN: &str = env!("CARGO_BIN_EXE_relay");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("events/alerts").join(name)).unwrap()
}

fn sample_with_id(name: &str, id: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&sample(name)).unwrap();
    v["alert_id"] = json!(id);
    serde_json::to_vec(&v).unwrap()
}

/// A running `relay serve`; killed when dropped.
struct Relay {
    child: Child,
    url: String,
    sim_url: Option<String>,
    out: Arc<Mutex<Vec<String>>>,
}

fn relay_cmd(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env("RELAY_LOG", "warn")
        .env_remove("RELAY_WEBHOOK_SECRET")
        .env_remove("RELAY_WEBHOOK_SECRET_FILE")
        .env_remove("RELAY_SERVICENOW_FILE")
        .env_remove("SERVICENOW_INSTANCE_URL")
        .env_remove("RELAY_CONFIG_PATH")
        .env_remove("RELAY_DB")
        .env_remove("RELAY_URL");
    c
}

fn start_relay(dir: &Path, extra: &[&str]) -> Relay {
    let mut child = relay_cmd(dir)
        .args(["serve", "--port", "0", "--db"])
        .arg(dir.join("relay.db"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("relay serve starts");
    let out = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "ready" {
                let _ = tx.send(());
            }
            sink.lock().unwrap().push(line);
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        panic!("relay serve did not become ready: {:?}", out.lock().unwrap());
    }
    let lines = out.lock().unwrap().clone();
    let url_in = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .and_then(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
            .map(str::to_owned)
    };
    let url = url_in("listening").expect("banner names the address");
    assert!(url.starts_with("http://127.0.0.1:"), "loopback by default: {url}");
    let token = std::fs::read_to_string(dir.join("read-token")).expect("the read token is generated");
    READ_TOKENS
        .lock()
        .unwrap()
        .push((url.clone(), token.trim().to_string()));
    Relay {
        child,
        url,
        sim_url: url_in("built-in simulator at"),
        out,
    }
}

impl Relay {
    fn banner(&self) -> String {
        self.out.lock().unwrap().join("\n")
    }

    /// SIGTERM and wait (graceful shutdown).
    fn stop(mut self) -> (ExitStatus, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (status, self.banner());
            }
            assert!(Instant::now() < deadline, "relay serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to clean up.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn secrets(dir: &Path) -> WebhookSecrets {
    WebhookSecrets::from_document(&std::fs::read_to_string(dir.join("webhook-secret.json")).unwrap()).unwrap()
}

async fn post(url: &str, keys: &WebhookSecrets, body: &[u8], webhook_id: &str) -> (u16, Value) {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/alerts"))
        .header("content-type", "application/json")
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", keys.sign(webhook_id, ts, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The read token of each running relay, by its base URL (the status and operator routes need it).
static READ_TOKENS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// GET `url` as JSON, with the read token of the relay it belongs to (if any).
async fn get_json(url: &str) -> (u16, Value) {
    let token = READ_TOKENS
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(base, _)| url.starts_with(base.as_str()))
        .map(|(_, t)| t.clone());
    let mut request = reqwest::Client::new().get(url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn sim_records(sim_url: &str, table: &str) -> Vec<Value> {
    let (status, v) = get_json(&format!("{sim_url}/sim/records/{table}")).await;
    assert_eq!(status, 200);
    v["result"].as_array().cloned().unwrap_or_default()
}

/// Poll until `check` holds (at most `secs`).
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn state_of(url: &str, id: &str) -> Value {
    get_json(&format!("{url}/v1/alerts/{id}")).await.1
}

/// Whether every alert in `ids` is `COMPLETED`.
async fn all_completed(url: &str, ids: &[String]) -> bool {
    for id in ids {
        if state_of(url, id).await["state"] != "COMPLETED" {
            return false;
        }
    }
    true
}

fn servicenow_file(dir: &Path, url: &str, user: &str, password: &str) -> PathBuf {
    let path = dir.join(format!("servicenow-{user}.json"));
    std::fs::write(
        &path,
        json!({"instance_url": url, "auth": "basic", "username": user, "password": password}).to_string(),
    )
    .unwrap();
    path
}

fn run_relay(dir: &Path, args: &[&str]) -> Output {
    relay_cmd(dir).args(args).output().expect("relay runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_scenarios_become_records_through_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(dir.path(), &["--batch-window-seconds", "2"]);
    let banner = relay.banner();
    for needle in [
        "config ",
        "database ",
        "signing secret  generated, stored in",
        "jq -r '.secrets[0]'",
        "read token      generated, stored in",
        "mode 0600",
        "/sim/records/",
    ] {
        assert!(banner.contains(needle), "banner lacks {needle:?}:\n{banner}");
    }
    let sim = relay.sim_url.clone().expect("built-in simulator URL in the banner");
    let keys = secrets(dir.path());
    for (file, id) in [
        ("seed-usb-copy-847-files.json", "usb"),
        ("seed-after-hours-prod-db-admin.json", "db"),
        ("seed-productivity-non-work-browsing.json", "hr"),
    ] {
        let (status, body) = post(&relay.url, &keys, &sample(file), &format!("msg_{id}")).await;
        assert_eq!(status, 202, "{file}: {body}");
        assert_eq!(body["duplicate"], false);
    }
    eventually(20, "the three records", || async {
        sim_records(&sim, "sn_si_incident").await.len() == 1
            && sim_records(&sim, "sn_si_task").await.len() == 1
            && sim_records(&sim, "sn_hr_core_case").await.len() == 1
    })
    .await;
    let sir = &sim_records(&sim, "sn_si_incident").await[0];
    assert_eq!(
        (
            sir["impact"].as_str(),
            sir["urgency"].as_str(),
            sir["priority"].as_str()
        ),
        (Some("1"), Some("1"), Some("1"))
    );
    assert_eq!(sir["assignment_group.display_value"], "Security Operations");
    // the security review is a Security Incident Response task at priority 2, never a bare task
    assert!(sim_records(&sim, "task").await.is_empty());
    let task = &sim_records(&sim, "sn_si_task").await[0];
    assert_eq!(task["assignment_group.display_value"], "IT Security");
    assert_eq!(task["priority"], "2");
    assert!(
        task["description"]
            .as_str()
            .unwrap()
            .contains("Systems accessed: prod-db-01")
    );
    let hr = &sim_records(&sim, "sn_hr_core_case").await[0];
    assert_eq!(hr["assignment_group.display_value"], "HR Partners - Engineering");

    // the status API carries the ServiceNow number
    let status = state_of(&relay.url, "emon-20261120-7f3a9c").await;
    assert_eq!(status["state"], "COMPLETED");
    assert_eq!(status["servicenow"]["number"], sir["number"]);
    // a re-sent webhook is a duplicate and creates nothing
    let (s, body) = post(&relay.url, &keys, &sample("seed-usb-copy-847-files.json"), "msg_usb").await;
    assert_eq!((s, body["duplicate"].as_bool()), (202, Some(true)));
    assert!(
        !banner.contains("whsec_"),
        "the banner never shows the secret:\n{banner}"
    );
    let (s, health) = get_json(&format!("{}/healthz", relay.url)).await;
    assert_eq!((s, health), (200, json!({"status": "ok"})), "liveness only");
    let (s, summary) = get_json(&format!("{}/v1/ops/summary", relay.url)).await;
    assert_eq!(
        (s, &summary["servicenow"]["simulator"]),
        (200, &json!(true)),
        "{summary}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sim_records(&sim, "sn_si_incident").await.len(), 1);

    let (exit, out) = relay.stop();
    assert!(exit.success(), "graceful stop on SIGTERM: {exit:?}");
    assert!(out.contains("stopped"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn batched_alerts_are_aggregated_on_the_compressed_window() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(dir.path(), &["--batch-window-seconds", "4"]);
    let sim = relay.sim_url.clone().unwrap();
    let keys = secrets(dir.path());
    let ids: Vec<String> = (0..4).map(|i| format!("batch-agg-{i}")).collect();
    // sent together (the flush timer runs on its own schedule: a tick between sequential sends would split them)
    let bodies: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| sample_with_id("productivity-low.json", id))
        .collect();
    let sends = ids.iter().zip(&bodies).map(|(id, body)| {
        let (url, keys) = (relay.url.clone(), &keys);
        async move { post(&url, keys, body, &format!("m-{id}")).await }
    });
    for (s, body) in futures::future::join_all(sends).await {
        assert_eq!((s, body["delivery"].as_str()), (202, Some("batch")), "{body}");
    }
    eventually(20, "all four alerts completed", || all_completed(&relay.url, &ids)).await;
    let first = state_of(&relay.url, &ids[0]).await;
    let table = first["servicenow"]["table"].as_str().unwrap().to_string();
    let records = sim_records(&sim, &table).await;
    assert_eq!(records.len(), 1, "four alerts, one aggregated record: {records:?}");
    let description = records[0]["description"].as_str().unwrap();
    for id in &ids {
        assert!(description.contains(id.as_str()), "the record lists {id}");
        assert_eq!(
            state_of(&relay.url, id).await["servicenow"]["sys_id"],
            records[0]["sys_id"]
        );
    }
    let (exit, _) = relay.stop();
    assert!(exit.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_delivery_then_restart_delivers_every_alert_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // the simulator outlives the relay processes, so records created before the kill are still there
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    sim.inject(Fault {
        kind: FaultKind::Latency { ms: 400 },
        count: 10_000,
        table: None,
        method: Some("POST".into()),
    });
    let sn = servicenow_file(dir.path(), &sim.base_url(), "relay", "relay-password");
    let sn = sn.to_str().unwrap();
    let args = [
        "--servicenow-file",
        sn,
        "--servicenow-timeout-seconds",
        "1",
        "--workers",
        "1",
    ];
    let relay = start_relay(dir.path(), &args);
    assert!(relay.banner().contains(&format!("ServiceNow      {}", sim.base_url())));
    let keys = secrets(dir.path());
    let ids: Vec<String> = (0..25).map(|i| format!("kill-{i}")).collect();
    for (n, id) in ids.iter().enumerate() {
        // one employee each: every alert is a record of its own (the threads of one employee's alerts go
        // through the same kills in the fault campaign)
        let mut v: Value = serde_json::from_slice(&sample_with_id("dlp-critical.json", id)).unwrap();
        v["employee"]["id"] = json!(format!("E9{n:03}"));
        let (s, _) = post(&relay.url, &keys, &serde_json::to_vec(&v).unwrap(), &format!("m-{id}")).await;
        assert_eq!(s, 202);
    }
    // kill while deliveries are in flight: some records exist, others are mid-call or still queued
    eventually(20, "the first records", || async {
        !sim.records("sn_si_incident").is_empty()
    })
    .await;
    relay.kill9();
    let before = sim.records("sn_si_incident").len();
    assert!(
        before < ids.len(),
        "killed mid-delivery ({before} of {} records existed)",
        ids.len()
    );

    let relay = start_relay(dir.path(), &args);
    eventually(60, "every alert delivered after the restart", || {
        all_completed(&relay.url, &ids)
    })
    .await;
    let records = sim.records("sn_si_incident");
    let mut correlation: Vec<&str> = records.iter().map(|r| r["correlation_id"].as_str().unwrap()).collect();
    correlation.sort_unstable();
    correlation.dedup();
    assert_eq!(records.len(), ids.len(), "exactly one record per alert");
    assert_eq!(correlation.len(), ids.len());
    for id in &ids {
        let s = state_of(&relay.url, id).await;
        let sys_id = s["servicenow"]["sys_id"].as_str().unwrap();
        assert!(
            records.iter().any(|r| r["sys_id"] == sys_id),
            "{id}: the ledger points at an existing record"
        );
    }
    let (exit, _) = relay.stop();
    assert!(exit.success());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn send_and_status_commands() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(dir.path(), &["--batch-window-seconds", "2"]);
    let db = dir.path().join("relay.db");
    let url_owned = relay.url.clone();
    let (db_s, url) = (db.to_str().unwrap(), url_owned.as_str());
    let seed = repo().join("events/alerts/seed-usb-copy-847-files.json");

    let o = run_relay(
        dir.path(),
        &[
            "send",
            seed.to_str().unwrap(),
            "--url",
            url,
            "--db",
            db_s,
            "--wait",
            "20",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("HTTP 202"), "{}", text(&o));
    assert!(text(&o).contains("delivered: sn_si_incident SIR"), "{}", text(&o));

    let token_file = dir.path().join("read-token");
    let token_s = token_file.to_str().unwrap();
    // without the read token the status route answers 401 and says how to get it
    let o = run_relay(dir.path(), &["status", "emon-20261120-7f3a9c", "--url", url]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("needs the read token"), "{}", text(&o));
    let o = run_relay(
        dir.path(),
        &[
            "status",
            "emon-20261120-7f3a9c",
            "--url",
            url,
            "--read-token-file",
            token_s,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "COMPLETED");
    let o = run_relay(dir.path(), &["status", "emon-20261120-7f3a9c", "--db", db_s]);
    let local: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(local["servicenow"]["number"], v["servicenow"]["number"]);
    // unknown id: exit 3, over HTTP and locally
    assert_eq!(
        run_relay(
            dir.path(),
            &["status", "nope", "--url", url, "--read-token-file", token_s]
        )
        .status
        .code(),
        Some(3)
    );
    assert_eq!(
        run_relay(dir.path(), &["status", "nope", "--db", db_s]).status.code(),
        Some(3)
    );
    // send --json: one document per file, with the delivery after --wait
    let o = run_relay(
        dir.path(),
        &[
            "send",
            seed.to_str().unwrap(),
            "--url",
            url,
            "--db",
            db_s,
            "--wait",
            "20",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let sent: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sent["http_status"], 202, "{sent}");
    assert_eq!(sent["answer"]["duplicate"], true, "{sent}");
    assert_eq!(sent["delivery"]["state"], "COMPLETED", "{sent}");

    // list: filters and both output forms
    let list = |extra: &[&str]| {
        let o = run_relay(dir.path(), &[&["list", "--db", db_s, "--json"][..], extra].concat());
        assert!(o.status.success(), "{extra:?}: {}", text(&o));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    let all = list(&[]);
    assert_eq!(all[0]["alert_id"], "emon-20261120-7f3a9c", "{all}");
    assert_eq!(all[0]["servicenow"]["number"], v["servicenow"]["number"]);
    assert_eq!(
        list(&["--state", "COMPLETED", "--since", "1h", "--type", "security_incident"]),
        all
    );
    assert_eq!(list(&["--state", "FAILED"]), json!([]));
    assert_eq!(list(&["--type", "hr_case"]), json!([]));
    let o = run_relay(dir.path(), &["list", "--db", db_s]);
    assert!(
        text(&o).contains("COMPLETED") && text(&o).contains("1 alerts"),
        "{}",
        text(&o)
    );
    for (bad, needle) in [(["--state", "DONE"], "--state \"DONE\""), (["--since", "3w"], "unit")] {
        let o = run_relay(dir.path(), &[&["list", "--db", db_s][..], &bad].concat());
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(needle), "{}", text(&o));
    }

    // RELAY_LOG_FORMAT=json: every log line on stderr is one JSON object
    let o = relay_cmd(dir.path())
        .env("RELAY_LOG", "debug")
        .env("RELAY_LOG_FORMAT", "json")
        .args([
            "status",
            "emon-20261120-7f3a9c",
            "--url",
            url,
            "--read-token-file",
            token_s,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.lines().count() > 0, "debug logging says something");
    for line in stderr.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }

    // no database: exit 2
    let o = run_relay(dir.path(), &["status", "x", "--db", "/nonexistent/relay.db"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("no database at /nonexistent/relay.db"));

    // an invalid alert: the 400 body is printed, exit 1
    let bad = repo().join("events/invalid/bad-values.json");
    let o = run_relay(dir.path(), &["send", bad.to_str().unwrap(), "--url", url, "--db", db_s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("HTTP 400") && text(&o).contains("problems"),
        "{}",
        text(&o)
    );
    let send_signed_with = |secret_file: &Path| {
        run_relay(
            dir.path(),
            &[
                "send",
                seed.to_str().unwrap(),
                "--url",
                url,
                "--secret-file",
                secret_file.to_str().unwrap(),
            ],
        )
    };
    // the wrong secret: 401
    let wrong = dir.path().join("wrong.txt");
    std::fs::write(&wrong, relay_pipeline::signature::generate_secret()).unwrap();
    let o = send_signed_with(&wrong);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("HTTP 401") && text(&o).contains("signature rejected"),
        "{}",
        text(&o)
    );
    // an unreadable secret file / alert file: exit 2 naming it
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{\"secrets\": 5}").unwrap();
    let o = send_signed_with(&garbage);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("garbage.json"), "{}", text(&o));
    let o = run_relay(dir.path(), &["send", "/nonexistent.json", "--url", url, "--db", db_s]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("/nonexistent.json"));
    let (exit, _) = relay.stop();
    assert!(exit.success());
    // nobody listening: exit 1
    let o = run_relay(
        dir.path(),
        &["send", seed.to_str().unwrap(), "--url", url, "--db", db_s],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("cannot reach"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_and_bad_settings_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(dir.path(), &[]);
    let http = reqwest::Client::new();
    let body = sample("dlp-critical.json");
    let r = http
        .post(format!("{}/v1/alerts", relay.url))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await.unwrap().contains("missing header"));
    let keys = secrets(dir.path());
    let r = http
        .post(format!("{}/v1/alerts", relay.url))
        .header("content-type", "text/plain")
        .header("webhook-id", "m")
        .header("webhook-timestamp", "1")
        .header("webhook-signature", keys.sign("m", 1, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let (s, big) = post(&relay.url, &keys, &vec![b' '; 300 * 1024], "m-big").await;
    assert_eq!(s, 413, "{big}");
    let (s, v) = get_json(&format!("{}/v1/alerts/unknown", relay.url)).await;
    assert_eq!(s, 404);
    assert!(v["error"].as_str().unwrap().contains("unknown"));
    assert_eq!(get_json(&format!("{}/nothing-here", relay.url)).await.0, 404);
    drop(relay);

    // settings that cannot work stop the server before it listens, naming the problem
    let bad_config = dir.path().join("bad.yaml");
    std::fs::write(&bad_config, "version: 7\n").unwrap();
    let http_url = servicenow_file(dir.path(), "http://instance.example.com", "relay", "x");
    let secret_path = dir.path().join("webhook-secret.json");
    let empty_secret = dir.path().join("empty-secret.json");
    std::fs::write(&empty_secret, r#"{"secrets": []}"#).unwrap();
    let cases: [(Vec<&str>, &str); 9] = [
        (
            vec!["--config", bad_config.to_str().unwrap()],
            "bad.yaml: invalid config",
        ),
        (vec!["--servicenow-file", http_url.to_str().unwrap()], "https"),
        (
            vec!["--servicenow-file", "/nonexistent-sn.json"],
            "/nonexistent-sn.json",
        ),
        (
            vec!["--secret-file", "/nonexistent-secret.json"],
            "/nonexistent-secret.json",
        ),
        (
            vec!["--callback-url", "http://127.0.0.1:9/cb"],
            "--callback-url needs --callback-secret-file",
        ),
        (
            vec![
                "--callback-url",
                "http://monitor.example.com/cb?token=s3cret",
                "--callback-secret-file",
                empty_secret.to_str().unwrap(),
            ],
            "holds no secret",
        ),
        (
            vec![
                "--callback-url",
                "http://monitor.example.com/cb?token=s3cret",
                "--callback-secret-file",
                secret_path.to_str().unwrap(),
            ],
            "must use https",
        ),
        (
            vec![
                "--callback-url",
                "https://monitor.example.com/cb",
                "--callback-secret-file",
                "/nonexistent-cb.json",
            ],
            "/nonexistent-cb.json",
        ),
        (
            vec!["--push-secret-file", "/nonexistent-push.json"],
            "/nonexistent-push.json",
        ),
    ];
    for (args, needle) in cases {
        let o = run_relay(
            dir.path(),
            &[&["serve", "--port", "0", "--db", "x.db"][..], &args].concat(),
        );
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
        assert!(
            !text(&o).contains("s3cret"),
            "a receiver's token is never shown: {}",
            text(&o)
        );
    }
}

fn sim_config_requiring(table: &str, field: &str) -> SimConfig {
    let mut c = SimConfig::default();
    let t = c.tables.iter_mut().find(|t| t.name == table).unwrap();
    t.mandatory.push(field.into());
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn test_connection_reports_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tc = |file: &Path| {
        run_relay(
            d,
            &[
                "test-connection",
                "--servicenow-file",
                file.to_str().unwrap(),
                "--timeout",
                "3",
            ],
        )
    };

    // all good: every routed table takes its profile's test record and finds it again by its key; the
    // integration user may not delete (as on a real instance), so each record is named for deletion by hand
    let routed = [
        "sn_si_incident",
        "sn_si_task",
        "sn_hr_core_case",
        "incident",
        "sn_compliance_policy_exception",
        "sn_risk_risk",
    ];
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let o = tc(&servicenow_file(d, &sim.base_url(), "relay", "relay-password"));
    assert!(o.status.success(), "{}", text(&o));
    let line_of = |o: &Output, table: &str| {
        text(o)
            .lines()
            .find(|l| l.starts_with(&format!("{table} ")))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    for table in routed {
        let line = line_of(&o, table);
        let records = sim.records(table);
        assert_eq!(records.len(), 1, "{table}: one test record, left for a human");
        let number = records[0]["number"].as_str().unwrap();
        assert!(
            line.contains("OK (created")
                && line.contains("found again by")
                && line.contains(&format!("delete {number} by hand")),
            "{table}: {}",
            text(&o)
        );
        // task tables have a journal: the note goes to sys_journal_field and is read back (audit_viewer)
        let journaled = table != "sn_risk_risk";
        assert_eq!(line.contains("note read back"), journaled, "{table}: {line}");
    }
    // where the profile resolves records: the state is read and moved one step of the resolution
    for (table, step) in [
        ("incident", "1 → 6"),
        ("sn_si_incident", "10 → 16"),
        ("sn_hr_core_case", ""),
    ] {
        let line = line_of(&o, table);
        assert!(
            line.contains("state change") && line.contains("allowed"),
            "{table}: {line}"
        );
        assert!(line.contains(step), "{table}: {line}");
    }
    // only routed tables are probed: no bare task, no unrouted table
    for table in ["task", "sn_ti_observable", "sn_hr_ef_employee_document", "problem"] {
        assert_eq!(line_of(&o, table), "", "{table} is not routed: {}", text(&o));
        assert!(sim.records(table).is_empty(), "{table}");
    }
    // a user with the delete role: created, found, and deleted again
    let o = tc(&servicenow_file(d, &sim.base_url(), "admin", "admin-password"));
    assert!(o.status.success(), "{}", text(&o));
    for table in routed {
        assert!(line_of(&o, table).ends_with("deleted)"), "{table}: {}", text(&o));
        assert_eq!(
            sim.records(table).len(),
            1,
            "{table}: the admin's test record is gone again"
        );
    }
    // an integration user without audit_viewer: notes are written but cannot be read back; reported, not failed
    let mut cfg = SimConfig::default();
    for u in cfg.users.iter_mut().filter(|u| u.name == "relay") {
        u.roles.retain(|r| r != "audit_viewer");
    }
    let blind = Simulator::start(cfg).await.unwrap();
    let o = tc(&servicenow_file(d, &blind.base_url(), "relay", "relay-password"));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        line_of(&o, "incident").contains("note written but NOT read back from sys_journal_field (grant audit_viewer"),
        "{}",
        text(&o)
    );
    blind.shutdown().await;
    // a user who may create incidents but not change them: the resolution would be refused, the table fails
    let mut cfg = SimConfig::default();
    for t in cfg.tables.iter_mut().filter(|t| t.name == "incident") {
        t.write_roles.retain(|r| r == "admin");
        t.write_own_roles.clear();
    }
    let frozen = Simulator::start(cfg).await.unwrap();
    let o = tc(&servicenow_file(d, &frozen.base_url(), "relay", "relay-password"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let line = line_of(&o, "incident");
    assert!(
        line.contains("REFUSED") && line.contains("lifecycle events cannot resolve"),
        "{line}"
    );
    assert!(line_of(&o, "sn_si_incident").contains("allowed"), "{}", text(&o));
    frozen.shutdown().await;
    // hibernating
    sim.set_hibernating(true);
    let o = tc(&servicenow_file(d, &sim.base_url(), "relay", "relay-password"));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("hibernating"), "{}", text(&o));
    sim.set_hibernating(false);
    // wrong password
    let o = tc(&servicenow_file(d, &sim.base_url(), "relay", "wrong"));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("auth failed"), "{}", text(&o));
    // a user without the roles
    let o = tc(&servicenow_file(d, &sim.base_url(), "readonly", "readonly-password"));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("missing role"), "{}", text(&o));
    // --json: one document, one entry per table, the same exit code
    let sn = servicenow_file(d, &sim.base_url(), "readonly", "readonly-password");
    let o = run_relay(
        d,
        &["test-connection", "--servicenow-file", sn.to_str().unwrap(), "--json"],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let tables = v["tables"].as_array().unwrap();
    assert!(
        tables.len() >= 4 && v["failed"].as_u64() == Some(tables.len() as u64),
        "{v}"
    );
    assert!(
        tables
            .iter()
            .all(|t| t["ok"] == false && t["detail"].as_str().unwrap().contains("missing role")),
        "{v}"
    );
    let url = sim.base_url();
    sim.shutdown().await;
    // nobody listening
    let o = tc(&servicenow_file(d, &url, "relay", "relay-password"));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("unreachable"), "{}", text(&o));

    // a data policy on one table: only that table fails
    let sim = Simulator::start(sim_config_requiring("sn_hr_core_case", "u_hr_service"))
        .await
        .unwrap();
    let o = tc(&servicenow_file(d, &sim.base_url(), "relay", "relay-password"));
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o);
    let hr = out.lines().find(|l| l.starts_with("sn_hr_core_case")).unwrap();
    assert!(
        hr.contains("data-policy fields required") && hr.contains("u_hr_service"),
        "{out}"
    );
    assert!(
        out.lines()
            .find(|l| l.starts_with("sn_si_incident"))
            .unwrap()
            .contains("OK"),
        "{out}"
    );
    assert!(out.contains("1 of"), "{out}");
    sim.shutdown().await;

    // no instance configured
    let o = run_relay(d, &["test-connection"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("no ServiceNow instance configured"));
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_dlq_redelivers_after_the_cause_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("relay.db");
    let db_s = db.to_str().unwrap();
    // an instance whose data policy the mapping does not satisfy: permanent error → dead-lettered
    let broken: RunningSim = Simulator::start(sim_config_requiring("sn_si_incident", "u_case_owner"))
        .await
        .unwrap();
    let sn = servicenow_file(d, &broken.base_url(), "relay", "relay-password");
    let relay = start_relay(d, &["--servicenow-file", sn.to_str().unwrap()]);
    let keys = secrets(d);
    assert_eq!(
        post(&relay.url, &keys, &sample("seed-usb-copy-847-files.json"), "m1")
            .await
            .0,
        202
    );
    eventually(20, "the alert to fail", || async {
        state_of(&relay.url, "emon-20261120-7f3a9c").await["state"] == "FAILED"
    })
    .await;
    let (_, summary) = get_json(&format!("{}/v1/ops/summary", relay.url)).await;
    assert_eq!(summary["queues"]["dlq"], 1, "{summary}");
    let (exit, _) = relay.stop();
    assert!(exit.success());
    broken.shutdown().await;

    // the DLQ listed, with the error that put the alert there (and none of its content)
    let o = run_relay(d, &["dlq", "list", "--db", db_s, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let dlq: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(dlq.as_array().map(Vec::len), Some(1), "{dlq}");
    assert_eq!(dlq[0]["alert_id"], "emon-20261120-7f3a9c");
    assert_eq!(dlq[0]["table"], "sn_si_incident");
    assert!(dlq[0]["error"].as_str().unwrap().contains("u_case_owner"), "{dlq}");
    for payload in ["847 files", "2.3 GB", "USB mass-storage"] {
        assert!(
            !text(&o).contains(payload),
            "no alert content in the listing: {}",
            text(&o)
        );
    }
    let o = run_relay(d, &["dlq", "list", "--db", db_s]);
    assert!(
        text(&o).contains("emon-20261120-7f3a9c") && text(&o).contains("1 dead-lettered"),
        "{}",
        text(&o)
    );
    let o = run_relay(d, &["list", "--db", db_s, "--state", "failed", "--json"]);
    let failed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(failed[0]["state"], "FAILED", "{failed}");

    // dry run as JSON: the counts and one entry per message
    let o = run_relay(d, &["replay-dlq", "--db", db_s, "--dry-run", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (report["dry_run"].as_bool(), report["seen"].as_u64()),
        (Some(true), Some(1)),
        "{report}"
    );
    assert_eq!(report["messages"][0]["key"], "emon-20261120-7f3a9c");
    assert_eq!(report["messages"][0]["outcome"], "would_replay");

    // dry run: lists, changes nothing
    let o = run_relay(d, &["replay-dlq", "--local", "--db", db_s, "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("would replay emon-20261120-7f3a9c") && text(&o).contains("u_case_owner"),
        "{}",
        text(&o)
    );
    let o = run_relay(d, &["status", "emon-20261120-7f3a9c", "--db", db_s]);
    assert_eq!(serde_json::from_slice::<Value>(&o.stdout).unwrap()["state"], "FAILED");

    // replay: the ledger entry reopens, the message goes back to the realtime queue
    let o = run_relay(d, &["replay-dlq", "--db", db_s]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("replayed 1 of 1 messages (1 ledger entries reopened)"),
        "{}",
        text(&o)
    );
    let o = run_relay(d, &["status", "emon-20261120-7f3a9c", "--db", db_s]);
    assert_eq!(serde_json::from_slice::<Value>(&o.stdout).unwrap()["state"], "QUEUED");
    let o = run_relay(d, &["replay-dlq", "--db", db_s]);
    assert!(text(&o).contains("empty"), "{}", text(&o));

    // the fixed instance: the alert is delivered
    let fixed = Simulator::start(SimConfig::default()).await.unwrap();
    let sn = servicenow_file(d, &fixed.base_url(), "relay", "relay-password");
    let relay = start_relay(d, &["--servicenow-file", sn.to_str().unwrap()]);
    eventually(30, "the replayed alert delivered", || async {
        state_of(&relay.url, "emon-20261120-7f3a9c").await["state"] == "COMPLETED"
    })
    .await;
    assert_eq!(fixed.records("sn_si_incident").len(), 1);
    let (exit, _) = relay.stop();
    assert!(exit.success());
    fixed.shutdown().await;

    // --aws without its settings: a clear error naming them, exit 2; a missing database: exit 2
    let o = run_relay(d, &["replay-dlq", "--aws"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--dlq-url"));
    let o = run_relay(d, &["replay-dlq", "--db", "/nonexistent/x.db"]);
    assert_eq!(o.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_endpoint_shows_every_series_after_the_samples() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(dir.path(), &["--batch-window-seconds", "2"]);
    let sim = relay.sim_url.clone().expect("built-in simulator");
    let keys = secrets(dir.path());
    let http = reqwest::Client::new();
    // one 503 on the security incident (retried), a permanent refusal on the incident table (failed)
    for fault in [
        json!({"kind": {"type": "server_error", "status": 503}, "count": 1, "table": "sn_si_incident", "method": "POST"}),
        json!({"kind": {"type": "server_error", "status": 400}, "count": 50, "table": "incident", "method": "POST"}),
    ] {
        let r = http
            .post(format!("{sim}/sim/faults"))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    for (file, id) in [
        ("seed-usb-copy-847-files.json", "usb"),
        ("custom-critical.json", "custom"),
        ("dlp-low.json", "low"),
    ] {
        let (status, body) = post(&relay.url, &keys, &sample(file), &format!("msg_{id}")).await;
        assert_eq!(status, 202, "{file}: {body}");
    }
    let wrong = WebhookSecrets::parse(&["not-the-relay-secret-0123456789"]).unwrap();
    assert_eq!(
        post(&relay.url, &wrong, &sample("dlp-high.json"), "msg_bad").await.0,
        401
    );

    let series = |text: &str, name: &str, labels: &[&str]| {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(name))
            .any(|l| labels.iter().all(|label| l.contains(label)))
    };
    let metrics = |url: String| async move {
        let r = reqwest::get(url).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        r.text().await.unwrap()
    };
    let url = format!("{}/metrics", relay.url);
    eventually(30, "every series on /metrics", || {
        let m = metrics(url.clone());
        async move {
            let text = m.await;
            ["RecordsCreated", "DeliveryFailed", "DeliveryRetries"]
                .iter()
                .all(|n| text.contains(n))
                && text.contains("Severity=\"low\"")
        }
    })
    .await;
    let text = metrics(url).await;
    assert!(
        series(&text, "AlertsAccepted", &["AlertType=\"dlp\"", "Severity=\"critical\""]),
        "{text}"
    );
    assert!(series(&text, "AlertsRejected", &["Reason=\"signature\""]), "{text}");
    assert!(
        series(&text, "RecordsCreated", &["RecordType=\"security_incident\""]),
        "{text}"
    );
    assert!(
        series(&text, "DeliveryRetries", &["ErrorClass=\"retryable\""]),
        "{text}"
    );
    assert!(series(&text, "DeliveryFailed", &["ErrorClass=\"permanent\""]), "{text}");
    assert!(
        series(&text, "DeliveryLatencyMs_bucket", &["Severity=\"critical\"", "le=\""]),
        "{text}"
    );
    assert!(series(&text, "ServiceNowCallMs", &["Outcome=\"created\""]), "{text}");
    assert!(
        text.contains("# HELP AlertsAccepted"),
        "descriptions are exported: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_critical_alert_is_delivered_while_every_worker_is_busy_with_a_backlog_of_high_ones() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    // the first round of high alerts (incident table) hangs in ServiceNow for 6 s
    sim.inject(Fault {
        kind: FaultKind::Latency { ms: 6000 },
        count: 10,
        table: Some("incident".into()),
        method: Some("POST".into()),
    });
    let sn = servicenow_file(dir.path(), &sim.base_url(), "relay", "relay-password");
    let args = [
        "--servicenow-file",
        sn.to_str().unwrap(),
        "--servicenow-timeout-seconds",
        "10",
        "--workers",
        "1",
    ];
    let relay = start_relay(dir.path(), &args);
    let keys = secrets(dir.path());
    let highs: Vec<String> = (0..30).map(|i| format!("high-{i}")).collect();
    for id in &highs {
        let (s, _) = post(
            &relay.url,
            &keys,
            &sample_with_id("custom-high.json", id),
            &format!("m-{id}"),
        )
        .await;
        assert_eq!(s, 202);
    }
    eventually(10, "the only worker busy with the backlog", || async {
        state_of(&relay.url, "high-0").await["state"] == "IN_PROGRESS"
    })
    .await;
    let (s, _) = post(
        &relay.url,
        &keys,
        &sample_with_id("dlp-critical.json", "crit-1"),
        "m-crit",
    )
    .await;
    assert_eq!(s, 202);
    eventually(5, "the critical alert delivered by the reserved worker", || async {
        state_of(&relay.url, "crit-1").await["state"] == "COMPLETED"
    })
    .await;
    assert!(
        sim.records("incident").is_empty(),
        "the critical record exists while the first round of high alerts is still in ServiceNow"
    );
    eventually(60, "the backlog delivered", || all_completed(&relay.url, &highs)).await;
    let (exit, _) = relay.stop();
    assert!(exit.success());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_threads_on_repeat_usb_copies_become_notes_resolutions_close_the_incident_and_the_next_alert_links_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = relay_e2e::campaign::threaded_config();
    let config_path = dir.path().join("relay.yaml");
    std::fs::write(&config_path, config).unwrap();
    // the monitoring product's callback receiver, and the sync every second
    let receiver = relay_pipeline::callback::receiver::Receiver::start(&[]).await;
    let callback_secret = dir.path().join("callback-secret");
    std::fs::write(&callback_secret, relay_pipeline::callback::receiver::CALLBACK_SECRET).unwrap();
    let relay = start_relay(
        dir.path(),
        &[
            "--config",
            config_path.to_str().unwrap(),
            "--callback-url",
            &receiver.url,
            "--callback-secret-file",
            callback_secret.to_str().unwrap(),
            "--sync-interval-seconds",
            "1",
        ],
    );
    let sim = relay.sim_url.clone().expect("built-in simulator");
    let keys = secrets(dir.path());
    let mut ids = Vec::new();
    for n in 1..=3 {
        let id = format!("emon-thread-{n}");
        let (status, _) = post(
            &relay.url,
            &keys,
            &sample_with_id("seed-usb-copy-847-files.json", &id),
            &format!("wh-{id}"),
        )
        .await;
        assert_eq!(status, 202);
        ids.push(id);
        eventually(30, "the alert delivered", || all_completed(&relay.url, &ids)).await;
    }
    let sirs = sim_records(&sim, "sn_si_incident").await;
    assert_eq!(sirs.len(), 1, "three USB copies of one employee: one security incident");
    let first = sirs[0]["sys_id"].as_str().unwrap().to_string();
    let notes: Vec<Value> = sim_records(&sim, "sys_journal_field")
        .await
        .into_iter()
        .filter(|n| n["element_id"] == first.as_str() && n["element"] == "work_notes")
        .collect();
    assert_eq!(notes.len(), 2, "{notes:#?}");
    for id in &ids[1..] {
        let s = state_of(&relay.url, id).await;
        assert_eq!(s["servicenow"]["sys_id"], first.as_str(), "{s}");
        assert_eq!(s["servicenow"]["note"], true, "the status says it is a note: {s}");
    }

    // the monitoring product resolves each alert: the incident closes with the last one
    let sir_state = || async {
        sim_records(&sim, "sn_si_incident").await[0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    for (n, id) in ids.clone().iter().enumerate() {
        let body = serde_json::to_vec(&json!({"schema_version": "2", "event": "resolved", "alert_id": id,
            "resolution": {"reason": "remediated", "note": "device recovered"}}))
        .unwrap();
        let (status, reply) = post(&relay.url, &keys, &body, &format!("wh-{id}-resolved")).await;
        assert_eq!(status, 202, "{reply}");
        let event_notes = n + 1;
        eventually(30, "the resolution noted", || async {
            sim_records(&sim, "sys_journal_field")
                .await
                .iter()
                .filter(|j| j["value"].as_str().unwrap_or_default().contains("[relay-resolved "))
                .count()
                == event_notes
        })
        .await;
        if n < 2 {
            assert_eq!(sir_state().await, "10", "alerts of the incident are still open");
        }
    }
    eventually(30, "the incident closed", || async { sir_state().await == "3" }).await;
    assert_eq!(
        sim_records(&sim, "sn_si_incident").await[0]["close_code"],
        "Investigation completed"
    );
    // an unknown alert's resolution is refused by name
    let body = br#"{"event": "resolved", "alert_id": "emon-never-sent"}"#;
    let (status, reply) = post(&relay.url, &keys, body, "wh-unknown").await;
    assert_eq!(status, 404, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("emon-never-sent"), "{reply}");

    // the next alert opens a new incident that references the closed one
    let id = "emon-thread-4".to_string();
    let (status, _) = post(
        &relay.url,
        &keys,
        &sample_with_id("seed-usb-copy-847-files.json", &id),
        "wh-emon-thread-4",
    )
    .await;
    assert_eq!(status, 202);
    ids.push(id);
    eventually(30, "the fourth alert delivered", || all_completed(&relay.url, &ids)).await;
    let sirs = sim_records(&sim, "sn_si_incident").await;
    assert_eq!(sirs.len(), 2);
    let second = sirs.iter().find(|r| r["sys_id"] != first.as_str()).unwrap();
    assert_eq!(second["parent_security_incident"], first.as_str(), "{second:#}");
    assert_eq!(state_of(&relay.url, "emon-thread-1").await["servicenow"]["note"], false);

    // the monitoring product heard of each, signed, once each: two SIRs, two thread notes and three
    // resolution notes, and (from the sync) the first SIR closed
    let kinds = |k: &str| receiver.received().iter().filter(|c| c.kind() == k).count();
    eventually(30, "the callbacks", || async {
        kinds("record.created") == 2 && kinds("record.updated") == 5 && kinds("record.state_changed") >= 1
    })
    .await;
    receiver.verify_all();
    let got = receiver.received();
    let unique: std::collections::BTreeSet<&str> = got.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(unique.len(), got.len(), "each callback once: {got:#?}");
    let created = got.iter().find(|c| c.kind() == "record.created").unwrap().json();
    assert_eq!(
        created["data"]["record"]["number"],
        sirs.iter().find(|r| r["sys_id"] == first.as_str()).unwrap()["number"]
    );
    let closed: Vec<Value> = got
        .iter()
        .filter(|c| c.kind() == "record.state_changed")
        .map(|c| c.json())
        .filter(|c| c["data"]["record"]["sys_id"] == first.as_str())
        .collect();
    assert_eq!(closed.len(), 1, "{closed:#?}");
    assert_eq!(closed[0]["data"]["state"], "3");
    assert_eq!(closed[0]["data"]["close_code"], "Investigation completed");
    assert_eq!(state_of(&relay.url, "emon-thread-2").await["servicenow"]["state"], "3");

    // rule quality from the same database, while the server runs
    let db = dir.path().join("relay.db");
    let out = run_relay(dir.path(), &["report", "rules", "--db", db.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let usb = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "dlp-usb-mass-copy")
        .unwrap_or_else(|| panic!("{rows:#}"));
    assert_eq!(
        (
            &usb["alerts"],
            &usb["records"],
            &usb["notes"],
            &usb["resolved"],
            &usb["dismissed"]
        ),
        (&json!(4), &json!(2), &json!(2), &json!(3), &json!(0)),
        "{usb:#}"
    );
    assert_eq!(usb["false_positive_rate"], 0.0);
    let human = run_relay(dir.path(), &["report", "rules", "--db", db.to_str().unwrap()]);
    assert!(text(&human).contains("dlp-usb-mass-copy"), "{}", text(&human));
    relay.stop();
}
