//! `Server`: binds the layers together and runs the accept loop until `shutdown` resolves.
//!
//! Tests start the real server on `127.0.0.1:0` through `Server::run`, and watch it through
//! a `Handle` (pending, live sessions, bridge threads). Shutdown stops accepting, tells live
//! sessions (`server_shutdown`), and waits a bounded time for connections and sessions.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http;
use crate::ssh::{Dialer, HostKeys};
use crate::store::Store;
use crate::ws;

/// A client gets this long to send its request headers (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for connections and sessions to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// Pending sessions are swept at least this often (and at half the TTL when shorter).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

pub struct Server {
    http: Arc<http::State>,
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
        let ws = Arc::new(ws::Context {
            store: store.clone(),
            dialer: Dialer::from_system(),
            slots: ws::Slots::new(config.max_sessions),
            threads: Arc::new(AtomicUsize::new(0)),
            connect_timeout: config.connect_timeout,
            host_keys: Arc::new(host_keys),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        let http = Arc::new(http::State {
            store,
            public_url: config.public_url.clone(),
            listen: config.listen,
            ws,
        });
        Ok(Server { http })
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
        let state = self.http;
        // hyper's own graceful helper does not cover upgradeable connections; this does.
        let connections = TaskTracker::new();
        let stop_connections = CancellationToken::new();
        let sweeper = tokio::spawn(sweep(state.store.clone(), state.ws.shutdown.clone()));
        tokio::pin!(shutdown);
        loop {
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
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(http::route(req, state).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let stop = stop_connections.clone();
            connections.spawn(async move {
                tokio::pin!(conn);
                let result = tokio::select! {
                    result = conn.as_mut() => result,
                    () = stop.cancelled() => {
                        // Finish the request in flight, then close.
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection error");
                }
            });
        }

        tracing::info!("shutting down");
        drop(listener);
        let ws = &state.ws;
        ws.shutdown.cancel();
        ws.tracker.close();
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
        Ok(())
    }
}

/// Drops expired pending sessions (wiping their credentials) until shutdown, then all.
async fn sweep(store: Arc<Store>, shutdown: CancellationToken) {
    let every = SWEEP_EVERY
        .min(store.ttl() / 2)
        .max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let n = store.sweep();
                if n > 0 {
                    tracing::info!(expired = n, "unused sessions expired");
                }
            }
            () = shutdown.cancelled() => break,
        }
    }
}
