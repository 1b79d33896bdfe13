//! The functions' settings, read from the environment once at init.

use std::path::PathBuf;
use std::time::Duration;

use relay_core::BackoffPolicy;
use relay_pipeline::{SourceAllowList, defaults};

use crate::LambdaError;

/// Everything the three functions read from their environment (see the team's environment conventions).
///
/// Every function reads the same variables, so one template block serves all three. Tests build this
/// struct directly (each test with its own queues, table, secrets and a compressed backoff schedule).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `REALTIME_QUEUE_URL`
    pub realtime_queue_url: String,
    /// `CRITICAL_QUEUE_URL` (optional): the critical alerts' queue, read by its own event source mapping;
    /// without it critical alerts go to the realtime queue (a stack from before the critical lane). The
    /// template sets it for ingest (which sends there) and deliver (which consumes it); flush never uses it.
    pub critical_queue_url: Option<String>,
    /// `BATCH_QUEUE_URL`
    pub batch_queue_url: String,
    /// `DLQ_URL`: where deliver and flush dead-letter the alerts they give up on.
    pub dlq_url: String,
    /// `LEDGER_TABLE`
    pub ledger_table: String,
    /// `WEBHOOK_SECRET_ARN`: `{"secrets": ["whsec_…", …]}`.
    pub webhook_secret_arn: String,
    /// `SERVICENOW_SECRET_ARN`: instance URL and credentials.
    pub servicenow_secret_arn: String,
    /// `FAILURE_TOPIC_ARN`
    pub failure_topic_arn: String,
    /// `RELAY_CONFIG_PATH` (optional): the routing config file; the compiled-in default otherwise.
    pub config_path: Option<PathBuf>,
    /// `PSEUDONYM_SECRET_ARN` (optional): the key for `privacy.pseudonymise_employee`.
    pub pseudonym_secret_arn: Option<String>,
    /// `FLUSH_BUDGET_SECONDS` (default 60): how long one flush may drain the batch queue.
    pub flush_budget: Duration,
    /// `METRICS_NAMESPACE` (default `AlertRelay`).
    pub metrics_namespace: String,
    /// The retry schedule; its `window` is `RETRY_WINDOW_SECONDS` (default 86400).
    pub backoff: BackoffPolicy,
    /// How long a deliverer's claim on an alert lasts: `FUNCTION_TIMEOUT_SECONDS` (the function's own
    /// timeout, set by the template) plus a margin, as nothing an invocation starts outlives it; without
    /// it, a whole attempt's worst case plus a margin.
    pub lease: Duration,
    /// How long a fetched secret is used before it is fetched again.
    pub secret_ttl: Duration,
    /// Time allowed for one ServiceNow HTTP exchange.
    pub servicenow_timeout: Duration,
    /// How long the ledger remembers an alert.
    pub ledger_retention: Duration,
    /// After an ambiguous create, how long no new create is sent.
    pub settle: Duration,
    /// `WEBHOOK_SOURCE_CIDRS` (optional): the networks webhooks may come from, separated by commas (the
    /// monitoring product's egress addresses); empty: any.
    pub allowed_sources: SourceAllowList,
    /// `CALLBACK_URL` and `CALLBACK_SECRET_ARN` (optional, both or neither; deliver and flush): signed
    /// callbacks to the monitoring product, and the secret (`{"secrets": ["whsec_…"]}`) they are signed with.
    pub callback: Option<CallbackSettings>,
    /// `PUSH_SECRET_ARN` (optional; ingest): the secret ServiceNow's pushes are signed with. Unset: the
    /// push endpoint answers 404.
    pub push_secret_arn: Option<String>,
}

/// Where the callbacks go and the secret that signs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackSettings {
    pub url: String,
    pub secret_arn: String,
}

const REQUIRED: [&str; 7] = [
    "REALTIME_QUEUE_URL",
    "BATCH_QUEUE_URL",
    "DLQ_URL",
    "LEDGER_TABLE",
    "WEBHOOK_SECRET_ARN",
    "SERVICENOW_SECRET_ARN",
    "FAILURE_TOPIC_ARN",
];

impl Settings {
    /// Read the process environment.
    pub fn from_env() -> Result<Settings, LambdaError> {
        Settings::from_lookup(|k| std::env::var(k).ok())
    }

    /// Read settings through `get` (the environment, or a map in tests). Empty values count as unset.
    /// Every missing or invalid variable is named in the error.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, LambdaError> {
        let get = |k: &str| get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let mut problems = Vec::new();
        let missing: Vec<&str> = REQUIRED.iter().copied().filter(|k| get(k).is_none()).collect();
        if !missing.is_empty() {
            problems.push(format!("missing environment variable(s): {}", missing.join(", ")));
        }
        let mut seconds = |name: &str, default: u64, min: u64| -> Duration {
            match get(name) {
                None => Duration::from_secs(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if n >= min => Duration::from_secs(n),
                    _ => {
                        problems.push(format!("{name}={v:?} is not a whole number of seconds ≥ {min}"));
                        Duration::from_secs(default)
                    }
                },
            }
        };
        let window = seconds(
            "RETRY_WINDOW_SECONDS",
            relay_core::backoff::DEFAULT_RETRY_WINDOW.as_secs(),
            1,
        );
        let flush_budget = seconds("FLUSH_BUDGET_SECONDS", defaults::FLUSH_DRAIN_BUDGET.as_secs(), 1);
        let lease = match get("FUNCTION_TIMEOUT_SECONDS") {
            None => defaults::lease_for_attempts(defaults::SERVICENOW_TIMEOUT),
            Some(_) => defaults::lease_for_function(seconds("FUNCTION_TIMEOUT_SECONDS", 0, 1)),
        };
        let allowed_sources = match SourceAllowList::parse(&get("WEBHOOK_SOURCE_CIDRS").unwrap_or_default()) {
            Ok(list) => list,
            Err(e) => {
                problems.push(format!("WEBHOOK_SOURCE_CIDRS: {e}"));
                SourceAllowList::default()
            }
        };
        let callback = match (get("CALLBACK_URL"), get("CALLBACK_SECRET_ARN")) {
            (None, None) => None,
            (Some(url), Some(secret_arn)) => {
                if let Err(e) = relay_pipeline::callback::validate_url(&url) {
                    problems.push(format!("CALLBACK_URL: {e}"));
                }
                Some(CallbackSettings { url, secret_arn })
            }
            (Some(_), None) => {
                problems.push("CALLBACK_URL is set without CALLBACK_SECRET_ARN (the callbacks' signing secret)".into());
                None
            }
            (None, Some(_)) => {
                problems.push("CALLBACK_SECRET_ARN is set without CALLBACK_URL".into());
                None
            }
        };
        if !problems.is_empty() {
            return Err(LambdaError::Settings(problems.join("; ")));
        }
        let req = |k: &str| get(k).unwrap_or_default();
        Ok(Settings {
            realtime_queue_url: req("REALTIME_QUEUE_URL"),
            critical_queue_url: get("CRITICAL_QUEUE_URL"),
            batch_queue_url: req("BATCH_QUEUE_URL"),
            dlq_url: req("DLQ_URL"),
            ledger_table: req("LEDGER_TABLE"),
            webhook_secret_arn: req("WEBHOOK_SECRET_ARN"),
            servicenow_secret_arn: req("SERVICENOW_SECRET_ARN"),
            failure_topic_arn: req("FAILURE_TOPIC_ARN"),
            config_path: get("RELAY_CONFIG_PATH").map(PathBuf::from),
            pseudonym_secret_arn: get("PSEUDONYM_SECRET_ARN"),
            flush_budget,
            metrics_namespace: get("METRICS_NAMESPACE").unwrap_or_else(|| defaults::METRICS_NAMESPACE.into()),
            backoff: BackoffPolicy {
                window,
                ..BackoffPolicy::default()
            },
            lease,
            secret_ttl: defaults::SECRET_TTL,
            servicenow_timeout: defaults::SERVICENOW_TIMEOUT,
            ledger_retention: defaults::LEDGER_RETENTION,
            settle: defaults::SETTLE_AFTER_AMBIGUOUS,
            allowed_sources,
            callback,
            push_secret_arn: get("PUSH_SECRET_ARN"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn full() -> HashMap<&'static str, String> {
        REQUIRED.iter().map(|k| (*k, format!("value-of-{k}"))).collect()
    }

    #[test]
    fn a_bad_sender_allow_list_is_named() {
        let mut env = full();
        env.insert("WEBHOOK_SOURCE_CIDRS", "203.0.113.0/24, 10.0.0.0/99".into());
        let err = Settings::from_lookup(|k| env.get(k).cloned()).unwrap_err().to_string();
        assert!(
            err.contains("WEBHOOK_SOURCE_CIDRS") && err.contains("10.0.0.0/99"),
            "{err}"
        );
        env.insert("WEBHOOK_SOURCE_CIDRS", "203.0.113.0/24 198.51.100.7".into());
        let s = Settings::from_lookup(|k| env.get(k).cloned()).unwrap();
        assert_eq!(s.allowed_sources.to_string(), "203.0.113.0/24, 198.51.100.7/32");
    }

    #[test]
    fn callbacks_need_both_variables_and_a_tls_url() {
        let mut env = full();
        assert_eq!(Settings::from_lookup(|k| env.get(k).cloned()).unwrap().callback, None);
        env.insert("CALLBACK_URL", "https://monitor.example.com/hooks/servicenow".into());
        let err = Settings::from_lookup(|k| env.get(k).cloned()).unwrap_err().to_string();
        assert!(err.contains("without CALLBACK_SECRET_ARN"), "{err}");
        env.insert("CALLBACK_SECRET_ARN", "arn:cb".into());
        let s = Settings::from_lookup(|k| env.get(k).cloned()).unwrap();
        assert_eq!(
            s.callback,
            Some(CallbackSettings {
                url: "https://monitor.example.com/hooks/servicenow".into(),
                secret_arn: "arn:cb".into()
            })
        );
        env.insert("CALLBACK_URL", "http://monitor.example.com/cb".into());
        let err = Settings::from_lookup(|k| env.get(k).cloned()).unwrap_err().to_string();
        assert!(err.contains("CALLBACK_URL") && err.contains("https"), "{err}");
        env.remove("CALLBACK_URL");
        let err = Settings::from_lookup(|k| env.get(k).cloned()).unwrap_err().to_string();
        assert!(err.contains("CALLBACK_SECRET_ARN is set without CALLBACK_URL"), "{err}");
    }

    #[test]
    fn reads_every_variable_with_defaults() {
        let env = full();
        let s = Settings::from_lookup(|k| env.get(k).cloned()).unwrap();
        assert_eq!(s.realtime_queue_url, "value-of-REALTIME_QUEUE_URL");
        assert_eq!(s.failure_topic_arn, "value-of-FAILURE_TOPIC_ARN");
        assert_eq!(s.backoff.window, Duration::from_secs(86_400));
        assert_eq!(s.flush_budget, Duration::from_secs(60));
        assert_eq!(s.metrics_namespace, "AlertRelay");
        assert_eq!(s.config_path, None);
        assert_eq!(s.pseudonym_secret_arn, None);
        assert_eq!(
            s.critical_queue_url, None,
            "optional: critical alerts use the realtime queue"
        );

        let mut env = full();
        env.insert("RETRY_WINDOW_SECONDS", "120".into());
        env.insert("FLUSH_BUDGET_SECONDS", " 30 ".into());
        env.insert("METRICS_NAMESPACE", "Relay".into());
        env.insert("RELAY_CONFIG_PATH", "/opt/relay.yaml".into());
        env.insert("PSEUDONYM_SECRET_ARN", "arn:p".into());
        env.insert("CRITICAL_QUEUE_URL", "https://sqs/critical".into());
        let s = Settings::from_lookup(|k| env.get(k).cloned()).unwrap();
        assert_eq!(s.backoff.window, Duration::from_secs(120));
        assert_eq!(s.flush_budget, Duration::from_secs(30));
        assert_eq!(s.metrics_namespace, "Relay");
        assert_eq!(s.config_path, Some(PathBuf::from("/opt/relay.yaml")));
        assert_eq!(s.pseudonym_secret_arn.as_deref(), Some("arn:p"));
        assert_eq!(s.critical_queue_url.as_deref(), Some("https://sqs/critical"));
    }

    #[test]
    fn the_lease_outlasts_the_function_timeout() {
        let mut env = full();
        let s = Settings::from_lookup(|k| env.get(k).cloned()).unwrap();
        assert_eq!(
            s.lease,
            defaults::lease_for_attempts(s.servicenow_timeout),
            "without the function timeout: a whole attempt plus the margin"
        );
        env.insert("FUNCTION_TIMEOUT_SECONDS", "900".into());
        let s = Settings::from_lookup(|k| env.get(k).cloned()).unwrap();
        assert_eq!(s.lease, Duration::from_secs(900) + defaults::LEASE_MARGIN);
        env.insert("FUNCTION_TIMEOUT_SECONDS", "soon".into());
        let e = Settings::from_lookup(|k| env.get(k).cloned()).unwrap_err().to_string();
        assert!(e.contains("FUNCTION_TIMEOUT_SECONDS=\"soon\""), "{e}");
    }

    #[test]
    fn names_every_missing_or_invalid_variable() {
        let mut env = full();
        env.remove("LEDGER_TABLE");
        env.insert("DLQ_URL", "   ".into());
        env.insert("RETRY_WINDOW_SECONDS", "a day".into());
        env.insert("FLUSH_BUDGET_SECONDS", "0".into());
        let e = Settings::from_lookup(|k| env.get(k).cloned()).unwrap_err().to_string();
        assert!(e.contains("DLQ_URL, LEDGER_TABLE"), "{e}");
        assert!(e.contains("RETRY_WINDOW_SECONDS=\"a day\""), "{e}");
        assert!(e.contains("FLUSH_BUDGET_SECONDS=\"0\""), "{e}");
        assert!(!e.contains("REALTIME_QUEUE_URL"), "{e}");
    }
}
