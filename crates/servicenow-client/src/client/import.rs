//! Creates through the Import Set API, where a transform map decides the target table.

use reqwest::header::CONTENT_TYPE;
use serde_json::{Map, Value};

use super::{ServiceNowClient, unix_now};
use crate::config::{check_sys_id, check_table};
use crate::outcome::{Effect, field_str, result_of};
use crate::{CreatedRecord, Outcome};

impl ServiceNowClient {
    /// Create through the Import Set API (`/api/now/import/{staging_table}`); the transform map decides
    /// the target table and may coalesce (update instead of insert). A row status `error` or `ignored`
    /// is permanent.
    pub async fn import_record(&self, staging_table: &str, fields: &Map<String, Value>) -> Outcome {
        if let Err(m) = check_table(staging_table) {
            return Outcome::permanent_local(m);
        }
        let url = format!(
            "{}/api/now/import/{staging_table}?sysparm_input_display_value=true",
            self.inner.instance_url
        );
        // A staging table's columns are the `u_`-prefixed names an import set creates for each source column;
        // the transform map maps `u_<field>` onto the target's `<field>`. Other columns are ignored.
        let staged: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| {
                let column = if k.starts_with("u_") {
                    k.clone()
                } else {
                    format!("u_{k}")
                };
                (column, v.clone())
            })
            .collect();
        let body = match serde_json::to_vec(&staged) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => return Outcome::permanent_local(format!("fields cannot be encoded: {e}")),
        };
        let resp = match self
            .execute("import", staging_table, Effect::Write, || {
                self.inner
                    .http
                    .post(&url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await
        {
            Ok(r) => r,
            Err(o) => return o,
        };
        let result = match result_of(&resp, Effect::Write, unix_now()) {
            Ok(r) => r,
            Err(o) => return o,
        };
        let row = match &result {
            Value::Array(rows) => rows.first().cloned(),
            Value::Object(_) => Some(result.clone()),
            _ => None,
        };
        let Some(row) = row else {
            return Outcome::Ambiguous {
                reason: "import answer has no result row: the record may exist".into(),
            };
        };
        let status = row.get("status").and_then(Value::as_str).unwrap_or_default();
        match status {
            "inserted" | "updated" => {
                let table = row.get("table").and_then(Value::as_str).unwrap_or_default().to_string();
                let sys_id = row.get("sys_id").and_then(field_str).unwrap_or_default();
                if check_table(&table).is_err() || check_sys_id(&sys_id).is_err() {
                    return Outcome::Ambiguous {
                        reason: format!("import row {status} but without a usable table/sys_id"),
                    };
                }
                let number = row.get("display_value").and_then(field_str);
                Outcome::Created(CreatedRecord::new(&self.inner.instance_url, &table, &sys_id, number))
            }
            "error" | "ignored" => Outcome::Permanent {
                message: format!("import row {status}"),
                detail: row
                    .get("error_message")
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string),
                status: resp.status,
            },
            other => Outcome::Ambiguous {
                reason: format!("import row has unknown status {other:?}"),
            },
        }
    }
}
