//! A callback receiver for tests (feature `testing`): the monitoring product's end of the loop back,
//! listening on 127.0.0.1 on a port chosen at run time, recording every request and answering with the
//! statuses of its script.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::WebhookSecrets;

/// The secret the tests sign callbacks with (its own, not the webhooks').
pub const CALLBACK_SECRET: &str = "whsec_Y2FsbGJhY2stc2VjcmV0LTAxMjM0NTY3ODlhYg==";

/// One callback the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    /// When it arrived (epoch seconds).
    pub received_at_s: i64,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a callback body is JSON")
    }

    /// Its `type`.
    pub fn kind(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_string()
    }
}

/// The receiver: records every request and answers with the next status of its script (200 once the
/// script is used up). Stopped when dropped.
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start(script: &[u16]) -> Receiver {
        use axum::http::{HeaderMap, StatusCode};
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<u16>>()));
        let g = got.clone();
        let app = axum::Router::new().route(
            "/hooks/servicenow",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (g, s) = (g.clone(), script.clone());
                async move {
                    let h = |k: &str| {
                        headers
                            .get(k)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    g.lock().expect("not poisoned").push(Received {
                        id: h("webhook-id"),
                        timestamp: h("webhook-timestamp"),
                        signature: h("webhook-signature"),
                        body,
                        received_at_s: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs() as i64),
                    });
                    let status = s.lock().expect("not poisoned").pop_front().unwrap_or(200);
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver on loopback");
        let url = format!(
            "http://{}/hooks/servicenow",
            listener.local_addr().expect("a bound address")
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, got, task }
    }

    /// Every request so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().expect("not poisoned").clone()
    }

    /// Panic unless every request so far carried, when it arrived, a valid signature with
    /// [`CALLBACK_SECRET`], made at send time (within a minute of its arrival).
    pub fn verify_all(&self) {
        let keys = WebhookSecrets::parse(&[CALLBACK_SECRET]).expect("the test secret");
        for r in self.received() {
            keys.verify(
                Some(&r.id),
                Some(&r.timestamp),
                Some(&r.signature),
                r.body.as_bytes(),
                r.received_at_s,
            )
            .unwrap_or_else(|e| panic!("callback {} does not verify: {e:?}", r.id));
            let ts: i64 = r.timestamp.parse().expect("a numeric timestamp");
            assert!((r.received_at_s - ts).abs() < 60, "signed at send time");
        }
    }
}
