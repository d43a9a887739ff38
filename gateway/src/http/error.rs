//! The HTTP error type for routes outside the seed contracts: RFC 9457 `application/problem+json`.
//!
//! [`ApiError`] keeps apart three sources of failure, because they call for different reactions:
//! - **the client** did something wrong (4xx): the detail says what, and `field` names the offending input;
//! - **an upstream** (model provider, speech service) failed (502/503/504): the client may retry later;
//! - **we** have a bug or an unexpected failure (500): the detail is logged with the request's span and the
//!   client only sees a generic message, so internals and secrets never leak.
//!
//! Seed surfaces (`api/*`) keep their own documented error shapes and do not use this type for them.

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// The problem+json media type.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answered as `application/problem+json`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request was wrong (4xx).
    #[error("{status}: {detail}")]
    Client {
        /// A 4xx status.
        status: StatusCode,
        /// Short machine-readable problem code, rendered in `type` (`urn:voxgate:problem:<code>`).
        code: &'static str,
        /// What was wrong, for the client developer.
        detail: String,
        /// The request field at fault, for validation errors.
        field: Option<String>,
        /// For 429: when to retry.
        retry_after: Option<Duration>,
    },
    /// An upstream service failed (502 bad gateway, 503 unavailable, 504 timeout).
    #[error("upstream {status}: {detail}")]
    Upstream {
        /// 502, 503 or 504.
        status: StatusCode,
        /// What failed, without secrets (no URLs with keys, no raw upstream bodies).
        detail: String,
    },
    /// The gateway itself cannot take the request now (overloaded, shutting down): 503.
    #[error("unavailable: {detail}")]
    Unavailable {
        /// Why.
        detail: String,
        /// When to retry, if known.
        retry_after: Option<Duration>,
    },
    /// Our own failure (500). The cause is logged, never sent.
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    fn client(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Client {
            status,
            code,
            detail: detail.into(),
            field: None,
            retry_after: None,
        }
    }

    /// 400 with a detail.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    /// 422: a field is present and well-formed but its value is not acceptable.
    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::Client {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation",
            detail: detail.into(),
            field: Some(field.into()),
            retry_after: None,
        }
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::client(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::client(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::client(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 405.
    pub fn method_not_allowed(detail: impl Into<String>) -> Self {
        Self::client(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", detail)
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::client(StatusCode::CONFLICT, "conflict", detail)
    }

    /// 413: the body is larger than `limit` bytes.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds the limit of {limit} bytes"),
        )
    }

    /// 429 with an optional `Retry-After`.
    pub fn too_many_requests(detail: impl Into<String>, retry_after: Option<Duration>) -> Self {
        ApiError::Client {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            detail: detail.into(),
            field: None,
            retry_after,
        }
    }

    /// Adds the field at fault to a client error (no effect on other kinds).
    pub fn with_field(mut self, name: impl Into<String>) -> Self {
        if let ApiError::Client { field, .. } = &mut self {
            *field = Some(name.into());
        }
        self
    }

    /// 502: the upstream answered with an error or garbage.
    pub fn bad_gateway(detail: impl Into<String>) -> Self {
        ApiError::Upstream {
            status: StatusCode::BAD_GATEWAY,
            detail: detail.into(),
        }
    }

    /// 503 caused by an upstream that cannot be reached.
    pub fn upstream_unavailable(detail: impl Into<String>) -> Self {
        ApiError::Upstream {
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: detail.into(),
        }
    }

    /// 504: the upstream did not answer in time.
    pub fn upstream_timeout(detail: impl Into<String>) -> Self {
        ApiError::Upstream {
            status: StatusCode::GATEWAY_TIMEOUT,
            detail: detail.into(),
        }
    }

    /// 503 from the gateway itself (at capacity, shutting down).
    pub fn unavailable(detail: impl Into<String>, retry_after: Option<Duration>) -> Self {
        ApiError::Unavailable {
            detail: detail.into(),
            retry_after,
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Client { status, .. } | ApiError::Upstream { status, .. } => *status,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The RFC 9457 body.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status, repeated for clients that lose it.
    pub status: u16,
    /// What happened, for a human.
    pub detail: String,
    /// Extension: the request field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Builds a problem+json response for any status (also used for error responses produced by middleware).
pub fn problem_response(
    status: StatusCode,
    code: &str,
    detail: String,
    field: Option<String>,
) -> Response {
    let problem = Problem {
        kind: format!("urn:voxgate:problem:{code}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        field,
    };
    let mut response = (status, Json(problem)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

fn retry_after_header(response: &mut Response, retry_after: Option<Duration>) {
    if let Some(after) = retry_after {
        // Retry-After is whole seconds; round up so the client never retries too early.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            ApiError::Client {
                code,
                detail,
                field,
                retry_after,
                ..
            } => {
                let mut response = problem_response(status, code, detail, field);
                retry_after_header(&mut response, retry_after);
                response
            }
            ApiError::Upstream { detail, .. } => {
                tracing::warn!(status = status.as_u16(), %detail, "upstream error");
                let code = match status {
                    StatusCode::GATEWAY_TIMEOUT => "upstream_timeout",
                    StatusCode::SERVICE_UNAVAILABLE => "upstream_unavailable",
                    _ => "bad_gateway",
                };
                problem_response(status, code, detail, None)
            }
            ApiError::Unavailable {
                detail,
                retry_after,
            } => {
                let mut response = problem_response(status, "unavailable", detail, None);
                retry_after_header(&mut response, retry_after);
                response
            }
            ApiError::Internal(error) => {
                // The request span (request_id, method, path) is attached by the trace layer.
                tracing::error!(error = format!("{error:#}"), "internal error");
                problem_response(status, "internal", "internal server error".to_owned(), None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn client_errors_carry_field_and_internal_errors_hide_details() {
        let response = ApiError::validation("email", "must contain @").into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let body = body_json(response).await;
        assert_eq!(body["field"], "email");
        assert_eq!(body["status"], 422);
        assert_eq!(body["type"], "urn:voxgate:problem:validation");

        let response = ApiError::from(anyhow::anyhow!("db password is hunter2")).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_json(response).await;
        assert!(!body.to_string().contains("hunter2"));
        assert!(body.get("field").is_none());

        let response = ApiError::too_many_requests("slow down", Some(Duration::from_millis(1500)))
            .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            ApiError::upstream_timeout("model").into_response().status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
