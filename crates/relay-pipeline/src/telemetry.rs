//! Telemetry: one typed struct per event, whose [`emit`](TelemetryEvent::emit) writes its audit or log line
//! and its metric together, so the two can never disagree.
//!
//! Metrics go through the [`metrics`] facade: the Lambda functions export them as CloudWatch Embedded
//! Metric Format documents (one per label set per invocation), `relay serve` as Prometheus text on
//! `GET /metrics`. Audit lines are `tracing` events with target `audit` and carry ids, routing and outcome —
//! never secrets, never the alert payload. The employee appears only as the identifier that also goes to
//! ServiceNow (pseudonymised when configured).

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use relay_core::Decision;
use relay_ports::RecordRef;

use crate::flush::FlushReport;

/// Metric names, as the dashboards and alarms of the stack read them.
pub mod names {
    pub const ALERTS_ACCEPTED: &str = "AlertsAccepted";
    pub const ALERTS_DUPLICATE: &str = "AlertsDuplicate";
    pub const ALERTS_REJECTED: &str = "AlertsRejected";
    pub const RECORDS_CREATED: &str = "RecordsCreated";
    pub const THREAD_NOTES: &str = "ThreadNotes";
    pub const LIFECYCLE_EVENTS: &str = "LifecycleEvents";
    pub const THREAD_ESCALATIONS: &str = "ThreadEscalations";
    pub const CALLBACKS_SENT: &str = "CallbacksSent";
    pub const DELIVERY_LATENCY_MS: &str = "DeliveryLatencyMs";
    pub const DELIVERY_RETRIES: &str = "DeliveryRetries";
    pub const DELIVERY_FAILED: &str = "DeliveryFailed";
    pub const SERVICENOW_CALL_MS: &str = "ServiceNowCallMs";
    pub const BATCH_SIZE: &str = "BatchSize";
    pub const SERVICENOW_CONCURRENCY: &str = "ServiceNowConcurrencyLimit";
}

/// Units and help texts of every metric (CloudWatch takes the unit, Prometheus the help text). Call once
/// after installing the recorder.
pub fn describe() {
    use names::*;
    describe_counter!(
        ALERTS_ACCEPTED,
        Unit::Count,
        "Alerts accepted and queued, by severity and alert type"
    );
    describe_counter!(
        ALERTS_DUPLICATE,
        Unit::Count,
        "Re-sent webhooks of alerts already accepted"
    );
    describe_counter!(ALERTS_REJECTED, Unit::Count, "Webhooks refused, by reason");
    describe_counter!(
        RECORDS_CREATED,
        Unit::Count,
        "ServiceNow records created (an aggregate counts once)"
    );
    describe_counter!(
        CALLBACKS_SENT,
        Unit::Count,
        "Signed callbacks the monitoring product's receiver accepted, by type"
    );
    describe_counter!(
        THREAD_NOTES,
        Unit::Count,
        "Alerts written as a work note on their thread's open record instead of a new record"
    );
    describe_counter!(
        THREAD_ESCALATIONS,
        Unit::Count,
        "Thread records whose priority was raised by an escalation step, by record type and priority"
    );
    describe_counter!(
        LIFECYCLE_EVENTS,
        Unit::Count,
        "Lifecycle events (updated, resolved, dismissed) noted on their alert's record, by routing rule and whether they closed it"
    );
    describe_histogram!(
        DELIVERY_LATENCY_MS,
        Unit::Milliseconds,
        "From acceptance to the record, per alert"
    );
    describe_counter!(
        DELIVERY_RETRIES,
        Unit::Count,
        "Delivery attempts that failed and were rescheduled"
    );
    describe_counter!(
        DELIVERY_FAILED,
        Unit::Count,
        "Alerts given up on (dead-lettered), by error class"
    );
    describe_histogram!(SERVICENOW_CALL_MS, Unit::Milliseconds, "ServiceNow calls, by outcome");
    describe_histogram!(BATCH_SIZE, Unit::Count, "Records per Batch API request");
    metrics::describe_gauge!(
        SERVICENOW_CONCURRENCY,
        Unit::Count,
        "ServiceNow calls this process lets run at once (the adaptive limit)"
    );
}

/// Something that happened, told once to the audit trail and to the metrics.
pub trait TelemetryEvent {
    fn emit(self);
}

/// A webhook was refused with `status`.
pub struct WebhookRejected {
    pub status: u16,
    /// `source` (not on the sender allow-list), `too_large`, `not_json`, `signature`, `invalid`, `unavailable`.
    pub reason: &'static str,
}

impl TelemetryEvent for WebhookRejected {
    fn emit(self) {
        tracing::info!(status = self.status, reason = self.reason, "webhook rejected");
        counter!(names::ALERTS_REJECTED, "Reason" => self.reason).increment(1);
    }
}

/// Routing decided where an alert goes (audited at receipt, before it is queued). A re-sent webhook of an
/// alert already accepted is audited as a duplicate and counted.
pub struct AlertRouted<'a> {
    pub decision: &'a Decision,
    pub duplicate: bool,
}

impl TelemetryEvent for AlertRouted<'_> {
    fn emit(self) {
        let d = self.decision;
        tracing::info!(
            target: "audit",
            event = "routed",
            alert_id = %d.alert_id,
            alert_type = %d.alert_type,
            severity = %d.severity,
            rule = %d.rule,
            record_type = %d.record_type,
            table = %d.table,
            priority = %d.priority,
            impact = d.impact,
            urgency = d.urgency,
            assignment_group = %d.assignment_group,
            delivery = d.delivery.as_str(),
            correlation_id = %d.correlation_id,
            employee = %d.employee_ref,
            config_hash = %d.config_hash,
            duplicate = self.duplicate,
            "alert routed"
        );
        if self.duplicate {
            counter!(names::ALERTS_DUPLICATE, "Severity" => d.severity.as_str()).increment(1);
        }
    }
}

/// An accepted alert is on its queue.
pub struct AlertAccepted<'a> {
    pub decision: &'a Decision,
}

impl TelemetryEvent for AlertAccepted<'_> {
    fn emit(self) {
        let d = self.decision;
        counter!(names::ALERTS_ACCEPTED, "Severity" => d.severity.as_str(), "AlertType" => d.alert_type.as_str())
            .increment(1);
    }
}

/// One ServiceNow call (lookup, create, event) ended with `outcome` after `elapsed`.
pub struct ServiceNowCalled {
    /// `created`, `retryable`, `ambiguous`, `auth`, `permanent`.
    pub outcome: &'static str,
    pub elapsed: Duration,
}

impl TelemetryEvent for ServiceNowCalled {
    fn emit(self) {
        histogram!(names::SERVICENOW_CALL_MS, "Outcome" => self.outcome).record(self.elapsed.as_secs_f64() * 1000.0);
    }
}

/// The record of `alert_ids` exists in ServiceNow (created now, or found after an ambiguous attempt).
pub struct RecordDelivered<'a> {
    /// The ledger key the delivery ran under (an alert id, or an aggregate's key).
    pub key: &'a str,
    pub alert_ids: &'a [String],
    pub record: &'a RecordRef,
    pub attempts: u32,
    pub found_existing: bool,
    pub severity: &'static str,
    /// From acceptance to now, per alert the record covers.
    pub latencies: Vec<Duration>,
}

impl TelemetryEvent for RecordDelivered<'_> {
    fn emit(self) {
        tracing::info!(
            target: "audit",
            event = "delivered",
            alert_id = %self.key,
            alerts = self.alert_ids.len(),
            table = %self.record.table,
            number = %self.record.number.as_deref().unwrap_or(""),
            sys_id = %self.record.sys_id,
            attempts = self.attempts,
            found_existing = self.found_existing,
            "record in ServiceNow"
        );
        let latency = histogram!(names::DELIVERY_LATENCY_MS, "Severity" => self.severity);
        for l in &self.latencies {
            latency.record(l.as_secs_f64() * 1000.0);
        }
    }
}

/// One record was made for a delivery (a batch aggregate of many alerts counts once).
pub struct RecordCreated {
    pub record_type: &'static str,
    pub severity: &'static str,
}

impl TelemetryEvent for RecordCreated {
    fn emit(self) {
        counter!(names::RECORDS_CREATED, "RecordType" => self.record_type, "Severity" => self.severity).increment(1);
    }
}

/// An alert became a journal entry on its thread's record.
pub struct ThreadNoted {
    pub record_type: &'static str,
}

impl TelemetryEvent for ThreadNoted {
    fn emit(self) {
        counter!(names::THREAD_NOTES, "RecordType" => self.record_type).increment(1);
    }
}

/// A callback was accepted by the monitoring product's receiver (after `attempts` attempts).
pub struct CallbackSent {
    pub kind: &'static str,
    pub attempts: u32,
}

impl TelemetryEvent for CallbackSent {
    fn emit(self) {
        tracing::info!(target: "audit", event = "callback_sent", kind = self.kind, attempts = self.attempts);
        counter!(names::CALLBACKS_SENT, "Type" => self.kind).increment(1);
    }
}

/// A thread's record was raised to `priority` by an escalation step.
pub struct ThreadEscalated {
    pub record_type: &'static str,
    pub priority: u8,
}

impl TelemetryEvent for ThreadEscalated {
    fn emit(self) {
        tracing::info!(target: "audit", event = "thread_escalated", record_type = self.record_type, priority = self.priority);
        counter!(names::THREAD_ESCALATIONS, "RecordType" => self.record_type, "Priority" => self.priority.to_string())
            .increment(1);
    }
}

/// A lifecycle event was noted on its alert's record (and, `resolved`, moved the record to a done state).
pub struct LifecycleApplied<'a> {
    pub kind: &'static str,
    pub record_type: &'static str,
    /// The alert's routing rule.
    pub rule: &'a str,
    pub resolved: bool,
}

impl TelemetryEvent for LifecycleApplied<'_> {
    fn emit(self) {
        tracing::info!(target: "audit", event = "lifecycle_event_applied", kind = self.kind,
            record_type = self.record_type, rule = self.rule, resolved = self.resolved);
        counter!(names::LIFECYCLE_EVENTS, "Event" => self.kind, "RecordType" => self.record_type,
            "Rule" => self.rule.to_string(), "Resolved" => if self.resolved { "true" } else { "false" })
        .increment(1);
    }
}

/// An attempt failed; another is scheduled after `delay`.
pub struct DeliveryRetrying<'a> {
    pub key: &'a str,
    pub table: &'a str,
    pub error_class: &'static str,
    pub error: &'a str,
    pub attempts: u32,
    pub delay: Duration,
}

impl TelemetryEvent for DeliveryRetrying<'_> {
    fn emit(self) {
        tracing::warn!(
            target: "audit",
            event = "retrying",
            alert_id = %self.key,
            table = %self.table,
            error_class = %self.error_class,
            error = %self.error,
            attempts = self.attempts,
            delay_s = self.delay.as_secs(),
            "delivery attempt failed; retry scheduled"
        );
        counter!(names::DELIVERY_RETRIES, "ErrorClass" => self.error_class).increment(1);
    }
}

/// Delivery was given up; the alert is in the dead-letter queue and the on-call was notified.
pub struct DeliveryFailed<'a> {
    pub key: &'a str,
    pub table: &'a str,
    pub error_class: &'static str,
    pub error: &'a str,
    pub attempts: u32,
}

impl TelemetryEvent for DeliveryFailed<'_> {
    fn emit(self) {
        tracing::error!(
            target: "audit",
            event = "failed",
            alert_id = %self.key,
            table = %self.table,
            error_class = %self.error_class,
            error = %self.error,
            attempts = self.attempts,
            "delivery failed; alert dead-lettered"
        );
        counter!(names::DELIVERY_FAILED, "ErrorClass" => self.error_class).increment(1);
    }
}

/// A queue message that is not an alert envelope at all was dead-lettered.
pub struct MessageUnreadable<'a> {
    pub bytes: usize,
    pub why: &'a str,
}

impl TelemetryEvent for MessageUnreadable<'_> {
    fn emit(self) {
        tracing::error!(
            target: "audit",
            event = "failed",
            error_class = "unreadable",
            error = %self.why,
            bytes = self.bytes,
            "unreadable queue message; dead-lettered"
        );
        counter!(names::DELIVERY_FAILED, "ErrorClass" => "unreadable").increment(1);
    }
}

/// One Batch API request of `items` records is about to be sent.
pub struct BatchSent {
    pub items: usize,
}

impl TelemetryEvent for BatchSent {
    fn emit(self) {
        histogram!(names::BATCH_SIZE).record(self.items as f64);
    }
}

/// A flush ended.
pub struct FlushFinished<'a> {
    pub report: &'a FlushReport,
}

impl TelemetryEvent for FlushFinished<'_> {
    fn emit(self) {
        let r = self.report;
        tracing::info!(
            messages = r.messages,
            alerts = r.alerts,
            records = r.records,
            batch_calls = r.batch_calls,
            created = r.created,
            retried = r.retried,
            dead_lettered = r.dead_lettered,
            duplicates = r.duplicates,
            left = r.left,
            "flush finished"
        );
    }
}
