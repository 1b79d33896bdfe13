//! The published JSON Schema (docs/alert-schema.json) and the validator (`Alert::from_slice`) agree on every
//! sample: each `events/alerts/*.json` passes both, each `events/invalid/*.json` fails both — except where
//! the schema cannot express a rule the validator enforces, listed below by fixture.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use relay_core::Alert;
use relay_core::alert::Body;
use relay_core::alert::{DlpChannel, KNOWN_FIELDS};
use relay_core::{AlertType, Severity};
use serde_json::{Value, json};

/// Invalid samples the schema accepts, and the validator's rule it cannot express.
const BEYOND_THE_SCHEMA: [(&str, &str); 2] = [
    (
        "impossible-date.json",
        "occurred_at 2026-02-30: the schema checks the RFC 3339 shape with a pattern; the validator also checks \
         that the date exists",
    ),
    (
        "bad-evidence-port.json",
        "evidence_url port 99999: the schema's pattern checks https://, a host part and no @; the validator parses \
         the link (WHATWG rules) and rejects a malformed host or port",
    ),
];

/// How many problems the validator reports for each invalid sample (docs/alert-schema.md names them).
const PROBLEM_COUNTS: [(&str, usize); 7] = [
    ("bad-values.json", 7),
    ("missing-required-fields.json", 6),
    ("too-long-and-wrong-types.json", 7),
    ("not-json.json", 1),
    ("impossible-date.json", 1),
    ("bad-evidence-port.json", 1),
    ("lifecycle-bad-resolution.json", 4),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn schema() -> Value {
    let text = std::fs::read_to_string(repo().join("docs/alert-schema.json")).unwrap();
    serde_json::from_str(&text).expect("docs/alert-schema.json is JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&schema()).expect("docs/alert-schema.json is a valid draft 2020-12 schema")
}

/// Every `*.json` in `dir`, by file name.
fn fixtures(dir: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn schema_errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn every_sample_alert_passes_the_schema_and_the_validator() {
    let v = validator();
    let samples = fixtures("events/alerts");
    assert!(
        samples.len() >= 23,
        "one sample per alert type and severity plus the seed's three"
    );
    for (name, body) in samples {
        if let Err(e) = Alert::from_slice(&body) {
            panic!("{name}: the validator rejects it: {e}");
        }
        let instance: Value = serde_json::from_slice(&body).unwrap();
        let errors = schema_errors(&v, &instance);
        assert!(errors.is_empty(), "{name}: the schema rejects it: {errors:#?}");
    }
}

#[test]
fn every_sample_lifecycle_event_passes_the_schema_and_the_validator() {
    let v = validator();
    let samples = fixtures("events/lifecycle");
    assert!(samples.len() >= 3, "an update, a resolution, a dismissal");
    for (name, body) in samples {
        match Body::from_slice(&body) {
            Ok(Body::Event(_)) => {}
            other => panic!("{name}: not a lifecycle event to the validator: {other:?}"),
        }
        let instance: Value = serde_json::from_slice(&body).unwrap();
        let errors = schema_errors(&v, &instance);
        assert!(errors.is_empty(), "{name}: the schema rejects it: {errors:#?}");
    }
    // the schema's event fields are the validator's
    let s = schema();
    let fields: BTreeSet<&str> = s["$defs"]["lifecycle_event"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, relay_core::alert::EVENT_FIELDS.into_iter().collect());
    // an event body with the alert's fields repeated is still an event, for both
    let mut e: Value =
        serde_json::from_slice(&std::fs::read(repo().join("events/lifecycle/usb-copy-resolved.json")).unwrap())
            .unwrap();
    e["severity"] = json!("critical");
    assert!(v.is_valid(&e));
    assert!(matches!(Body::from_value(&e), Ok(Body::Event(_))));
}

#[test]
fn every_invalid_sample_fails_the_validator_and_the_schema_unless_listed() {
    let v = validator();
    let samples = fixtures("events/invalid");
    let names: BTreeSet<&str> = samples.iter().map(|(n, _)| n.as_str()).collect();
    let counted: BTreeSet<&str> = PROBLEM_COUNTS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, counted, "every invalid sample has its problem count here");
    for (name, _) in BEYOND_THE_SCHEMA {
        assert!(names.contains(name), "{name} is listed but not in events/invalid");
    }

    for (name, body) in &samples {
        let problems = match Body::from_slice(body) {
            Ok(_) => panic!("{name}: the validator accepts it"),
            Err(e) => e.problems,
        };
        let expected = PROBLEM_COUNTS.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(problems.len(), expected, "{name}: {problems:#?}");

        let Ok(instance) = serde_json::from_slice::<Value>(body) else {
            // not JSON at all: no schema can accept it
            assert_eq!(problems[0].path, "$", "{name}");
            continue;
        };
        let errors = schema_errors(&v, &instance);
        match BEYOND_THE_SCHEMA.iter().find(|(n, _)| n == name) {
            Some((_, rule)) => assert!(
                errors.is_empty(),
                "{name} is listed as beyond the schema ({rule}), but the schema rejects it: {errors:#?}"
            ),
            None => assert!(!errors.is_empty(), "{name}: the schema accepts it ({problems:?})"),
        }
    }
}

#[test]
fn counts_written_with_a_fraction_pass_both() {
    let v = validator();
    let body = std::fs::read(repo().join("events/alerts/seed-usb-copy-847-files.json")).unwrap();
    let mut instance: Value = serde_json::from_slice(&body).unwrap();
    instance["details"]["file_count"] = json!(847.0);
    assert!(v.is_valid(&instance));
    let alert = Alert::from_value(&instance).unwrap();
    assert!(matches!(
        alert.details,
        relay_core::alert::Details::Dlp {
            file_count: Some(847),
            ..
        }
    ));
    // a fraction fails both
    instance["details"]["file_count"] = json!(847.5);
    assert!(!v.is_valid(&instance));
    assert!(Alert::from_value(&instance).is_err());
}

#[test]
fn the_schema_names_the_fields_and_values_the_validator_knows() {
    let s = schema();
    let alert = &s["$defs"]["alert"];
    let properties: BTreeSet<&str> = alert["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(properties, KNOWN_FIELDS.into_iter().collect());

    // required: exactly what an empty object is missing
    let required: BTreeSet<&str> = alert["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let missing: BTreeSet<String> = Alert::from_slice(b"{}")
        .unwrap_err()
        .problems
        .into_iter()
        .filter(|p| p.message.starts_with("is required"))
        .map(|p| p.path.trim_start_matches("$.").to_string())
        .collect();
    assert_eq!(required, missing.iter().map(String::as_str).collect());

    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        strings(&alert["properties"]["alert_type"]["enum"]),
        AlertType::ALL.map(|t| t.as_str().to_string())
    );
    assert_eq!(
        strings(&alert["properties"]["severity"]["enum"]),
        Severity::ALL.map(|t| t.as_str().to_string())
    );
    assert_eq!(
        strings(&s["$defs"]["dlp_details"]["properties"]["channel"]["enum"]),
        DlpChannel::ALL.map(|t| t.as_str().to_string())
    );
}

#[test]
fn edge_cases_the_schema_once_disagreed_on_are_decided_alike() {
    let v = validator();
    let sample = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(repo().join("events/alerts").join(name)).unwrap()).unwrap()
    };
    let usb = sample("seed-usb-copy-847-files.json");
    let anomaly = sample("seed-after-hours-prod-db-admin.json");
    let productivity = sample("seed-productivity-non-work-browsing.json");
    let with = |base: &Value, edit: &dyn Fn(&mut Value)| {
        let mut x = base.clone();
        edit(&mut x);
        x
    };
    let cases: Vec<(&str, Value, bool)> = vec![
        (
            "schema_version as the number 1",
            with(&usb, &|x| x["schema_version"] = json!(1)),
            true,
        ),
        (
            "schema_version \"2\"",
            with(&usb, &|x| x["schema_version"] = json!("2")),
            true,
        ),
        (
            "schema_version \"3\"",
            with(&usb, &|x| x["schema_version"] = json!("3")),
            false,
        ),
        (
            "after_hours as a string",
            with(&anomaly, &|x| x["details"]["after_hours"] = json!("true")),
            false,
        ),
        (
            "privileged_account null",
            with(&anomaly, &|x| x["details"]["privileged_account"] = Value::Null),
            true,
        ),
        (
            "weeks as a string",
            with(&productivity, &|x| x["details"]["weeks"] = json!("three")),
            false,
        ),
        (
            "a weekly_trend value in hours per week (over 24)",
            with(&productivity, &|x| {
                x["details"]["weekly_trend"] = json!([3.9, 30.1, 4.4])
            }),
            false,
        ),
        (
            "weekly_trend values of 0 and 24 hours per day",
            with(&productivity, &|x| x["details"]["weekly_trend"] = json!([0, 24])),
            true,
        ),
        (
            "weeks written 3.0",
            with(&productivity, &|x| x["details"]["weeks"] = json!(3.0)),
            true,
        ),
        (
            "an @ in the link's path",
            with(&usb, &|x| x["evidence_url"] = json!("https://monitor.example.com/a@b")),
            false,
        ),
        (
            "an empty user part",
            with(&usb, &|x| x["evidence_url"] = json!("https://@monitor.example.com/a")),
            false,
        ),
        (
            "an empty host",
            with(&usb, &|x| x["evidence_url"] = json!("https:///a")),
            false,
        ),
    ];
    for (what, instance, valid) in cases {
        assert_eq!(Alert::from_value(&instance).is_ok(), valid, "validator: {what}");
        assert_eq!(v.is_valid(&instance), valid, "schema: {what}");
    }
}
