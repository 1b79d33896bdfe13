//! The routing and mapping config (YAML, `config/relay.yaml` is the shipped default), loaded and validated.
//!
//! Loading reports EVERY problem, each naming the rule (or section) it is in: unknown record types and
//! tables, unreachable rules, bad condition paths, duplicate names, unknown template placeholders, …

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::alert::{AlertType, Severity};
use crate::condition::{Condition, Guard};

/// The config compiled into the binaries and used when none is given.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../../config/relay.yaml");

/// The kinds of ServiceNow record a route can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordType {
    Incident,
    Task,
    Problem,
    SecurityIncident,
    ThreatIntelligence,
    PolicyException,
    Risk,
    HrCase,
    EmployeeDocument,
    ItomEvent,
}

impl RecordType {
    pub const ALL: [RecordType; 10] = [
        RecordType::Incident,
        RecordType::Task,
        RecordType::Problem,
        RecordType::SecurityIncident,
        RecordType::ThreatIntelligence,
        RecordType::PolicyException,
        RecordType::Risk,
        RecordType::HrCase,
        RecordType::EmployeeDocument,
        RecordType::ItomEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::Incident => "incident",
            RecordType::Task => "task",
            RecordType::Problem => "problem",
            RecordType::SecurityIncident => "security_incident",
            RecordType::ThreatIntelligence => "threat_intelligence",
            RecordType::PolicyException => "policy_exception",
            RecordType::Risk => "risk",
            RecordType::HrCase => "hr_case",
            RecordType::EmployeeDocument => "employee_document",
            RecordType::ItomEvent => "itom_event",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        RecordType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            RecordType::Incident => "Incident",
            RecordType::Task => "Task",
            RecordType::Problem => "Problem",
            RecordType::SecurityIncident => "Security Incident",
            RecordType::ThreatIntelligence => "Threat Intelligence",
            RecordType::PolicyException => "Policy Exception",
            RecordType::Risk => "Risk",
            RecordType::HrCase => "HR Case",
            RecordType::EmployeeDocument => "Employee Document",
            RecordType::ItomEvent => "ITOM Event",
        }
    }

    /// The table a default instance uses (../shared/reference/servicenow-api.md). ITOM events go to the
    /// Event Management endpoint, which writes `em_event`.
    pub fn default_table(self) -> &'static str {
        match self {
            RecordType::Incident => "incident",
            RecordType::Task => "task",
            RecordType::Problem => "problem",
            RecordType::SecurityIncident => "sn_si_incident",
            RecordType::ThreatIntelligence => "sn_ti_observable",
            RecordType::PolicyException => "sn_compliance_policy_exception",
            RecordType::Risk => "sn_risk_risk",
            RecordType::HrCase => "sn_hr_core_case",
            RecordType::EmployeeDocument => "sn_hr_ef_employee_document",
            RecordType::ItomEvent => "em_event",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an alert travels: at once, or in the next batch window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    Realtime,
    Batch,
}

impl DeliveryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::Realtime => "realtime",
            DeliveryMode::Batch => "batch",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "realtime" => Some(DeliveryMode::Realtime),
            "batch" => Some(DeliveryMode::Batch),
            _ => None,
        }
    }
}

/// Impact and urgency (1 = high … 3 = low): what ServiceNow's priority lookup computes priority from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpactUrgency {
    pub impact: u8,
    pub urgency: u8,
}

impl ImpactUrgency {
    /// ServiceNow's default priority lookup matrix (1 Critical … 5 Planning).
    pub fn servicenow_priority(self) -> u8 {
        match (self.impact, self.urgency) {
            (1, 1) => 1,
            (1, 2) | (2, 1) => 2,
            (1, 3) | (2, 2) | (3, 1) => 3,
            (2, 3) | (3, 2) => 4,
            _ => 5,
        }
    }
}

/// Who gets the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GroupSpec {
    /// A group's display name (sent with `sysparm_input_display_value=true`) or a 32-hex sys_id.
    Name(String),
    /// The group is chosen by the employee's department (e.g. each department's HR partner group).
    ByDepartment(DepartmentGroups),
}

/// `{by_department: {Department: Group, …}, default: Group}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentGroups {
    pub by_department: BTreeMap<String, String>,
    pub default: String,
}

impl GroupSpec {
    pub fn resolve(&self, department: &str) -> &str {
        match self {
            GroupSpec::Name(n) => n,
            GroupSpec::ByDepartment(g) => g
                .by_department
                .get(department)
                .map(String::as_str)
                .unwrap_or(&g.default),
        }
    }
}

// ----- raw (as written) ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: u32,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    privacy: Privacy,
    #[serde(default)]
    tables: BTreeMap<String, String>,
    #[serde(default)]
    extra_tables: Vec<String>,
    #[serde(default)]
    custom_detail_fields: Vec<String>,
    #[serde(default)]
    batch: BatchSettings,
    alert_types: BTreeMap<String, RawTarget>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default = "default_delivery")]
    delivery: BTreeMap<String, String>,
    #[serde(default = "default_window")]
    batch_window_seconds: u64,
    #[serde(default = "default_priority_by_severity")]
    priority_by_severity: BTreeMap<String, String>,
    #[serde(default = "default_priorities")]
    priorities: BTreeMap<String, ImpactUrgency>,
    #[serde(default)]
    contact_type: Option<String>,
    #[serde(default = "default_correlation_prefix")]
    correlation_prefix: String,
    #[serde(default = "default_correlation_display")]
    correlation_display: String,
    #[serde(default = "default_short_description")]
    short_description: String,
}

impl Default for RawDefaults {
    fn default() -> Self {
        RawDefaults {
            delivery: default_delivery(),
            batch_window_seconds: default_window(),
            priority_by_severity: default_priority_by_severity(),
            priorities: default_priorities(),
            contact_type: None,
            correlation_prefix: default_correlation_prefix(),
            correlation_display: default_correlation_display(),
            short_description: default_short_description(),
        }
    }
}

fn default_delivery() -> BTreeMap<String, String> {
    [
        ("critical", "realtime"),
        ("high", "realtime"),
        ("medium", "batch"),
        ("low", "batch"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
fn default_window() -> u64 {
    300
}
fn default_priority_by_severity() -> BTreeMap<String, String> {
    [("critical", "P1"), ("high", "P2"), ("medium", "P3"), ("low", "P4")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
fn default_priorities() -> BTreeMap<String, ImpactUrgency> {
    [("P1", 1, 1), ("P2", 1, 2), ("P3", 2, 2), ("P4", 2, 3)]
        .into_iter()
        .map(|(k, impact, urgency)| (k.to_string(), ImpactUrgency { impact, urgency }))
        .collect()
}
fn default_correlation_prefix() -> String {
    "emon".into()
}
fn default_correlation_display() -> String {
    "Alert Relay".into()
}
fn default_short_description() -> String {
    "{severity_label} {type_label}: {description}".into()
}

/// Privacy options: what of the employee leaves for ServiceNow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Privacy {
    /// Replace the employee identifier with a keyed hash (HMAC-SHA256) before it leaves. The key is not in
    /// this file: it comes from the environment / secret store (RELAY_PSEUDONYM_KEY).
    #[serde(default)]
    pub pseudonymise_employee: bool,
}

/// How batched (medium/low) alerts are aggregated and sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    /// Alerts sharing these keys within one window become ONE record listing every alert. Keys: `employee`,
    /// `alert_type`, `severity`, `rule`, `table`, `assignment_group`. The record's table and group always
    /// take part, so alerts routed to different places are never merged.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// At most this many alerts in one aggregated record (the rest start another record).
    #[serde(default = "default_max_alerts")]
    pub max_alerts_per_record: usize,
    /// Records per Batch API request.
    #[serde(default = "default_chunk")]
    pub max_requests_per_batch: usize,
    /// Upper bound on one Batch API request body (bytes, before base64).
    #[serde(default = "default_batch_bytes")]
    pub max_batch_bytes: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            group_by: default_group_by(),
            max_alerts_per_record: default_max_alerts(),
            max_requests_per_batch: default_chunk(),
            max_batch_bytes: default_batch_bytes(),
        }
    }
}

fn default_group_by() -> Vec<String> {
    vec!["employee".into(), "alert_type".into()]
}
fn default_max_alerts() -> usize {
    100
}
fn default_chunk() -> usize {
    50
}
fn default_batch_bytes() -> usize {
    4 * 1024 * 1024
}

pub const GROUP_KEYS: [&str; 6] = [
    "employee",
    "alert_type",
    "severity",
    "rule",
    "table",
    "assignment_group",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    #[serde(default)]
    record_type: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    assignment_group: Option<GroupSpec>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    priorities: BTreeMap<String, ImpactUrgency>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    subcategory: Option<String>,
    #[serde(default)]
    short_description: Option<String>,
    #[serde(default)]
    delivery: Option<String>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    when: Option<serde_yaml_ng::Value>,
    #[serde(flatten)]
    target: RawTarget,
}

// ----- compiled -------------------------------------------------------------------------------------------

/// Where a matching alert goes and what the record looks like. Unset parts fall back to the alert type's
/// defaults, then to the global defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub record_type: Option<RecordType>,
    pub table: Option<String>,
    pub assignment_group: Option<GroupSpec>,
    pub priority: Option<String>,
    pub category: Option<String>,
    pub subcategory: Option<String>,
    pub short_description: Option<Template>,
    pub delivery: Option<DeliveryMode>,
    pub fields: BTreeMap<String, String>,
}

/// One ordered routing rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub description: Option<String>,
    pub when: Condition,
    /// What `when` requires of alert type, severity and department (checked first while routing).
    pub guard: Guard,
    pub target: Target,
}

/// Per alert type: defaults for every rule plus the route taken when no rule matches.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeDefaults {
    pub target: Target,
    /// Priority name → impact/urgency overrides for this alert type.
    pub priorities: BTreeMap<String, ImpactUrgency>,
}

/// A short-description template: literal text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Text(String),
    Placeholder(Placeholder),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    AlertType,
    TypeLabel,
    Severity,
    SeverityLabel,
    Employee,
    Description,
    RiskScore,
    RuleName,
    RecordLabel,
    OccurredAt,
}

const PLACEHOLDERS: [(&str, Placeholder); 10] = [
    ("alert_type", Placeholder::AlertType),
    ("type_label", Placeholder::TypeLabel),
    ("severity", Placeholder::Severity),
    ("severity_label", Placeholder::SeverityLabel),
    ("employee", Placeholder::Employee),
    ("description", Placeholder::Description),
    ("risk_score", Placeholder::RiskScore),
    ("rule_name", Placeholder::RuleName),
    ("record_label", Placeholder::RecordLabel),
    ("occurred_at", Placeholder::OccurredAt),
];

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in template {s:?}"))?;
            let name = &after[..close];
            let p = PLACEHOLDERS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, p)| *p)
                .ok_or_else(|| {
                    format!(
                        "unknown placeholder {{{name}}} in template {s:?}; known: {}",
                        PLACEHOLDERS
                            .iter()
                            .map(|(n, _)| format!("{{{n}}}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                })?;
            parts.push(TemplatePart::Placeholder(p));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }
}

/// A loaded, validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// First 16 hex digits of SHA-256 over the file's bytes: part of every decision.
    pub hash: String,
    pub delivery: [DeliveryMode; 4],
    pub batch_window_seconds: u64,
    pub priority_by_severity: [String; 4],
    pub priorities: BTreeMap<String, ImpactUrgency>,
    pub contact_type: Option<String>,
    pub correlation_prefix: String,
    pub correlation_display: String,
    pub short_description: Template,
    pub privacy: Privacy,
    pub tables: BTreeMap<RecordType, String>,
    pub batch: BatchSettings,
    pub alert_types: BTreeMap<AlertType, TypeDefaults>,
    pub rules: Vec<Rule>,
}

/// One config problem, named by where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigProblem {
    /// `rule "name"`, `alert_types.dlp`, `defaults`, `tables`, `batch`, or `file`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config ({} problem{}):\n  {}", .problems.len(), if .problems.len() == 1 { "" } else { "s" },
        .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

fn is_table_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= 80
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_rule_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn add(&mut self, location: &str, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            location: location.to_string(),
            message: message.into(),
        });
    }
}

impl Config {
    /// The shipped default config.
    pub fn default_config() -> Config {
        Config::from_yaml(DEFAULT_CONFIG_YAML).expect("the shipped config/relay.yaml is valid (tested)")
    }

    /// Parse and validate a config file's text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| ConfigError {
            problems: vec![ConfigProblem {
                location: "file".into(),
                message: e.to_string(),
            }],
        })?;
        let hash = hex::encode(Sha256::digest(text.as_bytes()))[..16].to_string();
        compile(raw, hash)
    }
}

fn compile(raw: RawConfig, hash: String) -> Result<Config, ConfigError> {
    let mut p = Problems(Vec::new());
    if raw.version != 1 {
        p.add(
            "file",
            format!("unsupported config version {}; this relay reads version 1", raw.version),
        );
    }

    // defaults
    let d = &raw.defaults;
    let mut delivery = [
        DeliveryMode::Realtime,
        DeliveryMode::Realtime,
        DeliveryMode::Batch,
        DeliveryMode::Batch,
    ];
    for (k, v) in &d.delivery {
        match (Severity::parse(k), DeliveryMode::parse(v)) {
            (Some(s), Some(m)) => delivery[s.rank() as usize] = m,
            (None, _) => p.add("defaults.delivery", format!("unknown severity {k:?}")),
            (_, None) => p.add(
                "defaults.delivery",
                format!("{k}: unknown delivery mode {v:?} (realtime or batch)"),
            ),
        }
    }
    if d.batch_window_seconds == 0 || d.batch_window_seconds > 3600 {
        p.add(
            "defaults",
            format!("batch_window_seconds {} must be 1 to 3600", d.batch_window_seconds),
        );
    }
    let priorities = d.priorities.clone();
    check_priorities(&mut p, "defaults.priorities", &priorities);
    let mut priority_by_severity: [String; 4] = ["P1".into(), "P2".into(), "P3".into(), "P4".into()];
    for (k, v) in &d.priority_by_severity {
        match Severity::parse(k) {
            Some(s) if priorities.contains_key(v) => priority_by_severity[s.rank() as usize] = v.clone(),
            Some(_) => p.add("defaults.priority_by_severity", format!("{k}: unknown priority {v:?}")),
            None => p.add("defaults.priority_by_severity", format!("unknown severity {k:?}")),
        }
    }
    for (i, name) in priority_by_severity.iter().enumerate() {
        if !priorities.contains_key(name) && d.priority_by_severity.len() < 4 {
            p.add(
                "defaults.priority_by_severity",
                format!(
                    "{}: priority {name:?} is not defined under defaults.priorities",
                    Severity::ALL[i]
                ),
            );
        }
    }
    if !d
        .correlation_prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        || d.correlation_prefix.is_empty()
        || d.correlation_prefix.len() > 16
    {
        p.add(
            "defaults",
            format!(
                "correlation_prefix {:?} must be 1-16 characters of [A-Za-z0-9.-]",
                d.correlation_prefix
            ),
        );
    }
    let short_description = Template::parse(&d.short_description).unwrap_or_else(|e| {
        p.add("defaults.short_description", e);
        Template { parts: vec![] }
    });

    // tables
    let mut tables: BTreeMap<RecordType, String> = RecordType::ALL
        .iter()
        .map(|t| (*t, t.default_table().to_string()))
        .collect();
    for (k, v) in &raw.tables {
        match RecordType::parse(k) {
            None => p.add(
                "tables",
                format!("unknown record type {k:?}; known: {}", record_types()),
            ),
            Some(RecordType::ItomEvent) => p.add("tables", "itom_event always goes to Event Management (em_event)"),
            Some(_) if !is_table_name(v) => p.add("tables", format!("{k}: {v:?} is not a ServiceNow table name")),
            Some(t) => {
                tables.insert(t, v.clone());
            }
        }
    }
    let mut known_tables: HashSet<String> = tables.values().cloned().collect();
    for t in &raw.extra_tables {
        if is_table_name(t) {
            known_tables.insert(t.clone());
        } else {
            p.add("extra_tables", format!("{t:?} is not a ServiceNow table name"));
        }
    }

    // batch
    for k in &raw.batch.group_by {
        if !GROUP_KEYS.contains(&k.as_str()) {
            p.add(
                "batch.group_by",
                format!("unknown key {k:?}; known: {}", GROUP_KEYS.join(", ")),
            );
        }
    }
    if raw.batch.max_alerts_per_record == 0 || raw.batch.max_requests_per_batch == 0 {
        p.add(
            "batch",
            "max_alerts_per_record and max_requests_per_batch must be at least 1",
        );
    }
    if raw.batch.max_batch_bytes < 64 * 1024 {
        p.add("batch", "max_batch_bytes must be at least 65536");
    }

    // A rule may name a priority that the defaults or any alert type defines.
    let mut all_priorities = priorities.clone();
    for t in raw.alert_types.values() {
        all_priorities.extend(t.priorities.clone());
    }
    let ctx = TargetContext {
        known_tables: &known_tables,
        priorities: &all_priorities,
    };

    // alert types
    let mut alert_types = BTreeMap::new();
    for (k, raw_t) in &raw.alert_types {
        let loc = format!("alert_types.{k}");
        let Some(at) = AlertType::parse(k) else {
            p.add(
                &loc,
                format!(
                    "unknown alert type; known: {}",
                    AlertType::ALL.map(|t| t.as_str()).join(", ")
                ),
            );
            continue;
        };
        let mut type_priorities = priorities.clone();
        check_priorities(&mut p, &format!("{loc}.priorities"), &raw_t.priorities);
        type_priorities.extend(raw_t.priorities.clone());
        let target = compile_target(
            &mut p,
            &loc,
            raw_t,
            &TargetContext {
                priorities: &type_priorities,
                ..ctx
            },
        );
        if raw_t.record_type.is_none() {
            p.add(&loc, "needs a record_type (the route taken when no rule matches)");
        }
        if target.assignment_group.is_none() {
            p.add(&loc, "needs an assignment_group (the route taken when no rule matches)");
        }
        alert_types.insert(
            at,
            TypeDefaults {
                target,
                priorities: type_priorities,
            },
        );
    }
    for at in AlertType::ALL {
        if !raw.alert_types.contains_key(at.as_str()) {
            p.add(
                &format!("alert_types.{at}"),
                "is missing: every alert type needs a default route",
            );
        }
    }

    // rules
    let mut names = HashSet::new();
    let mut broken_rules = HashSet::new();
    let mut rules: Vec<Rule> = Vec::new();
    for r in &raw.rules {
        let loc = format!("rule {:?}", r.name);
        if !is_rule_name(&r.name) {
            p.add(&loc, "name must be 1-64 characters of [A-Za-z0-9._-]");
        }
        if !names.insert(r.name.clone()) {
            p.add(&loc, "duplicate rule name");
        }
        let mut errors = Vec::new();
        let when = match &r.when {
            Some(c) => Condition::compile(c, &raw.custom_detail_fields, &mut errors),
            None => Condition::Always,
        };
        let broken = !errors.is_empty();
        for e in errors {
            p.add(&loc, format!("when: {e}"));
        }
        if !r.target.priorities.is_empty() {
            p.add(
                &loc,
                "priorities (impact/urgency per priority) can be set under defaults or per alert type, not per rule",
            );
        }
        let target = compile_target(&mut p, &loc, &r.target, &ctx);
        if broken {
            broken_rules.insert(r.name.clone());
        } else if let Some(earlier) = rules
            .iter()
            .filter(|e| !broken_rules.contains(&e.name))
            .find(|e| shadows(&e.when, &when))
        {
            p.add(
                &loc,
                format!(
                    "is unreachable: rule {:?} earlier in the list matches every alert this one matches",
                    earlier.name
                ),
            );
        }
        let guard = Guard::of(&when);
        rules.push(Rule {
            name: r.name.clone(),
            description: r.description.clone(),
            when,
            guard,
            target,
        });
    }

    if !p.0.is_empty() {
        return Err(ConfigError { problems: p.0 });
    }
    Ok(Config {
        hash,
        delivery,
        batch_window_seconds: d.batch_window_seconds,
        priority_by_severity,
        priorities,
        contact_type: d.contact_type.clone(),
        correlation_prefix: d.correlation_prefix.clone(),
        correlation_display: d.correlation_display.clone(),
        short_description,
        privacy: raw.privacy,
        tables,
        batch: raw.batch,
        alert_types,
        rules,
    })
}

fn record_types() -> String {
    RecordType::ALL.map(|t| t.as_str()).join(", ")
}

fn check_priorities(p: &mut Problems, loc: &str, priorities: &BTreeMap<String, ImpactUrgency>) {
    for (name, iu) in priorities {
        if !(1..=3).contains(&iu.impact) || !(1..=3).contains(&iu.urgency) {
            p.add(loc, format!("{name}: impact and urgency must be 1, 2 or 3"));
        }
    }
}

#[derive(Clone, Copy)]
struct TargetContext<'a> {
    known_tables: &'a HashSet<String>,
    priorities: &'a BTreeMap<String, ImpactUrgency>,
}

fn compile_target(p: &mut Problems, loc: &str, raw: &RawTarget, ctx: &TargetContext<'_>) -> Target {
    let record_type = raw.record_type.as_deref().and_then(|s| {
        let t = RecordType::parse(s);
        if t.is_none() {
            p.add(loc, format!("unknown record_type {s:?}; known: {}", record_types()));
        }
        t
    });
    if let Some(t) = &raw.table
        && !ctx.known_tables.contains(t)
    {
        p.add(
            loc,
            format!("unknown table {t:?}: not a mapped table; add it under extra_tables if your instance has it"),
        );
    }
    if raw.table.is_some() && record_type == Some(RecordType::ItomEvent) {
        p.add(loc, "itom_event records go to Event Management; they take no table");
    }
    if let Some(pr) = &raw.priority
        && !ctx.priorities.contains_key(pr)
    {
        p.add(
            loc,
            format!(
                "unknown priority {pr:?}; defined: {}",
                ctx.priorities.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    match &raw.assignment_group {
        Some(GroupSpec::Name(n)) if n.trim().is_empty() => p.add(loc, "assignment_group must not be empty"),
        Some(GroupSpec::ByDepartment(g))
            if g.default.trim().is_empty() || g.by_department.values().any(|v| v.trim().is_empty()) =>
        {
            p.add(loc, "assignment_group: group names must not be empty")
        }
        _ => {}
    }
    let delivery = raw.delivery.as_deref().and_then(|s| {
        let m = DeliveryMode::parse(s);
        if m.is_none() {
            p.add(loc, format!("unknown delivery {s:?} (realtime or batch)"));
        }
        m
    });
    let short_description = raw.short_description.as_deref().and_then(|s| match Template::parse(s) {
        Ok(t) => Some(t),
        Err(e) => {
            p.add(loc, e);
            None
        }
    });
    for k in raw.fields.keys() {
        if crate::fields::MANAGED_FIELDS.contains(&k.as_str()) {
            p.add(
                loc,
                format!("fields.{k} is set by the relay itself and cannot be overridden"),
            );
        } else if !is_table_name(k) {
            p.add(loc, format!("fields.{k} is not a ServiceNow field name"));
        }
    }
    Target {
        record_type,
        table: raw.table.clone(),
        assignment_group: raw.assignment_group.clone(),
        priority: raw.priority.clone(),
        category: raw.category.clone(),
        subcategory: raw.subcategory.clone(),
        short_description,
        delivery,
        fields: raw.fields.clone(),
    }
}

/// True when every alert `later` matches is already matched by `earlier` — decidable here for pure
/// conjunctions: `earlier`'s leaves are a subset of `later`'s.
fn shadows(earlier: &Condition, later: &Condition) -> bool {
    if earlier == later {
        return true;
    }
    match (earlier.conjunction(), later.conjunction()) {
        (Some(e), Some(l)) => e.iter().all(|leaf| l.contains(leaf)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
version: 1
alert_types:
  dlp: {record_type: security_incident, assignment_group: Security Operations}
  policy_violation: {record_type: policy_exception, assignment_group: Compliance}
  behavioral_anomaly: {record_type: security_incident, assignment_group: IT Security}
  productivity: {record_type: hr_case, assignment_group: HR Partners}
  custom: {record_type: incident, assignment_group: Service Desk}
"#;

    fn problems(yaml: &str) -> Vec<String> {
        Config::from_yaml(yaml)
            .expect_err("should be invalid")
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    fn has(problems: &[String], needle: &str) -> bool {
        problems.iter().any(|p| p.contains(needle))
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let c = Config::default_config();
        assert_eq!(c.hash.len(), 16);
        assert!(c.rules.len() >= 5);
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(
            c.delivery,
            [
                DeliveryMode::Realtime,
                DeliveryMode::Realtime,
                DeliveryMode::Batch,
                DeliveryMode::Batch
            ]
        );
        assert_eq!(c.batch_window_seconds, 300);
        assert_eq!(c.priorities["P1"], ImpactUrgency { impact: 1, urgency: 1 });
        assert_eq!(c.priorities["P2"], ImpactUrgency { impact: 1, urgency: 2 });
        assert_eq!(c.priorities["P3"], ImpactUrgency { impact: 2, urgency: 2 });
        assert_eq!(c.priorities["P4"], ImpactUrgency { impact: 2, urgency: 3 });
        assert_eq!(c.tables[&RecordType::SecurityIncident], "sn_si_incident");
        assert_eq!(c.batch.group_by, vec!["employee", "alert_type"]);
    }

    #[test]
    fn the_hash_changes_with_the_content() {
        let a = Config::from_yaml(MINIMAL).unwrap();
        let b = Config::from_yaml(&format!("{MINIMAL}\n# a comment\n")).unwrap();
        assert_ne!(a.hash, b.hash);
        assert_eq!(a.hash, Config::from_yaml(MINIMAL).unwrap().hash);
    }

    #[test]
    fn priority_matrix_matches_servicenow_defaults() {
        let m = |impact, urgency| ImpactUrgency { impact, urgency }.servicenow_priority();
        assert_eq!([m(1, 1), m(1, 2), m(1, 3)], [1, 2, 3]);
        assert_eq!([m(2, 1), m(2, 2), m(2, 3)], [2, 3, 4]);
        assert_eq!([m(3, 1), m(3, 2), m(3, 3)], [3, 4, 5]);
    }

    #[test]
    fn every_problem_is_reported_with_the_rule_name() {
        let yaml = format!(
            r#"{MINIMAL}
rules:
  - name: one
    when: {{field: details.favourite_food, eq: pizza}}
    record_type: spaceship
  - name: one
    table: u_not_there
    priority: P9
  - name: bad-delivery
    delivery: sometimes
    short_description: "{{nope}}"
  - name: managed
    fields: {{correlation_id: x, "Bad Name": y}}
"#
        );
        let p = problems(&yaml);
        assert!(has(&p, r#"rule "one": when: unknown detail field"#), "{p:#?}");
        assert!(has(&p, r#"rule "one": unknown record_type "spaceship""#), "{p:#?}");
        assert!(has(&p, r#"rule "one": duplicate rule name"#), "{p:#?}");
        assert!(has(&p, r#"rule "one": unknown table "u_not_there""#), "{p:#?}");
        assert!(has(&p, r#"rule "one": unknown priority "P9""#), "{p:#?}");
        assert!(
            has(&p, r#"rule "bad-delivery": unknown delivery "sometimes""#),
            "{p:#?}"
        );
        assert!(has(&p, r#"rule "bad-delivery": unknown placeholder {nope}"#), "{p:#?}");
        assert!(
            has(&p, r#"rule "managed": fields.correlation_id is set by the relay"#),
            "{p:#?}"
        );
        assert!(
            has(&p, r#"rule "managed": fields.Bad Name is not a ServiceNow field name"#),
            "{p:#?}"
        );
    }

    #[test]
    fn unreachable_rules_are_named_with_the_rule_that_hides_them() {
        let yaml = format!(
            r#"{MINIMAL}
rules:
  - name: all-dlp
    when: {{field: alert_type, eq: dlp}}
    record_type: incident
  - name: usb-dlp
    when: {{all: [{{field: alert_type, eq: dlp}}, {{field: details.channel, eq: usb}}]}}
    record_type: security_incident
  - name: catch-all
    record_type: task
  - name: after-catch-all
    when: {{field: severity, eq: low}}
    record_type: task
"#
        );
        let p = problems(&yaml);
        assert!(has(&p, r#"rule "usb-dlp": is unreachable: rule "all-dlp""#), "{p:#?}");
        assert!(
            has(&p, r#"rule "after-catch-all": is unreachable: rule "catch-all""#),
            "{p:#?}"
        );
        assert_eq!(p.len(), 2, "{p:#?}");
    }

    #[test]
    fn a_narrower_rule_before_a_broader_one_is_fine() {
        let yaml = format!(
            r#"{MINIMAL}
rules:
  - name: usb-dlp
    when: {{all: [{{field: alert_type, eq: dlp}}, {{field: details.channel, eq: usb}}]}}
    record_type: security_incident
  - name: all-dlp
    when: {{field: alert_type, eq: dlp}}
    record_type: incident
"#
        );
        assert_eq!(Config::from_yaml(&yaml).unwrap().rules.len(), 2);
    }

    #[test]
    fn missing_alert_type_defaults_and_bad_sections_are_named() {
        let yaml = r#"
version: 2
defaults:
  delivery: {critical: now, urgent: batch}
  batch_window_seconds: 0
  priorities: {P1: {impact: 0, urgency: 1}}
  correlation_prefix: "bad prefix"
tables: {incident: "Incident Table", spaceship: x, itom_event: em_event}
extra_tables: ["u bad"]
batch: {group_by: [employee, colour], max_alerts_per_record: 0}
alert_types:
  dlp: {record_type: security_incident}
  keylogger: {record_type: incident, assignment_group: x}
"#;
        let p = problems(yaml);
        for needle in [
            "file: unsupported config version 2",
            "defaults.delivery: critical: unknown delivery mode \"now\"",
            "defaults.delivery: unknown severity \"urgent\"",
            "batch_window_seconds 0 must be 1 to 3600",
            "defaults.priorities: P1: impact and urgency must be 1, 2 or 3",
            "correlation_prefix \"bad prefix\"",
            "tables: incident: \"Incident Table\" is not a ServiceNow table name",
            "tables: unknown record type \"spaceship\"",
            "tables: itom_event always goes to Event Management",
            "extra_tables: \"u bad\"",
            "batch.group_by: unknown key \"colour\"",
            "batch: max_alerts_per_record",
            "alert_types.dlp: needs an assignment_group",
            "alert_types.keylogger: unknown alert type",
            "alert_types.productivity: is missing",
        ] {
            assert!(has(&p, needle), "missing {needle:?} in {p:#?}");
        }
    }

    #[test]
    fn rule_priorities_missing_priority_names_and_unknown_nested_keys_are_reported() {
        let yaml = format!(
            r#"{MINIMAL}
rules:
  - name: own-matrix
    when: {{field: severity, eq: low}}
    priorities: {{P1: {{impact: 1, urgency: 1}}}}
"#
        );
        assert!(has(&problems(&yaml), "not per rule"));
        let yaml = MINIMAL.replace(
            "version: 1\n",
            "version: 1\ndefaults:\n  priorities: {P1: {impact: 1, urgency: 1}}\n",
        );
        let p = problems(&yaml);
        assert!(has(&p, "low: unknown priority \"P4\""), "{p:#?}");
        let yaml = MINIMAL.replace(
            "version: 1\n",
            "version: 1\ndefaults:\n  priorities: {P1: {impact: 1, urgency: 1}}\n  priority_by_severity: {critical: P1}\n",
        );
        assert!(has(&problems(&yaml), "low: priority \"P4\" is not defined"));
        let yaml = MINIMAL.replace(
            "version: 1\n",
            "version: 1\ndefaults:\n  priorities: {P1: {impact: 1, urgncy: 1}}\n",
        );
        assert!(has(&problems(&yaml), "urgncy"));
        let yaml = MINIMAL.replace(
            "assignment_group: HR Partners}",
            "assignment_group: {by_department: {Sales: S}, default: D, fallback: X}}",
        );
        assert!(Config::from_yaml(&yaml).is_err());
    }

    #[test]
    fn a_broken_condition_does_not_make_later_rules_unreachable() {
        let yaml = format!(
            r#"{MINIMAL}
rules:
  - name: broken
    when: {{field: severity, equals: high}}
  - name: fine
    when: {{field: severity, eq: low}}
"#
        );
        let p = problems(&yaml);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(
            p[0].contains(r#"rule "broken": when: unknown operator `equals`"#),
            "{p:#?}"
        );
    }

    #[test]
    fn a_rule_may_use_a_priority_an_alert_type_defines() {
        let yaml = MINIMAL.replace(
            "custom: {record_type: incident, assignment_group: Service Desk}",
            "custom: {record_type: incident, assignment_group: Service Desk, priorities: {P0: {impact: 1, urgency: 1}}}",
        ) + "rules:\n  - name: zero\n    when: {field: alert_type, eq: custom}\n    priority: P0\n";
        assert!(Config::from_yaml(&yaml).is_ok(), "{:?}", Config::from_yaml(&yaml).err());
    }

    #[test]
    fn yaml_syntax_and_unknown_keys_are_reported() {
        assert!(problems("version: [")[0].starts_with("file:"));
        let p = problems(&format!("{MINIMAL}\nrules:\n  - name: x\n    colour: red\n"));
        assert!(has(&p, "colour"), "{p:?}");
    }

    #[test]
    fn extra_tables_and_table_overrides_are_allowed() {
        let yaml = format!(
            "{MINIMAL}\ntables: {{employee_document: u_employee_doc}}\nextra_tables: [u_dlp_case]\nrules:\n  - name: doc\n    when: {{field: severity, eq: low}}\n    table: u_employee_doc\n  - name: custom-table\n    table: u_dlp_case\n"
        );
        let c = Config::from_yaml(&yaml).unwrap();
        assert_eq!(c.tables[&RecordType::EmployeeDocument], "u_employee_doc");
    }

    #[test]
    fn templates_parse_placeholders_and_reject_unknown_ones() {
        let t = Template::parse("Security Review: {description} ({risk_score})").unwrap();
        assert_eq!(t.parts.len(), 5);
        assert!(
            Template::parse("{nope}")
                .unwrap_err()
                .contains("unknown placeholder {nope}")
        );
        assert!(Template::parse("{description").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn groups_resolve_by_department_with_a_default() {
        let g = GroupSpec::ByDepartment(DepartmentGroups {
            by_department: [("Engineering".to_string(), "HR Partners - Engineering".to_string())].into(),
            default: "HR Partners".into(),
        });
        assert_eq!(g.resolve("Engineering"), "HR Partners - Engineering");
        assert_eq!(g.resolve("Legal"), "HR Partners");
        assert_eq!(GroupSpec::Name("IT Security".into()).resolve("x"), "IT Security");
    }
}
