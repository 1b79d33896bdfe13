//! The flush's settings: its budgets, drain limits and aggregation window.

use std::time::Duration;

use relay_core::Config;
use relay_core::config::BatchSettings;

/// Flush settings.
#[derive(Debug, Clone)]
pub struct FlushSettings {
    /// Stop draining after this long (the rest waits for the next flush).
    pub drain_budget: Duration,
    /// The whole flush ends within this (see [`Flusher::flush_until`](super::Flusher::flush_until)).
    pub budget: Duration,
    /// No claim, lookup or ServiceNow call starts later than this before the flush's deadline: the time
    /// kept to settle what was sent.
    pub settle_reserve: Duration,
    /// Stop draining after this many messages.
    pub max_messages: usize,
    /// Aggregation window (alerts received in the same window are grouped).
    pub window: Duration,
    pub batch: BatchSettings,
    /// Long-poll wait of each receive while draining.
    pub receive_wait: Duration,
}

impl FlushSettings {
    /// The flush of the routing config: its aggregation window (`batch_window_seconds`) and batch settings,
    /// with the default drain budget.
    pub fn from_config(config: &Config) -> FlushSettings {
        FlushSettings {
            window: Duration::from_secs(config.batch_window_seconds.max(1)),
            batch: config.batch.clone(),
            ..FlushSettings::default()
        }
    }
}

impl Default for FlushSettings {
    fn default() -> Self {
        FlushSettings {
            drain_budget: crate::defaults::FLUSH_DRAIN_BUDGET,
            budget: crate::defaults::FLUSH_BUDGET,
            settle_reserve: crate::defaults::FLUSH_SETTLE_RESERVE,
            max_messages: crate::defaults::FLUSH_MAX_MESSAGES,
            window: relay_core::config::DEFAULT_BATCH_WINDOW,
            batch: BatchSettings::default(),
            receive_wait: Duration::from_secs(1),
        }
    }
}
