//! Named instance profiles: `instant` (the default instance, answering at once) and `realistic` (latency,
//! a concurrency limit and a rate-limit rule modelled on a production instance). API.md gives the source of
//! every number.

use serde::{Deserialize, Serialize};

use super::{ApiKind, Latency, LatencyConfig, RateLimitRule, SimConfig, TransactionLimit};

/// A named simulator profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SimProfile {
    /// The default instance: no latency, no concurrency limit, no rate-limit rule.
    #[default]
    Instant,
    /// The default instance with per-API latency, 16 concurrent REST transactions and a rate-limit rule.
    Realistic,
}

/// Seed of the realistic profile's latency draws.
pub const REALISTIC_SEED: u64 = 0x5EED_0016;

const fn ms(median_ms: f64, p99_ms: f64) -> Option<Latency> {
    Some(Latency { median_ms, p99_ms })
}

impl SimProfile {
    pub fn config(self) -> SimConfig {
        match self {
            SimProfile::Instant => SimConfig::default(),
            SimProfile::Realistic => SimConfig::realistic(),
        }
    }
}

impl SimConfig {
    /// The `realistic` profile: the default instance, with
    /// - latency per API (log-normal, median / p99 ms): Table API write 150 / 1200, read 80 / 600, each
    ///   Batch API item the Table API write latency, attachment 250 / 2000, import set 300 / 2500, event
    ///   100 / 800, OAuth token 120 / 900;
    /// - 16 REST transactions at once with a queue of 50 (the API_INT pool: 4 application nodes × 4
    ///   threads; one node's documented queue);
    /// - one all-users rate-limit rule, 10 000 requests per hour on any REST API.
    pub fn realistic() -> SimConfig {
        SimConfig {
            latency: LatencyConfig {
                seed: REALISTIC_SEED,
                table_read: ms(80.0, 600.0),
                table_write: ms(150.0, 1200.0),
                batch_item: None,
                attachment: ms(250.0, 2000.0),
                import_set: ms(300.0, 2500.0),
                event: ms(100.0, 800.0),
                oauth: ms(120.0, 900.0),
            },
            transactions: Some(TransactionLimit {
                max_concurrent: 16,
                queue_depth: 50,
            }),
            rate_limits: vec![RateLimitRule {
                name: "Realistic: all users, REST API".into(),
                sys_id: None,
                table: None,
                user: None,
                role: None,
                api: ApiKind::Any,
                per_hour: 10_000,
            }],
            ..SimConfig::default()
        }
    }
}
