//! Writing records, shared by every API that inserts: JSON body parsing, field normalisation, data
//! policies, priority, numbering and system fields.

use http::{StatusCode, header};
use serde_json::{Map, Value};

use super::Req;
use super::params::header_str;
use super::reply::{Reply, bad_request, error_reply};
use crate::store::{Fields, Shared, Store, format_glide_time, new_sys_id, priority};

pub fn require_json_body(req: &Req) -> Result<Map<String, Value>, Reply> {
    match header_str(&req.headers, &header::CONTENT_TYPE) {
        None => {
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

/// Normalise written fields: strings, schema filter, truncation, references; Err = 400 reply.
pub fn prepare_fields(
    shared: &Shared,
    table: &str,
    input: &Map<String, Value>,
    by_display: bool,
) -> Result<Fields, Reply> {
    let cfg = shared.table_config(table);
    let mut out = Fields::new();
    for (k, v) in input {
        if k.starts_with("sys_") || k == "number" || k == "priority" && cfg.is_some_and(|c| c.priority_matrix) {
            continue;
        }
        if let Some(fields) = cfg.and_then(|c| c.fields.as_ref())
            && !fields.contains(k)
        {
            continue;
        }
        let mut s = value_to_string(v);
        if let Some(max) = cfg.and_then(|c| c.max_lengths.get(k))
            && s.chars().count() > *max
        {
            s = s.chars().take(*max).collect();
        }
        if shared
            .config
            .reference_fields
            .get(k)
            .is_some_and(|t| t == "sys_user_group")
        {
            s = shared
                .resolve_group(k, &s, by_display)
                .map_err(|e| bad_request("Invalid reference", Some(&e.to_string())))?;
        }
        out.insert(k.clone(), s);
    }
    Ok(out)
}

pub fn data_policy_check(shared: &Shared, table: &str, row: &Fields) -> Result<(), Reply> {
    let Some(cfg) = shared.table_config(table) else {
        return Ok(());
    };
    let missing: Vec<&str> = cfg
        .mandatory
        .iter()
        .filter(|f| row.get(*f).is_none_or(|v| v.trim().is_empty()))
        .map(String::as_str)
        .collect();
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

pub fn apply_priority(shared: &Shared, table: &str, row: &mut Fields) {
    if shared.table_config(table).is_some_and(|c| c.priority_matrix) {
        let impact = row.get("impact").map(String::as_str).unwrap_or("3");
        let urgency = row.get("urgency").map(String::as_str).unwrap_or("3");
        let p = priority(impact, urgency).unwrap_or("5");
        row.insert("priority".into(), p.into());
    }
}

/// Insert into `table` as `user` (ACL, data policy, numbering). Returns the stored row.
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
    apply_priority(shared, table, &mut row);
    data_policy_check(shared, table, &row)?;
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
    data.insert(row.clone());
    Ok(row)
}
