//! The REST APIs: Table, OAuth, Batch, Import Set, Event Management, Attachment.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::config::ApiKind;
use crate::query::EncodedQuery;
use crate::store::{Fields, LoggedRequest, Shared, Store, Token, format_glide_time, new_sys_id, priority};

pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub via_batch: bool,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    pub content_type: &'static str,
    pub user: Option<String>,
}

impl Reply {
    fn header(mut self, name: &'static str, value: impl ToString) -> Reply {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }
    fn with_user(mut self, user: &str) -> Reply {
        self.user = Some(user.to_string());
        self
    }
}

const JSON: &str = "application/json;charset=UTF-8";

pub fn json_reply(status: StatusCode, value: &Value) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: Bytes::from(serde_json::to_vec(value).expect("serialisable")),
        content_type: JSON,
        user: None,
    }
}

pub fn empty_reply(status: StatusCode) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: Bytes::new(),
        content_type: JSON,
        user: None,
    }
}

pub fn error_reply(status: StatusCode, message: &str, detail: Option<&str>) -> Reply {
    json_reply(
        status,
        &json!({"error": {"message": message, "detail": detail}, "status": "failure"}),
    )
}

pub fn unauthenticated_reply() -> Reply {
    error_reply(
        StatusCode::UNAUTHORIZED,
        "User Not Authenticated",
        Some("Required to provide Auth information"),
    )
    .header("www-authenticate", "BASIC realm=\"Service-now\"")
}

pub fn server_error_reply(status: u16) -> Reply {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("Server Error");
    error_reply(status, reason, Some("Injected server error"))
}

pub fn rate_limited_reply(
    _shared: &Shared,
    rule: &str,
    limit: u32,
    reset_unix: i64,
    retry_after_s: u64,
    api_label: &str,
) -> Reply {
    error_reply(
        StatusCode::TOO_MANY_REQUESTS,
        "Rate limit exceeded",
        Some(&format!(
            "Rate limit of {limit} requests per hour for {api_label} exceeded"
        )),
    )
    .header("x-ratelimit-limit", limit)
    .header("x-ratelimit-reset", reset_unix)
    .header("x-ratelimit-rule", rule)
    .header("retry-after", retry_after_s)
}

pub const HIBERNATING_PAGE: &str = "<!DOCTYPE html><html><head><title>Instance Hibernating</title></head><body>\
<h1>Your instance is hibernating</h1><p>This developer instance is hibernating because it has been inactive. \
Sign in to the developer portal to wake it up.</p></body></html>";

pub fn hibernating_reply() -> Reply {
    Reply {
        status: StatusCode::OK,
        headers: Vec::new(),
        body: Bytes::from_static(HIBERNATING_PAGE.as_bytes()),
        content_type: "text/html;charset=UTF-8",
        user: None,
    }
}

fn bad_request(message: &str, detail: Option<&str>) -> Reply {
    error_reply(StatusCode::BAD_REQUEST, message, detail)
}

fn not_found() -> Reply {
    error_reply(
        StatusCode::NOT_FOUND,
        "No Record found",
        Some("Record doesn't exist or ACL restricts the record retrieval"),
    )
}

fn acl_denied(operation: &str) -> Reply {
    error_reply(
        StatusCode::FORBIDDEN,
        "Operation Failed",
        Some(&format!("ACL Exception {operation} Failed due to security constraints")),
    )
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

fn params(query: &str) -> Vec<(String, String)> {
    url_decode_pairs(query)
}

fn url_decode_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn flag(params: &[(String, String)], name: &str) -> bool {
    param(params, name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn base_url(req: &Req) -> String {
    format!(
        "http://{}",
        header_str(&req.headers, &header::HOST).unwrap_or("127.0.0.1")
    )
}

pub fn handle(shared: &Shared, req: &Req) -> Reply {
    if req.path == "/oauth_token.do" {
        return oauth(shared, req);
    }
    if req.path == "/api/global/em/jsonv2" {
        return with_api(shared, req, ApiKind::Event, events);
    }
    let Some((versioned, segs)) = now_segments(&req.path) else {
        return unknown_resource();
    };
    match segs.as_slice() {
        ["table", table] => {
            let table = table.to_string();
            with_api(shared, req, ApiKind::Table, move |s, r, u| {
                table_collection(s, r, u, &table)
            })
        }
        ["table", table, sys_id] => {
            let (table, sys_id) = (table.to_string(), sys_id.to_string());
            with_api(shared, req, ApiKind::Table, move |s, r, u| {
                table_record(s, r, u, &table, &sys_id)
            })
        }
        ["batch"] if versioned && req.method == Method::POST => {
            if req.via_batch {
                return bad_request("Nested batch requests are not supported", None);
            }
            with_api(shared, req, ApiKind::Batch, batch)
        }
        ["import", staging] if req.method == Method::POST => {
            let staging = staging.to_string();
            with_api(shared, req, ApiKind::Import, move |s, r, u| {
                import(s, r, u, &staging, false)
            })
        }
        ["import", staging, "insertMultiple"] if req.method == Method::POST => {
            let staging = staging.to_string();
            with_api(shared, req, ApiKind::Import, move |s, r, u| {
                import(s, r, u, &staging, true)
            })
        }
        ["attachment", "file"] if req.method == Method::POST => with_api(shared, req, ApiKind::Attachment, attach),
        ["attachment", sys_id] => {
            let id = sys_id.to_string();
            with_api(shared, req, ApiKind::Attachment, move |s, r, u| {
                attachment(s, r, u, &id, false)
            })
        }
        ["attachment", sys_id, "file"] if req.method == Method::GET => {
            let id = sys_id.to_string();
            with_api(shared, req, ApiKind::Attachment, move |s, r, u| {
                attachment(s, r, u, &id, true)
            })
        }
        _ => unknown_resource(),
    }
}

fn unknown_resource() -> Reply {
    bad_request("Requested URI does not represent any resource", None)
}

/// Accept check, authentication, rate limits; then the handler.
fn with_api(shared: &Shared, req: &Req, api: ApiKind, f: impl FnOnce(&Shared, &Req, &str) -> Reply) -> Reply {
    match header_str(&req.headers, &header::ACCEPT) {
        None if shared.config.require_accept_header => {
            return bad_request("Missing Accept header", Some("Set Accept: application/json"));
        }
        Some(a) if !(a.contains("json") || a.contains("*/*") || a.contains("application/*")) => {
            return error_reply(
                StatusCode::NOT_ACCEPTABLE,
                "Not Acceptable",
                Some(&format!("Unsupported Accept: {a}")),
            );
        }
        _ => {}
    }
    let user = match authenticate(shared, &req.headers) {
        Ok(u) => u,
        Err(reply) => return reply,
    };
    if let Err(reply) = check_rate_limit(shared, &user, api) {
        return reply.with_user(&user);
    }
    f(shared, req, &user).with_user(&user)
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<String, Reply> {
    let Some(auth) = header_str(headers, &header::AUTHORIZATION) else {
        return Err(unauthenticated_reply());
    };
    if let Some(b64) = auth.strip_prefix("Basic ").or_else(|| auth.strip_prefix("basic ")) {
        let decoded = B64.decode(b64.trim()).map_err(|_| unauthenticated_reply())?;
        let text = String::from_utf8(decoded).map_err(|_| unauthenticated_reply())?;
        let (name, password) = text.split_once(':').ok_or_else(unauthenticated_reply)?;
        return match shared.config.users.iter().find(|u| u.name == name) {
            Some(u) if u.password == password => Ok(u.name.clone()),
            _ => Err(unauthenticated_reply()),
        };
    }
    if let Some(token) = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer ")) {
        let store = shared.store.lock().expect("store lock");
        return match store.access_tokens.get(token.trim()) {
            Some(t) if t.expires_at > shared.now_unix() => Ok(t.user.clone()),
            _ => Err(unauthenticated_reply()),
        };
    }
    Err(unauthenticated_reply())
}

fn check_rate_limit(shared: &Shared, user: &str, api: ApiKind) -> Result<(), Reply> {
    if shared.config.rate_limits.is_empty() {
        return Ok(());
    }
    let now = shared.now_unix();
    let hour = now - now.rem_euclid(3600);
    let roles = shared.roles_of(user);
    let mut store = shared.store.lock().expect("store lock");
    for (i, rule) in shared.config.rate_limits.iter().enumerate() {
        let applies = rule.user.as_deref().is_none_or(|u| u == user)
            && rule.role.as_deref().is_none_or(|r| roles.iter().any(|x| x == r))
            && (rule.api == ApiKind::Any || rule.api == api);
        if !applies {
            continue;
        }
        let count = store.rate_counters.entry((i, user.to_string(), hour)).or_insert(0);
        if *count >= rule.per_hour {
            let reset = hour + 3600;
            let retry = (reset - now).max(1) as u64;
            return Err(rate_limited_reply(
                shared,
                &rule.name,
                rule.per_hour,
                reset,
                retry,
                rule.api.label(),
            ));
        }
        *count += 1;
    }
    Ok(())
}

// ---------------------------------------------------------------- OAuth

fn oauth(shared: &Shared, req: &Req) -> Reply {
    let denied = || {
        json_reply(
            StatusCode::UNAUTHORIZED,
            &json!({"error_description": "access_denied", "error": "server_error"}),
        )
    };
    if req.method != Method::POST {
        return denied();
    }
    let form_ok = header_str(&req.headers, &header::CONTENT_TYPE)
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if !form_ok {
        return denied();
    }
    let form = url_decode_pairs(&String::from_utf8_lossy(&req.body));
    let get = |k: &str| param(&form, k).unwrap_or("");
    let Some(client) = shared
        .config
        .oauth_clients
        .iter()
        .find(|c| c.client_id == get("client_id") && c.client_secret == get("client_secret"))
    else {
        return denied();
    };
    let now = shared.now_unix();
    let user = match get("grant_type") {
        "password" => match shared.config.users.iter().find(|u| u.name == get("username")) {
            Some(u) if u.password == get("password") => u.name.clone(),
            _ => return denied(),
        },
        "client_credentials" => match &client.client_credentials_user {
            Some(u) => u.clone(),
            None => return denied(),
        },
        "refresh_token" => {
            let store = shared.store.lock().expect("store lock");
            match store.refresh_tokens.get(get("refresh_token")) {
                Some(t) if t.expires_at > now && t.client_id == client.client_id => t.user.clone(),
                _ => return denied(),
            }
        }
        _ => return denied(),
    };
    let lifetime = shared.config.oauth.access_token_lifetime_s;
    let access = random_token();
    let mut store = shared.store.lock().expect("store lock");
    store.access_tokens.insert(
        access.clone(),
        Token {
            user: user.clone(),
            client_id: client.client_id.clone(),
            expires_at: now + lifetime as i64,
        },
    );
    let refresh = if get("grant_type") == "refresh_token" {
        get("refresh_token").to_string()
    } else if get("grant_type") == "password" {
        let r = random_token();
        store.refresh_tokens.insert(
            r.clone(),
            Token {
                user: user.clone(),
                client_id: client.client_id.clone(),
                expires_at: now + shared.config.oauth.refresh_token_lifetime_s as i64,
            },
        );
        r
    } else {
        String::new()
    };
    drop(store);
    let mut body = json!({
        "access_token": access,
        "scope": "useraccount",
        "token_type": "Bearer",
        "expires_in": lifetime.saturating_sub(1),
    });
    if !refresh.is_empty() {
        body["refresh_token"] = Value::String(refresh);
    }
    json_reply(StatusCode::OK, &body).with_user(&user)
}

fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..86)
        .map(|_| {
            let n = rng.random_range(0..64u8);
            match n {
                0..26 => (b'A' + n) as char,
                26..52 => (b'a' + n - 26) as char,
                52..62 => (b'0' + n - 52) as char,
                62 => '-',
                _ => '_',
            }
        })
        .collect()
}

// ---------------------------------------------------------------- Table API

fn require_json_body(req: &Req) -> Result<Map<String, Value>, Reply> {
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

fn value_to_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Object(o) => o.get("value").map(value_to_string).unwrap_or_else(|| v.to_string()),
        other => other.to_string(),
    }
}

/// Normalise written fields: strings, schema filter, truncation, references; Err = 400 reply.
fn prepare_fields(shared: &Shared, table: &str, input: &Map<String, Value>, by_display: bool) -> Result<Fields, Reply> {
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
                .map_err(|detail| bad_request("Invalid reference", Some(&detail)))?;
        }
        out.insert(k.clone(), s);
    }
    Ok(out)
}

fn data_policy_check(shared: &Shared, table: &str, row: &Fields) -> Result<(), Reply> {
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

fn apply_priority(shared: &Shared, table: &str, row: &mut Fields) {
    if shared.table_config(table).is_some_and(|c| c.priority_matrix) {
        let impact = row.get("impact").map(String::as_str).unwrap_or("3");
        let urgency = row.get("urgency").map(String::as_str).unwrap_or("3");
        let p = priority(impact, urgency).unwrap_or("5");
        row.insert("priority".into(), p.into());
    }
}

/// Insert into `table` as `user` (ACL, data policy, numbering). Returns the stored row.
fn insert_record(
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

struct OutputOptions {
    fields: Option<Vec<String>>,
    exclude_reference_link: bool,
    display_value: String,
    base: String,
}

impl OutputOptions {
    fn from(req: &Req, params: &[(String, String)]) -> OutputOptions {
        OutputOptions {
            fields: param(params, "sysparm_fields")
                .filter(|f| !f.trim().is_empty())
                .map(|f| {
                    f.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                }),
            exclude_reference_link: flag(params, "sysparm_exclude_reference_link"),
            display_value: param(params, "sysparm_display_value")
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

fn table_collection(shared: &Shared, req: &Req, user: &str, table: &str) -> Reply {
    if shared.table_config(table).is_none() && table != "sys_user_group" {
        return bad_request(&format!("Invalid table {table}"), None);
    }
    let params = params(&req.query);
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
            let row = match prepare_fields(shared, table, &input, flag(&params, "sysparm_input_display_value")) {
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
            let query = EncodedQuery::parse(param(&params, "sysparm_query").unwrap_or(""));
            let limit: usize = param(&params, "sysparm_limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(10_000);
            let offset: usize = param(&params, "sysparm_offset")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
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

fn table_record(shared: &Shared, req: &Req, user: &str, table: &str, sys_id: &str) -> Reply {
    if shared.table_config(table).is_none() && table != "sys_user_group" {
        return bad_request(&format!("Invalid table {table}"), None);
    }
    let params = params(&req.query);
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
            let changes = match prepare_fields(shared, table, &input, flag(&params, "sysparm_input_display_value")) {
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

// ---------------------------------------------------------------- Batch API

fn batch(shared: &Shared, req: &Req, _user: &str) -> Reply {
    let body = match require_json_body(req) {
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
        elapsed_ms += cfg.item_execution_ms + started.elapsed().as_millis() as u64;
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
            "execution_time": cfg.item_execution_ms,
        }));
    }
    json_reply(
        StatusCode::OK,
        &json!({"batch_request_id": batch_id, "serviced_requests": serviced, "unserviced_requests": unserviced}),
    )
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

// ---------------------------------------------------------------- Import Set API

fn import(shared: &Shared, req: &Req, user: &str, staging: &str, multiple: bool) -> Reply {
    let Some(set) = shared.config.import_sets.iter().find(|s| s.staging_table == staging) else {
        return bad_request(&format!("Invalid table {staging}"), None);
    };
    if !(shared.is_admin(user) || shared.roles_of(user).iter().any(|r| set.roles.contains(r))) {
        return acl_denied("Insert");
    }
    let body = match require_json_body(req) {
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
    let params = params(&req.query);
    let by_display = flag(&params, "sysparm_input_display_value");
    let base = base_url(req);
    let mut store = shared.store.lock().expect("store lock");
    store.import_set_counter += 1;
    let iset = format!("ISET{:07}", store.import_set_counter + 10000);
    let mut results = Vec::new();
    for staged in rows {
        // The staging row itself is kept, as on an instance.
        let staging_row: Fields = staged.iter().map(|(k, v)| (k.clone(), value_to_string(v))).collect();
        let _ = insert_record(shared, &mut store, staging, user, staging_row.clone());
        let mut mapped = Map::new();
        for (k, v) in &staged {
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
    set: &crate::config::ImportSetConfig,
    user: &str,
    mapped: &Map<String, Value>,
    by_display: bool,
    base: &str,
) -> Value {
    let table = set.target_table.as_str();
    let error = |message: String| json!({"transform_map": set.transform_map, "table": table, "status": "error", "error_message": message});
    let fields = match prepare_fields(shared, table, mapped, by_display) {
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
        Some(sys_id) => {
            let now = format_glide_time(shared.now());
            let row = store
                .tables
                .get_mut(table)
                .and_then(|d| d.get_mut(&sys_id))
                .expect("row found above");
            let mut updated = row.clone();
            updated.extend(fields);
            apply_priority(shared, table, &mut updated);
            let count: u64 = updated.get("sys_mod_count").and_then(|c| c.parse().ok()).unwrap_or(0);
            updated.insert("sys_mod_count".into(), (count + 1).to_string());
            updated.insert("sys_updated_on".into(), now);
            updated.insert("sys_updated_by".into(), user.to_string());
            *row = updated.clone();
            ("updated", updated)
        }
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

// ---------------------------------------------------------------- Event Management

fn events(shared: &Shared, req: &Req, user: &str) -> Reply {
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
    let body = match require_json_body(req) {
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
        let mut event: Fields = obj.iter().map(|(k, v)| (k.clone(), value_to_string(v))).collect();
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

// ---------------------------------------------------------------- Attachment API

fn attach(shared: &Shared, req: &Req, user: &str) -> Reply {
    let params = params(&req.query);
    let (Some(table), Some(table_sys_id), Some(file_name)) = (
        param(&params, "table_name"),
        param(&params, "table_sys_id"),
        param(&params, "file_name"),
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

fn attachment(shared: &Shared, req: &Req, user: &str, sys_id: &str, content: bool) -> Reply {
    let mut store = shared.store.lock().expect("store lock");
    let Some(meta) = store.tables.get("sys_attachment").and_then(|t| t.get(sys_id)).cloned() else {
        return not_found();
    };
    let parent_visible = store
        .tables
        .get(meta.get("table_name").map(String::as_str).unwrap_or(""))
        .and_then(|t| t.get(meta.get("table_sys_id").map(String::as_str).unwrap_or("")))
        .is_some_and(|row| shared.can_read(user, meta.get("table_name").map(String::as_str).unwrap_or(""), row));
    if !parent_visible && !shared.is_admin(user) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%5Eb+c%3D"), "a^b c=");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

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
}
