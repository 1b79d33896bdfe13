//! Batch API: `POST /api/now/v1/batch`, each item run through the same handlers as a top-level request.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use super::records::{require_json_body, value_to_string};
use super::reply::{Reply, bad_request, json_reply};
use super::{Req, handle, target_table};
use crate::config::LatencyApi;
use crate::store::{LoggedRequest, Shared};

pub fn post(shared: &Shared, req: &Req, _user: &str) -> Reply {
    let body = match require_json_body(shared, req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let batch_id = body.get("batch_request_id").map(value_to_string).unwrap_or_default();
    let Some(items) = body.get("rest_requests").and_then(Value::as_array) else {
        return bad_request(
            "Invalid batch request",
            Some("rest_requests is missing or not an array"),
        );
    };
    let outer_auth = req.headers.get(header::AUTHORIZATION).cloned();
    let cfg = &shared.config.batch;
    let mut elapsed_ms: u64 = 0;
    // The items run one after another, each taking the batch item latency: the batch answers after all.
    let mut hold = std::time::Duration::ZERO;
    let mut serviced = Vec::new();
    let mut unserviced = Vec::new();
    for item in items {
        let id = item.get("id").map(value_to_string).unwrap_or_default();
        let over_items = cfg.max_serviced_items.is_some_and(|max| serviced.len() >= max);
        if over_items || elapsed_ms >= cfg.time_quota_ms {
            unserviced.push(Value::String(id));
            continue;
        }
        let started = std::time::Instant::now();
        let (status, headers, body_b64) = batch_item(shared, req, item, outer_auth.as_ref());
        let latency = shared.transactions.latency(LatencyApi::BatchItem);
        hold += latency;
        let execution_ms = cfg.item_execution_ms + latency.as_millis() as u64;
        elapsed_ms += execution_ms + started.elapsed().as_millis() as u64;
        let exclude_headers = item
            .get("exclude_response_headers")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        serviced.push(json!({
            "id": id,
            "body": body_b64,
            "status_code": status.as_u16(),
            "status_text": status.canonical_reason().unwrap_or(""),
            "headers": if exclude_headers { json!([]) } else { headers },
            "execution_time": execution_ms,
        }));
    }
    let mut reply = json_reply(
        StatusCode::OK,
        &json!({"batch_request_id": batch_id, "serviced_requests": serviced, "unserviced_requests": unserviced}),
    );
    reply.hold = hold;
    reply
}

fn batch_item(
    shared: &Shared,
    outer: &Req,
    item: &Value,
    outer_auth: Option<&HeaderValue>,
) -> (StatusCode, Value, String) {
    let fail = |status: StatusCode, message: &str, detail: &str| {
        let body = json!({"error": {"message": message, "detail": detail}, "status": "failure"});
        (status, json!([]), B64.encode(body.to_string()))
    };
    let method = item.get("method").and_then(Value::as_str).unwrap_or("GET");
    let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        return fail(StatusCode::BAD_REQUEST, "Invalid method", method);
    };
    let url = item.get("url").and_then(Value::as_str).unwrap_or("");
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let body = match item.get("body").and_then(Value::as_str) {
        Some(b) => match B64.decode(b) {
            Ok(bytes) => bytes,
            Err(_) => return fail(StatusCode::BAD_REQUEST, "Invalid body", "body is not base64"),
        },
        None => Vec::new(),
    };
    if body.len() > shared.config.batch.max_item_bytes {
        return fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request entity too large",
            "batch item exceeds glide.rest.batch.max.inputSize",
        );
    }
    let mut headers = HeaderMap::new();
    if let Some(host) = outer.headers.get(header::HOST) {
        headers.insert(header::HOST, host.clone());
    }
    for h in item.get("headers").and_then(Value::as_array).into_iter().flatten() {
        let name = h.get("name").and_then(Value::as_str).unwrap_or("");
        let value = h.get("value").and_then(Value::as_str).unwrap_or("");
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.append(n, v);
        }
    }
    if !headers.contains_key(header::AUTHORIZATION)
        && let Some(auth) = outer_auth
    {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    let inner = Req {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: Bytes::from(body),
        via_batch: true,
    };
    let reply = handle(shared, &inner);
    {
        let mut store = shared.store.lock().expect("store lock");
        let entry = LoggedRequest {
            method: inner.method.to_string(),
            path: inner.path.clone(),
            query: inner.query.clone(),
            status: reply.status.as_u16(),
            user: reply.user.clone(),
            at: (shared.now().unix_timestamp_nanos() / 1_000_000) as i64,
            table: target_table(&inner.path),
            via_batch: true,
            fault: None,
        };
        shared.log(&mut store, entry);
    }
    let mut hdrs = vec![json!({"name": "Content-Type", "value": reply.content_type})];
    for (n, v) in &reply.headers {
        hdrs.push(json!({"name": n.as_str(), "value": v.to_str().unwrap_or("")}));
    }
    (reply.status, Value::Array(hdrs), B64.encode(&reply.body))
}
