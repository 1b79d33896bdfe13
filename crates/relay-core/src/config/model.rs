//! The compiled config and the value types it is made of.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::template::Template;
use crate::alert::AlertType;
use crate::condition::{Condition, Guard};

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
    pub fn parse(s: &str) -> Option<Self> {
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

/// Privacy options: what of the employee leaves for ServiceNow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Privacy {
    /// Replace the employee identifier with a keyed hash (HMAC-SHA256) before it leaves. The key is not in
    /// this file: it comes from the environment / secret store (RELAY_PSEUDONYM_KEY).
    #[serde(default)]
    pub pseudonymise_employee: bool,
    /// Send only the seed's minimal data set: no profile context lines and no domain values taken from the
    /// alert's details or the employee's manager.
    #[serde(default)]
    pub minimal_data: bool,
}

/// How the employee is found in `sys_user` for the profile's person fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PersonMatch {
    /// `sys_user.employee_number` = the alert's employee id.
    #[default]
    EmployeeNumber,
    /// `sys_user.user_name` = the alert's employee id.
    UserName,
    /// `sys_user.email` = the alert's employee e-mail.
    Email,
}

impl PersonMatch {
    /// The `sys_user` field compared.
    pub fn field(self) -> &'static str {
        match self {
            PersonMatch::EmployeeNumber => "employee_number",
            PersonMatch::UserName => "user_name",
            PersonMatch::Email => "email",
        }
    }
}

/// The longest a resolved person is cached, unless the config says otherwise.
pub const DEFAULT_PERSON_CACHE_TTL_SECONDS: u64 = 3600;

/// `person:`: resolving the employee to a `sys_user` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersonSettings {
    /// Off: no lookup; the record names the employee only by identifier.
    pub resolve: bool,
    pub match_by: PersonMatch,
    /// How long a found (or missing) user is remembered.
    pub cache_ttl_seconds: u64,
}

impl Default for PersonSettings {
    fn default() -> Self {
        PersonSettings {
            resolve: true,
            match_by: PersonMatch::EmployeeNumber,
            cache_ttl_seconds: DEFAULT_PERSON_CACHE_TTL_SECONDS,
        }
    }
}

/// Alerts in one aggregated batch record, unless the config says otherwise.
pub const DEFAULT_MAX_ALERTS_PER_RECORD: usize = MAX_ALERTS_PER_RECORD;
/// The most alerts one aggregated record may list: an aggregate's members are sealed in the ledger in one
/// atomic write before its record is sent, and DynamoDB's TransactWriteItems writes at most 100 items (the
/// aggregate and 99 members). Equals `relay_ports::MAX_AGGREGATE_MEMBERS`.
pub const MAX_ALERTS_PER_RECORD: usize = 99;
/// Records per Batch API request, unless the config says otherwise. ServiceNow runs a batch's items one
/// after another in one transaction, under a 30 s "REST Batch API request timeout" quota (the client's
/// own timeout is 30 s too): at a Table API write of 150 ms median and 1.2 s p99, 20 items take ≈ 4.5 s,
/// rarely 10 s, where 50 took ≈ 11 s and, under a storm, reached the timeout (an ambiguous answer, so
/// every item is looked up again).
pub const DEFAULT_MAX_REQUESTS_PER_BATCH: usize = 20;
/// Upper bound of one Batch API request body, unless the config says otherwise.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// How batched (medium/low) alerts are aggregated and sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSettings {
    /// Alerts sharing these keys within one window become ONE record listing every alert. Keys: `employee`,
    /// `alert_type`, `severity`, `rule`, `table`, `assignment_group`. The record's table and group always
    /// take part, so alerts routed to different places are never merged.
    pub group_by: Vec<String>,
    /// At most this many alerts in one aggregated record (the rest start another record).
    pub max_alerts_per_record: usize,
    /// Records per Batch API request.
    pub max_requests_per_batch: usize,
    /// Upper bound on one Batch API request body (bytes, before base64).
    pub max_batch_bytes: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            group_by: vec!["employee".into(), "alert_type".into()],
            max_alerts_per_record: DEFAULT_MAX_ALERTS_PER_RECORD,
            max_requests_per_batch: DEFAULT_MAX_REQUESTS_PER_BATCH,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }
}

/// The keys `batch.group_by` may name.
pub const GROUP_KEYS: [&str; 6] = [
    "employee",
    "alert_type",
    "severity",
    "rule",
    "table",
    "assignment_group",
];

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
    /// Context lines instead of the profile's.
    pub context: Option<Vec<crate::profile::Text>>,
    /// This route's thread settings, over the alert type's and the config's.
    pub thread: Option<ThreadOverride>,
}

/// Threads: a realtime alert whose thread key matches a record the relay opened within the window, while that
/// record is open, becomes a journal entry (a work note) on it instead of a new record
/// (docs/record-lifecycle.md). The config's top-level `threads`; a route's `thread` overrides any part.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThreadSettings {
    /// Off unless the config turns it on (for every route, or per route).
    pub enabled: bool,
    /// How long after its record was opened a thread takes more alerts (days).
    pub window_days: u32,
    /// What alerts of one thread share, besides the table: `employee`, `alert_type`, `custom_rule` (the
    /// custom rule that raised the alert, when there is one), `rule` (the routing rule), `severity`.
    pub key: Vec<String>,
    /// Raise the thread's record's priority when the thread reaches thresholds (the highest step reached
    /// wins).
    pub escalation: Vec<Escalation>,
    /// What an alert of the thread does when the thread's record is done (resolved, closed, cancelled).
    pub closed: ClosedPolicy,
}

/// What a thread's next alert does when its record is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedPolicy {
    /// A new record that references the done one (the profile's link field, or a line in its text).
    #[default]
    NewLinked,
    /// Reopen the record where its state model allows (the profile's `reopen_state`; a final state never),
    /// then note the alert on it; otherwise as `new_linked`.
    Reopen,
    /// Note the alert on the done record, leaving its state; a record in a final state takes no notes, so
    /// there as `new_linked`.
    NoteOnly,
}

/// One escalation step of a thread: once every threshold it names is reached by the thread's alerts (the
/// first one's included), its record is raised to `priority` (a priority name, as routes use), with a work
/// note saying why.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    pub priority: String,
    /// The highest risk_score of the thread's alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_risk: Option<u8>,
    /// The sum of their risk_scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum_risk: Option<u32>,
    /// How many alerts the thread has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<u32>,
    /// How many distinct DLP channels its alerts used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
}

/// The most days a thread window may span (the ledger keeps an alert's entry 30 days by default).
pub const MAX_THREAD_WINDOW_DAYS: u32 = 30;

/// What a thread key may be made of ([`ThreadSettings::key`]).
pub const THREAD_KEYS: [&str; 5] = ["employee", "alert_type", "custom_rule", "rule", "severity"];

impl Default for ThreadSettings {
    fn default() -> Self {
        ThreadSettings {
            enabled: false,
            window_days: 7,
            key: vec!["employee".into(), "alert_type".into(), "custom_rule".into()],
            escalation: Vec::new(),
            closed: ClosedPolicy::NewLinked,
        }
    }
}

/// A route's `thread:` — any part of [`ThreadSettings`], the rest from the alert type's and the config's.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadOverride {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub window_days: Option<u32>,
    #[serde(default)]
    pub key: Option<Vec<String>>,
    #[serde(default)]
    pub escalation: Option<Vec<Escalation>>,
    #[serde(default)]
    pub closed: Option<ClosedPolicy>,
}

impl ThreadSettings {
    /// These settings with `o`'s parts in their place.
    pub fn overridden(&self, o: Option<&ThreadOverride>) -> ThreadSettings {
        let Some(o) = o else { return self.clone() };
        ThreadSettings {
            enabled: o.enabled.unwrap_or(self.enabled),
            window_days: o.window_days.unwrap_or(self.window_days),
            key: o.key.clone().unwrap_or_else(|| self.key.clone()),
            escalation: o.escalation.clone().unwrap_or_else(|| self.escalation.clone()),
            closed: o.closed.unwrap_or(self.closed),
        }
    }
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

/// The batch window when the config sets none: batched alerts received within one window are aggregated.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_secs(300);
/// The longest batch window a config may set.
pub const MAX_BATCH_WINDOW: Duration = Duration::from_secs(3600);

/// What a correlation id starts with when the config sets no `correlation_prefix`.
pub const DEFAULT_CORRELATION_PREFIX: &str = "emon";

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
    pub threads: ThreadSettings,
    pub alert_types: BTreeMap<AlertType, TypeDefaults>,
    pub rules: Vec<Rule>,
    /// Record profiles by name (`config/profiles.yaml` with the config's `profiles:` overrides).
    pub profiles: BTreeMap<String, crate::profile::Profile>,
    pub person: PersonSettings,
}

impl Config {
    /// The record type and table a route takes: the rule's, else the alert type's default.
    pub fn route_target(&self, rule: Option<&Rule>, defaults: &TypeDefaults) -> (RecordType, String) {
        let rt = rule.and_then(|r| r.target.record_type);
        let record_type = rt.or(defaults.target.record_type).unwrap_or(RecordType::Incident);
        let table = rule
            .and_then(|r| r.target.table.clone())
            .or_else(|| {
                if rt.is_none() {
                    defaults.target.table.clone()
                } else {
                    None
                }
            })
            .unwrap_or_else(|| self.tables[&record_type].clone());
        (record_type, table)
    }

    /// Every (record type, table) a route of this config can take: each alert type's default route and each
    /// rule's own target (a rule that names neither record type nor table takes its alert type's default,
    /// already listed). Sorted, without repeats.
    pub fn routed_targets(&self) -> Vec<(RecordType, String)> {
        let mut targets = std::collections::BTreeSet::new();
        for defaults in self.alert_types.values() {
            targets.insert(self.route_target(None, defaults));
            for rule in &self.rules {
                if rule.target.record_type.is_some() || rule.target.table.is_some() {
                    targets.insert(self.route_target(Some(rule), defaults));
                }
            }
        }
        targets.into_iter().collect()
    }

    /// The profile of a record of `record_type` in `table`: the record type's own when it names that table,
    /// else the profile of that table, else the record type's.
    pub fn profile_for(&self, record_type: RecordType, table: &str) -> &crate::profile::Profile {
        let own = &self.profiles[record_type.as_str()];
        if own.table == table {
            return own;
        }
        self.profiles.values().find(|p| p.table == table).unwrap_or(own)
    }

    /// `batch_window_seconds` as a duration.
    pub fn batch_window(&self) -> Duration {
        Duration::from_secs(self.batch_window_seconds)
    }
}
