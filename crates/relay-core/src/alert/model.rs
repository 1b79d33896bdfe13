//! The alert types: what a validated webhook body holds.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertType {
    PolicyViolation,
    Dlp,
    BehavioralAnomaly,
    Productivity,
    Custom,
}

impl AlertType {
    /// This type's bit in a set of alert types (one bit per variant, in `ALL` order).
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    pub const ALL: [AlertType; 5] = [
        AlertType::PolicyViolation,
        AlertType::Dlp,
        AlertType::BehavioralAnomaly,
        AlertType::Productivity,
        AlertType::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::PolicyViolation => "policy_violation",
            AlertType::Dlp => "dlp",
            AlertType::BehavioralAnomaly => "behavioral_anomaly",
            AlertType::Productivity => "productivity",
            AlertType::Custom => "custom",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        AlertType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Human label used in ticket text.
    pub fn label(self) -> &'static str {
        match self {
            AlertType::PolicyViolation => "Policy violation",
            AlertType::Dlp => "Data loss prevention",
            AlertType::BehavioralAnomaly => "Behavioral anomaly",
            AlertType::Productivity => "Productivity",
            AlertType::Custom => "Custom rule",
        }
    }
}

impl fmt::Display for AlertType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
}

impl Severity {
    pub const ALL: [Severity; 4] = [Severity::Critical, Severity::High, Severity::Medium, Severity::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Severity::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            Severity::Critical => "Critical",
            Severity::High => "High",
            Severity::Medium => "Medium",
            Severity::Low => "Low",
        }
    }

    /// 0 = most severe; used to pick the strongest severity of an aggregated batch.
    pub fn rank(self) -> u8 {
        match self {
            Severity::Critical => 0,
            Severity::High => 1,
            Severity::Medium => 2,
            Severity::Low => 3,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Employee {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub department: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomRule {
    pub id: String,
    pub name: String,
}

/// Channel a DLP event left through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlpChannel {
    Usb,
    Email,
    CloudUpload,
    Print,
    Clipboard,
    NetworkShare,
    Other,
}

impl DlpChannel {
    pub const ALL: [DlpChannel; 7] = [
        DlpChannel::Usb,
        DlpChannel::Email,
        DlpChannel::CloudUpload,
        DlpChannel::Print,
        DlpChannel::Clipboard,
        DlpChannel::NetworkShare,
        DlpChannel::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DlpChannel::Usb => "usb",
            DlpChannel::Email => "email",
            DlpChannel::CloudUpload => "cloud_upload",
            DlpChannel::Print => "print",
            DlpChannel::Clipboard => "clipboard",
            DlpChannel::NetworkShare => "network_share",
            DlpChannel::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        DlpChannel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Per-type details. Only the typed fields below are read; unknown keys are ignored. A typed field the alert
/// lacks is None (and named in [`Alert::missing_details`]); one of the wrong type is a validation problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Details {
    Dlp {
        file_count: Option<u64>,
        bytes: Option<u64>,
        channel: Option<DlpChannel>,
    },
    BehavioralAnomaly {
        systems: Option<Vec<String>>,
        duration_minutes: Option<u64>,
        applications: Option<Vec<String>>,
    },
    Productivity {
        hours_per_day: Option<f64>,
        categories: Option<Vec<String>>,
        weekly_trend: Option<Vec<f64>>,
    },
    PolicyViolation {
        policy: Option<String>,
        history_30d: Option<ComplianceHistory>,
    },
    Custom(Map<String, Value>),
    None,
}

/// The last 30 days of an employee's compliance history, as the monitoring product summarises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplianceHistory {
    pub violations: u64,
    pub warnings: u64,
}

/// A validated alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub alert_id: String,
    pub alert_type: AlertType,
    pub severity: Severity,
    /// As sent (RFC 3339); `occurred_at_unix` is the parsed instant.
    pub occurred_at: String,
    pub occurred_at_unix: i64,
    pub employee: Employee,
    pub description: String,
    pub risk_score: u8,
    pub evidence_url: String,
    pub details: Details,
    /// The `details` object as sent (for routing conditions over `details.*`).
    pub raw_details: Map<String, Value>,
    pub rule: Option<CustomRule>,
    pub test: bool,
    /// Top-level keys the schema does not know: accepted, never sent to ServiceNow.
    pub ignored_fields: Vec<String>,
    /// Typed detail fields of the alert type that the alert did not carry (`details.bytes`, …): accepted,
    /// and noted on the record.
    pub missing_details: Vec<String>,
}

/// One validation problem: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// JSON path, e.g. `$.employee.department`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one alert body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("invalid alert: {}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct InvalidAlert {
    pub problems: Vec<Problem>,
}

/// What a lifecycle event says happened to an alert already sent (schema version 2's `event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The alert changed (new evidence, a comment): a work note on its record.
    Updated,
    /// The alert is resolved: a work note; the record is resolved once every alert it covers is.
    Resolved,
    /// The alert was a false positive: as resolved, closing the record as a false positive.
    Dismissed,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::Updated, EventKind::Resolved, EventKind::Dismissed];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Updated => "updated",
            EventKind::Resolved => "resolved",
            EventKind::Dismissed => "dismissed",
        }
    }

    /// Resolved or dismissed: the alert is over.
    pub fn ends_the_alert(self) -> bool {
        !matches!(self, EventKind::Updated)
    }
}

/// Why and how an alert was resolved or dismissed, or what an update says.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resolution {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A change to an alert already sent: `{"event": "resolved", "alert_id": …, "resolution": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// The original alert's id.
    pub alert_id: String,
    pub kind: EventKind,
    #[serde(default)]
    pub resolution: Resolution,
    /// When it happened (RFC 3339), when the sender says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    /// Top-level keys the event body carried that an event does not use (never sent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_fields: Vec<String>,
}

/// A webhook body: a new alert, or a lifecycle event of one already sent.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // parsed once per request and matched at once
pub enum Body {
    Alert(Alert),
    Event(LifecycleEvent),
}
