//! `POST /v1/servicenow/changes`: a ServiceNow business rule tells the relay that a record it made has
//! changed, so the change is read back (and called back) now instead of at the next sync. The body names
//! the record only — `{"table": "incident", "sys_id": "<32 hex>"}` — and is signed the Standard Webhooks
//! way with its own secret (the push secret). Nothing in it is trusted beyond that: the relay reads the
//! record's state itself, so a push can make a change visible sooner, never invent one. A push for a record
//! the relay does not follow is answered 404 and changes nothing; the periodic sync stays the guarantee
//! (a push whose read fails is dropped, and the next sync finds the change).

use serde::Deserialize;
use serde_json::json;

use super::{Ingest, Reply, WebhookRequest};
use crate::envelope::{Envelope, SyncRequest};
use crate::sync::{StateModel, watch_key_of};
use relay_ports::{DeliveryState, WATCH_DELIVERY};

/// The most a push body may hold.
const MAX_PUSH_BYTES: usize = 4 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Push {
    table: String,
    sys_id: String,
}

impl Ingest {
    /// A signed push from ServiceNow: 202 when the record's read-back is queued, 200 when the relay no
    /// longer follows it (a final state was reached), 404 for a record the relay does not follow (or with
    /// the push endpoint off), 401 for a bad signature, 400/413/415 for a bad body, 503 when the ledger or
    /// the queue is down.
    pub async fn push(&self, req: WebhookRequest<'_>) -> Reply {
        let Some(keys) = &self.push_keys else {
            return self.reject(
                404,
                "push_off",
                json!({"error": "the push endpoint is off: give the relay a push secret (relay serve \
                       --push-secret-file, or the template's EnablePush) to turn it on"}),
            );
        };
        let now_ms = self.ports.clock.now_ms();
        if let Some(refused) = self.refuse_signed(&req, MAX_PUSH_BYTES, keys, now_ms).await {
            return refused;
        }
        let push: Push = match serde_json::from_slice(req.body) {
            Ok(p) => p,
            Err(e) => {
                return self.reject(
                    400,
                    "invalid",
                    json!({"error": format!("expected {{\"table\": \"…\", \"sys_id\": \"…\"}}: {e}")}),
                );
            }
        };
        if let Err(why) =
            servicenow_client::check_table(&push.table).and_then(|()| servicenow_client::check_sys_id(&push.sys_id))
        {
            return self.reject(400, "invalid", json!({ "error": why }));
        }
        let key = watch_key_of(&push.table, &push.sys_id);
        let watch = match self.ports.ledger.get(&key).await {
            Ok(Some(w)) if w.delivery == WATCH_DELIVERY => w,
            Ok(_) => {
                return Reply::new(
                    404,
                    &json!({"error": format!(
                        "{} {} is not a record the relay made (or it is past the ledger's retention)",
                        push.table, push.sys_id
                    )}),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "ledger read failed");
                return self.unavailable("the delivery ledger");
            }
        };
        if watch.state != DeliveryState::Queued {
            return Reply::new(
                200,
                &json!({"queued": false, "why": "the record reached a final state; the relay no longer follows it"}),
            );
        }
        let record_type = relay_core::RecordType::parse(&watch.record_type).unwrap_or(relay_core::RecordType::Incident);
        let model = StateModel::of(self.router.config().profile_for(record_type, &watch.table));
        let env = Envelope::sync(
            SyncRequest {
                key,
                table: watch.table.clone(),
                record_type: watch.record_type.clone(),
                model,
            },
            now_ms,
        );
        if let Err(e) = self
            .ports
            .realtime
            .send(&env.to_json(), std::time::Duration::ZERO)
            .await
        {
            tracing::error!(error = %e, "enqueue failed");
            return self.unavailable("the queue");
        }
        Reply::new(202, &json!({"queued": true}))
    }
}
