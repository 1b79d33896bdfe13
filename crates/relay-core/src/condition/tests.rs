use super::*;
use serde_json::json;

fn alert(details: Value) -> Alert {
    let mut v = json!({
        "alert_id": "a-1", "alert_type": "behavioral_anomaly", "severity": "high",
        "occurred_at": "2026-11-20T22:40:00Z",
        "employee": {"id": "E7", "department": "Platform Engineering"},
        "description": "after hours", "risk_score": 74,
        "evidence_url": "https://monitor.example.com/a/1",
        "details": details
    });
    if v["details"].is_null() {
        v.as_object_mut().unwrap().remove("details");
    }
    Alert::from_value(&v).unwrap()
}

fn cond(yaml: &str) -> Condition {
    let raw: Yaml = serde_yaml_ng::from_str(yaml).unwrap();
    let mut errors = vec![];
    let c = Condition::compile(&raw, &["ticket.queue".to_string()], &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    c
}

fn errors(yaml: &str) -> Vec<String> {
    let raw: Yaml = serde_yaml_ng::from_str(yaml).unwrap();
    let mut errors = vec![];
    Condition::compile(&raw, &[], &mut errors);
    errors
}

fn anomaly() -> Alert {
    alert(json!({"systems": ["prod-db-01", "bastion"], "duration_minutes": 47,
                 "applications": ["psql"], "after_hours": true, "ticket": {"queue": "ops"}}))
}

#[test]
fn a_guard_admits_everything_its_condition_matches_and_rejects_what_its_conjunction_excludes() {
    let a = anomaly();
    let cases = [
        ("{field: alert_type, eq: behavioral_anomaly}", true),
        ("{field: alert_type, eq: dlp}", false),
        (
            "{all: [{field: alert_type, in: [dlp, behavioral_anomaly]}, {field: severity, eq: high}]}",
            true,
        ),
        (
            "{all: [{field: severity, in: [critical, low]}, {field: risk_score, gte: 1}]}",
            false,
        ),
        (
            "{all: [{field: department, eq: Platform Engineering}, {field: risk_score, gte: 99}]}",
            true,
        ),
        (
            "{all: [{field: department, eq: Finance}, {field: risk_score, gte: 1}]}",
            false,
        ),
        ("{field: employee.department, eq: Finance}", false),
        // only the top-level conjunction narrows: anything under any/not admits every alert
        (
            "{any: [{field: alert_type, eq: dlp}, {field: severity, eq: low}]}",
            true,
        ),
        ("{not: {field: alert_type, eq: behavioral_anomaly}}", true),
        (
            "{all: [{any: [{field: department, eq: Finance}]}, {not: {field: severity, eq: high}}]}",
            true,
        ),
        ("{field: department, ne: Platform Engineering}", true),
    ];
    for (yaml, admitted) in cases {
        let c = cond(yaml);
        let g = Guard::of(&c);
        assert_eq!(g.admits(&a), admitted, "{yaml}");
        // the guard is implied by the condition: a match is always admitted
        assert!(!c.matches(&a) || g.admits(&a), "{yaml}");
    }
}

#[test]
fn every_operator_matches_and_mismatches() {
    let a = anomaly();
    let cases = [
        ("{field: severity, eq: high}", true),
        ("{field: severity, eq: low}", false),
        ("{field: severity, ne: high}", false),
        ("{field: severity, in: [critical, high]}", true),
        ("{field: severity, not_in: [critical, high]}", false),
        ("{field: alert_type, eq: behavioral_anomaly}", true),
        ("{field: alert_type, in: [dlp, custom]}", false),
        ("{field: risk_score, gt: 74}", false),
        ("{field: risk_score, gte: 74}", true),
        ("{field: risk_score, lt: 75}", true),
        ("{field: risk_score, lte: 73}", false),
        ("{field: risk_score, eq: 74}", true),
        ("{field: department, eq: Platform Engineering}", true),
        ("{field: department, starts_with: Platform}", true),
        ("{field: department, contains: Engin}", true),
        ("{field: department, in: [Finance, Sales]}", false),
        ("{field: department, not_in: [Finance, Sales]}", true),
        ("{field: details.duration_minutes, gte: 30}", true),
        ("{field: details.duration_minutes, eq: 47}", true),
        ("{field: details.systems, contains: prod-db}", true),
        ("{field: details.applications, contains: ssh}", false),
        ("{field: details.after_hours, eq: true}", true),
        ("{field: details.privileged_account, exists: true}", false),
        ("{field: details.privileged_account, exists: false}", true),
        ("{field: details.privileged_account, ne: true}", true),
        ("{field: details.ticket.queue, eq: ops}", true),
        ("{field: test, eq: false}", true),
        ("{field: rule.name, exists: false}", true),
        ("{field: rule.id, eq: r1}", false),
    ];
    for (yaml, want) in cases {
        assert_eq!(cond(yaml).matches(&a), want, "{yaml}");
    }
}

#[test]
fn all_any_not_combine() {
    let a = anomaly();
    assert!(cond("{all: [{field: severity, eq: high}, {field: details.after_hours, eq: true}]}").matches(&a));
    assert!(!cond("{all: [{field: severity, eq: high}, {field: details.after_hours, eq: false}]}").matches(&a));
    assert!(cond("{any: [{field: severity, eq: low}, {field: risk_score, gt: 50}]}").matches(&a));
    assert!(!cond("{any: [{field: severity, eq: low}, {field: risk_score, gt: 90}]}").matches(&a));
    assert!(cond("{not: {field: severity, eq: low}}").matches(&a));
    assert!(!cond("{not: {any: [{field: severity, eq: high}]}}").matches(&a));
}

#[test]
fn missing_details_never_match_positive_operators() {
    let a = alert(Value::Null);
    assert!(!cond("{field: details.duration_minutes, gte: 0}").matches(&a));
    assert!(!cond("{field: details.systems, contains: prod}").matches(&a));
    assert!(cond("{field: details.systems, not_in: [x]}").matches(&a));
}

#[test]
fn bad_conditions_are_reported() {
    assert!(errors("{field: colour, eq: red}")[0].contains("unknown condition field \"colour\""));
    assert!(errors("{field: details.favourite_food, eq: x}")[0].contains("unknown detail field"));
    assert!(errors("{field: severity, eq: urgent}")[0].contains("severity has no value"));
    assert!(errors("{field: alert_type, in: [dlp, keylogger]}")[0].contains("no value"));
    assert!(errors("{field: severity, eq: high, ne: low}")[0].contains("exactly one operator"));
    assert!(errors("{field: severity}")[0].contains("exactly one operator"));
    assert!(errors("{field: department, gt: 3}")[0].contains("numeric comparison"));
    assert!(errors("{field: risk_score, contains: 3}")[0].contains("risk_score supports"));
    assert!(errors("{field: test, eq: yes}")[0].contains("test supports"));
    assert!(errors("{all: []}")[0].contains("at least one"));
    assert!(errors("{any: []}")[0].contains("at least one"));
    assert!(errors("{field: severity, equals: high}")[0].contains("unknown operator `equals`"));
    assert!(errors("{all: [{field: severity, eq: high}], any: []}")[0].contains("must stand alone"));
    assert!(errors("{all: {field: severity, eq: high}}")[0].contains("takes a list"));
    assert!(errors("{field: risk_score, gt: high}")[0].contains("takes a number"));
    assert!(errors("{field: details.channel, exists: maybe}")[0].contains("true or false"));
    assert!(errors("{colour: red}")[0].contains("needs `field`"));
    assert!(errors("[1, 2]")[0].contains("must be a mapping"));
}

#[test]
fn conjunctions_are_flattened_and_disjunctions_are_not() {
    let c = cond("{all: [{field: severity, eq: high}, {all: [{field: risk_score, gt: 1}]}]}");
    assert_eq!(c.conjunction().unwrap().len(), 2);
    assert!(cond("{any: [{field: severity, eq: high}]}").conjunction().is_none());
    assert_eq!(Condition::Always.conjunction().unwrap().len(), 0);
}
