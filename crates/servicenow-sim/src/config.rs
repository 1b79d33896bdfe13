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
    pub tables: Vec<TableConfig>,
    /// Reference fields: field name → referenced table. Only `sys_user_group` references are resolved.
    pub reference_fields: BTreeMap<String, String>,
    pub import_sets: Vec<ImportSetConfig>,
    pub rate_limits: Vec<RateLimitRule>,
    pub oauth: OAuthConfig,
    pub batch: BatchConfig,
    /// What a display value (or sys_id) that matches no group does.
    pub unknown_reference: ReferencePolicy,
    /// What a display value that matches several groups does.
    pub ambiguous_reference: ReferencePolicy,
    /// `glide.invalid_query.returns_no_rows`: false (default) silently drops invalid query terms.
    pub invalid_query_returns_no_rows: bool,
    /// `glide.rest.max_content_length` in bytes (default 10 MB).
    pub max_content_length: usize,
    /// A request without an `Accept` header is rejected with 400 (reference: "missing one → 400").
    pub require_accept_header: bool,
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
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            access_token_lifetime_s: 1800,
            refresh_token_lifetime_s: 100 * 24 * 3600,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub name: String,
    /// Number prefix (None: the table has no `number` field).
    #[serde(default)]
    pub prefix: Option<String>,
    /// First number of the counter (ServiceNow default 10001 → INC0010001).
    #[serde(default = "default_first_number")]
    pub first_number: u64,
    /// Roles that may insert. A user with only these may read/update/delete only records it created.
    #[serde(default)]
    pub create_roles: Vec<String>,
    /// Roles that may read every record.
    #[serde(default)]
    pub read_roles: Vec<String>,
    /// Roles that may update/delete every record.
    #[serde(default)]
    pub write_roles: Vec<String>,
    /// Data policy: fields that must be non-empty on insert.
    #[serde(default)]
    pub mandatory: Vec<String>,
    /// Priority computed from impact × urgency (incident, problem).
    #[serde(default)]
    pub priority_matrix: bool,
    /// Known fields; when set, unknown fields are silently dropped on write (like a real instance).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Maximum lengths; longer values are truncated silently.
    #[serde(default)]
    pub max_lengths: BTreeMap<String, usize>,
    /// Values set on insert when the field is absent.
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
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

fn table(name: &str, prefix: Option<&str>, create_roles: &[&str], mandatory: &[&str]) -> TableConfig {
    TableConfig {
        name: name.into(),
        prefix: prefix.map(str::to_string),
        first_number: 10001,
        create_roles: strings(create_roles),
        read_roles: strings(&["itil_read"]),
        write_roles: Vec::new(),
        mandatory: strings(mandatory),
        priority_matrix: false,
        fields: None,
        max_lengths: BTreeMap::new(),
        defaults: BTreeMap::new(),
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        let task_lengths: BTreeMap<String, usize> = [
            ("correlation_id".to_string(), 100),
            ("short_description".to_string(), 160),
        ]
        .into();
        let mut tables = vec![
            table("incident", Some("INC"), &["itil"], &["short_description"]),
            table("task", Some("TASK"), &["itil"], &["short_description"]),
            table("problem", Some("PRB"), &["itil"], &["short_description"]),
            table(
                "sn_si_incident",
                Some("SIR"),
                &["sn_si.analyst", "sn_si.integration_user"],
                &["short_description"],
            ),
            table(
                "sn_si_task",
                Some("SIT"),
                &["sn_si.analyst", "sn_si.integration_user"],
                &["short_description"],
            ),
            table("sn_ti_observable", None, &["sn_ti.integration_user"], &[]),
            table("sn_compliance_policy_exception", Some("PEX"), &["sn_grc.user"], &[]),
            table("sn_risk_risk", Some("RSK"), &["sn_grc.user"], &[]),
            table(
                "sn_hr_core_case",
                Some("HRC"),
                &["sn_hr_core.basic", "sn_hr_core.case_writer"],
                &["short_description"],
            ),
            table("sn_hr_ef_employee_document", None, &["sn_hr_core.case_writer"], &[]),
            table("em_event", None, &[], &[]),
            table("em_alert", Some("Alert"), &[], &[]),
            table("sys_attachment", None, &[], &[]),
            table("u_incident_import", None, &[], &[]),
            table("sn_si_incident_import", None, &[], &[]),
        ];
        for t in tables.iter_mut() {
            if matches!(t.name.as_str(), "incident" | "problem") {
                t.priority_matrix = true;
            }
            if matches!(t.name.as_str(), "incident" | "problem" | "sn_si_incident" | "task") {
                t.max_lengths = task_lengths.clone();
                t.defaults = [
                    ("impact".to_string(), "3".to_string()),
                    ("urgency".to_string(), "3".to_string()),
                    ("state".to_string(), "1".to_string()),
                    ("active".to_string(), "true".to_string()),
                ]
                .into();
            }
        }
        let relay_roles = strings(&[
            "itil",
            "sn_si.integration_user",
            "sn_ti.integration_user",
            "sn_grc.user",
            "sn_hr_core.case_writer",
            "evt_mgmt_integration",
            "import_set_loader",
        ]);
        SimConfig {
            users: vec![
                UserConfig {
                    name: "relay".into(),
                    password: "relay-password".into(),
                    roles: relay_roles,
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
            tables,
            reference_fields: [("assignment_group".to_string(), "sys_user_group".to_string())].into(),
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
            oauth: OAuthConfig::default(),
            batch: BatchConfig::default(),
            unknown_reference: ReferencePolicy::Reject,
            ambiguous_reference: ReferencePolicy::Reject,
            invalid_query_returns_no_rows: false,
            max_content_length: 10 * 1024 * 1024,
            require_accept_header: true,
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
        Ok(())
    }

    pub fn table(&self, name: &str) -> Option<&TableConfig> {
        self.tables.iter().find(|t| t.name == name)
    }
}
