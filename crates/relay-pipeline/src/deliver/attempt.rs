//! One attempt's ServiceNow calls: the event send, or the lookup (after an ambiguous attempt) and the create
//! with its person and attachments.

use std::time::Instant;

use relay_core::RecordType;
use serde_json::{Map, Value};
use servicenow_client::{CreatedRecord, Outcome, ServiceNowClient};

use super::Delivery;
use super::attach::{Files, attach_files};
use super::claim::Held;
use super::thread::{Role, plan_of};
use crate::envelope::{Envelope, Item};
use crate::telemetry::{ServiceNowCalled, TelemetryEvent};

fn event_link(client: &ServiceNowClient, correlation_id: &str) -> String {
    format!(
        "{}/em_event_list.do?sysparm_query=message_key%3D{correlation_id}",
        client.instance_url()
    )
}

/// `record` with its files uploaded ([`attach_files`]): Created, or the failure of a file the delivery
/// depends on (an employee document's), with the record named in its reason.
async fn with_files(client: &ServiceNowClient, env: &Envelope, record: CreatedRecord, found: bool) -> Outcome {
    let files = match &env.item {
        Item::Alert { decision, .. } => Files::of_decision(decision),
        Item::Aggregate { record } => Files::of_record(record),
        Item::Event { .. } | Item::Callback { .. } | Item::Sync { .. } => return Outcome::Created(record),
    };
    match attach_files(client, &files, &record, found).await {
        Ok(()) => Outcome::Created(record),
        Err(pending) => pending,
    }
}

impl Delivery {
    /// Create (or, after an ambiguous attempt, find) the record for `env`. Returns the outcome and whether
    /// the record was found rather than created.
    pub async fn create(&self, env: &Envelope, lookup_first: bool) -> (Outcome, bool) {
        let (outcome, found, _) = self.create_held(env, lookup_first, None).await;
        (outcome, found)
    }

    /// [`Delivery::create`] under a claim: after a lookup that found nothing, the create is only sent once
    /// the claim is confirmed still held (a fenced lease renewal); a lost claim sends nothing. An alert with
    /// a thread plan joins its thread ([`super::thread`]); the role says what it became.
    pub(super) async fn create_held(
        &self,
        env: &Envelope,
        lookup_first: bool,
        held: Option<&Held>,
    ) -> (Outcome, bool, Role) {
        let slot = self.slot(super::lane_of(env)).await;
        let (outcome, found, role) = self.attempt_unobserved(env, lookup_first, held).await;
        // a thread's wait made no call: it tells the limit and the breaker nothing
        if !matches!(role, Role::Wait { .. }) {
            slot.answered(&outcome);
            self.observe(&outcome);
        }
        (outcome, found, role)
    }

    async fn attempt_unobserved(
        &self,
        env: &Envelope,
        lookup_first: bool,
        held: Option<&Held>,
    ) -> (Outcome, bool, Role) {
        let client = match self.servicenow.client().await {
            Ok(c) => c,
            Err(o) => return (o, false, Role::Alone),
        };
        let started = Instant::now();
        let (outcome, found, role) = match (&env.item, plan_of(env), held) {
            (Item::Event { plan }, _, Some(held)) => {
                let (o, resolved) = self.apply_event(&client, plan, lookup_first, held).await;
                (o, false, Role::Event { resolved })
            }
            (_, Some(plan), Some(held)) => self.threaded(&client, env, plan, lookup_first, held).await,
            _ => {
                let (o, found) = self.create_with(&client, env, lookup_first, held, &Map::new()).await;
                (o, found, Role::Alone)
            }
        };
        ServiceNowCalled {
            outcome: outcome.class(),
            elapsed: started.elapsed(),
        }
        .emit();
        (outcome, found, role)
    }

    /// The record of `env`, with `extra` fields over its own: sent, or (`lookup_first`) found first.
    pub(super) async fn create_with(
        &self,
        client: &ServiceNowClient,
        env: &Envelope,
        lookup_first: bool,
        held: Option<&Held>,
        extra: &Map<String, Value>,
    ) -> (Outcome, bool) {
        if env.record_type() == RecordType::ItomEvent {
            // Event Management de-duplicates on message_key: resending is safe, no lookup needed.
            let outcome = match client
                .send_events(&[serde_json::Value::Object(env.fields().clone())])
                .await
            {
                Ok(_) => Outcome::Created(CreatedRecord {
                    table: "em_event".into(),
                    sys_id: String::new(),
                    number: None,
                    link: event_link(client, env.correlation_id()),
                }),
                Err(o) => o,
            };
            return (outcome, false);
        }
        if lookup_first {
            match client.find_by_key(env.table(), &env.record_key()).await {
                // an earlier attempt created it: what it did not upload is uploaded now
                Ok(Some(found)) => return (with_files(client, env, found, true).await, true),
                Ok(None) => {}
                Err(o) => return (o, false),
            }
            if let Some(held) = held {
                // An earlier insert may still commit: look up only, create after the window.
                if let Some(wait) = held.still_settling(self.ports.clock.now_ms(), "create") {
                    return (wait, false);
                }
                if let Err(o) = held.confirm(self).await {
                    return (o, false);
                }
            }
        }
        let person = match &env.item {
            Item::Alert { decision, .. } => decision.person.as_ref(),
            Item::Aggregate { record } => record.person.as_ref(),
            Item::Event { .. } | Item::Callback { .. } | Item::Sync { .. } => None,
        };
        let mut fields = env.fields_at(self.ports.clock.now_ms());
        if !extra.is_empty() {
            fields.to_mut().extend(extra.clone());
        }
        let created = match person {
            Some(p) => match self.with_person(client, p, &fields).await {
                Ok(fields) => client.create_record(env.table(), &fields).await,
                Err(o) => o,
            },
            None => client.create_record(env.table(), &fields).await,
        };
        match created {
            Outcome::Created(rec) => (with_files(client, env, rec, false).await, false),
            failure => (failure, false),
        }
    }
}
