//! The relay's HTTP API as the commands call it: POST a signed alert, GET an alert's status. The same calls
//! reach `relay serve` and the deployed API.

use relay_pipeline::WebhookSecrets;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// The address a relay listens on when none is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// A running relay, by its base URL. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RelayApi {
    http: reqwest::Client,
    base_url: String,
    /// Sent as `Authorization: Bearer` on the status route.
    read_token: Option<SecretString>,
}

/// One answer: the HTTP status and the JSON body (`null` when the body is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub async fn read(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        Answer {
            status,
            body: response.json::<Value>().await.unwrap_or(Value::Null),
        }
    }
}

impl RelayApi {
    pub fn new(http: reqwest::Client, base_url: &str) -> RelayApi {
        RelayApi {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            read_token: None,
        }
    }

    /// Send `token` on the status route (`relay serve` requires its read token there).
    pub fn with_read_token(mut self, token: Option<SecretString>) -> RelayApi {
        self.read_token = token;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The URL of one alert's status.
    pub fn alert_url(&self, alert_id: &str) -> String {
        format!("{}/v1/alerts/{alert_id}", self.base_url)
    }

    /// POST an alert webhook body to `/v1/alerts`, signed with `keys` as Standard Webhooks message
    /// `webhook_id` sent at `timestamp_s` (Unix seconds).
    pub async fn post_alert(
        &self,
        keys: &WebhookSecrets,
        webhook_id: &str,
        timestamp_s: i64,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let signature = keys.sign(webhook_id, timestamp_s, &body);
        self.http
            .post(format!("{}/v1/alerts", self.base_url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp_s.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
    }

    /// GET `/v1/alerts/{alert_id}`.
    pub async fn alert_status(&self, alert_id: &str) -> Result<Answer, reqwest::Error> {
        let mut request = self.http.get(self.alert_url(alert_id));
        if let Some(token) = &self.read_token {
            request = request.bearer_auth(token.expose_secret());
        }
        let response = request.send().await?;
        Ok(Answer::read(response).await)
    }

    /// GET `path` (e.g. `/healthz`) as JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value, reqwest::Error> {
        self.http
            .get(format!("{}{path}", self.base_url))
            .send()
            .await?
            .json()
            .await
    }
}
