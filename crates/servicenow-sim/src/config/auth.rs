//! Who may log in: users, OAuth clients and the OAuth system properties.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub password: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClientConfig {
    pub client_id: String,
    pub client_secret: String,
    /// The OAuth application user that `client_credentials` acts as (None: grant refused).
    #[serde(default)]
    pub client_credentials_user: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    pub access_token_lifetime_s: u64,
    pub refresh_token_lifetime_s: u64,
    /// System property `glide.oauth.inbound.client.credential.grant_type.enabled` (default false: the
    /// client_credentials grant is refused).
    pub client_credentials_enabled: bool,
    /// System property `glide.oauth.inbound.ropc.grant_type.disabled` (Security Center hardening; default
    /// false: the password grant works).
    pub password_grant_disabled: bool,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            access_token_lifetime_s: 1800,
            refresh_token_lifetime_s: 100 * 24 * 3600,
            client_credentials_enabled: false,
            password_grant_disabled: false,
        }
    }
}
