//! Validation: a webhook body (JSON) into an [`Alert`], or every problem it has.
//!
//! The parsed JSON is walked by hand instead of through serde's derive, so that validation reports EVERY
//! problem at once, each with its JSON path, rather than stopping at the first.
//!
//! The `details` object, whose fields depend on the alert type, is checked in `validate/details.rs`.

use serde_json::{Map, Number, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;

use super::model::{
    Alert, AlertType, Body, CustomRule, Employee, EventKind, InvalidAlert, LifecycleEvent, Problem, Resolution,
    Severity,
};
use super::{
    EVENT_FIELDS, KNOWN_FIELDS, MAX_ALERT_ID, MAX_DEPARTMENT, MAX_DESCRIPTION, MAX_EMPLOYEE_FIELD, MAX_NAME,
    MAX_REASON, MAX_URL, SCHEMA_VERSION, SCHEMA_VERSIONS,
};

mod details;

/// The longest `occurred_at` accepted.
const MAX_TIMESTAMP: usize = 64;

impl Alert {
    /// Parse and validate a webhook body.
    pub fn from_slice(body: &[u8]) -> Result<Alert, InvalidAlert> {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => Alert::from_value(&v),
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
        let mut c = Checker::default();
        let Some(obj) = v.as_object() else {
            c.problem("$", "the alert must be a JSON object");
            return Err(c.finish());
        };

        c.schema_version(obj.get("schema_version"));
        // A lifecycle event is parsed by `Body::from_value`; here `event` may only say a new alert.
        match obj.get("event") {
            None | Some(Value::Null) => {}
            Some(Value::String(e)) if e == "raised" => {}
            Some(Value::String(e)) if EventKind::ALL.iter().any(|k| k.as_str() == e) => c.problem(
                "$.event",
                format!("event {e:?} is a lifecycle event of an alert already sent, not a new alert"),
            ),
            Some(other) => c.problem("$.event", unknown_event(other)),
        }

        let alert_id = c.required(obj.get("alert_id"), "$.alert_id", MAX_ALERT_ID);
        let alert_type = c.one_of(
            obj.get("alert_type"),
            "$.alert_type",
            &AlertType::ALL,
            AlertType::as_str,
        );
        let severity = c.one_of(obj.get("severity"), "$.severity", &Severity::ALL, Severity::as_str);
        let occurred_at = c.required(obj.get("occurred_at"), "$.occurred_at", MAX_TIMESTAMP);
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
        let description = c.text(obj.get("description"), "$.description", MAX_DESCRIPTION);
        let risk_score = c.risk_score(obj.get("risk_score"));
        let evidence_url = c.evidence_url(obj.get("evidence_url"));
        let rule = c.custom_rule(obj.get("rule"), alert_type);
        let test = match obj.get("test") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                c.problem("$.test", format!("must be true or false, got {}", kind(other)));
                false
            }
        };
        let (details, raw_details) = c.details(obj.get("details"), alert_type);
        let mut ignored_fields: Vec<String> = obj
            .keys()
            .filter(|k| !KNOWN_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        ignored_fields.sort_unstable();

        let alert = || -> Option<Alert> {
            Some(Alert {
                alert_id: alert_id?,
                alert_type: alert_type?,
                severity: severity?,
                occurred_at: occurred_at?,
                occurred_at_unix: occurred_at_unix?,
                employee: employee?,
                description: description?,
                risk_score: risk_score?,
                evidence_url: evidence_url?,
                details,
                raw_details,
                rule,
                test,
                ignored_fields,
                missing_details: c.missing.clone(),
            })
        };
        match alert() {
            Some(alert) if c.problems.is_empty() => Ok(alert),
            // a part is missing only when its problem was recorded
            _ => Err(c.finish()),
        }
    }
}

/// Whether a string is required.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Presence {
    Required,
    Optional,
}

/// Whether a string may hold line breaks and tabs (free text) or not (identifiers, names).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lines {
    One,
    Many,
}

/// What kind of JSON value `v` is, for messages ("a string", "an object", …).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A non-negative whole number, written as an integer or as a float without fraction (`847` or `847.0`).
fn whole(n: &Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15)
            .map(|f| f as u64)
    })
}

/// The position (in characters) of the first control character a ticket must never carry: C0/C1 controls
/// and DEL, except the line breaks and tabs free text may hold.
fn control_position(s: &str, lines: Lines) -> Option<usize> {
    s.chars()
        .position(|ch| ch.is_control() && !(lines == Lines::Many && matches!(ch, '\n' | '\t' | '\r')))
}

/// True for `https:///…` (any case): a link whose host the URL parser would take from the path.
fn empty_authority(s: &str) -> bool {
    s.get(..9).is_some_and(|start| start.eq_ignore_ascii_case("https:///"))
}

/// A loose e-mail address check: something before the first `@`, a dot after it, no spaces.
fn looks_like_email(e: &str) -> bool {
    e.split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !e.contains(' '))
}

fn unknown_event(v: &Value) -> String {
    format!("unknown event {v}; known: \"raised\" (a new alert, the default), \"updated\", \"resolved\", \"dismissed\"")
}

fn invalid_json(e: &serde_json::Error) -> InvalidAlert {
    InvalidAlert {
        problems: vec![Problem {
            path: "$".into(),
            message: format!("body is not valid JSON: {e}"),
        }],
    }
}

impl Body {
    /// Parse and validate a webhook body: a new alert (no `event`, or `raised`), or a lifecycle event.
    pub fn from_slice(body: &[u8]) -> Result<Body, InvalidAlert> {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => Body::from_value(&v),
            Err(e) => Err(invalid_json(&e)),
        }
    }

    /// Validate an already-parsed body.
    pub fn from_value(v: &Value) -> Result<Body, InvalidAlert> {
        let kind = v
            .get("event")
            .and_then(Value::as_str)
            .and_then(|e| EventKind::ALL.into_iter().find(|k| k.as_str() == e));
        match kind {
            Some(kind) => LifecycleEvent::from_value(v, kind).map(Body::Event),
            None => Alert::from_value(v).map(Body::Alert),
        }
    }
}

impl LifecycleEvent {
    /// Validate a lifecycle event's body (`event` is `kind`): the original `alert_id`, an optional
    /// `resolution` {`reason`, `note`} and `occurred_at`; the alert's own fields may be repeated and are
    /// ignored.
    fn from_value(v: &Value, kind: EventKind) -> Result<LifecycleEvent, InvalidAlert> {
        let mut c = Checker::default();
        let obj = v.as_object().expect("an event was read from an object");
        c.schema_version(obj.get("schema_version"));
        let alert_id = c.required(obj.get("alert_id"), "$.alert_id", MAX_ALERT_ID);
        let resolution = match obj.get("resolution") {
            None | Some(Value::Null) => Resolution::default(),
            Some(Value::Object(r)) => {
                for k in r.keys().filter(|k| !["reason", "note"].contains(&k.as_str())) {
                    c.problem(&format!("$.resolution.{k}"), "is not a resolution field (reason, note)");
                }
                Resolution {
                    reason: c.optional(r.get("reason"), "$.resolution.reason", MAX_REASON),
                    note: c.string(
                        r.get("note"),
                        "$.resolution.note",
                        MAX_DESCRIPTION,
                        Presence::Optional,
                        Lines::Many,
                    ),
                }
            }
            Some(other) => {
                c.problem(
                    "$.resolution",
                    format!("must be an object {{reason, note}}, got {}", self::kind(other)),
                );
                Resolution::default()
            }
        };
        let occurred_at = c.optional(obj.get("occurred_at"), "$.occurred_at", MAX_TIMESTAMP);
        if let Some(s) = &occurred_at
            && OffsetDateTime::parse(s, &Rfc3339).is_err()
        {
            c.problem(
                "$.occurred_at",
                format!("{s:?} is not an RFC 3339 timestamp (e.g. 2026-11-20T14:03:00Z)"),
            );
        }
        let mut ignored_fields: Vec<String> = obj
            .keys()
            .filter(|k| !EVENT_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        ignored_fields.sort_unstable();
        match alert_id {
            Some(alert_id) if c.problems.is_empty() => Ok(LifecycleEvent {
                alert_id,
                kind,
                resolution,
                occurred_at,
                ignored_fields,
            }),
            _ => Err(c.finish()),
        }
    }
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
    /// Typed detail fields the alert lacks (`details.bytes`, …).
    missing: Vec<String>,
}

impl Checker {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// `schema_version`: absent, or one this build accepts.
    fn schema_version(&mut self, v: Option<&Value>) {
        let Some(ver) = v else { return };
        let ok = match ver {
            Value::String(s) => SCHEMA_VERSIONS.contains(&s.as_str()),
            Value::Number(n) => n
                .as_u64()
                .is_some_and(|n| SCHEMA_VERSIONS.contains(&n.to_string().as_str())),
            _ => false,
        };
        if !ok {
            self.problem(
                "$.schema_version",
                format!(
                    "unsupported schema version {ver}; this relay understands {} (\"{SCHEMA_VERSION}\" is the latest)",
                    SCHEMA_VERSIONS.map(|s| format!("\"{s}\"")).join(" and ")
                ),
            );
        }
    }

    fn finish(self) -> InvalidAlert {
        InvalidAlert {
            problems: self.problems,
        }
    }

    /// The string rules every field shares: not blank, at most `max` characters, no control characters.
    fn checked_str(&mut self, path: &str, s: &str, max: usize, lines: Lines) -> Option<String> {
        let mut ok = true;
        if s.trim().is_empty() {
            self.problem(path, "must not be empty");
            ok = false;
        }
        let n = s.chars().count();
        if n > max {
            self.problem(path, format!("is {n} characters long; the limit is {max}"));
            ok = false;
        }
        if let Some(pos) = control_position(s, lines) {
            self.problem(path, format!("contains a control character at position {pos}"));
            ok = false;
        }
        ok.then(|| s.to_owned())
    }

    fn string(
        &mut self,
        v: Option<&Value>,
        path: &str,
        max: usize,
        presence: Presence,
        lines: Lines,
    ) -> Option<String> {
        match v {
            None | Some(Value::Null) => {
                if presence == Presence::Required {
                    self.problem(path, "is required");
                }
                None
            }
            Some(Value::String(s)) => self.checked_str(path, s, max, lines),
            Some(other) => {
                self.problem(path, format!("must be a string, got {}", kind(other)));
                None
            }
        }
    }

    /// A required one-line string.
    fn required(&mut self, v: Option<&Value>, path: &str, max: usize) -> Option<String> {
        self.string(v, path, max, Presence::Required, Lines::One)
    }

    /// An optional one-line string.
    fn optional(&mut self, v: Option<&Value>, path: &str, max: usize) -> Option<String> {
        self.string(v, path, max, Presence::Optional, Lines::One)
    }

    /// Required free text (line breaks and tabs allowed).
    fn text(&mut self, v: Option<&Value>, path: &str, max: usize) -> Option<String> {
        self.string(v, path, max, Presence::Required, Lines::Many)
    }

    /// A required string naming one of `all`.
    fn one_of<T: Copy>(&mut self, v: Option<&Value>, path: &str, all: &[T], name: fn(T) -> &'static str) -> Option<T> {
        let names = || all.iter().map(|t| name(*t)).collect::<Vec<_>>().join(", ");
        match v {
            None | Some(Value::Null) => {
                self.problem(path, format!("is required (one of: {})", names()));
                None
            }
            Some(Value::String(s)) => {
                let found = all.iter().copied().find(|t| name(*t) == s);
                if found.is_none() {
                    self.problem(path, format!("unknown value {s:?}; expected one of: {}", names()));
                }
                found
            }
            Some(other) => {
                self.problem(path, format!("must be a string, got {}", kind(other)));
                None
            }
        }
    }

    /// An object that must be present: `None` (with the problem recorded) when it is absent or not an object.
    fn required_object<'v>(&mut self, v: Option<&'v Value>, path: &str, hint: &str) -> Option<&'v Map<String, Value>> {
        match v {
            None | Some(Value::Null) => {
                self.problem(path, format!("is required{hint}"));
                None
            }
            Some(Value::Object(o)) => Some(o),
            Some(other) => {
                self.problem(path, format!("must be an object, got {}", kind(other)));
                None
            }
        }
    }

    fn employee(&mut self, v: Option<&Value>) -> Option<Employee> {
        let obj = self.required_object(v, "$.employee", "")?;
        let id = self.required(obj.get("id"), "$.employee.id", MAX_EMPLOYEE_FIELD);
        let display_name = self.optional(obj.get("display_name"), "$.employee.display_name", MAX_NAME);
        let email = self.optional(obj.get("email"), "$.employee.email", MAX_EMPLOYEE_FIELD * 2);
        if let Some(e) = &email
            && !looks_like_email(e)
        {
            self.problem("$.employee.email", format!("{e:?} is not an e-mail address"));
        }
        let department = self.required(obj.get("department"), "$.employee.department", MAX_DEPARTMENT);
        let manager = self.optional(obj.get("manager"), "$.employee.manager", MAX_NAME);
        Some(Employee {
            id: id?,
            display_name,
            email,
            department: department?,
            manager,
        })
    }

    fn risk_score(&mut self, v: Option<&Value>) -> Option<u8> {
        let path = "$.risk_score";
        match v {
            None | Some(Value::Null) => {
                self.problem(path, "is required (an integer from 0 to 100)");
                None
            }
            Some(Value::Number(n)) => match n.as_i64() {
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
                self.problem(path, format!("must be an integer from 0 to 100, got {}", kind(other)));
                None
            }
        }
    }

    /// An absolute https link with a host and no user part, returned in its normalised (WHATWG) form.
    fn evidence_url(&mut self, v: Option<&Value>) -> Option<String> {
        let path = "$.evidence_url";
        let s = self.required(v, path, MAX_URL)?;
        match Url::parse(&s) {
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
            // the parser reads `https:///a` as host `a` and drops an empty user part: both are refused
            Ok(u) if u.host_str().is_none_or(str::is_empty) || s.contains('@') || empty_authority(&s) => {
                self.problem(path, "must be https://<host>/<path> with a host and no user part");
                None
            }
            Ok(u) => Some(u.into()),
        }
    }

    fn custom_rule(&mut self, v: Option<&Value>, alert_type: Option<AlertType>) -> Option<CustomRule> {
        match v {
            None | Some(Value::Null) => {
                if alert_type == Some(AlertType::Custom) {
                    self.problem(
                        "$.rule",
                        "is required for alert_type \"custom\" ({\"id\": …, \"name\": …})",
                    );
                }
                None
            }
            Some(Value::Object(o)) => {
                let id = self.required(o.get("id"), "$.rule.id", MAX_ALERT_ID);
                let name = self.required(o.get("name"), "$.rule.name", MAX_NAME);
                Some(CustomRule { id: id?, name: name? })
            }
            Some(other) => {
                self.problem("$.rule", format!("must be an object, got {}", kind(other)));
                None
            }
        }
    }
}
