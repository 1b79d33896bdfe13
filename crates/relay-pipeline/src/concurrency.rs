//! How many ServiceNow calls one process has in flight: an adaptive limit (AIMD, in the spirit of Vector's
//! adaptive request concurrency), shared by every deliverer of a process and by its flush (it lives in
//! [`crate::Delivery`], beside the circuit breaker).
//!
//! An instance runs a limited number of REST transactions at once (the API_INT semaphore: over it requests
//! queue, then get 429), and the relay is not its only client. A fixed number of calls in flight is either
//! too few for a quiet instance or too many for a busy one, and every call over the instance's limit only
//! waits in its queue or earns a 429. So the limit is learned:
//! - **additive increase**: after a window of answers (at least the current limit, at least
//!   [`MIN_WINDOW`]) in which the limit was reached and latency held, the limit grows by one;
//! - **multiplicative decrease**: a 429 or 503 (or any answer with a `Retry-After`) halves it at once, at
//!   most once per window (the calls already in flight answer the same); a window whose mean latency rose
//!   above [`LATENCY_RISE`] × the baseline (and by more than [`LATENCY_SLACK`]) shrinks it by
//!   [`LATENCY_DECREASE`]: the instance is queueing the calls.
//!
//! The baseline is the window mean, falling at once and rising slowly (so a queue that builds up over a few
//! windows still shows). Calls wait for a slot by lane: critical alerts first, then the other realtime
//! alerts, then the batch flush; a critical call may use one slot above the limit, so a limit filled by
//! high alerts never holds a critical one. A 429's `Retry-After` is the breaker's business
//! ([`crate::breaker`]): while it is open nobody asks for a slot.
//!
//! On Lambda the limit is per execution environment: what reaches the instance is at most the event source
//! mappings' MaximumConcurrency × the per-process limit (docs/deploy.md, "Concurrency toward ServiceNow").

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use servicenow_client::Outcome;
use tokio::sync::Notify;

/// Fewest answers that close a window.
pub const MIN_WINDOW: u32 = 8;
/// A window's mean latency over this multiple of the baseline is a rise …
pub const LATENCY_RISE: f64 = 2.0;
/// … when it is also this much above it (loopback and fast instances jitter by milliseconds).
pub const LATENCY_SLACK: Duration = Duration::from_millis(50);
/// What a latency rise multiplies the limit by.
pub const LATENCY_DECREASE: f64 = 0.9;
/// What a 429/503 multiplies the limit by.
pub const BACKPRESSURE_DECREASE: f64 = 0.5;

/// How the limit is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConcurrencyMode {
    /// Learned between 1 and `max`, starting at `initial`.
    Adaptive { initial: usize, max: usize },
    /// Always this many (no learning, no lanes' reserve: what a plain worker pool does).
    Fixed(usize),
}

impl ConcurrencyMode {
    /// The most calls it lets run at once (a critical call may use one more, see [`Lane`]).
    pub fn max(self) -> usize {
        match self {
            ConcurrencyMode::Adaptive { max, .. } | ConcurrencyMode::Fixed(max) => max.max(1),
        }
    }
}

/// Where an adaptive limit starts.
pub const ADAPTIVE_START: usize = 4;

impl ConcurrencyMode {
    /// Adaptive from [`ADAPTIVE_START`] (or `max`, when lower) up to `max`.
    pub fn adaptive_up_to(max: usize) -> ConcurrencyMode {
        ConcurrencyMode::Adaptive {
            initial: ADAPTIVE_START.min(max),
            max,
        }
    }
}

impl Default for ConcurrencyMode {
    /// Adaptive up to 16: ServiceNow's documented default of concurrent integration transactions per node
    /// is of that order, and the relay shares the instance with other integrations.
    fn default() -> Self {
        ConcurrencyMode::adaptive_up_to(16)
    }
}

/// Which work a call is for; a slot goes to the first lane with someone waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Critical = 0,
    Realtime = 1,
    Batch = 2,
}

#[derive(Debug, Default)]
struct Window {
    /// Answers that close it: the limit when it opened, at least [`MIN_WINDOW`].
    size: u32,
    answers: u32,
    sum_ms: f64,
    /// The most calls in flight at once during the window.
    peak_in_flight: usize,
    /// A 429/503 already shrank the limit in this window.
    backed_off: bool,
}

impl Window {
    fn opened(limit: f64, in_flight: usize) -> Window {
        Window {
            size: (limit.ceil() as u32).max(MIN_WINDOW),
            peak_in_flight: in_flight,
            ..Window::default()
        }
    }
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    waiting: [usize; 3],
    window: Window,
    baseline_ms: Option<f64>,
    /// Answers that were 429/503 since start (for reports).
    backpressure: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    mode: ConcurrencyMode,
    state: Mutex<State>,
    freed: Notify,
}

impl ConcurrencyLimit {
    pub fn new(mode: ConcurrencyMode) -> ConcurrencyLimit {
        let limit = match mode {
            ConcurrencyMode::Adaptive { initial, max } => initial.clamp(1, max.max(1)),
            ConcurrencyMode::Fixed(n) => n.max(1),
        };
        ConcurrencyLimit {
            mode,
            state: Mutex::new(State {
                limit: limit as f64,
                in_flight: 0,
                waiting: [0; 3],
                window: Window::opened(limit as f64, 0),
                baseline_ms: None,
                backpressure: 0,
            }),
            freed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // every update leaves the state consistent, whatever a panicking holder did
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current limit (whole calls).
    pub fn limit(&self) -> usize {
        (self.state().limit as usize).max(1)
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.state().in_flight
    }

    /// Answers that were 429 or 503 since this limit was made.
    pub fn backpressure_seen(&self) -> u64 {
        self.state().backpressure
    }

    fn may_start(&self, s: &State, lane: Lane) -> bool {
        let limit = (s.limit as usize).max(1);
        let ahead: usize = s.waiting[..lane as usize].iter().sum();
        match (self.mode, lane) {
            (ConcurrencyMode::Fixed(_), _) => s.in_flight < limit,
            // the critical lane's reserve: one call above the limit
            (_, Lane::Critical) => s.in_flight < limit + 1,
            _ => ahead == 0 && s.in_flight < limit,
        }
    }

    /// Wait for a slot for a call of `lane`. The slot is freed when the permit is dropped; report the
    /// call's answer with [`Permit::answered`] so the limit can learn from it.
    pub async fn acquire(self: &Arc<Self>, lane: Lane) -> Permit {
        // counted as waiting until it starts (or the caller gives up: the guard's drop uncounts it)
        let mut waiting = Waiting {
            limit: self,
            lane,
            counted: false,
        };
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut s = self.state();
                if !waiting.counted {
                    s.waiting[lane as usize] += 1;
                    waiting.counted = true;
                }
                if self.may_start(&s, lane) {
                    s.waiting[lane as usize] -= 1;
                    waiting.counted = false;
                    s.in_flight += 1;
                    s.window.peak_in_flight = s.window.peak_in_flight.max(s.in_flight);
                    return Permit {
                        limit: Arc::clone(self),
                        started: Instant::now(),
                    };
                }
            }
            freed.await;
        }
    }

    fn release(&self) {
        self.state().in_flight -= 1;
        self.freed.notify_waiters();
    }

    /// Learn from one answer that took `elapsed` (`None`: from its 429/503 only).
    fn learn(&self, outcome: &Outcome, elapsed: Option<Duration>) {
        let ConcurrencyMode::Adaptive { max, .. } = self.mode else {
            return;
        };
        let max = max.max(1) as f64;
        let mut s = self.state();
        let before = s.limit;
        if outcome.is_backpressure() {
            s.backpressure += 1;
            if !s.window.backed_off {
                s.limit = (s.limit * BACKPRESSURE_DECREASE).max(1.0);
                s.window.backed_off = true;
            }
        }
        if let Some(elapsed) = elapsed {
            s.sample(elapsed, max);
        }
        let after = s.limit;
        drop(s);
        if after as usize != before as usize {
            metrics::gauge!(crate::telemetry::names::SERVICENOW_CONCURRENCY).set(after.floor());
            tracing::debug!(limit = after as usize, "ServiceNow concurrency limit changed");
            if after > before {
                self.freed.notify_waiters();
            }
        }
    }
}

impl State {
    /// One answer's latency into the window; a full window grows, shrinks or keeps the limit.
    fn sample(&mut self, elapsed: Duration, max: f64) {
        let s = self;
        s.window.answers += 1;
        s.window.sum_ms += elapsed.as_secs_f64() * 1000.0;
        if s.window.answers >= s.window.size {
            let mean = s.window.sum_ms / f64::from(s.window.answers);
            let whole = (s.limit as usize).max(1);
            if !s.window.backed_off {
                let rose = s
                    .baseline_ms
                    .is_some_and(|b| mean > b * LATENCY_RISE && mean > b + LATENCY_SLACK.as_secs_f64() * 1000.0);
                if rose {
                    s.limit = (s.limit * LATENCY_DECREASE).max(1.0);
                } else if s.window.peak_in_flight >= whole {
                    s.limit = (s.limit + 1.0).min(max);
                }
                s.baseline_ms = Some(match s.baseline_ms {
                    Some(b) if mean >= b => b * 0.9 + mean * 0.1,
                    _ => mean,
                });
            }
            s.window = Window::opened(s.limit, s.in_flight);
        }
    }
}

/// A waiter's place in its lane's count, given back if the wait is abandoned.
struct Waiting<'a> {
    limit: &'a ConcurrencyLimit,
    lane: Lane,
    counted: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.limit.state().waiting[self.lane as usize] -= 1;
            // a lower lane may have been waiting behind this one
            self.limit.freed.notify_waiters();
        }
    }
}

/// One call's slot; freed on drop.
#[derive(Debug)]
pub struct Permit {
    limit: Arc<ConcurrencyLimit>,
    started: Instant,
}

impl Permit {
    /// Report what the call answered (the limit learns from it), and free the slot.
    pub fn answered(self, outcome: &Outcome) {
        self.limit.learn(outcome, Some(self.started.elapsed()));
    }

    /// Report what a Batch API call answered as a whole: a 429/503 counts, its duration does not (the
    /// instance runs a batch's items one after another, so its latency says nothing about queueing).
    pub fn answered_batch(self, outcome: &Outcome) {
        self.limit.learn(outcome, None);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limit.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::breaker::tests::created;

    fn limited() -> Outcome {
        Outcome::Retryable {
            retry_after: None,
            reason: "HTTP 429 Too Many Requests".into(),
        }
    }

    /// Hold `n` permits at once, then answer each with `outcome` after `latency`.
    fn round(limit: &Arc<ConcurrencyLimit>, n: usize, outcome: &Outcome, latency: Duration) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let permits: Vec<Permit> = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..n {
                v.push(limit.acquire(Lane::Realtime).await);
            }
            v
        });
        for p in permits {
            limit.learn(outcome, Some(latency));
            drop(p);
        }
    }

    #[test]
    fn the_limit_grows_by_one_per_full_window_while_latency_holds() {
        let l = Arc::new(ConcurrencyLimit::new(ConcurrencyMode::Adaptive { initial: 4, max: 6 }));
        round(&l, 4, &created(), Duration::from_millis(100));
        round(&l, 4, &created(), Duration::from_millis(100));
        assert_eq!(l.limit(), 5, "a window of 8 answers with the limit reached adds one");
        for _ in 0..10 {
            round(&l, l.limit(), &created(), Duration::from_millis(100));
        }
        assert_eq!(l.limit(), 6, "never above max");
    }

    #[test]
    fn a_limit_that_is_not_reached_does_not_grow() {
        let l = Arc::new(ConcurrencyLimit::new(ConcurrencyMode::Adaptive { initial: 4, max: 16 }));
        for _ in 0..10 {
            round(&l, 2, &created(), Duration::from_millis(100));
        }
        assert_eq!(l.limit(), 4);
    }

    #[test]
    fn a_429_halves_it_once_per_window() {
        let l = Arc::new(ConcurrencyLimit::new(ConcurrencyMode::Adaptive {
            initial: 16,
            max: 16,
        }));
        round(&l, 16, &limited(), Duration::from_millis(5));
        assert_eq!(l.limit(), 8, "16 answers of 429 from one window halve it once");
        assert_eq!(l.backpressure_seen(), 16);
        round(&l, 8, &limited(), Duration::from_millis(5));
        assert_eq!(l.limit(), 4, "the next window halves it again");
    }

    #[test]
    fn rising_latency_shrinks_it() {
        let l = Arc::new(ConcurrencyLimit::new(ConcurrencyMode::Adaptive {
            initial: 10,
            max: 10,
        }));
        round(&l, 10, &created(), Duration::from_millis(150));
        assert_eq!(l.limit(), 10);
        round(&l, 10, &created(), Duration::from_millis(400));
        assert_eq!(l.limit(), 9, "mean 400 ms against a 150 ms baseline: × 0.9");
        // a few ms of jitter on a fast instance is not a rise
        let fast = Arc::new(ConcurrencyLimit::new(ConcurrencyMode::Adaptive { initial: 8, max: 8 }));
        round(&fast, 8, &created(), Duration::from_millis(2));
        round(&fast, 8, &created(), Duration::from_millis(20));
        assert_eq!(fast.limit(), 8);
    }

    #[test]
    fn a_fixed_limit_never_moves() {
        let l = Arc::new(ConcurrencyLimit::new(ConcurrencyMode::Fixed(8)));
        round(&l, 8, &limited(), Duration::from_millis(5));
        round(&l, 8, &created(), Duration::from_millis(5));
        assert_eq!(l.limit(), 8);
    }

    #[tokio::test]
    async fn slots_go_to_critical_then_realtime_then_batch_and_critical_has_one_in_reserve() {
        let l = Arc::new(ConcurrencyLimit::new(ConcurrencyMode::Adaptive { initial: 1, max: 1 }));
        let held = l.acquire(Lane::Realtime).await;
        // the critical lane's reserve: a call above the limit
        let critical = tokio::time::timeout(Duration::from_secs(1), l.acquire(Lane::Critical))
            .await
            .expect("a critical call starts above a full limit");
        assert_eq!(l.in_flight(), 2);
        let order = Arc::new(Mutex::new(Vec::new()));
        let spawn = |lane: Lane| {
            let (l, order) = (Arc::clone(&l), Arc::clone(&order));
            tokio::spawn(async move {
                let p = l.acquire(lane).await;
                order.lock().unwrap().push(lane);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(p);
            })
        };
        let batch = spawn(Lane::Batch);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let realtime = spawn(Lane::Realtime);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let late_critical = spawn(Lane::Critical);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(order.lock().unwrap().is_empty(), "the limit and the reserve are full");
        drop(critical);
        drop(held);
        for t in [batch, realtime, late_critical] {
            t.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec![Lane::Critical, Lane::Realtime, Lane::Batch],
            "the batch call waited longest and still went last"
        );
        assert_eq!(l.in_flight(), 0);
    }

    #[tokio::test]
    async fn an_abandoned_wait_does_not_block_the_lanes_behind_it() {
        let l = Arc::new(ConcurrencyLimit::new(ConcurrencyMode::Adaptive { initial: 1, max: 1 }));
        let held = l.acquire(Lane::Batch).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(20), l.acquire(Lane::Realtime))
                .await
                .is_err()
        );
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), l.acquire(Lane::Batch))
            .await
            .expect("no realtime caller is waiting any more");
    }
}
