//! HTTP assembly: the router of every subsystem plus the middleware every request goes through.
//!
//! [`app`] merges the subsystem routers (`voice::routes()`, `api::routes()`), adds `GET /health` and
//! `GET /metrics`, and wraps everything, outermost first, in:
//! 1. a request id (`x-request-id`, generated when the client sent none, echoed in the response);
//! 2. a tracing span per request carrying `request_id`, method and path (never the query string, which may
//!    carry tokens);
//! 3. CORS, only when origins are configured (none configured = no CORS headers at all);
//! 4. the edge middleware: early 413 on a declared oversize body, an idle timeout on request bodies
//!    ([`body`]), request metrics by matched route template, and a problem+json body for error responses that
//!    have no body (404, 405, ...) or only axum's plain-text rejection (a chunked body past the limit);
//! 5. the default body limit for extractors (`DefaultBodyLimit`), which routes may raise for themselves.
//!
//! It is a function of the state so tests can drive it with `tower::ServiceExt::oneshot` as well as over a socket.

pub mod body;
pub mod error;
pub mod health;
pub mod ws;

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::state::AppState;

/// Route label for requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The whole HTTP application for `state`.
pub fn app(state: AppState) -> Router {
    let routes: Router<AppState> = Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(health::metrics));
    // Subsystem routers. Each owner adds its line here:
    //   .merge(crate::voice::routes())   -- voice helpers (/ws/realtime, /api/session, /v1/realtime)
    //   .merge(crate::api::routes())     -- chat-api helper (seed chat surfaces)
    // Keep merges ABOVE `route_layer`, which only applies to routes that exist when it is called.
    let routes = routes
        .merge(crate::voice::routes())
        .merge(crate::api::routes());
    with_middleware(routes, state)
}

/// Wraps `routes` in the middleware stack described in the module docs, with a problem+json 404 fallback.
/// [`app`] uses it for the real routes; tests use it to put a route of their own behind the same stack.
#[doc(hidden)]
pub fn with_middleware(routes: Router<AppState>, state: AppState) -> Router {
    let cors = cors_layer(&state.config.cors_origins);
    let body_limit = state.config.body_limit_bytes;
    routes
        .route_layer(middleware::from_fn(mark_matched_route))
        .fallback(not_found)
        .layer(
            ServiceBuilder::new()
                .map_request(drop_unusable_request_id)
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .option_layer(cors)
                .layer(middleware::from_fn_with_state(state.clone(), edge))
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(state)
}

/// A client-supplied `x-request-id` is kept only if it is short printable ASCII; otherwise it is dropped and a
/// fresh id is generated, so log lines cannot be bloated or forged with control characters.
fn drop_unusable_request_id(mut request: Request<Body>) -> Request<Body> {
    let usable = |value: &HeaderValue| {
        let bytes = value.as_bytes();
        !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic())
    };
    if let Some(value) = request.headers().get(REQUEST_ID)
        && !usable(value)
    {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

const REQUEST_ID: &str = "x-request-id";

fn request_span(request: &Request<Body>) -> tracing::Span {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
    )
}

/// The CORS layer for the configured origins; `None` when there are none, so no CORS headers are sent.
/// `"*"` allows any origin. Origins were validated with the configuration.
pub fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        let values: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|origin| HeaderValue::from_str(origin).ok())
            .collect();
        AllowOrigin::list(values)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::ACCEPT,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                header::RETRY_AFTER,
                HeaderName::from_static("x-ratelimit-limit"),
                HeaderName::from_static("x-ratelimit-remaining"),
                HeaderName::from_static("x-ratelimit-reset"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The matched route template, carried from the inner route layer to the edge middleware on the response.
/// `MatchedPath` is a shared string, so this costs no allocation per request.
#[derive(Clone)]
struct MatchedRoute(MatchedPath);

async fn mark_matched_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(MatchedRoute(route));
    }
    response
}

async fn not_found(method: Method, uri: http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

/// Early body-size check, request metrics, and problem+json for error responses without a JSON body.
async fn edge(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());

    let response = match declared_oversize(&state, &request) {
        Some(limit) => ApiError::payload_too_large(limit).into_response(),
        None => {
            let request = body::with_idle_timeout(request, state.config.limits.header_timeout);
            next.run(request).await
        }
    };
    let response = problem_for_non_json_error(response).await;

    let route = response
        .extensions()
        .get::<MatchedRoute>()
        .map(|route| route.0.as_str())
        .unwrap_or(UNMATCHED_ROUTE);
    let metrics = &state.metrics;
    metrics
        .http_requests_total
        .with_label_values(&[route, method, response.status().as_str()])
        .inc();
    metrics
        .http_request_duration_seconds
        .with_label_values(&[route, method])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The limit a request's declared `Content-Length` exceeds, if it does. Multipart uploads are measured
/// against `chat.max_upload_bytes`, everything else against `body_limit_bytes`. Bodies without a declared
/// length (chunked) are limited when read, by `DefaultBodyLimit`.
fn declared_oversize(state: &AppState, request: &Request) -> Option<usize> {
    // Seed upload routes check `chat.max_upload_bytes` themselves and answer in their own documented shape.
    if crate::api::enforces_own_body_limit(request.uri().path()) {
        return None;
    }
    let length: u64 = request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("multipart/form-data"));
    let limit = if is_multipart {
        state.config.chat.max_upload_bytes
    } else {
        state.config.body_limit_bytes
    };
    (length > limit as u64).then_some(limit)
}

/// Largest plain-text error body taken over as a problem's detail (axum's rejections are one short line).
const MAX_PLAIN_DETAIL_BYTES: usize = 4096;

/// Error responses that carry no body (404, 405 from the router, ...) or only the plain text of one of axum's
/// own rejections (a chunked body past the limit, read by an extractor) become problem+json, with that text as
/// the detail. The routes' own errors are JSON already, in their surface's shape, and pass as they are.
async fn problem_for_non_json_error(response: Response) -> Response {
    let status = response.status();
    let is_plain_text = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error())
        || !(is_plain_text || response.body().size_hint().exact() == Some(0))
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_PLAIN_DETAIL_BYTES)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let detail = match status {
        _ if !text.is_empty() => text,
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed for this route".to_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let mut problem = error::problem_response(status, &status_code_slug(status), detail, None);
    // Keep headers such as `Allow` (405) and `Retry-After`, but the body is now ours.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().append(name.clone(), value.clone());
        }
    }
    *problem.extensions_mut() = parts.extensions;
    problem
}

fn status_code_slug(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("error")
        .to_lowercase()
        .replace([' ', '-'], "_")
}

/// Bounded method label: unusual methods are folded into `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
