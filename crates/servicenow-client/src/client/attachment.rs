//! Files uploaded to a record with the Attachment API.

use reqwest::header::{CONTENT_TYPE, HeaderValue};

use super::{ServiceNowClient, unix_now};
use crate::Outcome;
use crate::config::{check_sys_id, check_table};
use crate::outcome::{Effect, field_str, result_of};

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
}
