//! The HTTP front: one `route` match over method and path. Bodies are capped before they
//! are read; every error goes through `ApiError`. WebSocket upgrades are handed to `ws`.

mod api;
mod assets;
mod auth;
mod error;
mod recordings;
mod share;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderMap, HeaderValue, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use uuid::Uuid;

pub use api::{BodyKind, MAX_BODY, parse_create};
pub use error::{ApiError, CODES as ERROR_CODES};

pub use assets::page_csp;
pub use auth::{RateKey, RateLimiter};

use crate::config::ApiToken;
use crate::destination::DestinationPolicy;
use crate::store::{Refused, Store};
use crate::ws;

/// How long create-session may spend resolving a target name to check the policy early.
/// A name that does not resolve in time is checked at connect time instead.
const PRECHECK_RESOLVE: Duration = Duration::from_secs(2);

/// What the HTTP layer needs.
pub struct State {
    pub store: Arc<Store>,
    /// `--public-url`, without a trailing slash.
    pub public_url: Option<String>,
    /// Where we listen, for session URLs when a request has no usable Host header.
    pub listen: SocketAddr,
    pub api_tokens: Arc<Vec<ApiToken>>,
    pub rate_limiter: RateLimiter,
    /// Origins allowed to open WebSockets besides our own, lower case.
    pub allowed_origins: Vec<String>,
    /// Live sessions one API token may have at once; 0 = no limit beyond --max-sessions.
    pub max_sessions_per_token: usize,
    /// The terminal page's Content-Security-Policy (see `assets::page_csp`).
    pub page_csp: HeaderValue,
    pub destinations: Arc<DestinationPolicy>,
    /// `https` when the listener speaks TLS, else `http`: the scheme of session URLs
    /// built from the Host header.
    pub scheme: &'static str,
    pub ws: Arc<ws::Context>,
}

pub async fn route(
    req: Request<Incoming>,
    state: Arc<State>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let result = match (req.method(), path.as_str()) {
        (&Method::POST, "/create-session") => {
            let result = create_session(req, &state, peer).await;
            let outcome = result.as_ref().map_or_else(|e| e.code, |_| "created");
            state.ws.metrics.create_request(outcome);
            result
        }
        (_, "/create-session") => Err(ApiError::method_not_allowed("POST")),
        (&Method::GET, "/ws") if !origin_allowed(req.headers(), &state) => {
            Err(ApiError::origin_forbidden())
        }
        (&Method::GET, "/ws") => ws::upgrade(req, state.ws.clone()).map_err(ApiError::from),
        (_, "/ws") => Err(ApiError::method_not_allowed("GET")),
        (&Method::GET | &Method::HEAD, "/healthz") => Ok(healthz(&state)),
        (_, "/healthz") => Err(ApiError::method_not_allowed("GET, HEAD")),
        (&Method::GET | &Method::HEAD, "/readyz") => readyz(&state),
        (&Method::GET, "/metrics") => metrics(req.headers(), &state, peer),
        (_, "/metrics") => Err(ApiError::method_not_allowed("GET")),
        (_, "/readyz") => Err(ApiError::method_not_allowed("GET, HEAD")),
        (&Method::GET | &Method::HEAD, p) if p.starts_with("/assets/") => {
            assets::find(&p["/assets/".len()..])
                .map(|a| assets::serve(a, req.headers()))
                .ok_or_else(ApiError::not_found)
        }
        (&Method::GET, "/recordings") => recordings::list(req.headers(), &state).await,
        (_, "/recordings") => Err(ApiError::method_not_allowed("GET")),
        (&Method::GET, p) if p.starts_with("/recordings/") => {
            recordings::get(&p["/recordings/".len()..], req.headers(), &state).await
        }
        (_, p) if p.starts_with("/recordings/") => Err(ApiError::method_not_allowed("GET")),
        (&Method::GET | &Method::HEAD, "/favicon.ico") => assets::find("favicon.svg")
            .map(|a| assets::serve(a, req.headers()))
            .ok_or_else(ApiError::not_found),
        (method, p) if p.starts_with("/sessions/") => match (method, share::parse_path(p)) {
            (&Method::POST, Some((id, None))) => {
                let base = base_url(&state, req.headers().get(HOST));
                share::create(req.headers(), &state, &id, &base)
            }
            (_, Some((_, None))) => Err(ApiError::method_not_allowed("POST")),
            (&Method::DELETE, Some((id, Some(link)))) => {
                share::revoke(req.headers(), &state, &id, &link)
            }
            (_, Some((_, Some(_)))) => Err(ApiError::method_not_allowed("DELETE")),
            (_, None) => Err(ApiError::not_found()),
        },
        (&Method::GET | &Method::HEAD, p) if p.starts_with("/view/") => {
            // The same page; it watches rather than types when its path is /view/<link>.
            let link = &p["/view/".len()..];
            let found =
                Uuid::parse_str(link).is_ok_and(|l| state.ws.registry.by_link(&l).is_some());
            Ok(assets::page(found, &state.page_csp))
        }
        (&Method::GET | &Method::HEAD, p) if is_page_path(p) => {
            // Pending, or live: a reload of a live session's page resumes it.
            let found = Uuid::parse_str(&p[1..]).is_ok_and(|id| {
                state.store.contains(&id)
                    || (state.ws.resume_grace.is_some() && state.ws.registry.contains(&id))
            });
            Ok(assets::page(found, &state.page_csp))
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
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if state.ws.draining.is_cancelled() {
        return Err(ApiError::from(ws::Refusal::ShuttingDown));
    }
    let token = auth::authenticate(req.headers(), &state.api_tokens)?;
    // Pending and live sessions count alike; `store.insert` checks again, atomically.
    if state.max_sessions_per_token > 0 && state.store.booked(token) >= state.max_sessions_per_token
    {
        return Err(ApiError::from(ws::Refusal::TooManySessions));
    }
    let keys = [RateKey::Token(token.to_owned()), RateKey::Client(peer.ip())];
    state
        .rate_limiter
        .check(&keys)
        .map_err(ApiError::rate_limited)?;
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
    let mut request = parse_create(kind, Vec::from(body.to_bytes()))?;
    request.creator = token.to_owned();
    precheck_destination(state, &request.target.host, request.target.port).await?;
    let target = request.target.clone();
    let method = request.credentials.method();
    let (id, expires_at) = state
        .store
        .insert(request, state.max_sessions_per_token)
        .map_err(|e| match e {
            Refused::Full => ApiError::too_many_pending(),
            Refused::TokenLimit => ApiError::from(ws::Refusal::TooManySessions),
        })?;
    tracing::info!(
        session = %id,
        %target,
        auth = method,
        token,
        client = %peer.ip(),
        "session created"
    );

    // The full id, as the link's capability; logs get only the short form (`%id`).
    let url = format!("{base}/{}", id.full());
    let body = api::created_body(&id.full(), &url, expires_at);
    Ok(uncached(
        StatusCode::CREATED,
        "application/json",
        body.into(),
    ))
}

/// A dynamic answer: never cached, since it describes this moment (or holds a session URL).
fn uncached(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    res
}

/// Refuses a target the policy forbids, when that can be known now: an IP literal, or a
/// name that resolves quickly to addresses all of which are refused. Connecting checks again.
async fn precheck_destination(state: &State, host: &str, port: u16) -> Result<(), ApiError> {
    let addrs = match tokio::time::timeout(PRECHECK_RESOLVE, state.ws.dialer.resolve(host)).await {
        Ok(Ok(addrs)) => addrs,
        _ => return Ok(()),
    };
    // Refused only when every address is refused; the first refusal says why.
    let mut first_refusal = None;
    for ip in addrs {
        match state.destinations.check(host, ip, port) {
            Ok(()) => return Ok(()),
            Err(denied) => {
                first_refusal.get_or_insert(denied);
            }
        }
    }
    let why = first_refusal.map(|d| d.0).unwrap_or_default();
    Err(ApiError::destination_forbidden(&why))
}

/// Browsers send `Origin` with every WebSocket; a page elsewhere must not open sessions with
/// the user's link (cross-site WebSocket hijacking). Clients that send none (scripts, CI)
/// cannot be driven by a hostile page, so they pass.
fn origin_allowed(headers: &HeaderMap, state: &State) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str().map(str::to_ascii_lowercase) else {
        return false;
    };
    if state.allowed_origins.contains(&origin) {
        return true;
    }
    let own = match &state.public_url {
        Some(url) => {
            let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
            format!("{scheme}://{}", rest.split('/').next().unwrap_or_default())
        }
        None => match headers.get(HOST).and_then(|h| h.to_str().ok()) {
            Some(host) => format!("{}://{host}", state.scheme),
            None => return false,
        },
    };
    origin == own.to_ascii_lowercase()
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

/// Prometheus metrics: open to loopback scrapers, else behind an API token.
fn metrics(
    headers: &HeaderMap,
    state: &State,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if !peer.ip().to_canonical().is_loopback() {
        auth::authenticate(headers, &state.api_tokens)?;
    }
    let text = state.ws.metrics.render(crate::metrics::Gauges {
        pending: state.store.len(),
        live: state.ws.slots.live(),
        bridge_threads: state.ws.threads.load(std::sync::atomic::Ordering::Acquire),
    });
    Ok(uncached(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        text.into(),
    ))
}

/// Ready to take sessions: not shutting down. Load balancers stop sending work on 503.
fn readyz(state: &State) -> Result<Response<Full<Bytes>>, ApiError> {
    if state.ws.draining.is_cancelled() {
        return Err(ApiError::from(ws::Refusal::ShuttingDown));
    }
    let body = Bytes::from_static(b"{\"ready\":true}");
    Ok(uncached(StatusCode::OK, "application/json", body))
}

fn healthz(state: &State) -> Response<Full<Bytes>> {
    let body = json!({"status": "ok", "pending": state.store.len(), "live": state.ws.slots.live()});
    uncached(StatusCode::OK, "application/json", body.to_string().into())
}
