//! `relay route` and `relay config check` as a user runs them: the real binary on the shipped events/.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn relay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(args)
        .current_dir(repo())
        .env_remove("RELAY_CONFIG_PATH")
        .env_remove("RELAY_PSEUDONYM_KEY")
        .output()
        .expect("run relay")
}

fn route(file: &str) -> Value {
    let out = relay(&["route", file]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("route prints JSON")
}

#[allow(clippy::too_many_arguments)] // one argument per decision field a scenario pins down
fn expect(
    d: &Value,
    rule: &str,
    record_type: &str,
    table: &str,
    priority: &str,
    iu: (u64, u64),
    group: &str,
    delivery: &str,
) {
    assert_eq!(d["rule"], rule);
    assert_eq!(d["record_type"], record_type);
    assert_eq!(d["table"], table);
    assert_eq!(d["priority"], priority);
    assert_eq!((d["impact"].as_u64().unwrap(), d["urgency"].as_u64().unwrap()), iu);
    assert_eq!(d["assignment_group"], group);
    assert_eq!(d["delivery"], delivery);
    assert_eq!(d["fields"]["impact"], iu.0.to_string());
    assert_eq!(d["fields"]["urgency"], iu.1.to_string());
    assert_eq!(d["fields"]["assignment_group"], group);
    // priority is written only where the table takes it as written; elsewhere the instance decides
    if d["priority_method"] != "direct" {
        assert!(
            d["fields"].get("priority").is_none(),
            "priority is not written to {table}"
        );
    }
    assert_eq!(d["config_hash"].as_str().unwrap().len(), 16);
}

#[test]
fn seed_usb_copy_of_847_files_is_a_p1_security_incident_for_security_operations() {
    let d = route("events/alerts/seed-usb-copy-847-files.json");
    expect(
        &d,
        "dlp-usb-mass-copy",
        "security_incident",
        "sn_si_incident",
        "P1",
        (1, 1),
        "Security Operations",
        "realtime",
    );
    assert_eq!(d["servicenow_priority"], 1);
    assert_eq!(d["correlation_id"], "emon:emon-20261120-7f3a9c");
    let f = &d["fields"];
    assert!(f["short_description"].as_str().unwrap().contains("847 files"));
    let desc = f["description"].as_str().unwrap();
    for needle in [
        "Copied 847 files",
        "Risk score: 92/100",
        "2026-11-20T14:03:00Z",
        "https://monitor.example.com/alerts/emon-20261120-7f3a9c",
        "Employee: E1042",
    ] {
        assert!(desc.contains(needle), "description lacks {needle:?}: {desc}");
    }
    assert_eq!(d["priority_method"], "direct");
    assert_eq!(f["priority"], "1", "a security incident takes priority as written");
    assert!(
        desc.contains("Files copied: 847") && desc.contains("Channel: usb"),
        "{desc}"
    );
    // no name or e-mail leaves (a security incident carries no department or manager either)
    let all = f.to_string();
    for secret in ["Dana", "dana.reyes@example.com", "M2001", "Engineering"] {
        assert!(!all.contains(secret), "{secret} leaked into fields: {all}");
    }
}

#[test]
fn seed_after_hours_production_database_access_is_a_high_security_review_task_for_it_security() {
    let d = route("events/alerts/seed-after-hours-prod-db-admin.json");
    expect(
        &d,
        "after-hours-privileged-access",
        "task",
        "sn_si_task",
        "P2",
        (1, 2),
        "IT Security",
        "realtime",
    );
    assert_eq!(d["servicenow_priority"], 2);
    assert_eq!(d["fields"]["priority"], "2");
    assert_eq!(d["profile"], "security_task");
    assert!(
        d["fields"]["short_description"]
            .as_str()
            .unwrap()
            .starts_with("Security Review: ")
    );
}

#[test]
fn seed_non_work_browsing_is_a_medium_hr_case_for_the_employees_hr_partner() {
    let d = route("events/alerts/seed-productivity-non-work-browsing.json");
    expect(
        &d,
        "productivity-sustained-non-work",
        "hr_case",
        "sn_hr_core_case",
        "P3",
        (2, 2),
        "HR Partners - Engineering",
        "batch",
    );
    // an HR case's priority comes from its HR service: the relay does not claim one
    assert_eq!(d["servicenow_priority"], serde_json::Value::Null);
    assert_eq!(d["priority_method"], "hr_service");
    assert!(d["priority_note"].as_str().unwrap().contains("HR service"));
    assert_eq!(d["fields"]["hr_service"], "Productivity Review");
    assert_eq!(d["attaches_chart"], true);
}

#[test]
fn every_sample_alert_routes_and_every_invalid_one_exits_2_listing_all_problems() {
    let mut routed = 0;
    for entry in std::fs::read_dir(repo().join("events/alerts")).unwrap() {
        let path = entry.unwrap().path();
        let d = route(path.to_str().unwrap());
        let short = d["fields"]["short_description"].as_str().unwrap();
        assert!(!short.is_empty() && short.chars().count() <= 160);
        routed += 1;
    }
    assert!(
        routed >= 23,
        "one sample per alert type and severity plus the seed's three"
    );

    let cases: [(&str, &[&str]); 4] = [
        (
            "events/invalid/missing-required-fields.json",
            &["$.alert_id", "$.occurred_at", "$.employee", "$.description"],
        ),
        (
            "events/invalid/bad-values.json",
            &[
                "$.alert_type",
                "$.severity",
                "$.occurred_at",
                "$.employee.email",
                "$.description",
                "$.risk_score",
                "$.evidence_url",
            ],
        ),
        (
            "events/invalid/too-long-and-wrong-types.json",
            &[
                "$.alert_id",
                "$.employee",
                "$.description",
                "$.risk_score",
                "$.evidence_url",
                "$.details.file_count",
                "$.test",
            ],
        ),
        ("events/invalid/not-json.json", &["$"]),
    ];
    for (file, paths) in cases {
        let out = relay(&["route", file]);
        assert_eq!(out.status.code(), Some(2), "{file}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["error"], "invalid alert");
        let got: Vec<&str> = v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["path"].as_str().unwrap())
            .collect();
        for p in paths {
            assert!(got.contains(p), "{file}: {p} missing from {got:?}");
        }
    }
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = relay(&["route", "events/alerts/nope.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read events/alerts/nope.json"));
}

#[test]
fn config_check_accepts_the_shipped_config_and_names_every_problem_in_a_bad_one() {
    let ok = relay(&["config", "check", "config/relay.yaml"]);
    assert_eq!(ok.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(repo().join("config/relay.yaml")).unwrap()
        + "  - name: dlp-usb-mass-copy\n    table: u_nowhere\n    when: {field: details.shoe_size, gt: 3}\n";
    std::fs::write(&bad, text).unwrap();
    let out = relay(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rule \"dlp-usb-mass-copy\": duplicate rule name"), "{err}");
    assert!(err.contains("unknown table \"u_nowhere\""), "{err}");
    assert!(err.contains("unknown detail field \"details.shoe_size\""), "{err}");

    // and `route` refuses to run on it
    let out = relay(&["route", "events/alerts/dlp-low.json", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));

    // --json: one document either way, the same exit codes
    let ok = relay(&["config", "check", "config/relay.yaml", "--json"]);
    assert_eq!(ok.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["config"].as_str()),
        (Some(true), Some("config/relay.yaml"))
    );
    assert!(
        v["rules"].as_u64().unwrap() > 0 && v["config_hash"].as_str().unwrap().len() == 16,
        "{v}"
    );
    let out = relay(&["config", "check", bad.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(
        v["error"].as_str().unwrap().contains("unknown table \"u_nowhere\""),
        "{v}"
    );
    assert!(out.stderr.is_empty(), "reported once, as JSON");
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish_know_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = relay(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["serve", "replay-dlq", "test-connection", "read-token-file"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = relay(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("possible values"),
        "{out:?}"
    );
}

#[test]
fn pseudonymised_routes_never_show_the_employee_id() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("private.yaml");
    let text = std::fs::read_to_string(repo().join("config/relay.yaml"))
        .unwrap()
        .replace("pseudonymise_employee: false", "pseudonymise_employee: true");
    std::fs::write(&cfg, text).unwrap();
    let route_seed = |key: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay"));
        cmd.args([
            "route",
            "events/alerts/seed-usb-copy-847-files.json",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .current_dir(repo())
        .env_remove("RELAY_PSEUDONYM_KEY");
        if let Some(key) = key {
            cmd.env("RELAY_PSEUDONYM_KEY", key);
        }
        cmd.output().unwrap()
    };
    let out = route_seed(Some("a-long-enough-test-key"));
    assert_eq!(out.status.code(), Some(0));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!d["fields"].to_string().contains("E1042"));
    assert!(d["fields"]["description"].as_str().unwrap().contains("Employee: emp-"));

    let out = route_seed(None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RELAY_PSEUDONYM_KEY"));
}
