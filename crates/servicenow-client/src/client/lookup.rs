//! Lookups through the Table API: a record by the relay's key, a `sys_user`, a `sys_user_group`.

use super::{ServiceNowClient, unix_now};
use crate::config::{check_field, check_sys_id, check_table, correlation_query};
use crate::outcome::{Effect, field_str, record_from, result_of, rows_of};
use crate::{CreatedRecord, Outcome};

/// Rows a key lookup reads: enough to find ours among rows a real instance returns for a query whose term
/// it ignored, or among `LIKE` matches of a longer key.
pub const LOOKUP_ROWS: usize = 10;

/// What a row must carry to be ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The field holds exactly the key.
    Equals,
    /// The field's text contains this marker (which contains the key).
    Contains(String),
}

/// The field that carries the relay's key on a table, the key, and how a found row is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey<'a> {
    pub field: &'a str,
    pub value: &'a str,
    pub expect: Expect,
}

impl<'a> RecordKey<'a> {
    /// `field` holds exactly `value`.
    pub fn equals(field: &'a str, value: &'a str) -> RecordKey<'a> {
        RecordKey {
            field,
            value,
            expect: Expect::Equals,
        }
    }
}

impl ServiceNowClient {
    /// Find the earliest record of `table` whose `correlation_id` equals the given value (see
    /// [`ServiceNowClient::find_by_key`]).
    pub async fn find_by_correlation_id(
        &self,
        table: &str,
        correlation_id: &str,
    ) -> Result<Option<CreatedRecord>, Outcome> {
        self.find_by_key(table, &RecordKey::equals("correlation_id", correlation_id))
            .await
    }

    /// Find the earliest record of `table` that carries `key` in `key.field`. The lookup asks for the field
    /// back and compares it: a row that does not carry the key is never taken (a real instance ignores a
    /// query term on a field the table lacks and returns rows of the valid rest, here: any rows). The key
    /// value must match `[A-Za-z0-9._:-]{1,100}`; anything else is refused without a request.
    pub async fn find_by_key(&self, table: &str, key: &RecordKey<'_>) -> Result<Option<CreatedRecord>, Outcome> {
        check_table(table).map_err(Outcome::permanent_local)?;
        check_field(key.field).map_err(Outcome::permanent_local)?;
        // checks the value's charset; the term is then written for the field
        correlation_query(key.value).map_err(Outcome::permanent_local)?;
        let op = match key.expect {
            Expect::Equals => "=",
            Expect::Contains(_) => "LIKE",
        };
        let query = format!("{}{op}{}^ORDERBYsys_created_on", key.field, key.value);
        let fields = format!("sys_id,number,{}", key.field);
        let url = format!("{}/api/now/table/{table}", self.inner.instance_url);
        let limit = LOOKUP_ROWS.to_string();
        let resp = self
            .execute("find", table, Effect::Read, || {
                self.inner.http.get(&url).query(&[
                    ("sysparm_query", query.as_str()),
                    ("sysparm_fields", fields.as_str()),
                    ("sysparm_limit", limit.as_str()),
                    ("sysparm_exclude_reference_link", "true"),
                ])
            })
            .await?;
        let result = result_of(&resp, Effect::Read, unix_now())?;
        let rows = rows_of(result, "lookup")?;
        let ours = rows.iter().find(|row| {
            let value = row.get(key.field).and_then(field_str);
            match (&key.expect, value) {
                (_, None) => false,
                (Expect::Equals, Some(v)) => v == key.value,
                (Expect::Contains(marker), Some(v)) => v.contains(marker.as_str()),
            }
        });
        match ours {
            None => Ok(None),
            Some(row) => record_from(row, &self.inner.instance_url, table)
                .map(Some)
                .ok_or_else(|| Outcome::retryable("lookup answer has a row without sys_id")),
        }
    }

    /// The sys_id of the one active or inactive `sys_user` whose `field` (employee_number, user_name or
    /// email) equals `value`, read back and compared; None when there is none, or when the value cannot be
    /// put in a query safely (`[A-Za-z0-9._:@+-]`, at most 100).
    pub async fn find_user(&self, field: &str, value: &str) -> Result<Option<String>, Outcome> {
        check_field(field).map_err(Outcome::permanent_local)?;
        let safe = !value.is_empty()
            && value.len() <= crate::MAX_CORRELATION_ID_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'+' | b'-'))
            && !value.to_ascii_lowercase().contains("javascript:");
        if !safe {
            return Ok(None);
        }
        self.unique_sys_id("find_user", "sys_user", field, value, |found| {
            found.eq_ignore_ascii_case(value)
        })
        .await
    }

    /// The sys_id of the one `sys_user_group` named exactly `name`; None when there is none (an instance
    /// leaves a reference to an unknown group empty without an error, so this is how a group name is
    /// verified), or when the name cannot be one encoded-query term (`^`, a line break, over 80 characters).
    pub async fn find_group(&self, name: &str) -> Result<Option<String>, Outcome> {
        let safe = !name.trim().is_empty()
            && name.chars().count() <= 80
            && !name.contains('^')
            && !name.chars().any(char::is_control)
            && !name.to_ascii_lowercase().contains("javascript:");
        if !safe {
            return Ok(None);
        }
        self.unique_sys_id("find_group", "sys_user_group", "name", name, |found| found == name)
            .await
    }

    /// The sys_id of the one row of `table` whose `field` equals `value` (a query-safe value), read back and
    /// checked with `same`; None when no row or more than one matches (two candidates name nobody for sure).
    async fn unique_sys_id(
        &self,
        op: &'static str,
        table: &'static str,
        field: &str,
        value: &str,
        same: impl Fn(&str) -> bool,
    ) -> Result<Option<String>, Outcome> {
        let query = format!("{field}={value}");
        let fields = format!("sys_id,{field}");
        let url = format!("{}/api/now/table/{table}", self.inner.instance_url);
        let resp = self
            .execute(op, table, Effect::Read, || {
                self.inner.http.get(&url).query(&[
                    ("sysparm_query", query.as_str()),
                    ("sysparm_fields", fields.as_str()),
                    ("sysparm_limit", "2"),
                ])
            })
            .await?;
        let result = result_of(&resp, Effect::Read, unix_now())?;
        let rows = rows_of(result, &format!("{table} lookup"))?;
        let matching: Vec<String> = rows
            .iter()
            .filter(|r| r.get(field).and_then(field_str).is_some_and(|v| same(&v)))
            .filter_map(|r| r.get("sys_id").and_then(field_str))
            .filter(|id| check_sys_id(id).is_ok())
            .collect();
        Ok(if matching.len() == 1 {
            matching.into_iter().next()
        } else {
            None
        })
    }
}
