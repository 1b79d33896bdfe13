//! Files uploaded to a record with the Attachment API.

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::Value;

use super::{ServiceNowClient, unix_now};
use crate::Outcome;
use crate::config::{check_sys_id, check_table};
use crate::outcome::{Effect, field_str, result_of, rows_of};

impl ServiceNowClient {
    /// Upload a file to a record with the Attachment API. Returns the attachment's sys_id.
    pub async fn attach(
        &self,
        table: &str,
        sys_id: &str,
        file_name: &str,
        content_type: &str,
        bytes: impl Into<bytes::Bytes>,
    ) -> Result<String, Outcome> {
        check_table(table).map_err(Outcome::permanent_local)?;
        check_sys_id(sys_id).map_err(Outcome::permanent_local)?;
        if file_name.is_empty()
            || file_name.len() > 255
            || file_name.chars().any(|c| c.is_control() || c == '/' || c == '\\')
        {
            return Err(Outcome::permanent_local(format!(
                "invalid attachment file name {file_name:?}: 1-255 characters, no slashes or control characters"
            )));
        }
        let ct = HeaderValue::from_str(content_type)
            .ok()
            .filter(|_| content_type.contains('/'))
            .ok_or_else(|| Outcome::permanent_local(format!("invalid attachment content type {content_type:?}")))?;
        let body: bytes::Bytes = bytes.into();
        let url = format!("{}/api/now/attachment/file", self.inner.instance_url);
        let resp = self
            .execute("attach", table, Effect::Write, || {
                self.inner
                    .http
                    .post(&url)
                    .query(&[
                        ("table_name", table),
                        ("table_sys_id", sys_id),
                        ("file_name", file_name),
                    ])
                    .header(CONTENT_TYPE, ct.clone())
                    .body(body.clone())
            })
            .await?;
        let result = result_of(&resp, Effect::Write, unix_now())?;
        result
            .get("sys_id")
            .and_then(field_str)
            .filter(|s| check_sys_id(s).is_ok())
            .ok_or_else(|| Outcome::Ambiguous {
                reason: "attachment answer has no sys_id: it may exist".into(),
            })
    }

    /// The names of the files attached to a record (the Attachment API's metadata query on
    /// `sys_attachment`), read back and kept only when they name this record: a query term the instance
    /// ignores cannot make another record's file count. Used after a lookup found a record an earlier
    /// attempt created, to upload only what that attempt did not.
    pub async fn attachment_names(&self, table: &str, sys_id: &str) -> Result<Vec<String>, Outcome> {
        check_table(table).map_err(Outcome::permanent_local)?;
        check_sys_id(sys_id).map_err(Outcome::permanent_local)?;
        let query = format!("table_name={table}^table_sys_id={sys_id}");
        let url = format!("{}/api/now/attachment", self.inner.instance_url);
        let resp = self
            .execute("attachments", table, Effect::Read, || {
                self.inner
                    .http
                    .get(&url)
                    .query(&[("sysparm_query", query.as_str()), ("sysparm_limit", "100")])
            })
            .await?;
        let result = result_of(&resp, Effect::Read, unix_now())?;
        let rows = rows_of(result, "attachment list")?;
        let is = |row: &Value, field: &str, value: &str| row.get(field).and_then(field_str).as_deref() == Some(value);
        Ok(rows
            .iter()
            .filter(|row| is(row, "table_sys_id", sys_id) && is(row, "table_name", table))
            .filter_map(|row| row.get("file_name").and_then(field_str))
            .collect())
    }
}
