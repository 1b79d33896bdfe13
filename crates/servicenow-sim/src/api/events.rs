//! Event Management: `POST /api/global/em/jsonv2`; events become alerts, de-duplicated by `message_key`.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::Req;
use super::records::{insert_record, require_json_body, value_to_string};
use super::reply::{Reply, acl_denied, bad_request, error_reply, json_reply};
use crate::store::{Fields, Shared, format_glide_time};

pub fn post(shared: &Shared, req: &Req, user: &str) -> Reply {
    if req.method != Method::POST {
        return error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not Supported",
            Some(req.method.as_str()),
        );
    }
    if !(shared.is_admin(user) || shared.roles_of(user).contains(&shared.config.event_role)) {
        return acl_denied("Insert");
    }
    let body = match require_json_body(shared, req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(records) = body.get("records").and_then(Value::as_array) else {
        return bad_request("Invalid request", Some("records is missing or not an array"));
    };
    let mut store = shared.store.lock().expect("store lock");
    let mut inserted = 0;
    for record in records {
        let Some(obj) = record.as_object() else { continue };
        // "Do not add additional fields to an event": a top-level field em_event lacks is dropped.
        let mut event: Fields = obj
            .iter()
            .filter(|(k, _)| shared.table_config("em_event").is_none_or(|t| t.has_field(k)))
            .map(|(k, v)| (k.clone(), value_to_string(v)))
            .collect();
        let key = match event.get("message_key").filter(|k| !k.is_empty()) {
            Some(k) => k.clone(),
            None => ["source", "node", "type", "resource", "metric_name"]
                .iter()
                .map(|f| event.get(*f).cloned().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(""),
        };
        event.insert("message_key".into(), key.clone());
        event.insert("state".into(), "Processed".into());
        let alert_id = store
            .tables
            .get("em_alert")
            .and_then(|t| t.rows.iter().find(|r| r.get("message_key") == Some(&key)))
            .and_then(|r| r.get("sys_id").cloned());
        let severity = event.get("severity").cloned().unwrap_or_else(|| "5".into());
        let alert_state = if severity == "0" { "Closed" } else { "Open" };
        let alert_sys_id = match alert_id {
            Some(id) => {
                let now = format_glide_time(shared.now());
                if let Some(alert) = store.tables.get_mut("em_alert").and_then(|t| t.get_mut(&id)) {
                    let count: u64 = alert.get("event_count").and_then(|c| c.parse().ok()).unwrap_or(1);
                    alert.insert("event_count".into(), (count + 1).to_string());
                    alert.insert("severity".into(), severity.clone());
                    alert.insert("state".into(), alert_state.into());
                    if let Some(d) = event.get("description") {
                        alert.insert("description".into(), d.clone());
                    }
                    alert.insert("sys_updated_on".into(), now);
                }
                id
            }
            None => {
                let mut alert = Fields::new();
                for f in [
                    "source",
                    "node",
                    "type",
                    "resource",
                    "metric_name",
                    "description",
                    "additional_info",
                ] {
                    if let Some(v) = event.get(f) {
                        alert.insert(f.to_string(), v.clone());
                    }
                }
                alert.insert("message_key".into(), key.clone());
                alert.insert("severity".into(), severity.clone());
                alert.insert("state".into(), alert_state.into());
                alert.insert("event_count".into(), "1".into());
                match insert_record(shared, &mut store, "em_alert", user, alert) {
                    Ok(row) => row.get("sys_id").cloned().unwrap_or_default(),
                    Err(_) => String::new(),
                }
            }
        };
        event.insert("alert".into(), alert_sys_id);
        if insert_record(shared, &mut store, "em_event", user, event).is_ok() {
            inserted += 1;
        }
    }
    drop(store);
    json_reply(
        StatusCode::OK,
        &json!({"result": {"Default Bulk Endpoint": format!("{inserted} events were inserted")}}),
    )
}
