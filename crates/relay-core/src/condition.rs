//! Routing conditions: `all` / `any` / `not` over leaf comparisons of alert fields.
//!
//! YAML form:
//! ```yaml
//! when:
//!   all:
//!     - { field: alert_type, eq: dlp }
//!     - { field: details.file_count, gte: 100 }
//!     - any:
//!         - { field: severity, in: [critical, high] }
//!         - not: { field: department, eq: Finance }
//! ```
//! Operators: `eq`, `ne`, `in`, `not_in`, `gt`, `gte`, `lt`, `lte`, `contains` (substring of a string, or
//! for a list: any element equal to the value or, for strings, containing it), `starts_with`, `exists`.
//! Fields: `alert_type`, `severity`, `department` (alias `employee.department`), `risk_score`, `test`,
//! `rule.id`, `rule.name`, and `details.<field>` (nested with dots).

use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

use crate::alert::{Alert, AlertType, Severity};

/// Which part of the alert a leaf reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    AlertType,
    Severity,
    Department,
    RiskScore,
    Test,
    RuleId,
    RuleName,
    Detail(Vec<String>),
}

/// A compiled comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    Contains(Value),
    StartsWith(String),
    Exists(bool),
    /// Fast paths for the two enum fields: a bitmask of accepted values.
    TypeMask(u8),
    SeverityMask(u8),
}

/// A compiled, validated condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Always,
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Leaf { field: Field, op: Op },
}

/// A cheap pre-check implied by a condition: the alert types, severities and department its top-level
/// conjunction requires. A rule whose guard does not admit an alert cannot match it, so routing skips the
/// full evaluation; when the guard admits it, the condition decides. An index over the rule list, nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    types: u8,
    severities: u8,
    department: Option<Box<str>>,
}

impl Guard {
    /// The guard of `condition`: the direct leaves of its top-level `all` (or the condition itself when it
    /// is a leaf) on alert type, severity, or department equality narrow it; anything else admits all.
    pub fn of(condition: &Condition) -> Guard {
        let mut g = Guard {
            types: u8::MAX,
            severities: u8::MAX,
            department: None,
        };
        let leaves: &[Condition] = match condition {
            Condition::All(cs) => cs,
            leaf @ Condition::Leaf { .. } => std::slice::from_ref(leaf),
            _ => &[],
        };
        for leaf in leaves {
            match leaf {
                Condition::Leaf {
                    field: Field::AlertType,
                    op: Op::TypeMask(m),
                } => g.types &= m,
                Condition::Leaf {
                    field: Field::Severity,
                    op: Op::SeverityMask(m),
                } => g.severities &= m,
                Condition::Leaf {
                    field: Field::Department,
                    op: Op::Eq(Value::String(d)),
                } => g.department = Some(d.as_str().into()),
                _ => {}
            }
        }
        g
    }

    #[inline]
    /// True when alerts of type `t` can pass this guard.
    pub fn admits_type(&self, t: AlertType) -> bool {
        self.types & t.bit() != 0
    }

    pub fn admits(&self, alert: &Alert) -> bool {
        self.types & alert.alert_type.bit() != 0
            && self.severities & (1 << alert.severity.rank()) != 0
            && self
                .department
                .as_deref()
                .is_none_or(|d| d == alert.employee.department)
    }
}

/// Detail fields the alert schema defines, per alert type (see docs/alert-schema.md).
pub const KNOWN_DETAIL_FIELDS: &[&str] = &[
    "file_count",
    "bytes",
    "channel",
    "systems",
    "duration_minutes",
    "applications",
    "after_hours",
    "privileged_account",
    "hours_per_day",
    "categories",
    "weekly_trend",
    "weeks",
    "policy",
    "history_30d",
    "history_30d.violations",
    "history_30d.warnings",
];

fn yaml_to_json(v: &serde_yaml_ng::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl Condition {
    /// Compile a condition as written in the config (a YAML value); `extra_detail_fields` are the
    /// operator-declared `details.*` fields of custom alerts. Errors are plain messages; the caller adds
    /// the rule name.
    pub fn compile(raw: &Yaml, extra_detail_fields: &[String], errors: &mut Vec<String>) -> Condition {
        let Yaml::Mapping(map) = raw else {
            errors.push(format!(
                "a condition must be a mapping (all/any/not, or field + operator), got {}",
                yaml_kind(raw)
            ));
            return Condition::Always;
        };
        let keys: Vec<String> = map.keys().map(|k| k.as_str().unwrap_or("?").to_string()).collect();
        for combinator in ["all", "any", "not"] {
            let Some(inner) = map.get(combinator) else { continue };
            if keys.len() != 1 {
                errors.push(format!(
                    "`{combinator}` must stand alone in its condition; found also: {}",
                    keys.iter()
                        .filter(|k| *k != combinator)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if combinator == "not" {
                return Condition::Not(Box::new(Condition::compile(inner, extra_detail_fields, errors)));
            }
            let Yaml::Sequence(items) = inner else {
                errors.push(format!("`{combinator}` takes a list of conditions"));
                return Condition::Always;
            };
            if items.is_empty() {
                errors.push(format!("`{combinator}` needs at least one condition"));
            }
            let compiled = items
                .iter()
                .map(|c| Condition::compile(c, extra_detail_fields, errors))
                .collect();
            return if combinator == "all" {
                Condition::All(compiled)
            } else {
                Condition::Any(compiled)
            };
        }
        compile_leaf(map, extra_detail_fields, errors)
    }

    pub fn matches(&self, alert: &Alert) -> bool {
        match self {
            Condition::Always => true,
            Condition::All(cs) => cs.iter().all(|c| c.matches(alert)),
            Condition::Any(cs) => cs.iter().any(|c| c.matches(alert)),
            Condition::Not(c) => !c.matches(alert),
            Condition::Leaf { field, op } => leaf_matches(field, op, alert),
        }
    }

    /// The leaves of a pure conjunction (`Always`, a leaf, or `all` of leaves); `None` for anything with
    /// `any`/`not`. Used to find rules that can never fire.
    pub fn conjunction(&self) -> Option<Vec<&Condition>> {
        match self {
            Condition::Always => Some(vec![]),
            Condition::Leaf { .. } => Some(vec![self]),
            Condition::All(cs) => {
                let mut out = Vec::new();
                for c in cs {
                    out.extend(c.conjunction()?);
                }
                Some(out)
            }
            _ => None,
        }
    }
}

/// A condition `field` that names nothing the alert has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum UnknownField {
    #[error(
        "unknown condition field {0:?}; use alert_type, severity, department, risk_score, test, rule.id, rule.name \
         or details.<field>"
    )]
    Field(String),
    #[error(
        "unknown detail field {0:?}; the schema defines {known} (declare custom ones under custom_detail_fields)",
        known = KNOWN_DETAIL_FIELDS.join(", ")
    )]
    Detail(String),
}

fn parse_field(name: &str, extra: &[String]) -> Result<Field, UnknownField> {
    Ok(match name {
        "alert_type" => Field::AlertType,
        "severity" => Field::Severity,
        "department" | "employee.department" => Field::Department,
        "risk_score" => Field::RiskScore,
        "test" => Field::Test,
        "rule.id" => Field::RuleId,
        "rule.name" => Field::RuleName,
        other => {
            let Some(path) = other.strip_prefix("details.") else {
                return Err(UnknownField::Field(other.to_string()));
            };
            if !KNOWN_DETAIL_FIELDS.contains(&path) && !extra.iter().any(|e| e == path) {
                return Err(UnknownField::Detail(other.to_string()));
            }
            Field::Detail(path.split('.').map(str::to_owned).collect())
        }
    })
}

fn yaml_kind(v: &Yaml) -> &'static str {
    match v {
        Yaml::Null => "null",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}

const OPERATORS: &str = "eq, ne, in, not_in, gt, gte, lt, lte, contains, starts_with, exists";

fn compile_leaf(map: &serde_yaml_ng::Mapping, extra: &[String], errors: &mut Vec<String>) -> Condition {
    let Some(field_name) = map.get("field").and_then(Yaml::as_str) else {
        errors.push(format!(
            "a condition needs `field` and one operator ({OPERATORS}), or all/any/not; got keys: {}",
            map.keys()
                .map(|k| k.as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return Condition::Always;
    };
    let field = match parse_field(field_name, extra) {
        Ok(f) => f,
        Err(e) => {
            errors.push(e.to_string());
            return Condition::Always;
        }
    };
    let mut ops = Vec::new();
    for (k, v) in map {
        let key = k.as_str().unwrap_or("?");
        let number = |errors: &mut Vec<String>| -> Option<f64> {
            let n = v.as_f64();
            if n.is_none() {
                errors.push(format!(
                    "`{key}` on {field_name:?} takes a number, got {}",
                    yaml_kind(v)
                ));
            }
            n
        };
        let list = |errors: &mut Vec<String>| -> Option<Vec<Value>> {
            match v {
                Yaml::Sequence(items) => Some(items.iter().map(yaml_to_json).collect()),
                _ => {
                    errors.push(format!("`{key}` on {field_name:?} takes a list, got {}", yaml_kind(v)));
                    None
                }
            }
        };
        let op = match key {
            "field" => continue,
            "eq" => Some(Op::Eq(yaml_to_json(v))),
            "ne" => Some(Op::Ne(yaml_to_json(v))),
            "in" => list(errors).map(Op::In),
            "not_in" => list(errors).map(Op::NotIn),
            "gt" => number(errors).map(Op::Gt),
            "gte" => number(errors).map(Op::Gte),
            "lt" => number(errors).map(Op::Lt),
            "lte" => number(errors).map(Op::Lte),
            "contains" => Some(Op::Contains(yaml_to_json(v))),
            "starts_with" => match v.as_str() {
                Some(p) => Some(Op::StartsWith(p.to_string())),
                None => {
                    errors.push(format!(
                        "`starts_with` on {field_name:?} takes text, got {}",
                        yaml_kind(v)
                    ));
                    None
                }
            },
            "exists" => match v.as_bool() {
                Some(b) => Some(Op::Exists(b)),
                None => {
                    errors.push(format!(
                        "`exists` on {field_name:?} takes true or false, got {}",
                        yaml_kind(v)
                    ));
                    None
                }
            },
            other => {
                errors.push(format!(
                    "unknown operator `{other}` on {field_name:?}; operators: {OPERATORS}"
                ));
                None
            }
        };
        ops.extend(op);
    }
    let had_errors = map.len() - 1 != ops.len();
    if ops.len() != 1 {
        if !had_errors {
            errors.push(format!(
                "condition on {field_name:?} must have exactly one operator ({OPERATORS}); found {}",
                ops.len()
            ));
        }
        return Condition::Always;
    }
    let leaf = field_name;
    let op = ops.remove(0);
    let op = match (&field, op) {
        (Field::AlertType, op) => {
            enum_mask(leaf, op, errors, |s| AlertType::parse(s).map(AlertType::bit)).map(Op::TypeMask)
        }
        (Field::Severity, op) => {
            enum_mask(leaf, op, errors, |s| Severity::parse(s).map(|t| 1u8 << t.rank())).map(Op::SeverityMask)
        }
        (Field::RiskScore, op @ (Op::Gt(_) | Op::Gte(_) | Op::Lt(_) | Op::Lte(_) | Op::Eq(_) | Op::Ne(_))) => Some(op),
        (Field::RiskScore, _) => {
            errors.push("risk_score supports eq, ne, gt, gte, lt, lte".into());
            None
        }
        (Field::Test, op @ (Op::Eq(Value::Bool(_)) | Op::Ne(Value::Bool(_)))) => Some(op),
        (Field::Test, _) => {
            errors.push("test supports eq/ne with true or false".into());
            None
        }
        (
            Field::Department | Field::RuleId | Field::RuleName,
            op @ (Op::Gt(_) | Op::Gte(_) | Op::Lt(_) | Op::Lte(_)),
        ) => {
            errors.push(format!("{leaf} is text; numeric comparison {op:?} is not allowed"));
            None
        }
        (_, op) => Some(op),
    };
    match op {
        Some(op) => Condition::Leaf { field, op },
        None => Condition::Always,
    }
}

/// Compile eq/ne/in/not_in over an enum field into an accepted-values bitmask, rejecting unknown values.
fn enum_mask(field: &str, op: Op, errors: &mut Vec<String>, bit: impl Fn(&str) -> Option<u8>) -> Option<u8> {
    let mut lookup = |v: &Value| -> Option<u8> {
        let r = v.as_str().and_then(&bit);
        if r.is_none() {
            errors.push(format!("{field} has no value {v}"));
        }
        r
    };
    let all = 0xFFu8;
    match op {
        Op::Eq(v) => lookup(&v),
        Op::Ne(v) => lookup(&v).map(|b| all & !b),
        Op::In(vs) => vs.iter().map(&mut lookup).try_fold(0u8, |acc, b| b.map(|b| acc | b)),
        Op::NotIn(vs) => vs
            .iter()
            .map(&mut lookup)
            .try_fold(0u8, |acc, b| b.map(|b| acc | b))
            .map(|m| all & !m),
        other => {
            errors.push(format!("{field} supports eq, ne, in, not_in; not {other:?}"));
            None
        }
    }
}

fn detail<'a>(alert: &'a Alert, path: &[String]) -> Option<&'a Value> {
    let mut cur = alert.raw_details.get(path.first()?)?;
    for key in &path[1..] {
        cur = cur.as_object()?.get(key)?;
    }
    Some(cur)
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn leaf_matches(field: &Field, op: &Op, alert: &Alert) -> bool {
    match (field, op) {
        (Field::AlertType, Op::TypeMask(m)) => m & alert.alert_type.bit() != 0,
        (Field::Severity, Op::SeverityMask(m)) => m & (1 << alert.severity.rank()) != 0,
        (Field::RiskScore, op) => num_matches(f64::from(alert.risk_score), op),
        (Field::Test, op) => value_matches(Some(&Value::Bool(alert.test)), op),
        (Field::Department, op) => str_matches(Some(&alert.employee.department), op),
        (Field::RuleId, op) => str_matches(alert.rule.as_ref().map(|r| r.id.as_str()), op),
        (Field::RuleName, op) => str_matches(alert.rule.as_ref().map(|r| r.name.as_str()), op),
        (Field::Detail(path), op) => value_matches(detail(alert, path), op),
        _ => false,
    }
}

fn num_matches(x: f64, op: &Op) -> bool {
    match op {
        Op::Gt(v) => x > *v,
        Op::Gte(v) => x >= *v,
        Op::Lt(v) => x < *v,
        Op::Lte(v) => x <= *v,
        Op::Eq(v) => v.as_f64() == Some(x),
        Op::Ne(v) => v.as_f64() != Some(x),
        _ => false,
    }
}

fn str_matches(s: Option<&str>, op: &Op) -> bool {
    match (s, op) {
        (s, Op::Exists(want)) => s.is_some() == *want,
        (None, Op::Ne(_) | Op::NotIn(_)) => true,
        (None, _) => false,
        (Some(s), Op::Eq(v)) => v.as_str() == Some(s),
        (Some(s), Op::Ne(v)) => v.as_str() != Some(s),
        (Some(s), Op::In(vs)) => vs.iter().any(|v| v.as_str() == Some(s)),
        (Some(s), Op::NotIn(vs)) => !vs.iter().any(|v| v.as_str() == Some(s)),
        (Some(s), Op::Contains(v)) => v.as_str().is_some_and(|n| s.contains(n)),
        (Some(s), Op::StartsWith(p)) => s.starts_with(p.as_str()),
        _ => false,
    }
}

fn value_matches(v: Option<&Value>, op: &Op) -> bool {
    let v = match (v, op) {
        (v, Op::Exists(want)) => return v.is_some_and(|v| !v.is_null()) == *want,
        (None | Some(Value::Null), Op::Ne(_) | Op::NotIn(_)) => return true,
        (None | Some(Value::Null), _) => return false,
        (Some(v), _) => v,
    };
    match op {
        Op::Eq(w) => json_eq(v, w),
        Op::Ne(w) => !json_eq(v, w),
        Op::In(ws) => ws.iter().any(|w| json_eq(v, w)),
        Op::NotIn(ws) => !ws.iter().any(|w| json_eq(v, w)),
        Op::Gt(_) | Op::Gte(_) | Op::Lt(_) | Op::Lte(_) => v.as_f64().is_some_and(|x| num_matches(x, op)),
        Op::Contains(w) => match v {
            Value::String(s) => w.as_str().is_some_and(|n| s.contains(n)),
            Value::Array(items) => items.iter().any(|item| match (item, w) {
                (Value::String(s), Value::String(n)) => s.contains(n.as_str()),
                _ => json_eq(item, w),
            }),
            _ => false,
        },
        Op::StartsWith(p) => v.as_str().is_some_and(|s| s.starts_with(p.as_str())),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
