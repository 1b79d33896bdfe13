//! Attachment API: upload (`POST /api/now/attachment/file`), the metadata of many (`GET /api/now/attachment`)
//! or one, content and delete.

use http::{Method, StatusCode, header};
use serde_json::{Map, Value, json};

use super::Req;
use super::params::{Params, base_url, header_str};
use super::records::insert_record;
use super::reply::{Reply, acl_denied, bad_request, empty_reply, error_reply, json_reply, not_found};
use crate::store::{Fields, Shared, Store};

pub fn upload(shared: &Shared, req: &Req, user: &str) -> Reply {
    let params = Params::parse(req.query.as_bytes());
    let (Some(table), Some(table_sys_id), Some(file_name)) = (
        params.get("table_name"),
        params.get("table_sys_id"),
        params.get("file_name"),
    ) else {
        return bad_request(
            "Missing parameters",
            Some("table_name, table_sys_id and file_name are required"),
        );
    };
    let Some(content_type) = header_str(&req.headers, &header::CONTENT_TYPE) else {
        return bad_request(
            "Missing Content-Type header",
            Some("Content-Type must be the file's MIME type"),
        );
    };
    let mut store = shared.store.lock().expect("store lock");
    let visible = store
        .tables
        .get(table)
        .and_then(|t| t.get(table_sys_id))
        .is_some_and(|row| shared.can_read(user, table, row));
    // c_AttachmentAPI: the user "must also have any roles required to read and write records on the target
    // table"
    let writable = store
        .tables
        .get(table)
        .and_then(|t| t.get(table_sys_id))
        .is_some_and(|row| shared.can_write(user, table, row));
    if visible && !writable {
        return acl_denied("Insert");
    }
    if !visible {
        return error_reply(
            StatusCode::NOT_FOUND,
            "Invalid table name or sys_id",
            Some(&format!(
                "Record {table}/{table_sys_id} doesn't exist or ACL restricts the record retrieval"
            )),
        );
    }
    let base = base_url(req);
    let meta: Fields = [
        ("file_name", file_name.to_string()),
        ("content_type", content_type.to_string()),
        ("size_bytes", req.body.len().to_string()),
        ("table_name", table.to_string()),
        ("table_sys_id", table_sys_id.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut row = match insert_record(shared, &mut store, "sys_attachment", user, meta) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let sys_id = row["sys_id"].clone();
    store.attachments.insert(sys_id.clone(), req.body.clone());
    let link = format!("{base}/api/now/attachment/{sys_id}/file");
    if let Some(stored) = store.tables.get_mut("sys_attachment").and_then(|t| t.get_mut(&sys_id)) {
        stored.insert("download_link".into(), link.clone());
    }
    drop(store);
    row.insert("download_link".into(), link);
    let result: Map<String, Value> = row.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    json_reply(StatusCode::CREATED, &json!({"result": result}))
        .header("location", format!("{base}/api/now/attachment/{sys_id}"))
}

/// Whether `user` may see attachment `meta`: an attachment is read through its record (a record the user
/// cannot read has no attachments for them; an admin sees all).
fn parent_visible(shared: &Shared, store: &Store, user: &str, meta: &Fields) -> bool {
    let table = meta.get("table_name").map(String::as_str).unwrap_or("");
    let sys_id = meta.get("table_sys_id").map(String::as_str).unwrap_or("");
    shared.is_admin(user)
        || store
            .tables
            .get(table)
            .and_then(|t| t.get(sys_id))
            .is_some_and(|row| shared.can_read(user, table, row))
}

/// `GET /api/now/attachment` (c_AttachmentAPI, "Returns the metadata for multiple attachments"):
/// `sysparm_query` on `sys_attachment` (ORDERBY supported), `sysparm_limit` (default 1000) and
/// `sysparm_offset`. As on the Table API, the page is cut before read access is checked, so attachments of
/// records the user may not read use up the page and are left out of it.
pub fn list(shared: &Shared, req: &Req, user: &str) -> Reply {
    let params = Params::parse(req.query.as_bytes());
    let store = shared.store.lock().expect("store lock");
    let (rows, limit, offset) = super::table::query_rows(shared, &store, "sys_attachment", &params, 1000);
    let total = rows.len();
    let page: Vec<Value> = rows
        .iter()
        .skip(offset)
        .take(limit)
        .filter(|meta| parent_visible(shared, &store, user, meta))
        .map(|meta| {
            Value::Object(
                meta.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        })
        .collect();
    drop(store);
    json_reply(StatusCode::OK, &json!({"result": page})).header("x-total-count", total)
}

pub fn one(shared: &Shared, req: &Req, user: &str, sys_id: &str, content: bool) -> Reply {
    let mut store = shared.store.lock().expect("store lock");
    let Some(meta) = store.tables.get("sys_attachment").and_then(|t| t.get(sys_id)).cloned() else {
        return not_found();
    };
    if !parent_visible(shared, &store, user, &meta) {
        return not_found();
    }
    match (req.method.clone(), content) {
        (Method::GET, true) => {
            let bytes = store.attachments.get(sys_id).cloned().unwrap_or_default();
            Reply {
                status: StatusCode::OK,
                headers: Vec::new(),
                body: bytes,
                content_type: "application/octet-stream",
                user: None,
                hold: std::time::Duration::ZERO,
            }
        }
        (Method::GET, false) => {
            let result: Map<String, Value> = meta.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            json_reply(StatusCode::OK, &json!({"result": result}))
        }
        (Method::DELETE, false) => {
            if let Some(t) = store.tables.get_mut("sys_attachment") {
                t.remove(sys_id);
            }
            store.attachments.remove(sys_id);
            empty_reply(StatusCode::NO_CONTENT)
        }
        _ => error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not Supported",
            Some(req.method.as_str()),
        ),
    }
}
