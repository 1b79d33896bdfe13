//! Writes through the Table API: a record created, a record deleted.

use reqwest::header::CONTENT_TYPE;
use serde_json::{Map, Value};

use super::{ServiceNowClient, unix_now};
use crate::Outcome;
use crate::config::{check_sys_id, check_table};
use crate::outcome::{Effect, created_from, result_of};

/// Query parameters for every Table API write: minimal response, groups by display name, no links.
pub(super) const CREATE_PARAMS: &str =
    "sysparm_fields=sys_id,number&sysparm_input_display_value=true&sysparm_exclude_reference_link=true";

impl ServiceNowClient {
    /// Insert one record with the Table API.
    pub async fn create_record(&self, table: &str, fields: &Map<String, Value>) -> Outcome {
        if let Err(m) = check_table(table) {
            return Outcome::permanent_local(m);
        }
        let url = format!("{}/api/now/table/{table}?{CREATE_PARAMS}", self.inner.instance_url);
        let body = match serde_json::to_vec(fields) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => return Outcome::permanent_local(format!("fields cannot be encoded: {e}")),
        };
        let sent = self
            .execute("create", table, Effect::Write, || {
                self.inner
                    .http
                    .post(&url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await;
        match sent {
            Ok(resp) => created_from(&resp, &self.inner.instance_url, table, unix_now()),
            Err(o) => o,
        }
    }

    /// Delete a record (used by the connection test to clean up after itself).
    pub async fn delete_record(&self, table: &str, sys_id: &str) -> Result<(), Outcome> {
        check_table(table).map_err(Outcome::permanent_local)?;
        check_sys_id(sys_id).map_err(Outcome::permanent_local)?;
        let url = format!("{}/api/now/table/{table}/{sys_id}", self.inner.instance_url);
        let resp = self
            .execute("delete", table, Effect::Write, || self.inner.http.delete(&url))
            .await?;
        match resp.status {
            200..=299 => Ok(()),
            _ => Err(result_of(&resp, Effect::Write, unix_now())
                .err()
                .unwrap_or_else(|| Outcome::retryable(format!("delete answered HTTP {}", resp.status)))),
        }
    }
}
