//! The ingest function: API Gateway HTTP API (payload v2) → the pipeline's HTTP router
//! ([`relay_pipeline::http::routes`]), the same router `relay serve` serves.
//!
//! The only Lambda-specific part is [`from_api_gateway`]: a request of a named stage (`/prod/v1/alerts`)
//! has the stage stripped from its path, and the status link's base (`https://<domain>[/<stage>]`) and the
//! caller's address (for the sender allow-list, `WEBHOOK_SOURCE_CIDRS`) come from the API Gateway request
//! context.

use std::sync::Arc;

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use metrics_cloudwatch_embedded::Collector;
use relay_pipeline::http::StatusBase;
use relay_pipeline::{Ingest, IngestSettings, Ports, SigningKeys, SourceAddr};
use tower::ServiceBuilder;

use crate::{LambdaError, Settings, build_router, cached_secret, load_config};

/// The ingest pipeline over `ports`: the webhook secret is fetched on first use and cached.
pub async fn ingest(settings: &Settings, ports: &Ports) -> Result<Ingest, LambdaError> {
    let router = build_router(settings, load_config(settings)?, ports.secrets.as_ref()).await?;
    let keys = cached_secret(settings, ports, &settings.webhook_secret_arn);
    let push = settings
        .push_secret_arn
        .as_deref()
        .map(|arn| SigningKeys::Secret(cached_secret(settings, ports, arn)));
    Ok(Ingest::new(
        ports,
        Arc::new(router),
        SigningKeys::Secret(keys),
        IngestSettings {
            ledger_retention: settings.ledger_retention,
            allowed_sources: settings.allowed_sources.clone(),
            ..IngestSettings::default()
        },
    )
    .with_push_keys(push))
}

/// Strip the stage from the path, put the public base URL in the request for the status link, and the
/// caller's address (`requestContext.http.sourceIp`) for the sender allow-list.
pub fn from_api_gateway(mut request: Request) -> Request {
    if let Some(RequestContext::ApiGatewayV2(ctx)) = request.request_context_ref() {
        let source: Option<std::net::IpAddr> = ctx.http.source_ip.as_deref().and_then(|ip| ip.parse().ok());
        let domain = ctx.domain_name.as_deref().filter(|d| !d.is_empty()).map(str::to_owned);
        let stage = ctx
            .stage
            .as_deref()
            .filter(|s| !s.is_empty() && *s != "$default")
            .map(str::to_owned);
        if let Some(ip) = source {
            request.extensions_mut().insert(SourceAddr(ip));
        }
        if let Some(domain) = domain {
            let base = match &stage {
                Some(stage) => format!("https://{domain}/{stage}"),
                None => format!("https://{domain}"),
            };
            request.extensions_mut().insert(StatusBase(base));
        }
        if let Some(stage) = stage {
            let prefix = format!("/{stage}");
            let uri = request.uri();
            if let Some(rest) = uri.path().strip_prefix(&prefix).filter(|r| r.starts_with('/')) {
                let path_and_query = match uri.query() {
                    Some(q) => format!("{rest}?{q}"),
                    None => rest.to_string(),
                };
                let mut parts = uri.clone().into_parts();
                if let Ok(pq) = path_and_query.parse() {
                    parts.path_and_query = Some(pq);
                    if let Ok(stripped) = http::Uri::from_parts(parts) {
                        *request.uri_mut() = stripped;
                    }
                }
            }
        }
    }
    request
}

/// The router Lambda serves: the pipeline's routes behind [`from_api_gateway`].
pub fn app(
    ingest: Arc<Ingest>,
) -> impl tower::Service<Request, Response = axum::response::Response, Error = std::convert::Infallible, Future = impl Send>
+ Clone {
    ServiceBuilder::new()
        .map_request(from_api_gateway)
        .service(relay_pipeline::http::routes(ingest, "https"))
}

/// Serve API Gateway requests until the runtime stops, flushing the metrics after each one.
pub async fn run(ingest: Ingest, metrics: &'static Collector) -> Result<(), LambdaError> {
    metrics_cloudwatch_embedded::lambda::service::run_http(metrics, app(Arc::new(ingest)))
        .await
        .map_err(|e| LambdaError::Runtime(e.to_string()))
}

#[cfg(test)]
mod tests;
