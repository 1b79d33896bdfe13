use super::*;
use serde_json::json;

fn alert(v: Value) -> Alert {
    Alert::from_value(&v).unwrap()
}

fn base(alert_type: &str, severity: &str, details: Value) -> Value {
    json!({
        "alert_id": "a-100", "alert_type": alert_type, "severity": severity,
        "occurred_at": "2026-11-20T14:03:00Z",
        "employee": {"id": "E1", "department": "Engineering"},
        "description": "something happened", "risk_score": 50,
        "evidence_url": "https://monitor.example.com/a/100", "details": details
    })
}

const CONFIG: &str = r#"
version: 1
alert_types:
  dlp: {record_type: security_incident, assignment_group: Security Operations, category: DLP}
  policy_violation:
    record_type: policy_exception
    assignment_group: Compliance
    priorities: {P3: {impact: 3, urgency: 1}}
  behavioral_anomaly: {record_type: security_incident, assignment_group: IT Security, delivery: realtime}
  productivity:
    record_type: hr_case
    assignment_group: {by_department: {Engineering: HR Partners - Engineering}, default: HR Partners}
  custom: {record_type: incident, assignment_group: Service Desk, table: incident}
rules:
  - name: big-usb
    when: {all: [{field: alert_type, eq: dlp}, {field: details.file_count, gte: 500}]}
    priority: P1
  - name: any-usb
    when: {all: [{field: alert_type, eq: dlp}, {field: details.channel, eq: usb}]}
    record_type: incident
    assignment_group: Service Desk
  - name: first-wins
    when: {field: risk_score, gte: 90}
    record_type: task
    assignment_group: IT Security
  - name: never-first
    when: {field: risk_score, gte: 95}
    record_type: problem
"#;

fn router() -> Router {
    Router::new(Config::from_yaml(CONFIG).unwrap(), None).unwrap()
}

#[test]
fn the_first_matching_rule_wins() {
    let r = router();
    let d = r.route(&alert(base(
        "dlp",
        "high",
        json!({"file_count": 900, "bytes": 1, "channel": "usb"}),
    )));
    assert_eq!(d.rule, "big-usb");
    assert_eq!(
        (d.record_type, d.table.as_str()),
        (RecordType::SecurityIncident, "sn_si_incident")
    );
    assert_eq!((d.impact, d.urgency, d.servicenow_priority), (1, 1, Some(1)));
    assert_eq!(
        d.fields["priority"], "1",
        "a security incident takes priority as written"
    );
    let d = r.route(&alert(base(
        "dlp",
        "high",
        json!({"file_count": 9, "bytes": 1, "channel": "usb"}),
    )));
    assert_eq!(d.rule, "any-usb");
    assert_eq!((d.record_type, d.table.as_str()), (RecordType::Incident, "incident"));
    assert_eq!(d.assignment_group, "Service Desk");
    let mut v = base("policy_violation", "low", json!(null));
    v["risk_score"] = json!(99);
    assert_eq!(r.route(&alert(v)).rule, "first-wins");
}

#[test]
fn no_matching_rule_takes_the_alert_type_default() {
    let d = router().route(&alert(base(
        "dlp",
        "medium",
        json!({"file_count": 3, "bytes": 1, "channel": "email"}),
    )));
    assert_eq!(d.rule, "default:dlp");
    assert_eq!(d.table, "sn_si_incident");
    assert_eq!(d.assignment_group, "Security Operations");
    assert_eq!(d.priority, "P3");
    assert_eq!((d.impact, d.urgency), (2, 2));
    assert_eq!(d.delivery, DeliveryMode::Batch);
    assert_eq!(d.fields["category"], "DLP");
}

#[test]
fn the_long_description_has_the_documented_form() {
    for score in [0, 7, 50, 100] {
        let mut v = base(
            "dlp",
            "medium",
            json!({"file_count": 3, "bytes": 1, "channel": "email"}),
        );
        v["risk_score"] = json!(score);
        let d = router().route(&alert(v));
        let expected = format!(
            "Triggering activity: something happened\nAlert type: Data loss prevention (dlp)\nSeverity: \
             Medium\nRisk score: {score}/100\nEmployee: E1\nOccurred at: 2026-11-20T14:03:00Z\nEvidence: \
             https://monitor.example.com/a/100\n\nAlert id: a-100\nRouted by rule {} (config {})\n\nContext:\n\
             Files copied: 3\nData volume: 1 bytes\nChannel: email",
            d.rule, d.config_hash
        );
        assert_eq!(d.fields["description"], expected.as_str());
        assert_eq!((&d.fields["impact"], &d.fields["urgency"]), (&json!("2"), &json!("2")));
    }
}

#[test]
fn priorities_follow_severity_and_per_type_overrides() {
    let r = router();
    for (sev, p, iu) in [
        ("critical", "P1", (1, 1)),
        ("high", "P2", (1, 2)),
        ("medium", "P3", (2, 2)),
        ("low", "P4", (2, 3)),
    ] {
        let d = r.route(&alert(base("custom", sev, json!(null)).tap_rule()));
        assert_eq!((d.priority.as_str(), (d.impact, d.urgency)), (p, iu), "{sev}");
    }
    let d = r.route(&alert(base("policy_violation", "medium", json!(null))));
    assert_eq!(
        (d.priority.as_str(), d.impact, d.urgency, d.servicenow_priority),
        ("P3", 3, 1, Some(3))
    );
}

#[test]
fn delivery_follows_severity_unless_overridden() {
    let r = router();
    let mode = |t: &str, s: &str| r.route(&alert(base(t, s, json!(null)).tap_rule())).delivery;
    assert_eq!(mode("custom", "critical"), DeliveryMode::Realtime);
    assert_eq!(mode("custom", "high"), DeliveryMode::Realtime);
    assert_eq!(mode("custom", "medium"), DeliveryMode::Batch);
    assert_eq!(mode("custom", "low"), DeliveryMode::Batch);
    assert_eq!(mode("behavioral_anomaly", "low"), DeliveryMode::Realtime);
}

#[test]
fn groups_resolve_by_department() {
    let r = router();
    let d = r.route(&alert(base("productivity", "medium", json!(null))));
    assert_eq!(d.assignment_group, "HR Partners - Engineering");
    let mut v = base("productivity", "medium", json!(null));
    v["employee"]["department"] = json!("Legal");
    assert_eq!(r.route(&alert(v)).assignment_group, "HR Partners");
}

#[test]
fn correlation_ids_are_stable_query_safe_and_bounded() {
    assert_eq!(correlation_id("emon", "a-100"), "emon:a-100");
    let weird = correlation_id("emon", "id with spaces^ORactive=true");
    assert!(weird.starts_with("emon:h:") && is_query_safe(&weird), "{weird}");
    assert_eq!(weird, correlation_id("emon", "id with spaces^ORactive=true"));
    let long = correlation_id("emon", &"x".repeat(128));
    assert!(long.len() <= 100 && is_query_safe(&long));
    // an alert id that looks like a hashed one cannot collide with a hashed one
    assert!(correlation_id("emon", "h:abc").starts_with("emon:h:"));
    assert_ne!(correlation_id("emon", "h:abc"), "emon:h:abc");
}

#[test]
fn pseudonymisation_needs_a_key_and_hides_the_id() {
    let yaml = format!("{CONFIG}\nprivacy: {{pseudonymise_employee: true}}\n");
    let c = Config::from_yaml(&yaml).unwrap();
    assert_eq!(
        Router::new(c.clone(), None).unwrap_err(),
        RouterError::MissingPseudonymKey
    );
    assert_eq!(
        Router::new(c.clone(), Some(b"short".to_vec())).unwrap_err(),
        RouterError::ShortPseudonymKey
    );
    let r = Router::new(c.clone(), Some(b"0123456789abcdef-key".to_vec())).unwrap();
    let d = r.route(&alert(base("dlp", "low", json!(null))));
    assert!(d.employee_ref.starts_with("emp-") && d.employee_ref.len() == 24);
    assert_ne!(d.employee_ref, "E1");
    let text = serde_json::to_string(&d.fields).unwrap();
    assert!(!text.contains("E1\"") && !text.contains("Employee: E1\n"), "{text}");
    // keyed: another key gives another pseudonym, the same key the same one
    let r2 = Router::new(c, Some(b"another-key-0123456".to_vec())).unwrap();
    assert_ne!(r2.employee_ref("E1"), d.employee_ref);
    assert_eq!(r.employee_ref("E1"), d.employee_ref);
}

trait TapRule {
    fn tap_rule(self) -> Value;
}
impl TapRule for Value {
    fn tap_rule(mut self) -> Value {
        if self["alert_type"] == "custom" {
            self["rule"] = json!({"id": "r1", "name": "Custom one"});
        }
        self
    }
}

fn pseudonymising() -> Config {
    Config::from_yaml(&format!("{CONFIG}\nprivacy: {{pseudonymise_employee: true}}\n")).unwrap()
}

#[test]
fn the_key_text_is_trimmed_so_every_mode_gives_the_same_pseudonym() {
    let key = "0123456789abcdef-key";
    let expected = Router::with_pseudonym_key(pseudonymising(), Some(PseudonymKey::from_secret_text(key).unwrap()))
        .unwrap()
        .employee_ref("E1");
    for text in [
        " 0123456789abcdef-key\n",
        "0123456789abcdef-key\r\n",
        "\t0123456789abcdef-key  ",
    ] {
        let from_text = PseudonymKey::from_secret_text(text).unwrap();
        let r = Router::with_pseudonym_key(pseudonymising(), Some(from_text)).unwrap();
        assert_eq!(r.employee_ref("E1"), expected, "{text:?}");
        // the raw-bytes path (an environment variable as read) normalises the same way
        let r = Router::new(pseudonymising(), Some(text.as_bytes().to_vec())).unwrap();
        assert_eq!(r.employee_ref("E1"), expected, "{text:?}");
    }
    // inner whitespace is part of the key
    let spaced = PseudonymKey::from_secret_text("0123456789 abcdef-key").unwrap();
    let r = Router::with_pseudonym_key(pseudonymising(), Some(spaced)).unwrap();
    assert_ne!(r.employee_ref("E1"), expected);
}

#[test]
fn a_key_is_at_least_16_bytes_after_trimming() {
    assert!(PseudonymKey::from_secret_text(&"k".repeat(16)).is_ok());
    for short in ["", "   \n", "fifteen-bytes-k", "  fifteen-bytes-k  \n"] {
        assert_eq!(
            PseudonymKey::from_secret_text(short).unwrap_err(),
            RouterError::ShortPseudonymKey,
            "{short:?}"
        );
    }
    // bytes that are not text are the key as they are
    assert!(PseudonymKey::from_secret_bytes(&[0xff; 16]).is_ok());
    assert_eq!(
        PseudonymKey::from_secret_bytes(&[0xff; 15]).unwrap_err(),
        RouterError::ShortPseudonymKey
    );
}

#[test]
fn a_key_is_required_only_when_the_config_pseudonymises_and_never_shown() {
    assert_eq!(
        Router::with_pseudonym_key(pseudonymising(), None).unwrap_err(),
        RouterError::MissingPseudonymKey
    );
    // without pseudonymisation a key (even a short one) is not used
    let plain = Config::from_yaml(CONFIG).unwrap();
    let key = PseudonymKey::from_secret_text("0123456789abcdef-key").unwrap();
    assert_eq!(
        Router::with_pseudonym_key(plain.clone(), Some(key.clone()))
            .unwrap()
            .employee_ref("E1"),
        "E1"
    );
    assert_eq!(
        Router::new(plain, Some(b"short".to_vec())).unwrap().employee_ref("E1"),
        "E1"
    );
    // Debug output never carries the key
    let r = Router::with_pseudonym_key(pseudonymising(), Some(key.clone())).unwrap();
    for debug in [format!("{key:?}"), format!("{r:?}")] {
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
        assert!(!debug.contains("48, 49, 50"), "{debug}");
    }
}

fn shipped(file: &str) -> Decision {
    let path = format!("{}/../../events/alerts/{file}", env!("CARGO_MANIFEST_DIR"));
    let body = std::fs::read(path).unwrap();
    Router::new(Config::default_config(), None)
        .unwrap()
        .route(&Alert::from_slice(&body).unwrap())
}

/// Every field a decision sends exists on its table's profile.
fn only_table_fields(d: &Decision) {
    let c = Config::default_config();
    let p = c.profile_for(d.record_type, &d.table);
    for k in d.fields.keys() {
        assert!(p.has(k), "{}: field {k:?} is not a field of {}", d.rule, d.table);
    }
}

#[test]
fn the_usb_seed_is_a_p1_security_incident_with_file_count_volume_and_channel() {
    let d = shipped("seed-usb-copy-847-files.json");
    only_table_fields(&d);
    assert_eq!((d.table.as_str(), d.servicenow_priority), ("sn_si_incident", Some(1)));
    assert_eq!(d.priority_method, PriorityMethod::Direct);
    assert_eq!(d.fields["priority"], "1");
    assert_eq!(d.fields["correlation_id"], d.correlation_id.as_str());
    let text = d.fields["description"].as_str().unwrap();
    assert!(text.contains("Files copied: 847"), "{text}");
    assert!(text.contains("Data volume: "), "{text}");
    assert!(text.contains("Channel: usb"), "{text}");
}

#[test]
fn the_after_hours_seed_is_a_p2_response_task_with_systems_duration_and_applications() {
    let d = shipped("seed-after-hours-prod-db-admin.json");
    only_table_fields(&d);
    assert_eq!(d.rule, "after-hours-privileged-access");
    assert_eq!((d.table.as_str(), d.profile.as_str()), ("sn_si_task", "security_task"));
    assert_eq!(d.servicenow_priority, Some(2));
    assert_eq!(d.fields["priority"], "2");
    assert!(!d.fields.contains_key("category"), "sn_si_task has no category");
    let text = d.fields["description"].as_str().unwrap();
    for line in [
        "Systems accessed: prod-db-01",
        "Duration: 47 minutes",
        "Applications used: psql, DBeaver",
    ] {
        assert!(text.contains(line), "{line} missing from {text}");
    }
    let person = d.person.as_ref().expect("the task is tagged with the person");
    assert_eq!(
        (person.value.as_str(), person.fields.as_slice()),
        ("E0317", &["affected_user".to_string()][..])
    );
}

#[test]
fn the_productivity_seed_is_an_hr_case_about_the_employee_with_categories_department_manager_and_chart() {
    let d = shipped("seed-productivity-non-work-browsing.json");
    only_table_fields(&d);
    assert_eq!(d.table, "sn_hr_core_case");
    assert_eq!(
        (d.priority_method, d.servicenow_priority),
        (PriorityMethod::HrService, None)
    );
    assert!(!d.fields.contains_key("priority") && !d.fields.contains_key("category"));
    assert_eq!(d.fields["hr_service"], "Productivity Review");
    let text = d.fields["description"].as_str().unwrap();
    for line in [
        "Categories of non-work activity: social_media, video_streaming, shopping",
        "Department: Engineering",
        "Manager: M2001",
    ] {
        assert!(text.contains(line), "{line} missing from {text}");
    }
    let person = d.person.as_ref().unwrap();
    assert_eq!(person.fields, vec!["opened_for", "subject_person"]);
    assert_eq!(d.chart.as_ref().unwrap().weekly, vec![3.9, 4.3, 4.4]);
}

#[test]
fn a_policy_exception_carries_policy_validity_and_the_30_day_history() {
    let d = shipped("policy-violation-medium.json");
    only_table_fields(&d);
    assert_eq!(d.table, "sn_compliance_policy_exception");
    assert_eq!(d.fields["policy"], "Acceptable Use Policy");
    assert_eq!(d.fields["valid_from"], "2026-11-23");
    assert_eq!(d.fields["valid_to"], "2026-12-23");
    let j = d.fields["justification"].as_str().unwrap();
    assert!(j.contains("1 violations, 2 warnings"), "{j}");
}

#[test]
fn a_policy_exception_sent_after_its_valid_to_day_runs_30_days_from_the_day_it_is_sent() {
    let d = shipped("policy-violation-medium.json");
    let v = d.valid_to.clone().expect("the profile names {valid_to}");
    assert_eq!(v.date, "2026-12-23");
    assert_eq!(v.fields, vec!["valid_to".to_string()]);
    let day = |date: &str| {
        let date = time::Date::parse(date, time::macros::format_description!("[year]-[month]-[day]")).unwrap();
        date.midnight().assume_utc().unix_timestamp()
    };
    // sent on the day it was routed (or any day before valid_to is 30 days away): unchanged, not copied
    let same = ValidTo::apply(Some(&v), &d.fields, day("2026-11-23") + 3600);
    assert!(matches!(same, std::borrow::Cow::Borrowed(_)));
    // sent 40 days later (a replay from the dead-letter queue): valid to 30 days after that day
    let later = ValidTo::apply(Some(&v), &d.fields, day("2027-01-02") + 60);
    assert_eq!(later["valid_to"], "2027-02-01");
    assert_eq!(
        later["valid_from"], "2026-11-23",
        "the exception still starts when the violation occurred"
    );
    let untouched: Vec<_> = d
        .fields
        .keys()
        .filter(|k| *k != "valid_to" && later[*k] != d.fields[*k])
        .collect();
    assert!(untouched.is_empty(), "{untouched:?}");
    // a table whose profile has no valid_to never changes
    let incident = shipped("seed-usb-copy-847-files.json");
    assert!(incident.valid_to.is_none());
    assert!(matches!(
        ValidTo::apply(incident.valid_to.as_ref(), &incident.fields, day("2030-01-01")),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn a_risk_carries_its_key_in_its_description_and_never_sends_task_fields() {
    let mut v = base(
        "policy_violation",
        "medium",
        json!({"policy": "Acceptable use", "history_30d": {"violations": 4, "warnings": 0}}),
    );
    v["alert_id"] = json!("r-1");
    let d = Router::new(Config::default_config(), None).unwrap().route(&alert(v));
    only_table_fields(&d);
    assert_eq!(d.table, "sn_risk_risk");
    for absent in [
        "correlation_id",
        "short_description",
        "assignment_group",
        "impact",
        "urgency",
        "contact_type",
    ] {
        assert!(
            !d.fields.contains_key(absent),
            "{absent} must not be sent to sn_risk_risk"
        );
    }
    assert_eq!(d.fields["owning_group"], "Risk Management");
    assert!(d.fields["name"].as_str().unwrap().contains("something happened"));
    assert_eq!(d.dedupe.field, "description");
    assert!(
        d.fields["description"]
            .as_str()
            .unwrap()
            .ends_with("[relay-key emon:r-1]")
    );
    assert_eq!(d.servicenow_priority, None);
}

#[test]
fn minimal_data_mode_sends_no_context_and_no_detail_values() {
    let yaml = crate::config::DEFAULT_CONFIG_YAML.replace(
        "pseudonymise_employee: false",
        "pseudonymise_employee: false\n  minimal_data: true",
    );
    let r = Router::new(Config::from_yaml(&yaml).unwrap(), None).unwrap();
    let body = std::fs::read(format!(
        "{}/../../events/alerts/seed-productivity-non-work-browsing.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let d = r.route(&Alert::from_slice(&body).unwrap());
    let text = d.fields["description"].as_str().unwrap();
    assert!(!text.contains("Context:") && !text.contains("M2001"), "{text}");
    assert!(d.chart.is_none());
    assert_eq!(
        d.fields["hr_service"], "Productivity Review",
        "literal defaults stay with minimal data"
    );
}

#[test]
fn with_pseudonymisation_no_identity_leaves() {
    let r = Router::new(pseudonymising(), Some(b"0123456789abcdef-key".to_vec())).unwrap();
    let body = std::fs::read(format!(
        "{}/../../events/alerts/seed-productivity-non-work-browsing.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let d = r.route(&Alert::from_slice(&body).unwrap());
    assert!(d.person.is_none(), "no sys_user lookup with pseudonymisation on");
    let all = serde_json::to_string(&d.fields).unwrap();
    for identity in ["E2210", "M2001", "Alex Kim"] {
        assert!(!all.contains(identity), "{identity} left in {all}");
    }
}

const THREADED: &str = r#"
version: 1
threads: {enabled: true}
alert_types:
  dlp: {record_type: security_incident, assignment_group: Security Operations}
  policy_violation: {record_type: policy_exception, assignment_group: Compliance}
  behavioral_anomaly: {record_type: security_incident, assignment_group: IT Security, thread: {enabled: false}}
  productivity: {record_type: hr_case, assignment_group: HR Partners}
  custom: {record_type: incident, assignment_group: Service Desk}
rules:
  - name: by-rule
    when: {field: risk_score, gte: 95}
    thread: {key: [rule], window_days: 2}
"#;

fn threaded_router() -> Router {
    Router::new(Config::from_yaml(THREADED).unwrap(), None).unwrap()
}

fn thread_of(r: &Router, v: Value) -> Option<ThreadPlan> {
    r.route(&alert(v)).thread
}

#[test]
fn threads_are_off_unless_the_config_turns_them_on() {
    assert_eq!(thread_of(&router(), base("dlp", "critical", json!({}))), None);
}

#[test]
fn a_thread_key_is_the_table_employee_and_alert_type_hashed() {
    let r = threaded_router();
    let mut v = base("dlp", "critical", json!({}));
    let t = thread_of(&r, v.clone()).expect("a realtime security incident joins a thread");
    assert!(t.key.starts_with("thread:sn_si_incident:"), "{}", t.key);
    assert!(!t.key.contains("E1"), "no employee id in the clear: {}", t.key);
    assert_eq!(t.window_s, 7 * 86_400);
    assert_eq!(t.journal, "work_notes");
    assert!(t.done_states.contains(&"3".to_string()), "{:?}", t.done_states);
    assert_eq!(t.link_field.as_deref(), Some("parent_security_incident"));
    assert!(t.note.starts_with("[relay-key "), "{}", t.note);
    // another alert of the same employee and type: the same thread
    v["alert_id"] = json!("a-200");
    v["severity"] = json!("high");
    let same = thread_of(&r, v.clone()).unwrap();
    assert_eq!(same.key, t.key);
    assert_ne!(same.note, t.note, "each note names its own alert");
    // another employee: another thread
    v["employee"]["id"] = json!("E2");
    assert_ne!(thread_of(&r, v.clone()).unwrap().key, t.key);
    // a test alert never joins a real alert's thread
    let mut test = base("dlp", "critical", json!({}));
    test["test"] = json!(true);
    assert_ne!(thread_of(&r, test).unwrap().key, t.key);
}

#[test]
fn custom_alerts_thread_by_their_rule_and_routes_override_the_settings() {
    let r = threaded_router();
    let mut a = base("custom", "critical", json!({}));
    a["rule"] = json!({"id": "r1", "name": "Rule one"});
    let mut b = a.clone();
    b["rule"] = json!({"id": "r2", "name": "Rule two"});
    assert_ne!(thread_of(&r, a).unwrap().key, thread_of(&r, b).unwrap().key);
    // the alert type turns them off
    assert_eq!(thread_of(&r, base("behavioral_anomaly", "critical", json!({}))), None);
    // a rule keys by itself alone, with its own window
    let mut hot = base("dlp", "critical", json!({}));
    hot["risk_score"] = json!(99);
    let t1 = thread_of(&r, hot.clone()).unwrap();
    hot["employee"]["id"] = json!("E9");
    hot["alert_type"] = json!("dlp");
    let t2 = thread_of(&r, hot).unwrap();
    assert_eq!(t1.key, t2.key, "keyed by the rule only");
    assert_eq!(t1.window_s, 2 * 86_400);
}

#[test]
fn batched_alerts_are_in_the_thread_of_their_realtime_peers() {
    let r = threaded_router();
    // low severity is batched: the same thread as a critical alert of the employee and type (the flush
    // notes it there when the thread has a record)
    let low = thread_of(&r, base("dlp", "low", json!({}))).expect("a thread plan");
    let critical = thread_of(&r, base("dlp", "critical", json!({}))).expect("a thread plan");
    assert_eq!(low.key, critical.key);
}

#[test]
fn thread_settings_are_checked() {
    let bad = THREADED
        .replace(
            "threads: {enabled: true}",
            "threads: {enabled: true, key: [employee, mood], window_days: 0}",
        )
        .replace("window_days: 2", "window_days: 31");
    let e = Config::from_yaml(&bad).unwrap_err().to_string();
    assert!(e.contains("thread key \"mood\" is unknown"), "{e}");
    assert!(e.contains("window_days 0 must be between 1 and 30"), "{e}");
    assert!(e.contains("window_days 31 must be between 1 and 30"), "{e}");
    let e = Config::from_yaml(&THREADED.replace("thread: {key: [rule]", "thread: {keys: [rule]"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("keys"), "{e}");
}

#[test]
fn escalation_steps_are_planned_strongest_first_and_checked() {
    let yaml = THREADED.replace(
        "threads: {enabled: true}",
        "threads: {enabled: true, escalation: [{priority: P2, alerts: 3}, {priority: P1, peak_risk: 90, channels: 2}]}",
    );
    let r = Router::new(Config::from_yaml(&yaml).unwrap(), None).unwrap();
    let mut v = base("dlp", "high", json!({"channel": "usb", "file_count": 3, "bytes": 10}));
    v["risk_score"] = json!(70);
    let t = thread_of(&r, v).unwrap();
    assert_eq!(t.risk, 70);
    assert_eq!(t.channel.as_deref(), Some("usb"));
    assert!(t.note.contains("[relay-risk 70:usb]"), "{}", t.note);
    let names: Vec<&str> = t.escalation.iter().map(|s| s.when.priority.as_str()).collect();
    assert_eq!(names, ["P1", "P2"], "strongest first");
    assert_eq!(t.escalation[0].servicenow_priority, 1);
    let mut stats = ThreadStats::default();
    stats.add(95, Some("usb"));
    assert!(!t.escalation[0].reached(&stats), "one channel only");
    stats.add(20, Some("email"));
    assert!(t.escalation[0].reached(&stats));
    assert!(!t.escalation[1].reached(&stats), "two alerts");

    for (bad, says) in [
        ("escalation: [{priority: P9, alerts: 2}]", "unknown priority \"P9\""),
        ("escalation: [{priority: P1}]", "names no threshold"),
        (
            "escalation: [{priority: P1, peak_risk: 101}]",
            "peak_risk is a risk_score",
        ),
    ] {
        let yaml = THREADED.replace(
            "threads: {enabled: true}",
            &format!("threads: {{enabled: true, {bad}}}"),
        );
        let e = Config::from_yaml(&yaml).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}
