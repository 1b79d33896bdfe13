//! The REST APIs, one module each: Table, OAuth, Batch, Import Set, Event Management, Attachment; the
//! shared gate (Accept, authentication, rate limits), record writing, parameters and replies.

mod attachment;
mod batch;
mod events;
mod gate;
mod import_set;
mod oauth;
mod params;
mod records;
mod reply;
mod table;
pub use table::act_as;

use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::config::{ApiKind, LatencyApi};
use crate::store::Shared;
use gate::with_api;
use reply::bad_request;
pub use reply::{
    Reply, empty_reply, error_reply, hibernating_reply, json_reply, rate_limited_reply, server_error_reply,
    transactions_exhausted_reply, unauthenticated_reply,
};

pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub via_batch: bool,
}

/// Path segments after /api/now/, with an optional v1/v2 version removed; (versioned, segments).
fn now_segments(path: &str) -> Option<(bool, Vec<&str>)> {
    let rest = path.strip_prefix("/api/now/")?;
    let mut segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let versioned = matches!(segs.first(), Some(&"v1") | Some(&"v2"));
    if versioned {
        segs.remove(0);
    }
    Some((versioned, segs))
}

/// The table a request addresses, for fault matching and the request log.
pub fn target_table(path: &str) -> Option<String> {
    if path.starts_with("/api/global/em/") {
        return Some("em_event".into());
    }
    let (_, segs) = now_segments(path)?;
    match segs.as_slice() {
        ["table", t, ..] | ["import", t, ..] => Some(t.to_string()),
        ["attachment", ..] => Some("sys_attachment".into()),
        _ => None,
    }
}

/// The latency a top-level request takes (None: none of its own — a batch's items take theirs, unknown
/// resources answer at once).
pub fn latency_api(req: &Req) -> Option<LatencyApi> {
    match req.path.as_str() {
        "/oauth_token.do" => return Some(LatencyApi::OAuth),
        "/api/global/em/jsonv2" => return Some(LatencyApi::Event),
        _ => {}
    }
    let (_, segs) = now_segments(&req.path)?;
    match segs.first() {
        Some(&"table") if req.method == Method::GET => Some(LatencyApi::TableRead),
        Some(&"table") => Some(LatencyApi::TableWrite),
        Some(&"import") => Some(LatencyApi::ImportSet),
        Some(&"attachment") => Some(LatencyApi::Attachment),
        _ => None,
    }
}

/// Route a (top-level or batch item) request to its API.
pub fn handle(shared: &Shared, req: &Req) -> Reply {
    shared.run_due_jobs(&mut shared.store.lock().expect("store lock"));
    if req.path == "/oauth_token.do" {
        return oauth::token(shared, req);
    }
    if req.path == "/api/global/em/jsonv2" {
        return with_api(shared, req, ApiKind::Event, events::post);
    }
    let Some((versioned, segs)) = now_segments(&req.path) else {
        return unknown_resource();
    };
    match segs.as_slice() {
        ["table", table] => {
            let table = table.to_string();
            with_api(shared, req, ApiKind::Table, move |s, r, u| {
                table::collection(s, r, u, &table)
            })
        }
        ["table", table, sys_id] => {
            let (table, sys_id) = (table.to_string(), sys_id.to_string());
            with_api(shared, req, ApiKind::Table, move |s, r, u| {
                table::record(s, r, u, &table, &sys_id)
            })
        }
        ["batch"] if versioned && req.method == Method::POST => {
            if req.via_batch {
                return bad_request("Nested batch requests are not supported", None);
            }
            with_api(shared, req, ApiKind::Batch, batch::post)
        }
        ["import", staging] if req.method == Method::POST => {
            let staging = staging.to_string();
            with_api(shared, req, ApiKind::Import, move |s, r, u| {
                import_set::load(s, r, u, &staging, false)
            })
        }
        ["import", staging, "insertMultiple"] if req.method == Method::POST => {
            let staging = staging.to_string();
            with_api(shared, req, ApiKind::Import, move |s, r, u| {
                import_set::load(s, r, u, &staging, true)
            })
        }
        ["attachment"] if req.method == Method::GET => with_api(shared, req, ApiKind::Attachment, attachment::list),
        ["attachment", "file"] if req.method == Method::POST => {
            with_api(shared, req, ApiKind::Attachment, attachment::upload)
        }
        ["attachment", sys_id] => {
            let id = sys_id.to_string();
            with_api(shared, req, ApiKind::Attachment, move |s, r, u| {
                attachment::one(s, r, u, &id, false)
            })
        }
        ["attachment", sys_id, "file"] if req.method == Method::GET => {
            let id = sys_id.to_string();
            with_api(shared, req, ApiKind::Attachment, move |s, r, u| {
                attachment::one(s, r, u, &id, true)
            })
        }
        _ => unknown_resource(),
    }
}

fn unknown_resource() -> Reply {
    bad_request("Requested URI does not represent any resource", None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_path() {
        assert_eq!(target_table("/api/now/table/incident").as_deref(), Some("incident"));
        assert_eq!(
            target_table("/api/now/v2/table/incident/abc").as_deref(),
            Some("incident")
        );
        assert_eq!(
            target_table("/api/now/import/u_incident_import").as_deref(),
            Some("u_incident_import")
        );
        assert_eq!(
            target_table("/api/now/attachment/file").as_deref(),
            Some("sys_attachment")
        );
        assert_eq!(target_table("/api/global/em/jsonv2").as_deref(), Some("em_event"));
        assert_eq!(target_table("/api/now/v1/batch"), None);
    }

    #[test]
    fn latency_of_request() {
        let req = |method: Method, path: &str| Req {
            method,
            path: path.into(),
            query: String::new(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            via_batch: false,
        };
        let of = |m, p| latency_api(&req(m, p));
        assert_eq!(of(Method::GET, "/api/now/table/incident"), Some(LatencyApi::TableRead));
        assert_eq!(
            of(Method::POST, "/api/now/v2/table/incident"),
            Some(LatencyApi::TableWrite)
        );
        assert_eq!(
            of(Method::PATCH, "/api/now/table/incident/abc"),
            Some(LatencyApi::TableWrite)
        );
        assert_eq!(
            of(Method::POST, "/api/now/import/u_incident_import"),
            Some(LatencyApi::ImportSet)
        );
        assert_eq!(
            of(Method::POST, "/api/now/attachment/file"),
            Some(LatencyApi::Attachment)
        );
        assert_eq!(of(Method::POST, "/api/global/em/jsonv2"), Some(LatencyApi::Event));
        assert_eq!(of(Method::POST, "/oauth_token.do"), Some(LatencyApi::OAuth));
        assert_eq!(of(Method::POST, "/api/now/v1/batch"), None, "the items take theirs");
    }
}
