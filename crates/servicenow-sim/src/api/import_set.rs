//! Import Set API: `POST /api/now/import/{staging}[/insertMultiple]`, the transform map and coalescing.

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::Req;
use super::params::{Params, base_url};
use super::records::{apply_update, insert_record, prepare_fields, require_json_body, value_to_string};
use super::reply::{Reply, acl_denied, bad_request, json_reply};
use crate::config::ImportSetConfig;
use crate::store::{Fields, Shared, Store, new_sys_id};

pub fn load(shared: &Shared, req: &Req, user: &str, staging: &str, multiple: bool) -> Reply {
    let Some(set) = shared.config.import_sets.iter().find(|s| s.staging_table == staging) else {
        return bad_request(&format!("Invalid table {staging}"), None);
    };
    if !(shared.is_admin(user) || shared.roles_of(user).iter().any(|r| set.roles.contains(r))) {
        return acl_denied("Insert");
    }
    let body = match require_json_body(shared, req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let rows: Vec<Map<String, Value>> = if multiple {
        match body.get("records").and_then(Value::as_array) {
            Some(records) => records.iter().filter_map(|r| r.as_object().cloned()).collect(),
            None => return bad_request("Invalid request", Some("records is missing or not an array")),
        }
    } else {
        vec![body]
    };
    let params = Params::parse(req.query.as_bytes());
    let by_display = params.flag("sysparm_input_display_value");
    let base = base_url(req);
    let mut store = shared.store.lock().expect("store lock");
    store.import_set_counter += 1;
    let iset = format!("ISET{:07}", store.import_set_counter + 10000);
    let mut results = Vec::new();
    for staged in rows {
        // Staging-table columns are `u_`-prefixed; a column the staging table lacks is ignored. The staging
        // row itself is kept, as on an instance.
        let columns: Vec<(&String, &Value)> = staged
            .iter()
            .filter(|(k, _)| k.starts_with("u_") || set.field_map.contains_key(*k))
            .collect();
        let staging_row: Fields = columns
            .iter()
            .map(|(k, v)| ((*k).clone(), value_to_string(v)))
            .collect();
        let _ = insert_record(shared, &mut store, staging, user, staging_row.clone());
        let mut mapped = Map::new();
        for (k, v) in columns {
            let target = set
                .field_map
                .get(k)
                .cloned()
                .unwrap_or_else(|| k.strip_prefix("u_").unwrap_or(k).to_string());
            mapped.insert(target, v.clone());
        }
        let result = transform_row(shared, &mut store, set, user, &mapped, by_display, &base);
        results.push(result);
    }
    drop(store);
    let mut out = json!({"import_set": iset, "staging_table": staging, "result": results});
    if multiple {
        out["import_set_id"] = Value::String(iset.clone());
        out["multi_import_set_id"] = Value::String(new_sys_id());
    }
    json_reply(StatusCode::CREATED, &out)
}

fn transform_row(
    shared: &Shared,
    store: &mut Store,
    set: &ImportSetConfig,
    user: &str,
    mapped: &Map<String, Value>,
    by_display: bool,
    base: &str,
) -> Value {
    let table = set.target_table.as_str();
    let error = |message: String| json!({"transform_map": set.transform_map, "table": table, "status": "error", "error_message": message});
    let fields = match prepare_fields(shared, store, table, mapped, by_display) {
        Ok(f) => f,
        Err(reply) => return error(reply_detail(&reply)),
    };
    let key = set
        .coalesce_field
        .as_ref()
        .and_then(|f| fields.get(f).filter(|v| !v.is_empty()).map(|v| (f, v.clone())));
    let existing = key.and_then(|(f, v)| {
        store
            .tables
            .get(table)?
            .rows
            .iter()
            .find(|r| r.get(f) == Some(&v))
            .and_then(|r| r.get("sys_id").cloned())
    });
    let (status, row) = match existing {
        Some(sys_id) => match apply_update(shared, store, table, &sys_id, user, fields) {
            Ok(row) => ("updated", row),
            Err(reply) => return error(reply_detail(&reply)),
        },
        None => match insert_record(shared, store, table, user, fields) {
            Ok(row) => ("inserted", row),
            Err(reply) => return error(reply_detail(&reply)),
        },
    };
    let sys_id = row.get("sys_id").cloned().unwrap_or_default();
    json!({
        "transform_map": set.transform_map,
        "table": table,
        "display_name": "number",
        "display_value": row.get("number").cloned().unwrap_or_default(),
        "record_link": format!("{base}/api/now/table/{table}/{sys_id}"),
        "status": status,
        "sys_id": sys_id,
    })
}

fn reply_detail(reply: &Reply) -> String {
    let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let message = v["error"]["message"].as_str().unwrap_or("error");
    match v["error"]["detail"].as_str() {
        Some(d) => format!("{message}: {d}"),
        None => message.to_string(),
    }
}
