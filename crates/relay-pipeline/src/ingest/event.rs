//! Accepting a lifecycle event (docs/record-lifecycle.md#lifecycle-events): the alert it is about must be
//! known (a short, bounded wait covers an event sent right behind its alert), its table must keep a journal;
//! then the event is written to the ledger and queued like an alert, and a re-sent webhook is a duplicate.

use std::time::{Duration, Instant};

use percent_encoding::utf8_percent_encode;
use relay_core::RecordType;
use relay_core::alert::LifecycleEvent;
use relay_ports::{DeliveryState, LedgerEntry, PortError};
use serde_json::json;

use super::{ALERTS_PATH, Ingest, PATH_SEGMENT, Reply, WebhookRequest, new_entry};
use crate::envelope::{Envelope, alert_key};
use crate::lifecycle::{EventPlan, event_key};

/// How often the ledger is read again while an event waits for its alert.
const POLL_EVERY: Duration = Duration::from_millis(200);

impl Ingest {
    /// The alert of `key`, waiting up to the configured bound for it to be accepted and queued (an entry
    /// still `Accepted` may yet be forgotten, when its enqueue fails); at the bound, what there is.
    async fn wait_for_alert(&self, key: &str) -> Result<Option<LedgerEntry>, PortError> {
        let deadline = Instant::now() + self.settings.event_wait;
        loop {
            let entry = self.ports.ledger.get(key).await?;
            let queued = entry.as_ref().is_some_and(|e| e.state != DeliveryState::Accepted);
            if queued || Instant::now() >= deadline {
                return Ok(entry);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Accept a verified, valid lifecycle event.
    pub(super) async fn accept_event(
        &self,
        event: LifecycleEvent,
        req: &WebhookRequest<'_>,
        now_ms: i64,
        status_base: &str,
    ) -> Reply {
        let alert_id = event.alert_id.clone();
        let kind = event.kind;
        let key_of_alert = alert_key(&alert_id);
        let alert = match self.wait_for_alert(&key_of_alert).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                return self.reject(
                    404,
                    "unknown_alert",
                    json!({
                        "error": format!(
                            "no alert with id {alert_id:?} was accepted (waited {} s): a lifecycle event must follow \
                             its alert; nothing was changed",
                            self.settings.event_wait.as_secs_f64()
                        ),
                        "alert_id": alert_id,
                    }),
                );
            }
            Err(e) => {
                tracing::error!(alert_id = %alert_id, error = %e, "ledger read failed");
                return self.unavailable("the delivery ledger");
            }
        };
        let config = self.router.config();
        let profile = RecordType::parse(&alert.record_type)
            .filter(|t| *t != RecordType::ItomEvent)
            .map(|t| config.profile_for(t, &alert.table));
        let key = event_key(&key_of_alert, kind, req.webhook_id, req.body);
        let Some(plan) =
            profile.and_then(|p| EventPlan::new(event, key.clone(), &alert, p, &config.correlation_prefix))
        else {
            return self.reject(
                422,
                "no_journal",
                json!({
                    "error": format!(
                        "alert {alert_id:?} went to {} ({}), which keeps no journal: its lifecycle events cannot be \
                         noted there; nothing was changed",
                        alert.table, alert.record_type
                    ),
                    "alert_id": alert_id,
                }),
            );
        };
        let accepted = |duplicate: bool| {
            let status_url = format!(
                "{status_base}{ALERTS_PATH}{}",
                utf8_percent_encode(&alert_id, PATH_SEGMENT)
            );
            Reply::new(
                202,
                &json!({
                    "alert_id": alert_id,
                    "event": kind.as_str(),
                    "event_id": key,
                    "status_url": status_url,
                    "duplicate": duplicate,
                }),
            )
        };
        let envelope = Envelope::event(plan, now_ms);
        let entry = new_entry(&envelope, req.webhook_id, self.settings.ledger_retention);
        match self.record_entry(&entry).await {
            Err(reply) => return reply,
            Ok(true) => return accepted(true),
            Ok(false) => {}
        }
        if let Err(reply) = self.enqueue(&envelope, &self.ports.realtime, now_ms).await {
            return reply;
        }
        tracing::info!(target: "audit", event = "lifecycle_event_accepted", alert_id = %alert_id, kind = kind.as_str(), event_id = %key);
        accepted(false)
    }
}
