//! The config file's shapes as written (YAML), before validation: `deny_unknown_fields` everywhere, so a
//! misspelt key is an error, and serde defaults for what may be left out.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::model::{
    BatchSettings, DEFAULT_BATCH_WINDOW, DEFAULT_CORRELATION_PREFIX, GroupSpec, ImpactUrgency, PersonSettings, Privacy,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub version: u32,
    #[serde(default)]
    pub defaults: RawDefaults,
    #[serde(default)]
    pub privacy: Privacy,
    #[serde(default)]
    pub tables: BTreeMap<String, String>,
    #[serde(default)]
    pub extra_tables: Vec<String>,
    #[serde(default)]
    pub custom_detail_fields: Vec<String>,
    #[serde(default)]
    pub batch: BatchSettings,
    #[serde(default)]
    pub threads: super::model::ThreadSettings,
    pub alert_types: BTreeMap<String, RawTarget>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub profiles: BTreeMap<String, crate::profile::RawProfile>,
    #[serde(default)]
    pub person: PersonSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    #[serde(default = "default_delivery")]
    pub delivery: BTreeMap<String, String>,
    #[serde(default = "default_window")]
    pub batch_window_seconds: u64,
    #[serde(default = "default_priority_by_severity")]
    pub priority_by_severity: BTreeMap<String, String>,
    #[serde(default = "default_priorities")]
    pub priorities: BTreeMap<String, ImpactUrgency>,
    #[serde(default)]
    pub contact_type: Option<String>,
    #[serde(default = "default_correlation_prefix")]
    pub correlation_prefix: String,
    #[serde(default = "default_correlation_display")]
    pub correlation_display: String,
    #[serde(default = "default_short_description")]
    pub short_description: String,
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
    DEFAULT_BATCH_WINDOW.as_secs()
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
    DEFAULT_CORRELATION_PREFIX.into()
}
fn default_correlation_display() -> String {
    "Alert Relay".into()
}
fn default_short_description() -> String {
    "{severity_label} {type_label}: {description}".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    #[serde(default)]
    pub record_type: Option<String>,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub assignment_group: Option<GroupSpec>,
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default)]
    pub priorities: BTreeMap<String, ImpactUrgency>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub subcategory: Option<String>,
    #[serde(default)]
    pub short_description: Option<String>,
    #[serde(default)]
    pub delivery: Option<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Lines added to the record's long text instead of the profile's.
    #[serde(default)]
    pub context: Option<Vec<String>>,
    /// This route's thread settings (any part of the top-level `threads`).
    #[serde(default)]
    pub thread: Option<super::model::ThreadOverride>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub when: Option<serde_yaml_ng::Value>,
    #[serde(flatten)]
    pub target: RawTarget,
}
