//! What one flush did: the counts it reports.

use serde::Serialize;

/// What one flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FlushReport {
    pub messages: usize,
    pub alerts: usize,
    pub duplicates: usize,
    pub records: usize,
    pub batch_calls: usize,
    pub created: usize,
    pub retried: usize,
    pub dead_lettered: usize,
    /// Messages left on the batch queue (claimed elsewhere, or the ledger was unavailable).
    pub left: usize,
    /// Alerts left for the next flush because this one reached its deadline before sending them.
    pub deferred: usize,
    /// Batch messages of members of an aggregate sealed by an earlier flush: settled from the aggregate's
    /// ledger entry, or the aggregate sent on to the realtime queue.
    pub resumed: usize,
    /// Records whose alerts' thread has a record: handed to the realtime path, to be noted on it.
    pub threaded: usize,
}

impl FlushReport {
    pub(super) fn add(&mut self, o: &FlushReport) {
        self.created += o.created;
        self.retried += o.retried;
        self.dead_lettered += o.dead_lettered;
        self.left += o.left;
        self.deferred += o.deferred;
        self.resumed += o.resumed;
        self.threaded += o.threaded;
    }
}
