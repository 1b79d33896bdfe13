//! The instance's transaction pool at run time: the API_INT semaphore (threads and request queue) and
//! the latency draws.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{LatencyApi, LatencyConfig, TransactionLimit};

/// The thread a transaction holds while it runs (released when dropped); `None` when there is no limit.
pub type Slot = Option<OwnedSemaphorePermit>;

/// Every thread busy and the queue full: the request is rejected.
#[derive(Debug)]
pub struct Rejected;

pub struct Transactions {
    pool: Option<Pool>,
    latency: LatencyConfig,
    rng: Mutex<StdRng>,
}

struct Pool {
    threads: Arc<Semaphore>,
    queue_depth: usize,
    queued: AtomicUsize,
}

impl Transactions {
    pub fn new(limit: Option<TransactionLimit>, latency: LatencyConfig) -> Transactions {
        Transactions {
            pool: limit.map(|l| Pool {
                threads: Arc::new(Semaphore::new(l.max_concurrent)),
                queue_depth: l.queue_depth,
                queued: AtomicUsize::new(0),
            }),
            rng: Mutex::new(StdRng::seed_from_u64(latency.seed)),
            latency,
        }
    }

    /// Take a thread: at once when one is free, after waiting in the queue when the queue has room;
    /// otherwise the request is rejected.
    pub async fn admit(&self) -> Result<Slot, Rejected> {
        let Some(pool) = &self.pool else {
            return Ok(None);
        };
        if let Ok(permit) = pool.threads.clone().try_acquire_owned() {
            return Ok(Some(permit));
        }
        let queued = pool.queued.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < pool.queue_depth).then_some(n + 1)
        });
        if queued.is_err() {
            return Err(Rejected);
        }
        let permit = pool.threads.clone().acquire_owned().await;
        pool.queued.fetch_sub(1, Ordering::SeqCst);
        permit.map(Some).map_err(|_| Rejected)
    }

    /// One latency draw for `api` (zero when the API has no latency set).
    pub fn latency(&self, api: LatencyApi) -> Duration {
        let Some(dist) = self.latency.of(api) else {
            return Duration::ZERO;
        };
        let z = {
            let mut rng = self.rng.lock().expect("latency rng lock");
            // Box–Muller: u1 in (0, 1] keeps the logarithm finite.
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        };
        Duration::from_secs_f64(dist.at(z) / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Latency;

    fn writes(median_ms: f64, p99_ms: f64, seed: u64) -> Transactions {
        let latency = LatencyConfig {
            seed,
            table_write: Some(Latency { median_ms, p99_ms }),
            ..LatencyConfig::default()
        };
        Transactions::new(None, latency)
    }

    #[test]
    fn draws_follow_the_median_and_the_tail() {
        let t = writes(150.0, 1200.0, 7);
        let mut ms: Vec<f64> = (0..20_000)
            .map(|_| t.latency(LatencyApi::TableWrite).as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        let (median, p99) = (ms[ms.len() / 2], ms[ms.len() * 99 / 100]);
        assert!((140.0..160.0).contains(&median), "median {median}");
        assert!((1000.0..1450.0).contains(&p99), "p99 {p99}");
        assert_eq!(t.latency(LatencyApi::TableRead), Duration::ZERO, "no read latency set");
        assert!(
            !t.latency(LatencyApi::BatchItem).is_zero(),
            "batch items take the write latency"
        );
    }

    #[test]
    fn the_same_seed_draws_the_same_latencies() {
        let draws = |seed| {
            let t = writes(100.0, 500.0, seed);
            (0..5).map(|_| t.latency(LatencyApi::TableWrite)).collect::<Vec<_>>()
        };
        assert_eq!(draws(1), draws(1));
        assert_ne!(draws(1), draws(2));
    }

    #[tokio::test]
    async fn over_the_threads_and_the_queue_is_rejected() {
        let limit = TransactionLimit {
            max_concurrent: 2,
            queue_depth: 1,
        };
        let t = Arc::new(Transactions::new(Some(limit), LatencyConfig::default()));
        let a = t.admit().await.unwrap();
        let _b = t.admit().await.unwrap();
        let waiting = tokio::spawn({
            let t = t.clone();
            async move { t.admit().await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        while t.pool.as_ref().unwrap().queued.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(t.admit().await.is_err(), "threads busy, queue full");
        drop(a);
        assert!(
            waiting.await.unwrap().is_ok(),
            "the queued request ran once a thread was free"
        );
    }
}
