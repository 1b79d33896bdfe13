//! What an instance allows per request: the APIs, rate-limit rules and Batch API quotas.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKind {
    Any,
    Table,
    Batch,
    Import,
    Event,
    Attachment,
}

impl ApiKind {
    pub fn label(self) -> &'static str {
        match self {
            ApiKind::Any => "REST API",
            ApiKind::Table => "Table API",
            ApiKind::Batch => "Batch API",
            ApiKind::Import => "Import Set API",
            ApiKind::Event => "Event Management API",
            ApiKind::Attachment => "Attachment API",
        }
    }
}

/// `sys_rate_limit_rules`: N requests per hour per user, for users matching `user` and/or `role`
/// (both None: all users), on one API (or any).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    pub name: String,
    /// The rule's sys_id, sent in `X-RateLimit-Rule` (None: one is generated at start).
    #[serde(default)]
    pub sys_id: Option<String>,
    /// Only requests to this table (REST resource); None: every resource of the API.
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default = "default_api")]
    pub api: ApiKind,
    pub per_hour: u32,
}

fn default_api() -> ApiKind {
    ApiKind::Any
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Items after this many serviced items go to `unserviced_requests` (None: no limit).
    pub max_serviced_items: Option<usize>,
    /// The whole batch's time quota in milliseconds (30 s on a real instance).
    pub time_quota_ms: u64,
    /// Simulated execution time of each item, added to the batch's clock (deterministic quota tests).
    pub item_execution_ms: u64,
    /// Per-item input limit in bytes (5 MB).
    pub max_item_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_serviced_items: None,
            time_quota_ms: 30_000,
            item_execution_ms: 0,
            max_item_bytes: 5 * 1024 * 1024,
        }
    }
}

/// The instance's pool of threads for inbound REST transactions (the API_INT semaphore pool) and its
/// request queue: a request that finds every thread busy waits in the queue; one that finds the queue full
/// too is rejected with 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionLimit {
    /// Transactions executing at once (instance-wide).
    pub max_concurrent: usize,
    /// Transactions that may wait for a thread (0: rejected at once when every thread is busy).
    #[serde(default)]
    pub queue_depth: usize,
}
