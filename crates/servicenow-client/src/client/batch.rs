//! Several records created in one Batch API request, and each item's outcome read from the answer.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use base64::Engine;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use super::table::CREATE_PARAMS;
use super::{ServiceNowClient, unix_now};
use crate::Outcome;
use crate::config::check_table;
use crate::outcome::{Effect, RawResponse, created_from, field_str, result_of};

/// One record to create in a Batch API request.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    /// Caller's id for the item (unique within the batch); results are mapped back by it.
    pub id: String,
    pub table: String,
    pub fields: Map<String, Value>,
}

impl ServiceNowClient {
    /// Create several records in one Batch API request (`/api/now/v1/batch`).
    ///
    /// `Ok` holds one `(item id, outcome)` per item, in the order given: serviced items are classified like
    /// a single create, `unserviced_requests` are retryable, items the answer does not mention are
    /// ambiguous. `Err` is the outcome of the batch request itself (nothing is known about any item).
    pub async fn send_batch(&self, items: &[BatchItem]) -> Result<Vec<(String, Outcome)>, Outcome> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut seen = HashSet::new();
        let mut rest_requests = Vec::with_capacity(items.len());
        for item in items {
            if item.id.is_empty() || !seen.insert(item.id.as_str()) {
                return Err(Outcome::permanent_local(format!(
                    "batch item ids must be unique and non-empty (offending id {:?})",
                    item.id
                )));
            }
            check_table(&item.table).map_err(Outcome::permanent_local)?;
            let body = serde_json::to_vec(&item.fields)
                .map_err(|e| Outcome::permanent_local(format!("fields cannot be encoded: {e}")))?;
            rest_requests.push(json!({
                "id": item.id,
                "method": "POST",
                "url": format!("/api/now/table/{}?{CREATE_PARAMS}", item.table),
                "headers": [
                    {"name": "Content-Type", "value": "application/json"},
                    {"name": "Accept", "value": "application/json"}
                ],
                "body": base64::engine::general_purpose::STANDARD.encode(body),
                "exclude_response_headers": false,
            }));
        }
        let batch_id = format!(
            "relay-{}-{}",
            unix_now(),
            self.inner.batch_counter.fetch_add(1, Ordering::Relaxed)
        );
        let body = bytes::Bytes::from(
            serde_json::to_vec(&json!({"batch_request_id": batch_id, "rest_requests": rest_requests}))
                .map_err(|e| Outcome::permanent_local(format!("batch cannot be encoded: {e}")))?,
        );
        let url = format!("{}/api/now/v1/batch", self.inner.instance_url);
        let resp = self
            .execute("batch", "batch", Effect::Write, || {
                self.inner
                    .http
                    .post(&url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await?;
        if !(200..300).contains(&resp.status) {
            return Err(result_of(&resp, Effect::Write, unix_now())
                .err()
                .unwrap_or_else(|| Outcome::Ambiguous {
                    reason: format!("batch answered HTTP {}", resp.status),
                }));
        }
        let answer: Value = serde_json::from_slice(&resp.body).map_err(|e| {
            let looks_json = resp.body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            if looks_json {
                Outcome::Ambiguous {
                    reason: format!("batch answer is unreadable JSON ({e})"),
                }
            } else {
                Outcome::retryable(format!(
                    "batch answered HTTP {} with a non-JSON page: instance unavailable",
                    resp.status
                ))
            }
        })?;
        let Some(serviced) = answer.get("serviced_requests").and_then(Value::as_array) else {
            return Err(Outcome::retryable(format!(
                "batch answered HTTP {} without serviced_requests: instance unavailable",
                resp.status
            )));
        };
        let unserviced: HashSet<String> = answer
            .get("unserviced_requests")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .or_else(|| v.get("id").and_then(field_str))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let now = unix_now();
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let outcome = if let Some(s) = serviced
                .iter()
                .find(|s| s.get("id").and_then(field_str).as_deref() == Some(&item.id))
            {
                self.batch_item_outcome(&item.table, s, now)
            } else if unserviced.contains(&item.id) {
                Outcome::retryable("not serviced within the batch quota (not executed)")
            } else {
                Outcome::Ambiguous {
                    reason: "item missing from the batch answer".into(),
                }
            };
            results.push((item.id.clone(), outcome));
        }
        Ok(results)
    }

    fn batch_item_outcome(&self, table: &str, serviced: &Value, now: u64) -> Outcome {
        let Some(status) = serviced
            .get("status_code")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        else {
            return Outcome::Ambiguous {
                reason: "batch item without status_code".into(),
            };
        };
        let body = match serviced.get("body").and_then(Value::as_str) {
            Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(b) => b,
                Err(_) => {
                    return Outcome::Ambiguous {
                        reason: "batch item body is not base64".into(),
                    };
                }
            },
            None => Vec::new(),
        };
        let mut headers = HeaderMap::new();
        if let Some(hs) = serviced.get("headers").and_then(Value::as_array) {
            for h in hs {
                if let (Some(n), Some(v)) = (
                    h.get("name").and_then(Value::as_str),
                    h.get("value").and_then(Value::as_str),
                ) && let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_str(v))
                {
                    headers.insert(n, v);
                }
            }
        }
        let raw = RawResponse {
            status: status as u16,
            headers,
            body: body.into(),
        };
        created_from(&raw, &self.inner.instance_url, table, now)
    }
}
