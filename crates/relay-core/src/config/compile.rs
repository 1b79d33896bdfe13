//! Validation: the file as written ([`RawConfig`]) into a [`Config`], or every problem it has, each named by
//! where it is.

use std::collections::{BTreeMap, HashSet};

use super::model::{
    BatchSettings, Config, DeliveryMode, GROUP_KEYS, GroupSpec, ImpactUrgency, MAX_ALERTS_PER_RECORD, MAX_BATCH_WINDOW,
    MAX_THREAD_WINDOW_DAYS, RecordType, Rule, THREAD_KEYS, Target, ThreadOverride, TypeDefaults,
};
use super::raw::{RawConfig, RawDefaults, RawRule, RawTarget};
use super::template::Template;
use super::{ConfigError, ConfigProblem};
use crate::alert::{AlertType, Severity};
use crate::condition::{Condition, Guard};

/// The config file version this build reads.
const CONFIG_VERSION: u32 = 1;
/// The smallest `batch.max_batch_bytes` a config may set.
const MIN_BATCH_BYTES: usize = 64 * 1024;
/// The longest `correlation_prefix`.
const MAX_CORRELATION_PREFIX: usize = 16;
/// The longest rule name.
const MAX_RULE_NAME: usize = 64;
/// The longest table or field name.
const MAX_TABLE_NAME: usize = 80;

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn add(&mut self, location: &str, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            location: location.to_string(),
            message: message.into(),
        });
    }
}

pub(super) fn compile(raw: RawConfig, hash: String) -> Result<Config, ConfigError> {
    let mut p = Problems::default();
    if raw.version != CONFIG_VERSION {
        p.add(
            "file",
            format!(
                "unsupported config version {}; this relay reads version {CONFIG_VERSION}",
                raw.version
            ),
        );
    }
    let defaults = compile_defaults(&mut p, &raw.defaults);
    let (tables, mut known_tables) = compile_tables(&mut p, &raw.tables, &raw.extra_tables);
    let mut profile_problems = Vec::new();
    let mut profiles = crate::profile::compile_profiles(&raw.profiles, &mut profile_problems);
    for (loc, m) in profile_problems {
        p.add(&loc, m);
    }
    for (rt, table) in &tables {
        if let Some(prof) = profiles.get_mut(rt.as_str()) {
            prof.table = table.clone();
        } else {
            p.add(
                &format!("profiles.{rt}"),
                "is missing: every record type needs a profile",
            );
        }
    }
    known_tables.extend(profiles.values().map(|prof| prof.table.clone()));
    check_batch(&mut p, &raw.batch);
    // a rule may name a priority that the defaults or any alert type defines
    let mut all_priorities = raw.defaults.priorities.clone();
    for t in raw.alert_types.values() {
        all_priorities.extend(t.priorities.clone());
    }
    check_thread(
        &mut p,
        "threads",
        &ThreadOverride {
            enabled: Some(raw.threads.enabled),
            window_days: Some(raw.threads.window_days),
            key: Some(raw.threads.key.clone()),
            escalation: Some(raw.threads.escalation.clone()),
            closed: Some(raw.threads.closed),
        },
        &all_priorities,
    );
    let ctx = TargetContext {
        known_tables: &known_tables,
        priorities: &all_priorities,
    };
    let alert_types = compile_alert_types(&mut p, &raw.alert_types, &raw.defaults.priorities, ctx);
    let rules = compile_rules(&mut p, &raw.rules, &raw.custom_detail_fields, ctx);

    if !p.0.is_empty() {
        return Err(ConfigError { problems: p.0 });
    }
    let d = raw.defaults;
    let config = Config {
        hash,
        delivery: defaults.delivery,
        batch_window_seconds: d.batch_window_seconds,
        priority_by_severity: defaults.priority_by_severity,
        priorities: d.priorities,
        contact_type: d.contact_type,
        correlation_prefix: d.correlation_prefix,
        correlation_display: d.correlation_display,
        short_description: defaults.short_description,
        privacy: raw.privacy,
        tables,
        batch: raw.batch,
        threads: raw.threads,
        alert_types,
        rules,
        profiles,
        person: raw.person,
    };
    check_route_fields(&mut p, &config);
    if !p.0.is_empty() {
        return Err(ConfigError { problems: p.0 });
    }
    Ok(config)
}

/// Every route names only fields its table has: its own `fields:`, and the category / subcategory it sets.
fn check_route_fields(p: &mut Problems, c: &Config) {
    let mut check = |loc: &str, rule: Option<&Rule>, at: AlertType| {
        let defaults = &c.alert_types[&at];
        let (rt, table) = c.route_target(rule, defaults);
        if rt == RecordType::ItomEvent {
            return;
        }
        let prof = c.profile_for(rt, &table);
        let mut named: Vec<(String, &str)> = Vec::new();
        let own = rule.map(|r| &r.target).unwrap_or(&defaults.target);
        for k in own.fields.keys() {
            named.push((format!("fields.{k}"), k));
        }
        // what the route itself sets; what it inherits from its alert type is left out where the table lacks it
        if own.category.is_some() {
            named.push(("category".into(), "category"));
        }
        if own.subcategory.is_some() {
            named.push(("subcategory".into(), "subcategory"));
        }
        for (what, f) in named {
            if !prof.has(f) {
                p.add(
                    loc,
                    format!(
                        "{what}: table {table} (profile {}) has no field {f:?}; remove it or choose a table that has it",
                        prof.name
                    ),
                );
            }
        }
    };
    for at in c.alert_types.keys() {
        check(&format!("alert_types.{at}"), None, *at);
    }
    for r in &c.rules {
        let types: Vec<AlertType> = AlertType::ALL
            .into_iter()
            .filter(|t| r.guard.admits_type(*t) && c.alert_types.contains_key(t))
            .collect();
        for at in types {
            check(&format!("rule {:?}", r.name), Some(r), at);
        }
    }
}

/// The parts of `defaults` that compile into something else than they are written as.
struct Defaults {
    delivery: [DeliveryMode; 4],
    priority_by_severity: [String; 4],
    short_description: Template,
}

fn compile_defaults(p: &mut Problems, d: &RawDefaults) -> Defaults {
    // indexed by Severity::rank
    let mut delivery = [
        DeliveryMode::Realtime,
        DeliveryMode::Realtime,
        DeliveryMode::Batch,
        DeliveryMode::Batch,
    ];
    for (k, v) in &d.delivery {
        match (Severity::parse(k), DeliveryMode::parse(v)) {
            (Some(s), Some(m)) => delivery[usize::from(s.rank())] = m,
            (None, _) => p.add("defaults.delivery", format!("unknown severity {k:?}")),
            (_, None) => p.add(
                "defaults.delivery",
                format!("{k}: unknown delivery mode {v:?} (realtime or batch)"),
            ),
        }
    }
    if d.batch_window_seconds == 0 || d.batch_window_seconds > MAX_BATCH_WINDOW.as_secs() {
        p.add(
            "defaults",
            format!(
                "batch_window_seconds {} must be 1 to {}",
                d.batch_window_seconds,
                MAX_BATCH_WINDOW.as_secs()
            ),
        );
    }
    check_priorities(p, "defaults.priorities", &d.priorities);
    let mut priority_by_severity: [String; 4] = ["P1".into(), "P2".into(), "P3".into(), "P4".into()];
    for (k, v) in &d.priority_by_severity {
        match Severity::parse(k) {
            Some(s) if d.priorities.contains_key(v) => priority_by_severity[usize::from(s.rank())] = v.clone(),
            Some(_) => p.add("defaults.priority_by_severity", format!("{k}: unknown priority {v:?}")),
            None => p.add("defaults.priority_by_severity", format!("unknown severity {k:?}")),
        }
    }
    if d.priority_by_severity.len() < Severity::ALL.len() {
        for (severity, name) in Severity::ALL.iter().zip(&priority_by_severity) {
            if !d.priorities.contains_key(name) {
                p.add(
                    "defaults.priority_by_severity",
                    format!("{severity}: priority {name:?} is not defined under defaults.priorities"),
                );
            }
        }
    }
    let prefix = &d.correlation_prefix;
    if prefix.is_empty()
        || prefix.len() > MAX_CORRELATION_PREFIX
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        p.add(
            "defaults",
            format!("correlation_prefix {prefix:?} must be 1-{MAX_CORRELATION_PREFIX} characters of [A-Za-z0-9.-]"),
        );
    }
    let short_description = Template::parse(&d.short_description).unwrap_or_else(|e| {
        p.add("defaults.short_description", e.to_string());
        Template { parts: vec![] }
    });
    Defaults {
        delivery,
        priority_by_severity,
        short_description,
    }
}

/// The table of each record type, and every table a route may name.
fn compile_tables(
    p: &mut Problems,
    overrides: &BTreeMap<String, String>,
    extra_tables: &[String],
) -> (BTreeMap<RecordType, String>, HashSet<String>) {
    let mut tables: BTreeMap<RecordType, String> = RecordType::ALL
        .iter()
        .map(|t| (*t, t.default_table().to_string()))
        .collect();
    for (k, v) in overrides {
        match RecordType::parse(k) {
            None => p.add(
                "tables",
                format!("unknown record type {k:?}; known: {}", record_types()),
            ),
            Some(RecordType::ItomEvent) => p.add("tables", "itom_event always goes to Event Management (em_event)"),
            Some(_) if !is_table_name(v) => p.add("tables", format!("{k}: {v:?} is not a ServiceNow table name")),
            Some(t) => {
                tables.insert(t, v.clone());
            }
        }
    }
    let mut known_tables: HashSet<String> = tables.values().cloned().collect();
    for t in extra_tables {
        if is_table_name(t) {
            known_tables.insert(t.clone());
        } else {
            p.add("extra_tables", format!("{t:?} is not a ServiceNow table name"));
        }
    }
    (tables, known_tables)
}

fn check_thread(p: &mut Problems, loc: &str, t: &ThreadOverride, priorities: &BTreeMap<String, ImpactUrgency>) {
    for (i, e) in t.escalation.iter().flatten().enumerate() {
        let at = format!("{loc}.escalation[{i}]");
        if !priorities.contains_key(&e.priority) {
            p.add(
                &at,
                format!(
                    "unknown priority {:?}; defined: {}",
                    e.priority,
                    priorities.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        if e.peak_risk.is_none() && e.sum_risk.is_none() && e.alerts.is_none() && e.channels.is_none() {
            p.add(
                &at,
                "names no threshold (peak_risk, sum_risk, alerts, channels): it would escalate every thread",
            );
        }
        if e.peak_risk.is_some_and(|r| r > 100) {
            p.add(&at, "peak_risk is a risk_score: 0 to 100");
        }
    }
    for k in t.key.iter().flatten() {
        if !THREAD_KEYS.contains(&k.as_str()) {
            p.add(
                loc,
                format!("thread key {k:?} is unknown; known: {}", THREAD_KEYS.join(", ")),
            );
        }
    }
    if let Some(w) = t.window_days
        && !(1..=MAX_THREAD_WINDOW_DAYS).contains(&w)
    {
        p.add(
            loc,
            format!("thread window_days {w} must be between 1 and {MAX_THREAD_WINDOW_DAYS}"),
        );
    }
}

fn check_batch(p: &mut Problems, batch: &BatchSettings) {
    for k in &batch.group_by {
        if !GROUP_KEYS.contains(&k.as_str()) {
            p.add(
                "batch.group_by",
                format!("unknown key {k:?}; known: {}", GROUP_KEYS.join(", ")),
            );
        }
    }
    if batch.max_alerts_per_record == 0 || batch.max_requests_per_batch == 0 {
        p.add(
            "batch",
            "max_alerts_per_record and max_requests_per_batch must be at least 1",
        );
    }
    if batch.max_alerts_per_record > MAX_ALERTS_PER_RECORD {
        p.add(
            "batch.max_alerts_per_record",
            format!(
                "is {}; at most {MAX_ALERTS_PER_RECORD} (an aggregate's members are sealed in one ledger write)",
                batch.max_alerts_per_record
            ),
        );
    }
    if batch.max_batch_bytes < MIN_BATCH_BYTES {
        p.add("batch", format!("max_batch_bytes must be at least {MIN_BATCH_BYTES}"));
    }
}

fn compile_alert_types(
    p: &mut Problems,
    raw: &BTreeMap<String, RawTarget>,
    default_priorities: &BTreeMap<String, ImpactUrgency>,
    ctx: TargetContext<'_>,
) -> BTreeMap<AlertType, TypeDefaults> {
    let mut alert_types = BTreeMap::new();
    for (k, raw_t) in raw {
        let loc = format!("alert_types.{k}");
        let Some(at) = AlertType::parse(k) else {
            p.add(
                &loc,
                format!(
                    "unknown alert type; known: {}",
                    AlertType::ALL.map(|t| t.as_str()).join(", ")
                ),
            );
            continue;
        };
        check_priorities(p, &format!("{loc}.priorities"), &raw_t.priorities);
        let mut priorities = default_priorities.clone();
        priorities.extend(raw_t.priorities.clone());
        let target = compile_target(
            p,
            &loc,
            raw_t,
            TargetContext {
                priorities: &priorities,
                ..ctx
            },
        );
        if raw_t.record_type.is_none() {
            p.add(&loc, "needs a record_type (the route taken when no rule matches)");
        }
        if target.assignment_group.is_none() {
            p.add(&loc, "needs an assignment_group (the route taken when no rule matches)");
        }
        alert_types.insert(at, TypeDefaults { target, priorities });
    }
    for at in AlertType::ALL {
        if !raw.contains_key(at.as_str()) {
            p.add(
                &format!("alert_types.{at}"),
                "is missing: every alert type needs a default route",
            );
        }
    }
    alert_types
}

fn compile_rules(
    p: &mut Problems,
    raw: &[RawRule],
    custom_detail_fields: &[String],
    ctx: TargetContext<'_>,
) -> Vec<Rule> {
    let mut names = HashSet::new();
    let mut broken_rules = HashSet::new();
    let mut rules: Vec<Rule> = Vec::new();
    for r in raw {
        let loc = format!("rule {:?}", r.name);
        if !is_rule_name(&r.name) {
            p.add(
                &loc,
                format!("name must be 1-{MAX_RULE_NAME} characters of [A-Za-z0-9._-]"),
            );
        }
        if !names.insert(r.name.clone()) {
            p.add(&loc, "duplicate rule name");
        }
        let mut errors = Vec::new();
        let when = match &r.when {
            Some(c) => Condition::compile(c, custom_detail_fields, &mut errors),
            None => Condition::Always,
        };
        let broken = !errors.is_empty();
        for e in errors {
            p.add(&loc, format!("when: {e}"));
        }
        if !r.target.priorities.is_empty() {
            p.add(
                &loc,
                "priorities (impact/urgency per priority) can be set under defaults or per alert type, not per rule",
            );
        }
        let target = compile_target(p, &loc, &r.target, ctx);
        // a broken condition compiles to `Always`: it must not make the rules after it unreachable
        if broken {
            broken_rules.insert(r.name.clone());
        } else if let Some(earlier) = rules
            .iter()
            .filter(|e| !broken_rules.contains(&e.name))
            .find(|e| shadows(&e.when, &when))
        {
            p.add(
                &loc,
                format!(
                    "is unreachable: rule {:?} earlier in the list matches every alert this one matches",
                    earlier.name
                ),
            );
        }
        let guard = Guard::of(&when);
        rules.push(Rule {
            name: r.name.clone(),
            description: r.description.clone(),
            when,
            guard,
            target,
        });
    }
    rules
}

fn record_types() -> String {
    RecordType::ALL.map(|t| t.as_str()).join(", ")
}

fn is_table_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= MAX_TABLE_NAME
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_rule_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_RULE_NAME
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_priorities(p: &mut Problems, loc: &str, priorities: &BTreeMap<String, ImpactUrgency>) {
    for (name, iu) in priorities {
        if !(1..=3).contains(&iu.impact) || !(1..=3).contains(&iu.urgency) {
            p.add(loc, format!("{name}: impact and urgency must be 1, 2 or 3"));
        }
    }
}

/// What a route may name: the tables of the instance and the priorities defined where it is.
#[derive(Clone, Copy)]
struct TargetContext<'a> {
    known_tables: &'a HashSet<String>,
    priorities: &'a BTreeMap<String, ImpactUrgency>,
}

fn compile_target(p: &mut Problems, loc: &str, raw: &RawTarget, ctx: TargetContext<'_>) -> Target {
    let record_type = raw.record_type.as_deref().and_then(|s| {
        let t = RecordType::parse(s);
        if t.is_none() {
            p.add(loc, format!("unknown record_type {s:?}; known: {}", record_types()));
        }
        t
    });
    if let Some(t) = &raw.table
        && !ctx.known_tables.contains(t)
    {
        p.add(
            loc,
            format!("unknown table {t:?}: not a mapped table; add it under extra_tables if your instance has it"),
        );
    }
    if raw.table.is_some() && record_type == Some(RecordType::ItomEvent) {
        p.add(loc, "itom_event records go to Event Management; they take no table");
    }
    if let Some(pr) = &raw.priority
        && !ctx.priorities.contains_key(pr)
    {
        p.add(
            loc,
            format!(
                "unknown priority {pr:?}; defined: {}",
                ctx.priorities.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    match &raw.assignment_group {
        Some(GroupSpec::Name(n)) if n.trim().is_empty() => p.add(loc, "assignment_group must not be empty"),
        Some(GroupSpec::ByDepartment(g))
            if g.default.trim().is_empty() || g.by_department.values().any(|v| v.trim().is_empty()) =>
        {
            p.add(loc, "assignment_group: group names must not be empty")
        }
        _ => {}
    }
    let delivery = raw.delivery.as_deref().and_then(|s| {
        let m = DeliveryMode::parse(s);
        if m.is_none() {
            p.add(loc, format!("unknown delivery {s:?} (realtime or batch)"));
        }
        m
    });
    let short_description = raw.short_description.as_deref().and_then(|s| match Template::parse(s) {
        Ok(t) => Some(t),
        Err(e) => {
            p.add(loc, e.to_string());
            None
        }
    });
    for k in raw.fields.keys() {
        if crate::fields::MANAGED_FIELDS.contains(&k.as_str()) {
            p.add(
                loc,
                format!("fields.{k} is set by the relay itself and cannot be overridden"),
            );
        } else if !is_table_name(k) {
            p.add(loc, format!("fields.{k} is not a ServiceNow field name"));
        }
    }
    if let Some(t) = &raw.thread {
        check_thread(p, loc, t, ctx.priorities);
    }
    Target {
        thread: raw.thread.clone(),
        record_type,
        table: raw.table.clone(),
        assignment_group: raw.assignment_group.clone(),
        priority: raw.priority.clone(),
        category: raw.category.clone(),
        subcategory: raw.subcategory.clone(),
        short_description,
        delivery,
        fields: raw.fields.clone(),
        context: raw.context.as_ref().map(|lines| {
            let mut problems = Vec::new();
            let texts = crate::profile::compile_context(&format!("{loc}.context"), lines, &mut problems);
            for (l, m) in problems {
                p.add(&l, m);
            }
            texts
        }),
    }
}

/// True when every alert `later` matches is already matched by `earlier` — decidable here for pure
/// conjunctions: `earlier`'s leaves are a subset of `later`'s.
fn shadows(earlier: &Condition, later: &Condition) -> bool {
    if earlier == later {
        return true;
    }
    match (earlier.conjunction(), later.conjunction()) {
        (Some(e), Some(l)) => e.iter().all(|leaf| l.contains(leaf)),
        _ => false,
    }
}
