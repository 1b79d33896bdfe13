//! In-memory instance state behind one mutex: tables, tokens, rate-limit counters, request log, faults.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use time::OffsetDateTime;

use crate::config::{ADMIN_ROLE, SimConfig, TableConfig};
use crate::faults::Fault;

pub type Fields = BTreeMap<String, String>;

/// One request as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Status sent; 0 when no response was sent (connection reset, timeout after write).
    pub status: u16,
    /// Authenticated user, if authentication got that far.
    pub user: Option<String>,
    /// Simulator clock, unix milliseconds.
    pub at: i64,
    /// Table the request addressed (see API.md), if any.
    pub table: Option<String>,
    /// True for an item executed inside a Batch API request.
    pub via_batch: bool,
    /// Name of the injected fault applied to this request, if any.
    pub fault: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct TableData {
    pub counter: u64,
    pub rows: Vec<Fields>,
    pub index: HashMap<String, usize>,
}

impl TableData {
    pub fn insert(&mut self, row: Fields) {
        let id = row.get("sys_id").cloned().unwrap_or_default();
        self.index.insert(id, self.rows.len());
        self.rows.push(row);
    }

    pub fn get(&self, sys_id: &str) -> Option<&Fields> {
        self.index.get(sys_id).map(|&i| &self.rows[i])
    }

    pub fn get_mut(&mut self, sys_id: &str) -> Option<&mut Fields> {
        self.index.get(sys_id).map(|&i| &mut self.rows[i])
    }

    pub fn remove(&mut self, sys_id: &str) -> Option<Fields> {
        let i = self.index.remove(sys_id)?;
        let row = self.rows.remove(i);
        for (pos, r) in self.rows.iter().enumerate().skip(i) {
            if let Some(id) = r.get("sys_id") {
                self.index.insert(id.clone(), pos);
            }
        }
        Some(row)
    }
}

/// One rate-limit count: what the database holds (and the rule enforces) and what the node has counted
/// since the last commit (inbound-REST-API-rate-limiting: "Every 30 seconds, the count is committed").
#[derive(Debug, Default, Clone, Copy)]
pub struct RateCount {
    pub committed: u32,
    pub pending: u32,
    /// The commit period (clock seconds / interval) the pending count belongs to.
    pub period: i64,
}

impl RateCount {
    /// Commit the pending count if a commit time passed since it was counted; `interval_s` 0 commits at once.
    pub fn commit_due(&mut self, now: i64, interval_s: u64) {
        let period = if interval_s == 0 {
            now
        } else {
            now.div_euclid(interval_s as i64)
        };
        if interval_s == 0 || period > self.period {
            self.committed += self.pending;
            self.pending = 0;
            self.period = period;
        }
    }
}

#[derive(Debug, Clone)]
pub struct Token {
    pub user: String,
    pub client_id: String,
    pub expires_at: i64,
}

#[derive(Debug, Default)]
pub struct Store {
    pub tables: HashMap<String, TableData>,
    pub access_tokens: HashMap<String, Token>,
    pub refresh_tokens: HashMap<String, Token>,
    /// (rule index, user, hour start) → requests counted.
    pub rate_counters: HashMap<(usize, String, i64), RateCount>,
    pub log: VecDeque<LoggedRequest>,
    pub faults: Vec<Fault>,
    pub hibernating: bool,
    pub attachments: HashMap<String, Bytes>,
    pub import_set_counter: u64,
    /// Simulator clock (unix s) of the last reset: scheduled jobs run from then on.
    pub jobs_since: i64,
    /// Table → the simulator clock (unix s) of its scheduled job's last run.
    pub jobs_ran_until: HashMap<String, i64>,
}

pub struct Shared {
    /// The configuration with table inheritance resolved.
    pub config: SimConfig,
    pub store: Mutex<Store>,
    /// Reference data (groups and `records`) with sys_ids fixed for the simulator's life (survives reset).
    pub seeds: Vec<(String, Fields)>,
    clock_offset_ms: AtomicI64,
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// user → roles, containment expanded, `snc_internal` included.
    pub roles: HashMap<String, Vec<String>>,
    /// sys_id of each rate-limit rule (configured or generated).
    pub rule_ids: Vec<String>,
    pub transactions: crate::transactions::Transactions,
}

pub fn new_sys_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub fn format_glide_time(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Role every internal user holds implicitly.
pub const INTERNAL_ROLE: &str = "snc_internal";

fn expand_roles(roles: &[String], includes: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = vec![INTERNAL_ROLE.to_string()];
    let mut todo: Vec<String> = roles.to_vec();
    while let Some(r) = todo.pop() {
        if out.contains(&r) {
            continue;
        }
        if let Some(more) = includes.get(&r) {
            todo.extend(more.iter().cloned());
        }
        out.push(r);
    }
    out
}

/// Reference data rows with sys_ids; reference fields resolved by the target's display value.
fn seed_rows(config: &SimConfig) -> Vec<(String, Fields)> {
    let mut rows: Vec<(String, Fields)> = config
        .groups
        .iter()
        .map(|name| {
            let row: Fields = [("sys_id", new_sys_id()), ("name", name.clone())]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            ("sys_user_group".to_string(), row)
        })
        .collect();
    // a `records` row of sys_user_group naming a configured group adds its fields (type, manager, …) to that
    // group's row (the first not yet described); other rows are more records
    let mut described: Vec<usize> = Vec::new();
    for (table, list) in &config.records {
        for r in list {
            let group = (table == "sys_user_group")
                .then(|| {
                    (0..rows.len()).find(|i| {
                        let (t, g) = &rows[*i];
                        t == "sys_user_group" && g.get("name") == r.get("name") && !described.contains(i)
                    })
                })
                .flatten();
            if let Some(i) = group {
                described.push(i);
                rows[i].1.extend(
                    r.iter()
                        .filter(|(k, _)| *k != "sys_id")
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                continue;
            }
            let mut row = r.clone();
            row.entry("sys_id".into()).or_insert_with(new_sys_id);
            rows.push((table.clone(), row));
        }
    }
    // every user who can log in is a sys_user record (platform-administration/user-administration/user)
    if config.table("sys_user").is_some() {
        for u in &config.users {
            let listed = rows
                .iter()
                .any(|(t, r)| t == "sys_user" && r.get("user_name") == Some(&u.name));
            if !listed {
                let row: Fields = [
                    ("sys_id", new_sys_id()),
                    ("user_name", u.name.clone()),
                    ("name", u.name.clone()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                rows.push(("sys_user".to_string(), row));
            }
        }
    }
    let lookup: Vec<(String, String, String)> = rows
        .iter()
        .map(|(t, r)| {
            let display = config
                .table(t)
                .map(|c| c.display_field().to_string())
                .unwrap_or_default();
            (
                t.clone(),
                r.get(&display).cloned().unwrap_or_default(),
                r["sys_id"].clone(),
            )
        })
        .collect();
    for (table, row) in rows.iter_mut() {
        let Some(cfg) = config.table(table) else { continue };
        for (field, target) in &cfg.references {
            if let Some(v) = row.get_mut(field)
                && let Some((_, _, id)) = lookup.iter().find(|(t, d, id)| t == target && (d == v || id == v))
            {
                *v = id.clone();
            }
        }
        for (k, v) in &cfg.defaults {
            row.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    rows
}

impl Shared {
    /// Panics when the configuration does not validate (callers validate first).
    pub fn new(mut config: SimConfig) -> Shared {
        config.tables = config.resolved_tables().expect("validated configuration");
        let seeds = seed_rows(&config);
        let roles = config
            .users
            .iter()
            .map(|u| (u.name.clone(), expand_roles(&u.roles, &config.role_includes)))
            .collect();
        let rule_ids = config
            .rate_limits
            .iter()
            .map(|r| r.sys_id.clone().unwrap_or_else(new_sys_id))
            .collect();
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let transactions = crate::transactions::Transactions::new(config.transactions, config.latency.clone());
        let shared = Shared {
            config,
            store: Mutex::new(Store::default()),
            seeds,
            clock_offset_ms: AtomicI64::new(0),
            shutdown,
            roles,
            rule_ids,
            transactions,
        };
        shared.reset();
        shared
    }

    pub fn reset(&self) {
        let mut store = self.store.lock().expect("store lock");
        *store = Store::default();
        for t in &self.config.tables {
            store.tables.insert(
                t.name.clone(),
                TableData {
                    counter: t.first_number.saturating_sub(1),
                    ..TableData::default()
                },
            );
        }
        let now = format_glide_time(self.now());
        for (table, seed) in &self.seeds {
            let mut row = seed.clone();
            for (k, v) in [
                ("sys_created_on", now.as_str()),
                ("sys_created_by", "system"),
                ("sys_updated_on", now.as_str()),
                ("sys_updated_by", "system"),
                ("sys_mod_count", "0"),
                ("sys_class_name", table.as_str()),
            ] {
                row.insert(k.to_string(), v.to_string());
            }
            store.tables.entry(table.clone()).or_default().insert(row);
        }
        self.clock_offset_ms.store(0, Ordering::SeqCst);
        store.jobs_since = self.now_unix();
    }

    /// Run the scheduled jobs whose run time the clock has passed since they last ran (each run acts as of
    /// its own run time): `purge_without_attachment` deletes the records created before the run that had no
    /// attachment by then.
    pub fn run_due_jobs(&self, store: &mut Store) {
        let now = self.now_unix();
        for t in &self.config.tables {
            let Some(job) = &t.purge_without_attachment else {
                continue;
            };
            let every = job.every_s.max(1) as i64;
            let last_run = now - now.rem_euclid(every);
            let ran_until = store.jobs_ran_until.get(&t.name).copied().unwrap_or(store.jobs_since);
            if last_run <= ran_until {
                continue;
            }
            store.jobs_ran_until.insert(t.name.clone(), last_run);
            let Some(run_at) = OffsetDateTime::from_unix_timestamp(last_run)
                .ok()
                .map(format_glide_time)
            else {
                continue;
            };
            let before_run = |r: &Fields| r.get("sys_created_on").is_some_and(|c| *c <= run_at);
            let attached: Vec<String> = store
                .tables
                .get("sys_attachment")
                .map(|a| {
                    a.rows
                        .iter()
                        .filter(|r| r.get("table_name") == Some(&t.name) && before_run(r))
                        .filter_map(|r| r.get("table_sys_id").cloned())
                        .collect()
                })
                .unwrap_or_default();
            let Some(data) = store.tables.get_mut(&t.name) else {
                continue;
            };
            let purged: Vec<String> = data
                .rows
                .iter()
                .filter(|r| before_run(r))
                .filter_map(|r| r.get("sys_id").cloned())
                .filter(|id| !attached.contains(id))
                .collect();
            for id in &purged {
                data.remove(id);
            }
            tracing::debug!(job = %job.job, table = %t.name, purged = purged.len(), "scheduled job ran");
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + time::Duration::milliseconds(self.clock_offset_ms.load(Ordering::Relaxed))
    }

    pub fn now_unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    pub fn advance_clock(&self, by: Duration) {
        self.clock_offset_ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    pub fn table_config(&self, name: &str) -> Option<&TableConfig> {
        self.config.table(name)
    }

    pub fn roles_of(&self, user: &str) -> &[String] {
        self.roles.get(user).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.roles_of(user).iter().any(|r| r == ADMIN_ROLE)
    }

    fn has_any(&self, user: &str, roles: &[String]) -> bool {
        self.is_admin(user) || self.roles_of(user).iter().any(|r| roles.contains(r))
    }

    fn created_by(user: &str, row: &Fields) -> bool {
        row.get("sys_created_by").is_some_and(|c| c == user)
    }

    pub fn can_create(&self, user: &str, table: &str) -> bool {
        match self.table_config(table) {
            Some(t) => self.has_any(user, &t.create_roles),
            None => self.is_admin(user),
        }
    }

    /// Read ACL: restriction first, then read/write roles, then the *_own roles on the user's own records.
    /// Reading a table's rows through their parent record (`read_through`) needs the store: see
    /// [`Shared::can_read_in`].
    pub fn can_read(&self, user: &str, table: &str, row: &Fields) -> bool {
        let Some(t) = self.table_config(table) else {
            return self.is_admin(user);
        };
        if let Some(r) = &t.restriction
            && row.get(&r.field).is_some_and(|v| v == "true")
        {
            return self.has_any(user, &r.roles);
        }
        self.has_any(user, &t.read_roles)
            || self.has_any(user, &t.write_roles)
            || (Self::created_by(user, row)
                && (self.has_any(user, &t.read_own_roles) || self.has_any(user, &t.write_own_roles)))
    }

    /// [`Shared::can_read`], and when the instance lets journal entries be read through their record
    /// (`journal_read_through_record`), a `read_through` row whose record the user may read.
    pub fn can_read_in(&self, store: &Store, user: &str, table: &str, row: &Fields) -> bool {
        let through = self.table_config(table).and_then(|t| t.read_through.as_ref());
        let Some(through) = through.filter(|_| self.config.journal_read_through_record) else {
            return self.can_read(user, table, row);
        };
        if self.can_read(user, table, row) {
            return true;
        }
        let parent_table = row.get(&through.table_field).map(String::as_str).unwrap_or("");
        let parent = row
            .get(&through.id_field)
            .and_then(|id| store.tables.get(parent_table)?.get(id));
        self.is_admin(user) || parent.is_some_and(|p| self.can_read(user, parent_table, p))
    }

    pub fn can_write(&self, user: &str, table: &str, row: &Fields) -> bool {
        let Some(t) = self.table_config(table) else {
            return self.is_admin(user);
        };
        self.has_any(user, &t.write_roles) || (Self::created_by(user, row) && self.has_any(user, &t.write_own_roles))
    }

    pub fn can_delete(&self, user: &str, table: &str) -> bool {
        match self.table_config(table) {
            Some(t) => self.has_any(user, &t.delete_roles),
            None => self.is_admin(user),
        }
    }

    /// Resolve a reference value to a sys_id of `target` (a sys_id, or a display value when `by_display`):
    /// Ok(sys_id or "" when the policy leaves it empty).
    pub fn resolve_reference(
        &self,
        store: &Store,
        target: &str,
        field: &str,
        value: &str,
        by_display: bool,
    ) -> Result<String, ReferenceError> {
        use crate::config::ReferencePolicy;
        let rows = store.tables.get(target).map(|d| d.rows.as_slice()).unwrap_or(&[]);
        if value.is_empty() || rows.iter().any(|r| r.get("sys_id").is_some_and(|id| id == value)) {
            return Ok(value.to_string());
        }
        let display = self.table_config(target).map(|t| t.display_field()).unwrap_or("name");
        let matches: Vec<&String> = if by_display {
            rows.iter()
                .filter(|r| r.get(display).is_some_and(|d| d == value))
                .filter_map(|r| r.get("sys_id"))
                .collect()
        } else {
            vec![]
        };
        match matches.len() {
            1 => Ok(matches[0].clone()),
            0 => match self.config.unknown_reference {
                ReferencePolicy::Reject => Err(ReferenceError::Unknown {
                    table: target.into(),
                    field: field.into(),
                    value: value.into(),
                }),
                _ => Ok(String::new()),
            },
            _ => match self.config.ambiguous_reference {
                ReferencePolicy::Reject => Err(ReferenceError::Ambiguous {
                    count: matches.len(),
                    table: target.into(),
                    field: field.into(),
                    value: value.into(),
                }),
                ReferencePolicy::First => Ok(matches[0].clone()),
                ReferencePolicy::Blank => Ok(String::new()),
            },
        }
    }

    /// The referenced record, if it exists.
    pub fn referenced<'a>(&self, store: &'a Store, target: &str, sys_id: &str) -> Option<&'a Fields> {
        store.tables.get(target)?.get(sys_id)
    }

    /// Display value of a field: a reference's target display value, a choice's label, else the value.
    pub fn display_value(&self, store: &Store, table: &str, field: &str, value: &str) -> String {
        let Some(cfg) = self.table_config(table) else {
            return value.to_string();
        };
        if let Some(target) = cfg.references.get(field) {
            let display = self.table_config(target).map(|t| t.display_field()).unwrap_or("name");
            return self
                .referenced(store, target, value)
                .and_then(|r| r.get(display))
                .cloned()
                .unwrap_or_default();
        }
        if let Some(label) = cfg.choices.get(field).and_then(|c| c.get(value)) {
            return label.clone();
        }
        value.to_string()
    }

    pub fn records_json(&self, table: &str) -> Vec<serde_json::Value> {
        let mut store = self.store.lock().expect("store lock");
        self.run_due_jobs(&mut store);
        let Some(data) = store.tables.get(table) else {
            return Vec::new();
        };
        let cfg = self.table_config(table);
        data.rows
            .iter()
            .map(|row| {
                let mut obj = serde_json::Map::new();
                for (k, v) in row {
                    obj.insert(k.clone(), serde_json::Value::String(v.clone()));
                    if cfg.is_some_and(|c| c.references.contains_key(k)) {
                        let dv = self.display_value(&store, table, k, v);
                        obj.insert(format!("{k}.display_value"), serde_json::Value::String(dv));
                    }
                }
                serde_json::Value::Object(obj)
            })
            .collect()
    }

    pub fn log(&self, store: &mut Store, entry: LoggedRequest) {
        if store.log.len() >= self.config.request_log_capacity.max(1) {
            store.log.pop_front();
        }
        store.log.push_back(entry);
    }
}

/// A reference value that the instance cannot resolve (answered 400 "Invalid reference" under `reject`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("Unable to find a record in {table} matching '{value}' for reference field {field}")]
    Unknown {
        table: String,
        field: String,
        value: String,
    },
    #[error("Ambiguous reference: {count} records in {table} match '{value}' for reference field {field}")]
    Ambiguous {
        count: usize,
        table: String,
        field: String,
        value: String,
    },
}

/// Priority from impact × urgency with the default lookup matrix.
pub fn priority(impact: &str, urgency: &str) -> Option<&'static str> {
    Some(match (impact, urgency) {
        ("1", "1") => "1",
        ("1", "2") | ("2", "1") => "2",
        ("1", "3") | ("2", "2") | ("3", "1") => "3",
        ("2", "3") | ("3", "2") => "4",
        ("3", "3") => "5",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_matrix_is_the_default_lookup() {
        let expected = [
            ("1", "1", "1"),
            ("1", "2", "2"),
            ("1", "3", "3"),
            ("2", "1", "2"),
            ("2", "2", "3"),
            ("2", "3", "4"),
            ("3", "1", "3"),
            ("3", "2", "4"),
            ("3", "3", "5"),
        ];
        for (i, u, p) in expected {
            assert_eq!(priority(i, u), Some(p), "impact {i} urgency {u}");
        }
        assert_eq!(priority("4", "1"), None);
    }

    #[test]
    fn glide_time_format() {
        let t = time::macros::datetime!(2024-03-05 07:08:09 UTC);
        assert_eq!(format_glide_time(t), "2024-03-05 07:08:09");
    }
}
