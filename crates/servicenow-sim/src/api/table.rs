//! Table API: `/api/now/[v1|v2/]table/{table}[/{sys_id}]`.

use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::Req;
use super::params::{Params, base_url};
use super::records::{insert_record, prepare_fields, require_json_body, update_record};
use super::reply::{Reply, acl_denied, bad_request, empty_reply, error_reply, json_reply, not_found};
use crate::query::EncodedQuery;
use crate::store::{Fields, Shared, Store};

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

fn render(shared: &Shared, store: &Store, table: &str, row: &Fields, opts: &OutputOptions) -> Value {
    let cfg = shared.table_config(table);
    let mut out = Map::new();
    let mut put = |k: &str, v: &str| {
        let reference = cfg.and_then(|c| c.references.get(k));
        let value = if let Some(target) = reference {
            let display = shared.display_value(store, table, k, v);
            let link = format!("{}/api/now/table/{target}/{v}", opts.base);
            match opts.display_value.as_str() {
                "true" => Value::String(display),
                "all" => json!({"display_value": display, "value": v, "link": link}),
                _ if v.is_empty() || opts.exclude_reference_link => Value::String(v.to_string()),
                _ => json!({"link": link, "value": v}),
            }
        } else {
            match opts.display_value.as_str() {
                "true" => Value::String(shared.display_value(store, table, k, v)),
                "all" => json!({"display_value": shared.display_value(store, table, k, v), "value": v}),
                _ => Value::String(v.to_string()),
            }
        };
        out.insert(k.to_string(), value);
    };
    match &opts.fields {
        Some(fields) => {
            // A requested field the table lacks is left out of the answer.
            for f in fields.iter().filter(|f| cfg.is_none_or(|c| c.has_field(f))) {
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

/// The rows of `table` that `sysparm_query` selects, in its order, with `sysparm_limit` (default
/// `default_limit`) and `sysparm_offset`. A term naming a field the table lacks is an invalid part of the
/// query: dropped, or no rows with `invalid_query_returns_no_rows`.
pub fn query_rows<'a>(
    shared: &Shared,
    store: &'a Store,
    table: &str,
    params: &Params,
    default_limit: usize,
) -> (Vec<&'a Fields>, usize, usize) {
    let mut query = EncodedQuery::parse(params.get("sysparm_query").unwrap_or(""));
    if let Some(cfg) = shared.table_config(table) {
        query.drop_terms(|field| !cfg.has_field(field));
    }
    let limit: usize = params
        .get("sysparm_limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(default_limit);
    let offset: usize = params.get("sysparm_offset").and_then(|l| l.parse().ok()).unwrap_or(0);
    let no_rows = query.dropped_terms > 0 && shared.config.invalid_query_returns_no_rows;
    let mut rows: Vec<&Fields> = match store.tables.get(table) {
        Some(data) if !no_rows => data.rows.iter().filter(|r| query.matches(r)).collect(),
        _ => Vec::new(),
    };
    if !query.order_by.is_empty() {
        rows.sort_by(|a, b| query.compare(a, b));
    }
    (rows, limit, offset)
}

pub fn collection(shared: &Shared, req: &Req, user: &str, table: &str) -> Reply {
    if shared.table_config(table).is_none() {
        return bad_request(&format!("Invalid table {table}"), None);
    };
    let params = Params::parse(req.query.as_bytes());
    let opts = OutputOptions::from(req, &params);
    match req.method {
        Method::POST => {
            if !shared.can_create(user, table) {
                return acl_denied("Insert");
            }
            let input = match require_json_body(shared, req) {
                Ok(m) => m,
                Err(r) => return r,
            };
            let mut store = shared.store.lock().expect("store lock");
            let by_display = params.flag("sysparm_input_display_value");
            let row = match prepare_fields(shared, &store, table, &input, by_display) {
                Ok(r) => r,
                Err(r) => return r,
            };
            let row = match insert_record(shared, &mut store, table, user, row) {
                Ok(r) => r,
                Err(reply) => return reply,
            };
            let body = json!({"result": render(shared, &store, table, &row, &opts)});
            drop(store);
            let location = format!("{}/api/now/table/{table}/{}", opts.base, row["sys_id"]);
            json_reply(StatusCode::CREATED, &body).header("location", location)
        }
        Method::GET => {
            let store = shared.store.lock().expect("store lock");
            let (rows, limit, offset) = query_rows(shared, &store, table, &params, 10_000);
            let total = rows.len();
            // sysparm_limit is applied before ACL evaluation: rows the user may not read still use up the page.
            let page: Vec<Value> = rows
                .iter()
                .skip(offset)
                .take(limit)
                .filter(|r| shared.can_read_in(&store, user, table, r))
                .map(|r| render(shared, &store, table, r, &opts))
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
    if shared.table_config(table).is_none() {
        return bad_request(&format!("Invalid table {table}"), None);
    }
    let params = Params::parse(req.query.as_bytes());
    let opts = OutputOptions::from(req, &params);
    let input = if matches!(req.method, Method::PATCH | Method::PUT) {
        match require_json_body(shared, req) {
            Ok(m) => Some(m),
            Err(r) => return r,
        }
    } else {
        None
    };
    let mut store = shared.store.lock().expect("store lock");
    let Some(existing) = store.tables.get(table).and_then(|d| d.get(sys_id)) else {
        return not_found();
    };
    if !shared.can_read_in(&store, user, table, existing) {
        return not_found();
    }
    match req.method {
        Method::GET => json_reply(
            StatusCode::OK,
            &json!({"result": render(shared, &store, table, existing, &opts)}),
        ),
        Method::DELETE => {
            if !shared.can_delete(user, table) {
                return acl_denied("Delete");
            }
            if let Some(data) = store.tables.get_mut(table) {
                data.remove(sys_id);
            }
            if table == "sys_attachment" {
                store.attachments.remove(sys_id);
            }
            empty_reply(StatusCode::NO_CONTENT)
        }
        Method::PATCH | Method::PUT => {
            if !shared.can_write(user, table, existing) {
                return acl_denied("Update");
            }
            let input = input.unwrap_or_default();
            let by_display = params.flag("sysparm_input_display_value");
            match update_record(shared, &mut store, table, sys_id, user, &input, by_display) {
                Ok(updated) => {
                    let body = json!({"result": render(shared, &store, table, &updated, &opts)});
                    drop(store);
                    json_reply(StatusCode::OK, &body)
                }
                Err(reply) => reply,
            }
        }
        _ => error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not Supported",
            Some(req.method.as_str()),
        ),
    }
}

/// An update as a person working the record makes it (the control API's analyst actions: resolve, close,
/// reassign, add a work note): `user`'s write ACL, then the same rules as a Table API PATCH, reference
/// fields by display value or sys_id.
pub fn act_as(
    shared: &Shared,
    user: &str,
    table: &str,
    sys_id: &str,
    fields: &Map<String, Value>,
) -> Result<Fields, Reply> {
    if shared.table_config(table).is_none() {
        return Err(bad_request(&format!("Invalid table {table}"), None));
    }
    let mut store = shared.store.lock().expect("store lock");
    let Some(existing) = store.tables.get(table).and_then(|d| d.get(sys_id)) else {
        return Err(not_found());
    };
    if !shared.can_write(user, table, existing) {
        return Err(acl_denied("Update"));
    }
    update_record(shared, &mut store, table, sys_id, user, fields, true)
}
