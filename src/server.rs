//! `Server`: binds the layers together and runs the accept loop until `shutdown` resolves.
//!
//! Tests start the real server on `127.0.0.1:0` through `Server::run`, and watch it through
//! a `Handle` (pending, live sessions, bridge threads). Shutdown stops accepting, tells live
//! sessions (`server_shutdown`), and waits a bounded time for connections and sessions.
//!
//! Each connection runs in its own task under a `connection` span (client address and port
//! as fields), so whatever is logged while serving it says whose it was.
//!
//! With TLS, each connection's handshake runs in its own task, bounded in time, so a client
//! that stalls or speaks plain HTTP costs one task and never the accept loop. Plain and TLS
//! streams are then served by the same `serve_connection`.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::http;
use crate::ledger::{Ledger, Observer};
use crate::metrics::Metrics;
use crate::ssh::{Dialer, HostKeys};
use crate::store::Store;
use crate::webhook::Webhooks;
use crate::ws;

/// A client gets this long to send its request headers (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client gets this long to complete the TLS handshake, the same guard one layer down.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for connections and sessions to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// After the sessions, how long shutdown keeps sending queued webhook events (their last
/// `ended`); a receiver that is down costs no more than this.
const WEBHOOK_DRAIN: Duration = Duration::from_secs(5);
/// Pending sessions are swept at least this often (and at half the TTL when shorter).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

pub struct Server {
    http: Arc<http::State>,
    drain_timeout: Duration,
    /// `Some` when the listener speaks TLS (`Config::tls`).
    tls: Option<TlsAcceptor>,
    /// `Some` with `--webhook`: told of every session event by the ledger.
    webhooks: Option<Arc<Webhooks>>,
}

/// A read-only view of the server's counts, for tests, health and leak checks.
#[derive(Clone)]
pub struct Handle {
    http: Arc<http::State>,
}

impl Handle {
    /// Sessions created and not yet claimed or expired.
    pub fn pending(&self) -> usize {
        self.http.store.len()
    }

    /// Sessions claimed by a WebSocket and not yet ended.
    pub fn live(&self) -> usize {
        self.http.ws.slots.live()
    }

    /// Bridge threads still running.
    pub fn bridge_threads(&self) -> usize {
        self.http.ws.threads.load(Ordering::Acquire)
    }

    /// Requests waiting on a session's state (`GET /sessions/<id>?wait=`).
    pub fn waiters(&self) -> usize {
        self.http.waiters.count()
    }

    /// Sessions the ledger knows: pending, running, and ended ones still in the history.
    pub fn known_sessions(&self) -> usize {
        self.http.ledger.len()
    }

    /// Reads the API token file again (SIGHUP); the tokens in force stay on an error.
    /// Returns how many tokens are in force.
    pub fn reload_tokens(&self) -> Result<usize, crate::config::ConfigError> {
        self.http.api_tokens.reload()
    }
}

impl Server {
    /// Builds the layers, reading the known-hosts files. Must be called inside a Tokio
    /// runtime (the resolver needs one).
    pub fn new(config: &Config) -> io::Result<Server> {
        let host_keys = HostKeys::load(
            config.host_key_policy,
            config.known_hosts.as_deref(),
            config.state_dir.as_deref(),
        )?;
        let store = Arc::new(Store::new(config.session_ttl, config.max_pending));
        let metrics = Arc::new(Metrics::default());
        let webhooks = Webhooks::from_config(config, metrics.clone());
        let ledger = Arc::new(Ledger::new(
            config.session_history,
            config.session_history_entries,
            webhooks.clone().map(|w| w as Arc<dyn Observer>),
        ));
        let ws = Arc::new(ws::Context {
            store: store.clone(),
            ledger: ledger.clone(),
            dialer: Dialer::from_system(config.destinations.clone()),
            slots: ws::Slots::new(config.max_sessions),
            threads: Arc::new(AtomicUsize::new(0)),
            draining: CancellationToken::new(),
            host_keys: Arc::new(host_keys),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            metrics,
            registry: Arc::default(),
            settings: ws::SessionSettings {
                connect_timeout: config.connect_timeout,
                auth_prompt_timeout: config.auth_prompt_timeout,
                idle_timeout: config.idle_timeout,
                max_session_time: config.max_session_time,
                remote_lang: config.remote_lang.as_deref().map(Arc::from),
                resume_grace: config.resume_grace,
                resume_buffer: config.resume_buffer,
                max_viewers: config.max_viewers,
                record: config.record.clone(),
            },
        });
        let http = Arc::new(http::State {
            store,
            ledger,
            waiters: http::Waiters::default(),
            timers: http::TimerBounds {
                ttl: config.session_ttl,
                max_ttl: config.max_session_ttl,
                max_session_time: config.max_session_time,
                idle_timeout: config.idle_timeout,
                resume_grace: config.resume_grace,
            },
            max_wait: config.max_wait,
            public_url: config.public_url.clone(),
            listen: config.listen,
            api_tokens: http::Tokens::new(config.api_tokens.clone(), config.token_source.clone()),
            rate_limiter: http::RateLimiter::new(config.create_rate_per_minute),
            auth_failures: http::AuthFailures::default(),
            origins: http::OriginPolicy::new(
                config.scheme(),
                config.public_url.as_deref(),
                &config.allowed_origins,
                &config.allowed_hosts,
            ),
            page_csp: http::page_csp(&config.frame_ancestors),
            max_sessions_per_token: config.max_sessions_per_token,
            destinations: config.destinations.clone(),
            scheme: config.scheme(),
            ws,
        });
        Ok(Server {
            http,
            drain_timeout: config.drain_timeout,
            tls: config.tls.clone().map(TlsAcceptor::from),
            webhooks,
        })
    }

    pub fn handle(&self) -> Handle {
        Handle {
            http: self.http.clone(),
        }
    }

    /// Serves `listener` until `shutdown` resolves, then drains within a bounded time.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let Server {
            http: state,
            tls,
            drain_timeout,
            webhooks,
        } = self;
        // hyper's own graceful helper does not cover upgradeable connections; this does.
        let connections = TaskTracker::new();
        let stop_connections = CancellationToken::new();
        let sweeper = tokio::spawn(sweep(
            state.store.clone(),
            state.ledger.clone(),
            state.ws.shutdown.clone(),
        ));
        tokio::pin!(shutdown);
        let ws = state.ws.clone();
        // Far enough away to mean "not draining yet".
        let drain_end = tokio::time::sleep(Duration::from_secs(100 * 365 * 86_400));
        tokio::pin!(drain_end);
        loop {
            let draining = ws.draining.is_cancelled();
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors or similar: keep serving the ones we have.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                // Drain: refuse new sessions (503), tell live ones, keep serving HTTP
                // (so /readyz can say so) until they end or the drain timeout passes.
                () = &mut shutdown, if !draining => {
                    tracing::info!(live = ws.slots.live(), timeout = ?drain_timeout, "draining");
                    ws.draining.cancel();
                    ws.tracker.close();
                    drain_end.as_mut().reset(tokio::time::Instant::now() + drain_timeout);
                    continue;
                }
                () = ws.tracker.wait(), if draining => break,
                () = &mut drain_end, if draining => break,
            };
            let _ = stream.set_nodelay(true);
            // The address the client reached: the gateway's own origin for the WebSocket
            // check (`http::origin`). Unknown only if the socket is already gone.
            let Ok(local) = stream.local_addr() else {
                continue;
            };
            let state = state.clone();
            let tls = tls.clone();
            let stop = stop_connections.clone();
            // One span per connection, so every line logged while serving it (refusals, a
            // session created, failed tokens) says whose it was, as fields. It holds no
            // session id: a connection may create several, and ids stay out of spans.
            let span = tracing::info_span!(
                "connection",
                client = %peer.ip(),
                port = peer.port(),
                tls = tls.is_some()
            );
            let serve = async move {
                let result = match tls {
                    None => serve_connection(stream, state, peer, local, stop).await,
                    Some(acceptor) => match handshake(&acceptor, stream, &stop).await {
                        Ok(stream) => serve_connection(stream, state, peer, local, stop).await,
                        Err(e) => {
                            // Plain HTTP on the TLS port, a scanner, a stalled client.
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                    },
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection error");
                }
            };
            connections.spawn(serve.instrument(span));
        }

        tracing::info!(live = ws.slots.live(), "shutting down");
        drop(listener);
        ws.shutdown.cancel();
        stop_connections.cancel();
        connections.close();
        let drained = tokio::time::timeout(SHUTDOWN_WAIT, async {
            tokio::join!(connections.wait(), ws.tracker.wait());
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                live = ws.slots.live(),
                "shutdown deadline passed with sessions still open"
            );
        }
        let _ = sweeper.await;
        if let Some(webhooks) = webhooks {
            webhooks.drain(WEBHOOK_DRAIN).await;
        }
        Ok(())
    }
}

/// Completes the server side of the TLS handshake within `TLS_HANDSHAKE_TIMEOUT`, giving up
/// at once when the server shuts down.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    stop: &CancellationToken,
) -> io::Result<TlsStream<TcpStream>> {
    tokio::select! {
        done = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => {
            done.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))?
        }
        () = stop.cancelled() => Err(io::Error::other("shutting down")),
    }
}

/// Serves HTTP/1.1, with upgrades for `/ws`, on one connection (plain TCP or TLS) until
/// the client closes it or `stop` is cancelled.
async fn serve_connection<S>(
    stream: S,
    state: Arc<http::State>,
    peer: std::net::SocketAddr,
    local: std::net::SocketAddr,
    stop: CancellationToken,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(http::route(req, state, peer, local).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// Drops expired pending sessions (wiping their credentials) and records their expiry, and
/// drops old history, until shutdown.
async fn sweep(store: Arc<Store>, ledger: Arc<Ledger>, shutdown: CancellationToken) {
    let every = SWEEP_EVERY
        .min(store.ttl() / 2)
        .max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let expired = store.sweep();
                for id in &expired {
                    ledger.expire(id);
                }
                if !expired.is_empty() {
                    tracing::info!(expired = expired.len(), "unused sessions expired");
                }
                ledger.prune();
            }
            () = shutdown.cancelled() => break,
        }
    }
}
