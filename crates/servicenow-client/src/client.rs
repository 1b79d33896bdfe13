//! The client: its construction and the one authorized request every operation sends (`execute`). The
//! operations are in one file per API: `lookup` (Table API reads), `table` (Table API writes),
//! `import` (Import Set API), `batch` (Batch API), `events` (Event Management), `attachment` and
//! `lifecycle` (a record after creation: updates, its journal, many records read back).

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{ACCEPT, HeaderValue};

use crate::auth::Authenticator;
use crate::config::validate_instance_url;
use crate::outcome::{Effect, RawResponse, result_of};
use crate::{ClientConfig, ClientError, CredentialSource, Outcome};

mod attachment;
mod batch;
mod events;
mod import;
mod lifecycle;
mod lookup;
mod table;

pub use batch::BatchItem;
pub use lifecycle::{JournalEntry, MAX_READ_IDS};
pub use lookup::{Expect, LOOKUP_ROWS, RecordKey};

/// A ServiceNow REST client. Cheap to clone; clones share the connection pool and the OAuth token.
#[derive(Clone)]
pub struct ServiceNowClient {
    inner: Arc<Inner>,
}

struct Inner {
    instance_url: String,
    http: reqwest::Client,
    auth: Authenticator,
    max_response_bytes: usize,
    batch_counter: AtomicU64,
}

impl std::fmt::Debug for ServiceNowClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceNowClient")
            .field("instance_url", &self.inner.instance_url)
            .finish_non_exhaustive()
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A transport error in words, without URLs (they could carry query values).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connect error"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "response body error"
    } else {
        "request error"
    };
    let mut root = String::new();
    let mut src = e.source();
    while let Some(s) = src {
        root = s.to_string();
        src = s.source();
    }
    if root.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {root}")
    }
}

/// What a transport failure means: nothing sent (connect) → retryable; otherwise the answer was lost.
fn transport_outcome(e: &reqwest::Error, effect: Effect) -> Outcome {
    if e.is_connect() {
        Outcome::retryable(format!("could not connect: {}", describe(e)))
    } else {
        effect.lost_answer(format!("request sent, no answer: {}", describe(e)))
    }
}

impl ServiceNowClient {
    /// Build a client. Validates the instance URL (see [`crate::validate_instance_url`]) and the config.
    pub fn new(config: ClientConfig, credentials: Arc<dyn CredentialSource>) -> Result<Self, ClientError> {
        let instance_url = validate_instance_url(&config.instance_url)?;
        if config.connect_timeout.is_zero() || config.total_timeout.is_zero() {
            return Err(ClientError::InvalidConfig(
                "connect_timeout and total_timeout must be above zero".into(),
            ));
        }
        if config.connect_timeout > config.total_timeout {
            return Err(ClientError::InvalidConfig(
                "connect_timeout must not exceed total_timeout".into(),
            ));
        }
        let user_agent = HeaderValue::from_str(&config.user_agent)
            .map_err(|_| ClientError::InvalidConfig("user_agent contains characters not allowed in a header".into()))?;
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .connect_timeout(config.connect_timeout)
            .timeout(config.total_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(instance_url.starts_with("https://"))
            .pool_idle_timeout(std::time::Duration::from_secs(50))
            .tcp_keepalive(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::InvalidConfig(format!("HTTP client: {e}")))?;
        let auth = Authenticator::new(credentials, config.token_refresh_margin, &instance_url);
        Ok(ServiceNowClient {
            inner: Arc::new(Inner {
                instance_url,
                http,
                auth,
                max_response_bytes: config.max_response_bytes,
                batch_counter: AtomicU64::new(0),
            }),
        })
    }

    /// The validated instance URL, `scheme://host[:port]` without a trailing slash.
    pub fn instance_url(&self) -> &str {
        &self.inner.instance_url
    }

    /// Send one request with authorization; on 401 retry once with fresh credentials/token.
    /// `Ok` is any HTTP answer other than a final 401; `Err` is a transport failure or auth failure.
    async fn execute(
        &self,
        op: &'static str,
        table: &str,
        effect: Effect,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<RawResponse, Outcome> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let auth = match self.inner.auth.authorization(&self.inner.http).await {
                Ok(a) => a,
                // Token request refused or credentials unusable: the secret may have been rotated.
                Err(Outcome::Auth { .. }) if attempt == 1 => {
                    self.inner.auth.invalidate_source().await;
                    continue;
                }
                Err(o) => return Err(o),
            };
            let started = Instant::now();
            let sent = build()
                .header(ACCEPT, "application/json")
                .header(reqwest::header::AUTHORIZATION, auth.value.clone())
                .send()
                .await;
            let mut resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    let outcome = transport_outcome(&e, effect);
                    tracing::debug!(
                        op,
                        table,
                        class = outcome.class(),
                        latency_ms = started.elapsed().as_millis() as u64,
                        "servicenow call failed"
                    );
                    return Err(outcome);
                }
            };
            let status = resp.status().as_u16();
            if status == 401 && attempt == 1 {
                tracing::debug!(
                    op,
                    table,
                    status,
                    "servicenow answered 401: retrying with fresh credentials"
                );
                self.inner.auth.rejected(&auth).await;
                continue;
            }
            let headers = std::mem::take(resp.headers_mut());
            let mut body = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        if body.len() + chunk.len() > self.inner.max_response_bytes {
                            return Err(effect.lost_answer(format!(
                                "HTTP {status} response larger than {} bytes",
                                self.inner.max_response_bytes
                            )));
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(
                            op,
                            table,
                            status,
                            latency_ms = started.elapsed().as_millis() as u64,
                            "servicenow response body failed"
                        );
                        return Err(
                            effect.lost_answer(format!("HTTP {status} response body incomplete: {}", describe(&e)))
                        );
                    }
                }
            }
            tracing::debug!(
                op,
                table,
                status,
                latency_ms = started.elapsed().as_millis() as u64,
                "servicenow call"
            );
            let raw = RawResponse {
                status,
                headers,
                body: body.into(),
            };
            if status == 401 {
                return Err(result_of(&raw, effect, unix_now()).err().unwrap_or(Outcome::Auth {
                    message: "HTTP 401".into(),
                }));
            }
            return Ok(raw);
        }
    }
}
