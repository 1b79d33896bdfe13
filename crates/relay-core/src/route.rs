//! Routing: which rule fires for an alert, and the decision it yields (target table, impact/urgency,
//! assignment group, delivery mode, correlation id and the ServiceNow fields).

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::alert::Details;
use crate::alert::{Alert, AlertType, Severity};
use crate::config::{Config, DeliveryMode, ImpactUrgency, PersonMatch, RecordType, Template};
use crate::fields;
use crate::profile::{Dedupe, PriorityMethod};

/// The part of an alert that may leave for ServiceNow (the seed's minimal data set), kept with the decision
/// so that delivery and batch aggregation never need the original payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertSummary {
    pub description: String,
    pub risk_score: u8,
    pub evidence_url: String,
    pub occurred_at: String,
}

/// What routing decided for one alert. Serialised onto the queue: the decision made (and audited) at
/// receipt is the decision executed, whatever the config says later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub alert_id: String,
    pub alert_type: AlertType,
    pub severity: Severity,
    /// The rule that fired, or `default:<alert_type>` when none did.
    pub rule: String,
    pub record_type: RecordType,
    pub table: String,
    pub impact: u8,
    pub urgency: u8,
    /// The configured priority name (P1…P4).
    pub priority: String,
    /// The priority the record really gets (1 Critical … 5 Planning): the default lookup's value for
    /// impact × urgency on incident/problem, the value written on tables that take `priority` directly;
    /// None where the table decides itself (HR service, task default, none).
    pub servicenow_priority: Option<u8>,
    /// How the table sets priority.
    #[serde(default)]
    pub priority_method: PriorityMethod,
    /// The record profile used.
    #[serde(default)]
    pub profile: String,
    /// Which field carries `correlation_id` on this table, and how a found row is compared.
    #[serde(default)]
    pub dedupe: Dedupe,
    /// Where the summary line is (`short_description`, `name` on risk, …).
    #[serde(default = "default_summary_field")]
    pub summary_field: String,
    /// Where the long text is.
    #[serde(default = "default_description_field")]
    pub description_field: String,
    /// The employee to resolve to `sys_user` at delivery, when the profile names person fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<PersonLookup>,
    /// The weekly trend to attach as a chart (HR case with a `details.weekly_trend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<TrendChart>,
    /// The file the record wraps, to upload right after it is created (an employee document: see
    /// [`DocumentFile`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<DocumentFile>,
    /// The date some fields carry that must not be in the past when the record is sent ([`ValidTo`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<ValidTo>,
    /// The thread this alert joins, when threads are on for its route ([`ThreadPlan`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<ThreadPlan>,
    /// Typed detail fields the alert did not carry (noted on the record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_details: Vec<String>,
    pub assignment_group: String,
    pub delivery: DeliveryMode,
    pub correlation_id: String,
    /// The employee identifier as it leaves (pseudonymised when configured).
    pub employee_ref: String,
    pub test: bool,
    pub summary: AlertSummary,
    /// The record's fields, ready for the Table API (or the Event Management payload for ITOM events).
    pub fields: Map<String, Value>,
    pub config_hash: String,
}

/// The thread a realtime alert joins (see [`crate::config::ThreadSettings`]): while the record the thread's
/// first alert opened is open and the window runs, a later alert of the thread becomes a journal entry on
/// it. Decided at routing, with what delivery needs of the table's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadPlan {
    /// The thread's ledger key: `thread:<table>:<40 hex digits of SHA-256 over the key's parts>` (no
    /// employee identifier in the clear).
    pub key: String,
    /// How long after the thread's record was opened it takes more alerts (seconds).
    pub window_s: i64,
    /// The journal field the note goes to (`work_notes`).
    pub journal: String,
    /// States in which the thread's record is done: a later alert then opens a new record.
    pub done_states: Vec<String>,
    /// The new record's field that references the done one; None: the new record's long text names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_field: Option<String>,
    /// The journal entry's text: the markers of the alert's correlation id and its risk, then what a record
    /// would say.
    pub note: String,
    /// This alert's part in the thread's escalation: its risk_score and DLP channel.
    #[serde(default)]
    pub risk: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The escalation steps of the route, strongest first, and how the table takes a priority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalation: Vec<EscalationStep>,
    #[serde(default)]
    pub priority_method: PriorityMethod,
    /// What to do when the thread's record is done, and what the table's state model allows.
    #[serde(default)]
    pub closed: crate::config::ClosedPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub final_states: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopen_state: Option<String>,
}

/// An escalation step as delivery applies it: the thresholds, and the priority with what the table is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationStep {
    #[serde(flatten)]
    pub when: crate::config::Escalation,
    pub impact: u8,
    pub urgency: u8,
    /// 1 Critical … 5 Planning.
    pub servicenow_priority: u8,
}

/// What a thread's alerts add up to, for its escalation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadStats {
    pub alerts: u32,
    pub peak_risk: u8,
    pub sum_risk: u32,
    pub channels: std::collections::BTreeSet<String>,
}

impl ThreadStats {
    pub fn add(&mut self, risk: u8, channel: Option<&str>) {
        self.alerts += 1;
        self.peak_risk = self.peak_risk.max(risk);
        self.sum_risk += u32::from(risk);
        if let Some(c) = channel {
            self.channels.insert(c.to_string());
        }
    }

    /// The marker a note carries for its alert's part: `[relay-risk <risk>:<channel or ->]`.
    pub fn marker(risk: u8, channel: Option<&str>) -> String {
        format!("[relay-risk {risk}:{}]", channel.unwrap_or("-"))
    }

    /// The (risk, channel) of a marker's key (`92:usb`).
    pub fn parse(key: &str) -> Option<(u8, Option<&str>)> {
        let (risk, channel) = key.split_once(':')?;
        Some((risk.parse().ok()?, (channel != "-").then_some(channel)))
    }
}

impl EscalationStep {
    /// Whether `stats` reach every threshold of this step.
    pub fn reached(&self, stats: &ThreadStats) -> bool {
        let w = &self.when;
        w.peak_risk.is_none_or(|t| stats.peak_risk >= t)
            && w.sum_risk.is_none_or(|t| stats.sum_risk >= t)
            && w.alerts.is_none_or(|t| stats.alerts >= t)
            && w.channels.is_none_or(|t| stats.channels.len() as u32 >= t)
    }
}

/// What a thread's ledger key starts with.
pub const THREAD_PREFIX: &str = "thread:";

fn default_summary_field() -> String {
    "short_description".into()
}

fn default_description_field() -> String {
    "description".into()
}

/// Who the record is about, to find in `sys_user` at delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonLookup {
    pub match_by: PersonMatch,
    /// The value compared with `sys_user.<match_by>`.
    pub value: String,
    /// The record's fields that get the user's sys_id.
    pub fields: Vec<String>,
    pub cache_ttl_seconds: u64,
    /// The long-text field where a lookup that found no one is noted.
    #[serde(default = "default_description_field")]
    pub note_field: String,
    /// The table refuses a record without the person ([`crate::Profile::person_required`]).
    #[serde(default)]
    pub required: bool,
}

/// The file an employee document record wraps: "Employee document to upload" (hr-agent-ws-create-emp-doc).
/// A document without its file is not submitted, and the daily job "Clean up inactive employee documents"
/// deletes it (installed-w-employee-doc-mngemnt), so the relay uploads the record's long text as the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentFile {
    pub file_name: String,
    pub text: String,
}

/// The file name of an employee document's [`DocumentFile`].
pub const DOCUMENT_FILE: &str = "alert-report.txt";

/// A weekly trend to draw and attach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendChart {
    pub title: String,
    /// One value per week, oldest first (hours per day of non-work activity).
    pub weekly: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error(
        "privacy.pseudonymise_employee is on but no pseudonymisation key was given (set RELAY_PSEUDONYM_KEY to \
         a secret of at least 16 bytes)"
    )]
    MissingPseudonymKey,
    #[error("the pseudonymisation key must be at least 16 bytes long")]
    ShortPseudonymKey,
}

/// The shortest pseudonymisation key accepted.
pub const MIN_PSEUDONYM_KEY_BYTES: usize = 16;

/// The key of employee pseudonyms (HMAC-SHA256), normalised the same way wherever it comes from: the same
/// secret gives the same pseudonyms in every mode.
#[derive(Debug, Clone)]
pub struct PseudonymKey(SecretSlice<u8>);

impl PseudonymKey {
    /// The key in a secret's text (a Secrets Manager secret string, an environment variable, a file): the
    /// whitespace around it (a trailing newline of `echo` or an editor) is not part of the key. At least
    /// [`MIN_PSEUDONYM_KEY_BYTES`] remain.
    pub fn from_secret_text(text: &str) -> Result<PseudonymKey, RouterError> {
        PseudonymKey::exactly(text.trim().as_bytes())
    }

    /// Bytes of a secret: UTF-8 text is read as [`PseudonymKey::from_secret_text`] does; anything else is
    /// the key as it is.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<PseudonymKey, RouterError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => PseudonymKey::from_secret_text(text),
            Err(_) => PseudonymKey::exactly(bytes),
        }
    }

    fn exactly(key: &[u8]) -> Result<PseudonymKey, RouterError> {
        if key.len() < MIN_PSEUDONYM_KEY_BYTES {
            return Err(RouterError::ShortPseudonymKey);
        }
        Ok(PseudonymKey(SecretSlice::from(key.to_vec())))
    }

    /// `emp-` and the first 20 hex digits of HMAC-SHA256(key, `employee_id`).
    fn pseudonym(&self, employee_id: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose_secret()).expect("HMAC takes any key length");
        mac.update(employee_id.as_bytes());
        format!("emp-{}", &hex::encode(mac.finalize().into_bytes())[..20])
    }
}

/// Routes alerts with one loaded config.
#[derive(Debug, Clone)]
pub struct Router {
    config: Config,
    /// Set exactly when the config pseudonymises employees.
    pseudonym_key: Option<PseudonymKey>,
}

const MAX_CORRELATION_ID: usize = 100;

/// A policy exception's `valid_to`: this many days after the alert (the window its 30-day history covers),
/// or after the routing day when the alert is older: "Valid to … must be after Valid from and cannot be a
/// past date" (request-policy-exception-ws).
pub const VALID_TO_DAYS: i64 = 30;

/// A date a record must not carry in the past: a policy exception's `valid_to` ("Valid to … cannot be a past
/// date", governance-risk-compliance/grc-compliance-management-workspace/request-policy-exception-ws).
/// Routing sets it [`VALID_TO_DAYS`] after the alert occurred or was routed; a record sent on a later day (a
/// retry after midnight, a replay from the dead-letter queue weeks later, a local relay started again after
/// a month switched off) carries it from the day it is sent instead, so the instance does not refuse it and
/// the exception still runs its whole window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidTo {
    /// The date the fields carry, `YYYY-MM-DD`.
    pub date: String,
    /// The fields whose template named `{valid_to}`.
    pub fields: Vec<String>,
}

impl ValidTo {
    /// The fields of `profile` whose template names `{valid_to}`, when any got a value.
    fn of(
        profile: &crate::profile::Profile,
        facts: &Map<String, Value>,
        fields: &Map<String, Value>,
    ) -> Option<ValidTo> {
        let date = facts.get("valid_to")?.as_str()?;
        let named: Vec<String> = profile
            .domain
            .iter()
            .filter(|(field, text)| text.names("valid_to") && fields.contains_key(field.as_str()))
            .map(|(field, _)| field.clone())
            .collect();
        (!named.is_empty()).then(|| ValidTo {
            date: date.to_string(),
            fields: named,
        })
    }

    /// `fields` as they go out at `now_unix`: with the date moved to [`VALID_TO_DAYS`] after that day when
    /// this is later than the date they carry; borrowed unchanged otherwise (and without a `valid_to`).
    pub fn apply<'a>(
        valid_to: Option<&ValidTo>,
        fields: &'a Map<String, Value>,
        now_unix: i64,
    ) -> std::borrow::Cow<'a, Map<String, Value>> {
        let later = valid_to.zip(date_after(now_unix, VALID_TO_DAYS));
        match later {
            // dates are `YYYY-MM-DD`: they compare as text
            Some((v, date)) if date > v.date => {
                let mut out = fields.clone();
                for field in &v.fields {
                    if let Some(Value::String(text)) = out.get_mut(field) {
                        *text = text.replace(&v.date, &date);
                    }
                }
                std::borrow::Cow::Owned(out)
            }
            _ => std::borrow::Cow::Borrowed(fields),
        }
    }
}

/// The calendar date (UTC, `YYYY-MM-DD`) `offset_days` after the instant `unix` (seconds).
pub(crate) fn date_after(unix: i64, offset_days: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix.checked_add(offset_days.checked_mul(86_400)?)?)
        .ok()
        .map(|t| t.date().to_string())
}

/// True for strings that are safe inside a ServiceNow encoded query and a `correlation_id`.
pub fn is_query_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CORRELATION_ID
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A stable, query-safe correlation id for an alert id: `<prefix>:<alert_id>` when the alert id is already
/// made of `[A-Za-z0-9._:-]` and fits; otherwise `<prefix>:h:<sha256 of the alert id, 40 hex>`. (`h:` and
/// `b:`, the hashed and batch forms, are never taken verbatim.)
pub fn correlation_id(prefix: &str, alert_id: &str) -> String {
    let plain = format!("{prefix}:{alert_id}");
    if is_query_safe(&plain) && !alert_id.starts_with("h:") && !alert_id.starts_with("b:") {
        return plain;
    }
    let digest = hex::encode(Sha256::digest(alert_id.as_bytes()));
    format!("{prefix}:h:{}", &digest[..40])
}

impl Router {
    /// A router for `config` with the pseudonymisation key as raw secret bytes, normalised as
    /// [`PseudonymKey::from_secret_bytes`] does. The key is read only when the config pseudonymises.
    pub fn new(config: Config, pseudonym_key: Option<Vec<u8>>) -> Result<Router, RouterError> {
        let key = if config.privacy.pseudonymise_employee {
            pseudonym_key
                .as_deref()
                .map(PseudonymKey::from_secret_bytes)
                .transpose()?
        } else {
            None
        };
        Router::with_pseudonym_key(config, key)
    }

    /// A router for `config`; `key` is required when the config pseudonymises employees, and unused
    /// otherwise.
    pub fn with_pseudonym_key(config: Config, key: Option<PseudonymKey>) -> Result<Router, RouterError> {
        let pseudonym_key = match (key, config.privacy.pseudonymise_employee) {
            (None, true) => return Err(RouterError::MissingPseudonymKey),
            (key, true) => key,
            (_, false) => None,
        };
        Ok(Router { config, pseudonym_key })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The employee identifier as it may leave: the id itself, or its pseudonym `emp-<20 hex>`.
    pub fn employee_ref(&self, employee_id: &str) -> String {
        match &self.pseudonym_key {
            Some(key) => key.pseudonym(employee_id),
            None => employee_id.to_string(),
        }
    }

    /// What the profile's templates may name for `alert` (see [`crate::profile::FACTS`]). The manager is
    /// left out when employees are pseudonymised; the department stays (it routes).
    fn facts(&self, alert: &Alert, d: &Decision, summary: &str, now_unix: i64) -> Map<String, Value> {
        let mut f = Map::new();
        let s = |v: &str| Value::String(v.to_string());
        f.insert("summary".into(), s(summary));
        f.insert("description".into(), s(&fields::one_line(&alert.description)));
        f.insert("alert_id".into(), s(&alert.alert_id));
        f.insert("alert_type".into(), s(alert.alert_type.as_str()));
        f.insert("type_label".into(), s(alert.alert_type.label()));
        f.insert("severity".into(), s(alert.severity.as_str()));
        f.insert("severity_label".into(), s(alert.severity.label()));
        f.insert("risk_score".into(), Value::from(alert.risk_score));
        f.insert("evidence_url".into(), s(&alert.evidence_url));
        f.insert("occurred_at".into(), s(&alert.occurred_at));
        if let Some(d) = date_after(alert.occurred_at_unix, 0) {
            f.insert("occurred_date".into(), s(&d));
        }
        if let Some(d) = date_after(alert.occurred_at_unix.max(now_unix), VALID_TO_DAYS) {
            f.insert("valid_to".into(), s(&d));
        }
        if let Some(bytes) = alert.raw_details.get("bytes").and_then(Value::as_u64) {
            f.insert("volume".into(), s(&crate::profile::human_bytes(bytes)));
        }
        f.insert("assignment_group".into(), s(&d.assignment_group));
        f.insert("employee.ref".into(), s(&d.employee_ref));
        f.insert("employee.department".into(), s(&alert.employee.department));
        if self.pseudonym_key.is_none()
            && let Some(m) = &alert.employee.manager
        {
            f.insert("employee.manager".into(), s(m));
        }
        f.insert("details".into(), Value::Object(alert.raw_details.clone()));
        f
    }

    /// Decide where `alert` goes, as if routed when it occurred (dates computed from `occurred_at`).
    pub fn route(&self, alert: &Alert) -> Decision {
        self.route_at(alert, alert.occurred_at_unix)
    }

    /// Decide where `alert` goes when routed at `now_unix` (seconds): a validity window that an old alert's
    /// `occurred_at` would put in the past (a policy exception's `valid_to`) runs from now instead.
    pub fn route_at(&self, alert: &Alert, now_unix: i64) -> Decision {
        let c = &self.config;
        let defaults = &c.alert_types[&alert.alert_type];
        let rule = c.rules.iter().find(|r| r.guard.admits(alert) && r.when.matches(alert));
        let (record_type, table) = c.route_target(rule, defaults);
        let profile = c.profile_for(record_type, &table);

        let pick = |f: fn(&crate::config::Target) -> Option<&String>| -> Option<String> {
            rule.and_then(|r| f(&r.target)).or_else(|| f(&defaults.target)).cloned()
        };
        let priority = pick(|t| t.priority.as_ref())
            .unwrap_or_else(|| c.priority_by_severity[alert.severity.rank() as usize].clone());
        let iu = defaults
            .priorities
            .get(&priority)
            .copied()
            .unwrap_or(ImpactUrgency { impact: 2, urgency: 3 });
        let group = rule
            .and_then(|r| r.target.assignment_group.as_ref())
            .or(defaults.target.assignment_group.as_ref())
            .map(|g| g.resolve(&alert.employee.department).to_string())
            .unwrap_or_default();
        let delivery = rule
            .and_then(|r| r.target.delivery)
            .or(defaults.target.delivery)
            .unwrap_or(c.delivery[alert.severity.rank() as usize]);
        let template: &Template = rule
            .and_then(|r| r.target.short_description.as_ref())
            .or(defaults.target.short_description.as_ref())
            .unwrap_or(&c.short_description);
        let mut extra = defaults.target.fields.clone();
        if let Some(r) = rule {
            extra.extend(r.target.fields.clone());
        }
        let rule_name = rule
            .map(|r| r.name.clone())
            .unwrap_or_else(|| format!("default:{}", alert.alert_type));

        let mut decision = Decision {
            alert_id: alert.alert_id.clone(),
            alert_type: alert.alert_type,
            severity: alert.severity,
            rule: rule_name,
            record_type,
            table,
            impact: iu.impact,
            urgency: iu.urgency,
            priority,
            servicenow_priority: match profile.priority {
                PriorityMethod::ImpactUrgency | PriorityMethod::Direct => Some(iu.servicenow_priority()),
                PriorityMethod::HrService | PriorityMethod::None => None,
            },
            priority_method: profile.priority,
            profile: profile.name.clone(),
            dedupe: profile.dedupe.clone(),
            summary_field: profile.summary_field.clone(),
            description_field: profile.description_field.clone(),
            person: None,
            chart: None,
            document: None,
            valid_to: None,
            thread: None,
            missing_details: alert.missing_details.clone(),
            assignment_group: group,
            delivery,
            correlation_id: correlation_id(&c.correlation_prefix, &alert.alert_id),
            employee_ref: self.employee_ref(&alert.employee.id),
            test: alert.test,
            summary: AlertSummary {
                description: alert.description.clone(),
                risk_score: alert.risk_score,
                evidence_url: alert.evidence_url.clone(),
                occurred_at: alert.occurred_at.clone(),
            },
            fields: Map::new(),
            config_hash: c.hash.clone(),
        };
        let custom_rule_name = alert.rule.as_ref().map(|r| r.name.as_str());
        let short = fields::summary(&decision, template, custom_rule_name);
        let facts = self.facts(alert, &decision, &short, now_unix);
        let context = rule
            .and_then(|r| r.target.context.as_deref())
            .or(defaults.target.context.as_deref());
        decision.fields = fields::build(
            &decision,
            c,
            fields::BuildInput {
                template,
                custom_rule_name,
                category: pick(|t| t.category.as_ref()),
                subcategory: pick(|t| t.subcategory.as_ref()),
                extra: &extra,
                profile,
                context,
                facts: &facts,
            },
        );
        decision.valid_to = ValidTo::of(profile, &facts, &decision.fields);
        let threads = c
            .threads
            .overridden(defaults.target.thread.as_ref())
            .overridden(rule.and_then(|r| r.target.thread.as_ref()));
        decision.thread = thread_plan(&threads, alert, &decision, profile, &short).map(|mut t| {
            let mut steps: Vec<EscalationStep> = threads
                .escalation
                .iter()
                .map(|e| {
                    let iu = defaults
                        .priorities
                        .get(&e.priority)
                        .copied()
                        .unwrap_or(ImpactUrgency { impact: 2, urgency: 3 });
                    EscalationStep {
                        when: e.clone(),
                        impact: iu.impact,
                        urgency: iu.urgency,
                        servicenow_priority: iu.servicenow_priority(),
                    }
                })
                .collect();
            steps.sort_by_key(|s| s.servicenow_priority);
            t.escalation = steps;
            t
        });
        let identity_may_leave = self.pseudonym_key.is_none();
        if identity_may_leave && c.person.resolve && !profile.person_fields.is_empty() {
            let value = match c.person.match_by {
                PersonMatch::EmployeeNumber | PersonMatch::UserName => Some(alert.employee.id.clone()),
                PersonMatch::Email => alert.employee.email.clone(),
            };
            decision.person = value.map(|value| PersonLookup {
                match_by: c.person.match_by,
                value,
                fields: profile.person_fields.clone(),
                cache_ttl_seconds: c.person.cache_ttl_seconds,
                note_field: decision.description_field.clone(),
                required: profile.person_required,
            });
        }
        if record_type == RecordType::EmployeeDocument {
            let text = decision
                .fields
                .get(&decision.description_field)
                .and_then(Value::as_str)
                .unwrap_or(&short);
            decision.document = Some(DocumentFile {
                file_name: DOCUMENT_FILE.into(),
                text: text.to_string(),
            });
        }
        if record_type == RecordType::HrCase
            && !c.privacy.minimal_data
            && let Details::Productivity {
                weekly_trend: Some(weekly_trend),
                ..
            } = &alert.details
            && !weekly_trend.is_empty()
        {
            decision.chart = Some(TrendChart {
                title: format!("Non-work activity, last {} weeks (hours per day)", weekly_trend.len()),
                weekly: weekly_trend.clone(),
            });
        }
        decision
    }
}

/// The thread `d` joins under `settings`: records of a table with a journal, when threads are on (a batch
/// alert joins one only when its thread has a record by the time it is flushed: see
/// [`crate::batch::PlannedRecord::thread`]).
fn thread_plan(
    settings: &crate::config::ThreadSettings,
    alert: &Alert,
    d: &Decision,
    profile: &crate::profile::Profile,
    summary: &str,
) -> Option<ThreadPlan> {
    let journal = profile.lifecycle.journal.clone()?;
    if !settings.enabled || d.record_type == RecordType::ItomEvent {
        return None;
    }
    let mut hash = Sha256::new();
    let mut part = |name: &str, value: &str| {
        // length-prefixed: no two key part lists hash alike
        for s in [name, value] {
            hash.update((s.len() as u64).to_be_bytes());
            hash.update(s.as_bytes());
        }
    };
    part("table", &d.table);
    // a test alert never joins a real alert's thread, nor the other way round
    part("test", if d.test { "1" } else { "0" });
    for k in &settings.key {
        match k.as_str() {
            "employee" => part(k, &d.employee_ref),
            "alert_type" => part(k, d.alert_type.as_str()),
            "custom_rule" => part(k, alert.rule.as_ref().map_or("", |r| r.name.as_str())),
            "rule" => part(k, &d.rule),
            "severity" => part(k, d.severity.as_str()),
            _ => {}
        }
    }
    let digest = hex::encode(hash.finalize());
    let long_text = d
        .fields
        .get(&d.description_field)
        .and_then(Value::as_str)
        .unwrap_or_default();
    let channel = match &alert.details {
        Details::Dlp { channel: Some(c), .. } => Some(c.as_str().to_string()),
        _ => None,
    };
    let note = format!(
        "{} {} Another alert of this thread: {} ({}, risk {}, rule {}, occurred {})\n{summary}\n\n{long_text}",
        crate::profile::Dedupe::marker(&d.correlation_id),
        ThreadStats::marker(d.summary.risk_score, channel.as_deref()),
        d.alert_id,
        d.severity.as_str(),
        d.summary.risk_score,
        d.rule,
        d.summary.occurred_at,
    );
    Some(ThreadPlan {
        key: format!("{THREAD_PREFIX}{}:{}", d.table, &digest[..40]),
        window_s: i64::from(settings.window_days) * 86_400,
        journal,
        done_states: profile.lifecycle.done_states.clone(),
        link_field: profile.lifecycle.link_field.clone(),
        note,
        risk: d.summary.risk_score,
        channel,
        escalation: Vec::new(),
        priority_method: profile.priority,
        closed: settings.closed,
        final_states: profile.lifecycle.final_states.clone(),
        reopen_state: profile.lifecycle.reopen_state.clone(),
    })
}

#[cfg(test)]
mod tests;
