//! Audit events (tracing, target `audit`) and CloudWatch Embedded Metric Format lines.
//!
//! Audit events carry ids, routing and outcome — never secrets, never the alert payload. The employee
//! appears only as the identifier that also goes to ServiceNow (pseudonymised when configured).

use std::io::Write;
use std::sync::{Arc, Mutex};

use relay_core::Decision;
use serde_json::{Map, Value, json};

/// Audit: the routing decision made at receipt.
pub fn audit_routed(d: &Decision, duplicate: bool) {
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
        duplicate,
        "alert routed"
    );
}

/// Audit: a record exists for these alerts.
pub fn audit_delivered(
    key: &str,
    alert_ids: &[String],
    table: &str,
    number: &str,
    sys_id: &str,
    attempts: u32,
    found: bool,
) {
    tracing::info!(
        target: "audit",
        event = "delivered",
        alert_id = %key,
        alerts = alert_ids.len(),
        table = %table,
        number = %number,
        sys_id = %sys_id,
        attempts,
        found_existing = found,
        "record in ServiceNow"
    );
}

/// Audit: an attempt failed and another is scheduled.
pub fn audit_retrying(key: &str, table: &str, class: &str, error: &str, attempts: u32, delay_s: u64) {
    tracing::warn!(
        target: "audit",
        event = "retrying",
        alert_id = %key,
        table = %table,
        error_class = %class,
        error = %error,
        attempts,
        delay_s,
        "delivery attempt failed; retry scheduled"
    );
}

/// Audit: delivery given up; the alert is in the dead-letter queue.
pub fn audit_failed(key: &str, table: &str, class: &str, error: &str, attempts: u32) {
    tracing::error!(
        target: "audit",
        event = "failed",
        alert_id = %key,
        table = %table,
        error_class = %class,
        error = %error,
        attempts,
        "delivery failed; alert dead-lettered"
    );
}

/// CloudWatch metric units used here.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

#[derive(Clone)]
enum Sink {
    Stdout,
    Memory(Arc<Mutex<Vec<String>>>),
    Off,
}

/// Writes one EMF JSON line per data point (stdout in Lambda, where CloudWatch extracts the metrics).
#[derive(Clone)]
pub struct Metrics {
    namespace: String,
    service: String,
    sink: Sink,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metrics({}/{})", self.namespace, self.service)
    }
}

impl Metrics {
    /// EMF lines on stdout.
    pub fn emf(namespace: impl Into<String>, service: impl Into<String>) -> Metrics {
        Metrics {
            namespace: namespace.into(),
            service: service.into(),
            sink: Sink::Stdout,
        }
    }

    /// No metrics (local mode without CloudWatch).
    pub fn off() -> Metrics {
        Metrics {
            namespace: String::new(),
            service: String::new(),
            sink: Sink::Off,
        }
    }

    /// Lines kept in memory (tests read them).
    pub fn memory(namespace: &str, service: &str) -> (Metrics, Arc<Mutex<Vec<String>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        (
            Metrics {
                namespace: namespace.into(),
                service: service.into(),
                sink: Sink::Memory(buf.clone()),
            },
            buf,
        )
    }

    /// Record `value` of metric `name` with dimensions (always also `Service`).
    pub fn put(&self, name: &str, value: f64, unit: Unit, dims: &[(&str, &str)]) {
        if matches!(self.sink, Sink::Off) {
            return;
        }
        let line = self.line(name, value, unit, dims);
        match &self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
            Sink::Memory(buf) => buf.lock().expect("metrics buffer").push(line),
            Sink::Off => {}
        }
    }

    pub fn count(&self, name: &str, dims: &[(&str, &str)]) {
        self.put(name, 1.0, Unit::Count, dims);
    }

    fn line(&self, name: &str, value: f64, unit: Unit, dims: &[(&str, &str)]) -> String {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut dim_names = vec![Value::String("Service".into())];
        let mut root = Map::new();
        root.insert("Service".into(), Value::String(self.service.clone()));
        for (k, v) in dims {
            dim_names.push(Value::String((*k).into()));
            root.insert((*k).into(), Value::String((*v).into()));
        }
        root.insert(name.into(), json!(value));
        root.insert(
            "_aws".into(),
            json!({"Timestamp": ts, "CloudWatchMetrics": [{
                "Namespace": self.namespace,
                "Dimensions": [dim_names],
                "Metrics": [{"Name": name, "Unit": unit.as_str()}]
            }]}),
        );
        Value::Object(root).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lines_name_every_dimension_and_metric_at_the_root() {
        let (m, buf) = Metrics::memory("AlertRelay", "deliver");
        m.put(
            "DeliveryLatencyMs",
            42.0,
            Unit::Milliseconds,
            &[("Severity", "critical"), ("RecordType", "incident")],
        );
        let line: Value = serde_json::from_str(&buf.lock().unwrap()[0]).unwrap();
        assert_eq!(line["Service"], "deliver");
        assert_eq!(line["Severity"], "critical");
        assert_eq!(line["RecordType"], "incident");
        assert_eq!(line["DeliveryLatencyMs"], 42.0);
        let cw = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "AlertRelay");
        assert_eq!(cw["Dimensions"][0], json!(["Service", "Severity", "RecordType"]));
        assert_eq!(
            cw["Metrics"][0],
            json!({"Name": "DeliveryLatencyMs", "Unit": "Milliseconds"})
        );
        assert!(line["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
        Metrics::off().count("Nothing", &[]);
    }
}
