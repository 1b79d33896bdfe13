//! Validation of the `details` object: the typed fields of each alert type (counts, numbers, flags, lists,
//! the weekly trend), and the rest kept as text.

use serde_json::{Map, Value};

use super::{Checker, Lines, kind, whole};
use crate::alert::model::{AlertType, ComplianceHistory, Details, DlpChannel};
use crate::alert::{MAX_DESCRIPTION, MAX_LIST_ITEMS, MAX_NAME};

/// The most weeks `details.weekly_trend` may list.
const MAX_TREND_WEEKS: usize = 52;

impl Checker {
    /// A required count (see [`whole`]).
    fn count(&mut self, v: Option<&Value>, path: &str) -> Option<u64> {
        match v {
            None | Some(Value::Null) => {
                self.problem(path, "is required");
                None
            }
            Some(Value::Number(n)) => {
                let r = whole(n);
                if r.is_none() {
                    self.problem(path, format!("{n} must be a non-negative integer"));
                }
                r
            }
            Some(other) => {
                self.problem(path, format!("must be a non-negative integer, got {}", kind(other)));
                None
            }
        }
    }

    /// A required number from 0 to `max`.
    fn number(&mut self, v: Option<&Value>, path: &str, max: f64) -> Option<f64> {
        match v {
            None | Some(Value::Null) => {
                self.problem(path, "is required");
                None
            }
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if (0.0..=max).contains(&f) => Some(f),
                _ => {
                    self.problem(path, format!("{n} is out of range; must be 0 to {max}"));
                    None
                }
            },
            Some(other) => {
                self.problem(path, format!("must be a number, got {}", kind(other)));
                None
            }
        }
    }

    /// An optional boolean.
    fn flag(&mut self, v: Option<&Value>, path: &str) {
        match v {
            None | Some(Value::Null) | Some(Value::Bool(_)) => {}
            Some(other) => self.problem(path, format!("must be true or false, got {}", kind(other))),
        }
    }

    fn string_list(&mut self, v: Option<&Value>, path: &str) -> Option<Vec<String>> {
        match v {
            None | Some(Value::Null) => {
                self.problem(path, "is required (a list of strings)");
                None
            }
            Some(Value::Array(items)) if items.len() > MAX_LIST_ITEMS => {
                self.problem(
                    path,
                    format!("has {} items; the limit is {MAX_LIST_ITEMS}", items.len()),
                );
                None
            }
            Some(Value::Array(items)) => {
                let checked: Vec<Option<String>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.required(Some(item), &format!("{path}[{i}]"), MAX_NAME))
                    .collect();
                checked.into_iter().collect()
            }
            Some(other) => {
                self.problem(path, format!("must be a list of strings, got {}", kind(other)));
                None
            }
        }
    }

    fn weekly_trend(&mut self, v: Option<&Value>) -> Option<Vec<f64>> {
        let path = "$.details.weekly_trend";
        match v {
            None | Some(Value::Null) => {
                self.problem(path, "is required (hours per day for each week, oldest first)");
                None
            }
            Some(Value::Array(items)) if items.len() > MAX_TREND_WEEKS => {
                self.problem(
                    path,
                    format!("has {} weeks; the limit is {MAX_TREND_WEEKS}", items.len()),
                );
                None
            }
            Some(Value::Array(items)) => {
                let checked: Vec<Option<f64>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.number(Some(item), &format!("{path}[{i}]"), 24.0))
                    .collect();
                checked.into_iter().collect()
            }
            Some(other) => {
                self.problem(path, format!("must be a list of numbers, got {}", kind(other)));
                None
            }
        }
    }

    /// The typed details of `alert_type`, and the `details` object as sent.
    pub(super) fn details(
        &mut self,
        v: Option<&Value>,
        alert_type: Option<AlertType>,
    ) -> (Details, Map<String, Value>) {
        let obj = match v {
            None | Some(Value::Null) => {
                if alert_type.is_some_and(|t| t != AlertType::Custom) {
                    self.missing.push("details".into());
                }
                return (Details::None, Map::new());
            }
            Some(Value::Object(o)) => o,
            Some(other) => {
                self.problem("$.details", format!("must be an object, got {}", kind(other)));
                return (Details::None, Map::new());
            }
        };
        let details = match alert_type {
            None => None,
            Some(AlertType::Dlp) => self.dlp(obj),
            Some(AlertType::BehavioralAnomaly) => self.behavioral_anomaly(obj),
            Some(AlertType::Productivity) => self.productivity(obj),
            Some(AlertType::PolicyViolation) => self.policy_violation(obj),
            Some(AlertType::Custom) => {
                for (k, v) in obj {
                    if let Value::String(s) = v {
                        self.checked_str(&format!("$.details.{k}"), s, MAX_DESCRIPTION, Lines::Many);
                    }
                }
                Some(Details::Custom(obj.clone()))
            }
        };
        (details.unwrap_or(Details::None), obj.clone())
    }

    /// `obj[key]` checked by `check`, or None and the path noted as missing when it is absent or null: a
    /// typed detail the alert lacks is context the record goes without, not a reason to refuse the alert.
    fn detail<T>(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        check: impl FnOnce(&mut Self, Option<&Value>, &str) -> Option<T>,
    ) -> Option<T> {
        let path = format!("$.details.{key}");
        match obj.get(key) {
            None | Some(Value::Null) => {
                self.missing.push(format!("details.{key}"));
                None
            }
            v => check(self, v, &path),
        }
    }

    fn dlp(&mut self, obj: &Map<String, Value>) -> Option<Details> {
        let file_count = self.detail(obj, "file_count", Self::count);
        let bytes = self.detail(obj, "bytes", Self::count);
        let channel = self.detail(obj, "channel", |c, v, p| {
            c.one_of(v, p, &DlpChannel::ALL, DlpChannel::as_str)
        });
        Some(Details::Dlp {
            file_count,
            bytes,
            channel,
        })
    }

    fn behavioral_anomaly(&mut self, obj: &Map<String, Value>) -> Option<Details> {
        self.flag(obj.get("after_hours"), "$.details.after_hours");
        self.flag(obj.get("privileged_account"), "$.details.privileged_account");
        let systems = self.detail(obj, "systems", Self::string_list);
        let duration_minutes = self.detail(obj, "duration_minutes", Self::count);
        let applications = self.detail(obj, "applications", Self::string_list);
        Some(Details::BehavioralAnomaly {
            systems,
            duration_minutes,
            applications,
        })
    }

    fn productivity(&mut self, obj: &Map<String, Value>) -> Option<Details> {
        if obj.get("weeks").is_some_and(|v| !v.is_null()) {
            self.count(obj.get("weeks"), "$.details.weeks");
        }
        let hours_per_day = self.detail(obj, "hours_per_day", |c, v, p| c.number(v, p, 24.0));
        let categories = self.detail(obj, "categories", Self::string_list);
        let weekly_trend = self.detail(obj, "weekly_trend", |c, v, _| c.weekly_trend(v));
        Some(Details::Productivity {
            hours_per_day,
            categories,
            weekly_trend,
        })
    }

    fn policy_violation(&mut self, obj: &Map<String, Value>) -> Option<Details> {
        let policy = self.detail(obj, "policy", |c, v, p| c.required(v, p, MAX_NAME));
        let history = match obj.get("history_30d") {
            None | Some(Value::Null) => {
                self.missing.push("details.history_30d".into());
                None
            }
            v => self.required_object(
                v,
                "$.details.history_30d",
                " ({\"violations\": n, \"warnings\": n} over the last 30 days)",
            ),
        };
        let history_30d = history.and_then(|h| {
            let violations = self.history_count(h.get("violations"), "$.details.history_30d.violations");
            let warnings = self.history_count(h.get("warnings"), "$.details.history_30d.warnings");
            Some(ComplianceHistory {
                violations: violations?,
                warnings: warnings?,
            })
        });
        Some(Details::PolicyViolation { policy, history_30d })
    }

    fn history_count(&mut self, v: Option<&Value>, path: &str) -> Option<u64> {
        if v.is_none_or(Value::is_null) {
            self.missing.push(path.trim_start_matches("$.").to_string());
            return None;
        }
        let n = v.and_then(Value::as_number).and_then(whole);
        if n.is_none() {
            self.problem(path, "must be a non-negative integer");
        }
        n
    }
}
