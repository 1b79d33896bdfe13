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
    assert_eq!((d.impact, d.urgency, d.servicenow_priority), (1, 1, 1));
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
             https://monitor.example.com/a/100\n\nAlert id: a-100\nRouted by rule {} (config {})",
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
        ("P3", 3, 1, 3)
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
