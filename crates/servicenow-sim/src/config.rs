//! Simulator configuration: users, roles, tables, data policies, rate limits, import sets, quotas.
//! Every struct deserialises from YAML; missing keys take the default instance's values.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crate::SimError;

/// A configuration whose parts do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// What a display value (or sys_id) that matches no record of the referenced table does.
    pub unknown_reference: ReferencePolicy,
    /// What a display value that matches several records does.
    pub ambiguous_reference: ReferencePolicy,
    /// What a write breaking a table's date rule (`tables[].date_rules`) does over the API. The documentation
    /// states the rule for the form; the default is the harsher reading (refused).
    pub date_rules_on_api: DateRulePolicy,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub password: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClientConfig {
    pub client_id: String,
    pub client_secret: String,
    /// The OAuth application user that `client_credentials` acts as (None: grant refused).
    #[serde(default)]
    pub client_credentials_user: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    pub access_token_lifetime_s: u64,
    pub refresh_token_lifetime_s: u64,
    /// System property `glide.oauth.inbound.client.credential.grant_type.enabled` (default false: the
    /// client_credentials grant is refused).
    pub client_credentials_enabled: bool,
    /// System property `glide.oauth.inbound.ropc.grant_type.disabled` (Security Center hardening; default
    /// false: the password grant works).
    pub password_grant_disabled: bool,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            access_token_lifetime_s: 1800,
            refresh_token_lifetime_s: 100 * 24 * 3600,
            client_credentials_enabled: false,
            password_grant_disabled: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Items after this many serviced items go to `unserviced_requests` (None: no limit).
    pub max_serviced_items: Option<usize>,
    /// The whole batch's time quota in milliseconds (30 s on a real instance).
    pub time_quota_ms: u64,
    /// Simulated execution time of each item, added to the batch's clock (deterministic quota tests).
    pub item_execution_ms: u64,
    /// Per-item input limit in bytes (5 MB).
    pub max_item_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_serviced_items: None,
            time_quota_ms: 30_000,
            item_execution_ms: 0,
            max_item_bytes: 5 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferencePolicy {
    /// 400 "Invalid reference" naming the field and value.
    Reject,
    /// The field is left empty and the record is still written.
    Blank,
    /// (ambiguous only) the first matching group is used.
    First,
}

/// A scheduled job that deletes records without an attachment: it runs every `every_s` seconds of the
/// simulator clock (at whole multiples of it since the epoch, UTC) and deletes each record created before
/// the run that had no attachment by then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeJob {
    /// The job's name (sysauto_script).
    pub job: String,
    pub every_s: u64,
}

/// What the instance does with a write that breaks a date rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DateRulePolicy {
    /// 403 "Operation Failed" with the rule's message; nothing is written.
    Reject,
    /// The rule binds the form only: the write goes through.
    Ignore,
}

/// A date field's rule: later than another date field of the record (when that one is set) and/or not
/// before today (the simulator clock's UTC date). Dates compare by their `YYYY-MM-DD` part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateRule {
    pub field: String,
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub not_past: bool,
    /// The message the instance answers with.
    pub message: String,
}

/// What the instance does with a reference value that its field's reference qualifier excludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualifierPolicy {
    /// The field is left empty and the record is still written.
    Blank,
    /// 400 "Invalid reference" naming the field and value.
    Reject,
    /// The qualifier binds the form only: the value is kept.
    Ignore,
}

/// A reference qualifier: only records of the referenced table whose `field` holds `contains` (one item of
/// a comma-separated list, as a glide list) may be referenced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceQualifier {
    pub field: String,
    pub contains: String,
}

impl ReferenceQualifier {
    pub fn admits(&self, row: &BTreeMap<String, String>) -> bool {
        row.get(&self.field)
            .is_some_and(|v| v.split(',').any(|item| item.trim() == self.contains))
    }
}

/// One table of the data dictionary with its access rules (see `instance.yaml` for the default instance).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub name: String,
    /// Parent table: its fields, references, choices, lengths and defaults are inherited.
    #[serde(default)]
    pub extends: Option<String>,
    /// Number prefix (None: the table has no `number` counter).
    #[serde(default)]
    pub prefix: Option<String>,
    /// First number of the counter (ServiceNow default 10001 → INC0010001).
    #[serde(default = "default_first_number")]
    pub first_number: u64,
    /// Field whose value is the record's display value (reference by display value, `sysparm_display_value`).
    #[serde(default)]
    pub display_field: Option<String>,
    /// Roles that may insert (admin always may).
    #[serde(default)]
    pub create_roles: Vec<String>,
    /// Roles that may read every record.
    #[serde(default)]
    pub read_roles: Vec<String>,
    /// Roles that may read the records the user created.
    #[serde(default)]
    pub read_own_roles: Vec<String>,
    /// Roles that may update every record (and read it).
    #[serde(default)]
    pub write_roles: Vec<String>,
    /// Roles that may update the records the user created.
    #[serde(default)]
    pub write_own_roles: Vec<String>,
    /// Roles that may delete records (empty: admin only).
    #[serde(default)]
    pub delete_roles: Vec<String>,
    /// Records whose `field` is "true" are visible only to `roles` (and admin).
    #[serde(default)]
    pub restriction: Option<Restriction>,
    /// Data policy: fields that must be non-empty on insert and update.
    #[serde(default)]
    pub mandatory: Vec<String>,
    /// Data policy: at least one field of each list must be non-empty.
    #[serde(default)]
    pub mandatory_any: Vec<Vec<String>>,
    /// A scheduled job that deletes the table's records that have no attachment (None: no such job).
    #[serde(default)]
    pub purge_without_attachment: Option<PurgeJob>,
    /// Date rules checked on insert and update (see `SimConfig::date_rules_on_api`).
    #[serde(default)]
    pub date_rules: Vec<DateRule>,
    /// How `priority` gets its value.
    #[serde(default)]
    pub priority: PriorityRule,
    /// The table's own fields (None: any field is accepted and stored). Fields not listed are dropped on
    /// write and query terms naming them are invalid terms.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Inherited fields this table does not have.
    #[serde(default)]
    pub exclude_fields: Vec<String>,
    /// Reference fields: field → referenced table.
    #[serde(default)]
    pub references: BTreeMap<String, String>,
    /// Reference qualifiers: reference field → which referenced records it may hold.
    #[serde(default)]
    pub reference_qualifiers: BTreeMap<String, ReferenceQualifier>,
    /// Choice lists: field → (value → label). Values off the list are stored as sent.
    #[serde(default)]
    pub choices: BTreeMap<String, BTreeMap<String, String>>,
    /// Maximum lengths; longer values are truncated silently.
    #[serde(default)]
    pub max_lengths: BTreeMap<String, usize>,
    /// Values set on insert when the field is absent.
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    /// field → where an empty field is filled from on insert (a field of a referenced record).
    #[serde(default)]
    pub fill_from_reference: BTreeMap<String, FromReference>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restriction {
    pub field: String,
    pub roles: Vec<String>,
}

/// A field of the record that a reference field of this record points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromReference {
    pub reference: String,
    pub field: String,
}

/// How a table's `priority` gets its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum PriorityRule {
    /// An ordinary field: a written value is kept, otherwise the table default.
    #[default]
    Field,
    /// The priority lookup on impact × urgency; writes to `priority` are ignored.
    Lookup,
    /// Copied from a field of the referenced record (HR case ← HR service); writes are ignored.
    FromReference { reference: String, field: String },
}

/// Fields every table has (system fields), whatever its field list says.
pub const SYSTEM_FIELDS: [&str; 8] = [
    "sys_id",
    "sys_created_on",
    "sys_created_by",
    "sys_updated_on",
    "sys_updated_by",
    "sys_mod_count",
    "sys_class_name",
    "number",
];

impl TableConfig {
    /// Does the table have this field? (Tables without a field list have every field.)
    pub fn has_field(&self, field: &str) -> bool {
        let base = field.split('.').next().unwrap_or(field);
        match &self.fields {
            None => true,
            Some(fields) => {
                (SYSTEM_FIELDS.contains(&base) && (base != "number" || self.prefix.is_some()))
                    || fields.iter().any(|f| f == base)
            }
        }
    }

    /// Display field: the configured one, else `name` or `number` when the table has it, else `sys_id`.
    pub fn display_field(&self) -> &str {
        if let Some(f) = &self.display_field {
            return f;
        }
        if self.fields.as_ref().is_some_and(|f| f.iter().any(|x| x == "name")) {
            "name"
        } else if self.prefix.is_some() {
            "number"
        } else {
            "sys_id"
        }
    }

    /// This table with its parent's dictionary merged in (the parent already resolved).
    fn inherit(mut self, parent: &TableConfig) -> TableConfig {
        let own_fields = self.fields.take();
        self.fields = match (&parent.fields, own_fields) {
            (None, None) => None,
            (p, own) => {
                let mut all: Vec<String> = p.clone().unwrap_or_default();
                for f in own.unwrap_or_default() {
                    if !all.contains(&f) {
                        all.push(f);
                    }
                }
                Some(all)
            }
        };
        let merge = |own: &mut BTreeMap<String, String>, parent: &BTreeMap<String, String>| {
            for (k, v) in parent {
                own.entry(k.clone()).or_insert_with(|| v.clone());
            }
        };
        merge(&mut self.references, &parent.references);
        merge(&mut self.defaults, &parent.defaults);
        for (k, v) in &parent.reference_qualifiers {
            self.reference_qualifiers.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &parent.choices {
            self.choices.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &parent.max_lengths {
            self.max_lengths.entry(k.clone()).or_insert(*v);
        }
        let excluded = std::mem::take(&mut self.exclude_fields);
        if let Some(fields) = self.fields.as_mut() {
            fields.retain(|f| !excluded.contains(f));
        }
        for f in &excluded {
            self.references.remove(f);
            self.reference_qualifiers.remove(f);
            self.defaults.remove(f);
            self.choices.remove(f);
            self.max_lengths.remove(f);
        }
        self.extends = None;
        self
    }
}

fn default_first_number() -> u64 {
    10001
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportSetConfig {
    pub staging_table: String,
    pub target_table: String,
    pub transform_map: String,
    /// Field with coalesce=true (None: every row inserts).
    #[serde(default)]
    pub coalesce_field: Option<String>,
    /// staging field → target field. Fields not listed are copied with a leading `u_` removed.
    #[serde(default)]
    pub field_map: BTreeMap<String, String>,
    /// Roles that may load this staging table (besides admin).
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKind {
    Any,
    Table,
    Batch,
    Import,
    Event,
    Attachment,
}

impl ApiKind {
    pub fn label(self) -> &'static str {
        match self {
            ApiKind::Any => "REST API",
            ApiKind::Table => "Table API",
            ApiKind::Batch => "Batch API",
            ApiKind::Import => "Import Set API",
            ApiKind::Event => "Event Management API",
            ApiKind::Attachment => "Attachment API",
        }
    }
}

/// `sys_rate_limit_rules`: N requests per hour per user, for users matching `user` and/or `role`
/// (both None: all users), on one API (or any).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    pub name: String,
    /// The rule's sys_id, sent in `X-RateLimit-Rule` (None: one is generated at start).
    #[serde(default)]
    pub sys_id: Option<String>,
    /// Only requests to this table (REST resource); None: every resource of the API.
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default = "default_api")]
    pub api: ApiKind,
    pub per_hour: u32,
}

fn default_api() -> ApiKind {
    ApiKind::Any
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
pub const RELAY_ROLES: [&str; 9] = [
    "itil",
    "sn_si.integration_user",
    "sn_ti.write",
    "sn_risk.user",
    "sn_grc.business_user",
    "sn_hr_core.case_writer",
    "sn_hr_ef.document_writer",
    "evt_mgmt_integration",
    "import_set_loader",
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
            unknown_reference: ReferencePolicy::Blank,
            ambiguous_reference: ReferencePolicy::Reject,
            qualified_reference: QualifierPolicy::Blank,
            date_rules_on_api: DateRulePolicy::Reject,
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
mod tests {
    use super::*;

    #[test]
    fn children_inherit_the_task_dictionary() {
        let tables = SimConfig::default().resolved_tables().unwrap();
        let t = |n: &str| tables.iter().find(|t| t.name == n).unwrap();
        let incident = t("incident");
        assert!(incident.has_field("correlation_id") && incident.has_field("caller_id"));
        assert_eq!(incident.max_lengths["description"], 4000);
        assert_eq!(incident.references["assignment_group"], "sys_user_group");
        assert_eq!(incident.choices["state"]["1"], "New", "the child's choices win");
        assert!(incident.extends.is_none());
        let sir = t("sn_si_incident");
        assert_eq!(sir.defaults["state"], "10", "the child's defaults win");
        assert_eq!(sir.defaults["impact"], "3", "the parent's defaults fill in");
        let pex = t("sn_compliance_policy_exception");
        assert!(!pex.has_field("correlation_id") && pex.has_field("short_description"));
        assert!(!pex.max_lengths.contains_key("correlation_id"));
        let risk = t("sn_risk_risk");
        assert!(risk.has_field("name") && risk.has_field("owning_group") && !risk.has_field("short_description"));
        assert!(
            risk.has_field("sys_id") && risk.has_field("sys_created_on.date"),
            "system fields, dot-walk"
        );
        assert!(!t("sn_ti_observable").has_field("number"), "no number without a prefix");
        assert!(t("em_alert").has_field("anything"), "no field list: every field");
    }
}
