//! The data dictionary: tables, their fields, references, rules and access roles; import sets.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// A rule of a table's state model: what a record entering one of `states` must carry and what the
/// instance sets then (`active`, and `on_enter` fields: `$now` = the simulator time, `$user` = the writer,
/// anything else a literal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateRule {
    pub states: Vec<String>,
    /// Fields that must be non-empty in these states (see `SimConfig::state_rules_on_api`).
    #[serde(default)]
    pub mandatory: Vec<String>,
    /// The value of `active` in these states (None: left as it is).
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default)]
    pub on_enter: BTreeMap<String, String>,
    /// The record is finished in these states: no user but admin may update it (`SimConfig::final_state_writes`).
    #[serde(default, rename = "final")]
    pub is_final: bool,
}

/// Rows readable by whoever may read the record they belong to: `table_field` names its table,
/// `id_field` its sys_id (`sys_journal_field`: `name`, `element_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadThrough {
    pub table_field: String,
    pub id_field: String,
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
    /// Journal fields (work notes, additional comments; inherited): a value written to one is not stored
    /// on the record but appended to `sys_journal_field` (element = the field, element_id = the record).
    #[serde(default)]
    pub journal_fields: Vec<String>,
    /// The table's state model (not inherited: each table has its own states).
    #[serde(default)]
    pub state_rules: Vec<StateRule>,
    /// Which state may follow which: state → the states a record in it may move to (setting the same state
    /// again is no move). A state that is not a key has no moves out. Empty: the table has no state flow and
    /// any state may follow any (see `SimConfig::state_transition_writes`). Not inherited.
    #[serde(default)]
    pub state_transitions: BTreeMap<String, Vec<String>>,
    /// The states a record may be inserted in (empty: any; see `SimConfig::initial_state_inserts`). Not
    /// inherited.
    #[serde(default)]
    pub initial_states: Vec<String>,
    /// Read access through the record a row belongs to (instead of the read roles).
    #[serde(default)]
    pub read_through: Option<ReadThrough>,
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

    /// Does the table's state flow let a record move from state `from` to state `to`? Setting the same state
    /// again is no move (true); a table without `state_transitions` lets any state follow any (true).
    pub fn transition_allowed(&self, from: &str, to: &str) -> bool {
        from == to
            || self.state_transitions.is_empty()
            || self
                .state_transitions
                .get(from)
                .is_some_and(|next| next.iter().any(|s| s == to))
    }

    /// The states a record in `from` may move to (empty: none, or the table has no state flow).
    pub fn next_states(&self, from: &str) -> &[String] {
        self.state_transitions.get(from).map(Vec::as_slice).unwrap_or_default()
    }

    /// May a record be inserted in `state`? (A table without `initial_states` takes any state.)
    pub fn initial_state_allowed(&self, state: &str) -> bool {
        self.initial_states.is_empty() || self.initial_states.iter().any(|s| s == state)
    }

    /// This table with its parent's dictionary merged in (the parent already resolved).
    pub(super) fn inherit(mut self, parent: &TableConfig) -> TableConfig {
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
        for f in &parent.journal_fields {
            if !self.journal_fields.contains(f) {
                self.journal_fields.push(f.clone());
            }
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
        self.journal_fields.retain(|f| !excluded.contains(f));
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
