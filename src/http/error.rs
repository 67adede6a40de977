//! `ApiError`: every HTTP error answer, as JSON `{"error":{"code","message"}}` with a fitting
//! status and a stable snake_case code. Rendered in one place (`into_response`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::ws::Refusal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For 405: the methods the route does take.
    pub allow: Option<&'static str>,
    /// For 429: seconds until a retry may pass.
    pub retry_after: Option<u64>,
}

/// Every code `ApiError` can carry (documented in PROTOCOL.md).
pub const CODES: &[&str] = &[
    "malformed_body",
    "missing_field",
    "invalid_field",
    "ambiguous_credentials",
    "bad_websocket_request",
    "bad_request_target",
    "not_found",
    "method_not_allowed",
    "body_too_large",
    "unsupported_media_type",
    "too_many_pending",
    "too_many_sessions",
    "server_shutdown",
    "unauthorized",
    "rate_limited",
    "origin_forbidden",
    "destination_forbidden",
    "unknown_session",
    "too_many_share_links",
    "recording_unavailable",
];

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        debug_assert!(CODES.contains(&code), "undocumented error code {code}");
        ApiError {
            status,
            code,
            message: message.into(),
            allow: None,
            retry_after: None,
        }
    }

    pub fn malformed_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_body", message)
    }

    pub fn missing_field(field: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "missing_field",
            format!("field `{field}` is required"),
        )
    }

    pub fn invalid_field(field: &str, why: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("field `{field}` {why}"),
        )
    }

    /// A field name that is not ours; the name itself is not repeated (see `api::build`).
    pub fn unknown_field(known: &[&str]) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!(
                "the body has a field that is not one of: {}",
                known.join(", ")
            ),
        )
    }

    pub fn ambiguous_credentials() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "ambiguous_credentials",
            "give either `password` or `private_key`, not both",
        )
    }

    /// A request-target without a path (`GET host:80`, `CONNECT host:22`, `OPTIONS *`).
    pub fn bad_request_target() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request_target",
            "the request target must be a path such as /create-session",
        )
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("use {allow}"),
            )
        }
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is over {} KiB", limit / 1024),
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json or application/x-www-form-urlencoded",
        )
    }

    pub fn too_many_pending() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_pending",
            "too many sessions are waiting to be opened; try again later",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <API token>",
        )
    }

    pub fn rate_limited(wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many sessions created; retry later",
            )
        }
    }

    pub fn origin_forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "origin_forbidden",
            "this page's origin may not open sessions here",
        )
    }

    pub fn destination_forbidden(why: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "destination_forbidden",
            format!("the gateway may not connect there: {why}"),
        )
    }

    pub fn unknown_session() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_session",
            "no live session has this id",
        )
    }

    pub fn too_many_share_links(max: usize) -> Self {
        let message = if max == 0 {
            "sharing is turned off on this gateway (--max-viewers 0)".to_owned()
        } else {
            format!("this session already has {max} share links; revoke one first")
        };
        Self::new(StatusCode::CONFLICT, "too_many_share_links", message)
    }

    /// A recording (or the recording directory) exists but cannot be served.
    pub fn recording_unavailable(why: &str) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "recording_unavailable",
            why,
        )
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = json!({"error": {"code": self.code, "message": self.message}}).to_string();
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = self.status;
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(allow) = self.allow {
            res.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotWebSocket => Self::new(
                StatusCode::BAD_REQUEST,
                "bad_websocket_request",
                "this endpoint takes a WebSocket upgrade",
            ),
            Refusal::TooManySessions => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                "the gateway is at its session limit; try again later",
            ),
            Refusal::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_shutdown",
                "the gateway is shutting down",
            ),
        }
    }
}
