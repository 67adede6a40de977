//! The HTTP front: one `route` match over the method and the path's first segment (the path
//! is split once, never sliced). Bodies are capped and given a deadline before they are
//! read; every error goes through `ApiError`. WebSocket upgrades, once their `Origin` passes
//! `origin::OriginPolicy`, are handed to `ws`.

mod api;
mod assets;
mod auth;
mod error;
mod origin;
mod recordings;
mod sessions;
mod share;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderMap, HeaderValue, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use sessions::Path;
use uuid::Uuid;

pub use api::{BodyKind, MAX_BODY, TimerBounds, parse_create};
pub use auth::{Caller, Tokens};
pub use error::{ApiError, ApiErrorKind};
pub use sessions::Waiters;

pub use assets::page_csp;
pub use auth::{AuthFailures, RateKey, RateLimiter};
pub use origin::OriginPolicy;

use crate::destination::DestinationPolicy;
use crate::ledger::{self, Ledger};
use crate::store::{Refused, Store};
use crate::ws;

/// How long create-session may spend resolving a target name to check the policy early.
/// A name that does not resolve in time is checked at connect time instead.
const PRECHECK_RESOLVE: Duration = Duration::from_secs(2);
/// How long an authenticated create-session may take to send its body (at most `MAX_BODY`),
/// from start to end: a deadline, not an idle timer, so a body trickled at a byte a second
/// cannot hold a connection and a task open. A CI job sends its few KiB at once.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the HTTP layer needs.
pub struct State {
    pub store: Arc<Store>,
    /// Every session's public status, for `/sessions`.
    pub ledger: Arc<Ledger>,
    /// Requests waiting on a session's state.
    pub waiters: Waiters,
    /// The timers sessions get, and the most they may ask for.
    pub timers: TimerBounds,
    /// The longest status wait (`--max-wait`).
    pub max_wait: Duration,
    /// `--public-url`, without a trailing slash.
    pub public_url: Option<String>,
    /// Where we listen, for session URLs when a request has no usable Host header.
    pub listen: SocketAddr,
    pub api_tokens: Tokens,
    pub rate_limiter: RateLimiter,
    /// Failed API-token attempts per client address, for logging (throttled in
    /// `rate_limiter`).
    pub auth_failures: AuthFailures,
    /// The pages that may open WebSockets.
    pub origins: OriginPolicy,
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

impl State {
    /// Who presents the API token of a request from `client`; failures are throttled per
    /// address and logged (see `auth::authenticate_client`).
    fn authenticate(&self, headers: &HeaderMap, client: IpAddr) -> Result<Caller, ApiError> {
        let tokens = self.api_tokens.current();
        auth::authenticate_client(
            headers,
            &tokens,
            &self.rate_limiter,
            &self.auth_failures,
            client,
        )
        .map(|t| Caller {
            name: t.name.clone(),
            admin: t.admin,
        })
    }

    /// As `authenticate`, for the routes only an admin token may use.
    fn authenticate_admin(&self, headers: &HeaderMap, client: IpAddr) -> Result<Caller, ApiError> {
        let caller = self.authenticate(headers, client)?;
        if !caller.admin {
            return Err(ApiError::admin_required());
        }
        Ok(caller)
    }
}

pub async fn route(
    req: Request<Incoming>,
    state: Arc<State>,
    peer: SocketAddr,
    local: SocketAddr,
) -> Response<Full<Bytes>> {
    // hyper takes every request-target form (RFC 9112 §3.2); only origin form (`/path`, and
    // absolute form, whose path hyper gives us) names one of our routes. Authority form
    // (`GET host:80`, `CONNECT host:22`) and asterisk form (`OPTIONS *`) have no path.
    let Some(rest) = req.uri().path().strip_prefix('/').map(str::to_owned) else {
        return ApiError::bad_request_target().into_response();
    };
    // The first segment picks the route; `tail` is what follows its slash, if any.
    let (first, tail) = match rest.split_once('/') {
        Some((first, tail)) => (first, Some(tail)),
        None => (rest.as_str(), None),
    };
    let get_or_head = matches!(*req.method(), Method::GET | Method::HEAD);
    let result = match (req.method(), first, tail) {
        (&Method::POST, "create-session", None) => {
            let result = create_session(req, &state, peer).await;
            let outcome = result.as_ref().map_or_else(ApiError::code, |_| "created");
            state.ws.metrics.create_request(outcome);
            result
        }
        (_, "create-session", None) => Err(ApiError::method_not_allowed("POST")),
        (&Method::GET, "ws", None) if !origin_allowed(req.headers(), &state, local) => {
            Err(ApiError::origin_forbidden())
        }
        (&Method::GET, "ws", None) => {
            ws::upgrade(req, state.ws.clone(), peer.ip()).map_err(ApiError::from)
        }
        (_, "ws", None) => Err(ApiError::method_not_allowed("GET")),
        (_, "healthz", None) if get_or_head => Ok(healthz(&state)),
        (_, "healthz", None) => Err(ApiError::method_not_allowed("GET, HEAD")),
        (_, "readyz", None) if get_or_head => readyz(&state),
        (_, "readyz", None) => Err(ApiError::method_not_allowed("GET, HEAD")),
        (&Method::GET, "metrics", None) => metrics(req.headers(), &state, peer),
        (_, "metrics", None) => Err(ApiError::method_not_allowed("GET")),
        (_, "assets", Some(name)) if get_or_head => assets::find(name)
            .map(|a| assets::serve(a, req.headers()))
            .ok_or_else(ApiError::not_found),
        (&Method::GET, "recordings", None) => {
            recordings::list(req.headers(), &state, peer.ip()).await
        }
        (_, "recordings", None) => Err(ApiError::method_not_allowed("GET")),
        (&Method::GET, "recordings", Some(name)) => {
            recordings::get(name, req.headers(), &state, peer.ip()).await
        }
        (_, "recordings", Some(_)) => Err(ApiError::method_not_allowed("GET")),
        (_, "favicon.ico", None) if get_or_head => assets::find("favicon.svg")
            .map(|a| assets::serve(a, req.headers()))
            .ok_or_else(ApiError::not_found),
        (&Method::GET, "sessions", None) => {
            sessions::list(req.headers(), req.uri().query(), &state, peer.ip())
        }
        (_, "sessions", None) => Err(ApiError::method_not_allowed("GET")),
        (method, "sessions", Some(tail)) => match (method, sessions::parse_path(tail)) {
            (&Method::GET, Some(Path::Session(id))) => {
                sessions::get(req.headers(), req.uri().query(), &state, peer.ip(), id).await
            }
            (&Method::DELETE, Some(Path::Session(id))) => {
                sessions::revoke(req.headers(), &state, peer.ip(), id)
            }
            (_, Some(Path::Session(_))) => Err(ApiError::method_not_allowed("GET, DELETE")),
            (&Method::POST, Some(Path::Extend(id))) => extend(req, &state, peer, id).await,
            (_, Some(Path::Extend(_))) => Err(ApiError::method_not_allowed("POST")),
            (&Method::POST, Some(Path::Share(id))) => {
                let base = base_url(&state, req.headers().get(HOST));
                share::create(req.headers(), &state, peer.ip(), &id, &base)
            }
            (_, Some(Path::Share(_))) => Err(ApiError::method_not_allowed("POST")),
            (&Method::DELETE, Some(Path::ShareLink(id, link))) => {
                share::revoke(req.headers(), &state, peer.ip(), &id, &link)
            }
            (_, Some(Path::ShareLink(..))) => Err(ApiError::method_not_allowed("DELETE")),
            // A malformed id is an unknown one.
            (_, None) => Err(ApiError::unknown_session()),
        },
        (_, "view", Some(link)) if get_or_head => {
            // The same page; it watches rather than types when its path is /view/<link>.
            let found =
                Uuid::parse_str(link).is_ok_and(|l| state.ws.registry.by_link(&l).is_some());
            Ok(assets::page(found, &state.page_csp))
        }
        (_, segment, None) if get_or_head && is_page_segment(segment) => {
            // Pending, or live: a reload of a live session's page resumes it.
            let found = Uuid::parse_str(segment).is_ok_and(|id| {
                state.store.contains(&id)
                    || (state.ws.settings.resume_grace.is_some() && state.ws.registry.contains(&id))
            });
            Ok(assets::page(found, &state.page_csp))
        }
        _ => Err(ApiError::not_found()),
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// `/<one segment>`: a session link, valid or not. Anything that looks like one gets the
/// friendly HTML page rather than JSON, since a person is holding the link.
fn is_page_segment(segment: &str) -> bool {
    !segment.is_empty() && segment.len() <= 64
}

async fn create_session(
    req: Request<Incoming>,
    state: &State,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if state.ws.draining.is_cancelled() {
        return Err(ApiError::from(ws::Refusal::ShuttingDown));
    }
    let token = state.authenticate(req.headers(), peer.ip())?;
    // Pending and live sessions count alike; `store.insert` checks again, atomically.
    if state.max_sessions_per_token > 0
        && state.store.booked(&token.name) >= state.max_sessions_per_token
    {
        return Err(ApiError::from(ws::Refusal::TooManySessions));
    }
    let keys = [
        RateKey::Token(token.name.clone()),
        RateKey::Client(peer.ip()),
    ];
    state
        .rate_limiter
        .check(&keys)
        .map_err(ApiError::rate_limited)?;
    let kind = BodyKind::from_content_type(
        req.headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )?;
    let base = base_url(state, req.headers().get(HOST));
    let body = read_body(req, MAX_BODY).await?;
    let (mut request, asked) = parse_create(kind, Vec::from(body))?;
    request.creator = token.name.clone();
    request.options = state.timers.apply(asked)?;
    if request.jump.is_empty() {
        precheck_destination(state, &request.target.host, request.target.port).await?;
    } else {
        precheck_route(state, &request).await?;
    }
    let target = request.route();
    let method = request.credentials.method();
    let handback = request.options.handback;
    let ttl = request.options.ttl;
    let inserted = state
        .store
        .insert(request, state.max_sessions_per_token)
        .map_err(|e| match e {
            Refused::Full => ApiError::too_many_pending(),
            Refused::TokenLimit => ApiError::from(ws::Refusal::TooManySessions),
        })?;
    let id = inserted.id;
    tracing::info!(
        session = %id,
        %target,
        auth = method,
        token = token.name,
        client = %peer.ip(),
        ttl_secs = ttl.as_secs(),
        "session created"
    );

    // The full id, as the link's capability; logs get only the short form (`%id`).
    let url = format!("{base}/{}", id.full());
    let status_url = format!("{base}/sessions/{}", id.full());
    state.ledger.create(
        ledger::New {
            id,
            target: target.to_string(),
            token: token.name,
            expires: inserted.expires,
            expires_at: inserted.expires_at,
            handback,
        },
        &url,
    );
    let body = api::created_body(&id.full(), &url, &status_url, inserted.expires_at);
    Ok(uncached(
        StatusCode::CREATED,
        "application/json",
        body.into(),
    ))
}

/// Reads a request body of at most `limit` bytes within `BODY_READ_TIMEOUT`.
async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::body_too_large(limit));
    }
    let read = Limited::new(req.into_body(), limit).collect();
    let body = tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .map_err(|_| ApiError::body_timeout(BODY_READ_TIMEOUT))?
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::body_too_large(limit)
            } else {
                ApiError::malformed_body("the body could not be read")
            }
        })?;
    Ok(body.to_bytes())
}

/// `POST /sessions/<id>/extend`: authenticated before its (small) body is read.
async fn extend(
    req: Request<Incoming>,
    state: &State,
    peer: SocketAddr,
    id: Uuid,
) -> Result<Response<Full<Bytes>>, ApiError> {
    state.authenticate(req.headers(), peer.ip())?;
    let headers = req.headers().clone();
    let body = read_body(req, sessions::MAX_EXTEND_BODY).await?;
    sessions::extend(&headers, state, peer.ip(), id, &body)
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

/// A session through jump hosts: the first hop is the one dialled, so it is checked as a
/// target is; each later hop and the target are reached by the hop before, and judged as
/// given (`DestinationPolicy::check_given`). A refusal names the hop (1 = the first).
async fn precheck_route(
    state: &State,
    request: &crate::request::SessionRequest,
) -> Result<(), ApiError> {
    let mut hops = (1u8..).zip(&request.jump);
    if let Some((n, first)) = hops.next() {
        precheck_destination(state, &first.target.host, first.target.port)
            .await
            .map_err(|e| e.at_hop(n))?;
    }
    for (n, hop) in hops {
        let (host, port) = (&hop.target.host, hop.target.port);
        if let Err(denied) = state.destinations.check_given(host, port) {
            return Err(ApiError::destination_forbidden(&denied.0).at_hop(n));
        }
    }
    let target = &request.target;
    state
        .destinations
        .check_given(&target.host, target.port)
        .map_err(|denied| ApiError::destination_forbidden(&denied.0))
}

/// Browsers send `Origin` with every WebSocket; a page elsewhere must not open sessions with
/// the user's link (cross-site WebSocket hijacking, DNS rebinding; see `origin`). Clients
/// that send none (scripts, CI) cannot be driven by a hostile page, so they pass.
fn origin_allowed(headers: &HeaderMap, state: &State, local: SocketAddr) -> bool {
    match headers.get(ORIGIN).map(|o| o.to_str()) {
        None => true,
        Some(Ok(origin)) => state.origins.allows(origin, local),
        Some(Err(_)) => false,
    }
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
        state.authenticate_admin(headers, peer.ip())?;
    }
    let text = state.ws.metrics.render(crate::metrics::Gauges {
        pending: state.store.len(),
        live: state.ws.slots.live(),
        bridge_threads: state.ws.threads.load(std::sync::atomic::Ordering::Acquire),
        waiters: state.waiters.count(),
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
