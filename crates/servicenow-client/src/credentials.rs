//! Credentials and where they come from.

use async_trait::async_trait;
pub use secrecy::{ExposeSecret, SecretString};

use crate::ClientError;

/// How the client authenticates. Passwords and client secrets are [`SecretString`]s: `Debug` shows them as
/// redacted and they are exposed only where a request needs them.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// HTTP Basic with an integration user.
    Basic { username: String, password: SecretString },
    /// OAuth `password` grant: the token acts as `username`.
    OAuthPassword {
        client_id: String,
        client_secret: SecretString,
        username: String,
        password: SecretString,
    },
    /// OAuth `client_credentials` grant: the token acts as the OAuth application's user.
    OAuthClientCredentials {
        client_id: String,
        client_secret: SecretString,
    },
}

impl Credentials {
    /// `basic`, `oauth_password` or `oauth_client_credentials` (the secret's `auth` field).
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::Basic { .. } => "basic",
            Credentials::OAuthPassword { .. } => "oauth_password",
            Credentials::OAuthClientCredentials { .. } => "oauth_client_credentials",
        }
    }

    /// The user the requests act as, where the credentials name one (not with `client_credentials`, whose
    /// user is set on the instance's OAuth application).
    pub fn username(&self) -> Option<&str> {
        match self {
            Credentials::Basic { username, .. } | Credentials::OAuthPassword { username, .. } => Some(username),
            Credentials::OAuthClientCredentials { .. } => None,
        }
    }
}

/// Where the client gets its credentials (Secrets Manager, a local file, a fixed value).
#[async_trait]
pub trait CredentialSource: Send + Sync {
    /// The current credentials. Return [`ClientError::CredentialsUnavailable`] for a transient failure
    /// (the call is then retryable) and [`ClientError::InvalidCredentials`] for a malformed secret.
    async fn credentials(&self) -> Result<Credentials, ClientError>;
    /// Called when ServiceNow answered 401: a caching source should fetch afresh next time
    /// (the secret may have been rotated).
    async fn invalidate(&self) {}
}

/// Credentials fixed at start-up.
#[derive(Debug, Clone)]
pub struct StaticCredentials(pub Credentials);

#[async_trait]
impl CredentialSource for StaticCredentials {
    async fn credentials(&self) -> Result<Credentials, ClientError> {
        Ok(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let all = [
            Credentials::Basic {
                username: "relay".into(),
                password: "pw-SECRET-1".into(),
            },
            Credentials::OAuthPassword {
                client_id: "cid".into(),
                client_secret: "cs-SECRET-2".into(),
                username: "relay".into(),
                password: "pw-SECRET-3".into(),
            },
            Credentials::OAuthClientCredentials {
                client_id: "cid".into(),
                client_secret: "cs-SECRET-4".into(),
            },
        ];
        for c in all {
            let shown = format!("{c:?} {:?}", StaticCredentials(c.clone()));
            assert!(!shown.contains("SECRET"), "{shown}");
            assert!(shown.contains("REDACTED"), "{shown}");
        }
    }
}
