//! Record profiles: what each ServiceNow table is and what the relay sends it (`config/profiles.yaml` holds
//! the shipped defaults, a relay config's `profiles:` section overrides them).
//!
//! A profile names the table, the fields it has (task-extended tables inherit the task table's), how the
//! record's priority is set, which field carries the relay's dedupe key and how a found row is compared, where
//! the summary, long text, assignment group and person go, the state model, and the table's domain fields
//! with the templates their values come from.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The shipped profiles.
pub const DEFAULT_PROFILES_YAML: &str = include_str!("../../../config/profiles.yaml");

/// How a table's priority is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PriorityMethod {
    /// The instance's priority lookup computes it from impact × urgency (incident, problem).
    #[default]
    ImpactUrgency,
    /// The relay writes `priority` (security incident, response task, policy exception).
    Direct,
    /// The HR service decides it (HR case).
    HrService,
    /// The table has no priority the relay sets (bare task, risk, observable, document, event).
    None,
}

impl PriorityMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PriorityMethod::ImpactUrgency => "impact_urgency",
            PriorityMethod::Direct => "direct",
            PriorityMethod::HrService => "hr_service",
            PriorityMethod::None => "none",
        }
    }
}

/// How a row found by the dedupe lookup is compared with the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DedupeMatch {
    /// The field holds exactly the key.
    #[default]
    Equals,
    /// The key is written into the field's text (`[relay-key <key>]`).
    Contains,
}

/// Which field carries the relay's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dedupe {
    pub field: String,
    #[serde(default, rename = "match")]
    pub matching: DedupeMatch,
}

impl Default for Dedupe {
    fn default() -> Self {
        Dedupe {
            field: "correlation_id".into(),
            matching: DedupeMatch::Equals,
        }
    }
}

impl Dedupe {
    /// The text written into a `contains` field.
    pub fn marker(key: &str) -> String {
        format!("[relay-key {key}]")
    }

    /// The value written for `key`: the key itself, or its marker.
    pub fn written(&self, key: &str) -> String {
        match self.matching {
            DedupeMatch::Equals => key.to_string(),
            DedupeMatch::Contains => Dedupe::marker(key),
        }
    }

    /// The key a value of the dedupe field carries (the inverse of `written`), if any.
    pub fn key_in<'a>(&self, value: &'a str) -> Option<&'a str> {
        match self.matching {
            DedupeMatch::Equals => Some(value).filter(|v| !v.is_empty()),
            DedupeMatch::Contains => value
                .split_once("[relay-key ")
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(key, _)| key),
        }
    }

    /// True when a found row's value of the dedupe field is ours.
    pub fn is_ours(&self, found: Option<&str>, key: &str) -> bool {
        match (self.matching, found) {
            (_, None) => false,
            (DedupeMatch::Equals, Some(v)) => v == key,
            (DedupeMatch::Contains, Some(v)) => v.contains(&Dedupe::marker(key)),
        }
    }
}

/// A state change the relay makes on a record (resolving it when its alerts are resolved, closing it as a
/// false positive): the state, the fields the table's state model requires with it (a close code), and the
/// field the resolution's note goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    pub state: String,
    /// The states a record passes through, in order, before `state`, where its table's state flow allows
    /// no shortcut (a security incident under the NIST stateful process: Draft → Analysis → … → Review →
    /// Closed). The walk starts after the record's current state when that is one of them.
    #[serde(default)]
    pub via: Vec<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    #[serde(default)]
    pub notes_field: Option<String>,
}

impl Transition {
    /// The fields a close code is written to, by table: `close_code` (task tables), `resolution_code`
    /// (problem).
    pub const CLOSE_CODE_FIELDS: [&'static str; 2] = ["close_code", "resolution_code"];

    /// The field this transition writes its close code to, if it writes one.
    pub fn close_field(&self) -> Option<&'static str> {
        Self::CLOSE_CODE_FIELDS
            .into_iter()
            .find(|f| self.fields.contains_key(*f))
    }

    /// The close code this transition writes, if any.
    pub fn close_code(&self) -> Option<&str> {
        self.close_field().and_then(|f| self.fields.get(f)).map(String::as_str)
    }

    /// The writes that take a record in `current` to this transition's state, one update each: the rest of
    /// `via` (the state alone; from the state after `current` when it is one of them), then `state` with its
    /// fields and `notes`.
    pub fn writes_from(&self, current: &str, notes: &str) -> Vec<Map<String, Value>> {
        let start = self.via.iter().position(|s| s == current).map_or(0, |i| i + 1);
        let mut out: Vec<Map<String, Value>> = self.via[start..]
            .iter()
            .map(|s| Map::from_iter([("state".to_string(), Value::String(s.clone()))]))
            .collect();
        out.push(self.fields_with(notes));
        out
    }

    /// The fields to write: the state, the required fields, and `notes` in the notes field.
    pub fn fields_with(&self, notes: &str) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("state".into(), Value::String(self.state.clone()));
        for (k, v) in &self.fields {
            out.insert(k.clone(), Value::String(v.clone()));
        }
        if let Some(f) = &self.notes_field {
            out.insert(f.clone(), Value::String(notes.to_string()));
        }
        out
    }
}

/// A record's life on its table after the relay created it: where notes go, which states are done, how the
/// relay resolves it, closes it as a false positive, reopens it, and links a new record to it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// The journal field notes are written to (`work_notes`); None: the table has none.
    #[serde(default)]
    pub journal: Option<String>,
    /// States in which the record is done (resolved, closed, cancelled).
    #[serde(default)]
    pub done_states: Vec<String>,
    #[serde(default)]
    pub resolve: Option<Transition>,
    #[serde(default)]
    pub false_positive: Option<Transition>,
    /// Done states a record cannot leave (a closed incident): it is never reopened or noted on.
    #[serde(default)]
    pub final_states: Vec<String>,
    /// The state a done (not final) record goes back to when reopened; None: its state model does not reopen.
    #[serde(default)]
    pub reopen_state: Option<String>,
    /// The field of a new record that references an earlier one; None: linked by a note on each.
    #[serde(default)]
    pub link_field: Option<String>,
}

impl Lifecycle {
    /// Is `state` one of the done states?
    pub fn is_done(&self, state: &str) -> bool {
        self.done_states.iter().any(|s| s == state)
    }

    /// Can a record in `state` be reopened (done, not final, and the table has a reopen state)?
    pub fn can_reopen(&self, state: &str) -> bool {
        self.reopen_state.is_some() && self.is_done(state) && !self.final_states.iter().any(|s| s == state)
    }

    /// Every field the lifecycle names, with what names it.
    fn named_fields(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if let Some(j) = &self.journal {
            out.push(("lifecycle.journal", j.as_str()));
        }
        if let Some(l) = &self.link_field {
            out.push(("lifecycle.link_field", l.as_str()));
        }
        for (what, t) in [
            ("lifecycle.resolve", &self.resolve),
            ("lifecycle.false_positive", &self.false_positive),
        ] {
            if let Some(t) = t {
                out.push((what, "state"));
                out.extend(t.fields.keys().map(|k| (what, k.as_str())));
                out.extend(t.notes_field.as_deref().map(|f| (what, f)));
            }
        }
        out
    }

    /// Every state the lifecycle names, with what names it.
    fn named_states(&self) -> Vec<(&'static str, &str)> {
        let mut out: Vec<(&'static str, &str)> = self
            .done_states
            .iter()
            .map(|s| ("lifecycle.done_states", s.as_str()))
            .collect();
        for (what, via, t) in [
            ("lifecycle.resolve.state", "lifecycle.resolve.via", &self.resolve),
            (
                "lifecycle.false_positive.state",
                "lifecycle.false_positive.via",
                &self.false_positive,
            ),
        ] {
            if let Some(t) = t {
                out.push((what, t.state.as_str()));
                out.extend(t.via.iter().map(|s| (via, s.as_str())));
            }
        }
        out.extend(self.reopen_state.as_deref().map(|s| ("lifecycle.reopen_state", s)));
        out.extend(self.final_states.iter().map(|s| ("lifecycle.final_states", s.as_str())));
        out
    }
}

/// One profile, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub table: String,
    /// Every column the table has (the task table's included for task-extended tables).
    pub fields: BTreeSet<String>,
    pub priority: PriorityMethod,
    pub dedupe: Dedupe,
    pub summary_field: String,
    pub description_field: String,
    /// Where the assignment group goes; None: the table takes no group.
    pub group_field: Option<String>,
    pub person_fields: Vec<String>,
    /// The table's data policy requires the person (the HR case's `opened_for`): when the employee cannot
    /// be looked up in `sys_user` now, the attempt is retried instead of sending a record it would refuse.
    pub person_required: bool,
    pub states: BTreeMap<String, String>,
    pub lifecycle: Lifecycle,
    pub domain: BTreeMap<String, Text>,
    /// field → literal value sent when no domain template (and no route field) gives the field one: what the
    /// table's data policy requires and the alert may not say (an HR service, a policy, a risk's entity).
    pub defaults: BTreeMap<String, String>,
    pub context: Vec<Text>,
}

impl Profile {
    pub fn has(&self, field: &str) -> bool {
        self.fields.contains(field)
    }

    /// A connection-test record for this profile's table, as the routes would fill it where no alert is
    /// needed: a summary and long text saying what it is, `key` in the dedupe field, every default, and
    /// each domain value its template can fill from `summary`, `description` and the dates an alert at
    /// `now_unix` would give (`occurred_date`, `valid_to`); templates naming alert details are left out.
    /// Person fields are the caller's.
    pub fn probe_fields(&self, key: &str, now_unix: i64) -> Map<String, Value> {
        let summary = "[Alert Relay connection test] safe to delete: created by `relay test-connection`";
        let description = "A connection test record of Alert Relay. It carries no alert data.";
        let mut facts = Map::new();
        facts.insert("summary".into(), Value::String(summary.into()));
        facts.insert("description".into(), Value::String(description.into()));
        let dates = [
            ("occurred_date", crate::route::date_after(now_unix, 0)),
            (
                "valid_to",
                crate::route::date_after(now_unix, crate::route::VALID_TO_DAYS),
            ),
        ];
        for (k, date) in dates {
            if let Some(d) = date {
                facts.insert(k.into(), Value::String(d));
            }
        }
        let mut fields = Map::new();
        for (field, value) in &self.defaults {
            fields.insert(field.clone(), Value::String(value.clone()));
        }
        for (field, text) in &self.domain {
            if let Some(value) = text.render(&facts) {
                fields.insert(field.clone(), Value::String(value));
            }
        }
        let mut long_text = description.to_string();
        if self.summary_field == self.description_field {
            long_text = format!("{summary}\n\n{long_text}");
        } else {
            fields.insert(self.summary_field.clone(), Value::String(summary.into()));
        }
        if self.dedupe.field == self.description_field {
            long_text = format!("{long_text}\n\n{}", self.dedupe.written(key));
        } else {
            fields.insert(self.dedupe.field.clone(), Value::String(self.dedupe.written(key)));
        }
        fields.insert(self.description_field.clone(), Value::String(long_text));
        fields.retain(|f, _| self.has(f));
        fields
    }
}

/// A profile as written (shipped file or override); every part may be left out of an override.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProfile {
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub extends: Option<String>,
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    #[serde(default)]
    pub priority: Option<PriorityMethod>,
    #[serde(default)]
    pub dedupe: Option<Dedupe>,
    #[serde(default)]
    pub summary_field: Option<String>,
    #[serde(default)]
    pub description_field: Option<String>,
    #[serde(default)]
    pub group_field: Option<String>,
    #[serde(default)]
    pub person_fields: Option<Vec<String>>,
    #[serde(default)]
    pub person_required: Option<bool>,
    #[serde(default)]
    pub states: Option<BTreeMap<String, String>>,
    /// Replaces the shipped lifecycle as a whole.
    #[serde(default)]
    pub lifecycle: Option<Lifecycle>,
    #[serde(default)]
    pub domain: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub defaults: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub context: Option<Vec<String>>,
}

impl RawProfile {
    /// `self` with every part `over` sets replaced.
    fn merged(&self, over: &RawProfile) -> RawProfile {
        let pick = |a: &Option<String>, b: &Option<String>| b.clone().or_else(|| a.clone());
        // entries merge; an empty value drops the shipped entry
        let merge_map = |base: &Option<BTreeMap<String, String>>, over: &Option<BTreeMap<String, String>>| {
            let mut out = base.clone();
            if let Some(d) = over {
                let merged = out.get_or_insert_with(BTreeMap::new);
                for (k, v) in d {
                    if v.is_empty() {
                        merged.remove(k);
                    } else {
                        merged.insert(k.clone(), v.clone());
                    }
                }
            }
            out
        };
        let domain = merge_map(&self.domain, &over.domain);
        let defaults = merge_map(&self.defaults, &over.defaults);
        RawProfile {
            table: pick(&self.table, &over.table),
            extends: pick(&self.extends, &over.extends),
            fields: over.fields.clone().or_else(|| self.fields.clone()),
            priority: over.priority.or(self.priority),
            dedupe: over.dedupe.clone().or_else(|| self.dedupe.clone()),
            summary_field: pick(&self.summary_field, &over.summary_field),
            description_field: pick(&self.description_field, &over.description_field),
            group_field: pick(&self.group_field, &over.group_field),
            person_fields: over.person_fields.clone().or_else(|| self.person_fields.clone()),
            person_required: over.person_required.or(self.person_required),
            states: over.states.clone().or_else(|| self.states.clone()),
            lifecycle: over.lifecycle.clone().or_else(|| self.lifecycle.clone()),
            domain,
            defaults,
            context: over.context.clone().or_else(|| self.context.clone()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfileFile {
    task_fields: Vec<String>,
    profiles: BTreeMap<String, RawProfile>,
}

/// Compile the shipped profiles with the config's overrides; every problem is `(location, message)`.
pub(crate) fn compile_profiles(
    overrides: &BTreeMap<String, RawProfile>,
    problems: &mut Vec<(String, String)>,
) -> BTreeMap<String, Profile> {
    let file: RawProfileFile =
        serde_yaml_ng::from_str(DEFAULT_PROFILES_YAML).expect("the shipped config/profiles.yaml parses (tested)");
    let mut raw = file.profiles.clone();
    for (name, over) in overrides {
        let merged = match raw.get(name) {
            Some(base) => base.merged(over),
            None => {
                if over.table.is_none() {
                    problems.push((
                        format!("profiles.{name}"),
                        "a new profile needs a table (or name a shipped profile to override)".into(),
                    ));
                    continue;
                }
                RawProfile::default().merged(over)
            }
        };
        raw.insert(name.clone(), merged);
    }
    let mut out = BTreeMap::new();
    for (name, r) in raw {
        let loc = format!("profiles.{name}");
        let mut fields: BTreeSet<String> = r.fields.clone().unwrap_or_default().into_iter().collect();
        match r.extends.as_deref() {
            None => {}
            Some("task") => fields.extend(file.task_fields.iter().cloned()),
            Some(other) => problems.push((loc.clone(), format!("extends {other:?}: only \"task\" is known"))),
        }
        let Some(table) = r.table.clone() else {
            problems.push((loc, "needs a table".into()));
            continue;
        };
        let dedupe = r.dedupe.clone().unwrap_or_default();
        let summary_field = r.summary_field.clone().unwrap_or_else(|| "short_description".into());
        let description_field = r.description_field.clone().unwrap_or_else(|| "description".into());
        let group_field = match r.group_field.as_deref() {
            None => Some("assignment_group".to_string()),
            Some("") => None,
            Some(g) => Some(g.to_string()),
        };
        let person_fields = r.person_fields.clone().unwrap_or_default();
        let mut named: Vec<(&str, &str)> = vec![
            ("dedupe.field", dedupe.field.as_str()),
            ("summary_field", summary_field.as_str()),
            ("description_field", description_field.as_str()),
        ];
        if let Some(g) = &group_field {
            named.push(("group_field", g));
        }
        for p in &person_fields {
            named.push(("person_fields", p));
        }
        let domain_raw = r.domain.clone().unwrap_or_default();
        for k in domain_raw.keys() {
            named.push(("domain", k));
        }
        let defaults = r.defaults.clone().unwrap_or_default();
        for k in defaults.keys() {
            named.push(("defaults", k));
        }
        let lifecycle = r.lifecycle.clone().unwrap_or_default();
        named.extend(lifecycle.named_fields());
        let states = r.states.clone().unwrap_or_default();
        let transitions = [
            ("lifecycle.resolve", &lifecycle.resolve),
            ("lifecycle.false_positive", &lifecycle.false_positive),
        ];
        for (what, t) in transitions {
            let Some(t) = t else { continue };
            if !lifecycle.is_done(&t.state) {
                problems.push((
                    loc.clone(),
                    format!("{what}.state {:?} is not one of its done_states", t.state),
                ));
            }
            if t.fields.contains_key("state") || t.notes_field.as_deref() == Some("state") {
                problems.push((
                    loc.clone(),
                    format!("{what} sets state in fields: give it as {what}.state"),
                ));
            }
        }
        if let Some(r) = lifecycle.reopen_state.as_deref().filter(|r| lifecycle.is_done(r)) {
            problems.push((
                loc.clone(),
                format!("lifecycle.reopen_state {r:?} is one of its done_states: a reopened record must be open"),
            ));
        }
        for f in lifecycle.final_states.iter().filter(|f| !lifecycle.is_done(f)) {
            problems.push((
                loc.clone(),
                format!("lifecycle.final_states names state {f:?}, which is not one of its done_states"),
            ));
        }
        for (what, state) in lifecycle.named_states() {
            if !states.contains_key(state) {
                problems.push((
                    loc.clone(),
                    format!("{what} names state {state:?}, which is not one of the profile's states"),
                ));
            }
        }
        for (what, f) in named {
            if !fields.contains(f) {
                problems.push((
                    loc.clone(),
                    format!("{what} names field {f:?}, which table {table} does not have"),
                ));
            }
        }
        if r.priority == Some(PriorityMethod::Direct) && !fields.contains("priority") {
            problems.push((
                loc.clone(),
                format!("priority: direct, but table {table} has no priority field"),
            ));
        }
        let mut domain = BTreeMap::new();
        for (k, v) in domain_raw {
            match Text::parse(&v) {
                Ok(t) => {
                    domain.insert(k, t);
                }
                Err(e) => problems.push((format!("{loc}.domain.{k}"), e)),
            }
        }
        let context = compile_context(&format!("{loc}.context"), r.context.as_deref().unwrap_or(&[]), problems);
        out.insert(
            name.clone(),
            Profile {
                name,
                table,
                fields,
                priority: r.priority.unwrap_or(PriorityMethod::None),
                dedupe,
                summary_field,
                description_field,
                group_field,
                person_fields,
                person_required: r.person_required.unwrap_or(false),
                states,
                lifecycle,
                domain,
                defaults,
                context,
            },
        );
    }
    out
}

/// Context line templates, each problem named by `loc`.
pub(crate) fn compile_context(loc: &str, lines: &[String], problems: &mut Vec<(String, String)>) -> Vec<Text> {
    lines
        .iter()
        .filter_map(|l| match Text::parse(l) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push((loc.to_string(), e));
                None
            }
        })
        .collect()
}

/// The values a [`Text`] may name besides `details.*`.
pub const FACTS: [&str; 17] = [
    "summary",
    "description",
    "alert_id",
    "alert_type",
    "type_label",
    "severity",
    "severity_label",
    "risk_score",
    "evidence_url",
    "occurred_at",
    "occurred_date",
    "valid_to",
    "volume",
    "assignment_group",
    "employee.ref",
    "employee.department",
    "employee.manager",
];

/// Literal text with `{path}` placeholders: a fact of [`FACTS`] or `details.<key>[.<key>…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Path(String),
}

impl Text {
    /// True when the template names the fact `path` (`{path}`).
    pub fn names(&self, path: &str) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Path(named) if named == path))
    }

    pub fn parse(s: &str) -> Result<Text, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| format!("unclosed '{{' in {s:?}"))?;
            let path = &after[..close];
            let known = FACTS.contains(&path)
                || path.strip_prefix("details.").is_some_and(|k| {
                    !k.is_empty()
                        && k.split('.')
                            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                });
            if !known {
                return Err(format!(
                    "unknown placeholder {{{path}}} in {s:?}; known: details.<key>, {}",
                    FACTS.join(", ")
                ));
            }
            parts.push(Part::Path(path.to_string()));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Text { parts })
    }

    /// True when the text names nothing beyond the seed's minimal data set (no `details.*`, no manager, no
    /// volume): what `privacy.minimal_data` still sends.
    pub fn is_minimal(&self) -> bool {
        self.parts.iter().all(|p| match p {
            Part::Literal(_) => true,
            Part::Path(path) => {
                !path.starts_with("details.") && !matches!(path.as_str(), "employee.manager" | "volume")
            }
        })
    }

    /// The text with every placeholder filled from `facts`, or None when one is missing or empty.
    pub fn render(&self, facts: &Map<String, Value>) -> Option<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::Path(path) => out.push_str(&lookup(facts, path)?),
            }
        }
        Some(out)
    }
}

fn lookup(facts: &Map<String, Value>, path: &str) -> Option<String> {
    let (first, rest) = match path.split_once('.') {
        Some((a, b)) if a == "details" => (a, Some(b)),
        _ => (path, None),
    };
    let mut v = facts.get(first)?;
    if let Some(rest) = rest {
        for k in rest.split('.') {
            v = v.get(k)?;
        }
    }
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Value::Null | Value::Object(_) => return None,
    };
    (!s.trim().is_empty()).then_some(s)
}

/// Bytes as people read them (1 KB = 1,000 bytes): `1.2 GB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dedupe_key_is_read_back_from_what_was_written() {
        let equals = Dedupe::default();
        let contains = Dedupe {
            field: "description".into(),
            matching: DedupeMatch::Contains,
        };
        for d in [&equals, &contains] {
            let text = format!("Routed by rule r\n\n{}", d.written("emon:b:0a1b"));
            let value = if d.matching == DedupeMatch::Equals {
                d.written("emon:b:0a1b")
            } else {
                text
            };
            assert_eq!(d.key_in(&value), Some("emon:b:0a1b"), "{d:?}");
            assert!(d.is_ours(Some(&value), "emon:b:0a1b"));
        }
        assert_eq!(equals.key_in(""), None);
        assert_eq!(contains.key_in("no marker here"), None);
    }

    #[test]
    fn the_shipped_profiles_compile() {
        let mut p = Vec::new();
        let profiles = compile_profiles(&BTreeMap::new(), &mut p);
        assert!(p.is_empty(), "{p:?}");
        let risk = &profiles["risk"];
        assert!(!risk.has("correlation_id"), "risk extends sn_grc_item, not task");
        assert_eq!(risk.dedupe.field, "description");
        assert_eq!(risk.summary_field, "name");
        assert!(
            profiles["hr_case"].has("correlation_id"),
            "HR case inherits task's fields"
        );
        assert!(!profiles["hr_case"].has("category"));
        assert_eq!(profiles["security_incident"].priority, PriorityMethod::Direct);
        assert_eq!(profiles["incident"].priority, PriorityMethod::ImpactUrgency);
        assert_eq!(profiles["task"].priority, PriorityMethod::None);
        assert_eq!(profiles["hr_case"].priority, PriorityMethod::HrService);
        assert_eq!(profiles["security_task"].table, "sn_si_task");
        for (name, prof) in &profiles {
            assert!(
                prof.has(&prof.dedupe.field),
                "{name}: dedupe field must exist on the table"
            );
        }
    }

    #[test]
    fn an_override_naming_a_missing_field_is_a_problem() {
        let over: BTreeMap<String, RawProfile> =
            serde_yaml_ng::from_str("risk: {dedupe: {field: correlation_id}}").unwrap();
        let mut p = Vec::new();
        compile_profiles(&over, &mut p);
        assert!(
            p.iter()
                .any(|(l, m)| l == "profiles.risk" && m.contains("\"correlation_id\"") && m.contains("sn_risk_risk")),
            "{p:?}"
        );
    }

    #[test]
    fn texts_render_from_facts_and_skip_when_a_value_is_missing() {
        let t = Text::parse("Files: {details.file_count} via {details.channel}").unwrap();
        let facts: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"details": {"file_count": 847, "channel": "usb"}})).unwrap();
        assert_eq!(t.render(&facts).as_deref(), Some("Files: 847 via usb"));
        let none: Map<String, Value> = serde_json::from_value(serde_json::json!({"details": {}})).unwrap();
        assert_eq!(t.render(&none), None);
        assert!(
            Text::parse("{employee.email}")
                .unwrap_err()
                .contains("unknown placeholder")
        );
        assert!(Text::parse("{details.}").is_err());
        assert_eq!(human_bytes(2_147_483_648), "2.1 GB");
        assert_eq!(human_bytes(12), "12 bytes");
    }

    #[test]
    fn dedupe_compares_what_it_finds() {
        let eq = Dedupe::default();
        assert!(eq.is_ours(Some("emon:a"), "emon:a"));
        assert!(!eq.is_ours(Some("emon:b"), "emon:a"));
        assert!(!eq.is_ours(None, "emon:a"));
        let contains = Dedupe {
            field: "description".into(),
            matching: DedupeMatch::Contains,
        };
        assert!(contains.is_ours(Some("text\n[relay-key emon:a]"), "emon:a"));
        assert!(!contains.is_ours(Some("text [relay-key emon:ab]"), "emon:a"));
        assert!(!contains.is_ours(Some("an unrelated risk"), "emon:a"));
    }
}
