//! The alert webhook body (schema version 1, documented in docs/alert-schema.md) and its validation.
//!
//! Validation walks the parsed JSON by hand instead of relying on serde's derive, so that it reports EVERY
//! problem at once, each with its JSON path, rather than stopping at the first.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::json::{self, Node, Object};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The schema version this build understands.
pub const SCHEMA_VERSION: &str = "1";

pub const MAX_ALERT_ID: usize = 128;
pub const MAX_EMPLOYEE_FIELD: usize = 128;
pub const MAX_DEPARTMENT: usize = 100;
pub const MAX_DESCRIPTION: usize = 4000;
pub const MAX_URL: usize = 2048;
pub const MAX_NAME: usize = 200;
pub const MAX_LIST_ITEMS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertType {
    PolicyViolation,
    Dlp,
    BehavioralAnomaly,
    Productivity,
    Custom,
}

impl AlertType {
    /// This type's bit in a set of alert types (one bit per variant, in `ALL` order).
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    pub const ALL: [AlertType; 5] = [
        AlertType::PolicyViolation,
        AlertType::Dlp,
        AlertType::BehavioralAnomaly,
        AlertType::Productivity,
        AlertType::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::PolicyViolation => "policy_violation",
            AlertType::Dlp => "dlp",
            AlertType::BehavioralAnomaly => "behavioral_anomaly",
            AlertType::Productivity => "productivity",
            AlertType::Custom => "custom",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        AlertType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Human label used in ticket text.
    pub fn label(self) -> &'static str {
        match self {
            AlertType::PolicyViolation => "Policy violation",
            AlertType::Dlp => "Data loss prevention",
            AlertType::BehavioralAnomaly => "Behavioral anomaly",
            AlertType::Productivity => "Productivity",
            AlertType::Custom => "Custom rule",
        }
    }
}

impl fmt::Display for AlertType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
}

impl Severity {
    pub const ALL: [Severity; 4] = [Severity::Critical, Severity::High, Severity::Medium, Severity::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Severity::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            Severity::Critical => "Critical",
            Severity::High => "High",
            Severity::Medium => "Medium",
            Severity::Low => "Low",
        }
    }

    /// 0 = most severe; used to pick the strongest severity of an aggregated batch.
    pub fn rank(self) -> u8 {
        match self {
            Severity::Critical => 0,
            Severity::High => 1,
            Severity::Medium => 2,
            Severity::Low => 3,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Employee {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub department: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomRule {
    pub id: String,
    pub name: String,
}

/// Channel a DLP event left through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlpChannel {
    Usb,
    Email,
    CloudUpload,
    Print,
    Clipboard,
    NetworkShare,
    Other,
}

impl DlpChannel {
    const ALL: [(&'static str, DlpChannel); 7] = [
        ("usb", DlpChannel::Usb),
        ("email", DlpChannel::Email),
        ("cloud_upload", DlpChannel::CloudUpload),
        ("print", DlpChannel::Print),
        ("clipboard", DlpChannel::Clipboard),
        ("network_share", DlpChannel::NetworkShare),
        ("other", DlpChannel::Other),
    ];
}

/// Per-type details. Only the typed fields below are read; unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Details {
    Dlp {
        file_count: u64,
        bytes: u64,
        channel: DlpChannel,
    },
    BehavioralAnomaly {
        systems: Vec<String>,
        duration_minutes: u64,
        applications: Vec<String>,
    },
    Productivity {
        hours_per_day: f64,
        categories: Vec<String>,
        weekly_trend: Vec<f64>,
    },
    PolicyViolation {
        policy: String,
        history_30d: ComplianceHistory,
    },
    Custom(Map<String, Value>),
    None,
}

/// The last 30 days of an employee's compliance history, as the monitoring product summarises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplianceHistory {
    pub violations: u64,
    pub warnings: u64,
}

/// A validated alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub alert_id: String,
    pub alert_type: AlertType,
    pub severity: Severity,
    /// As sent (RFC 3339); `occurred_at_unix` is the parsed instant.
    pub occurred_at: String,
    pub occurred_at_unix: i64,
    pub employee: Employee,
    pub description: String,
    pub risk_score: u8,
    pub evidence_url: String,
    pub details: Details,
    /// The `details` object as sent (for routing conditions over `details.*`).
    pub raw_details: Map<String, Value>,
    pub rule: Option<CustomRule>,
    pub test: bool,
    /// Top-level keys the schema does not know: accepted, never sent to ServiceNow.
    pub ignored_fields: Vec<String>,
}

/// One validation problem: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// JSON path, e.g. `$.employee.department`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one alert body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("invalid alert: {}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct InvalidAlert {
    pub problems: Vec<Problem>,
}

/// The top-level keys schema v1 defines (a `match`, which compiles to a switch on length and bytes).
fn is_known_field(key: &str) -> bool {
    matches!(
        key,
        "schema_version"
            | "alert_id"
            | "alert_type"
            | "severity"
            | "occurred_at"
            | "employee"
            | "description"
            | "risk_score"
            | "evidence_url"
            | "details"
            | "rule"
            | "test"
    )
}

impl Alert {
    /// Parse and validate a webhook body.
    pub fn from_slice(body: &[u8]) -> Result<Alert, InvalidAlert> {
        match json::parse(body) {
            Ok(v) => Alert::from_node(&v),
            Err(e) => Err(InvalidAlert {
                problems: vec![Problem {
                    path: "$".into(),
                    message: format!("body is not valid JSON: {e}"),
                }],
            }),
        }
    }

    /// Validate an already-parsed body.
    pub fn from_value(v: &Value) -> Result<Alert, InvalidAlert> {
        Alert::from_node(&Node::from_value(v))
    }

    /// The one validation, over a borrowed tree (see [`crate::json`]).
    pub fn from_node(v: &Node<'_>) -> Result<Alert, InvalidAlert> {
        let mut c = Checker::default();
        let Some(obj) = v.as_object() else {
            c.problem("$", "the alert must be a JSON object");
            return Err(c.finish());
        };

        if let Some(ver) = obj.get("schema_version") {
            let ok =
                ver.as_str() == Some(SCHEMA_VERSION) || ver.as_number().and_then(serde_json::Number::as_u64) == Some(1);
            if !ok {
                c.problem(
                    "$.schema_version",
                    format!("unsupported schema version {ver}; this relay understands \"{SCHEMA_VERSION}\""),
                );
            }
        }

        let alert_id = c.string(obj, "$", "alert_id", MAX_ALERT_ID, true);
        let alert_type = c.enumerated(
            obj,
            "$",
            "alert_type",
            AlertType::parse,
            &AlertType::ALL.map(|t| t.as_str()),
        );
        let severity = c.enumerated(
            obj,
            "$",
            "severity",
            Severity::parse,
            &Severity::ALL.map(|s| s.as_str()),
        );
        let occurred_at = c.string(obj, "$", "occurred_at", 64, true);
        let occurred_at_unix = occurred_at
            .as_deref()
            .and_then(|s| match OffsetDateTime::parse(s, &Rfc3339) {
                Ok(t) => Some(t.unix_timestamp()),
                Err(_) => {
                    c.problem(
                        "$.occurred_at",
                        format!("{s:?} is not an RFC 3339 timestamp (e.g. 2026-11-20T14:03:00Z)"),
                    );
                    None
                }
            });
        let employee = c.employee(obj.get("employee"));
        let description = c.text(obj, "$", "description", MAX_DESCRIPTION);
        let risk_score = c.risk_score(obj.get("risk_score"));
        let evidence_url = c.evidence_url(obj.get("evidence_url"));
        let rule = c.custom_rule(obj.get("rule"), alert_type);
        let test = match obj.get("test") {
            None | Some(Node::Null) => false,
            Some(Node::Bool(b)) => *b,
            Some(other) => {
                c.problem("$.test", format!("must be true or false, got {}", other.kind()));
                false
            }
        };
        let (details, raw_details) = c.details(obj.get("details"), alert_type);
        let mut ignored_fields: Vec<String> = obj.keys().filter(|k| !is_known_field(k)).map(str::to_owned).collect();
        ignored_fields.sort_unstable();
        ignored_fields.dedup();

        if !c.problems.is_empty() {
            return Err(c.finish());
        }
        // Every Option below is Some when no problem was recorded.
        Ok(Alert {
            alert_id: alert_id.unwrap_or_default(),
            alert_type: alert_type.unwrap_or(AlertType::Custom),
            severity: severity.unwrap_or(Severity::Low),
            occurred_at: occurred_at.unwrap_or_default(),
            occurred_at_unix: occurred_at_unix.unwrap_or_default(),
            employee: employee.unwrap_or_else(|| Employee {
                id: String::new(),
                display_name: None,
                email: None,
                department: String::new(),
                manager: None,
            }),
            description: description.unwrap_or_default(),
            risk_score: risk_score.unwrap_or_default(),
            evidence_url: evidence_url.unwrap_or_default(),
            details,
            raw_details,
            rule,
            test,
            ignored_fields,
        })
    }
}

/// A non-negative whole number, written as an integer or as a float without fraction (`847` or `847.0`).
fn whole(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15)
            .map(|f| f as u64)
    })
}

/// True for characters that must never reach a ticket: C0/C1 controls (and DEL), except the line breaks and
/// tabs allowed in free text.
fn forbidden_control(ch: char, allow_newlines: bool) -> bool {
    if allow_newlines && matches!(ch, '\n' | '\t' | '\r') {
        return false;
    }
    ch.is_control()
}

/// Bytes a URL path or query keeps as they are: letters, digits and `-._~/!$&()*+,;=:?`.
const PATH_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~' | b'/' | b'!' | b'$' | b'&')
            || matches!(c, b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'?');
        b += 1;
    }
    t
};

/// True for an `https://host/path` link that the URL parser would accept unchanged with a host and no
/// credentials: a lowercase DNS host name (no port, no IP address, no punycode) and a path of characters that
/// need no escaping, without dot segments. Such links skip the full parse; anything else takes it.
fn already_normal_https(s: &str) -> bool {
    let Some((host, path)) = s.strip_prefix("https://").and_then(|rest| rest.split_once('/')) else {
        return false;
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && !l.starts_with("xn--")
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let host_ok = host.split('.').all(label_ok)
        && host
            .rsplit('.')
            .next()
            .is_some_and(|last| last.starts_with(|c: char| c.is_ascii_lowercase()));
    let path_ok = !path.starts_with('.') && !path.contains("/.") && path.bytes().all(|b| PATH_BYTE[usize::from(b)]);
    host_ok && path_ok
}

/// False when `s` certainly holds no control character: none of its bytes is below 0x20, DEL, or 0xC2 (the
/// UTF-8 lead byte of the C1 controls U+0080–U+009F). A cheap scan before the per-character check.
fn may_hold_control(s: &str) -> bool {
    s.as_bytes().chunks(32).any(|chunk| {
        // no early exit inside a chunk, so the compiler can compare 32 bytes at a time
        chunk
            .iter()
            .fold(false, |found, &b| found | (b < 0x20) | (b == 0x7f) | (b == 0xc2))
    })
}

/// `at.key`, formatted only when a problem is reported.
struct Joined<'a>(&'a str, &'a str);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, path: impl fmt::Display, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn finish(self) -> InvalidAlert {
        InvalidAlert {
            problems: self.problems,
        }
    }

    /// `path` is formatted only when there is a problem to report (the valid path allocates nothing).
    fn checked_str(&mut self, path: &dyn fmt::Display, s: &str, max: usize, allow_newlines: bool) -> Option<String> {
        let mut ok = true;
        if s.trim().is_empty() {
            self.problem(path.to_string(), "must not be empty");
            ok = false;
        }
        let n = if s.len() <= max { s.len() } else { s.chars().count() };
        if n > max {
            self.problem(path.to_string(), format!("is {n} characters long; the limit is {max}"));
            ok = false;
        }
        // a control character is a byte below 0x20, DEL, or a C1 control (UTF-8 lead byte 0xC2): scan bytes
        // first and count characters only to report where
        if let Some(pos) = may_hold_control(s)
            .then(|| s.chars().position(|ch| forbidden_control(ch, allow_newlines)))
            .flatten()
        {
            self.problem(
                path.to_string(),
                format!("contains a control character at position {pos}"),
            );
            ok = false;
        }
        ok.then(|| s.to_owned())
    }

    fn string_at(
        &mut self,
        v: Option<&Node<'_>>,
        path: &dyn fmt::Display,
        max: usize,
        required: bool,
        newlines: bool,
    ) -> Option<String> {
        match v {
            None | Some(Node::Null) => {
                if required {
                    self.problem(path.to_string(), "is required");
                }
                None
            }
            Some(Node::String(s)) => self.checked_str(path, s, max, newlines),
            Some(other) => {
                self.problem(path.to_string(), format!("must be a string, got {}", other.kind()));
                None
            }
        }
    }

    fn string(&mut self, obj: &Object<'_>, at: &str, key: &str, max: usize, required: bool) -> Option<String> {
        self.string_at(obj.get(key), &Joined(at, key), max, required, false)
    }

    fn text(&mut self, obj: &Object<'_>, at: &str, key: &str, max: usize) -> Option<String> {
        self.string_at(obj.get(key), &Joined(at, key), max, true, true)
    }

    fn enumerated<T>(
        &mut self,
        obj: &Object<'_>,
        at: &str,
        key: &str,
        parse: fn(&str) -> Option<T>,
        allowed: &[&str],
    ) -> Option<T> {
        let path = Joined(at, key);
        match obj.get(key) {
            None | Some(Node::Null) => {
                self.problem(path, format!("is required (one of: {})", allowed.join(", ")));
                None
            }
            Some(Node::String(s)) => {
                let parsed = parse(s);
                if parsed.is_none() {
                    self.problem(
                        path,
                        format!("unknown value {s:?}; expected one of: {}", allowed.join(", ")),
                    );
                }
                parsed
            }
            Some(other) => {
                self.problem(path, format!("must be a string, got {}", other.kind()));
                None
            }
        }
    }

    fn employee(&mut self, v: Option<&Node<'_>>) -> Option<Employee> {
        let obj = match v {
            None | Some(Node::Null) => {
                self.problem("$.employee", "is required");
                return None;
            }
            Some(Node::Object(o)) => o,
            Some(other) => {
                self.problem("$.employee", format!("must be an object, got {}", other.kind()));
                return None;
            }
        };
        let at = "$.employee";
        let id = self.string(obj, at, "id", MAX_EMPLOYEE_FIELD, true);
        let display_name = self.string(obj, at, "display_name", MAX_NAME, false);
        let email = self.string(obj, at, "email", MAX_EMPLOYEE_FIELD * 2, false);
        if let Some(e) = &email {
            let valid = e
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !e.contains(' '));
            if !valid {
                self.problem("$.employee.email", format!("{e:?} is not an e-mail address"));
            }
        }
        let department = self.string(obj, at, "department", MAX_DEPARTMENT, true);
        let manager = self.string(obj, at, "manager", MAX_NAME, false);
        Some(Employee {
            id: id?,
            display_name,
            email,
            department: department?,
            manager,
        })
    }

    fn risk_score(&mut self, v: Option<&Node<'_>>) -> Option<u8> {
        let path = "$.risk_score";
        match v {
            None | Some(Node::Null) => {
                self.problem(path, "is required (an integer from 0 to 100)");
                None
            }
            Some(Node::Number(n)) => match n.as_i64() {
                Some(i) if (0..=100).contains(&i) => Some(i as u8),
                Some(i) => {
                    self.problem(path, format!("{i} is out of range; must be 0 to 100"));
                    None
                }
                None => match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && (0.0..=100.0).contains(&f) => Some(f as u8),
                    _ => {
                        self.problem(path, format!("{n} is not an integer from 0 to 100"));
                        None
                    }
                },
            },
            Some(other) => {
                self.problem(path, format!("must be an integer from 0 to 100, got {}", other.kind()));
                None
            }
        }
    }

    fn evidence_url(&mut self, v: Option<&Node<'_>>) -> Option<String> {
        let path = "$.evidence_url";
        let s = self.string_at(v, &path, MAX_URL, true, false)?;
        if already_normal_https(&s) {
            return Some(s);
        }
        match url::Url::parse(&s) {
            Err(e) => {
                self.problem(path, format!("is not a valid URL: {e}"));
                None
            }
            Ok(u) if u.scheme() != "https" => {
                self.problem(path, format!("must be an https:// link, got scheme {:?}", u.scheme()));
                None
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                self.problem(path, "must not contain user credentials");
                None
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) || s.contains('@') || s.starts_with("https:///") => {
                self.problem(path, "must be https://<host>/<path> with a host and no user part");
                None
            }
            // forwarded in its normalised form
            Ok(u) => Some(String::from(u)),
        }
    }

    fn custom_rule(&mut self, v: Option<&Node<'_>>, alert_type: Option<AlertType>) -> Option<CustomRule> {
        match v {
            None | Some(Node::Null) => {
                if alert_type == Some(AlertType::Custom) {
                    self.problem(
                        "$.rule",
                        "is required for alert_type \"custom\" ({\"id\": …, \"name\": …})",
                    );
                }
                None
            }
            Some(Node::Object(o)) => {
                let id = self.string(o, "$.rule", "id", MAX_ALERT_ID, true);
                let name = self.string(o, "$.rule", "name", MAX_NAME, true);
                Some(CustomRule { id: id?, name: name? })
            }
            Some(other) => {
                self.problem("$.rule", format!("must be an object, got {}", other.kind()));
                None
            }
        }
    }

    fn u64_at(&mut self, obj: &Object<'_>, key: &str) -> Option<u64> {
        let path = Joined("$.details", key);
        match obj.get(key) {
            None | Some(Node::Null) => {
                self.problem(path, "is required");
                None
            }
            Some(Node::Number(n)) => {
                let r = whole(n);
                if r.is_none() {
                    self.problem(path, format!("{n} must be a non-negative integer"));
                }
                r
            }
            Some(other) => {
                self.problem(path, format!("must be a non-negative integer, got {}", other.kind()));
                None
            }
        }
    }

    fn f64_at(&mut self, v: Option<&Node<'_>>, path: &str, max: f64) -> Option<f64> {
        match v {
            None | Some(Node::Null) => {
                self.problem(path, "is required");
                None
            }
            Some(Node::Number(n)) => match n.as_f64() {
                Some(f) if (0.0..=max).contains(&f) => Some(f),
                _ => {
                    self.problem(path, format!("{n} is out of range; must be 0 to {max}"));
                    None
                }
            },
            Some(other) => {
                self.problem(path, format!("must be a number, got {}", other.kind()));
                None
            }
        }
    }

    fn string_list(&mut self, obj: &Object<'_>, key: &str) -> Option<Vec<String>> {
        let path = Joined("$.details", key);
        match obj.get(key) {
            None | Some(Node::Null) => {
                self.problem(path, "is required (a list of strings)");
                None
            }
            Some(Node::Array(items)) => {
                if items.len() > MAX_LIST_ITEMS {
                    self.problem(
                        &path,
                        format!("has {} items; the limit is {MAX_LIST_ITEMS}", items.len()),
                    );
                    return None;
                }
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.string_at(Some(item), &format_args!("{path}[{i}]"), MAX_NAME, true, false));
                }
                out.into_iter().collect()
            }
            Some(other) => {
                self.problem(path, format!("must be a list of strings, got {}", other.kind()));
                None
            }
        }
    }

    fn details(&mut self, v: Option<&Node<'_>>, alert_type: Option<AlertType>) -> (Details, Map<String, Value>) {
        let obj = match v {
            None | Some(Node::Null) => return (Details::None, Map::new()),
            Some(Node::Object(o)) => o,
            Some(other) => {
                self.problem("$.details", format!("must be an object, got {}", other.kind()));
                return (Details::None, Map::new());
            }
        };
        let details = match alert_type {
            None => Details::None,
            Some(AlertType::Dlp) => {
                let file_count = self.u64_at(obj, "file_count");
                let bytes = self.u64_at(obj, "bytes");
                let channel = match obj.get("channel") {
                    Some(Node::String(s)) => {
                        let c = DlpChannel::ALL.iter().find(|(n, _)| n == s).map(|(_, c)| *c);
                        if c.is_none() {
                            let names: Vec<_> = DlpChannel::ALL.iter().map(|(n, _)| *n).collect();
                            self.problem(
                                "$.details.channel",
                                format!("unknown value {s:?}; expected one of: {}", names.join(", ")),
                            );
                        }
                        c
                    }
                    None | Some(Node::Null) => {
                        self.problem("$.details.channel", "is required");
                        None
                    }
                    Some(other) => {
                        self.problem("$.details.channel", format!("must be a string, got {}", other.kind()));
                        None
                    }
                };
                match (file_count, bytes, channel) {
                    (Some(file_count), Some(bytes), Some(channel)) => Details::Dlp {
                        file_count,
                        bytes,
                        channel,
                    },
                    _ => Details::None,
                }
            }
            Some(AlertType::BehavioralAnomaly) => {
                self.optional_bool(obj, "after_hours");
                self.optional_bool(obj, "privileged_account");
                let systems = self.string_list(obj, "systems");
                let duration_minutes = self.u64_at(obj, "duration_minutes");
                let applications = self.string_list(obj, "applications");
                match (systems, duration_minutes, applications) {
                    (Some(systems), Some(duration_minutes), Some(applications)) => Details::BehavioralAnomaly {
                        systems,
                        duration_minutes,
                        applications,
                    },
                    _ => Details::None,
                }
            }
            Some(AlertType::Productivity) => {
                if obj.get("weeks").is_some_and(|v| !v.is_null()) {
                    self.u64_at(obj, "weeks");
                }
                let hours = self.f64_at(obj.get("hours_per_day"), "$.details.hours_per_day", 24.0);
                let categories = self.string_list(obj, "categories");
                let trend = match obj.get("weekly_trend") {
                    Some(Node::Array(items)) if items.len() <= 52 => {
                        let mut out = Vec::new();
                        for (i, item) in items.iter().enumerate() {
                            out.push(self.f64_at(Some(item), &format!("$.details.weekly_trend[{i}]"), 168.0));
                        }
                        out.into_iter().collect::<Option<Vec<_>>>()
                    }
                    Some(Node::Array(items)) => {
                        self.problem(
                            "$.details.weekly_trend",
                            format!("has {} weeks; the limit is 52", items.len()),
                        );
                        None
                    }
                    None | Some(Node::Null) => {
                        self.problem("$.details.weekly_trend", "is required (hours per week, oldest first)");
                        None
                    }
                    Some(other) => {
                        self.problem(
                            "$.details.weekly_trend",
                            format!("must be a list of numbers, got {}", other.kind()),
                        );
                        None
                    }
                };
                match (hours, categories, trend) {
                    (Some(hours_per_day), Some(categories), Some(weekly_trend)) => Details::Productivity {
                        hours_per_day,
                        categories,
                        weekly_trend,
                    },
                    _ => Details::None,
                }
            }
            Some(AlertType::PolicyViolation) => {
                let policy = self.string(obj, "$.details", "policy", MAX_NAME, true);
                let history = match obj.get("history_30d") {
                    Some(Node::Object(h)) => {
                        let violations = self.history_count(h, "violations");
                        let warnings = self.history_count(h, "warnings");
                        violations
                            .zip(warnings)
                            .map(|(violations, warnings)| ComplianceHistory { violations, warnings })
                    }
                    None | Some(Node::Null) => {
                        self.problem(
                            "$.details.history_30d",
                            "is required ({\"violations\": n, \"warnings\": n} over the last 30 days)",
                        );
                        None
                    }
                    Some(other) => {
                        self.problem(
                            "$.details.history_30d",
                            format!("must be an object, got {}", other.kind()),
                        );
                        None
                    }
                };
                match (policy, history) {
                    (Some(policy), Some(history_30d)) => Details::PolicyViolation { policy, history_30d },
                    _ => Details::None,
                }
            }
            Some(AlertType::Custom) => {
                let map = obj.to_map();
                for (k, v) in &map {
                    if let Value::String(s) = v {
                        self.checked_str(&Joined("$.details", k), s, MAX_DESCRIPTION, true);
                    }
                }
                return (Details::Custom(map.clone()), map);
            }
        };
        (details, obj.to_map())
    }

    fn optional_bool(&mut self, obj: &Object<'_>, key: &str) {
        match obj.get(key) {
            None | Some(Node::Null) | Some(Node::Bool(_)) => {}
            Some(other) => self.problem(
                format!("$.details.{key}"),
                format!("must be true or false, got {}", other.kind()),
            ),
        }
    }

    fn history_count(&mut self, h: &Object<'_>, key: &str) -> Option<u64> {
        let path = Joined("$.details.history_30d", key);
        match h.get(key).and_then(|v| v.as_number()).and_then(whole) {
            Some(n) => Some(n),
            None => {
                self.problem(path, "is required (a non-negative integer)");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn usb_copy() -> Value {
        json!({
            "schema_version": "1",
            "alert_id": "emon-7f3a9c",
            "alert_type": "dlp",
            "severity": "critical",
            "occurred_at": "2026-11-20T14:03:00Z",
            "employee": {"id": "E1042", "display_name": "Dana Reyes", "email": "dana.reyes@example.com",
                         "department": "Engineering", "manager": "M2001"},
            "description": "Copied 847 files (2.3 GB) to an unregistered USB mass-storage device",
            "risk_score": 92,
            "evidence_url": "https://monitor.example.com/alerts/emon-7f3a9c",
            "details": {"file_count": 847, "bytes": 2469606195u64, "channel": "usb"},
            "test": false
        })
    }

    fn problems(v: Value) -> Vec<Problem> {
        Alert::from_value(&v).expect_err("should be invalid").problems
    }

    fn has(problems: &[Problem], path: &str, needle: &str) -> bool {
        problems.iter().any(|p| p.path == path && p.message.contains(needle))
    }

    #[test]
    fn alert_type_bits_follow_the_all_order() {
        for (i, t) in AlertType::ALL.iter().enumerate() {
            assert_eq!(t.bit(), 1 << i, "{t}");
        }
    }

    #[test]
    fn a_valid_alert_parses_with_typed_details() {
        let a = Alert::from_value(&usb_copy()).unwrap();
        assert_eq!(a.alert_type, AlertType::Dlp);
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.risk_score, 92);
        assert_eq!(
            a.details,
            Details::Dlp {
                file_count: 847,
                bytes: 2469606195,
                channel: DlpChannel::Usb
            }
        );
        assert_eq!(a.occurred_at_unix, 1_795_183_380);
        assert!(a.ignored_fields.is_empty());
    }

    #[test]
    fn unknown_extra_fields_are_accepted_and_listed() {
        let mut v = usb_copy();
        v["screenshot"] = json!("base64...");
        v["tenant"] = json!("acme");
        let a = Alert::from_value(&v).unwrap();
        assert_eq!(a.ignored_fields, vec!["screenshot".to_string(), "tenant".to_string()]);

        // from raw bytes with repeated keys: the last value counts, an unknown key is listed once
        let mut text = serde_json::to_string(&usb_copy()).unwrap();
        text.pop();
        text.push_str(r#","zeta":1,"risk_score":12,"zeta":2,"alpha":true}"#);
        let a = Alert::from_slice(text.as_bytes()).unwrap();
        assert_eq!(a.risk_score, 12);
        assert_eq!(a.ignored_fields, ["alpha", "zeta"]);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_path() {
        let v = json!({
            "alert_type": "keylogger",
            "severity": "urgent",
            "occurred_at": "20 Nov 2026 14:03",
            "employee": {"id": "", "department": "x".repeat(101), "email": "nobody"},
            "description": "bad\u{0007}bell",
            "risk_score": 140,
            "evidence_url": "http://monitor.example.com/a/1",
            "details": {"file_count": -3}
        });
        let p = problems(v);
        assert!(has(&p, "$.alert_id", "is required"), "{p:?}");
        assert!(has(&p, "$.alert_type", "unknown value \"keylogger\""), "{p:?}");
        assert!(
            has(&p, "$.severity", "expected one of: critical, high, medium, low"),
            "{p:?}"
        );
        assert!(has(&p, "$.occurred_at", "RFC 3339"), "{p:?}");
        assert!(has(&p, "$.employee.id", "must not be empty"), "{p:?}");
        assert!(has(&p, "$.employee.department", "the limit is 100"), "{p:?}");
        assert!(has(&p, "$.employee.email", "not an e-mail"), "{p:?}");
        assert!(has(&p, "$.description", "control character"), "{p:?}");
        assert!(has(&p, "$.risk_score", "out of range"), "{p:?}");
        assert!(has(&p, "$.evidence_url", "https"), "{p:?}");
        assert_eq!(p.len(), 10, "{p:?}");
    }

    #[test]
    fn missing_fields_are_named() {
        let p = problems(json!({}));
        for path in [
            "$.alert_id",
            "$.alert_type",
            "$.severity",
            "$.occurred_at",
            "$.employee",
            "$.description",
            "$.risk_score",
            "$.evidence_url",
        ] {
            assert!(has(&p, path, "is required"), "{path} in {p:?}");
        }
    }

    #[test]
    fn wrong_json_types_are_named() {
        let mut v = usb_copy();
        v["risk_score"] = json!("92");
        v["employee"] = json!("E1042");
        v["test"] = json!("yes");
        v["details"] = json!([1]);
        let p = problems(v);
        assert!(has(&p, "$.risk_score", "got a string"));
        assert!(has(&p, "$.employee", "must be an object"));
        assert!(has(&p, "$.test", "true or false"));
        assert!(has(&p, "$.details", "must be an object"));
    }

    #[test]
    fn malformed_urls_and_credentials_in_urls_are_rejected() {
        for (url, needle) in [
            ("not a url", "not a valid URL"),
            ("https://user:pw@monitor.example.com/a", "credentials"),
            ("ftp://monitor.example.com/a", "https"),
            ("javascript:alert(1)", "https"),
        ] {
            let mut v = usb_copy();
            v["evidence_url"] = json!(url);
            let p = problems(v);
            assert!(has(&p, "$.evidence_url", needle), "{url}: {p:?}");
        }
    }

    #[test]
    fn too_long_strings_report_length_and_limit() {
        let mut v = usb_copy();
        v["alert_id"] = json!("a".repeat(129));
        v["description"] = json!("d".repeat(4001));
        let p = problems(v);
        assert!(has(&p, "$.alert_id", "129 characters long; the limit is 128"));
        assert!(has(&p, "$.description", "4001 characters long; the limit is 4000"));
    }

    #[test]
    fn description_may_hold_line_breaks_but_ids_may_not() {
        let mut v = usb_copy();
        v["description"] = json!("line one\nline two\ttabbed");
        assert!(Alert::from_value(&v).is_ok());
        v["alert_id"] = json!("abc\ndef");
        assert!(has(&problems(v), "$.alert_id", "control character"));
    }

    #[test]
    fn risk_score_accepts_whole_floats_and_rejects_fractions() {
        let mut v = usb_copy();
        v["risk_score"] = json!(50.0);
        assert_eq!(Alert::from_value(&v).unwrap().risk_score, 50);
        v["risk_score"] = json!(50.5);
        assert!(has(&problems(v), "$.risk_score", "not an integer"));
    }

    #[test]
    fn typed_details_are_checked_per_alert_type() {
        let mut v = usb_copy();
        v["details"] = json!({"file_count": 3, "channel": "carrier_pigeon"});
        let p = problems(v);
        assert!(has(&p, "$.details.bytes", "is required"));
        assert!(has(&p, "$.details.channel", "unknown value"));

        let mut v = usb_copy();
        v["alert_type"] = json!("productivity");
        v["details"] = json!({"hours_per_day": 30, "categories": ["social", 4], "weekly_trend": "up"});
        let p = problems(v);
        assert!(has(&p, "$.details.hours_per_day", "out of range"));
        assert!(has(&p, "$.details.categories[1]", "must be a string"));
        assert!(has(&p, "$.details.weekly_trend", "list of numbers"));

        let mut v = usb_copy();
        v["alert_type"] = json!("policy_violation");
        v["details"] = json!({"policy": "Acceptable use", "history_30d": {"violations": 2}});
        assert!(has(&problems(v), "$.details.history_30d.warnings", "is required"));

        let mut v = usb_copy();
        v["alert_type"] = json!("behavioral_anomaly");
        v["details"] = json!({"systems": ["prod-db"], "duration_minutes": 47});
        assert!(has(&problems(v), "$.details.applications", "is required"));
    }

    #[test]
    fn custom_alerts_need_their_rule() {
        let mut v = usb_copy();
        v["alert_type"] = json!("custom");
        v["details"] = json!({"anything": "goes"});
        assert!(has(&problems(v.clone()), "$.rule", "is required"));
        v["rule"] = json!({"id": "r-17", "name": "Badge-in without login"});
        let a = Alert::from_value(&v).unwrap();
        assert_eq!(a.rule.unwrap().name, "Badge-in without login");
    }

    #[test]
    fn whole_number_floats_count_and_flags_are_typed() {
        let mut v = usb_copy();
        v["details"]["file_count"] = json!(847.0);
        v["schema_version"] = json!(1);
        assert!(Alert::from_value(&v).is_ok());
        v["details"]["file_count"] = json!(8.5);
        assert!(has(&problems(v), "$.details.file_count", "non-negative integer"));

        let mut v = usb_copy();
        v["alert_type"] = json!("behavioral_anomaly");
        v["details"] = json!({"systems": ["db"], "duration_minutes": 3, "applications": [], "after_hours": "true"});
        assert!(has(&problems(v), "$.details.after_hours", "true or false"));

        let mut v = usb_copy();
        v["alert_type"] = json!("productivity");
        v["details"] = json!({"hours_per_day": 4.2, "categories": [], "weekly_trend": [4.0], "weeks": "three"});
        assert!(has(&problems(v), "$.details.weeks", "non-negative integer"));

        let mut v = usb_copy();
        v["alert_type"] = json!("policy_violation");
        v["details"] = json!({"policy": "x", "history_30d": {"violations": 2.0, "warnings": 0}});
        assert!(Alert::from_value(&v).is_ok());
    }

    #[test]
    fn evidence_urls_need_a_host_and_leave_normalised() {
        for bad in ["https:///a", "https://@monitor.example.com/a"] {
            let mut v = usb_copy();
            v["evidence_url"] = json!(bad);
            assert!(has(&problems(v), "$.evidence_url", "with a host"), "{bad}");
        }
        let mut v = usb_copy();
        v["evidence_url"] = json!("https://Monitor.Example.com/a/../b");
        assert_eq!(
            Alert::from_value(&v).unwrap().evidence_url,
            "https://monitor.example.com/b"
        );
    }

    proptest::proptest! {
        /// The byte pre-scan never clears a string that holds a control character.
        #[test]
        fn the_control_prescan_misses_nothing(s in "(\\PC|\\p{Cc}){0,80}") {
            if s.chars().any(char::is_control) {
                proptest::prop_assert!(may_hold_control(&s), "{:?}", s);
            }
        }

        /// The fast path never admits a link the URL parser would change or reject.
        #[test]
        fn links_that_skip_the_url_parser_are_exactly_what_it_would_keep(
            host in "[a-z0-9.-]{1,24}",
            path in "[a-zA-Z0-9._~!$&()*+,;=:?/-]{0,40}",
        ) {
            let s = format!("https://{host}/{path}");
            if already_normal_https(&s) {
                let u = url::Url::parse(&s).unwrap();
                proptest::prop_assert_eq!(u.as_str(), s.as_str());
                proptest::prop_assert!(u.host_str().is_some_and(|h| !h.is_empty()));
                proptest::prop_assert!(u.username().is_empty() && u.password().is_none());
            }
        }
    }

    #[test]
    fn common_links_take_the_fast_path_and_odd_ones_the_parser() {
        for fast in [
            "https://monitor.example.com/alerts/emon-20261120-7f3a9c",
            "https://a.b-c.example/x?id=42&tab=evidence",
        ] {
            assert!(already_normal_https(fast), "{fast}");
        }
        for slow in [
            "https://Monitor.example.com/a",
            "https://monitor.example.com",
            "https://monitor.example.com:443/a",
            "https://10.0.0.1/a",
            "https://xn--bcher-kva.example/a",
            "https://monitor.example.com/a/../b",
            "https://monitor.example.com/a b",
            "https://monitor.example.com/a#frag",
            "https://user@monitor.example.com/a",
            "http://monitor.example.com/a",
        ] {
            assert!(!already_normal_https(slow), "{slow}");
        }
    }

    #[test]
    fn unsupported_schema_version_is_named() {
        let mut v = usb_copy();
        v["schema_version"] = json!("2");
        assert!(has(&problems(v), "$.schema_version", "unsupported schema version"));
    }

    #[test]
    fn non_json_and_non_object_bodies_are_rejected() {
        assert!(
            Alert::from_slice(b"{not json").unwrap_err().problems[0]
                .message
                .contains("not valid JSON")
        );
        assert!(has(&problems(json!([1, 2])), "$", "JSON object"));
    }
}
