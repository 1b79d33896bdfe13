//! How the instance treats doubtful values over the API: references, qualifiers, date rules.

use serde::{Deserialize, Serialize};

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

/// What the instance does over the API with a write that breaks a rule the documentation states for the form
/// (a date rule, the mandatory close fields of a state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormRulePolicy {
    /// 403 "Operation Failed" with the rule's message; nothing is written.
    Reject,
    /// The rule binds the form only: the write goes through.
    Ignore,
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
