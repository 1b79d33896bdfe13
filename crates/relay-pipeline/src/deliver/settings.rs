//! The settings deliver and flush share, and the jitter source their delays use.

use std::sync::Arc;
use std::time::Duration;

use relay_core::BackoffPolicy;

use crate::concurrency::ConcurrencyMode;

/// Settings shared by deliver and flush.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub backoff: BackoffPolicy,
    /// How long a claim holds an alert before another deliverer may take it over. Longer than a whole
    /// attempt (see `defaults::lease_for_attempts` / `lease_for_function`); renewed while a call is in
    /// flight.
    pub lease: Duration,
    pub ledger_retention: Duration,
    /// After an ambiguous create, how long no new create is sent (`defaults::SETTLE_AFTER_AMBIGUOUS`).
    pub settle: Duration,
    /// The realtime queue's receive limit (its redrive `maxReceiveCount`;
    /// `defaults::max_receive_count(&backoff)`). The deliverer gives an alert up itself, with a notice,
    /// `defaults::RECEIVE_LIMIT_RESERVE` receives before it.
    pub max_receives: u32,
    /// How many ServiceNow calls the process has in flight ([`crate::concurrency`]).
    pub concurrency: ConcurrencyMode,
    /// Whether a 429 with Retry-After (or a run of 503s) stops every caller ([`crate::breaker`]). Off only
    /// to measure what it saves (`relay load --naive`).
    pub breaker: bool,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings::for_policy(BackoffPolicy::default())
    }
}

impl DeliverySettings {
    /// The default settings with `backoff` (and the receive limit derived from it).
    pub fn for_policy(backoff: BackoffPolicy) -> Self {
        DeliverySettings {
            backoff,
            lease: crate::defaults::lease_for_attempts(crate::defaults::SERVICENOW_TIMEOUT),
            ledger_retention: crate::defaults::LEDGER_RETENTION,
            settle: crate::defaults::SETTLE_AFTER_AMBIGUOUS,
            max_receives: crate::defaults::max_receive_count(&backoff),
            concurrency: ConcurrencyMode::default(),
            breaker: true,
        }
    }

    /// The receive count from which the deliverer gives an alert up itself (class `receive_limit`).
    pub fn give_up_at_receive(&self) -> u32 {
        self.max_receives
            .saturating_sub(crate::defaults::RECEIVE_LIMIT_RESERVE)
            .max(1)
    }
}

/// A jitter source in `[0, 1)`.
pub type Jitter = Arc<dyn Fn() -> f64 + Send + Sync>;

/// Uniform jitter from the thread RNG.
pub fn random_jitter() -> Jitter {
    Arc::new(rand::random::<f64>)
}
