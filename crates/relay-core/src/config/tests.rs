use super::*;

const MINIMAL: &str = r#"
version: 1
alert_types:
  dlp: {record_type: security_incident, assignment_group: Security Operations}
  policy_violation: {record_type: policy_exception, assignment_group: Compliance}
  behavioral_anomaly: {record_type: security_incident, assignment_group: IT Security}
  productivity: {record_type: hr_case, assignment_group: HR Partners}
  custom: {record_type: incident, assignment_group: Service Desk}
"#;

fn problems(yaml: &str) -> Vec<String> {
    Config::from_yaml(yaml)
        .expect_err("should be invalid")
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect()
}

fn has(problems: &[String], needle: &str) -> bool {
    problems.iter().any(|p| p.contains(needle))
}

#[test]
fn the_shipped_config_is_valid() {
    let c = Config::default_config();
    assert_eq!(c.hash.len(), 16);
    assert!(c.rules.len() >= 5);
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let c = Config::from_yaml(MINIMAL).unwrap();
    assert_eq!(
        c.delivery,
        [
            DeliveryMode::Realtime,
            DeliveryMode::Realtime,
            DeliveryMode::Batch,
            DeliveryMode::Batch
        ]
    );
    assert_eq!(c.batch_window_seconds, 300);
    assert_eq!(c.priorities["P1"], ImpactUrgency { impact: 1, urgency: 1 });
    assert_eq!(c.priorities["P2"], ImpactUrgency { impact: 1, urgency: 2 });
    assert_eq!(c.priorities["P3"], ImpactUrgency { impact: 2, urgency: 2 });
    assert_eq!(c.priorities["P4"], ImpactUrgency { impact: 2, urgency: 3 });
    assert_eq!(c.tables[&RecordType::SecurityIncident], "sn_si_incident");
    assert_eq!(c.batch.group_by, vec!["employee", "alert_type"]);
}

#[test]
fn the_hash_changes_with_the_content() {
    let a = Config::from_yaml(MINIMAL).unwrap();
    let b = Config::from_yaml(&format!("{MINIMAL}\n# a comment\n")).unwrap();
    assert_ne!(a.hash, b.hash);
    assert_eq!(a.hash, Config::from_yaml(MINIMAL).unwrap().hash);
}

#[test]
fn priority_matrix_matches_servicenow_defaults() {
    let m = |impact, urgency| ImpactUrgency { impact, urgency }.servicenow_priority();
    assert_eq!([m(1, 1), m(1, 2), m(1, 3)], [1, 2, 3]);
    assert_eq!([m(2, 1), m(2, 2), m(2, 3)], [2, 3, 4]);
    assert_eq!([m(3, 1), m(3, 2), m(3, 3)], [3, 4, 5]);
}

#[test]
fn every_problem_is_reported_with_the_rule_name() {
    let yaml = format!(
        r#"{MINIMAL}
rules:
  - name: one
    when: {{field: details.favourite_food, eq: pizza}}
    record_type: spaceship
  - name: one
    table: u_not_there
    priority: P9
  - name: bad-delivery
    delivery: sometimes
    short_description: "{{nope}}"
  - name: managed
    fields: {{correlation_id: x, "Bad Name": y}}
"#
    );
    let p = problems(&yaml);
    assert!(has(&p, r#"rule "one": when: unknown detail field"#), "{p:#?}");
    assert!(has(&p, r#"rule "one": unknown record_type "spaceship""#), "{p:#?}");
    assert!(has(&p, r#"rule "one": duplicate rule name"#), "{p:#?}");
    assert!(has(&p, r#"rule "one": unknown table "u_not_there""#), "{p:#?}");
    assert!(has(&p, r#"rule "one": unknown priority "P9""#), "{p:#?}");
    assert!(
        has(&p, r#"rule "bad-delivery": unknown delivery "sometimes""#),
        "{p:#?}"
    );
    assert!(has(&p, r#"rule "bad-delivery": unknown placeholder {nope}"#), "{p:#?}");
    assert!(
        has(&p, r#"rule "managed": fields.correlation_id is set by the relay"#),
        "{p:#?}"
    );
    assert!(
        has(&p, r#"rule "managed": fields.Bad Name is not a ServiceNow field name"#),
        "{p:#?}"
    );
}

#[test]
fn unreachable_rules_are_named_with_the_rule_that_hides_them() {
    let yaml = format!(
        r#"{MINIMAL}
rules:
  - name: all-dlp
    when: {{field: alert_type, eq: dlp}}
    record_type: incident
  - name: usb-dlp
    when: {{all: [{{field: alert_type, eq: dlp}}, {{field: details.channel, eq: usb}}]}}
    record_type: security_incident
  - name: catch-all
    record_type: task
  - name: after-catch-all
    when: {{field: severity, eq: low}}
    record_type: task
"#
    );
    let p = problems(&yaml);
    assert!(has(&p, r#"rule "usb-dlp": is unreachable: rule "all-dlp""#), "{p:#?}");
    assert!(
        has(&p, r#"rule "after-catch-all": is unreachable: rule "catch-all""#),
        "{p:#?}"
    );
    assert_eq!(p.len(), 2, "{p:#?}");
}

#[test]
fn a_narrower_rule_before_a_broader_one_is_fine() {
    let yaml = format!(
        r#"{MINIMAL}
rules:
  - name: usb-dlp
    when: {{all: [{{field: alert_type, eq: dlp}}, {{field: details.channel, eq: usb}}]}}
    record_type: security_incident
  - name: all-dlp
    when: {{field: alert_type, eq: dlp}}
    record_type: incident
"#
    );
    assert_eq!(Config::from_yaml(&yaml).unwrap().rules.len(), 2);
}

#[test]
fn missing_alert_type_defaults_and_bad_sections_are_named() {
    let yaml = r#"
version: 2
defaults:
  delivery: {critical: now, urgent: batch}
  batch_window_seconds: 0
  priorities: {P1: {impact: 0, urgency: 1}}
  correlation_prefix: "bad prefix"
tables: {incident: "Incident Table", spaceship: x, itom_event: em_event}
extra_tables: ["u bad"]
batch: {group_by: [employee, colour], max_alerts_per_record: 0}
alert_types:
  dlp: {record_type: security_incident}
  keylogger: {record_type: incident, assignment_group: x}
"#;
    let p = problems(yaml);
    for needle in [
        "file: unsupported config version 2",
        "defaults.delivery: critical: unknown delivery mode \"now\"",
        "defaults.delivery: unknown severity \"urgent\"",
        "batch_window_seconds 0 must be 1 to 3600",
        "defaults.priorities: P1: impact and urgency must be 1, 2 or 3",
        "correlation_prefix \"bad prefix\"",
        "tables: incident: \"Incident Table\" is not a ServiceNow table name",
        "tables: unknown record type \"spaceship\"",
        "tables: itom_event always goes to Event Management",
        "extra_tables: \"u bad\"",
        "batch.group_by: unknown key \"colour\"",
        "batch: max_alerts_per_record",
        "alert_types.dlp: needs an assignment_group",
        "alert_types.keylogger: unknown alert type",
        "alert_types.productivity: is missing",
    ] {
        assert!(has(&p, needle), "missing {needle:?} in {p:#?}");
    }
}

#[test]
fn rule_priorities_missing_priority_names_and_unknown_nested_keys_are_reported() {
    let yaml = format!(
        r#"{MINIMAL}
rules:
  - name: own-matrix
    when: {{field: severity, eq: low}}
    priorities: {{P1: {{impact: 1, urgency: 1}}}}
"#
    );
    assert!(has(&problems(&yaml), "not per rule"));
    let yaml = MINIMAL.replace(
        "version: 1\n",
        "version: 1\ndefaults:\n  priorities: {P1: {impact: 1, urgency: 1}}\n",
    );
    let p = problems(&yaml);
    assert!(has(&p, "low: unknown priority \"P4\""), "{p:#?}");
    let yaml = MINIMAL.replace(
        "version: 1\n",
        "version: 1\ndefaults:\n  priorities: {P1: {impact: 1, urgency: 1}}\n  priority_by_severity: {critical: P1}\n",
    );
    assert!(has(&problems(&yaml), "low: priority \"P4\" is not defined"));
    let yaml = MINIMAL.replace(
        "version: 1\n",
        "version: 1\ndefaults:\n  priorities: {P1: {impact: 1, urgncy: 1}}\n",
    );
    assert!(has(&problems(&yaml), "urgncy"));
    let yaml = MINIMAL.replace(
        "assignment_group: HR Partners}",
        "assignment_group: {by_department: {Sales: S}, default: D, fallback: X}}",
    );
    assert!(Config::from_yaml(&yaml).is_err());
}

#[test]
fn a_broken_condition_does_not_make_later_rules_unreachable() {
    let yaml = format!(
        r#"{MINIMAL}
rules:
  - name: broken
    when: {{field: severity, equals: high}}
  - name: fine
    when: {{field: severity, eq: low}}
"#
    );
    let p = problems(&yaml);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].contains(r#"rule "broken": when: unknown operator `equals`"#),
        "{p:#?}"
    );
}

#[test]
fn a_rule_may_use_a_priority_an_alert_type_defines() {
    let yaml = MINIMAL.replace(
        "custom: {record_type: incident, assignment_group: Service Desk}",
        "custom: {record_type: incident, assignment_group: Service Desk, priorities: {P0: {impact: 1, urgency: 1}}}",
    ) + "rules:\n  - name: zero\n    when: {field: alert_type, eq: custom}\n    priority: P0\n";
    assert!(Config::from_yaml(&yaml).is_ok(), "{:?}", Config::from_yaml(&yaml).err());
}

#[test]
fn yaml_syntax_and_unknown_keys_are_reported() {
    assert!(problems("version: [")[0].starts_with("file:"));
    let p = problems(&format!("{MINIMAL}\nrules:\n  - name: x\n    colour: red\n"));
    assert!(has(&p, "colour"), "{p:?}");
}

#[test]
fn extra_tables_and_table_overrides_are_allowed() {
    let yaml = format!(
        "{MINIMAL}\ntables: {{employee_document: u_employee_doc}}\nextra_tables: [u_dlp_case]\nrules:\n  - name: doc\n    when: {{field: severity, eq: low}}\n    table: u_employee_doc\n  - name: custom-table\n    table: u_dlp_case\n"
    );
    let c = Config::from_yaml(&yaml).unwrap();
    assert_eq!(c.tables[&RecordType::EmployeeDocument], "u_employee_doc");
}

#[test]
fn templates_parse_placeholders_and_reject_unknown_ones() {
    let t = Template::parse("Security Review: {description} ({risk_score})").unwrap();
    assert_eq!(t.parts.len(), 5);
    let e = Template::parse("{nope}").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("unknown placeholder {nope} in template \"{nope}\"; known: {alert_type} {type_label}"),
        "{e}"
    );
    assert_eq!(
        Template::parse("{description").unwrap_err(),
        TemplateError::Unclosed {
            template: "{description".into()
        }
    );
}

#[test]
fn groups_resolve_by_department_with_a_default() {
    let g = GroupSpec::ByDepartment(DepartmentGroups {
        by_department: [("Engineering".to_string(), "HR Partners - Engineering".to_string())].into(),
        default: "HR Partners".into(),
    });
    assert_eq!(g.resolve("Engineering"), "HR Partners - Engineering");
    assert_eq!(g.resolve("Legal"), "HR Partners");
    assert_eq!(GroupSpec::Name("IT Security".into()).resolve("x"), "IT Security");
}

#[test]
fn load_without_a_path_is_the_built_in_config() {
    let loaded = Config::load(None).unwrap();
    assert_eq!(loaded.source, BUILT_IN_CONFIG_NAME);
    assert_eq!(loaded.config, Config::default_config());
}

#[test]
fn load_reads_the_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.yaml");
    std::fs::write(&path, MINIMAL).unwrap();
    let loaded = Config::load(Some(&path)).unwrap();
    assert_eq!(loaded.source, path.display().to_string());
    assert_eq!(loaded.config, Config::from_yaml(MINIMAL).unwrap());
}

#[test]
fn load_names_the_file_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.yaml");
    let e = Config::load(Some(&path)).unwrap_err();
    assert!(
        matches!(&e, ConfigLoadError::Read { path: p, source } if p == &path && source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("cannot read config {}: ", path.display())),
        "{text}"
    );
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn load_names_the_file_and_every_problem_of_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        MINIMAL.replace("version: 1", "version: 7") + "rules:\n  - name: x\n    table: u_nowhere\n",
    )
    .unwrap();
    let e = Config::load(Some(&path)).unwrap_err();
    let ConfigLoadError::Invalid { name, source } = &e else {
        panic!("not an invalid-config error: {e:?}")
    };
    assert_eq!(name, &path.display().to_string());
    assert_eq!(source.problems.len(), 2, "{source}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("{}: invalid config (2 problems):", path.display())),
        "{text}"
    );
    assert!(text.contains("file: unsupported config version 7"), "{text}");
    assert!(text.contains(r#"rule "x": unknown table "u_nowhere""#), "{text}");

    // text that is not YAML is one problem of the file
    std::fs::write(&path, "version: [").unwrap();
    let text = Config::load(Some(&path)).unwrap_err().to_string();
    assert!(
        text.starts_with(&format!("{}: invalid config (1 problem):\n  file: ", path.display())),
        "{text}"
    );
}

#[test]
fn shared_defaults_are_the_named_constants() {
    let c = Config::from_yaml(MINIMAL).unwrap();
    assert_eq!(c.batch_window(), DEFAULT_BATCH_WINDOW);
    assert_eq!(c.correlation_prefix, DEFAULT_CORRELATION_PREFIX);
    assert_eq!(c.batch, BatchSettings::default());
    assert_eq!(c.batch.max_alerts_per_record, DEFAULT_MAX_ALERTS_PER_RECORD);
    assert_eq!(c.batch.max_requests_per_batch, DEFAULT_MAX_REQUESTS_PER_BATCH);
    assert_eq!(c.batch.max_batch_bytes, DEFAULT_MAX_BATCH_BYTES);
    // a batch section that sets one key keeps the defaults of the others
    let c = Config::from_yaml(&format!("{MINIMAL}batch: {{max_alerts_per_record: 7}}\n")).unwrap();
    assert_eq!(c.batch.max_alerts_per_record, 7);
    assert_eq!(c.batch.max_requests_per_batch, DEFAULT_MAX_REQUESTS_PER_BATCH);
    assert_eq!(c.batch.group_by, ["employee", "alert_type"]);
}

#[test]
fn a_route_naming_a_field_its_table_lacks_is_rejected_with_route_table_and_field() {
    let yaml = format!(
        "{MINIMAL}rules:\n  - name: to-risk\n    when: {{field: alert_type, eq: policy_violation}}\n    record_type: risk\n    fields: {{u_ticket: y}}\n  - name: hr-cat\n    when: {{field: alert_type, eq: productivity}}\n    category: Productivity\n"
    );
    let p = problems(&yaml);
    assert!(
        has(
            &p,
            "rule \"to-risk\": fields.u_ticket: table sn_risk_risk (profile risk) has no field \"u_ticket\""
        ),
        "{p:?}"
    );
    assert!(has(&p, "rule \"hr-cat\": category: table sn_hr_core_case"), "{p:?}");
}

#[test]
fn profiles_can_be_overridden_and_a_new_field_then_passes_the_check() {
    let yaml = format!(
        "{MINIMAL}profiles:\n  risk:\n    fields: [name, description, category, profile, owning_group, u_ticket, sys_id]\n    domain: {{risk_statement: \"\"}}\nrules:\n  - name: to-risk\n    when: {{field: alert_type, eq: policy_violation}}\n    record_type: risk\n    fields: {{u_ticket: y}}\n"
    );
    let c = Config::from_yaml(&yaml).unwrap();
    assert!(c.profiles["risk"].has("u_ticket"));
    let bad = format!("{MINIMAL}profiles:\n  hr_case: {{dedupe: {{field: u_nothing}}}}\n");
    assert!(has(
        &problems(&bad),
        "profiles.hr_case: dedupe.field names field \"u_nothing\""
    ));
}

#[test]
fn a_lifecycle_naming_a_field_or_state_its_table_lacks_is_rejected() {
    let c = Config::from_yaml(MINIMAL).unwrap();
    let sir = &c.profiles["security_incident"].lifecycle;
    assert_eq!(sir.journal.as_deref(), Some("work_notes"));
    assert!(sir.is_done("3") && !sir.is_done("16"));
    let fp = sir
        .false_positive
        .as_ref()
        .unwrap()
        .fields_with("dismissed by the monitoring product");
    assert_eq!(fp["state"], "3");
    assert_eq!(fp["close_code"], "False positive");
    assert_eq!(fp["close_notes"], "dismissed by the monitoring product");
    // non-task tables have no journal
    assert_eq!(c.profiles["risk"].lifecycle.journal, None);

    let bad = format!(
        "{MINIMAL}profiles:\n  incident:\n    lifecycle:\n      journal: u_notes\n      done_states: [\"6\", \"9\"]\n      resolve: {{state: \"6\", fields: {{u_code: x}}, notes_field: close_notes}}\n"
    );
    let p = problems(&bad);
    assert!(
        has(
            &p,
            "profiles.incident: lifecycle.journal names field \"u_notes\", which table incident does not have"
        ),
        "{p:?}"
    );
    assert!(
        has(&p, "profiles.incident: lifecycle.resolve names field \"u_code\""),
        "{p:?}"
    );
    assert!(
        has(
            &p,
            "profiles.incident: lifecycle.done_states names state \"9\", which is not one of the profile's states"
        ),
        "{p:?}"
    );
    let bad = format!(
        "{MINIMAL}profiles:\n  incident:\n    lifecycle:\n      done_states: [\"6\"]\n      final_states: [\"7\"]\n      resolve: {{state: \"2\", fields: {{state: \"6\"}}}}\n      reopen_state: \"6\"\n"
    );
    let p = problems(&bad);
    for needle in [
        "profiles.incident: lifecycle.resolve.state \"2\" is not one of its done_states",
        "profiles.incident: lifecycle.resolve sets state in fields",
        "profiles.incident: lifecycle.reopen_state \"6\" is one of its done_states",
        "profiles.incident: lifecycle.final_states names state \"7\", which is not one of its done_states",
    ] {
        assert!(has(&p, needle), "{needle}: {p:?}");
    }
    // an override replaces the shipped lifecycle as a whole
    let off = format!("{MINIMAL}profiles:\n  incident:\n    lifecycle: {{}}\n");
    assert_eq!(
        Config::from_yaml(&off).unwrap().profiles["incident"].lifecycle,
        crate::profile::Lifecycle::default()
    );
}
