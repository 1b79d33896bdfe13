//! Routing: which rule fires for an alert, and the decision it yields (target table, impact/urgency,
//! assignment group, delivery mode, correlation id and the ServiceNow fields).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::alert::{Alert, AlertType, Severity};
use crate::config::{Config, DeliveryMode, ImpactUrgency, RecordType, Template};
use crate::fields;

/// The part of an alert that may leave for ServiceNow (the seed's minimal data set), kept with the decision
/// so that delivery and batch aggregation never need the original payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertSummary {
    pub description: String,
    pub risk_score: u8,
    pub evidence_url: String,
    pub occurred_at: String,
}

/// What routing decided for one alert. Serialised onto the queue: the decision made (and audited) at
/// receipt is the decision executed, whatever the config says later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub alert_id: String,
    pub alert_type: AlertType,
    pub severity: Severity,
    /// The rule that fired, or `default:<alert_type>` when none did.
    pub rule: String,
    pub record_type: RecordType,
    pub table: String,
    pub impact: u8,
    pub urgency: u8,
    /// The configured priority name (P1…P4).
    pub priority: String,
    /// What ServiceNow's default lookup will compute from impact × urgency (1 Critical … 5 Planning).
    pub servicenow_priority: u8,
    pub assignment_group: String,
    pub delivery: DeliveryMode,
    pub correlation_id: String,
    /// The employee identifier as it leaves (pseudonymised when configured).
    pub employee_ref: String,
    pub test: bool,
    pub summary: AlertSummary,
    /// The record's fields, ready for the Table API (or the Event Management payload for ITOM events).
    pub fields: Map<String, Value>,
    pub config_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error(
        "privacy.pseudonymise_employee is on but no pseudonymisation key was given (set RELAY_PSEUDONYM_KEY to \
         a secret of at least 16 bytes)"
    )]
    MissingPseudonymKey,
    #[error("the pseudonymisation key must be at least 16 bytes long")]
    ShortPseudonymKey,
}

/// Routes alerts with one loaded config.
#[derive(Debug, Clone)]
pub struct Router {
    config: Config,
    pseudonym_key: Option<Vec<u8>>,
}

const MAX_CORRELATION_ID: usize = 100;

/// True for strings that are safe inside a ServiceNow encoded query and a `correlation_id`.
pub fn is_query_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CORRELATION_ID
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A stable, query-safe correlation id for an alert id: `<prefix>:<alert_id>` when the alert id is already
/// made of `[A-Za-z0-9._:-]` and fits; otherwise `<prefix>:h:<sha256 of the alert id, 40 hex>`.
pub fn correlation_id(prefix: &str, alert_id: &str) -> String {
    let mut plain = String::with_capacity(prefix.len() + 1 + alert_id.len());
    plain.push_str(prefix);
    plain.push(':');
    plain.push_str(alert_id);
    if is_query_safe(&plain) && !alert_id.starts_with("h:") && !alert_id.starts_with("b:") {
        return plain;
    }
    use sha2::Digest;
    let digest = hex::encode(Sha256::digest(alert_id.as_bytes()));
    format!("{prefix}:h:{}", &digest[..40])
}

impl Router {
    pub fn new(config: Config, pseudonym_key: Option<Vec<u8>>) -> Result<Router, RouterError> {
        match (&pseudonym_key, config.privacy.pseudonymise_employee) {
            (None, true) => return Err(RouterError::MissingPseudonymKey),
            (Some(k), true) if k.len() < 16 => return Err(RouterError::ShortPseudonymKey),
            _ => {}
        }
        Ok(Router { config, pseudonym_key })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The employee identifier as it may leave: the id itself, or `emp-<20 hex of HMAC-SHA256(key, id)>`.
    pub fn employee_ref(&self, employee_id: &str) -> String {
        match (&self.pseudonym_key, self.config.privacy.pseudonymise_employee) {
            (Some(key), true) => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(employee_id.as_bytes());
                format!("emp-{}", &hex::encode(mac.finalize().into_bytes())[..20])
            }
            _ => employee_id.to_string(),
        }
    }

    /// Decide where `alert` goes.
    pub fn route(&self, alert: &Alert) -> Decision {
        let c = &self.config;
        let defaults = &c.alert_types[&alert.alert_type];
        let rule = c.rules.iter().find(|r| r.guard.admits(alert) && r.when.matches(alert));
        let rt = rule.and_then(|r| r.target.record_type);
        let record_type = rt.or(defaults.target.record_type).unwrap_or(RecordType::Incident);

        let pick = |f: fn(&crate::config::Target) -> Option<&String>| -> Option<String> {
            rule.and_then(|r| f(&r.target)).or_else(|| f(&defaults.target)).cloned()
        };
        let table = rule
            .and_then(|r| r.target.table.clone())
            .or_else(|| {
                if rt.is_none() {
                    defaults.target.table.clone()
                } else {
                    None
                }
            })
            .unwrap_or_else(|| c.tables[&record_type].clone());
        let priority = pick(|t| t.priority.as_ref())
            .unwrap_or_else(|| c.priority_by_severity[alert.severity.rank() as usize].clone());
        let iu = defaults
            .priorities
            .get(&priority)
            .copied()
            .unwrap_or(ImpactUrgency { impact: 2, urgency: 3 });
        let group = rule
            .and_then(|r| r.target.assignment_group.as_ref())
            .or(defaults.target.assignment_group.as_ref())
            .map(|g| g.resolve(&alert.employee.department).to_string())
            .unwrap_or_default();
        let delivery = rule
            .and_then(|r| r.target.delivery)
            .or(defaults.target.delivery)
            .unwrap_or(c.delivery[alert.severity.rank() as usize]);
        let template: &Template = rule
            .and_then(|r| r.target.short_description.as_ref())
            .or(defaults.target.short_description.as_ref())
            .unwrap_or(&c.short_description);
        let mut extra = defaults.target.fields.clone();
        if let Some(r) = rule {
            extra.extend(r.target.fields.clone());
        }
        let rule_name = rule
            .map(|r| r.name.clone())
            .unwrap_or_else(|| format!("default:{}", alert.alert_type));

        let mut decision = Decision {
            alert_id: alert.alert_id.clone(),
            alert_type: alert.alert_type,
            severity: alert.severity,
            rule: rule_name,
            record_type,
            table,
            impact: iu.impact,
            urgency: iu.urgency,
            priority,
            servicenow_priority: iu.servicenow_priority(),
            assignment_group: group,
            delivery,
            correlation_id: correlation_id(&c.correlation_prefix, &alert.alert_id),
            employee_ref: self.employee_ref(&alert.employee.id),
            test: alert.test,
            summary: AlertSummary {
                description: alert.description.clone(),
                risk_score: alert.risk_score,
                evidence_url: alert.evidence_url.clone(),
                occurred_at: alert.occurred_at.clone(),
            },
            fields: Map::new(),
            config_hash: c.hash.clone(),
        };
        let custom_rule_name = alert.rule.as_ref().map(|r| r.name.as_str());
        decision.fields = fields::build(
            &decision,
            c,
            template,
            custom_rule_name,
            pick(|t| t.category.as_ref()),
            pick(|t| t.subcategory.as_ref()),
            &extra,
        );
        decision
    }
}

#[cfg(test)]
mod tests {
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
}
