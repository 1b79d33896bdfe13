//! The key contract checks against a real ServiceNow instance, to prove the simulator honest.
//!
//! Runs only when `SERVICENOW_INSTANCE_URL`, `SERVICENOW_USERNAME` and `SERVICENOW_PASSWORD` are set (a developer
//! instance and an integration user that may create/read/delete its own incidents). Set
//! `SERVICENOW_CLIENT_ID` and `SERVICENOW_CLIENT_SECRET` as well to check the OAuth password grant.
//! Every record created is deleted again (where the integration user may not delete, the test prints the
//! records to delete by hand).
//!
//! `every_routed_table_*` runs the same assertions against the simulator always and against the real
//! instance when it is configured: for every table the shipped routing config sends records to, the record
//! its profile fills is created, found again by its dedupe key (and only by that key), and deleted.
//!
//! `SERVICENOW_INSTANCE_URL=https://devNNNN.service-now.com SERVICENOW_USERNAME=... SERVICENOW_PASSWORD=... \
//!  cargo test -p servicenow-client --test real_instance -- --nocapture`

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use servicenow_client::{
    BatchItem, ClientConfig, Credentials, Expect, Outcome, RecordKey, ServiceNowClient, StaticCredentials,
};

struct Instance {
    url: String,
    username: String,
    password: String,
}

fn instance(test: &str) -> Option<Instance> {
    let (Ok(url), Ok(username), Ok(password)) = (
        std::env::var("SERVICENOW_INSTANCE_URL"),
        std::env::var("SERVICENOW_USERNAME"),
        std::env::var("SERVICENOW_PASSWORD"),
    ) else {
        println!(
            "skipped: SERVICENOW_INSTANCE_URL not set (also needs SERVICENOW_USERNAME, SERVICENOW_PASSWORD) [{test}]"
        );
        return None;
    };
    Some(Instance {
        url,
        username,
        password,
    })
}

fn client(url: &str, creds: Credentials) -> ServiceNowClient {
    ServiceNowClient::new(ClientConfig::new(url), Arc::new(StaticCredentials(creds)))
        .expect("valid SERVICENOW_INSTANCE_URL")
}

fn basic(i: &Instance) -> ServiceNowClient {
    client(
        &i.url,
        Credentials::Basic {
            username: i.username.clone(),
            password: i.password.clone().into(),
        },
    )
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("relay-contract-{prefix}-{nanos}")
}

fn incident(correlation_id: &str) -> Map<String, Value> {
    json!({
        "short_description": "alert-relay contract test (safe to delete)",
        "description": "Created by servicenow-client tests/real_instance.rs; deleted at the end of the test.",
        "impact": "3", "urgency": "3",
        "correlation_id": correlation_id,
    })
    .as_object()
    .unwrap()
    .clone()
}

#[tokio::test]
async fn create_lookup_attach_delete_round_trip() {
    let Some(i) = instance("create_lookup_attach_delete_round_trip") else {
        return;
    };
    let c = basic(&i);
    let corr = unique("create");
    let rec = match c.create_record("incident", &incident(&corr)).await {
        Outcome::Created(r) => r,
        other => panic!("create failed: {other}"),
    };
    assert!(rec.number.as_deref().unwrap_or_default().starts_with("INC"), "{rec:?}");
    assert_eq!(
        c.find_by_correlation_id("incident", &corr).await.unwrap(),
        Some(rec.clone())
    );
    let attachment = c
        .attach("incident", &rec.sys_id, "contract.txt", "text/plain", b"hello".to_vec())
        .await;
    assert!(attachment.is_ok(), "attach failed: {attachment:?}");
    c.delete_record("incident", &rec.sys_id).await.expect("delete");
    assert_eq!(c.find_by_correlation_id("incident", &corr).await.unwrap(), None);
    match c.delete_record("incident", &rec.sys_id).await {
        Err(Outcome::Permanent { status: 404, .. }) => {}
        other => panic!("second delete should be 404, got {other:?}"),
    }
}

#[tokio::test]
async fn errors_are_classified_like_the_simulator() {
    let Some(i) = instance("errors_are_classified_like_the_simulator") else {
        return;
    };
    let c = basic(&i);
    match c
        .create_record("relay_no_such_table", &incident(&unique("bad-table")))
        .await
    {
        Outcome::Permanent {
            status: 400, message, ..
        } => assert!(message.contains("Invalid table"), "{message}"),
        other => panic!("expected 400 Invalid table, got {other:?}"),
    }
    let wrong = client(
        &i.url,
        Credentials::Basic {
            username: i.username.clone(),
            password: "wrong-password".into(),
        },
    );
    assert_eq!(
        wrong
            .create_record("incident", &incident(&unique("auth")))
            .await
            .class(),
        "auth"
    );
    let attack = c
        .find_by_correlation_id("incident", "x^ORcorrelation_id!=x")
        .await
        .unwrap_err();
    assert_eq!(attack.class(), "permanent");
}

#[tokio::test]
async fn batch_creates_and_maps_items_back() {
    let Some(i) = instance("batch_creates_and_maps_items_back") else {
        return;
    };
    let c = basic(&i);
    let items: Vec<BatchItem> = (0..2)
        .map(|n| {
            let corr = unique(&format!("batch{n}"));
            BatchItem {
                id: corr.clone(),
                table: "incident".into(),
                fields: incident(&corr),
            }
        })
        .collect();
    let results = c.send_batch(&items).await.expect("batch");
    assert_eq!(results.len(), 2);
    for (id, outcome) in results {
        let Outcome::Created(rec) = outcome else {
            panic!("{id}: {outcome:?}")
        };
        assert_eq!(
            c.find_by_correlation_id("incident", &id)
                .await
                .unwrap()
                .map(|r| r.sys_id),
            Some(rec.sys_id.clone())
        );
        c.delete_record("incident", &rec.sys_id).await.expect("cleanup");
    }
}

#[tokio::test]
async fn oauth_password_grant_creates() {
    let Some(i) = instance("oauth_password_grant_creates") else {
        return;
    };
    let (Ok(client_id), Ok(client_secret)) = (
        std::env::var("SERVICENOW_CLIENT_ID"),
        std::env::var("SERVICENOW_CLIENT_SECRET"),
    ) else {
        println!("skipped: SERVICENOW_CLIENT_ID/SERVICENOW_CLIENT_SECRET not set [oauth_password_grant_creates]");
        return;
    };
    let c = client(
        &i.url,
        Credentials::OAuthPassword {
            client_id,
            client_secret: client_secret.into(),
            username: i.username.clone(),
            password: i.password.clone().into(),
        },
    );
    let corr = unique("oauth");
    let Outcome::Created(rec) = c.create_record("incident", &incident(&corr)).await else {
        panic!("oauth create failed")
    };
    c.delete_record("incident", &rec.sys_id).await.expect("cleanup");
}

/// The lookup a retry runs for `key` on a table with `profile`.
fn key_of<'a>(profile: &'a relay_core::Profile, key: &'a str) -> RecordKey<'a> {
    RecordKey {
        field: &profile.dedupe.field,
        value: key,
        expect: match profile.dedupe.matching {
            relay_core::DedupeMatch::Equals => Expect::Equals,
            relay_core::DedupeMatch::Contains => Expect::Contains(relay_core::Dedupe::marker(key)),
        },
    }
}

/// For every routed table of the shipped config: create the record its profile fills (the person fields
/// naming `username`'s sys_user), find it again by its key — and never by another key, the retry lookup
/// that must not take a foreign row for ours — then delete it. Returns the records left to delete by hand
/// (the integration user may not delete).
async fn every_routed_table_round_trips(c: &ServiceNowClient, username: &str) -> Vec<String> {
    let config = relay_core::Config::default_config();
    let me = c.find_user("user_name", username).await.expect("sys_user lookup");
    let now_unix = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()) as i64;
    let mut left = Vec::new();
    let targets = config.routed_targets();
    assert!(targets.len() >= 5, "the shipped config routes to {targets:?}");
    for (record_type, table) in targets {
        if record_type == relay_core::RecordType::ItomEvent {
            continue; // Event Management records are de-duplicated by message_key, not looked up
        }
        let profile = config.profile_for(record_type, &table);
        let key = unique(&format!("table-{table}"));
        let mut fields = profile.probe_fields(&key, now_unix);
        if let Some(me) = &me {
            for f in &profile.person_fields {
                fields.insert(f.clone(), me.clone().into());
            }
        }
        let rec = match c.create_record(&table, &fields).await {
            Outcome::Created(r) => r,
            other => panic!("{table}: the record its profile fills is refused: {other}"),
        };
        assert_eq!(rec.table, table);
        assert!(rec.link.contains(&rec.sys_id), "{table}: {rec:?}");
        let found = c.find_by_key(&table, &key_of(profile, &key)).await;
        assert_eq!(
            found.as_ref().ok().and_then(|f| f.as_ref()).map(|f| f.sys_id.clone()),
            Some(rec.sys_id.clone()),
            "{table}: found again by {}: {found:?}",
            profile.dedupe.field
        );
        let other = unique(&format!("other-{table}"));
        assert_eq!(
            c.find_by_key(&table, &key_of(profile, &other)).await.expect("lookup"),
            None,
            "{table}: a lookup by another key must find nothing, never an existing row"
        );
        let mut made = vec![rec.sys_id.clone()];
        if let Some(second) = lifecycle_round_trip(c, &table, profile, &rec.sys_id, &fields).await {
            made.push(second);
        }
        for sys_id in made {
            match c.delete_record(&table, &sys_id).await {
                Ok(()) => {}
                Err(Outcome::Permanent { status: 403, .. }) => left.push(format!("{table} {sys_id}")),
                Err(o) => panic!("{table}: delete failed: {o}"),
            }
        }
    }
    left
}

/// The profile's lifecycle on the record `sys_id` (created with `fields`): a note written to its journal
/// field and read back from the journal, the record resolved as the profile resolves it (the state model's
/// close fields accepted, the state read back) and reopened where the profile says it can be; then a
/// second record closed as a false positive. Returns the second record's sys_id.
/// Take a record through `t` as the relay does: from its current state, one update per step.
async fn walk(c: &ServiceNowClient, table: &str, sys_id: &str, t: &relay_core::Transition, notes: &str) {
    let rows = c.read_records(table, &[sys_id], &["state"]).await.expect("state read");
    let current = rows
        .first()
        .and_then(|r| r.get("state"))
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    for fields in t.writes_from(&current, notes) {
        c.update_record(table, sys_id, &fields)
            .await
            .unwrap_or_else(|o| panic!("{table}: {fields:?} from {current} is refused: {o}"));
    }
}

async fn lifecycle_round_trip(
    c: &ServiceNowClient,
    table: &str,
    profile: &relay_core::Profile,
    sys_id: &str,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Option<String> {
    let life = &profile.lifecycle;
    if let Some(journal) = &life.journal {
        let note = format!("[Alert Relay connection test] note {}", unique("note"));
        c.add_journal_entry(table, sys_id, journal, &note)
            .await
            .unwrap_or_else(|o| panic!("{table}: a note to {journal} is refused: {o}"));
        let entries = c.journal(table, sys_id, journal).await.expect("journal read");
        assert!(
            entries.iter().any(|e| e.value == note),
            "{table}: the note is not read back from sys_journal_field (does the user hold audit_viewer?): {entries:?}"
        );
    }
    let state_of = |rows: Vec<serde_json::Map<String, serde_json::Value>>| {
        rows.first()
            .and_then(|r| r.get("state"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    if let Some(resolve) = &life.resolve {
        walk(c, table, sys_id, resolve, "resolved by the connection test").await;
        let rows = c.read_records(table, &[sys_id], &["state"]).await.expect("read back");
        assert_eq!(state_of(rows), Some(resolve.state.clone()), "{table}: resolved state");
        if let Some(reopen) = life.reopen_state.as_deref().filter(|_| life.can_reopen(&resolve.state)) {
            let mut back = serde_json::Map::new();
            back.insert("state".into(), reopen.into());
            c.update_record(table, sys_id, &back)
                .await
                .unwrap_or_else(|o| panic!("{table}: reopening to {reopen} is refused: {o}"));
            let rows = c
                .read_records(table, &[sys_id], &["state", "active"])
                .await
                .expect("read back");
            assert_eq!(state_of(rows), Some(reopen.to_string()), "{table}: reopened state");
        }
    }
    let fp = life.false_positive.as_ref()?;
    let second = match c.create_record(table, fields).await {
        Outcome::Created(r) => r.sys_id,
        other => panic!("{table}: second record refused: {other}"),
    };
    walk(
        c,
        table,
        &second,
        fp,
        "dismissed as a false positive by the connection test",
    )
    .await;
    let rows = c
        .read_records(table, &[second.as_str()], &["state"])
        .await
        .expect("read back");
    assert_eq!(state_of(rows), Some(fp.state.clone()), "{table}: false-positive state");
    Some(second)
}

#[tokio::test]
async fn every_routed_table_round_trips_on_the_simulator() {
    let sim = servicenow_sim::Simulator::start(servicenow_sim::SimConfig::default())
        .await
        .unwrap();
    let c = client(
        &sim.base_url(),
        Credentials::Basic {
            username: "relay".into(),
            password: "relay-password".into(),
        },
    );
    let left = every_routed_table_round_trips(&c, "relay").await;
    // the simulator keeps delete for admins, as an instance's ACLs do: every record is left, and listed
    for entry in &left {
        let (table, sys_id) = entry.split_once(' ').unwrap();
        assert!(sim.records(table).iter().any(|r| r["sys_id"] == sys_id), "{entry}");
    }
}

#[tokio::test]
async fn every_routed_table_round_trips_on_the_instance() {
    let Some(i) = instance("every_routed_table_round_trips_on_the_instance") else {
        return;
    };
    let left = every_routed_table_round_trips(&basic(&i), &i.username).await;
    for entry in left {
        println!("the integration user may not delete: delete by hand: {entry}");
    }
}

/// Each profile's lifecycle agrees with the simulator's model of its table: every state it names is one of
/// the table's state choices, its final states are the table's final states, its journal is a journal field
/// of the table, each transition sends every field the table's rule makes mandatory in that state, and every
/// move it makes from a new record (its table's default state, through the transition's `via`) is one the
/// table's state flow declares.
#[test]
fn every_profile_lifecycle_agrees_with_the_simulators_state_model() {
    let config = relay_core::Config::default_config();
    let tables = servicenow_sim::SimConfig::default().resolved_tables().unwrap();
    let mut checked = 0;
    let mut refused: Vec<String> = Vec::new();
    for profile in config.profiles.values() {
        let life = &profile.lifecycle;
        let Some(t) = tables.iter().find(|t| t.name == profile.table) else {
            panic!("{}: table {} is not in the simulator", profile.name, profile.table);
        };
        if life == &relay_core::Lifecycle::default() {
            continue;
        }
        checked += 1;
        let name = &profile.name;
        if let Some(j) = &life.journal {
            assert!(
                t.journal_fields.contains(j),
                "{name}: {j} is no journal field of {}",
                t.name
            );
        }
        let choices = t.choices.get("state");
        let mut named: Vec<&String> = life.done_states.iter().collect();
        named.extend(life.reopen_state.as_ref());
        named.extend(
            life.resolve
                .iter()
                .chain(life.false_positive.iter())
                .map(|tr| &tr.state),
        );
        for state in named {
            assert!(
                choices.is_some_and(|c| c.contains_key(state)),
                "{name}: state {state} is not a state of {}",
                t.name
            );
        }
        let mut sim_final: Vec<&String> = t
            .state_rules
            .iter()
            .filter(|r| r.is_final)
            .flat_map(|r| r.states.iter())
            .collect();
        let mut profile_final: Vec<&String> = life.final_states.iter().collect();
        sim_final.sort();
        profile_final.sort();
        assert_eq!(profile_final, sim_final, "{name}: final states");
        for tr in life.resolve.iter().chain(life.false_positive.iter()) {
            let sent = tr.fields_with("notes");
            for rule in t.state_rules.iter().filter(|r| r.states.contains(&tr.state)) {
                for m in &rule.mandatory {
                    assert!(sent.contains_key(m), "{name}: moving to {} needs {m}", tr.state);
                }
            }
        }
        // the moves: a new record (the table's default state) resolved or dismissed, a resolved one reopened
        let Some(initial) = t.defaults.get("state") else {
            continue;
        };
        assert!(
            t.initial_state_allowed(initial),
            "{name}: a new {} record starts in {initial}",
            t.name
        );
        let label = |s: &str| choices.and_then(|c| c.get(s)).cloned().unwrap_or_else(|| s.to_string());
        let path = |from: &str, t: &relay_core::Transition| -> Vec<String> {
            let mut p = vec![from.to_string()];
            p.extend(t.via.iter().cloned());
            p.push(t.state.clone());
            p
        };
        let mut paths: Vec<(&str, Vec<String>)> = Vec::new();
        if let Some(r) = &life.resolve {
            paths.push(("resolve", path(initial, r)));
            if let Some(back) = life.reopen_state.as_deref().filter(|_| life.can_reopen(&r.state)) {
                paths.push(("reopen", vec![r.state.clone(), back.to_string()]));
            }
        }
        if let Some(fp) = &life.false_positive {
            paths.push(("false_positive", path(initial, fp)));
        }
        for (what, p) in &paths {
            for pair in p.windows(2) {
                if pair[0] != pair[1] && !t.transition_allowed(&pair[0], &pair[1]) {
                    refused.push(format!("{name} {what}: {} → {}", label(&pair[0]), label(&pair[1])));
                }
            }
        }
    }
    assert!(checked >= 7, "{checked} profiles with a lifecycle");
    refused.sort();
    assert!(
        refused.is_empty(),
        "profile moves the simulator's state flows refuse: {refused:#?}"
    );
}
