//! A stub of the Lambda runtime API on a loopback port, to run the real `bootstrap` binaries as Lambda runs
//! them: `GET …/invocation/next` hands out the queued events (with a request id, trace id and deadline),
//! `POST …/invocation/{id}/response` and `…/error` record the function's answers. Once the queue is empty,
//! `next` holds the request open, as Lambda does while no event arrives.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

/// One invocation to hand out.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub trace_id: String,
    pub event: Value,
}

/// What the function answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Response { request_id: String, body: Value },
    Error { request_id: String, body: Value },
    InitError { body: Value },
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<Invocation>>,
    answers: Mutex<Vec<Answer>>,
    next_calls: Mutex<u32>,
}

/// The running stub; stops when dropped.
pub struct StubRuntime {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl StubRuntime {
    pub async fn start() -> StubRuntime {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stub runtime");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the stub runtime serves");
        });
        StubRuntime { addr, shared, task }
    }

    /// `AWS_LAMBDA_RUNTIME_API` for the function.
    pub fn api(&self) -> String {
        self.addr.to_string()
    }

    pub fn push(&self, invocation: Invocation) {
        self.shared.queue.lock().expect("queue").push_back(invocation);
    }

    pub fn answers(&self) -> Vec<Answer> {
        self.shared.answers.lock().expect("answers").clone()
    }

    /// How many times the function asked for its next event.
    pub fn next_calls(&self) -> u32 {
        *self.shared.next_calls.lock().expect("next calls")
    }

    /// Wait until `n` answers arrived (or `timeout` passed); the answers so far.
    pub async fn wait_for_answers(&self, n: usize, timeout: Duration) -> Vec<Answer> {
        let deadline = Instant::now() + timeout;
        loop {
            let answers = self.answers();
            if answers.len() >= n || Instant::now() >= deadline {
                return answers;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for StubRuntime {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    *shared.next_calls.lock().expect("next calls") += 1;
    loop {
        let popped = shared.queue.lock().expect("queue").pop_front();
        if let Some(inv) = popped {
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64 + 60_000)
                .unwrap_or(0);
            let mut headers = HeaderMap::new();
            let mut set = |name: &'static str, value: &str| {
                if let Ok(v) = HeaderValue::from_str(value) {
                    headers.insert(name, v);
                }
            };
            set("lambda-runtime-aws-request-id", &inv.request_id);
            set("lambda-runtime-trace-id", &inv.trace_id);
            set("lambda-runtime-deadline-ms", &deadline.to_string());
            set(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:relay-test",
            );
            return (StatusCode::OK, headers, inv.event.to_string()).into_response();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn json(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn response(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    shared.answers.lock().expect("answers").push(Answer::Response {
        request_id: id,
        body: json(&body),
    });
    StatusCode::ACCEPTED
}

async fn error(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    shared.answers.lock().expect("answers").push(Answer::Error {
        request_id: id,
        body: json(&body),
    });
    StatusCode::ACCEPTED
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    shared
        .answers
        .lock()
        .expect("answers")
        .push(Answer::InitError { body: json(&body) });
    StatusCode::ACCEPTED
}
