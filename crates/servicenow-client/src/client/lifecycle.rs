//! A record after creation: its fields updated (a work note, a state, a priority), its journal read back,
//! the current state of many records read at once.

use reqwest::header::CONTENT_TYPE;
use serde_json::{Map, Value};

use super::{ServiceNowClient, unix_now};
use crate::Outcome;
use crate::config::{check_field, check_sys_id, check_table};
use crate::outcome::{Effect, field_str, result_of, rows_of};

/// The most records one [`ServiceNowClient::read_records`] call asks for (`sys_idIN…` of 32-character
/// ids stays well under the URL lengths instances and proxies accept).
pub const MAX_READ_IDS: usize = 100;

/// Journal entries asked for per call of [`ServiceNowClient::journal`], and the most calls it makes (20 000
/// entries of one record).
const JOURNAL_PAGE: usize = 1000;
const JOURNAL_PAGES: usize = 20;

/// One journal entry (a work note or an additional comment) of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub value: String,
    /// `sys_created_on` (the instance's `YYYY-MM-DD hh:mm:ss`, UTC).
    pub created_on: String,
    pub created_by: String,
}

impl ServiceNowClient {
    /// Update fields of one record with the Table API (PATCH). A journal field (`work_notes`) given a value
    /// gets one more entry. `Err(Ambiguous)` when the update was sent but its answer lost: it may have been
    /// applied (for a journal entry: read the journal before writing it again; for a state change: read the
    /// state back — a retried close of a record the lost attempt already closed is refused as final).
    pub async fn update_record(&self, table: &str, sys_id: &str, fields: &Map<String, Value>) -> Result<(), Outcome> {
        check_table(table).map_err(Outcome::permanent_local)?;
        check_sys_id(sys_id).map_err(Outcome::permanent_local)?;
        for field in fields.keys() {
            check_field(field).map_err(Outcome::permanent_local)?;
        }
        let url = format!(
            "{}/api/now/table/{table}/{sys_id}?{}",
            self.inner.instance_url,
            super::table::CREATE_PARAMS
        );
        let body = serde_json::to_vec(fields)
            .map(bytes::Bytes::from)
            .map_err(|e| Outcome::permanent_local(format!("fields cannot be encoded: {e}")))?;
        let resp = self
            .execute("update", table, Effect::Write, || {
                self.inner
                    .http
                    .patch(&url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await?;
        result_of(&resp, Effect::Write, unix_now()).map(|_| ())
    }

    /// Append `text` to the journal field `field` (`work_notes`) of a record: [`ServiceNowClient::update_record`]
    /// with that one field.
    pub async fn add_journal_entry(&self, table: &str, sys_id: &str, field: &str, text: &str) -> Result<(), Outcome> {
        let mut fields = Map::new();
        fields.insert(field.to_string(), Value::String(text.to_string()));
        self.update_record(table, sys_id, &fields).await
    }

    /// The entries of the journal field `field` of a record, oldest first (`sys_journal_field`, where the
    /// instance keeps them: the record's own field reads back empty). Rows are read back and kept only when
    /// they name this record, table and field: a query term the instance ignores cannot make another
    /// record's note count. A user who may not read `sys_journal_field` (it needs `audit_viewer`) gets an
    /// empty list, not an error: the instance filters rows by ACL. So an empty answer proves nothing until
    /// `relay test-connection` has read a note back as this user.
    pub async fn journal(&self, table: &str, sys_id: &str, field: &str) -> Result<Vec<JournalEntry>, Outcome> {
        check_table(table).map_err(Outcome::permanent_local)?;
        check_sys_id(sys_id).map_err(Outcome::permanent_local)?;
        check_field(field).map_err(Outcome::permanent_local)?;
        let query = format!("element_id={sys_id}^name={table}^element={field}^ORDERBYsys_created_on");
        let url = format!("{}/api/now/table/sys_journal_field", self.inner.instance_url);
        let text = |row: &Value, f: &str| row.get(f).and_then(field_str).unwrap_or_default();
        let mut out = Vec::new();
        // page by page: a busy record's journal can outgrow one answer
        for page in 0..JOURNAL_PAGES {
            let offset = (page * JOURNAL_PAGE).to_string();
            let limit = JOURNAL_PAGE.to_string();
            let resp = self
                .execute("journal", table, Effect::Read, || {
                    self.inner.http.get(&url).query(&[
                        ("sysparm_query", query.as_str()),
                        (
                            "sysparm_fields",
                            "element,element_id,name,value,sys_created_on,sys_created_by",
                        ),
                        ("sysparm_limit", limit.as_str()),
                        ("sysparm_offset", offset.as_str()),
                    ])
                })
                .await?;
            let rows = rows_of(result_of(&resp, Effect::Read, unix_now())?, "journal")?;
            let full = rows.len() >= JOURNAL_PAGE;
            out.extend(
                rows.iter()
                    .filter(|r| {
                        text(r, "element_id") == sys_id && text(r, "name") == table && text(r, "element") == field
                    })
                    .map(|r| JournalEntry {
                        value: text(r, "value"),
                        created_on: text(r, "sys_created_on"),
                        created_by: text(r, "sys_created_by"),
                    }),
            );
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// The current `fields` of the records `sys_ids` of `table` (one `sys_idIN…` query; at most
    /// [`MAX_READ_IDS`]), each row as the instance answers it (values, not display values) with its
    /// `sys_id`. Rows are kept only when their sys_id was asked for; a record that is gone, or that the
    /// user may not read, is simply absent.
    pub async fn read_records(
        &self,
        table: &str,
        sys_ids: &[&str],
        fields: &[&str],
    ) -> Result<Vec<Map<String, Value>>, Outcome> {
        check_table(table).map_err(Outcome::permanent_local)?;
        if sys_ids.is_empty() {
            return Ok(Vec::new());
        }
        if sys_ids.len() > MAX_READ_IDS {
            return Err(Outcome::permanent_local(format!(
                "read_records asks for {} records; at most {MAX_READ_IDS} per call",
                sys_ids.len()
            )));
        }
        for id in sys_ids {
            check_sys_id(id).map_err(Outcome::permanent_local)?;
        }
        for f in fields {
            check_field(f).map_err(Outcome::permanent_local)?;
        }
        let query = format!("sys_idIN{}", sys_ids.join(","));
        let mut wanted: Vec<&str> = vec!["sys_id"];
        wanted.extend(fields.iter().copied().filter(|f| *f != "sys_id"));
        let wanted = wanted.join(",");
        let limit = sys_ids.len().to_string();
        let url = format!("{}/api/now/table/{table}", self.inner.instance_url);
        let resp = self
            .execute("read", table, Effect::Read, || {
                self.inner.http.get(&url).query(&[
                    ("sysparm_query", query.as_str()),
                    ("sysparm_fields", wanted.as_str()),
                    ("sysparm_limit", limit.as_str()),
                    ("sysparm_exclude_reference_link", "true"),
                ])
            })
            .await?;
        let rows = rows_of(result_of(&resp, Effect::Read, unix_now())?, "read")?;
        Ok(rows
            .into_iter()
            .filter_map(|r| match r {
                Value::Object(o) => Some(o),
                _ => None,
            })
            .filter(|o| {
                o.get("sys_id")
                    .and_then(field_str)
                    .is_some_and(|id| sys_ids.contains(&id.as_str()))
            })
            .collect())
    }
}
