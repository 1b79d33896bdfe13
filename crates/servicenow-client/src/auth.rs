//! Authorization headers: Basic, or an OAuth bearer token fetched once and shared (single-flight).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::HeaderValue;
use serde_json::Value;
use tokio::sync::Mutex;

use secrecy::ExposeSecret;

use crate::outcome::{Effect, RawResponse, error_envelope, result_of};
use crate::{ClientError, CredentialSource, Credentials, Outcome};

/// The header to send, and which token generation it came from (to invalidate only that one on 401).
pub(crate) struct Authorization {
    pub value: HeaderValue,
    pub generation: Option<u64>,
}

#[derive(Default)]
struct TokenCache {
    access: Option<(String, Instant)>,
    refresh: Option<String>,
    generation: u64,
    /// The last token request's failure and when it ended: callers that were already waiting for that request
    /// get its answer instead of each asking again in turn.
    failed: Option<(Outcome, Instant)>,
}

pub(crate) struct Authenticator {
    source: Arc<dyn CredentialSource>,
    tokens: Mutex<TokenCache>,
    margin: Duration,
    token_url: String,
}

fn credentials_outcome(e: ClientError) -> Outcome {
    match e {
        ClientError::CredentialsUnavailable(m) => Outcome::retryable(format!("credentials unavailable: {m}")),
        other => Outcome::Auth {
            message: other.to_string(),
        },
    }
}

fn sensitive(v: String) -> Result<HeaderValue, Outcome> {
    let mut h = HeaderValue::from_str(&v).map_err(|_| Outcome::Auth {
        message: "credentials contain characters not allowed in a header".into(),
    })?;
    h.set_sensitive(true);
    Ok(h)
}

impl Authenticator {
    pub(crate) fn new(source: Arc<dyn CredentialSource>, margin: Duration, instance_url: &str) -> Self {
        Authenticator {
            source,
            tokens: Mutex::new(TokenCache::default()),
            margin,
            token_url: format!("{instance_url}/oauth_token.do"),
        }
    }

    pub(crate) async fn authorization(&self, http: &reqwest::Client) -> Result<Authorization, Outcome> {
        let creds = self.source.credentials().await.map_err(credentials_outcome)?;
        match &creds {
            Credentials::Basic { username, password } => {
                let raw = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose_secret()));
                Ok(Authorization {
                    value: sensitive(format!("Basic {raw}"))?,
                    generation: None,
                })
            }
            _ => {
                // Holding the lock across the fetch makes concurrent callers wait for (and share) one fetch; a
                // failed fetch is shared the same way, so N waiters behind a slow failing token endpoint wait
                // for one request, not N in turn.
                let arrived = Instant::now();
                let mut cache = self.tokens.lock().await;
                if let Some((token, expires_at)) = &cache.access
                    && *expires_at > Instant::now()
                {
                    return Ok(Authorization {
                        value: sensitive(format!("Bearer {token}"))?,
                        generation: Some(cache.generation),
                    });
                }
                if let Some((outcome, ended)) = &cache.failed
                    && arrived < *ended
                {
                    return Err(outcome.clone());
                }
                match self.fresh_token(http, &creds, &mut cache).await {
                    Ok(auth) => {
                        cache.failed = None;
                        Ok(auth)
                    }
                    Err(o) => {
                        cache.failed = Some((o.clone(), Instant::now()));
                        Err(o)
                    }
                }
            }
        }
    }

    /// A new access token (by refresh token when there is one, else the full grant), stored in `cache`.
    async fn fresh_token(
        &self,
        http: &reqwest::Client,
        creds: &Credentials,
        cache: &mut TokenCache,
    ) -> Result<Authorization, Outcome> {
        let mut fetched = None;
        if let Some(refresh) = cache.refresh.take() {
            match self.fetch(http, creds, Some(&refresh)).await {
                Ok(t) => fetched = Some(t),
                Err(Outcome::Auth { .. }) => {} // refresh token expired or revoked: full grant
                Err(o) => {
                    cache.refresh = Some(refresh);
                    return Err(o);
                }
            }
        }
        let (token, lifetime, refresh) = match fetched {
            Some(t) => t,
            None => self.fetch(http, creds, None).await?,
        };
        let margin = self.margin.min(lifetime / 2);
        cache.generation += 1;
        cache.access = Some((token.clone(), Instant::now() + lifetime - margin));
        if refresh.is_some() {
            cache.refresh = refresh;
        }
        Ok(Authorization {
            value: sensitive(format!("Bearer {token}"))?,
            generation: Some(cache.generation),
        })
    }

    /// ServiceNow answered 401 to a request made with `auth`: forget that token and tell the source.
    pub(crate) async fn rejected(&self, auth: &Authorization) {
        if let Some(generation) = auth.generation {
            let mut cache = self.tokens.lock().await;
            if cache.generation == generation {
                cache.access = None;
            }
        }
        self.source.invalidate().await;
    }

    /// Ask the credential source to fetch afresh (a token request was refused).
    pub(crate) async fn invalidate_source(&self) {
        self.source.invalidate().await;
    }

    /// One request to `/oauth_token.do`. Returns (access token, lifetime, refresh token).
    async fn fetch(
        &self,
        http: &reqwest::Client,
        creds: &Credentials,
        refresh: Option<&str>,
    ) -> Result<(String, Duration, Option<String>), Outcome> {
        let mut form: Vec<(&str, &str)> = Vec::with_capacity(5);
        match (creds, refresh) {
            (
                Credentials::OAuthPassword {
                    client_id,
                    client_secret,
                    ..
                },
                Some(rt),
            )
            | (
                Credentials::OAuthClientCredentials {
                    client_id,
                    client_secret,
                },
                Some(rt),
            ) => {
                form.extend([
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.expose_secret()),
                    ("refresh_token", rt),
                ]);
            }
            (
                Credentials::OAuthPassword {
                    client_id,
                    client_secret,
                    username,
                    password,
                },
                None,
            ) => {
                form.extend([
                    ("grant_type", "password"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.expose_secret()),
                    ("username", username.as_str()),
                    ("password", password.expose_secret()),
                ]);
            }
            (
                Credentials::OAuthClientCredentials {
                    client_id,
                    client_secret,
                },
                None,
            ) => {
                form.extend([
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.expose_secret()),
                ]);
            }
            (Credentials::Basic { .. }, _) => unreachable!("basic credentials need no token"),
        }
        let started = Instant::now();
        let resp = http
            .post(&self.token_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| Outcome::retryable(format!("token request failed: {}", crate::client::describe(&e))))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Outcome::retryable(format!("token response unreadable: {}", crate::client::describe(&e))))?;
        tracing::debug!(
            op = "oauth_token",
            status,
            latency_ms = started.elapsed().as_millis() as u64,
            "servicenow call"
        );
        let raw = RawResponse { status, headers, body };
        if matches!(status, 400 | 401 | 403) {
            let why = error_envelope(&raw.body)
                .map(|(m, d)| match d {
                    Some(d) => format!("{m} ({d})"),
                    None => m,
                })
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Err(Outcome::Auth {
                message: format!("token request refused: {why}"),
            });
        }
        if !(200..300).contains(&status) {
            // Same classification as any other call (429/5xx retryable); a token request changes nothing.
            return Err(match result_of(&raw, Effect::Read, crate::client::unix_now()) {
                Err(o) => o,
                Ok(_) => Outcome::retryable(format!("token request answered HTTP {status}")),
            });
        }
        let v: Value = serde_json::from_slice(&raw.body).map_err(|_| {
            Outcome::retryable(format!(
                "token endpoint answered HTTP {status} without JSON: instance unavailable"
            ))
        })?;
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Outcome::retryable("token response has no access_token"))?;
        let lifetime = match v.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .unwrap_or(1799);
        let refresh = v
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        Ok((token.to_string(), Duration::from_secs(lifetime.max(1)), refresh))
    }
}
