//! The batch planner: medium/low alerts collected over a window become few records.
//!
//! Alerts that share the configured group key (by default employee + alert type; the target table and
//! assignment group always take part) and arrived in the same window become ONE record that lists every
//! alert — an alert storm is one ticket. The records are then cut into Batch API requests.
//!
//! Deterministic: the same alerts give the same records with the same correlation ids; an aggregate's id
//! is derived from its whole member set (see `plan`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::DEFAULT_CORRELATION_PREFIX;
use crate::config::{BatchSettings, RecordType};
use crate::fields::{MAX_DESCRIPTION_FIELD, MAX_SHORT_DESCRIPTION, TEST_MARKER, one_line, truncate};
use crate::profile::{DedupeMatch, PriorityMethod};
use crate::route::Decision;

/// How many members an aggregate's description shows in full (when they fit); the rest are listed by id.
pub const DESCRIBED_MEMBERS: usize = 10;

/// How much of each fully shown member's activity text the description keeps (characters).
const DESCRIBED_ACTIVITY_CHARS: usize = 200;

/// The file, attached to an aggregate's record, that lists every member alert in full.
pub const MEMBER_LIST_FILE: &str = "alerts.txt";

/// The largest member list (JSON-escaped bytes) one aggregate carries. With the record's fields it keeps an
/// aggregate's queue message well under the 256 KiB a queue message may hold: a larger group is split into
/// several records rather than becoming a message that can be neither re-queued nor dead-lettered.
pub const MAX_MEMBER_LIST_BYTES: usize = 128 * 1024;

/// One alert waiting in the batch queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending<'a> {
    pub decision: &'a Decision,
    /// When ingest accepted it (epoch ms): decides its window.
    pub received_at_ms: i64,
    /// Planned as its own record, never grouped: an earlier attempt may already have created that record
    /// (a flush that sent it and was ended before it could say so), which only a lookup under its own key
    /// finds. Grouping it would put it in a second record.
    pub alone: bool,
}

/// One record to create: a single alert's own record, or an aggregate of several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRecord {
    pub correlation_id: String,
    pub record_type: RecordType,
    pub table: String,
    pub fields: Map<String, Value>,
    /// Which field carries `correlation_id` on the table, and how a found row is compared.
    #[serde(default)]
    pub dedupe: crate::profile::Dedupe,
    /// The alerts this record covers, in arrival order.
    pub alert_ids: Vec<String>,
    /// Positions of those alerts in the planner's input.
    pub members: Vec<usize>,
    /// When ingest accepted each of those alerts (epoch ms), in the same order: each alert's delivery
    /// latency counts from its own arrival.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub received_at_ms: Vec<i64>,
    /// For an aggregate whose description cannot show every member in full (more than
    /// [`DESCRIBED_MEMBERS`], or an activity text cut short): every member alert in full, uploaded as
    /// [`MEMBER_LIST_FILE`] to the record. None for a lone alert and for an aggregate its description lists
    /// completely (one upload fewer per record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_list: Option<String>,
    /// Who the record is about, resolved to `sys_user` at delivery: the alert's person, or for an
    /// aggregate the one person every member names (none when they differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<crate::route::PersonLookup>,
    /// For a single alert's record: the weekly trend chart to attach (see [`Decision::chart`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<crate::route::TrendChart>,
    /// The file the record wraps (see [`Decision::document`]): a single alert's text, or for an aggregate
    /// every member in full (the member list is attached besides only when the description cannot carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<crate::route::DocumentFile>,
    /// The date some fields carry that must not be in the past when the record is sent (the first
    /// member's: the fields are its).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<crate::route::ValidTo>,
    /// The thread the record's alerts are in (every member in the same one): when that thread has a
    /// record by the time the flush runs, the record is not sent in a batch but noted on the thread's
    /// record (an aggregate as one note listing its alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<crate::route::ThreadPlan>,
}

/// Whether a correlation id is a batch aggregate's (`<prefix>:b:<40 hex digits>`): a key that names no
/// alert. An alert's never looks alike: an alert id starting `b:` is hashed into `<prefix>:h:…`
/// ([`crate::correlation_id`]), and one that is just `b` has no digits after it.
pub fn is_aggregate_key(correlation_id: &str) -> bool {
    let mut parts = correlation_id.splitn(3, ':');
    let (_, b, hex) = (parts.next(), parts.next(), parts.next());
    b == Some("b") && hex.is_some_and(|h| h.len() == 40 && h.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// The thread an aggregate joins: its members' one thread (when they are all in the same one), with one
/// note listing them all — the aggregate's own key first (how a retry finds the note written), then each
/// member's key and risk (what coverage and escalation count), then a line per alert (its summary too
/// while the note stays within [`MAX_DESCRIPTION_FIELD`]). An aggregate whose note would not fit even without
/// summaries joins no thread: it is batched as a record of its own.
fn aggregate_thread(ds: &[&Decision], correlation_id: &str) -> Option<crate::route::ThreadPlan> {
    let first = ds.first()?.thread.as_ref()?;
    let plans: Vec<&crate::route::ThreadPlan> = ds.iter().filter_map(|d| d.thread.as_ref()).collect();
    if plans.len() != ds.len() || plans.iter().any(|t| t.key != first.key) {
        return None;
    }
    let mut markers = vec![crate::profile::Dedupe::marker(correlation_id)];
    for (d, t) in ds.iter().zip(&plans) {
        markers.push(crate::profile::Dedupe::marker(&d.correlation_id));
        markers.push(crate::route::ThreadStats::marker(t.risk, t.channel.as_deref()));
    }
    let line = |d: &Decision, with_summary: bool| {
        let mut l = format!(
            "- {} ({}, risk {}, rule {}, occurred {})",
            d.alert_id,
            d.severity.as_str(),
            d.summary.risk_score,
            d.rule,
            d.summary.occurred_at
        );
        if with_summary && let Some(s) = d.fields.get(&d.summary_field).and_then(Value::as_str) {
            l.push_str(": ");
            l.push_str(&one_line(s));
        }
        l
    };
    let note = |with_summary: bool| {
        let lines: Vec<String> = ds.iter().map(|d| line(d, with_summary)).collect();
        format!(
            "{} {} more alerts of this thread, batched:\n{}",
            markers.join(" "),
            ds.len(),
            lines.join("\n")
        )
    };
    let fits = |n: &String| n.chars().count() <= MAX_DESCRIPTION_FIELD;
    let note = Some(note(true))
        .filter(fits)
        .or_else(|| Some(note(false)).filter(fits))?;
    let peak = plans.iter().max_by_key(|t| t.risk).copied().unwrap_or(first);
    Some(crate::route::ThreadPlan {
        note,
        risk: peak.risk,
        channel: peak.channel.clone(),
        ..first.clone()
    })
}

/// The records, and how to send them.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPlan {
    pub records: Vec<PlannedRecord>,
    /// Batch API requests: indices into `records` (Table API records only).
    pub chunks: Vec<Vec<usize>>,
    /// ITOM events: indices into `records`, sent to Event Management (which de-duplicates by message key).
    pub events: Vec<usize>,
}

fn group_value<'d>(key: &str, d: &'d Decision) -> &'d str {
    match key {
        "employee" => &d.employee_ref,
        "alert_type" => d.alert_type.as_str(),
        "severity" => d.severity.as_str(),
        "rule" => &d.rule,
        "table" => &d.table,
        "assignment_group" => &d.assignment_group,
        _ => "",
    }
}

/// Plan the records for `pending` alerts with `window_ms`-long windows.
pub fn plan(pending: &[Pending<'_>], settings: &BatchSettings, window_ms: i64) -> BatchPlan {
    let window_ms = window_ms.max(1);
    // group key → member positions (BTreeMap: deterministic order)
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut records = Vec::new();
    let mut events = Vec::new();
    for (i, p) in pending.iter().enumerate() {
        let d = p.decision;
        if d.record_type == RecordType::ItomEvent {
            events.push(records.len());
            records.push(single(d, i, p.received_at_ms));
            continue;
        }
        if p.alone {
            records.push(single(d, i, p.received_at_ms));
            continue;
        }
        let window = p.received_at_ms.div_euclid(window_ms);
        let mut key = format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{window}",
            d.table, d.assignment_group, d.record_type
        );
        for k in &settings.group_by {
            key.push('\u{1f}');
            key.push_str(group_value(k, d));
        }
        groups.entry(key).or_default().push(i);
    }
    for (key, mut members) in groups {
        members.sort_by(|a, b| {
            (pending[*a].received_at_ms, &pending[*a].decision.alert_id)
                .cmp(&(pending[*b].received_at_ms, &pending[*b].decision.alert_id))
        });
        for chunk in split_members(&members, pending, settings.max_alerts_per_record.max(1)) {
            if chunk.len() == 1 {
                records.push(single(
                    pending[chunk[0]].decision,
                    chunk[0],
                    pending[chunk[0]].received_at_ms,
                ));
            } else {
                // The full member set names the record: an alert that joins the group later (after an
                // interrupted flush, or in the next flush of the same window) makes a different record, never
                // one found under an id whose record does not list it. The pipeline seals an aggregate's
                // members in the ledger before it sends the record, so the same members are never planned
                // into a second record.
                let decisions: Vec<&Decision> = chunk.iter().map(|i| pending[*i].decision).collect();
                let mut id_key = key.clone();
                for d in &decisions {
                    id_key.push('\u{1f}');
                    id_key.push_str(&d.alert_id);
                }
                let received = chunk.iter().map(|i| pending[*i].received_at_ms).collect();
                records.push(aggregate(&decisions, chunk.clone(), received, &id_key));
            }
        }
    }
    let chunks = chunk_requests(&records, settings);
    BatchPlan {
        records,
        chunks,
        events,
    }
}

/// Cut a group's members (in arrival order) into records of at most `max` alerts whose member list stays
/// within [`MAX_MEMBER_LIST_BYTES`].
fn split_members(members: &[usize], pending: &[Pending<'_>], max: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    for &m in members {
        let size = escaped_len(&member_line(pending[m].decision));
        if !current.is_empty() && (current.len() >= max || bytes + size > MAX_MEMBER_LIST_BYTES) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(m);
        bytes += size;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Bytes of `s` as a JSON string (what it adds to a queue message).
fn escaped_len(s: &str) -> usize {
    serde_json::to_string(s).map(|j| j.len()).unwrap_or(s.len() * 6)
}

/// One member alert in full, as the attached member list shows it.
fn member_line(d: &Decision) -> String {
    format!(
        "- {} [{}] {} (risk {}/100, employee {}): {}\n  Evidence: {}\n",
        d.summary.occurred_at,
        d.severity.label(),
        d.alert_id,
        d.summary.risk_score,
        d.employee_ref,
        one_line(&d.summary.description),
        d.summary.evidence_url,
    )
}

/// An aggregate's description, at most [`MAX_DESCRIPTION_FIELD`] characters less `reserved` (text the
/// caller puts in front of it), always ending with `footer`: the first members (up to
/// [`DESCRIBED_MEMBERS`]) with their activity, the following ones by id while they fit, and a count of the
/// rest, which the attached member list holds. The flag is true when the description shows every member in
/// full (then the record needs no member list: one upload fewer per aggregate).
fn aggregate_description(ds: &[&Decision], footer: &str, reserved: usize) -> (String, bool) {
    let n = ds.len();
    let chars = |s: &str| s.chars().count();
    let header_with_list = format!(
        "{n} alerts aggregated by the relay's batch window. The first ones in full, the others by id; \
         the attached {MEMBER_LIST_FILE} lists every alert in full.\n"
    );
    // room kept for the closing "… and N more" line and the footer
    let reserve = chars(footer) + 120 + reserved;
    let budget = MAX_DESCRIPTION_FIELD.saturating_sub(reserve);
    let mut body = String::new();
    let mut used = chars(&header_with_list);
    let mut shown = 0;
    let mut cut = false;
    for d in ds.iter().take(DESCRIBED_MEMBERS) {
        let activity = one_line(&d.summary.description);
        cut |= chars(&activity) > DESCRIBED_ACTIVITY_CHARS;
        let line = format!(
            "\n- {} [{}] {} (risk {}/100, employee {}): {}\n  Evidence: {}",
            d.summary.occurred_at,
            d.severity.label(),
            d.alert_id,
            d.summary.risk_score,
            d.employee_ref,
            truncate(&activity, DESCRIBED_ACTIVITY_CHARS),
            d.summary.evidence_url,
        );
        let len = chars(&line);
        if used + len > budget {
            break;
        }
        body.push_str(&line);
        used += len;
        shown += 1;
    }
    let complete = shown == n && !cut;
    if shown < n {
        let header = "\n\nFurther alerts:";
        if used + chars(header) <= budget {
            body.push_str(header);
            used += chars(header);
            for d in &ds[shown..] {
                let line = format!("\n- {}", d.alert_id);
                if used + chars(&line) > budget {
                    break;
                }
                body.push_str(&line);
                used += chars(&line);
                shown += 1;
            }
        }
    }
    if shown < n {
        body.push_str(&format!(
            "\n… and {} more alerts: see the attached {MEMBER_LIST_FILE}.",
            n - shown
        ));
    }
    let header = if complete {
        format!("{n} alerts aggregated by the relay's batch window:\n")
    } else {
        header_with_list
    };
    let text = format!("{header}{body}{footer}");
    (
        truncate(&text, MAX_DESCRIPTION_FIELD.saturating_sub(reserved)),
        complete,
    )
}

fn single(d: &Decision, i: usize, received_at_ms: i64) -> PlannedRecord {
    PlannedRecord {
        correlation_id: d.correlation_id.clone(),
        record_type: d.record_type,
        table: d.table.clone(),
        fields: d.fields.clone(),
        dedupe: d.dedupe.clone(),
        alert_ids: vec![d.alert_id.clone()],
        members: vec![i],
        received_at_ms: vec![received_at_ms],
        member_list: None,
        person: d.person.clone(),
        chart: d.chart.clone(),
        document: d.document.clone(),
        valid_to: d.valid_to.clone(),
        thread: d.thread.clone(),
    }
}

fn aggregate(ds: &[&Decision], members: Vec<usize>, received_at_ms: Vec<i64>, key: &str) -> PlannedRecord {
    let first = ds[0];
    let prefix = first
        .correlation_id
        .split(':')
        .next()
        .unwrap_or(DEFAULT_CORRELATION_PREFIX);
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    let correlation_id = format!("{prefix}:b:{}", &digest[..40]);
    let strongest = ds.iter().min_by_key(|d| d.severity.rank()).copied().unwrap_or(first);
    let impact = ds.iter().map(|d| d.impact).min().unwrap_or(first.impact);
    let urgency = ds.iter().map(|d| d.urgency).min().unwrap_or(first.urgency);
    let same_type = ds.iter().all(|d| d.alert_type == first.alert_type);
    let same_employee = ds.iter().all(|d| d.employee_ref == first.employee_ref);

    let mut short = format!(
        "{} {}",
        ds.len(),
        if same_type {
            first.alert_type.label()
        } else {
            "monitoring"
        }
    );
    short.push_str(&format!(" alerts (up to {})", strongest.severity.label()));
    if same_employee {
        short.push_str(&format!(" for employee {}", first.employee_ref));
    }
    if ds.iter().any(|d| d.test) {
        short.insert_str(0, TEST_MARKER);
    }
    let short = truncate(&short, MAX_SHORT_DESCRIPTION);
    let dedupe = &first.dedupe;
    let in_long_text = dedupe.matching == DedupeMatch::Contains && dedupe.field == first.description_field;
    // the footer (and the dedupe marker and summary when they share the long text) count against the
    // description's bound, so the marker is never cut off
    let mut footer = format!("\n\nRouted by rule {} (config {})", first.rule, first.config_hash);
    if in_long_text {
        footer.push_str(&format!("\n\n{}", dedupe.written(&correlation_id)));
    }
    let summary_in_text = first.summary_field == first.description_field;
    let prefix = if summary_in_text {
        format!("{short}\n\n")
    } else {
        String::new()
    };
    let (text, complete) = aggregate_description(ds, &footer, prefix.chars().count());
    let description = format!("{prefix}{text}");
    let full_list = || ds.iter().map(|d| member_line(d)).collect::<String>();
    // the full list goes as a file only when the description cannot carry it
    let member_list = (!complete).then(full_list);
    // a record that wraps a file (an employee document) wraps every member in full
    let document = first.document.as_ref().map(|d| crate::route::DocumentFile {
        file_name: d.file_name.clone(),
        text: format!("{short}\n\n{}", full_list()),
    });

    // the first member's fields, by its profile: only fields its table has are replaced
    let mut fields = first.fields.clone();
    let mut set = |k: &str, v: String| {
        if fields.contains_key(k) {
            fields.insert(k.to_string(), Value::String(v));
        }
    };
    if !summary_in_text {
        set(&first.summary_field, short);
    }
    set(&first.description_field, description);
    set("impact", impact.to_string());
    set("urgency", urgency.to_string());
    if first.priority_method == PriorityMethod::Direct {
        let strongest_priority = ds.iter().filter_map(|d| d.servicenow_priority).min();
        if let Some(p) = strongest_priority {
            set("priority", p.to_string());
        }
    }
    if !in_long_text {
        set(&dedupe.field, dedupe.written(&correlation_id));
    }
    let thread = aggregate_thread(ds, &correlation_id);
    PlannedRecord {
        correlation_id,
        record_type: first.record_type,
        table: first.table.clone(),
        fields,
        dedupe: first.dedupe.clone(),
        alert_ids: ds.iter().map(|d| d.alert_id.clone()).collect(),
        members,
        received_at_ms,
        member_list,
        person: first
            .person
            .clone()
            .filter(|p| ds.iter().all(|d| d.person.as_ref() == Some(p))),
        chart: None,
        document,
        valid_to: first.valid_to.clone(),
        thread,
    }
}

/// Cut Table API records into Batch API requests of at most `max_requests_per_batch` items and
/// `max_batch_bytes` of JSON bodies (a record larger than that alone goes alone).
pub fn chunk_requests(records: &[PlannedRecord], settings: &BatchSettings) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    for (i, r) in records.iter().enumerate() {
        if r.record_type == RecordType::ItomEvent {
            continue;
        }
        let size = serde_json::to_vec(&r.fields).map(|v| v.len()).unwrap_or(0);
        if !current.is_empty()
            && (current.len() >= settings.max_requests_per_batch.max(1) || bytes + size > settings.max_batch_bytes)
        {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests;
