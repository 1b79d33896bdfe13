//! ServiceNow REST client for the alert relay.
//!
//! One [`ServiceNowClient`] per process (clone it freely: clones share one connection pool and one OAuth
//! token). Every call ends in a classified [`Outcome`]: `created`, `retryable`, `ambiguous` (sent, but no
//! usable answer: look the record up before trying again), `auth` or `permanent`.

mod auth;
mod client;
mod config;
mod credentials;
mod outcome;

pub use client::{BatchItem, Expect, JournalEntry, LOOKUP_ROWS, MAX_READ_IDS, RecordKey, ServiceNowClient};
pub use config::{
    ClientConfig, MAX_CORRELATION_ID_LEN, check_sys_id, check_table, correlation_query, is_loopback,
    validate_instance_url,
};
pub use credentials::{CredentialSource, Credentials, ExposeSecret, SecretString, StaticCredentials};
pub use outcome::{CreatedRecord, Outcome};

/// Why a client could not be built, or credentials could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The instance URL breaks a rule (https, no user info, no path/query/fragment).
    #[error("invalid instance URL: {0}")]
    InvalidInstanceUrl(String),
    /// A configuration value is unusable (user agent, timeouts).
    #[error("invalid client configuration: {0}")]
    InvalidConfig(String),
    /// The credential source failed for now (e.g. Secrets Manager unreachable): retryable.
    #[error("credentials unavailable: {0}")]
    CredentialsUnavailable(String),
    /// The credential source holds something unusable (missing field, unknown auth kind).
    #[error("invalid credentials: {0}")]
    InvalidCredentials(String),
}
