//! The gateway's HTTP API as the client speaks it: one kept `reqwest` client (rustls, the
//! bundled and the system's roots or only `--ca-file`, no redirects), the token on every
//! request, and the retry with back-off that carries a job across a gateway restart.
//!
//! Only requests that cannot act twice are retried after a doubtful failure: GETs and
//! DELETE (idempotent by the contract) on any transport error or 5xx; create-session and
//! extend only when the gateway surely did not act (no connection, 429, 502–504).

use std::time::{Duration, Instant};

use hyper::body::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use zeroize::Zeroizing;

use super::error::{ClientError, ClientErrorKind};
use crate::secret::Secret;

/// The first pause after a failed attempt; doubled after each, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Pauses stay short enough that a restarted gateway is found within seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Attempts per request, whatever `--retry-for` says: a bound in count as well as time.
const MAX_ATTEMPTS: u32 = 200;
/// A request that is not a long poll: the gateway answers these at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to a long poll's own timeout, so the gateway's answer, not ours, ends the wait.
const POLL_MARGIN: Duration = Duration::from_secs(15);
/// TCP and TLS set-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A status or list answer is small; a bigger one is not the gateway's.
const MAX_ANSWER: usize = 4 << 20;

/// How the client reaches the gateway.
pub struct ApiSettings {
    /// `http(s)://host[:port][/prefix]`, without a trailing slash.
    pub gateway: String,
    pub token: Secret<String>,
    /// PEM certificates to trust instead of the built-in and system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The overall bound on retries of one request.
    pub retry_for: Duration,
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    gateway: String,
    auth: HeaderValue,
    retry_for: Duration,
}

/// Whether a request may be sent again after a failure whose effect is unknown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Reads and idempotent writes: after any transport failure or 5xx.
    Safe,
    /// Writes that must not happen twice: only when the gateway surely did not act.
    OnlyUnsent,
}

impl Api {
    pub fn new(settings: ApiSettings) -> Result<Api, ClientError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            // A redirect could carry the token to another host; the gateway never sends one.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("alfresco-ssh-session/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &settings.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::usage(format!("--ca-file: {e}")))?;
            if certs.is_empty() {
                return Err(ClientError::usage("--ca-file: no PEM certificate in it"));
            }
            // A private CA is all the job should trust for its gateway.
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::usage(format!("cannot set up HTTPS: {e}")))?;
        let bearer = Zeroizing::new(format!("Bearer {}", settings.token.expose()));
        let mut auth = HeaderValue::from_str(&bearer)
            .map_err(|_| ClientError::usage("the API token holds characters a header cannot"))?;
        // Kept out of reqwest's and hyper's debug output.
        auth.set_sensitive(true);
        Ok(Api {
            http,
            gateway: settings.gateway,
            auth,
            retry_for: settings.retry_for,
        })
    }

    pub fn retry_for(&self) -> Duration {
        self.retry_for
    }

    /// The same client with another retry bound.
    pub fn with_retry_for(&self, retry_for: Duration) -> Api {
        Api {
            retry_for,
            ..self.clone()
        }
    }

    /// `POST /create-session` with a body that holds credentials. The body's only copy
    /// (ours) is wiped when the last attempt is done with it.
    pub async fn create(&self, body: Zeroizing<Vec<u8>>) -> Result<Value, ClientError> {
        let body = Bytes::from_owner(Wiped(body));
        self.send(
            Method::POST,
            "/create-session".into(),
            Some(body),
            REQUEST_TIMEOUT,
            Repeat::OnlyUnsent,
        )
        .await
    }

    /// `GET /sessions/<id>`, or with `wait` the long poll for one of its states.
    pub async fn status(
        &self,
        id: &SessionRef,
        wait: Option<(&str, Duration)>,
    ) -> Result<Value, ClientError> {
        let (path, timeout) = match wait {
            None => (format!("/sessions/{}", id.0), REQUEST_TIMEOUT),
            Some((states, poll)) => (
                format!(
                    "/sessions/{}?wait={states}&timeout={}",
                    id.0,
                    poll.as_secs().max(1)
                ),
                poll + POLL_MARGIN,
            ),
        };
        self.send(Method::GET, path, None, timeout, Repeat::Safe)
            .await
    }

    /// `DELETE /sessions/<id>`.
    pub async fn revoke(&self, id: &SessionRef) -> Result<Value, ClientError> {
        let path = format!("/sessions/{}", id.0);
        self.send(Method::DELETE, path, None, REQUEST_TIMEOUT, Repeat::Safe)
            .await
    }

    /// `POST /sessions/<id>/extend` by whole seconds.
    pub async fn extend(&self, id: &SessionRef, by: Duration) -> Result<Value, ClientError> {
        let path = format!("/sessions/{}/extend", id.0);
        let body = Bytes::from(serde_json::json!({"by": by.as_secs()}).to_string());
        // Twice would push the cap twice as far.
        self.send(
            Method::POST,
            path,
            Some(body),
            REQUEST_TIMEOUT,
            Repeat::OnlyUnsent,
        )
        .await
    }

    /// One page of `GET /sessions`.
    pub async fn list(
        &self,
        states: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(states) = states {
            query.append_pair("state", states);
        }
        if let Some(cursor) = cursor {
            query.append_pair("cursor", cursor);
        }
        let query = query.finish();
        let path = if query.is_empty() {
            "/sessions".to_owned()
        } else {
            format!("/sessions?{query}")
        };
        self.send(Method::GET, path, None, REQUEST_TIMEOUT, Repeat::Safe)
            .await
    }

    /// Sends until an answer that is not worth retrying, or the bound. A 2xx is the answer's
    /// JSON; a refusal is `Refused` with the API's code and message.
    async fn send(
        &self,
        method: Method,
        path: String,
        body: Option<Bytes>,
        timeout: Duration,
        repeat: Repeat,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.gateway);
        // The bound counts from the first failure: a long poll held for minutes and then cut
        // has used none of it.
        let mut failing_since: Option<Instant> = None;
        let mut pause = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header(AUTHORIZATION, self.auth.clone())
                .timeout(timeout);
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let failure = match request.send().await {
                Ok(response) => match answer(response).await {
                    Ok(json) => return Ok(json),
                    Err(failure) => failure,
                },
                Err(e) => Failure::Transport(e),
            };
            let error = failure.error();
            let retry = failure.retryable(repeat);
            let failing = failing_since.get_or_insert_with(Instant::now).elapsed();
            // The pause must end inside the bound, or the caller waits for nothing.
            if !retry || attempt >= MAX_ATTEMPTS || failing + pause > self.retry_for {
                return Err(if retry {
                    ClientError::new(
                        ClientErrorKind::Unreachable,
                        format!(
                            "{} (gave up after {attempt} attempts in {}s)",
                            error.message,
                            failing.as_secs()
                        ),
                    )
                } else {
                    error
                });
            }
            eprintln!(
                "alfresco-ssh session: {}; trying again in {}ms",
                error.message,
                pause.as_millis()
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }
}

/// A session named on the command line: a UUID-like id, checked before it goes in a path.
pub struct SessionRef(String);

impl SessionRef {
    pub fn parse(id: &str) -> Result<SessionRef, ClientError> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(SessionRef(id.to_owned()))
        } else {
            Err(ClientError::usage(
                "a session id is letters, digits and dashes (the `id` create printed)",
            ))
        }
    }
}

/// The owner of a create-session body inside `Bytes`: wiped when the last clone drops.
struct Wiped(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// One attempt that did not give an answer to keep.
enum Failure {
    Transport(reqwest::Error),
    Status(StatusCode, ClientError),
}

impl Failure {
    fn retryable(&self, repeat: Repeat) -> bool {
        match (self, repeat) {
            // A certificate the client does not trust stays untrusted: fail at once.
            (Failure::Transport(e), _) if tls_refused(e) => false,
            (Failure::Transport(e), Repeat::Safe) => !e.is_builder(),
            // Refused before a byte of the request left: the gateway did nothing.
            (Failure::Transport(e), Repeat::OnlyUnsent) => e.is_connect(),
            (Failure::Status(status, _), Repeat::Safe) => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            // 503 is the gateway's "full" and "shutting down", 502 and 504 a proxy's "not
            // reached": none of them created or extended anything.
            (Failure::Status(status, _), Repeat::OnlyUnsent) => {
                matches!(status.as_u16(), 429 | 502 | 503 | 504)
            }
        }
    }

    fn error(&self) -> ClientError {
        match self {
            Failure::Transport(e) => ClientError::new(
                ClientErrorKind::Unreachable,
                format!("cannot reach the gateway: {}", transport_message(e)),
            ),
            Failure::Status(_, error) => error.clone(),
        }
    }
}

/// Whether rustls refused the handshake (an untrusted or wrong certificate, a protocol
/// mismatch): retrying cannot help, and the message says which.
fn tls_refused(e: &reqwest::Error) -> bool {
    let mut next = std::error::Error::source(e);
    // Bounded like `transport_message`.
    for _ in 0..16 {
        let Some(cause) = next else { return false };
        if cause.is::<tokio_rustls::rustls::Error>() {
            return true;
        }
        // hyper-rustls hands the handshake error up inside io::Errors (two deep), whose
        // `source()` skips the wrapped error: look inside them instead.
        next = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => cause.source(),
        };
    }
    false
}

/// reqwest's own message, and the causes it wraps (the useful part: "connection refused").
fn transport_message(e: &reqwest::Error) -> String {
    let mut message = if tls_refused(e) {
        "the TLS handshake failed (a private CA needs --ca-file)".to_owned()
    } else if e.is_timeout() {
        "no answer in time".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the connection failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    // Bounded: error chains are short, but a cycle must not hang the client.
    for _ in 0..8 {
        let Some(cause) = source else { break };
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// A response into its JSON (2xx) or the refusal it carries.
async fn answer(response: reqwest::Response) -> Result<Value, Failure> {
    let status = response.status();
    if status.is_redirection() {
        let to = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        let error = ClientError::new(
            ClientErrorKind::Refused,
            format!(
                "the gateway answered {status} to {to}; redirects are not followed (check --gateway)"
            ),
        );
        return Err(Failure::Status(status, error));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER as u64)
    {
        let error = ClientError::new(ClientErrorKind::BadAnswer, "the answer is too large");
        return Err(Failure::Status(status, error));
    }
    let bytes = response.bytes().await.map_err(Failure::Transport)?;
    let json: Option<Value> = serde_json::from_slice(&bytes).ok();
    if status.is_success() {
        return json.ok_or_else(|| {
            let error = ClientError::new(
                ClientErrorKind::BadAnswer,
                format!("the gateway's {status} answer is not JSON; is --gateway right?"),
            );
            Failure::Status(status, error)
        });
    }
    let kind = if status.is_server_error() {
        ClientErrorKind::Unreachable
    } else {
        ClientErrorKind::Refused
    };
    let detail = json
        .as_ref()
        .and_then(|j| j.get("error"))
        .map(|e| {
            format!(
                "{}: {}",
                e.get("code").and_then(Value::as_str).unwrap_or("?"),
                e.get("message").and_then(Value::as_str).unwrap_or("")
            )
        })
        .unwrap_or_else(|| "no error details".to_owned());
    let error = ClientError::new(kind, format!("the gateway answered {status}: {detail}"));
    Err(Failure::Status(status, error))
}
