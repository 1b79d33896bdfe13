//! The routing and mapping config (YAML, `config/relay.yaml` is the shipped default), loaded and validated.
//!
//! Loading reports EVERY problem, each naming the rule (or section) it is in: unknown record types and
//! tables, unreachable rules, bad condition paths, duplicate names, unknown template placeholders, …
//!
//! `raw.rs` holds the file's shapes as written, `compile.rs` turns them into the [`Config`] of `model.rs`
//! (or every problem), `template.rs` the short-description templates.

mod compile;
mod model;
mod raw;
mod template;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use model::{
    BatchSettings, ClosedPolicy, Config, DEFAULT_BATCH_WINDOW, DEFAULT_CORRELATION_PREFIX,
    DEFAULT_MAX_ALERTS_PER_RECORD, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_REQUESTS_PER_BATCH,
    DEFAULT_PERSON_CACHE_TTL_SECONDS, DeliveryMode, DepartmentGroups, Escalation, GROUP_KEYS, GroupSpec, ImpactUrgency,
    MAX_ALERTS_PER_RECORD, MAX_BATCH_WINDOW, PersonMatch, PersonSettings, Privacy, RecordType, Rule, THREAD_KEYS,
    Target, ThreadOverride, ThreadSettings, TypeDefaults,
};
pub use template::{Placeholder, Template, TemplateError, TemplatePart};

/// The config compiled into the binaries and used when none is given.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../../../config/relay.yaml");

/// How [`Config::load`] names the compiled-in config.
pub const BUILT_IN_CONFIG_NAME: &str = "built-in config/relay.yaml";

/// One config problem, named by where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigProblem {
    /// `rule "name"`, `alert_types.dlp`, `defaults`, `tables`, `batch`, or `file`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem of a config text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config ({} problem{}):\n  {}", .problems.len(), if .problems.len() == 1 { "" } else { "s" },
        .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

/// Why [`Config::load`] has no config. The message names the file and the problem (every problem of an
/// invalid config).
#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    #[error("cannot read config {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}: {source}")]
    Invalid {
        /// The path as given, or [`BUILT_IN_CONFIG_NAME`].
        name: String,
        #[source]
        source: ConfigError,
    },
}

/// A validated config and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    pub config: Config,
    /// For messages: the path as given, or [`BUILT_IN_CONFIG_NAME`].
    pub source: String,
}

impl Config {
    /// The shipped default config.
    pub fn default_config() -> Config {
        Config::from_yaml(DEFAULT_CONFIG_YAML).expect("the shipped config/relay.yaml is valid (tested)")
    }

    /// Parse and validate a config file's text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = serde_yaml_ng::from_str(text).map_err(|e| ConfigError {
            problems: vec![ConfigProblem {
                location: "file".into(),
                message: e.to_string(),
            }],
        })?;
        let hash = hex::encode(Sha256::digest(text.as_bytes()))[..16].to_string();
        compile::compile(raw, hash)
    }

    /// The config in the file at `path`, or the compiled-in default when there is none: what every binary
    /// loads at start.
    pub fn load(path: Option<&Path>) -> Result<LoadedConfig, ConfigLoadError> {
        let (text, source) = match path {
            None => (DEFAULT_CONFIG_YAML.to_string(), BUILT_IN_CONFIG_NAME.to_string()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigLoadError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                (text, p.display().to_string())
            }
        };
        match Config::from_yaml(&text) {
            Ok(config) => Ok(LoadedConfig { config, source }),
            Err(problems) => Err(ConfigLoadError::Invalid {
                name: source,
                source: problems,
            }),
        }
    }
}
