//! [`SecretStore`] over AWS Secrets Manager.

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use relay_ports::{PortError, SecretStore};

use crate::error::port_error;

/// Reads secrets with `GetSecretValue` (current version). No caching here: the caller caches and
/// refreshes (on a TTL and on authentication failures), so rotation is picked up.
#[derive(Debug, Clone)]
pub struct SecretsManagerStore {
    client: Client,
}

impl SecretsManagerStore {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self::from_client(Client::new(config))
    }

    pub fn from_client(client: Client) -> Self {
        SecretsManagerStore { client }
    }
}

#[async_trait]
impl SecretStore for SecretsManagerStore {
    /// `id` is the secret's ARN or name. A missing secret is `NotFound`; a binary secret must be UTF-8.
    /// Errors name the secret, never its value.
    async fn fetch(&self, id: &str) -> Result<String, PortError> {
        if id.is_empty() {
            return Err(PortError::Rejected(
                "Secrets Manager GetSecretValue: secret id is empty".into(),
            ));
        }
        let out = self
            .client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| port_error(&format!("Secrets Manager GetSecretValue of {id}"), e))?;
        if let Some(text) = out.secret_string {
            return Ok(text);
        }
        if let Some(blob) = out.secret_binary {
            return String::from_utf8(blob.into_inner()).map_err(|_| {
                PortError::Rejected(format!(
                    "Secrets Manager GetSecretValue of {id}: binary secret is not UTF-8"
                ))
            });
        }
        Err(PortError::Rejected(format!(
            "Secrets Manager GetSecretValue of {id}: the secret has no value"
        )))
    }
}
