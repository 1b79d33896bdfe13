//! The client and its operations.

use std::collections::HashSet;
use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use crate::auth::Authenticator;
use crate::config::{check_field, check_sys_id, check_table, correlation_query, validate_instance_url};
use crate::outcome::{Effect, RawResponse, created_from, field_str, record_from, result_of};
use crate::{ClientConfig, ClientError, CreatedRecord, CredentialSource, Outcome};

/// Query parameters for every Table API write: minimal response, groups by display name, no links.
/// Rows a key lookup reads: enough to find ours among rows a real instance returns for a query whose term
/// it ignored, or among `LIKE` matches of a longer key.
pub const LOOKUP_ROWS: usize = 10;

/// What a row must carry to be ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The field holds exactly the key.
    Equals,
    /// The field's text contains this marker (which contains the key).
    Contains(String),
}

/// The field that carries the relay's key on a table, the key, and how a found row is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey<'a> {
    pub field: &'a str,
    pub value: &'a str,
    pub expect: Expect,
}

impl<'a> RecordKey<'a> {
    /// `field` holds exactly `value`.
    pub fn equals(field: &'a str, value: &'a str) -> RecordKey<'a> {
        RecordKey {
            field,
            value,
            expect: Expect::Equals,
        }
    }
}

const CREATE_PARAMS: &str =
    "sysparm_fields=sys_id,number&sysparm_input_display_value=true&sysparm_exclude_reference_link=true";

/// One record to create in a Batch API request.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    /// Caller's id for the item (unique within the batch); results are mapped back by it.
    pub id: String,
    pub table: String,
    pub fields: Map<String, Value>,
}

/// A ServiceNow REST client. Cheap to clone; clones share the connection pool and the OAuth token.
#[derive(Clone)]
pub struct ServiceNowClient {
    inner: Arc<Inner>,
}

struct Inner {
    instance_url: String,
    http: reqwest::Client,
    auth: Authenticator,
    max_response_bytes: usize,
    batch_counter: AtomicU64,
}

impl std::fmt::Debug for ServiceNowClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceNowClient")
            .field("instance_url", &self.inner.instance_url)
            .finish_non_exhaustive()
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A transport error in words, without URLs (they could carry query values).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connect error"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "response body error"
    } else {
        "request error"
    };
    let mut root = String::new();
    let mut src = e.source();
    while let Some(s) = src {
        root = s.to_string();
        src = s.source();
    }
    if root.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {root}")
    }
}

/// What a transport failure means: nothing sent (connect) → retryable; otherwise the answer was lost.
fn transport_outcome(e: &reqwest::Error, effect: Effect) -> Outcome {
    if e.is_connect() {
        Outcome::retryable(format!("could not connect: {}", describe(e)))
    } else {
        effect.lost_answer(format!("request sent, no answer: {}", describe(e)))
    }
}

impl ServiceNowClient {
    /// Build a client. Validates the instance URL (see [`crate::validate_instance_url`]) and the config.
    pub fn new(config: ClientConfig, credentials: Arc<dyn CredentialSource>) -> Result<Self, ClientError> {
        let instance_url = validate_instance_url(&config.instance_url)?;
        if config.connect_timeout.is_zero() || config.total_timeout.is_zero() {
            return Err(ClientError::InvalidConfig(
                "connect_timeout and total_timeout must be above zero".into(),
            ));
        }
        if config.connect_timeout > config.total_timeout {
            return Err(ClientError::InvalidConfig(
                "connect_timeout must not exceed total_timeout".into(),
            ));
        }
        let user_agent = HeaderValue::from_str(&config.user_agent)
            .map_err(|_| ClientError::InvalidConfig("user_agent contains characters not allowed in a header".into()))?;
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .connect_timeout(config.connect_timeout)
            .timeout(config.total_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(instance_url.starts_with("https://"))
            .pool_idle_timeout(std::time::Duration::from_secs(50))
            .tcp_keepalive(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::InvalidConfig(format!("HTTP client: {e}")))?;
        let auth = Authenticator::new(credentials, config.token_refresh_margin, &instance_url);
        Ok(ServiceNowClient {
            inner: Arc::new(Inner {
                instance_url,
                http,
                auth,
                max_response_bytes: config.max_response_bytes,
                batch_counter: AtomicU64::new(0),
            }),
        })
    }

    /// The validated instance URL, `scheme://host[:port]` without a trailing slash.
    pub fn instance_url(&self) -> &str {
        &self.inner.instance_url
    }

    /// Insert one record with the Table API.
    pub async fn create_record(&self, table: &str, fields: &Map<String, Value>) -> Outcome {
        if let Err(m) = check_table(table) {
            return Outcome::permanent_local(m);
        }
        let url = format!("{}/api/now/table/{table}?{CREATE_PARAMS}", self.inner.instance_url);
        let body = match serde_json::to_vec(fields) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => return Outcome::permanent_local(format!("fields cannot be encoded: {e}")),
        };
        let sent = self
            .execute("create", table, Effect::Write, || {
                self.inner
                    .http
                    .post(&url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await;
        match sent {
            Ok(resp) => created_from(&resp, &self.inner.instance_url, table, unix_now()),
            Err(o) => o,
        }
    }

    /// Find the earliest record of `table` whose `correlation_id` equals the given value (see
    /// [`ServiceNowClient::find_by_key`]).
    pub async fn find_by_correlation_id(
        &self,
        table: &str,
        correlation_id: &str,
    ) -> Result<Option<CreatedRecord>, Outcome> {
        self.find_by_key(table, &RecordKey::equals("correlation_id", correlation_id))
            .await
    }

    /// Find the earliest record of `table` that carries `key` in `key.field`. The lookup asks for the field
    /// back and compares it: a row that does not carry the key is never taken (a real instance ignores a
    /// query term on a field the table lacks and returns rows of the valid rest, here: any rows). The key
    /// value must match `[A-Za-z0-9._:-]{1,100}`; anything else is refused without a request.
    pub async fn find_by_key(&self, table: &str, key: &RecordKey<'_>) -> Result<Option<CreatedRecord>, Outcome> {
        check_table(table).map_err(Outcome::permanent_local)?;
        check_field(key.field).map_err(Outcome::permanent_local)?;
        // checks the value's charset; the term is then written for the field
        correlation_query(key.value).map_err(Outcome::permanent_local)?;
        let op = match key.expect {
            Expect::Equals => "=",
            Expect::Contains(_) => "LIKE",
        };
        let query = format!("{}{op}{}^ORDERBYsys_created_on", key.field, key.value);
        let fields = format!("sys_id,number,{}", key.field);
        let url = format!("{}/api/now/table/{table}", self.inner.instance_url);
        let limit = LOOKUP_ROWS.to_string();
        let resp = self
            .execute("find", table, Effect::Read, || {
                self.inner.http.get(&url).query(&[
                    ("sysparm_query", query.as_str()),
                    ("sysparm_fields", fields.as_str()),
                    ("sysparm_limit", limit.as_str()),
                    ("sysparm_exclude_reference_link", "true"),
                ])
            })
            .await?;
        let result = result_of(&resp, Effect::Read, unix_now())?;
        let Value::Array(rows) = result else {
            return Err(Outcome::retryable("lookup answer's result is not a list"));
        };
        let ours = rows.iter().find(|row| {
            let value = row.get(key.field).and_then(field_str);
            match (&key.expect, value) {
                (_, None) => false,
                (Expect::Equals, Some(v)) => v == key.value,
                (Expect::Contains(marker), Some(v)) => v.contains(marker.as_str()),
            }
        });
        match ours {
            None => Ok(None),
            Some(row) => record_from(row, &self.inner.instance_url, table)
                .map(Some)
                .ok_or_else(|| Outcome::retryable("lookup answer has a row without sys_id")),
        }
    }

    /// The sys_id of the one active or inactive `sys_user` whose `field` (employee_number, user_name or
    /// email) equals `value`, read back and compared; None when there is none, or when the value cannot be
    /// put in a query safely (`[A-Za-z0-9._:@+-]`, at most 100).
    pub async fn find_user(&self, field: &str, value: &str) -> Result<Option<String>, Outcome> {
        check_field(field).map_err(Outcome::permanent_local)?;
        let safe = !value.is_empty()
            && value.len() <= crate::MAX_CORRELATION_ID_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'+' | b'-'))
            && !value.to_ascii_lowercase().contains("javascript:");
        if !safe {
            return Ok(None);
        }
        self.unique_sys_id("find_user", "sys_user", field, value, |found| {
            found.eq_ignore_ascii_case(value)
        })
        .await
    }

    /// The sys_id of the one `sys_user_group` named exactly `name`; None when there is none (an instance
    /// leaves a reference to an unknown group empty without an error, so this is how a group name is
    /// verified), or when the name cannot be one encoded-query term (`^`, a line break, over 80 characters).
    pub async fn find_group(&self, name: &str) -> Result<Option<String>, Outcome> {
        let safe = !name.trim().is_empty()
            && name.chars().count() <= 80
            && !name.contains('^')
            && !name.chars().any(char::is_control)
            && !name.to_ascii_lowercase().contains("javascript:");
        if !safe {
            return Ok(None);
        }
        self.unique_sys_id("find_group", "sys_user_group", "name", name, |found| found == name)
            .await
    }

    /// The sys_id of the one row of `table` whose `field` equals `value` (a query-safe value), read back and
    /// checked with `same`; None when no row or more than one matches (two candidates name nobody for sure).
    async fn unique_sys_id(
        &self,
        op: &'static str,
        table: &'static str,
        field: &str,
        value: &str,
        same: impl Fn(&str) -> bool,
    ) -> Result<Option<String>, Outcome> {
        let query = format!("{field}={value}");
        let fields = format!("sys_id,{field}");
        let url = format!("{}/api/now/table/{table}", self.inner.instance_url);
        let resp = self
            .execute(op, table, Effect::Read, || {
                self.inner.http.get(&url).query(&[
                    ("sysparm_query", query.as_str()),
                    ("sysparm_fields", fields.as_str()),
                    ("sysparm_limit", "2"),
                ])
            })
            .await?;
        let result = result_of(&resp, Effect::Read, unix_now())?;
        let Value::Array(rows) = result else {
            return Err(Outcome::retryable(format!(
                "{table} lookup answer's result is not a list"
            )));
        };
        let matching: Vec<String> = rows
            .iter()
            .filter(|r| r.get(field).and_then(field_str).is_some_and(|v| same(&v)))
            .filter_map(|r| r.get("sys_id").and_then(field_str))
            .filter(|id| check_sys_id(id).is_ok())
            .collect();
        Ok(if matching.len() == 1 {
            matching.into_iter().next()
        } else {
            None
        })
    }

    /// Create through the Import Set API (`/api/now/import/{staging_table}`); the transform map decides
    /// the target table and may coalesce (update instead of insert). A row status `error` or `ignored`
    /// is permanent.
    pub async fn import_record(&self, staging_table: &str, fields: &Map<String, Value>) -> Outcome {
        if let Err(m) = check_table(staging_table) {
            return Outcome::permanent_local(m);
        }
        let url = format!(
            "{}/api/now/import/{staging_table}?sysparm_input_display_value=true",
            self.inner.instance_url
        );
        // A staging table's columns are the `u_`-prefixed names an import set creates for each source column;
        // the transform map maps `u_<field>` onto the target's `<field>`. Other columns are ignored.
        let staged: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| {
                let column = if k.starts_with("u_") {
                    k.clone()
                } else {
                    format!("u_{k}")
                };
                (column, v.clone())
            })
            .collect();
        let body = match serde_json::to_vec(&staged) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => return Outcome::permanent_local(format!("fields cannot be encoded: {e}")),
        };
        let resp = match self
            .execute("import", staging_table, Effect::Write, || {
                self.inner
                    .http
                    .post(&url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await
        {
            Ok(r) => r,
            Err(o) => return o,
        };
        let result = match result_of(&resp, Effect::Write, unix_now()) {
            Ok(r) => r,
            Err(o) => return o,
        };
        let row = match &result {
            Value::Array(rows) => rows.first().cloned(),
            Value::Object(_) => Some(result.clone()),
            _ => None,
        };
        let Some(row) = row else {
            return Outcome::Ambiguous {
                reason: "import answer has no result row: the record may exist".into(),
            };
        };
        let status = row.get("status").and_then(Value::as_str).unwrap_or_default();
        match status {
            "inserted" | "updated" => {
                let table = row.get("table").and_then(Value::as_str).unwrap_or_default().to_string();
                let sys_id = row.get("sys_id").and_then(field_str).unwrap_or_default();
                if check_table(&table).is_err() || check_sys_id(&sys_id).is_err() {
                    return Outcome::Ambiguous {
                        reason: format!("import row {status} but without a usable table/sys_id"),
                    };
                }
                let number = row.get("display_value").and_then(field_str);
                Outcome::Created(CreatedRecord::new(&self.inner.instance_url, &table, &sys_id, number))
            }
            "error" | "ignored" => Outcome::Permanent {
                message: format!("import row {status}"),
                detail: row
                    .get("error_message")
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string),
                status: resp.status,
            },
            other => Outcome::Ambiguous {
                reason: format!("import row has unknown status {other:?}"),
            },
        }
    }

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

    /// Send ITOM events to `/api/global/em/jsonv2`. `Ok` holds ServiceNow's summary of the result
    /// (e.g. `{"Default Bulk Endpoint":"1 events were inserted"}` as text).
    pub async fn send_events(&self, events: &[Value]) -> Result<String, Outcome> {
        if events.is_empty() {
            return Err(Outcome::permanent_local("no events to send"));
        }
        let url = format!("{}/api/global/em/jsonv2", self.inner.instance_url);
        let body = bytes::Bytes::from(
            serde_json::to_vec(&json!({ "records": events }))
                .map_err(|e| Outcome::permanent_local(format!("events cannot be encoded: {e}")))?,
        );
        let resp = self
            .execute("events", "em_event", Effect::Write, || {
                self.inner
                    .http
                    .post(&url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await?;
        let result = result_of(&resp, Effect::Write, unix_now())?;
        Ok(match result {
            Value::String(s) => s,
            Value::Object(o) => o.values().filter_map(Value::as_str).collect::<Vec<_>>().join("; "),
            other => other.to_string(),
        })
    }

    /// Upload a file to a record with the Attachment API. Returns the attachment's sys_id.
    pub async fn attach(
        &self,
        table: &str,
        sys_id: &str,
        file_name: &str,
        content_type: &str,
        bytes: impl Into<bytes::Bytes>,
    ) -> Result<String, Outcome> {
        check_table(table).map_err(Outcome::permanent_local)?;
        check_sys_id(sys_id).map_err(Outcome::permanent_local)?;
        if file_name.is_empty()
            || file_name.len() > 255
            || file_name.chars().any(|c| c.is_control() || c == '/' || c == '\\')
        {
            return Err(Outcome::permanent_local(format!(
                "invalid attachment file name {file_name:?}: 1-255 characters, no slashes or control characters"
            )));
        }
        let ct = HeaderValue::from_str(content_type)
            .ok()
            .filter(|_| content_type.contains('/'))
            .ok_or_else(|| Outcome::permanent_local(format!("invalid attachment content type {content_type:?}")))?;
        let body: bytes::Bytes = bytes.into();
        let url = format!("{}/api/now/attachment/file", self.inner.instance_url);
        let resp = self
            .execute("attach", table, Effect::Write, || {
                self.inner
                    .http
                    .post(&url)
                    .query(&[
                        ("table_name", table),
                        ("table_sys_id", sys_id),
                        ("file_name", file_name),
                    ])
                    .header(CONTENT_TYPE, ct.clone())
                    .body(body.clone())
            })
            .await?;
        let result = result_of(&resp, Effect::Write, unix_now())?;
        result
            .get("sys_id")
            .and_then(field_str)
            .filter(|s| check_sys_id(s).is_ok())
            .ok_or_else(|| Outcome::Ambiguous {
                reason: "attachment answer has no sys_id: it may exist".into(),
            })
    }

    /// Delete a record (used by the connection test to clean up after itself).
    pub async fn delete_record(&self, table: &str, sys_id: &str) -> Result<(), Outcome> {
        check_table(table).map_err(Outcome::permanent_local)?;
        check_sys_id(sys_id).map_err(Outcome::permanent_local)?;
        let url = format!("{}/api/now/table/{table}/{sys_id}", self.inner.instance_url);
        let resp = self
            .execute("delete", table, Effect::Write, || self.inner.http.delete(&url))
            .await?;
        match resp.status {
            200..=299 => Ok(()),
            _ => Err(result_of(&resp, Effect::Write, unix_now())
                .err()
                .unwrap_or_else(|| Outcome::retryable(format!("delete answered HTTP {}", resp.status)))),
        }
    }

    /// Send one request with authorization; on 401 retry once with fresh credentials/token.
    /// `Ok` is any HTTP answer other than a final 401; `Err` is a transport failure or auth failure.
    async fn execute(
        &self,
        op: &'static str,
        table: &str,
        effect: Effect,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<RawResponse, Outcome> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let auth = match self.inner.auth.authorization(&self.inner.http).await {
                Ok(a) => a,
                // Token request refused or credentials unusable: the secret may have been rotated.
                Err(Outcome::Auth { .. }) if attempt == 1 => {
                    self.inner.auth.invalidate_source().await;
                    continue;
                }
                Err(o) => return Err(o),
            };
            let started = Instant::now();
            let sent = build()
                .header(ACCEPT, "application/json")
                .header(reqwest::header::AUTHORIZATION, auth.value.clone())
                .send()
                .await;
            let mut resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    let outcome = transport_outcome(&e, effect);
                    tracing::debug!(
                        op,
                        table,
                        class = outcome.class(),
                        latency_ms = started.elapsed().as_millis() as u64,
                        "servicenow call failed"
                    );
                    return Err(outcome);
                }
            };
            let status = resp.status().as_u16();
            if status == 401 && attempt == 1 {
                tracing::debug!(
                    op,
                    table,
                    status,
                    "servicenow answered 401: retrying with fresh credentials"
                );
                self.inner.auth.rejected(&auth).await;
                continue;
            }
            let headers = std::mem::take(resp.headers_mut());
            let mut body = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        if body.len() + chunk.len() > self.inner.max_response_bytes {
                            return Err(effect.lost_answer(format!(
                                "HTTP {status} response larger than {} bytes",
                                self.inner.max_response_bytes
                            )));
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(
                            op,
                            table,
                            status,
                            latency_ms = started.elapsed().as_millis() as u64,
                            "servicenow response body failed"
                        );
                        return Err(
                            effect.lost_answer(format!("HTTP {status} response body incomplete: {}", describe(&e)))
                        );
                    }
                }
            }
            tracing::debug!(
                op,
                table,
                status,
                latency_ms = started.elapsed().as_millis() as u64,
                "servicenow call"
            );
            let raw = RawResponse {
                status,
                headers,
                body: body.into(),
            };
            if status == 401 {
                return Err(result_of(&raw, effect, unix_now()).err().unwrap_or(Outcome::Auth {
                    message: "HTTP 401".into(),
                }));
            }
            return Ok(raw);
        }
    }
}
