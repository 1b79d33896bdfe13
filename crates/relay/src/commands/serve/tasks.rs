//! The background work of `relay serve`: delivery workers, the batch flush timer, ledger housekeeping —
//! tracked together so a shutdown lets each finish what it started.

use std::sync::Arc;
use std::time::Duration;

use relay_pipeline::sync::Syncer;
use relay_pipeline::{Deliverer, Flusher};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::build::Local;

pub struct Tasks {
    /// Cancelled on SIGINT/SIGTERM: workers stop taking new messages, timers stop.
    pub token: CancellationToken,
    tracker: TaskTracker,
    /// How long a shutdown waits for the work in progress.
    grace: Duration,
}

pub fn start(local: &Local) -> Tasks {
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    // `workers` deliverers of the whole realtime queue (critical messages first), plus one reserved for the
    // critical lane: with every other worker busy on a backlog of high alerts (each round can last a
    // ServiceNow timeout), a critical alert is still picked up at once
    let deliverer = Deliverer::new(local.delivery.clone());
    let critical = Deliverer::critical(local.delivery.clone());
    let reserved = (!local.naive).then_some(critical);
    let lanes = reserved
        .into_iter()
        .chain(std::iter::repeat_n(deliverer, local.workers));
    for d in lanes {
        let token = token.clone();
        tracker.spawn(async move {
            // checked between polls: a delivery that has started runs to its end
            while !token.is_cancelled() {
                if let Err(e) = d.poll_once(10, Duration::from_millis(500)).await {
                    tracing::warn!(error = %e, "realtime queue unavailable; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
    }
    tracker.spawn(flush_timer(local.flusher.clone(), local.window, token.clone()));
    if let Some((syncer, every)) = &local.sync {
        tracker.spawn(sync_timer(syncer.clone(), *every, token.clone()));
    }
    let (store, t) = (local.store.clone(), token.clone());
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = t.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = store.ledger().purge_expired().await {
                        tracing::warn!(error = %e, "could not purge expired ledger entries");
                    }
                }
            }
        }
    });
    Tasks {
        token,
        tracker,
        // a flush ends within its budget: a shutdown waits for it (and for deliveries within their lease)
        grace: local.lease.max(local.flusher.settings.budget) + Duration::from_secs(5),
    }
}

/// The least time one local sync is given.
const SYNC_BUDGET: Duration = Duration::from_secs(30);

/// Run `job` every `every` until `token` is cancelled. A run is never interrupted by a shutdown (it ends
/// first), and a panic inside one is logged (`what` names it) and does not stop the timer.
async fn every<F, Fut>(every: Duration, token: CancellationToken, what: &'static str, job: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = tokio::spawn(job()).await {
            tracing::error!(error = %e, "the {what} failed; the next one runs on schedule");
        }
    }
}

/// Flush every `window`.
async fn flush_timer(flusher: Arc<Flusher>, window: Duration, token: CancellationToken) {
    every(window, token, "batch flush", move || {
        let f = flusher.clone();
        async move {
            let report = f.flush().await;
            if report.messages > 0 {
                tracing::info!(?report, "batch flush");
            }
        }
    })
    .await;
}

/// Sync every `interval`, each sync given the interval or half a minute, whichever is longer (it must fit
/// a read or more; what it has not read, the next one reads; a longer one delays the next).
async fn sync_timer(syncer: Arc<Syncer>, interval: Duration, token: CancellationToken) {
    let budget = interval.max(SYNC_BUDGET);
    every(interval, token, "sync", move || {
        let s = syncer.clone();
        async move {
            let deadline = s.delivery.ports.clock.now_ms() + budget.as_millis() as i64;
            s.sync_until(deadline).await;
        }
    })
    .await;
}

impl Tasks {
    /// Stop taking work and wait (up to the grace period) for what is in progress.
    pub async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.grace, self.tracker.wait()).await.is_err() {
            tracing::warn!(
                grace_s = self.grace.as_secs(),
                "work still in progress at shutdown; it resumes after the lease on the next start"
            );
        }
    }
}

/// Resolves on SIGINT or SIGTERM (or when `token` is cancelled), and cancels `token`.
pub async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
        _ = token.cancelled() => {},
    }
    token.cancel();
}
