//! Simulator configuration: users, roles, tables, data policies, rate limits, import sets, quotas.
//! Every struct deserialises from YAML; missing keys take the default instance's values.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crate::SimError;

mod auth;
mod latency;
mod limits;
mod policies;
mod profile;
mod tables;

pub use auth::{OAuthClientConfig, OAuthConfig, UserConfig};
pub use latency::{Latency, LatencyApi, LatencyConfig};
pub use limits::{ApiKind, BatchConfig, RateLimitRule, TransactionLimit};
pub use policies::{FormRulePolicy, QualifierPolicy, ReferencePolicy};
pub use profile::{REALISTIC_SEED, SimProfile};
pub use tables::{
    DateRule, FromReference, ImportSetConfig, PriorityRule, PurgeJob, ReadThrough, ReferenceQualifier, Restriction,
    SYSTEM_FIELDS, StateRule, TableConfig,
};

/// A configuration whose parts do not fit together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("import set {staging_table} targets unknown table {target_table}")]
    UnknownImportTarget {
        staging_table: String,
        target_table: String,
    },
    #[error("OAuth client {client_id} acts as unknown user {user}")]
    UnknownClientUser { client_id: String, user: String },
    #[error("table {table} extends itself")]
    InheritanceCycle { table: String },
    #[error("unknown parent table {table}")]
    UnknownParent { table: String },
    #[error("reference field {table}.{field} targets unknown table {target}")]
    UnknownReferenceTarget {
        table: String,
        field: String,
        target: String,
    },
    #[error("reference data for unknown table {table}")]
    UnknownRecordTable { table: String },
    #[error("table {table} has journal fields but the dictionary has no sys_journal_field table to keep them")]
    NoJournalTable { table: String },
    #[error("table {table}: {what} names field {field}, which the table does not have")]
    UnknownRuleField {
        table: String,
        what: &'static str,
        field: String,
    },
    #[error("table {table}: {what} names state {state}, which is not one of the table's state choices")]
    UnknownState {
        table: String,
        what: &'static str,
        state: String,
    },
    #[error("transactions.max_concurrent must be at least 1")]
    NoTransactionThreads,
    #[error("latency.{api}: median_ms must be positive and p99_ms at least the median (got {median_ms} / {p99_ms})")]
    InvalidLatency {
        api: &'static str,
        median_ms: f64,
        p99_ms: f64,
    },
}

/// Role that may do everything (as on a real instance).
pub const ADMIN_ROLE: &str = "admin";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    pub users: Vec<UserConfig>,
    pub oauth_clients: Vec<OAuthClientConfig>,
    /// Names of the assignment groups (table `sys_user_group`). Duplicates are allowed (ambiguous names).
    pub groups: Vec<String>,
    /// The data dictionary and access rules, one entry per table (default: `instance.yaml`).
    pub tables: Vec<TableConfig>,
    /// Reference data: table → rows. A reference field's value names the target by display value.
    pub records: BTreeMap<String, Vec<BTreeMap<String, String>>>,
    /// Role containment: a user with the key role also holds the listed roles (transitively).
    pub role_includes: BTreeMap<String, Vec<String>>,
    pub import_sets: Vec<ImportSetConfig>,
    pub rate_limits: Vec<RateLimitRule>,
    /// Seconds between rate-limit count commits: each node counts requests and commits the count every 30 s,
    /// so "a rate limit rule may not take effect for up to 30 seconds" (default 30; 0 counts exactly).
    pub rate_limit_commit_interval_s: u64,
    pub oauth: OAuthConfig,
    pub batch: BatchConfig,
    /// Latency per API, applied to every request (default: none, every request answers at once).
    pub latency: LatencyConfig,
    /// The API_INT pool: REST transactions executing at once, and its queue (None, the default: no limit).
    pub transactions: Option<TransactionLimit>,
    /// What a display value (or sys_id) that matches no record of the referenced table does.
    pub unknown_reference: ReferencePolicy,
    /// What a display value that matches several records does.
    pub ambiguous_reference: ReferencePolicy,
    /// What a write breaking a table's date rule (`tables[].date_rules`) does over the API. The documentation
    /// states the rule for the form; the default is the harsher reading (refused).
    pub date_rules_on_api: FormRulePolicy,
    /// What a write that moves a record into a state without the fields its state rule makes mandatory
    /// (`tables[].state_rules`, e.g. an incident resolved without close code and notes) does over the API.
    /// The documentation states these for the form; the default is the harsher reading (refused).
    pub state_rules_on_api: FormRulePolicy,
    /// What a non-admin update of a record in a final state (`state_rules[].final`: a closed incident) does.
    /// The documentation says a closed incident "cannot" be reopened, not how; the default is the harsher
    /// reading (refused with 403); `ignore` lets it through.
    pub final_state_writes: FormRulePolicy,
    /// What a non-admin write moving a record along a move its table's state flow does not declare
    /// (`tables[].state_transitions`: an incident New → Closed, a security incident Draft → Closed) does.
    /// The documentation describes the flows (the SIR process definition's `choice` arrays "determine the
    /// content of the state dropdown"), not how the API refuses another move; the default is the harsher
    /// reading (refused with 403); `ignore` lets any move through.
    pub state_transition_writes: FormRulePolicy,
    /// What a non-admin insert in a state outside its table's `initial_states` (an incident created Closed)
    /// does. UNSURE whether the API refuses it; the default is the harsher reading (refused with 403).
    pub initial_state_inserts: FormRulePolicy,
    /// Who reads `sys_journal_field`: false (the default, the harsher reading) = its read roles only
    /// (`audit_viewer`: "Provides read access to the sys_audit, sys_journal_field, and sys_history_set
    /// tables"); true = also whoever may read the record an entry belongs to (`read_through`).
    pub journal_read_through_record: bool,
    /// What a reference value outside its field's reference qualifier (`tables[].reference_qualifiers`)
    /// does over the API. The documentation states the qualifier for the form only; the default is the
    /// harsher reading (left empty, as an unknown reference value is).
    pub qualified_reference: QualifierPolicy,
    /// `glide.invalid_query.returns_no_rows`: false (default) silently drops invalid query terms (terms that
    /// do not parse and terms naming a field the table lacks); true answers no rows.
    pub invalid_query_returns_no_rows: bool,
    /// `glide.rest.max_content_length` in bytes (default 10 MB).
    pub max_content_length: usize,
    /// A request without an `Accept` header is rejected with 400 (false: JSON is assumed, as documented).
    pub require_accept_header: bool,
    /// A write without a `Content-Type` header is rejected with 400 (false: JSON is assumed, as documented).
    pub require_content_type_header: bool,
    /// Role that Event Management requires (besides admin).
    pub event_role: String,
    /// Prefix of `em_alert` numbers.
    pub alert_prefix: String,
    /// Maximum number of requests kept in the request log (oldest dropped first).
    pub request_log_capacity: usize,
}

pub const DEFAULT_GROUPS: [&str; 11] = [
    "Security Operations",
    "IT Security",
    "HR Partners",
    "HR Partners - Engineering",
    "HR Partners - Finance",
    "HR Partners - Sales",
    "Compliance",
    "Risk Management",
    "Service Desk",
    "Threat Intelligence",
    "IT Operations",
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The default instance's dictionary, role containment and reference data.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceData {
    tables: Vec<TableConfig>,
    role_includes: BTreeMap<String, Vec<String>>,
    records: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

const INSTANCE_YAML: &str = include_str!("instance.yaml");

/// Roles of the default integration user `relay`: the role each routed table needs to insert.
pub const RELAY_ROLES: [&str; 10] = [
    "itil",
    "sn_si.integration_user",
    "sn_ti.write",
    "sn_risk.user",
    "sn_grc.business_user",
    "sn_hr_core.case_writer",
    "sn_hr_ef.document_writer",
    "evt_mgmt_integration",
    "import_set_loader",
    "audit_viewer",
];

/// The roles of the default `analyst` user: an agent of each routed table (installed-with-sir: sn_si.analyst;
/// components-installed-with-case-and-knowledge-management: sn_hr_core.case_writer; request-policy-exception:
/// sn_compliance.manager reviews exceptions; t_CreateRisk: sn_risk.user).
pub const ANALYST_ROLES: [&str; 5] = [
    "itil",
    "sn_si.analyst",
    "sn_hr_core.case_writer",
    "sn_compliance.manager",
    "sn_risk.user",
];

impl Default for SimConfig {
    fn default() -> Self {
        let data: InstanceData = serde_yaml_ng::from_str(INSTANCE_YAML).expect("instance.yaml is valid");
        SimConfig {
            users: vec![
                UserConfig {
                    name: "relay".into(),
                    password: "relay-password".into(),
                    roles: strings(&RELAY_ROLES),
                },
                UserConfig {
                    name: "admin".into(),
                    password: "admin-password".into(),
                    roles: strings(&[ADMIN_ROLE]),
                },
                UserConfig {
                    name: "readonly".into(),
                    password: "readonly-password".into(),
                    roles: strings(&["itil_read"]),
                },
                // The person working the records in the instance (an analyst acting through the control API):
                // the agent roles of each routed table, not admin, so ACLs and final states bind it.
                UserConfig {
                    name: "analyst".into(),
                    password: "analyst-password".into(),
                    roles: strings(&ANALYST_ROLES),
                },
            ],
            oauth_clients: vec![OAuthClientConfig {
                client_id: "relay-client".into(),
                client_secret: "relay-client-secret".into(),
                client_credentials_user: Some("relay".into()),
            }],
            groups: strings(&DEFAULT_GROUPS),
            tables: data.tables,
            records: data.records,
            role_includes: data.role_includes,
            import_sets: vec![
                ImportSetConfig {
                    staging_table: "u_incident_import".into(),
                    target_table: "incident".into(),
                    transform_map: "Relay Incident Import".into(),
                    coalesce_field: Some("correlation_id".into()),
                    field_map: BTreeMap::new(),
                    roles: strings(&["import_set_loader"]),
                },
                ImportSetConfig {
                    staging_table: "sn_si_incident_import".into(),
                    target_table: "sn_si_incident".into(),
                    transform_map: "Security Incident Import".into(),
                    coalesce_field: Some("correlation_id".into()),
                    field_map: BTreeMap::new(),
                    roles: strings(&["import_set_loader", "sn_si.integration_user"]),
                },
            ],
            rate_limits: Vec::new(),
            rate_limit_commit_interval_s: 30,
            oauth: OAuthConfig::default(),
            batch: BatchConfig::default(),
            latency: LatencyConfig::default(),
            transactions: None,
            unknown_reference: ReferencePolicy::Blank,
            ambiguous_reference: ReferencePolicy::Reject,
            qualified_reference: QualifierPolicy::Blank,
            date_rules_on_api: FormRulePolicy::Reject,
            state_rules_on_api: FormRulePolicy::Reject,
            final_state_writes: FormRulePolicy::Reject,
            state_transition_writes: FormRulePolicy::Reject,
            initial_state_inserts: FormRulePolicy::Reject,
            journal_read_through_record: false,
            invalid_query_returns_no_rows: false,
            max_content_length: 10 * 1024 * 1024,
            require_accept_header: false,
            require_content_type_header: false,
            event_role: "evt_mgmt_integration".into(),
            alert_prefix: "Alert".into(),
            request_log_capacity: 200_000,
        }
    }
}

impl SimConfig {
    /// Parse a YAML document; keys that are absent keep the default instance's values.
    pub fn from_yaml_str(text: &str) -> Result<SimConfig, SimError> {
        let cfg: SimConfig = serde_yaml_ng::from_str(text).map_err(SimError::Yaml)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_yaml_file(path: &Path) -> Result<SimConfig, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        SimConfig::from_yaml_str(&text)
    }

    /// Cross-field checks: import sets name existing tables, client_credentials users exist.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let has_table = |n: &str| self.tables.iter().any(|t| t.name == n);
        for set in &self.import_sets {
            if !has_table(&set.target_table) {
                return Err(ConfigError::UnknownImportTarget {
                    staging_table: set.staging_table.clone(),
                    target_table: set.target_table.clone(),
                });
            }
        }
        for client in &self.oauth_clients {
            if let Some(user) = &client.client_credentials_user
                && !self.users.iter().any(|u| &u.name == user)
            {
                return Err(ConfigError::UnknownClientUser {
                    client_id: client.client_id.clone(),
                    user: user.clone(),
                });
            }
        }
        if self.transactions.is_some_and(|t| t.max_concurrent == 0) {
            return Err(ConfigError::NoTransactionThreads);
        }
        self.latency.validate()?;
        let tables = self.resolved_tables()?;
        let find = |n: &str| tables.iter().find(|t| t.name == n);
        for t in &tables {
            for (field, target) in &t.references {
                if find(target).is_none() {
                    return Err(ConfigError::UnknownReferenceTarget {
                        table: t.name.clone(),
                        field: field.clone(),
                        target: target.clone(),
                    });
                }
            }
        }
        for t in &tables {
            let mut named: Vec<(&'static str, &String)> =
                t.journal_fields.iter().map(|f| ("journal_fields", f)).collect();
            for r in &t.state_rules {
                named.extend(r.mandatory.iter().map(|f| ("state_rules.mandatory", f)));
                named.extend(r.on_enter.keys().map(|f| ("state_rules.on_enter", f)));
            }
            if let Some((what, field)) = named.into_iter().find(|(_, f)| !t.has_field(f)) {
                return Err(ConfigError::UnknownRuleField {
                    table: t.name.clone(),
                    what,
                    field: field.clone(),
                });
            }
            // the state flow names states of the table (when it has a state choice list)
            if let Some(choices) = t.choices.get("state") {
                let mut states: Vec<(&'static str, &String)> =
                    t.initial_states.iter().map(|s| ("initial_states", s)).collect();
                for (from, next) in &t.state_transitions {
                    states.push(("state_transitions", from));
                    states.extend(next.iter().map(|s| ("state_transitions", s)));
                }
                if let Some((what, state)) = states.into_iter().find(|(_, s)| !choices.contains_key(*s)) {
                    return Err(ConfigError::UnknownState {
                        table: t.name.clone(),
                        what,
                        state: state.clone(),
                    });
                }
            }
        }
        if let Some(t) = tables.iter().find(|t| !t.journal_fields.is_empty())
            && find("sys_journal_field").is_none()
        {
            return Err(ConfigError::NoJournalTable { table: t.name.clone() });
        }
        for table in self.records.keys() {
            if find(table).is_none() {
                return Err(ConfigError::UnknownRecordTable { table: table.clone() });
            }
        }
        Ok(())
    }

    /// The tables with inheritance applied: each has its parents' fields, references, choices, lengths and
    /// defaults, and `extends` is None.
    pub fn resolved_tables(&self) -> Result<Vec<TableConfig>, ConfigError> {
        let mut done: BTreeMap<String, TableConfig> = BTreeMap::new();
        fn resolve(
            name: &str,
            all: &[TableConfig],
            done: &mut BTreeMap<String, TableConfig>,
            depth: usize,
        ) -> Result<TableConfig, ConfigError> {
            if let Some(t) = done.get(name) {
                return Ok(t.clone());
            }
            let t = all
                .iter()
                .find(|t| t.name == name)
                .cloned()
                .ok_or_else(|| ConfigError::UnknownParent {
                    table: name.to_string(),
                })?;
            if depth > all.len() {
                return Err(ConfigError::InheritanceCycle {
                    table: name.to_string(),
                });
            }
            let resolved = match t.extends.clone() {
                None => t,
                Some(parent) => {
                    if !all.iter().any(|p| p.name == parent) {
                        return Err(ConfigError::UnknownParent { table: parent });
                    }
                    let p = resolve(&parent, all, done, depth + 1)?;
                    t.inherit(&p)
                }
            };
            done.insert(name.to_string(), resolved.clone());
            Ok(resolved)
        }
        self.tables
            .iter()
            .map(|t| resolve(&t.name, &self.tables, &mut done, 0))
            .collect()
    }

    pub fn table(&self, name: &str) -> Option<&TableConfig> {
        self.tables.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests;
