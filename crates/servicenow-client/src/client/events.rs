//! ITOM events sent to Event Management.

use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use super::{ServiceNowClient, unix_now};
use crate::Outcome;
use crate::outcome::{Effect, result_of};

impl ServiceNowClient {
    /// Send ITOM events to `/api/global/em/jsonv2`. `Ok` holds ServiceNow's summary of the result
    /// (e.g. `{"Default Bulk Endpoint":"1 events were inserted"}` as text).
    pub async fn send_events(&self, events: &[Value]) -> Result<String, Outcome> {
        if events.is_empty() {
            return Err(Outcome::permanent_local("no events to send"));
        }
        let url = format!("{}/api/global/em/jsonv2", self.inner.instance_url);
        let body = bytes::Bytes::from(
            serde_json::to_vec(&json!({ "records": events }))
                .map_err(|e| Outcome::permanent_local(format!("events cannot be encoded: {e}")))?,
        );
        let resp = self
            .execute("events", "em_event", Effect::Write, || {
                self.inner
                    .http
                    .post(&url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await?;
        let result = result_of(&resp, Effect::Write, unix_now())?;
        Ok(match result {
            Value::String(s) => s,
            Value::Object(o) => o.values().filter_map(Value::as_str).collect::<Vec<_>>().join("; "),
            other => other.to_string(),
        })
    }
}
