//! `ApiError`: every HTTP error answer, as JSON `{"error":{"code","message"}}` with a fitting
//! status and a stable snake_case code. Rendered in one place (`into_response`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::ws::Refusal;

/// What went wrong, as the stable code clients match on and the status it is sent with.
/// Every code is a variant, so `ALL` (and with it docs/PROTOCOL.md, checked by
/// tests/it/docs.rs) is complete by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiErrorKind {
    MalformedBody,
    MissingField,
    InvalidField,
    AmbiguousCredentials,
    BadWebsocketRequest,
    /// A request-target without a path (`GET host:80`, `CONNECT host:22`, `OPTIONS *`).
    BadRequestTarget,
    NotFound,
    MethodNotAllowed,
    BodyTooLarge,
    /// The body did not arrive within `BODY_READ_TIMEOUT`.
    BodyTimeout,
    UnsupportedMediaType,
    TooManyPending,
    TooManySessions,
    ServerShutdown,
    Unauthorized,
    RateLimited,
    OriginForbidden,
    DestinationForbidden,
    UnknownSession,
    TooManyShareLinks,
    RecordingUnavailable,
    /// A query string that is not one the route takes (`wait`, `timeout`, `state`, …).
    InvalidQuery,
    /// The session is over; it cannot be changed any more.
    SessionEnded,
    /// The route needs an admin token (`name:token:admin`).
    AdminRequired,
    /// `encoding` is not a WHATWG label, or names one no terminal speaks (UTF-16).
    UnknownEncoding,
    /// `jump` lists more than `request::MAX_HOPS` jump hosts.
    TooManyHops,
    /// `jump` names the target, or one jump host twice: the route would go in a circle.
    JumpLoop,
}

impl ApiErrorKind {
    pub const ALL: [ApiErrorKind; 27] = [
        ApiErrorKind::MalformedBody,
        ApiErrorKind::MissingField,
        ApiErrorKind::InvalidField,
        ApiErrorKind::AmbiguousCredentials,
        ApiErrorKind::BadWebsocketRequest,
        ApiErrorKind::BadRequestTarget,
        ApiErrorKind::NotFound,
        ApiErrorKind::MethodNotAllowed,
        ApiErrorKind::BodyTooLarge,
        ApiErrorKind::BodyTimeout,
        ApiErrorKind::UnsupportedMediaType,
        ApiErrorKind::TooManyPending,
        ApiErrorKind::TooManySessions,
        ApiErrorKind::ServerShutdown,
        ApiErrorKind::Unauthorized,
        ApiErrorKind::RateLimited,
        ApiErrorKind::OriginForbidden,
        ApiErrorKind::DestinationForbidden,
        ApiErrorKind::UnknownSession,
        ApiErrorKind::TooManyShareLinks,
        ApiErrorKind::RecordingUnavailable,
        ApiErrorKind::InvalidQuery,
        ApiErrorKind::SessionEnded,
        ApiErrorKind::AdminRequired,
        ApiErrorKind::UnknownEncoding,
        ApiErrorKind::TooManyHops,
        ApiErrorKind::JumpLoop,
    ];

    /// The wire code: part of the contract, never renamed.
    pub fn code(self) -> &'static str {
        match self {
            ApiErrorKind::MalformedBody => "malformed_body",
            ApiErrorKind::MissingField => "missing_field",
            ApiErrorKind::InvalidField => "invalid_field",
            ApiErrorKind::AmbiguousCredentials => "ambiguous_credentials",
            ApiErrorKind::BadWebsocketRequest => "bad_websocket_request",
            ApiErrorKind::BadRequestTarget => "bad_request_target",
            ApiErrorKind::NotFound => "not_found",
            ApiErrorKind::MethodNotAllowed => "method_not_allowed",
            ApiErrorKind::BodyTooLarge => "body_too_large",
            ApiErrorKind::BodyTimeout => "body_timeout",
            ApiErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ApiErrorKind::TooManyPending => "too_many_pending",
            ApiErrorKind::TooManySessions => "too_many_sessions",
            ApiErrorKind::ServerShutdown => "server_shutdown",
            ApiErrorKind::Unauthorized => "unauthorized",
            ApiErrorKind::RateLimited => "rate_limited",
            ApiErrorKind::OriginForbidden => "origin_forbidden",
            ApiErrorKind::DestinationForbidden => "destination_forbidden",
            ApiErrorKind::UnknownSession => "unknown_session",
            ApiErrorKind::TooManyShareLinks => "too_many_share_links",
            ApiErrorKind::RecordingUnavailable => "recording_unavailable",
            ApiErrorKind::InvalidQuery => "invalid_query",
            ApiErrorKind::SessionEnded => "session_ended",
            ApiErrorKind::AdminRequired => "admin_required",
            ApiErrorKind::UnknownEncoding => "unknown_encoding",
            ApiErrorKind::TooManyHops => "too_many_hops",
            ApiErrorKind::JumpLoop => "jump_loop",
        }
    }

    /// One status per code, so a client may branch on either.
    pub fn status(self) -> StatusCode {
        match self {
            ApiErrorKind::MalformedBody
            | ApiErrorKind::MissingField
            | ApiErrorKind::InvalidField
            | ApiErrorKind::AmbiguousCredentials
            | ApiErrorKind::BadWebsocketRequest
            | ApiErrorKind::BadRequestTarget
            | ApiErrorKind::InvalidQuery
            | ApiErrorKind::UnknownEncoding
            | ApiErrorKind::TooManyHops
            | ApiErrorKind::JumpLoop => StatusCode::BAD_REQUEST,
            ApiErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiErrorKind::OriginForbidden
            | ApiErrorKind::DestinationForbidden
            | ApiErrorKind::AdminRequired => StatusCode::FORBIDDEN,
            ApiErrorKind::NotFound | ApiErrorKind::UnknownSession => StatusCode::NOT_FOUND,
            ApiErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiErrorKind::TooManyShareLinks | ApiErrorKind::SessionEnded => StatusCode::CONFLICT,
            ApiErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiErrorKind::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiErrorKind::RecordingUnavailable => StatusCode::INTERNAL_SERVER_ERROR,
            ApiErrorKind::TooManyPending
            | ApiErrorKind::TooManySessions
            | ApiErrorKind::ServerShutdown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ApiErrorKind,
    pub message: String,
    /// For 405: the methods the route does take.
    pub allow: Option<&'static str>,
    /// For 429: seconds until a retry may pass.
    pub retry_after: Option<u64>,
    /// The jump host (1 = the first) the error is about, sent as `"hop"`; `None`: the
    /// request itself or its target.
    pub hop: Option<u8>,
}

impl ApiError {
    fn new(kind: ApiErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            allow: None,
            retry_after: None,
            hop: None,
        }
    }

    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    pub fn malformed_body(message: impl Into<String>) -> Self {
        Self::new(ApiErrorKind::MalformedBody, message)
    }

    pub fn missing_field(field: &str) -> Self {
        Self::new(
            ApiErrorKind::MissingField,
            format!("field `{field}` is required"),
        )
    }

    pub fn invalid_field(field: &str, why: &str) -> Self {
        Self::new(ApiErrorKind::InvalidField, format!("field `{field}` {why}"))
    }

    /// A field name that is not ours; the name itself is not repeated (see `api::build`).
    pub fn unknown_field(known: &[&str]) -> Self {
        Self::new(
            ApiErrorKind::InvalidField,
            format!(
                "the body has a field that is not one of: {}",
                known.join(", ")
            ),
        )
    }

    /// The label is not echoed: it is input we did not understand, and the examples say
    /// what would do.
    pub fn unknown_encoding() -> Self {
        Self::new(
            ApiErrorKind::UnknownEncoding,
            "field `encoding` is not a WHATWG encoding label a terminal can use \
             (for example gbk, shift_jis, euc-kr, big5, iso-8859-1, windows-1251, koi8-r)",
        )
    }

    pub fn ambiguous_credentials() -> Self {
        Self::new(
            ApiErrorKind::AmbiguousCredentials,
            "`\"auth\": \"interactive\"` takes no `password` or `private_key`: the person types them in the page",
        )
    }

    /// A request-target without a path (`GET host:80`, `CONNECT host:22`, `OPTIONS *`).
    pub fn bad_request_target() -> Self {
        Self::new(
            ApiErrorKind::BadRequestTarget,
            "the request target must be a path such as /create-session",
        )
    }

    pub fn not_found() -> Self {
        Self::new(ApiErrorKind::NotFound, "no such resource")
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..Self::new(ApiErrorKind::MethodNotAllowed, format!("use {allow}"))
        }
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            ApiErrorKind::BodyTooLarge,
            format!("the body is over {} KiB", limit / 1024),
        )
    }

    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            ApiErrorKind::BodyTimeout,
            format!("the body did not arrive within {} s", limit.as_secs()),
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            ApiErrorKind::UnsupportedMediaType,
            "send application/json or application/x-www-form-urlencoded",
        )
    }

    pub fn too_many_pending() -> Self {
        Self::new(
            ApiErrorKind::TooManyPending,
            "too many sessions are waiting to be opened; try again later",
        )
    }

    pub fn invalid_query(why: impl Into<String>) -> Self {
        Self::new(ApiErrorKind::InvalidQuery, why)
    }

    pub fn session_ended() -> Self {
        Self::new(
            ApiErrorKind::SessionEnded,
            "the session is over; it cannot be changed",
        )
    }

    pub fn admin_required() -> Self {
        Self::new(
            ApiErrorKind::AdminRequired,
            "this needs an admin API token (name:token:admin in --api-token-file)",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            ApiErrorKind::Unauthorized,
            "send Authorization: Bearer <API token>",
        )
    }

    pub fn rate_limited(wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(secs.max(1)),
            ..Self::new(
                ApiErrorKind::RateLimited,
                "too many sessions created; retry later",
            )
        }
    }

    /// Too many failed API-token attempts from this address: the `rate_limited` answer,
    /// with its own message.
    pub fn auth_throttled(wait: std::time::Duration) -> Self {
        ApiError {
            message: "too many failed API token attempts from this address; retry later".into(),
            ..Self::rate_limited(wait)
        }
    }

    pub fn origin_forbidden() -> Self {
        Self::new(
            ApiErrorKind::OriginForbidden,
            "this page's origin may not open sessions here",
        )
    }

    pub fn destination_forbidden(why: &str) -> Self {
        Self::new(
            ApiErrorKind::DestinationForbidden,
            format!("the gateway may not connect there: {why}"),
        )
    }

    pub fn unknown_session() -> Self {
        Self::new(ApiErrorKind::UnknownSession, "no live session has this id")
    }

    pub fn too_many_share_links(max: usize) -> Self {
        let message = if max == 0 {
            "sharing is turned off on this gateway (--max-viewers 0)".to_owned()
        } else {
            format!("this session already has {max} share links; revoke one first")
        };
        Self::new(ApiErrorKind::TooManyShareLinks, message)
    }

    /// A recording (or the recording directory) exists but cannot be served.
    pub fn recording_unavailable(why: &str) -> Self {
        Self::new(ApiErrorKind::RecordingUnavailable, why)
    }

    pub fn too_many_hops(max: usize) -> Self {
        Self::new(
            ApiErrorKind::TooManyHops,
            format!("`jump` may list at most {max} jump hosts"),
        )
    }

    pub fn jump_loop(why: &str) -> Self {
        Self::new(ApiErrorKind::JumpLoop, why)
    }

    /// The same error, about jump host `hop` (1 = the first).
    pub fn at_hop(self, hop: u8) -> Self {
        ApiError {
            hop: Some(hop),
            ..self
        }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut error = json!({"code": self.code(), "message": self.message});
        if let Some(hop) = self.hop {
            error["hop"] = json!(hop);
        }
        let body = json!({ "error": error }).to_string();
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = self.status();
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(allow) = self.allow {
            res.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        if self.kind == ApiErrorKind::BodyTimeout {
            // The rest of the body may still be trickling in; the connection cannot be
            // reused (RFC 9110 §15.5.9), and reading on would be what the deadline stops.
            res.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
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
                ApiErrorKind::BadWebsocketRequest,
                "this endpoint takes a WebSocket upgrade",
            ),
            Refusal::TooManySessions => Self::new(
                ApiErrorKind::TooManySessions,
                "the gateway is at its session limit; try again later",
            ),
            Refusal::ShuttingDown => {
                Self::new(ApiErrorKind::ServerShutdown, "the gateway is shutting down")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case_errors() {
        let mut seen = std::collections::HashSet::new();
        for kind in ApiErrorKind::ALL {
            let code = kind.code();
            assert!(seen.insert(code), "{code} twice");
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
            let status = kind.status();
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{code}"
            );
        }
    }

    #[test]
    fn rendered_as_before() {
        let res = ApiError::method_not_allowed("GET, HEAD").into_response();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(res.headers()[ALLOW], "GET, HEAD");
        let res = ApiError::rate_limited(std::time::Duration::from_millis(1500)).into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[RETRY_AFTER], "2");
        assert_eq!(
            ApiError::not_found().into_response().headers()[CONTENT_TYPE],
            "application/json"
        );
    }
}
