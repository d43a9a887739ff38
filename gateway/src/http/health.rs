//! `GET /health` and `GET /metrics`.
//!
//! `/health` is claimed by two seed documents (002 and 003), so it serves one document with both shapes'
//! fields (see `docs/` and the seeds README):
//!
//! ```json
//! {
//!   "status": "ok",                         // ok | degraded | unhealthy (seed 002 says "ok")
//!   "timestamp": "2026-01-01T12:00:00.000Z", // RFC 3339, milliseconds, UTC
//!   "service": "octi-realtime-backend",      // seed 002's literal, kept for its clients
//!   "version": "0.1.0", "uptime_seconds": 12,
//!   "database": { "connected": true, ... },  // seed 003 sections, from the registered health checks
//!   "ollama":   { "connected": true, "model": "...", ... },
//!   "realtime": { ... }
//! }
//! ```
//!
//! The HTTP status is 200 for `ok` and `degraded` (the service answers) and 503 for `unhealthy`, so load
//! balancers and orchestrators take an instance without storage out of rotation.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::SecondsFormat;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value};

use crate::state::{AppState, HealthStatus};

/// The `service` value from seed 002; its clients may compare it.
pub const SERVICE_NAME: &str = "octi-realtime-backend";

/// `GET /health`.
pub async fn health(State(state): State<AppState>) -> Response {
    let report = state.health.report().await;
    let mut body = Map::new();
    body.insert("status".to_owned(), Value::from(report.status.as_str()));
    body.insert(
        "timestamp".to_owned(),
        Value::from(chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
    );
    body.insert("service".to_owned(), Value::from(SERVICE_NAME));
    body.insert("version".to_owned(), Value::from(env!("CARGO_PKG_VERSION")));
    body.insert(
        "uptime_seconds".to_owned(),
        Value::from(state.started_at.elapsed().as_secs()),
    );
    for (section, value) in report.sections {
        body.insert(section, value);
    }
    let status = match report.status {
        HealthStatus::Ok | HealthStatus::Degraded => StatusCode::OK,
        HealthStatus::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut response = (status, Json(Value::Object(body))).into_response();
    // Health must be live, never a cached answer.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}
