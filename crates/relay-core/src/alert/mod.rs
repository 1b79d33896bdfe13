//! The alert webhook body (schema version 1, documented in docs/alert-schema.md): what a validated alert
//! holds (`model.rs`) and the validation that reports every problem of a body at once (`validate.rs`,
//! [`Alert::from_slice`] and [`Alert::from_value`]).

mod model;
mod validate;

#[cfg(test)]
mod tests;

pub use model::{
    Alert, AlertType, Body, ComplianceHistory, CustomRule, Details, DlpChannel, Employee, EventKind, InvalidAlert,
    LifecycleEvent, Problem, Resolution, Severity,
};

/// The schema version this build writes in its docs: 2 adds lifecycle events (`event` updated, resolved,
/// dismissed). Bodies of version 1 stay valid.
pub const SCHEMA_VERSION: &str = "2";

/// Every schema version this build accepts.
pub const SCHEMA_VERSIONS: [&str; 2] = ["1", "2"];

/// The longest `resolution.reason`.
pub const MAX_REASON: usize = 200;

/// The top-level keys a lifecycle event uses.
pub const EVENT_FIELDS: [&str; 5] = ["schema_version", "alert_id", "event", "resolution", "occurred_at"];

pub const MAX_ALERT_ID: usize = 128;
pub const MAX_EMPLOYEE_FIELD: usize = 128;
pub const MAX_DEPARTMENT: usize = 100;
pub const MAX_DESCRIPTION: usize = 4000;
pub const MAX_URL: usize = 2048;
pub const MAX_NAME: usize = 200;
pub const MAX_LIST_ITEMS: usize = 100;

/// The top-level keys an alert (schema v1 and v2) defines; any other key is accepted, listed in `Alert::ignored_fields` and
/// never sent to ServiceNow.
pub const KNOWN_FIELDS: [&str; 13] = [
    "schema_version",
    "alert_id",
    "alert_type",
    "severity",
    "occurred_at",
    "employee",
    "description",
    "risk_score",
    "evidence_url",
    "details",
    "rule",
    "test",
    "event",
];
