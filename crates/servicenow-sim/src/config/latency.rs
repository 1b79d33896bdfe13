//! How long the instance takes: a latency distribution per API, applied to every request when set.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// A log-normal latency given by its median and 99th percentile (milliseconds): the shape response times
/// of a loaded web service commonly have (a body near the median, a long right tail).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub median_ms: f64,
    /// At least the median (equal: every request takes the median).
    pub p99_ms: f64,
}

/// z of the 99th percentile of the standard normal distribution.
const Z_P99: f64 = 2.326_347_874;

impl Latency {
    /// μ and σ of the underlying normal distribution: median = e^μ, p99 = e^(μ + 2.326 σ).
    fn mu_sigma(&self) -> (f64, f64) {
        let median = self.median_ms.max(0.001);
        let p99 = self.p99_ms.max(median);
        (median.ln(), (p99.ln() - median.ln()) / Z_P99)
    }

    /// One latency in milliseconds for a standard normal draw `z`.
    pub fn at(&self, z: f64) -> f64 {
        let (mu, sigma) = self.mu_sigma();
        (mu + sigma * z).exp()
    }
}

/// The APIs whose latency is set apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyApi {
    TableRead,
    TableWrite,
    /// One item of a Batch API request (the batch itself takes the sum of its items).
    BatchItem,
    Attachment,
    ImportSet,
    Event,
    OAuth,
}

/// Per-API latency (None: the API answers at once). Default: every API instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LatencyConfig {
    /// Seed of the simulator's latency draws: the same seed and the same order of requests give the same
    /// latencies.
    pub seed: u64,
    /// Table API GET.
    pub table_read: Option<Latency>,
    /// Table API POST, PUT, PATCH, DELETE.
    pub table_write: Option<Latency>,
    /// Each Batch API item, run one after another (None: the `table_write` latency).
    pub batch_item: Option<Latency>,
    pub attachment: Option<Latency>,
    pub import_set: Option<Latency>,
    /// Event Management `jsonv2`.
    pub event: Option<Latency>,
    /// `/oauth_token.do`.
    pub oauth: Option<Latency>,
}

impl LatencyConfig {
    /// Every distribution has a positive median and a p99 at least the median.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let all = [
            ("table_read", &self.table_read),
            ("table_write", &self.table_write),
            ("batch_item", &self.batch_item),
            ("attachment", &self.attachment),
            ("import_set", &self.import_set),
            ("event", &self.event),
            ("oauth", &self.oauth),
        ];
        for (api, dist) in all {
            if let Some(d) = dist
                && !(d.median_ms > 0.0 && d.p99_ms >= d.median_ms)
            {
                return Err(ConfigError::InvalidLatency {
                    api,
                    median_ms: d.median_ms,
                    p99_ms: d.p99_ms,
                });
            }
        }
        Ok(())
    }

    pub fn of(&self, api: LatencyApi) -> Option<&Latency> {
        match api {
            LatencyApi::TableRead => self.table_read.as_ref(),
            LatencyApi::TableWrite => self.table_write.as_ref(),
            LatencyApi::BatchItem => self.batch_item.as_ref().or(self.table_write.as_ref()),
            LatencyApi::Attachment => self.attachment.as_ref(),
            LatencyApi::ImportSet => self.import_set.as_ref(),
            LatencyApi::Event => self.event.as_ref(),
            LatencyApi::OAuth => self.oauth.as_ref(),
        }
    }
}
