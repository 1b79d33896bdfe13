//! [`LogNotifier`]: delivery-failure notices as a `tracing` warning (target `audit`) and a row in the
//! `notifications` table, where `relay status` and tests read them back.

use std::sync::Arc;

use async_trait::async_trait;
use relay_ports::{FailureNotice, Notifier, PortError};
use rusqlite::params;

use crate::{LocalError, StoreInner};

/// A stored failure notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNotification {
    /// Increasing with every notice written to this file.
    pub id: i64,
    pub created_at_ms: i64,
    pub notice: FailureNotice,
}

/// The local [`Notifier`]. Cheap to clone.
#[derive(Clone)]
pub struct LogNotifier {
    store: Arc<StoreInner>,
}

impl std::fmt::Debug for LogNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogNotifier").field("path", &self.store.path).finish()
    }
}

impl LogNotifier {
    pub(crate) fn new(store: Arc<StoreInner>) -> Self {
        LogNotifier { store }
    }
}

#[async_trait]
impl Notifier for LogNotifier {
    async fn delivery_failed(&self, notice: &FailureNotice) -> Result<(), PortError> {
        let json = serde_json::to_string(notice)
            .map_err(|e| PortError::Rejected(format!("failure notice cannot be serialised: {e}")))?;
        let alert_id = notice.alert_id.clone();
        let now = self.store.now_ms();
        self.store
            .writer
            .run(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO notifications (alert_id, created_at_ms, notice_json) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![alert_id, now, json])?;
                Ok(())
            })
            .await?;
        tracing::warn!(
            target: "audit",
            event = "delivery_failed",
            alert_id = %notice.alert_id,
            severity = %notice.severity,
            record_type = %notice.record_type,
            table = %notice.table,
            rule = %notice.rule,
            correlation_id = %notice.correlation_id,
            error_class = %notice.error_class,
            error = %notice.error,
            attempts = notice.attempts,
            first_received_at_ms = notice.first_received_at_ms,
            "alert could not be delivered"
        );
        Ok(())
    }
}

fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, i64, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

fn decode(rows: Vec<(i64, i64, String)>) -> Result<Vec<StoredNotification>, LocalError> {
    rows.into_iter()
        .map(|(id, created_at_ms, json)| {
            let notice = serde_json::from_str(&json)
                .map_err(|e| LocalError::Corrupt(format!("notification {id} cannot be read: {e}")))?;
            Ok(StoredNotification {
                id,
                created_at_ms,
                notice,
            })
        })
        .collect()
}

pub(crate) async fn recent(store: &Arc<StoreInner>, limit: u32) -> Result<Vec<StoredNotification>, LocalError> {
    let rows = store
        .readers
        .run(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, created_at_ms, notice_json FROM notifications ORDER BY id DESC LIMIT ?1")?;
            Ok(stmt.query_map(params![limit], read)?.collect::<Result<Vec<_>, _>>()?)
        })
        .await?;
    decode(rows)
}

pub(crate) async fn for_alert(store: &Arc<StoreInner>, alert_id: &str) -> Result<Vec<StoredNotification>, LocalError> {
    let id = alert_id.to_string();
    let rows = store
        .readers
        .run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, created_at_ms, notice_json FROM notifications WHERE alert_id = ?1 ORDER BY id",
            )?;
            Ok(stmt.query_map(params![id], read)?.collect::<Result<Vec<_>, _>>()?)
        })
        .await?;
    decode(rows)
}
