//! The pure core of the relay: the alert model and its validation, routing rules, mapping to ServiceNow
//! fields, the backoff policy and the batch planner.
//!
//! No I/O (but for reading a config file in `Config::load`), no AWS or HTTP types, no clock reads: time and
//! randomness are passed in.

pub mod alert;
pub mod backoff;
pub mod batch;
pub mod condition;
pub mod config;
pub mod fields;
pub mod profile;
pub mod route;

pub use alert::{Alert, AlertType, InvalidAlert, Problem, Severity};
pub use backoff::{BackoffPolicy, NextAttempt};
pub use batch::{BatchPlan, Pending, PlannedRecord};
pub use config::{Config, ConfigError, ConfigLoadError, DeliveryMode, LoadedConfig, RecordType};
pub use profile::{Dedupe, DedupeMatch, Lifecycle, PriorityMethod, Profile, Transition};
pub use route::{
    AlertSummary, DOCUMENT_FILE, Decision, DocumentFile, EscalationStep, PersonLookup, PseudonymKey, Router,
    RouterError, THREAD_PREFIX, ThreadPlan, ThreadStats, TrendChart, ValidTo, correlation_id, is_query_safe,
};
