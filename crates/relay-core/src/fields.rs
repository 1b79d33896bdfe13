//! Decision → the ServiceNow record's fields, by the table's record profile (`crate::profile`).
//!
//! Always: alert type, severity, employee identifier (pseudonymised when configured), time, triggering
//! activity, risk score and the evidence link. By the profile (unless `privacy.minimal_data`): the context
//! lines and domain values the table needs, taken from the alert's details and the employee's department
//! and manager (never the manager with pseudonymisation on). Names, e-mail addresses and unknown extra
//! fields never leave. Only fields the table has are sent.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::{Config, RecordType, Template};
use crate::profile::{DedupeMatch, PriorityMethod, Profile, Text};
use crate::route::Decision;

pub const MAX_SHORT_DESCRIPTION: usize = 160;

/// Length of `task.description` (and so of every task table's `description`), in characters: ServiceNow
/// cuts longer text off when it stores the record.
pub const MAX_DESCRIPTION_FIELD: usize = 4000;

/// What the short description of a test alert's record starts with.
pub const TEST_MARKER: &str = "[TEST] ";

/// Fields the relay sets itself; a rule's `fields:` may not override them.
pub const MANAGED_FIELDS: [&str; 14] = [
    "short_description",
    "description",
    "impact",
    "urgency",
    "priority",
    "assignment_group",
    "correlation_id",
    "correlation_display",
    "category",
    "subcategory",
    "contact_type",
    "sys_id",
    "number",
    "message_key",
];

/// Cut `s` to at most `max` characters, ending with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The text with its whitespace runs (line breaks included) collapsed to single spaces and trimmed at both
/// ends: for one-line summaries.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The record's long description: everything a responder needs, and nothing more.
pub fn description(d: &Decision, config_hash: &str) -> String {
    let s = &d.summary;
    format!(
        "Triggering activity: {}\nAlert type: {} ({})\nSeverity: {}\nRisk score: {}/100\nEmployee: {}\n\
         Occurred at: {}\nEvidence: {}\n\nAlert id: {}\nRouted by rule {} (config {config_hash})",
        s.description,
        d.alert_type.label(),
        d.alert_type,
        d.severity.label(),
        s.risk_score,
        d.employee_ref,
        s.occurred_at,
        s.evidence_url,
        d.alert_id,
        d.rule,
    )
}

/// ServiceNow Event Management severity: 1 Critical, 2 Major, 3 Minor, 4 Warning.
pub fn event_severity(s: crate::alert::Severity) -> &'static str {
    match s {
        crate::alert::Severity::Critical => "1",
        crate::alert::Severity::High => "2",
        crate::alert::Severity::Medium => "3",
        crate::alert::Severity::Low => "4",
    }
}

/// `yyyy-MM-dd HH:mm:ss` (UTC) from an RFC 3339 timestamp, as Event Management wants it.
fn event_time(rfc3339: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::parse(rfc3339, &Rfc3339)
        .ok()
        .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(format).ok())
        .unwrap_or_default()
}

/// What [`build`] makes a record from, besides the decision.
pub(crate) struct BuildInput<'a> {
    pub template: &'a Template,
    pub custom_rule_name: Option<&'a str>,
    pub category: Option<String>,
    pub subcategory: Option<String>,
    pub extra: &'a BTreeMap<String, String>,
    pub profile: &'a Profile,
    /// The route's context lines, when it overrides the profile's.
    pub context: Option<&'a [Text]>,
    /// What the profile's templates may name (see [`crate::profile::FACTS`]).
    pub facts: &'a Map<String, Value>,
}

/// The record's summary line (the route's template, `[TEST] ` first for a test alert, cut to 160).
pub(crate) fn summary(d: &Decision, template: &Template, custom_rule_name: Option<&str>) -> String {
    let mut short = template.render(d, custom_rule_name);
    if d.test {
        short.insert_str(0, TEST_MARKER);
    }
    truncate(&short, MAX_SHORT_DESCRIPTION)
}

/// The record's fields by its profile: only fields the table has leave.
pub(crate) fn build(d: &Decision, c: &Config, input: BuildInput<'_>) -> Map<String, Value> {
    let short = summary(d, input.template, input.custom_rule_name);
    let description = description(d, &c.hash);
    let mut f = Map::new();
    let s = |v: &str| Value::String(v.to_string());
    let extra = input.extra;

    if d.record_type == RecordType::ItomEvent {
        // operator fields first: the Event Management keys below always win
        for (k, v) in extra {
            f.insert(k.clone(), s(v));
        }
        let info = serde_json::json!({
            "alert_id": d.alert_id,
            "risk_score": d.summary.risk_score,
            "evidence_url": d.summary.evidence_url,
            "assignment_group": d.assignment_group,
            "rule": d.rule,
            "correlation_id": d.correlation_id,
        });
        f.insert("source".into(), s(&c.correlation_display));
        f.insert("node".into(), s(&d.employee_ref));
        f.insert("type".into(), s(d.alert_type.as_str()));
        f.insert("resource".into(), s(&d.employee_ref));
        f.insert("metric_name".into(), s(d.alert_type.as_str()));
        f.insert("severity".into(), s(event_severity(d.severity)));
        f.insert("message_key".into(), s(&d.correlation_id));
        f.insert("description".into(), s(&format!("{short}\n\n{description}")));
        f.insert("additional_info".into(), s(&info.to_string()));
        f.insert("time_of_event".into(), s(&event_time(&d.summary.occurred_at)));
        return f;
    }

    let p = input.profile;
    let put = |f: &mut Map<String, Value>, k: &str, v: String| {
        if p.has(k) {
            f.insert(k.to_string(), Value::String(v));
        }
    };
    // the long text: the description, the profile's context, what the alert did not say
    let mut long = description;
    let context: Vec<String> = if c.privacy.minimal_data {
        Vec::new()
    } else {
        input
            .context
            .unwrap_or(&p.context)
            .iter()
            .filter_map(|t| t.render(input.facts))
            .collect()
    };
    if !context.is_empty() {
        long.push_str("\n\nContext:\n");
        long.push_str(&context.join("\n"));
    }
    if !d.missing_details.is_empty() {
        long.push_str(&format!(
            "\n\nNot in the alert: {} (the record lacks this context)",
            d.missing_details.join(", ")
        ));
    }
    if p.dedupe.matching == DedupeMatch::Contains && p.dedupe.field == p.description_field {
        long.push_str("\n\n");
        long.push_str(&p.dedupe.written(&d.correlation_id));
    }
    if p.summary_field == p.description_field {
        long = format!("{short}\n\n{long}");
    } else {
        put(&mut f, &p.summary_field, short);
    }
    put(&mut f, &p.description_field, long);
    put(&mut f, "impact", d.impact.to_string());
    put(&mut f, "urgency", d.urgency.to_string());
    if p.priority == PriorityMethod::Direct
        && let Some(n) = d.servicenow_priority
    {
        put(&mut f, "priority", n.to_string());
    }
    if let Some(g) = &p.group_field
        && !d.assignment_group.is_empty()
    {
        put(&mut f, g, d.assignment_group.clone());
    }
    if let Some(cat) = input.category {
        put(&mut f, "category", cat);
    }
    if let Some(sub) = input.subcategory {
        put(&mut f, "subcategory", sub);
    }
    if let Some(ct) = &c.contact_type {
        put(&mut f, "contact_type", ct.clone());
    }
    if !(p.dedupe.matching == DedupeMatch::Contains && p.dedupe.field == p.description_field) {
        put(&mut f, &p.dedupe.field, p.dedupe.written(&d.correlation_id));
    }
    put(&mut f, "correlation_display", c.correlation_display.clone());
    for (k, t) in &p.domain {
        if c.privacy.minimal_data && !t.is_minimal() {
            continue;
        }
        if let Some(v) = t.render(input.facts) {
            put(&mut f, k, v);
        }
    }
    // a route's own fields are checked against the table when the config loads; inherited ones the table
    // lacks stay behind
    for (k, v) in extra {
        put(&mut f, k, v.clone());
    }
    for (k, v) in &p.defaults {
        if !f.contains_key(k) {
            put(&mut f, k, v.clone());
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_short_strings_and_marks_cut_ones() {
        assert_eq!(truncate("abc", 5), "abc");
        let t = truncate(&"é".repeat(200), 160);
        assert_eq!(t.chars().count(), 160);
        assert!(t.ends_with('…'));
    }

    #[test]
    fn one_line_collapses_whitespace() {
        assert_eq!(one_line("a\n b\t\tc  "), "a b c");
    }

    #[test]
    fn event_time_is_utc_in_event_management_format() {
        assert_eq!(event_time("2026-11-20T16:03:09+02:00"), "2026-11-20 14:03:09");
        assert_eq!(event_severity(crate::alert::Severity::Critical), "1");
        assert_eq!(event_severity(crate::alert::Severity::Low), "4");
    }
}
