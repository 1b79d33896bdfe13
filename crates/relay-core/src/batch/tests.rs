use super::*;
use crate::alert::Alert;
use crate::config::Config;
use crate::route::Router;
use serde_json::json;

fn decision(i: usize, employee: &str, alert_type: &str, severity: &str) -> Decision {
    let mut v = json!({
        "alert_id": format!("b-{i:04}"), "alert_type": alert_type, "severity": severity,
        "occurred_at": "2026-11-20T14:03:00Z",
        "employee": {"id": employee, "department": "Sales"},
        "description": format!("activity number {i}"), "risk_score": 20,
        "evidence_url": format!("https://monitor.example.com/a/{i}")
    });
    if alert_type == "custom" {
        v["rule"] = json!({"id": "r", "name": "n"});
    }
    Router::new(Config::default_config(), None)
        .unwrap()
        .route(&Alert::from_value(&v).unwrap())
}

fn pend(ds: &[Decision], at: i64) -> Vec<Pending<'_>> {
    ds.iter()
        .map(|d| Pending {
            decision: d,
            received_at_ms: at,
            alone: false,
        })
        .collect()
}

#[test]
fn alerts_of_one_employee_and_type_become_one_record_listing_all() {
    let ds: Vec<Decision> = (0..5).map(|i| decision(i, "E1", "policy_violation", "low")).collect();
    let plan = plan(&pend(&ds, 1_000), &BatchSettings::default(), 300_000);
    assert_eq!(plan.records.len(), 1);
    let r = &plan.records[0];
    assert_eq!(r.alert_ids.len(), 5);
    let desc = r.fields["description"].as_str().unwrap();
    for i in 0..5 {
        assert!(desc.contains(&format!("b-{i:04}")) && desc.contains(&format!("activity number {i}")));
    }
    assert!(
        r.fields["short_description"]
            .as_str()
            .unwrap()
            .starts_with("5 Policy violation alerts")
    );
    assert!(r.correlation_id.starts_with("emon:b:") && crate::route::is_query_safe(&r.correlation_id));
    // a policy exception has no correlation_id: the key is the marker in its description
    assert!(!r.fields.contains_key("correlation_id"));
    assert!(desc.ends_with(&format!("[relay-key {}]", r.correlation_id)), "{desc}");
    assert_eq!(plan.chunks, vec![vec![0]]);
    // every member is in the description in full: no member list to upload, and none is promised
    assert_eq!(r.member_list, None);
    assert!(!desc.contains(MEMBER_LIST_FILE), "{desc}");
}

#[test]
fn an_aggregate_carries_a_member_list_only_when_its_description_cannot_show_every_member_in_full() {
    let many: Vec<Decision> = (0..DESCRIBED_MEMBERS + 1)
        .map(|i| decision(i, "E1", "policy_violation", "low"))
        .collect();
    let p = plan(&pend(&many, 0), &BatchSettings::default(), 300_000);
    let list = p.records[0]
        .member_list
        .as_deref()
        .expect("one member more than the description shows");
    assert!(many.iter().all(|d| list.contains(&d.alert_id)));
    assert!(
        p.records[0].fields["description"]
            .as_str()
            .unwrap()
            .contains(MEMBER_LIST_FILE)
    );
    // two members, one of whose activity is longer than the description keeps
    let mut long = vec![
        decision(0, "E1", "policy_violation", "low"),
        decision(1, "E1", "policy_violation", "low"),
    ];
    long[1].summary.description = "x".repeat(DESCRIBED_ACTIVITY_CHARS + 1);
    let p = plan(&pend(&long, 0), &BatchSettings::default(), 300_000);
    let list = p.records[0]
        .member_list
        .as_deref()
        .expect("an activity cut short in the description");
    assert!(list.contains(&"x".repeat(DESCRIBED_ACTIVITY_CHARS + 1)));
}

#[test]
fn different_employees_types_and_windows_stay_apart() {
    let ds = [
        decision(1, "E1", "policy_violation", "low"),
        decision(2, "E2", "policy_violation", "low"),
        decision(3, "E1", "productivity", "low"),
    ];
    let p = plan(&pend(&ds, 0), &BatchSettings::default(), 300_000);
    assert_eq!(p.records.len(), 3);
    assert!(p.records.iter().all(|r| r.alert_ids.len() == 1));
    // a lone alert keeps its own correlation id and fields, exactly as realtime would send it
    let lone = p.records.iter().find(|r| r.alert_ids == ["b-0002"]).unwrap();
    assert_eq!(lone.fields, ds[1].fields);

    let same = [
        decision(1, "E1", "policy_violation", "low"),
        decision(2, "E1", "policy_violation", "low"),
    ];
    let pending = vec![
        Pending {
            decision: &same[0],
            received_at_ms: 299_999,
            alone: false,
        },
        Pending {
            decision: &same[1],
            received_at_ms: 300_000,
            alone: false,
        },
    ];
    assert_eq!(plan(&pending, &BatchSettings::default(), 300_000).records.len(), 2);
}

#[test]
fn aggregates_take_the_most_urgent_member_and_are_deterministic() {
    // security incidents: a table with impact and urgency
    let ds = [decision(1, "E1", "dlp", "low"), decision(2, "E1", "dlp", "medium")];
    let p1 = plan(&pend(&ds, 5), &BatchSettings::default(), 300_000);
    let r = &p1.records[0];
    assert_eq!(
        (r.fields["impact"].as_str(), r.fields["urgency"].as_str()),
        (Some("2"), Some("2"))
    );
    assert!(
        r.fields["short_description"]
            .as_str()
            .unwrap()
            .contains("(up to Medium)")
    );
    let reversed = [ds[1].clone(), ds[0].clone()];
    let p2 = plan(&pend(&reversed, 5), &BatchSettings::default(), 300_000);
    assert_eq!(p2.records[0].correlation_id, r.correlation_id);
    assert_eq!(p2.records[0].alert_ids, r.alert_ids);
}

#[test]
fn an_aggregate_is_named_by_its_whole_member_set() {
    let ds: Vec<Decision> = (0..4).map(|i| decision(i, "E1", "policy_violation", "low")).collect();
    let first = plan(&pend(&ds[..2], 10), &BatchSettings::default(), 300_000);
    let second = plan(&pend(&ds[2..], 20), &BatchSettings::default(), 300_000);
    assert_ne!(first.records[0].correlation_id, second.records[0].correlation_id);
    // the whole member set names the record: the same alerts give the same id, one more alert (joining
    // the group after an interrupted flush) a different one, so a lookup never finds a record that does not
    // list every member
    let same = plan(&pend(&ds[..2], 10), &BatchSettings::default(), 300_000);
    assert_eq!(same.records[0].correlation_id, first.records[0].correlation_id);
    let grown = plan(&pend(&ds[..3], 10), &BatchSettings::default(), 300_000);
    assert_ne!(grown.records[0].correlation_id, first.records[0].correlation_id);
}

#[test]
fn group_keys_are_configurable() {
    let ds = [
        decision(1, "E1", "policy_violation", "low"),
        decision(2, "E2", "policy_violation", "low"),
    ];
    let settings = BatchSettings {
        group_by: vec!["alert_type".into()],
        ..BatchSettings::default()
    };
    let p = plan(&pend(&ds, 0), &settings, 300_000);
    assert_eq!(p.records.len(), 1);
    assert!(
        !p.records[0].fields["short_description"]
            .as_str()
            .unwrap()
            .contains("for employee")
    );
}

#[test]
fn big_groups_split_and_requests_are_chunked() {
    let ds: Vec<Decision> = (0..500)
        .map(|i| decision(i, &format!("E{}", i % 50), "policy_violation", "low"))
        .collect();
    let settings = BatchSettings {
        max_alerts_per_record: 4,
        max_requests_per_batch: 20,
        ..BatchSettings::default()
    };
    let p = plan(&pend(&ds, 0), &settings, 300_000);
    // 50 employees × 10 alerts, at most 4 per record → 3 records each
    assert_eq!(p.records.len(), 150);
    assert!(p.records.iter().all(|r| r.alert_ids.len() <= 4));
    assert_eq!(p.records.iter().map(|r| r.alert_ids.len()).sum::<usize>(), 500);
    assert_eq!(p.chunks.len(), 8);
    assert!(p.chunks.iter().all(|c| c.len() <= 20));
    let mut seen: Vec<usize> = p.chunks.concat();
    seen.sort();
    assert_eq!(seen, (0..150).collect::<Vec<_>>());
    // every correlation id distinct
    let mut ids: Vec<_> = p.records.iter().map(|r| r.correlation_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 150);
}

#[test]
fn byte_limit_cuts_chunks() {
    let ds: Vec<Decision> = (0..10)
        .map(|i| decision(i, &format!("E{i}"), "policy_violation", "low"))
        .collect();
    let size = serde_json::to_vec(&ds[0].fields).unwrap().len();
    let settings = BatchSettings {
        max_batch_bytes: size * 3 + 10,
        ..BatchSettings::default()
    };
    let p = plan(&pend(&ds, 0), &settings, 300_000);
    assert!(p.chunks.iter().all(|c| c.len() <= 3), "{:?}", p.chunks);
    assert_eq!(p.chunks.concat().len(), 10);
}

fn long_decision(i: usize) -> Decision {
    let v = json!({
        "alert_id": format!("long-{i:04}-{}", "x".repeat(100)), "alert_type": "policy_violation",
        "severity": "low", "occurred_at": "2026-11-20T14:03:00Z",
        "employee": {"id": "E1", "department": "Sales"},
        "description": format!("activity {i} {}", "é".repeat(3980)), "risk_score": 20,
        "evidence_url": format!("https://monitor.example.com/a/{i}/{}", "p".repeat(1900))
    });
    Router::new(Config::default_config(), None)
        .unwrap()
        .route(&Alert::from_value(&v).unwrap())
}

#[test]
fn an_aggregate_description_fits_the_field_and_the_attachment_lists_every_member() {
    let ds: Vec<Decision> = (0..60).map(|i| decision(i, "E1", "policy_violation", "low")).collect();
    let p = plan(&pend(&ds, 0), &BatchSettings::default(), 300_000);
    assert_eq!(p.records.len(), 1);
    let r = &p.records[0];
    let desc = r.fields["description"].as_str().unwrap();
    assert!(
        desc.chars().count() <= MAX_DESCRIPTION_FIELD,
        "{}",
        desc.chars().count()
    );
    // the first members in full, every later one by id
    for i in 0..DESCRIBED_MEMBERS {
        assert!(desc.contains(&format!("activity number {i}")), "member {i} not in full");
    }
    assert!(!desc.contains(&format!("activity number {DESCRIBED_MEMBERS}")));
    for i in 0..60 {
        assert!(
            desc.contains(&format!("b-{i:04}")),
            "member {i} missing from the description"
        );
    }
    // the footer, then the dedupe marker (a policy exception keeps its key in the description)
    assert!(desc.ends_with(&format!(
        "(config {})\n\n[relay-key {}]",
        ds[0].config_hash, r.correlation_id
    )));
    let list = r.member_list.as_deref().unwrap();
    for i in 0..60 {
        assert!(list.contains(&format!("b-{i:04}")) && list.contains(&format!("activity number {i}")));
    }
    // a lone alert has no member list
    let lone = plan(&pend(&ds[..1], 0), &BatchSettings::default(), 300_000);
    assert_eq!(lone.records[0].member_list, None);
}

#[test]
fn huge_members_split_into_records_that_fit_a_queue_message() {
    let ds: Vec<Decision> = (0..100).map(long_decision).collect();
    let p = plan(&pend(&ds, 0), &BatchSettings::default(), 300_000);
    assert!(
        p.records.len() > 1,
        "100 members of ~6 KB each cannot travel in one message"
    );
    let mut seen: Vec<String> = Vec::new();
    for r in &p.records {
        let bytes = serde_json::to_vec(r).unwrap().len();
        assert!(bytes < 200 * 1024, "record of {bytes} bytes");
        let desc = r.fields["description"].as_str().unwrap();
        assert!(desc.chars().count() <= MAX_DESCRIPTION_FIELD);
        if r.alert_ids.len() > 1 {
            let list = r.member_list.as_deref().unwrap();
            assert!(r.alert_ids.iter().all(|id| list.contains(id.as_str())));
            // every member is named, or the ones that no longer fit are counted
            let named = r.alert_ids.iter().filter(|id| desc.contains(id.as_str())).count();
            let counted = format!(
                "… and {} more alerts: see the attached alerts.txt",
                r.alert_ids.len() - named
            );
            assert!(named == r.alert_ids.len() || desc.contains(&counted), "{desc}");
        }
        seen.extend(r.alert_ids.iter().cloned());
    }
    seen.sort();
    let mut want: Vec<String> = ds.iter().map(|d| d.alert_id.clone()).collect();
    want.sort();
    assert_eq!(seen, want, "every alert in exactly one record");
}

#[test]
fn an_aggregate_names_the_one_person_its_members_share_and_none_when_they_differ() {
    let ds: Vec<Decision> = (0..3).map(|i| decision(i, "E1", "productivity", "low")).collect();
    let person = ds[0].person.clone().expect("an HR case names its person");
    let plan1 = plan(&pend(&ds, 0), &BatchSettings::default(), 300_000);
    assert_eq!(plan1.records.len(), 1);
    assert_eq!(plan1.records[0].person.as_ref(), Some(&person), "the members' person");

    let lone = plan(&pend(&ds[..1], 0), &BatchSettings::default(), 300_000);
    assert_eq!(
        lone.records[0].person.as_ref(),
        Some(&person),
        "a lone alert's own person"
    );

    let mixed = [
        decision(1, "E1", "productivity", "low"),
        decision(2, "E2", "productivity", "low"),
    ];
    let settings = BatchSettings {
        group_by: vec!["alert_type".into()],
        ..BatchSettings::default()
    };
    let p = plan(&pend(&mixed, 0), &settings, 300_000);
    assert_eq!(p.records.len(), 1);
    assert_eq!(p.records[0].person, None, "two employees: no one person is named");
}

#[test]
fn an_alert_an_earlier_attempt_may_have_sent_alone_is_never_grouped() {
    let ds: Vec<Decision> = (0..4).map(|i| decision(i, "E1", "policy_violation", "low")).collect();
    let mut pending = pend(&ds, 1_000);
    pending[1].alone = true;
    let plan = plan(&pending, &BatchSettings::default(), 300_000);
    assert_eq!(plan.records.len(), 2, "{:?}", plan.records);
    let alone = plan.records.iter().find(|r| r.members == [1]).expect("its own record");
    assert_eq!(
        alone.correlation_id, ds[1].correlation_id,
        "under its own key, where a lookup finds it"
    );
    let group = plan.records.iter().find(|r| r.members.len() > 1).unwrap();
    assert_eq!(group.members, [0, 2, 3]);
}

#[test]
fn aggregate_keys_are_told_from_every_alert_key() {
    let hex = "0123456789abcdef0123456789abcdef01234567";
    assert!(is_aggregate_key(&format!("emon:b:{hex}")));
    for alert_id in ["b", "b:x", &format!("b:{hex}"), "h:1", "a-1"] {
        let key = crate::correlation_id("emon", alert_id);
        assert!(!is_aggregate_key(&key), "{alert_id} → {key}");
    }
    assert!(!is_aggregate_key(&format!("emon:b:{}", &hex[..39])));
}

#[test]
fn an_aggregate_joins_its_thread_with_a_note_that_fits() {
    let plan = |n: usize| {
        let mut config = crate::Config::default_config();
        config.threads.enabled = true;
        let router = crate::Router::new(config, None).unwrap();
        let decisions: Vec<Decision> = (0..n)
            .map(|i| {
                let v = serde_json::json!({
                    "alert_id": format!("agg-{i}"), "alert_type": "dlp", "severity": "low",
                    "occurred_at": "2026-11-20T14:03:00Z", "employee": {"id": "E1", "department": "Sales"},
                    "evidence_url": "https://monitor.example.com/a/1",
                    "description": "copied files", "risk_score": 40 + (i % 50) as u64,
                });
                router.route(&crate::alert::Alert::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap())
            })
            .collect();
        let pending: Vec<Pending<'_>> = decisions
            .iter()
            .map(|d| Pending {
                decision: d,
                received_at_ms: 1_000,
                alone: false,
            })
            .collect();
        let records = plan(&pending, &crate::config::BatchSettings::default(), 300_000).records;
        records
            .into_iter()
            .find(|r| r.members.len() == n)
            .expect("one aggregate")
    };
    let small = plan(3);
    let t = small.thread.expect("the members' thread");
    assert!(
        t.note.starts_with(&format!(
            "[relay-key {}] [relay-key emon:agg-0] [relay-risk 40:-]",
            small.correlation_id
        )),
        "{}",
        t.note
    );
    assert!(t.note.contains("3 more alerts of this thread, batched"), "{}", t.note);
    assert_eq!(t.risk, 42, "the peak");
    assert!(t.note.chars().count() <= MAX_DESCRIPTION_FIELD);
    // too many members to list even without summaries: batched as its own record
    assert!(plan(90).thread.is_none());
}
