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

fn parse_field(name: &str, extra: &[String]) -> Result<Field, String> {
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
                return Err(format!(
                    "unknown condition field {other:?}; use alert_type, severity, department, risk_score, test, \
                     rule.id, rule.name or details.<field>"
                ));
            };
            if !KNOWN_DETAIL_FIELDS.contains(&path) && !extra.iter().any(|e| e == path) {
                return Err(format!(
                    "unknown detail field {other:?}; the schema defines {} (declare custom ones under \
                     custom_detail_fields)",
                    KNOWN_DETAIL_FIELDS.join(", ")
                ));
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
            errors.push(e);
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
mod tests {
    use super::*;
    use serde_json::json;

    fn alert(details: Value) -> Alert {
        let mut v = json!({
            "alert_id": "a-1", "alert_type": "behavioral_anomaly", "severity": "high",
            "occurred_at": "2026-11-20T22:40:00Z",
            "employee": {"id": "E7", "department": "Platform Engineering"},
            "description": "after hours", "risk_score": 74,
            "evidence_url": "https://monitor.example.com/a/1",
            "details": details
        });
        if v["details"].is_null() {
            v.as_object_mut().unwrap().remove("details");
        }
        Alert::from_value(&v).unwrap()
    }

    fn cond(yaml: &str) -> Condition {
        let raw: Yaml = serde_yaml_ng::from_str(yaml).unwrap();
        let mut errors = vec![];
        let c = Condition::compile(&raw, &["ticket.queue".to_string()], &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        c
    }

    fn errors(yaml: &str) -> Vec<String> {
        let raw: Yaml = serde_yaml_ng::from_str(yaml).unwrap();
        let mut errors = vec![];
        Condition::compile(&raw, &[], &mut errors);
        errors
    }

    fn anomaly() -> Alert {
        alert(json!({"systems": ["prod-db-01", "bastion"], "duration_minutes": 47,
                     "applications": ["psql"], "after_hours": true, "ticket": {"queue": "ops"}}))
    }

    #[test]
    fn a_guard_admits_everything_its_condition_matches_and_rejects_what_its_conjunction_excludes() {
        let a = anomaly();
        let cases = [
            ("{field: alert_type, eq: behavioral_anomaly}", true),
            ("{field: alert_type, eq: dlp}", false),
            (
                "{all: [{field: alert_type, in: [dlp, behavioral_anomaly]}, {field: severity, eq: high}]}",
                true,
            ),
            (
                "{all: [{field: severity, in: [critical, low]}, {field: risk_score, gte: 1}]}",
                false,
            ),
            (
                "{all: [{field: department, eq: Platform Engineering}, {field: risk_score, gte: 99}]}",
                true,
            ),
            (
                "{all: [{field: department, eq: Finance}, {field: risk_score, gte: 1}]}",
                false,
            ),
            ("{field: employee.department, eq: Finance}", false),
            // only the top-level conjunction narrows: anything under any/not admits every alert
            (
                "{any: [{field: alert_type, eq: dlp}, {field: severity, eq: low}]}",
                true,
            ),
            ("{not: {field: alert_type, eq: behavioral_anomaly}}", true),
            (
                "{all: [{any: [{field: department, eq: Finance}]}, {not: {field: severity, eq: high}}]}",
                true,
            ),
            ("{field: department, ne: Platform Engineering}", true),
        ];
        for (yaml, admitted) in cases {
            let c = cond(yaml);
            let g = Guard::of(&c);
            assert_eq!(g.admits(&a), admitted, "{yaml}");
            // the guard is implied by the condition: a match is always admitted
            assert!(!c.matches(&a) || g.admits(&a), "{yaml}");
        }
    }

    #[test]
    fn every_operator_matches_and_mismatches() {
        let a = anomaly();
        let cases = [
            ("{field: severity, eq: high}", true),
            ("{field: severity, eq: low}", false),
            ("{field: severity, ne: high}", false),
            ("{field: severity, in: [critical, high]}", true),
            ("{field: severity, not_in: [critical, high]}", false),
            ("{field: alert_type, eq: behavioral_anomaly}", true),
            ("{field: alert_type, in: [dlp, custom]}", false),
            ("{field: risk_score, gt: 74}", false),
            ("{field: risk_score, gte: 74}", true),
            ("{field: risk_score, lt: 75}", true),
            ("{field: risk_score, lte: 73}", false),
            ("{field: risk_score, eq: 74}", true),
            ("{field: department, eq: Platform Engineering}", true),
            ("{field: department, starts_with: Platform}", true),
            ("{field: department, contains: Engin}", true),
            ("{field: department, in: [Finance, Sales]}", false),
            ("{field: department, not_in: [Finance, Sales]}", true),
            ("{field: details.duration_minutes, gte: 30}", true),
            ("{field: details.duration_minutes, eq: 47}", true),
            ("{field: details.systems, contains: prod-db}", true),
            ("{field: details.applications, contains: ssh}", false),
            ("{field: details.after_hours, eq: true}", true),
            ("{field: details.privileged_account, exists: true}", false),
            ("{field: details.privileged_account, exists: false}", true),
            ("{field: details.privileged_account, ne: true}", true),
            ("{field: details.ticket.queue, eq: ops}", true),
            ("{field: test, eq: false}", true),
            ("{field: rule.name, exists: false}", true),
            ("{field: rule.id, eq: r1}", false),
        ];
        for (yaml, want) in cases {
            assert_eq!(cond(yaml).matches(&a), want, "{yaml}");
        }
    }

    #[test]
    fn all_any_not_combine() {
        let a = anomaly();
        assert!(cond("{all: [{field: severity, eq: high}, {field: details.after_hours, eq: true}]}").matches(&a));
        assert!(!cond("{all: [{field: severity, eq: high}, {field: details.after_hours, eq: false}]}").matches(&a));
        assert!(cond("{any: [{field: severity, eq: low}, {field: risk_score, gt: 50}]}").matches(&a));
        assert!(!cond("{any: [{field: severity, eq: low}, {field: risk_score, gt: 90}]}").matches(&a));
        assert!(cond("{not: {field: severity, eq: low}}").matches(&a));
        assert!(!cond("{not: {any: [{field: severity, eq: high}]}}").matches(&a));
    }

    #[test]
    fn missing_details_never_match_positive_operators() {
        let a = alert(Value::Null);
        assert!(!cond("{field: details.duration_minutes, gte: 0}").matches(&a));
        assert!(!cond("{field: details.systems, contains: prod}").matches(&a));
        assert!(cond("{field: details.systems, not_in: [x]}").matches(&a));
    }

    #[test]
    fn bad_conditions_are_reported() {
        assert!(errors("{field: colour, eq: red}")[0].contains("unknown condition field \"colour\""));
        assert!(errors("{field: details.favourite_food, eq: x}")[0].contains("unknown detail field"));
        assert!(errors("{field: severity, eq: urgent}")[0].contains("severity has no value"));
        assert!(errors("{field: alert_type, in: [dlp, keylogger]}")[0].contains("no value"));
        assert!(errors("{field: severity, eq: high, ne: low}")[0].contains("exactly one operator"));
        assert!(errors("{field: severity}")[0].contains("exactly one operator"));
        assert!(errors("{field: department, gt: 3}")[0].contains("numeric comparison"));
        assert!(errors("{field: risk_score, contains: 3}")[0].contains("risk_score supports"));
        assert!(errors("{field: test, eq: yes}")[0].contains("test supports"));
        assert!(errors("{all: []}")[0].contains("at least one"));
        assert!(errors("{any: []}")[0].contains("at least one"));
        assert!(errors("{field: severity, equals: high}")[0].contains("unknown operator `equals`"));
        assert!(errors("{all: [{field: severity, eq: high}], any: []}")[0].contains("must stand alone"));
        assert!(errors("{all: {field: severity, eq: high}}")[0].contains("takes a list"));
        assert!(errors("{field: risk_score, gt: high}")[0].contains("takes a number"));
        assert!(errors("{field: details.channel, exists: maybe}")[0].contains("true or false"));
        assert!(errors("{colour: red}")[0].contains("needs `field`"));
        assert!(errors("[1, 2]")[0].contains("must be a mapping"));
    }

    #[test]
    fn conjunctions_are_flattened_and_disjunctions_are_not() {
        let c = cond("{all: [{field: severity, eq: high}, {all: [{field: risk_score, gt: 1}]}]}");
        assert_eq!(c.conjunction().unwrap().len(), 2);
        assert!(cond("{any: [{field: severity, eq: high}]}").conjunction().is_none());
        assert_eq!(Condition::Always.conjunction().unwrap().len(), 0);
    }
}
