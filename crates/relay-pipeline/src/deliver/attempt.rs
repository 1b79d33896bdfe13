//! One attempt's ServiceNow calls: the event send, or the lookup (after an ambiguous attempt) and the create
//! with its person and attachments.

use std::time::Instant;

use relay_core::RecordType;
use servicenow_client::{CreatedRecord, Outcome, ServiceNowClient};

use super::Delivery;
use super::attach::{attach_files, attach_trend_chart};
use super::claim::Held;
use crate::envelope::{Envelope, Item};
use crate::telemetry::{ServiceNowCalled, TelemetryEvent};

fn event_link(client: &ServiceNowClient, correlation_id: &str) -> String {
    format!(
        "{}/em_event_list.do?sysparm_query=message_key%3D{correlation_id}",
        client.instance_url()
    )
}

impl Delivery {
    /// Create (or, after an ambiguous attempt, find) the record for `env`. Returns the outcome and whether
    /// the record was found rather than created.
    pub async fn create(&self, env: &Envelope, lookup_first: bool) -> (Outcome, bool) {
        self.create_held(env, lookup_first, None).await
    }

    /// [`Delivery::create`] under a claim: after a lookup that found nothing, the create is only sent once
    /// the claim is confirmed still held (a fenced lease renewal); a lost claim sends nothing.
    pub(super) async fn create_held(&self, env: &Envelope, lookup_first: bool, held: Option<&Held>) -> (Outcome, bool) {
        let slot = self.slot(super::lane_of(env)).await;
        let (outcome, found) = self.create_unobserved(env, lookup_first, held).await;
        slot.answered(&outcome);
        self.observe(&outcome);
        (outcome, found)
    }

    async fn create_unobserved(&self, env: &Envelope, lookup_first: bool, held: Option<&Held>) -> (Outcome, bool) {
        let client = match self.servicenow.client().await {
            Ok(c) => c,
            Err(o) => return (o, false),
        };
        let started = Instant::now();
        let outcome = if env.record_type() == RecordType::ItomEvent {
            // Event Management de-duplicates on message_key: resending is safe, no lookup needed.
            match client
                .send_events(&[serde_json::Value::Object(env.fields().clone())])
                .await
            {
                Ok(_) => Outcome::Created(CreatedRecord {
                    table: "em_event".into(),
                    sys_id: String::new(),
                    number: None,
                    link: event_link(&client, env.correlation_id()),
                }),
                Err(o) => o,
            }
        } else {
            if lookup_first {
                match client.find_by_key(env.table(), &env.record_key()).await {
                    Ok(Some(found)) => return (Outcome::Created(found), true),
                    Ok(None) => {}
                    Err(o) => return (o, false),
                }
                if let Some(held) = held {
                    if let Some(until) = held.no_create_before_ms.filter(|t| *t > self.ports.clock.now_ms()) {
                        // An earlier insert may still commit: look up only, create after the window.
                        return (
                            Outcome::Retryable {
                                retry_after: None,
                                reason: format!(
                                    "not found yet; an earlier ambiguous create may still commit until {until} (epoch ms)"
                                ),
                            },
                            false,
                        );
                    }
                    if let Err(o) = held.confirm(self).await {
                        return (o, false);
                    }
                }
            }
            let person = match &env.item {
                Item::Alert { decision, .. } => decision.person.as_ref(),
                Item::Aggregate { record } => record.person.as_ref(),
            };
            let created = match person {
                Some(p) => match self.with_person(&client, p, env.fields()).await {
                    Ok(fields) => client.create_record(env.table(), &fields).await,
                    Err(o) => o,
                },
                None => client.create_record(env.table(), env.fields()).await,
            };
            match (&created, &env.item) {
                (Outcome::Created(rec), Item::Aggregate { record }) => attach_files(&client, record, rec).await,
                (Outcome::Created(rec), Item::Alert { decision, .. }) => {
                    attach_trend_chart(&client, &decision.correlation_id, decision.chart.as_ref(), rec).await;
                    crate::document::attach_document(&client, &decision.correlation_id, decision.document.as_ref(), rec)
                        .await
                }
                _ => {}
            }
            created
        };
        ServiceNowCalled {
            outcome: outcome.class(),
            elapsed: started.elapsed(),
        }
        .emit();
        (outcome, false)
    }
}
