//! Timing faults: a transaction that keeps running after the client has given up.
//!
//! ServiceNow does not cancel a REST transaction when its client disconnects: the transaction runs until it
//! finishes or its quota rule (REST, 60 s by default) cancels it, and an insert it made is committed even
//! though nobody reads the answer. `late_commit` models that: the request is handled — and its writes
//! committed — `ms` after it arrived, in a task of its own that outlives the connection.

use std::time::Duration;

use tokio::sync::oneshot;

/// Run `handle` (the request's whole handling, commit included) `delay` after now, whether or not the
/// caller still waits. Returns its result if the caller is still there to take it; `None` when the
/// handling task itself was lost (the simulator shutting down).
pub(crate) async fn commit_later<T, F>(delay: Duration, handle: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        // the send fails when the client has gone: the transaction committed all the same
        let _ = tx.send(handle());
    });
    rx.await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn the_work_runs_even_when_the_caller_gives_up() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let waited = tokio::time::timeout(
            Duration::from_millis(20),
            commit_later(Duration::from_millis(100), move || flag.store(true, Ordering::SeqCst)),
        )
        .await;
        assert!(waited.is_err(), "the caller gave up before the commit");
        assert!(!done.load(Ordering::SeqCst), "not committed yet");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(done.load(Ordering::SeqCst), "committed after the caller had gone");
    }

    #[tokio::test]
    async fn a_caller_that_waits_gets_the_result() {
        assert_eq!(commit_later(Duration::from_millis(10), || 7).await, Some(7));
    }
}
