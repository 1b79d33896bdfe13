use super::*;
use serde_json::{Value, json};

pub(crate) fn usb_copy() -> Value {
    json!({
        "schema_version": "1",
        "alert_id": "emon-7f3a9c",
        "alert_type": "dlp",
        "severity": "critical",
        "occurred_at": "2026-11-20T14:03:00Z",
        "employee": {"id": "E1042", "display_name": "Dana Reyes", "email": "dana.reyes@example.com",
                     "department": "Engineering", "manager": "M2001"},
        "description": "Copied 847 files (2.3 GB) to an unregistered USB mass-storage device",
        "risk_score": 92,
        "evidence_url": "https://monitor.example.com/alerts/emon-7f3a9c",
        "details": {"file_count": 847, "bytes": 2469606195u64, "channel": "usb"},
        "test": false
    })
}

fn problems(v: Value) -> Vec<Problem> {
    Alert::from_value(&v).expect_err("should be invalid").problems
}

fn has(problems: &[Problem], path: &str, needle: &str) -> bool {
    problems.iter().any(|p| p.path == path && p.message.contains(needle))
}

#[test]
fn alert_type_bits_follow_the_all_order() {
    for (i, t) in AlertType::ALL.iter().enumerate() {
        assert_eq!(t.bit(), 1 << i, "{t}");
    }
}

#[test]
fn a_valid_alert_parses_with_typed_details() {
    let a = Alert::from_value(&usb_copy()).unwrap();
    assert_eq!(a.alert_type, AlertType::Dlp);
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(a.risk_score, 92);
    assert_eq!(
        a.details,
        Details::Dlp {
            file_count: Some(847),
            bytes: Some(2469606195),
            channel: Some(DlpChannel::Usb)
        }
    );
    assert_eq!(a.occurred_at_unix, 1_795_183_380);
    assert!(a.ignored_fields.is_empty());
}

#[test]
fn unknown_extra_fields_are_accepted_and_listed() {
    let mut v = usb_copy();
    v["screenshot"] = json!("base64...");
    v["tenant"] = json!("acme");
    let a = Alert::from_value(&v).unwrap();
    assert_eq!(a.ignored_fields, vec!["screenshot".to_string(), "tenant".to_string()]);

    // from raw bytes with repeated keys: the last value counts, an unknown key is listed once
    let mut text = serde_json::to_string(&usb_copy()).unwrap();
    text.pop();
    text.push_str(r#","zeta":1,"risk_score":12,"zeta":2,"alpha":true}"#);
    let a = Alert::from_slice(text.as_bytes()).unwrap();
    assert_eq!(a.risk_score, 12);
    assert_eq!(a.ignored_fields, ["alpha", "zeta"]);
}

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    let v = json!({
        "alert_type": "keylogger",
        "severity": "urgent",
        "occurred_at": "20 Nov 2026 14:03",
        "employee": {"id": "", "department": "x".repeat(101), "email": "nobody"},
        "description": "bad\u{0007}bell",
        "risk_score": 140,
        "evidence_url": "http://monitor.example.com/a/1",
        "details": {"file_count": -3}
    });
    let p = problems(v);
    assert!(has(&p, "$.alert_id", "is required"), "{p:?}");
    assert!(has(&p, "$.alert_type", "unknown value \"keylogger\""), "{p:?}");
    assert!(
        has(&p, "$.severity", "expected one of: critical, high, medium, low"),
        "{p:?}"
    );
    assert!(has(&p, "$.occurred_at", "RFC 3339"), "{p:?}");
    assert!(has(&p, "$.employee.id", "must not be empty"), "{p:?}");
    assert!(has(&p, "$.employee.department", "the limit is 100"), "{p:?}");
    assert!(has(&p, "$.employee.email", "not an e-mail"), "{p:?}");
    assert!(has(&p, "$.description", "control character"), "{p:?}");
    assert!(has(&p, "$.risk_score", "out of range"), "{p:?}");
    assert!(has(&p, "$.evidence_url", "https"), "{p:?}");
    assert_eq!(p.len(), 10, "{p:?}");
}

#[test]
fn missing_fields_are_named() {
    let p = problems(json!({}));
    for path in [
        "$.alert_id",
        "$.alert_type",
        "$.severity",
        "$.occurred_at",
        "$.employee",
        "$.description",
        "$.risk_score",
        "$.evidence_url",
    ] {
        assert!(has(&p, path, "is required"), "{path} in {p:?}");
    }
}

#[test]
fn wrong_json_types_are_named() {
    let mut v = usb_copy();
    v["risk_score"] = json!("92");
    v["employee"] = json!("E1042");
    v["test"] = json!("yes");
    v["details"] = json!([1]);
    let p = problems(v);
    assert!(has(&p, "$.risk_score", "got a string"));
    assert!(has(&p, "$.employee", "must be an object"));
    assert!(has(&p, "$.test", "true or false"));
    assert!(has(&p, "$.details", "must be an object"));
}

#[test]
fn malformed_urls_and_credentials_in_urls_are_rejected() {
    for (url, needle) in [
        ("not a url", "not a valid URL"),
        ("https://user:pw@monitor.example.com/a", "credentials"),
        ("ftp://monitor.example.com/a", "https"),
        ("javascript:alert(1)", "https"),
    ] {
        let mut v = usb_copy();
        v["evidence_url"] = json!(url);
        let p = problems(v);
        assert!(has(&p, "$.evidence_url", needle), "{url}: {p:?}");
    }
}

#[test]
fn too_long_strings_report_length_and_limit() {
    let mut v = usb_copy();
    v["alert_id"] = json!("a".repeat(129));
    v["description"] = json!("d".repeat(4001));
    let p = problems(v);
    assert!(has(&p, "$.alert_id", "129 characters long; the limit is 128"));
    assert!(has(&p, "$.description", "4001 characters long; the limit is 4000"));
}

#[test]
fn description_may_hold_line_breaks_but_ids_may_not() {
    let mut v = usb_copy();
    v["description"] = json!("line one\nline two\ttabbed");
    assert!(Alert::from_value(&v).is_ok());
    v["alert_id"] = json!("abc\ndef");
    assert!(has(&problems(v), "$.alert_id", "control character"));
}

#[test]
fn risk_score_accepts_whole_floats_and_rejects_fractions() {
    let mut v = usb_copy();
    v["risk_score"] = json!(50.0);
    assert_eq!(Alert::from_value(&v).unwrap().risk_score, 50);
    v["risk_score"] = json!(50.5);
    assert!(has(&problems(v), "$.risk_score", "not an integer"));
}

#[test]
fn typed_details_are_checked_per_alert_type() {
    let mut v = usb_copy();
    v["details"] = json!({"file_count": 3, "channel": "carrier_pigeon"});
    let p = problems(v);
    assert!(
        !p.iter().any(|p| p.path == "$.details.bytes"),
        "a missing detail is no problem: {p:?}"
    );
    assert!(has(&p, "$.details.channel", "unknown value"));

    let mut v = usb_copy();
    v["alert_type"] = json!("productivity");
    v["details"] = json!({"hours_per_day": 30, "categories": ["social", 4], "weekly_trend": "up"});
    let p = problems(v);
    assert!(has(&p, "$.details.hours_per_day", "out of range"));
    assert!(has(&p, "$.details.categories[1]", "must be a string"));
    assert!(has(&p, "$.details.weekly_trend", "list of numbers"));
    // the weekly trend is hours per day, like hours_per_day: a weekly total (29.4 h) is out of range
    let mut v = usb_copy();
    v["alert_type"] = json!("productivity");
    v["details"] = json!({"hours_per_day": 4.2, "categories": [], "weekly_trend": [4.4, 29.4]});
    let p = problems(v);
    assert!(has(&p, "$.details.weekly_trend[1]", "must be 0 to 24"), "{p:?}");
    assert!(!p.iter().any(|p| p.path == "$.details.weekly_trend[0]"), "{p:?}");

    let mut v = usb_copy();
    v["alert_type"] = json!("policy_violation");
    v["details"] = json!({"policy": "Acceptable use", "history_30d": {"violations": "2", "warnings": 1}});
    assert!(has(
        &problems(v),
        "$.details.history_30d.violations",
        "non-negative integer"
    ));
}

#[test]
fn incomplete_details_are_accepted_and_what_is_missing_is_named() {
    let mut v = usb_copy();
    v["details"] = json!({"file_count": 3});
    let a = Alert::from_value(&v).expect("accepted");
    assert_eq!(a.missing_details, vec!["details.bytes", "details.channel"]);
    assert!(matches!(
        a.details,
        Details::Dlp {
            file_count: Some(3),
            bytes: None,
            channel: None
        }
    ));

    let mut v = usb_copy();
    v["alert_type"] = json!("behavioral_anomaly");
    v["details"] = json!({"systems": ["prod-db"], "duration_minutes": 47});
    assert_eq!(
        Alert::from_value(&v).unwrap().missing_details,
        vec!["details.applications"]
    );

    let mut v = usb_copy();
    v["alert_type"] = json!("policy_violation");
    v["details"] = json!({"policy": "Acceptable use", "history_30d": {"violations": 2}});
    assert_eq!(
        Alert::from_value(&v).unwrap().missing_details,
        vec!["details.history_30d.warnings"]
    );

    let mut v = usb_copy();
    v.as_object_mut().unwrap().remove("details");
    assert_eq!(Alert::from_value(&v).unwrap().missing_details, vec!["details"]);

    // the record says what it lacks
    let mut v = usb_copy();
    v["details"] = json!({"file_count": 900, "channel": "usb"});
    let d = crate::Router::new(crate::Config::default_config(), None)
        .unwrap()
        .route(&Alert::from_value(&v).unwrap());
    assert_eq!(d.rule, "dlp-usb-mass-copy", "routing still works on what is there");
    let text = d.fields["description"].as_str().unwrap();
    assert!(text.contains("Not in the alert: details.bytes"), "{text}");
    assert!(
        text.contains("Files copied: 900") && !text.contains("Data volume"),
        "{text}"
    );
}

#[test]
fn custom_alerts_need_their_rule() {
    let mut v = usb_copy();
    v["alert_type"] = json!("custom");
    v["details"] = json!({"anything": "goes"});
    assert!(has(&problems(v.clone()), "$.rule", "is required"));
    v["rule"] = json!({"id": "r-17", "name": "Badge-in without login"});
    let a = Alert::from_value(&v).unwrap();
    assert_eq!(a.rule.unwrap().name, "Badge-in without login");
}

#[test]
fn whole_number_floats_count_and_flags_are_typed() {
    let mut v = usb_copy();
    v["details"]["file_count"] = json!(847.0);
    v["schema_version"] = json!(1);
    assert!(Alert::from_value(&v).is_ok());
    v["details"]["file_count"] = json!(8.5);
    assert!(has(&problems(v), "$.details.file_count", "non-negative integer"));

    let mut v = usb_copy();
    v["alert_type"] = json!("behavioral_anomaly");
    v["details"] = json!({"systems": ["db"], "duration_minutes": 3, "applications": [], "after_hours": "true"});
    assert!(has(&problems(v), "$.details.after_hours", "true or false"));

    let mut v = usb_copy();
    v["alert_type"] = json!("productivity");
    v["details"] = json!({"hours_per_day": 4.2, "categories": [], "weekly_trend": [4.0], "weeks": "three"});
    assert!(has(&problems(v), "$.details.weeks", "non-negative integer"));

    let mut v = usb_copy();
    v["alert_type"] = json!("policy_violation");
    v["details"] = json!({"policy": "x", "history_30d": {"violations": 2.0, "warnings": 0}});
    assert!(Alert::from_value(&v).is_ok());
}

#[test]
fn evidence_urls_need_a_host_and_leave_normalised() {
    for bad in ["https:///a", "HTTPS:///a", "https://@monitor.example.com/a"] {
        let mut v = usb_copy();
        v["evidence_url"] = json!(bad);
        assert!(has(&problems(v), "$.evidence_url", "with a host"), "{bad}");
    }
    let mut v = usb_copy();
    v["evidence_url"] = json!("https://Monitor.Example.com/a/../b");
    assert_eq!(
        Alert::from_value(&v).unwrap().evidence_url,
        "https://monitor.example.com/b"
    );
}

#[test]
fn unsupported_schema_version_is_named() {
    let mut v = usb_copy();
    for ver in [json!("3"), json!(1.0), json!(null), json!("v2")] {
        v["schema_version"] = ver.clone();
        assert!(
            has(&problems(v.clone()), "$.schema_version", "unsupported schema version"),
            "{ver}"
        );
    }
}

#[test]
fn non_json_and_non_object_bodies_are_rejected() {
    assert!(
        Alert::from_slice(b"{not json").unwrap_err().problems[0]
            .message
            .contains("not valid JSON")
    );
    assert!(has(&problems(json!([1, 2])), "$", "JSON object"));
}

#[test]
fn control_characters_are_named_by_their_character_position() {
    for (text, pos) in [
        ("\u{0}nul", 0),
        ("del\u{7f}", 3),
        ("ééé\u{85}next-line", 3),
        ("c1 end \u{9f}", 7),
        ("tab\tin an id", 3),
    ] {
        let mut v = usb_copy();
        v["alert_id"] = json!(text);
        let p = problems(v);
        assert!(
            has(&p, "$.alert_id", &format!("control character at position {pos}")),
            "{text:?}: {p:?}"
        );
    }
    // printable non-ASCII text is not a control character
    let mut v = usb_copy();
    v["employee"]["display_name"] = json!("Ðana Ŕeyes – ü");
    assert!(Alert::from_value(&v).is_ok());
}

#[test]
fn evidence_links_already_in_normal_form_leave_unchanged_and_others_normalised() {
    for same in [
        "https://monitor.example.com/alerts/emon-20261120-7f3a9c",
        "https://a.b-c.example/x?id=42&tab=evidence",
        "https://monitor.example.com/a#frag",
    ] {
        let mut v = usb_copy();
        v["evidence_url"] = json!(same);
        assert_eq!(Alert::from_value(&v).unwrap().evidence_url, same);
    }
    for (sent, forwarded) in [
        ("https://Monitor.Example.com/a", "https://monitor.example.com/a"),
        ("https://monitor.example.com", "https://monitor.example.com/"),
        ("https://monitor.example.com:443/a", "https://monitor.example.com/a"),
        ("https://monitor.example.com/a b", "https://monitor.example.com/a%20b"),
        ("HTTPS://monitor.example.com/a", "https://monitor.example.com/a"),
    ] {
        let mut v = usb_copy();
        v["evidence_url"] = json!(sent);
        assert_eq!(Alert::from_value(&v).unwrap().evidence_url, forwarded, "{sent}");
    }
    for refused in ["https://user@monitor.example.com/a", "https://monitor.example.com/a@b"] {
        let mut v = usb_copy();
        v["evidence_url"] = json!(refused);
        assert!(has(&problems(v), "$.evidence_url", ""), "{refused}");
    }
}

#[test]
fn a_lifecycle_event_is_never_taken_for_a_new_alert() {
    // without the check, a resolution carrying the original alert_id would be accepted as a new alert and
    // answered as a duplicate: dropped without a word
    for event in ["updated", "resolved", "dismissed"] {
        let mut v = usb_copy();
        v["event"] = json!(event);
        v["resolution"] = json!({"reason": "false_positive"});
        let p = problems(v.clone());
        assert!(
            has(&p, "$.event", &format!("event \"{event}\" is a lifecycle event")),
            "{p:?}"
        );
        // as a body it is the event
        assert!(matches!(Body::from_value(&v), Ok(Body::Event(e)) if e.kind.as_str() == event));
    }
    let mut v = usb_copy();
    v["event"] = json!("closed");
    assert!(has(&problems(v.clone()), "$.event", "unknown event \"closed\""));
    assert!(
        Body::from_value(&v).is_err(),
        "an unknown event is not a new alert either"
    );
    let mut v = usb_copy();
    v["event"] = json!(3);
    assert!(has(&problems(v), "$.event", "unknown event 3"));
    // null is absent, as everywhere in the body
    let mut v = usb_copy();
    v["event"] = Value::Null;
    assert!(Alert::from_value(&v).is_ok());
    // "raised" is a new alert, as a body without an event is; neither lists `event` as ignored
    let mut v = usb_copy();
    v["event"] = json!("raised");
    let a = Alert::from_value(&v).unwrap();
    assert!(a.ignored_fields.is_empty(), "{:?}", a.ignored_fields);
    assert!(matches!(Body::from_value(&v), Ok(Body::Alert(_))));
}

#[test]
fn a_lifecycle_event_needs_only_the_alert_id() {
    let v = json!({"schema_version": "2", "event": "dismissed", "alert_id": "a-1",
        "resolution": {"reason": "false_positive", "note": "HR confirmed a scheduled training\nsession"},
        "occurred_at": "2026-11-21T09:00:00Z", "severity": "low"});
    let Ok(Body::Event(e)) = Body::from_value(&v) else {
        panic!("an event")
    };
    assert_eq!(e.alert_id, "a-1");
    assert_eq!(e.kind, EventKind::Dismissed);
    assert_eq!(e.resolution.reason.as_deref(), Some("false_positive"));
    assert!(e.resolution.note.as_deref().unwrap().contains("training\nsession"));
    assert_eq!(
        e.ignored_fields,
        vec!["severity".to_string()],
        "the alert's fields are ignored"
    );
    let Ok(Body::Event(e)) = Body::from_value(&json!({"event": "updated", "alert_id": "a-1"})) else {
        panic!("an event")
    };
    assert_eq!(e.resolution, Resolution::default());
}

#[test]
fn a_bad_lifecycle_event_names_each_problem() {
    let v = json!({"event": "resolved", "schema_version": "3",
        "resolution": {"reason": "x".repeat(201), "who": "me"}, "occurred_at": "yesterday"});
    let Err(e) = Body::from_value(&v) else {
        panic!("refused")
    };
    let p = e.problems;
    assert!(has(&p, "$.alert_id", "is required"), "{p:?}");
    assert!(has(&p, "$.schema_version", "unsupported schema version \"3\""), "{p:?}");
    assert!(
        has(&p, "$.resolution.reason", "is 201 characters long; the limit is 200"),
        "{p:?}"
    );
    assert!(has(&p, "$.resolution.who", "is not a resolution field"), "{p:?}");
    assert!(has(&p, "$.occurred_at", "is not an RFC 3339 timestamp"), "{p:?}");
    let Err(e) = Body::from_value(&json!({"event": "resolved", "alert_id": "a", "resolution": "done"})) else {
        panic!("refused")
    };
    assert!(
        has(&e.problems, "$.resolution", "must be an object"),
        "{:?}",
        e.problems
    );
}

#[test]
fn schema_versions_one_and_two_are_accepted() {
    for ver in [json!("1"), json!(1), json!("2"), json!(2)] {
        let mut v = usb_copy();
        v["schema_version"] = ver.clone();
        assert!(Alert::from_value(&v).is_ok(), "{ver}");
    }
}
