//! HTTP/1.1 server: accept loop, per-connection keep-alive, fault application, the /sim control API.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::api::{self, Reply, Req};
use crate::faults::{Fault, FaultKind, take_matching};
use crate::store::{LoggedRequest, Shared};

/// Only loopback peers may use the /sim control API.
pub fn is_loopback_peer(peer: &SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// A TCP stream that closes with RST (SO_LINGER 0) when a fault asked for a connection reset.
struct ResettableStream {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            #[allow(deprecated)]
            let _ = self.inner.set_linger(Some(std::time::Duration::ZERO));
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by injected fault")
    }
}

impl std::error::Error for DropConnection {}

pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let reset = Arc::new(AtomicBool::new(false));
            let io = TokioIo::new(ResettableStream {
                inner: stream,
                reset: reset.clone(),
            });
            let mut shutdown = shared.shutdown.subscribe();
            let svc_shared = shared.clone();
            let service = hyper::service::service_fn(move |req| {
                let shared = svc_shared.clone();
                let reset = reset.clone();
                async move { handle_connection_request(shared, peer, req, reset).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(io, service);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.wait_for(|v| *v) => {}
            }
        });
    }
}

async fn handle_connection_request(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
    reset: Arc<AtomicBool>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let limit = shared.config.max_content_length;
    let body = match Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let reply = api::error_reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request entity too large",
                Some(&format!(
                    "The payload exceeds glide.rest.max_content_length ({limit} bytes)"
                )),
            );
            log(
                &shared,
                &parts.method,
                &path,
                &query,
                reply.status.as_u16(),
                None,
                None,
                None,
            );
            return Ok(into_response(reply));
        }
    };

    if path == "/sim" || path.starts_with("/sim/") {
        return Ok(into_response(control(&shared, peer, &parts.method, &path, &body)));
    }

    let req = Req {
        method: parts.method,
        path,
        query,
        headers: parts.headers,
        body,
        via_batch: false,
    };
    let table = api::target_table(&req.path);
    if shared.store.lock().expect("store lock").hibernating {
        let reply = api::hibernating_reply();
        log(&shared, &req.method, &req.path, &req.query, 200, None, table, None);
        return Ok(into_response(reply));
    }
    // The transaction takes an API_INT thread (waiting in the queue if need be) and holds it until it answers.
    let Ok(slot) = shared.transactions.admit().await else {
        let reply = api::transactions_exhausted_reply();
        log(&shared, &req.method, &req.path, &req.query, 429, None, table, None);
        return Ok(into_response(reply));
    };
    let fault = take_matching(
        &mut shared.store.lock().expect("store lock").faults,
        table.as_deref(),
        req.method.as_str(),
    );
    let fault_name = fault.as_ref().map(|f| f.name());

    // Faults that act before the request is handled.
    let early = match &fault {
        Some(FaultKind::ServerError { status }) => Some(api::server_error_reply(*status)),
        Some(FaultKind::RateLimited { retry_after_s }) => Some(api::rate_limited_reply(
            &shared,
            "injected",
            0,
            shared.now_unix() + *retry_after_s as i64,
            *retry_after_s,
            "REST API",
        )),
        Some(FaultKind::RevokeTokens) => {
            shared.store.lock().expect("store lock").access_tokens.clear();
            Some(api::unauthenticated_reply())
        }
        Some(FaultKind::ConnectionReset { after_commit: false }) => {
            log(&shared, &req.method, &req.path, &req.query, 0, None, table, fault_name);
            reset.store(true, Ordering::SeqCst);
            return Err(DropConnection);
        }
        Some(FaultKind::Latency { ms }) => {
            tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
            None
        }
        _ => None,
    };
    if let Some(reply) = early {
        log(
            &shared,
            &req.method,
            &req.path,
            &req.query,
            reply.status.as_u16(),
            None,
            table,
            fault_name,
        );
        return Ok(into_response(reply));
    }

    if let Some(FaultKind::LateCommit { ms }) = fault {
        let delay = std::time::Duration::from_millis(ms);
        let late = shared.clone();
        return match crate::faults::timing::commit_later(delay, move || {
            let reply = api::handle(&late, &req);
            drop(slot);
            let status = reply.status.as_u16();
            log(
                &late,
                &req.method,
                &req.path,
                &req.query,
                status,
                reply.user.clone(),
                table,
                fault_name,
            );
            reply
        })
        .await
        {
            Some(reply) => Ok(into_response(reply)),
            None => Err(DropConnection),
        };
    }

    let mut reply = api::handle(&shared, &req);
    let latency = api::latency_api(&req).map_or(Duration::ZERO, |a| shared.transactions.latency(a));
    let running = latency + reply.hold;
    if !running.is_zero() {
        tokio::time::sleep(running).await;
    }
    // The transaction has finished: whatever happens to its answer, the thread is free.
    drop(slot);

    // Faults that act after the request was handled (and committed).
    match &fault {
        Some(FaultKind::TimeoutAfterWrite) => {
            log(
                &shared,
                &req.method,
                &req.path,
                &req.query,
                0,
                reply.user.clone(),
                table,
                fault_name,
            );
            let mut shutdown = shared.shutdown.subscribe();
            let _ = shutdown.wait_for(|v| *v).await;
            return Err(DropConnection);
        }
        Some(FaultKind::ConnectionReset { after_commit: true }) => {
            log(
                &shared,
                &req.method,
                &req.path,
                &req.query,
                0,
                reply.user.clone(),
                table,
                fault_name,
            );
            reset.store(true, Ordering::SeqCst);
            return Err(DropConnection);
        }
        Some(FaultKind::MalformedJson) => {
            reply.body = Bytes::from_static(b"{\"result\": {\"sys_id\": <!-- unexpected token --> ,}");
        }
        Some(FaultKind::TruncatedJson) => {
            let half = reply.body.len() / 2;
            reply.body = reply.body.slice(..half);
        }
        Some(FaultKind::TransactionCancelled) => {
            let user = reply.user.take();
            reply = api::error_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Transaction cancelled: maximum execution time exceeded",
                Some(
                    "Check logs for error trace or enable glide.rest.debug property to verify REST request processing",
                ),
            );
            reply.user = user;
        }
        _ => {}
    }
    log(
        &shared,
        &req.method,
        &req.path,
        &req.query,
        reply.status.as_u16(),
        reply.user.clone(),
        table,
        fault_name,
    );
    Ok(into_response(reply))
}

#[allow(clippy::too_many_arguments)]
fn log(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    status: u16,
    user: Option<String>,
    table: Option<String>,
    fault: Option<&str>,
) {
    let entry = LoggedRequest {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        status,
        user,
        at: (shared.now().unix_timestamp_nanos() / 1_000_000) as i64,
        table,
        via_batch: false,
        fault: fault.map(str::to_string),
    };
    let mut store = shared.store.lock().expect("store lock");
    shared.log(&mut store, entry);
}

pub fn into_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(reply.body));
    *resp.status_mut() = reply.status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    for (name, value) in reply.headers {
        headers.append(name, value);
    }
    resp
}

/// The user an analyst action acts as when the request names none (the default instance's `analyst`: agent
/// roles, not admin).
pub const ANALYST: &str = "analyst";

fn control(shared: &Shared, peer: SocketAddr, method: &Method, path: &str, body: &[u8]) -> Reply {
    if !is_loopback_peer(&peer) {
        return api::error_reply(
            StatusCode::FORBIDDEN,
            "Forbidden",
            Some("the /sim control API answers loopback peers only"),
        );
    }
    let rest = &path["/sim".len()..];
    match (method, rest) {
        (&Method::POST, r) if r.starts_with("/records/") => {
            let Some((table, sys_id)) = r["/records/".len()..].split_once('/') else {
                return api::error_reply(
                    StatusCode::BAD_REQUEST,
                    "Invalid path",
                    Some("expected /sim/records/{table}/{sys_id}"),
                );
            };
            let parsed = serde_json::from_slice::<serde_json::Value>(body).ok();
            let Some(fields) = parsed
                .as_ref()
                .and_then(|v| v.get("fields"))
                .and_then(|f| f.as_object())
            else {
                return api::error_reply(
                    StatusCode::BAD_REQUEST,
                    "Invalid body",
                    Some("expected {\"fields\": {...}, \"user\": \"admin\"}"),
                );
            };
            let user = parsed
                .as_ref()
                .and_then(|v| v.get("user"))
                .and_then(|u| u.as_str())
                .unwrap_or(ANALYST);
            match api::act_as(shared, user, table, sys_id, fields) {
                Ok(row) => api::json_reply(StatusCode::OK, &serde_json::json!({ "result": row })),
                Err(reply) => reply,
            }
        }
        (&Method::GET, r) if r.starts_with("/records/") => {
            let table = &r["/records/".len()..];
            api::json_reply(
                StatusCode::OK,
                &serde_json::json!({ "result": shared.records_json(table) }),
            )
        }
        (&Method::GET, "/requests") => {
            let log: Vec<LoggedRequest> = shared.store.lock().expect("store lock").log.iter().cloned().collect();
            api::json_reply(StatusCode::OK, &serde_json::json!({ "result": log }))
        }
        (&Method::POST, "/reset") => {
            shared.reset();
            api::empty_reply(StatusCode::NO_CONTENT)
        }
        (&Method::POST, "/faults") => match serde_json::from_slice::<Fault>(body) {
            Ok(fault) => {
                shared.store.lock().expect("store lock").faults.push(fault);
                api::empty_reply(StatusCode::NO_CONTENT)
            }
            Err(e) => api::error_reply(StatusCode::BAD_REQUEST, "Invalid fault", Some(&e.to_string())),
        },
        (&Method::POST, "/hibernate") => match serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("on").and_then(|b| b.as_bool()))
        {
            Some(on) => {
                shared.store.lock().expect("store lock").hibernating = on;
                api::empty_reply(StatusCode::NO_CONTENT)
            }
            None => api::error_reply(
                StatusCode::BAD_REQUEST,
                "Invalid body",
                Some("expected {\"on\": true|false}"),
            ),
        },
        (&Method::POST, "/clock") => match serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("advance_s").and_then(|b| b.as_u64()))
        {
            Some(secs) => {
                shared.advance_clock(std::time::Duration::from_secs(secs));
                api::empty_reply(StatusCode::NO_CONTENT)
            }
            None => api::error_reply(
                StatusCode::BAD_REQUEST,
                "Invalid body",
                Some("expected {\"advance_s\": N}"),
            ),
        },
        _ => api::error_reply(StatusCode::NOT_FOUND, "Unknown control endpoint", Some(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_check() {
        assert!(is_loopback_peer(&"127.0.0.1:5000".parse().unwrap()));
        assert!(is_loopback_peer(&"127.8.9.10:5000".parse().unwrap()));
        assert!(is_loopback_peer(&"[::1]:5000".parse().unwrap()));
        assert!(is_loopback_peer(&"[::ffff:127.0.0.1]:5000".parse().unwrap()));
        assert!(!is_loopback_peer(&"10.0.0.5:5000".parse().unwrap()));
        assert!(!is_loopback_peer(&"192.168.1.2:80".parse().unwrap()));
        assert!(!is_loopback_peer(&"[2001:db8::1]:80".parse().unwrap()));
        assert!(!is_loopback_peer(&"[::ffff:10.0.0.1]:80".parse().unwrap()));
    }
}
