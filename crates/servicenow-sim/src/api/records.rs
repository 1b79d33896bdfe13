//! Writing records, shared by every API that inserts: JSON body parsing, field normalisation, data
//! policies, priority, numbering and system fields.

use http::{StatusCode, header};
use serde_json::{Map, Value};

use super::Req;
use super::params::header_str;
use super::reply::{Reply, bad_request, error_reply};
use crate::config::{FormRulePolicy, PriorityRule, QualifierPolicy};
use crate::store::{Fields, Shared, Store, format_glide_time, new_sys_id, priority};

pub fn require_json_body(shared: &Shared, req: &Req) -> Result<Map<String, Value>, Reply> {
    match header_str(&req.headers, &header::CONTENT_TYPE) {
        None if shared.config.require_content_type_header => {
            return Err(bad_request(
                "Missing Content-Type header",
                Some("Set Content-Type: application/json"),
            ));
        }
        Some(c) if !c.contains("json") => {
            return Err(error_reply(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Media Type",
                Some(&format!("Content-Type {c} is not supported")),
            ));
        }
        _ => {}
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad_request(
            "Exception while reading request",
            Some("The payload is not a JSON object."),
        )),
        Err(e) => Err(bad_request(
            "Exception while reading request",
            Some(&format!("The payload is not valid JSON: {e}")),
        )),
    }
}

pub fn value_to_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Object(o) => o.get("value").map(value_to_string).unwrap_or_else(|| v.to_string()),
        other => other.to_string(),
    }
}

/// Normalise written fields: strings, dictionary filter (fields the table lacks are dropped silently),
/// truncation, references; Err = 400 reply.
pub fn prepare_fields(
    shared: &Shared,
    store: &Store,
    table: &str,
    input: &Map<String, Value>,
    by_display: bool,
) -> Result<Fields, Reply> {
    let cfg = shared.table_config(table);
    let computed_priority = cfg.is_some_and(|c| c.priority != PriorityRule::Field);
    let mut out = Fields::new();
    for (k, v) in input {
        if k.starts_with("sys_") || k == "number" || k == "priority" && computed_priority {
            continue;
        }
        if cfg.is_some_and(|c| !c.has_field(k)) {
            continue;
        }
        let mut s = value_to_string(v);
        if let Some(max) = cfg.and_then(|c| c.max_lengths.get(k))
            && s.chars().count() > *max
        {
            s = s.chars().take(*max).collect();
        }
        if let Some(target) = cfg.and_then(|c| c.references.get(k)) {
            s = shared
                .resolve_reference(store, target, k, &s, by_display)
                .map_err(|e| bad_request("Invalid reference", Some(&e.to_string())))?;
            if let Some(q) = cfg.and_then(|c| c.reference_qualifiers.get(k))
                && !s.is_empty()
                && !shared.referenced(store, target, &s).is_some_and(|row| q.admits(row))
            {
                match shared.config.qualified_reference {
                    QualifierPolicy::Blank => s.clear(),
                    QualifierPolicy::Ignore => {}
                    QualifierPolicy::Reject => {
                        return Err(bad_request(
                            "Invalid reference",
                            Some(&format!(
                                "{k}: the {target} record {s} is outside the field's reference qualifier ({} contains {})",
                                q.field, q.contains
                            )),
                        ));
                    }
                }
            }
        }
        out.insert(k.clone(), s);
    }
    Ok(out)
}

pub fn data_policy_check(shared: &Shared, table: &str, row: &Fields) -> Result<(), Reply> {
    let Some(cfg) = shared.table_config(table) else {
        return Ok(());
    };
    let empty = |f: &str| row.get(f).is_none_or(|v| v.trim().is_empty());
    let mut missing: Vec<String> = cfg.mandatory.iter().filter(|f| empty(f)).cloned().collect();
    for any in &cfg.mandatory_any {
        if !any.is_empty() && any.iter().all(|f| empty(f)) {
            missing.push(any.join(" or "));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(error_reply(
        StatusCode::FORBIDDEN,
        "Operation Failed",
        Some(&format!(
            "Data Policy Exception: \n\tThe following fields are mandatory: {}",
            missing.join(", ")
        )),
    ))
}

/// The table's date rules on the record to be written: Err = 403 with the rule's message (unless the
/// instance applies them on the form only).
pub fn date_rule_check(shared: &Shared, table: &str, row: &Fields) -> Result<(), Reply> {
    let Some(cfg) = shared.table_config(table) else {
        return Ok(());
    };
    if shared.config.date_rules_on_api == FormRulePolicy::Ignore {
        return Ok(());
    }
    let date = |f: &str| {
        row.get(f)
            .map(|v| v.trim().chars().take(10).collect::<String>())
            .filter(|v| !v.is_empty())
    };
    let today = shared.now().date().to_string();
    for rule in &cfg.date_rules {
        let Some(value) = date(&rule.field) else {
            continue;
        };
        let before_other = rule.after.as_deref().and_then(date).is_some_and(|other| value <= other);
        if before_other || (rule.not_past && value < today) {
            return Err(error_reply(
                StatusCode::FORBIDDEN,
                "Operation Failed",
                Some(&format!("{}: {value}", rule.message)),
            ));
        }
    }
    Ok(())
}

/// Computed fields: priority by the table's rule, and empty fields filled from a referenced record.
pub fn apply_computed(shared: &Shared, store: &Store, table: &str, row: &mut Fields) {
    let Some(cfg) = shared.table_config(table) else {
        return;
    };
    let from = |row: &Fields, reference: &str, field: &str| -> Option<String> {
        let target = cfg.references.get(reference)?;
        let id = row.get(reference)?;
        shared.referenced(store, target, id)?.get(field).cloned()
    };
    for (field, source) in &cfg.fill_from_reference {
        if row.get(field).is_none_or(|v| v.is_empty())
            && let Some(v) = from(row, &source.reference, &source.field)
        {
            row.insert(field.clone(), v);
        }
    }
    match &cfg.priority {
        PriorityRule::Field => {}
        PriorityRule::Lookup => {
            let impact = row.get("impact").map(String::as_str).unwrap_or("3");
            let urgency = row.get("urgency").map(String::as_str).unwrap_or("3");
            let p = priority(impact, urgency).unwrap_or("5");
            row.insert("priority".into(), p.into());
        }
        PriorityRule::FromReference { reference, field } => {
            let p = from(row, reference, field)
                .filter(|p| !p.is_empty())
                .or_else(|| cfg.defaults.get("priority").cloned())
                .unwrap_or_else(|| "4".into());
            row.insert("priority".into(), p);
        }
    }
}

/// Insert into `table` as `user` (initial state, state rules, data policy, numbering, computed fields). Returns
/// the stored row.
pub fn insert_record(
    shared: &Shared,
    store: &mut Store,
    table: &str,
    user: &str,
    mut row: Fields,
) -> Result<Fields, Reply> {
    let cfg = shared.table_config(table);
    if let Some(cfg) = cfg {
        for (k, v) in &cfg.defaults {
            row.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    initial_state_check(shared, table, &row, user)?;
    state_rule_apply(shared, store, table, None, &mut row, user)?;
    apply_computed(shared, store, table, &mut row);
    data_policy_check(shared, table, &row)?;
    date_rule_check(shared, table, &row)?;
    let now = format_glide_time(shared.now());
    let data = store.tables.entry(table.to_string()).or_default();
    if let Some(prefix) = cfg.and_then(|c| c.prefix.as_ref()) {
        data.counter += 1;
        row.insert("number".into(), format!("{prefix}{:07}", data.counter));
    }
    row.insert("sys_id".into(), new_sys_id());
    row.insert("sys_created_on".into(), now.clone());
    row.insert("sys_created_by".into(), user.to_string());
    row.insert("sys_updated_on".into(), now);
    row.insert("sys_updated_by".into(), user.to_string());
    row.insert("sys_mod_count".into(), "0".into());
    row.insert("sys_class_name".into(), table.to_string());
    let notes = take_journal(shared, table, &mut row);
    data.insert(row.clone());
    let sys_id = row.get("sys_id").cloned().unwrap_or_default();
    append_journal(shared, store, table, &sys_id, user, notes);
    Ok(row)
}

/// Update the record `sys_id` of `table` as `user` with the written `input` (the caller checked the write
/// ACL): fields normalised, final states, state flow, state rules, computed fields, data policy, date rules,
/// system fields, journal entries. Returns the stored row; Err = the error reply, nothing written.
pub fn update_record(
    shared: &Shared,
    store: &mut Store,
    table: &str,
    sys_id: &str,
    user: &str,
    input: &Map<String, Value>,
    by_display: bool,
) -> Result<Fields, Reply> {
    let changes = prepare_fields(shared, store, table, input, by_display)?;
    apply_update(shared, store, table, sys_id, user, changes)
}

/// [`update_record`] with the written fields already normalised (an import set's transform updating the
/// row its coalesce field found).
pub fn apply_update(
    shared: &Shared,
    store: &mut Store,
    table: &str,
    sys_id: &str,
    user: &str,
    changes: Fields,
) -> Result<Fields, Reply> {
    let Some(existing) = store.tables.get(table).and_then(|d| d.get(sys_id)).cloned() else {
        return Err(super::reply::not_found());
    };
    final_state_check(shared, table, &existing, user)?;
    let mut updated = existing.clone();
    updated.extend(changes);
    state_transition_check(shared, table, &existing, &updated, user)?;
    state_rule_apply(shared, store, table, existing.get("state"), &mut updated, user)?;
    apply_computed(shared, store, table, &mut updated);
    data_policy_check(shared, table, &updated)?;
    date_rule_check(shared, table, &updated)?;
    let now = format_glide_time(shared.now());
    let count: u64 = updated.get("sys_mod_count").and_then(|c| c.parse().ok()).unwrap_or(0);
    updated.insert("sys_mod_count".into(), (count + 1).to_string());
    updated.insert("sys_updated_on".into(), now);
    updated.insert("sys_updated_by".into(), user.to_string());
    let notes = take_journal(shared, table, &mut updated);
    if let Some(row) = store.tables.get_mut(table).and_then(|d| d.get_mut(sys_id)) {
        *row = updated.clone();
    }
    append_journal(shared, store, table, sys_id, user, notes);
    Ok(updated)
}

/// The state model on a write that sets `state` (an insert, or an update changing it): the mandatory fields
/// of the new state's rule (403 "Data Policy Exception" unless `state_rules_on_api` is `ignore`), then
/// `active` and the `on_enter` fields.
pub fn state_rule_apply(
    shared: &Shared,
    store: &Store,
    table: &str,
    before: Option<&String>,
    row: &mut Fields,
    user: &str,
) -> Result<(), Reply> {
    let Some(cfg) = shared.table_config(table) else {
        return Ok(());
    };
    let Some(state) = row.get("state").cloned() else {
        return Ok(());
    };
    let Some(rule) = cfg.state_rules.iter().find(|r| r.states.contains(&state)) else {
        return Ok(());
    };
    // a data policy holds on every write while its condition does, not only on the one entering the state
    let empty = |f: &str| row.get(f).is_none_or(|v| v.trim().is_empty());
    let missing: Vec<&str> = rule.mandatory.iter().map(String::as_str).filter(|f| empty(f)).collect();
    if !missing.is_empty() && shared.config.state_rules_on_api == FormRulePolicy::Reject {
        let label = state_label(cfg, &state);
        return Err(error_reply(
            StatusCode::FORBIDDEN,
            "Operation Failed",
            Some(&format!(
                "Data Policy Exception: \n\tThe following fields are mandatory when the state is {label}: {}",
                missing.join(", ")
            )),
        ));
    }
    if before == Some(&state) {
        return Ok(());
    }
    if let Some(active) = rule.active
        && cfg.has_field("active")
    {
        row.insert("active".into(), active.to_string());
    }
    for (field, value) in rule.on_enter.iter().filter(|(f, _)| cfg.has_field(f)) {
        let v = match value.as_str() {
            "$now" => format_glide_time(shared.now()),
            // a reference to sys_user holds the user's sys_id (every user who can log in has a row)
            "$user" if cfg.references.get(field).is_some_and(|t| t == "sys_user") => store
                .tables
                .get("sys_user")
                .and_then(|d| d.rows.iter().find(|r| r.get("user_name").is_some_and(|n| n == user)))
                .and_then(|r| r.get("sys_id").cloned())
                .unwrap_or_default(),
            "$user" => user.to_string(),
            literal => literal.to_string(),
        };
        row.insert(field.clone(), v);
    }
    Ok(())
}

/// A record in a final state (a closed incident) is updated by admin only, unless `final_state_writes` is
/// `ignore`: 403 naming the record and its state.
fn final_state_check(shared: &Shared, table: &str, row: &Fields, user: &str) -> Result<(), Reply> {
    let Some(cfg) = shared.table_config(table) else {
        return Ok(());
    };
    let Some(state) = row.get("state") else {
        return Ok(());
    };
    let is_final = cfg.state_rules.iter().any(|r| r.is_final && r.states.contains(state));
    if !is_final || shared.is_admin(user) || shared.config.final_state_writes == FormRulePolicy::Ignore {
        return Ok(());
    }
    let label = state_label(cfg, state);
    let name = row
        .get("number")
        .or_else(|| row.get("sys_id"))
        .cloned()
        .unwrap_or_default();
    Err(error_reply(
        StatusCode::FORBIDDEN,
        "Operation Failed",
        Some(&format!(
            "{table} {name} is {label}: a record in a final state cannot be updated or reopened"
        )),
    ))
}

/// A non-admin update that moves the record along a move its table's state flow does not declare
/// (`state_transitions`) is refused, unless `state_transition_writes` is `ignore`: 403 naming the move and the
/// moves the record has. Setting the same state again is no move. Admin passes, as with final states
/// (setup-assistant-reference: an administrator "can correct the security incident or task to valid states").
fn state_transition_check(
    shared: &Shared,
    table: &str,
    before: &Fields,
    after: &Fields,
    user: &str,
) -> Result<(), Reply> {
    let Some(cfg) = shared.table_config(table) else {
        return Ok(());
    };
    let Some(to) = after.get("state") else {
        return Ok(());
    };
    let Some(from) = before.get("state") else {
        // a record that had no state takes one as an insert would
        return initial_state_check(shared, table, after, user);
    };
    if cfg.transition_allowed(from, to)
        || shared.is_admin(user)
        || shared.config.state_transition_writes == FormRulePolicy::Ignore
    {
        return Ok(());
    }
    let next: Vec<&str> = cfg.next_states(from).iter().map(|s| state_label(cfg, s)).collect();
    let next = if next.is_empty() {
        "no other state".to_string()
    } else {
        next.join(", ")
    };
    let name = before
        .get("number")
        .or_else(|| before.get("sys_id"))
        .cloned()
        .unwrap_or_default();
    let from = state_label(cfg, from);
    Err(error_reply(
        StatusCode::FORBIDDEN,
        "Operation Failed",
        Some(&format!(
            "Invalid state transition from {from} to {}: {table} {name} in {from} may move to {next}",
            state_label(cfg, to)
        )),
    ))
}

/// A non-admin insert in a state outside the table's `initial_states` is refused, unless
/// `initial_state_inserts` is `ignore`: 403 naming the state and the states a new record starts in.
fn initial_state_check(shared: &Shared, table: &str, row: &Fields, user: &str) -> Result<(), Reply> {
    let Some(cfg) = shared.table_config(table) else {
        return Ok(());
    };
    let Some(state) = row.get("state") else {
        return Ok(());
    };
    if cfg.initial_state_allowed(state)
        || shared.is_admin(user)
        || shared.config.initial_state_inserts == FormRulePolicy::Ignore
    {
        return Ok(());
    }
    let starts: Vec<&str> = cfg.initial_states.iter().map(|s| state_label(cfg, s)).collect();
    Err(error_reply(
        StatusCode::FORBIDDEN,
        "Operation Failed",
        Some(&format!(
            "Invalid initial state {}: a new {table} record starts in {}",
            state_label(cfg, state),
            starts.join(" or ")
        )),
    ))
}

/// The label of a state value (its choice), else the value.
fn state_label<'a>(cfg: &'a crate::config::TableConfig, state: &'a str) -> &'a str {
    cfg.choices
        .get("state")
        .and_then(|c| c.get(state))
        .map(String::as_str)
        .unwrap_or(state)
}

/// Take the journal fields out of a row about to be stored: the non-empty ones, in field order.
fn take_journal(shared: &Shared, table: &str, row: &mut Fields) -> Vec<(String, String)> {
    let Some(cfg) = shared.table_config(table) else {
        return Vec::new();
    };
    cfg.journal_fields
        .iter()
        .filter_map(|f| row.remove(f).filter(|v| !v.trim().is_empty()).map(|v| (f.clone(), v)))
        .collect()
}

/// Append journal entries of the record `sys_id` of `table` to `sys_journal_field`.
fn append_journal(
    shared: &Shared,
    store: &mut Store,
    table: &str,
    sys_id: &str,
    user: &str,
    notes: Vec<(String, String)>,
) {
    if notes.is_empty() {
        return;
    }
    let now = format_glide_time(shared.now());
    let journal = store.tables.entry(JOURNAL_TABLE.to_string()).or_default();
    for (element, value) in notes {
        let mut entry = Fields::new();
        entry.insert("sys_id".into(), new_sys_id());
        entry.insert("element".into(), element);
        entry.insert("element_id".into(), sys_id.to_string());
        entry.insert("name".into(), table.to_string());
        entry.insert("value".into(), value);
        entry.insert("sys_created_on".into(), now.clone());
        entry.insert("sys_created_by".into(), user.to_string());
        journal.insert(entry);
    }
}

/// Where journal entries live.
pub const JOURNAL_TABLE: &str = "sys_journal_field";
