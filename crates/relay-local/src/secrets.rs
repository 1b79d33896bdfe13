//! [`LocalSecretStore`]: secrets from a JSON file and/or environment variables.
//!
//! File format: one JSON object mapping secret ids to values. A string value is returned as is; any other
//! JSON value (typically an object such as the ServiceNow secret) is returned as its compact JSON text, so
//! the file can hold the same documents Secrets Manager holds:
//!
//! ```json
//! {
//!   "servicenow": {"instance_url": "https://x.service-now.com", "auth": "basic",
//!                  "username": "relay", "password": "..."},
//!   "webhook": {"secrets": ["whsec_..."]}
//! }
//! ```
//!
//! Environment: with [`LocalSecretStore::with_env_prefix`]`("RELAY_SECRET_")`, the secret `servicenow` is
//! also looked up as `RELAY_SECRET_SERVICENOW` (the id upper-cased, every character other than A–Z and 0–9
//! replaced by `_`). The environment wins over the file. The file is read once, when loaded.

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use relay_ports::{PortError, SecretStore};
use secrecy::{ExposeSecret, SecretString};

use crate::LocalError;

/// Secrets for local mode. `Debug` shows the ids, never the values (they are [`SecretString`]s).
#[derive(Clone, Debug, Default)]
pub struct LocalSecretStore {
    values: HashMap<String, SecretString>,
    env_prefix: Option<String>,
}

impl LocalSecretStore {
    /// No secrets (add some with [`with_secret`](Self::with_secret) or the environment).
    pub fn new() -> Self {
        LocalSecretStore::default()
    }

    /// Load the JSON file at `path` (format in the module docs).
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self, LocalError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| LocalError::SecretsFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_json_str(&text).map_err(|reason| LocalError::SecretsFile {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parse the JSON document `text` (format in the module docs). The error names what is wrong.
    pub fn from_json_str(text: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let serde_json::Value::Object(map) = value else {
            return Err("the top level must be a JSON object mapping secret ids to values".into());
        };
        let mut values = HashMap::new();
        for (id, v) in map {
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => {
                    return Err(format!("secret {id:?} is null; give it a value or remove it"));
                }
                other => other.to_string(),
            };
            values.insert(id, SecretString::from(text));
        }
        Ok(LocalSecretStore {
            values,
            env_prefix: None,
        })
    }

    /// Add (or replace) one secret.
    pub fn with_secret(mut self, id: impl Into<String>, value: impl Into<String>) -> Self {
        self.values.insert(id.into(), SecretString::from(value.into()));
        self
    }

    /// Also look secrets up in environment variables named `prefix` + the normalised id.
    pub fn with_env_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.env_prefix = Some(prefix.into());
        self
    }

    /// The environment variable that holds `id` (when a prefix is set).
    pub fn env_var_name(&self, id: &str) -> Option<String> {
        let prefix = self.env_prefix.as_ref()?;
        let suffix: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        Some(format!("{prefix}{suffix}"))
    }

    fn lookup(&self, id: &str) -> Option<String> {
        if let Some(var) = self.env_var_name(id)
            && let Ok(v) = std::env::var(&var)
        {
            return Some(v);
        }
        self.values.get(id).map(|v| v.expose_secret().to_owned())
    }
}

#[async_trait]
impl SecretStore for LocalSecretStore {
    async fn fetch(&self, id: &str) -> Result<String, PortError> {
        self.lookup(id).ok_or_else(|| {
            let mut where_ = "the secrets file".to_string();
            if let Some(var) = self.env_var_name(id) {
                where_.push_str(&format!(" or the environment variable {var}"));
            }
            PortError::NotFound(format!("secret {id:?} is not in {where_}"))
        })
    }
}
