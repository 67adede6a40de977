//! The HTTP front: one `route` match over method and path. Bodies are capped before they
//! are read; every error goes through `ApiError`. WebSocket upgrades are handed to `ws`.

mod api;
mod assets;
mod error;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use uuid::Uuid;

pub use api::{BodyKind, MAX_BODY, parse_create};
pub use error::{ApiError, CODES as ERROR_CODES};

use crate::store::Store;
use crate::ws;

/// What the HTTP layer needs.
pub struct State {
    pub store: Arc<Store>,
    /// `--public-url`, without a trailing slash.
    pub public_url: Option<String>,
    /// Where we listen, for session URLs when a request has no usable Host header.
    pub listen: std::net::SocketAddr,
    /// `https` when the listener speaks TLS, else `http`: the scheme of session URLs
    /// built from the Host header.
    pub scheme: &'static str,
    pub ws: Arc<ws::Context>,
}

pub async fn route(req: Request<Incoming>, state: Arc<State>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let result = match (req.method(), path.as_str()) {
        (&Method::POST, "/create-session") => create_session(req, &state).await,
        (_, "/create-session") => Err(ApiError::method_not_allowed("POST")),
        (&Method::GET, "/ws") => ws::upgrade(req, state.ws.clone()).map_err(ApiError::from),
        (_, "/ws") => Err(ApiError::method_not_allowed("GET")),
        (&Method::GET | &Method::HEAD, "/healthz") => Ok(healthz(&state)),
        (_, "/healthz") => Err(ApiError::method_not_allowed("GET, HEAD")),
        (&Method::GET | &Method::HEAD, p) if p.starts_with("/assets/") => {
            assets::find(&p["/assets/".len()..])
                .map(|a| assets::serve(a, req.headers()))
                .ok_or_else(ApiError::not_found)
        }
        (&Method::GET | &Method::HEAD, "/favicon.ico") => assets::find("favicon.svg")
            .map(|a| assets::serve(a, req.headers()))
            .ok_or_else(ApiError::not_found),
        (&Method::GET | &Method::HEAD, p) if is_page_path(p) => {
            let found = Uuid::parse_str(&p[1..]).is_ok_and(|id| state.store.contains(&id));
            Ok(assets::page(found))
        }
        _ => Err(ApiError::not_found()),
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// `/<one segment>`: a session link, valid or not. Anything that looks like one gets the
/// friendly HTML page rather than JSON, since a person is holding the link.
fn is_page_path(path: &str) -> bool {
    let segment = &path[1..];
    !segment.is_empty() && segment.len() <= 64 && !segment.contains('/')
}

async fn create_session(
    req: Request<Incoming>,
    state: &State,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let kind = BodyKind::from_content_type(
        req.headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )?;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::body_too_large(MAX_BODY));
    }
    let base = base_url(state, req.headers().get(HOST));
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::body_too_large(MAX_BODY)
            } else {
                ApiError::malformed_body("the body could not be read")
            }
        })?;
    let request = parse_create(kind, Vec::from(body.to_bytes()))?;
    let target = request.target.clone();
    let method = request.credentials.method();
    let (id, expires_at) = state
        .store
        .insert(request)
        .map_err(|_| ApiError::too_many_pending())?;
    tracing::info!(session = &id.simple().to_string()[..8], %target, auth = method, "session created");

    let url = format!("{base}/{id}");
    let mut res = Response::new(Full::new(Bytes::from(api::created_body(
        &id, &url, expires_at,
    ))));
    *res.status_mut() = StatusCode::CREATED;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    Ok(res)
}

/// `--public-url`, else `<scheme>://<Host>` when the Host header is a plain host[:port],
/// else the listen address. The scheme is the listener's own (`https` with TLS); behind a
/// TLS-terminating proxy, `--public-url` is the way to say `https`.
fn base_url(state: &State, host: Option<&HeaderValue>) -> String {
    if let Some(url) = &state.public_url {
        return url.clone();
    }
    let plain = |h: &&str| {
        !h.is_empty()
            && h.len() <= 260
            && h.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
            })
    };
    match host.and_then(|h| h.to_str().ok()).filter(plain) {
        Some(host) => format!("{}://{host}", state.scheme),
        None => format!("{}://{}", state.scheme, state.listen),
    }
}

fn healthz(state: &State) -> Response<Full<Bytes>> {
    let body = json!({"status": "ok", "pending": state.store.len(), "live": state.ws.slots.live()})
        .to_string();
    let mut res = Response::new(Full::new(Bytes::from(body)));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    res
}
