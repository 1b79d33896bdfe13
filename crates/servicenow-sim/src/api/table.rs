//! Table API: `/api/now/[v1|v2/]table/{table}[/{sys_id}]`.

use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::Req;
use super::params::{Params, base_url};
use super::records::{apply_priority, data_policy_check, insert_record, prepare_fields, require_json_body};
use super::reply::{Reply, acl_denied, bad_request, empty_reply, error_reply, json_reply, not_found};
use crate::query::EncodedQuery;
use crate::store::{Fields, Shared, format_glide_time};

struct OutputOptions {
    fields: Option<Vec<String>>,
    exclude_reference_link: bool,
    display_value: String,
    base: String,
}

impl OutputOptions {
    fn from(req: &Req, params: &Params) -> OutputOptions {
        OutputOptions {
            fields: params.get("sysparm_fields").filter(|f| !f.trim().is_empty()).map(|f| {
                f.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            }),
            exclude_reference_link: params.flag("sysparm_exclude_reference_link"),
            display_value: params
                .get("sysparm_display_value")
                .unwrap_or("false")
                .to_ascii_lowercase(),
            base: base_url(req),
        }
    }
}

fn render(shared: &Shared, row: &Fields, opts: &OutputOptions) -> Value {
    let mut out = Map::new();
    let mut put = |k: &str, v: &str| {
        let value = if let Some(target) = shared.config.reference_fields.get(k) {
            let display = shared.group_name(v).unwrap_or("").to_string();
            match opts.display_value.as_str() {
                "true" => Value::String(display),
                "all" => json!({"display_value": display, "value": v,
                    "link": format!("{}/api/now/table/{target}/{v}", opts.base)}),
                _ if v.is_empty() || opts.exclude_reference_link => Value::String(v.to_string()),
                _ => json!({"link": format!("{}/api/now/table/{target}/{v}", opts.base), "value": v}),
            }
        } else {
            Value::String(v.to_string())
        };
        out.insert(k.to_string(), value);
    };
    match &opts.fields {
        Some(fields) => {
            for f in fields {
                put(f, row.get(f).map(String::as_str).unwrap_or(""));
            }
        }
        None => {
            for (k, v) in row {
                put(k, v);
            }
        }
    }
    Value::Object(out)
}

pub fn collection(shared: &Shared, req: &Req, user: &str, table: &str) -> Reply {
    if shared.table_config(table).is_none() && table != "sys_user_group" {
        return bad_request(&format!("Invalid table {table}"), None);
    }
    let params = Params::parse(req.query.as_bytes());
    let opts = OutputOptions::from(req, &params);
    match req.method {
        Method::POST => {
            if !shared.can_create(user, table) {
                return acl_denied("Insert");
            }
            let input = match require_json_body(req) {
                Ok(m) => m,
                Err(r) => return r,
            };
            let row = match prepare_fields(shared, table, &input, params.flag("sysparm_input_display_value")) {
                Ok(r) => r,
                Err(r) => return r,
            };
            let mut store = shared.store.lock().expect("store lock");
            let row = match insert_record(shared, &mut store, table, user, row) {
                Ok(r) => r,
                Err(reply) => return reply,
            };
            drop(store);
            let location = format!("{}/api/now/table/{table}/{}", opts.base, row["sys_id"]);
            json_reply(StatusCode::CREATED, &json!({"result": render(shared, &row, &opts)}))
                .header("location", location)
        }
        Method::GET => {
            let query = EncodedQuery::parse(params.get("sysparm_query").unwrap_or(""));
            let limit: usize = params
                .get("sysparm_limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(10_000);
            let offset: usize = params.get("sysparm_offset").and_then(|l| l.parse().ok()).unwrap_or(0);
            let store = shared.store.lock().expect("store lock");
            let no_rows = query.dropped_terms > 0 && shared.config.invalid_query_returns_no_rows;
            let mut rows: Vec<&Fields> = match store.tables.get(table) {
                Some(data) if !no_rows => data
                    .rows
                    .iter()
                    .filter(|r| shared.can_read(user, table, r) && query.matches(r))
                    .collect(),
                _ => Vec::new(),
            };
            if !query.order_by.is_empty() {
                rows.sort_by(|a, b| query.compare(a, b));
            }
            let total = rows.len();
            let page: Vec<Value> = rows
                .iter()
                .skip(offset)
                .take(limit)
                .map(|r| render(shared, r, &opts))
                .collect();
            drop(store);
            json_reply(StatusCode::OK, &json!({"result": page})).header("x-total-count", total)
        }
        _ => error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not Supported",
            Some(req.method.as_str()),
        ),
    }
}

pub fn record(shared: &Shared, req: &Req, user: &str, table: &str, sys_id: &str) -> Reply {
    if shared.table_config(table).is_none() && table != "sys_user_group" {
        return bad_request(&format!("Invalid table {table}"), None);
    }
    let params = Params::parse(req.query.as_bytes());
    let opts = OutputOptions::from(req, &params);
    let mut store = shared.store.lock().expect("store lock");
    let Some(data) = store.tables.get_mut(table) else {
        return not_found();
    };
    let Some(existing) = data.get(sys_id) else {
        return not_found();
    };
    if !shared.can_read(user, table, existing) {
        return not_found();
    }
    match req.method {
        Method::GET => json_reply(StatusCode::OK, &json!({"result": render(shared, existing, &opts)})),
        Method::DELETE => {
            if !shared.can_write(user, table, existing) {
                return acl_denied("Delete");
            }
            data.remove(sys_id);
            if table == "sys_attachment" {
                store.attachments.remove(sys_id);
            }
            empty_reply(StatusCode::NO_CONTENT)
        }
        Method::PATCH | Method::PUT => {
            if !shared.can_write(user, table, existing) {
                return acl_denied("Update");
            }
            drop(store);
            let input = match require_json_body(req) {
                Ok(m) => m,
                Err(r) => return r,
            };
            let changes = match prepare_fields(shared, table, &input, params.flag("sysparm_input_display_value")) {
                Ok(r) => r,
                Err(r) => return r,
            };
            let mut store = shared.store.lock().expect("store lock");
            let now = format_glide_time(shared.now());
            let Some(row) = store.tables.get_mut(table).and_then(|d| d.get_mut(sys_id)) else {
                return not_found();
            };
            let mut updated = row.clone();
            updated.extend(changes);
            apply_priority(shared, table, &mut updated);
            if let Err(reply) = data_policy_check(shared, table, &updated) {
                return reply;
            }
            let count: u64 = updated.get("sys_mod_count").and_then(|c| c.parse().ok()).unwrap_or(0);
            updated.insert("sys_mod_count".into(), (count + 1).to_string());
            updated.insert("sys_updated_on".into(), now);
            updated.insert("sys_updated_by".into(), user.to_string());
            *row = updated.clone();
            drop(store);
            json_reply(StatusCode::OK, &json!({"result": render(shared, &updated, &opts)}))
        }
        _ => error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not Supported",
            Some(req.method.as_str()),
        ),
    }
}
