//! What `GET /metrics` reports, in the Prometheus text format (prometheus-client).
//!
//! Counters and histograms are updated where things happen (create-session, the session
//! task); gauges (pending, live, bridge threads) are read from their owners at scrape time,
//! so they cannot drift. Labels are fixed, small sets: outcome codes and directions, never
//! ids, users or hosts.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    create_requests: Family<Labels, Counter>,
    sessions_ended: Family<Labels, Counter>,
    attaches: Family<Labels, Counter>,
    connect_seconds: Histogram,
    bytes: Family<Labels, Counter>,
    frames: Family<Labels, Counter>,
    webhook_deliveries: Family<Labels, Counter>,
    pending: Gauge,
    live: Gauge,
    bridge_threads: Gauge,
    waiters: Gauge,
}

/// The gauges' current values, read by the caller from their owners.
pub struct Gauges {
    pub pending: usize,
    pub live: usize,
    pub bridge_threads: usize,
    /// Requests waiting on a session's state.
    pub waiters: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("alfresco");
        let m = Metrics {
            create_requests: Family::default(),
            sessions_ended: Family::default(),
            attaches: Family::default(),
            // 10 ms … ~20 s: a LAN handshake to a slow, far server.
            connect_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            bytes: Family::default(),
            frames: Family::default(),
            webhook_deliveries: Family::default(),
            pending: Gauge::default(),
            live: Gauge::default(),
            bridge_threads: Gauge::default(),
            waiters: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "create_session_requests",
            "create-session requests by outcome (created or the error code)",
            m.create_requests.clone(),
        );
        registry.register(
            "sessions_ended",
            "sessions ended, by reason (exited, signalled, eof, client_gone, abandoned or the error code)",
            m.sessions_ended.clone(),
        );
        registry.register(
            "attaches",
            "sockets attached to live sessions, by outcome (resumed, resume_refused, taken_over, viewer, viewer_refused)",
            m.attaches.clone(),
        );
        registry.register(
            "ssh_connect_seconds",
            "from claiming a session to its shell being ready",
            m.connect_seconds.clone(),
        );
        registry.register(
            "terminal_bytes",
            "terminal bytes, by direction (in: typed, out: output)",
            m.bytes.clone(),
        );
        registry.register(
            "websocket_frames",
            "WebSocket data frames, by direction",
            m.frames.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "webhook deliveries, by outcome (delivered, failed after its retries, dropped from a full queue)",
            m.webhook_deliveries.clone(),
        );
        registry.register(
            "sessions_pending",
            "sessions created and not yet opened",
            m.pending.clone(),
        );
        registry.register(
            "sessions_live",
            "sessions open in a browser",
            m.live.clone(),
        );
        registry.register(
            "bridge_threads",
            "SSH bridge threads running",
            m.bridge_threads.clone(),
        );
        registry.register(
            "session_waiters",
            "requests waiting on a session's state (GET /sessions/<id>?wait=)",
            m.waiters.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn create_request(&self, outcome: &'static str) {
        self.create_requests
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    pub fn session_ended(&self, reason: &'static str) {
        self.sessions_ended
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// A socket resumed or viewed a live session (or was refused).
    pub fn attach(&self, outcome: &'static str) {
        self.attaches
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    /// One webhook delivery's outcome: `delivered`, `failed` or `dropped`.
    pub fn webhook_delivery(&self, outcome: &'static str) {
        self.webhook_deliveries
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    /// How many webhook deliveries ended with `outcome` so far; tests poll it.
    pub fn webhook_deliveries(&self, outcome: &'static str) -> u64 {
        self.webhook_deliveries
            .get_or_create(&vec![("outcome", outcome)])
            .get()
    }

    pub fn connected(&self, seconds: f64) {
        self.connect_seconds.observe(seconds);
    }

    /// Terminal bytes and frames of one session, added once when it ends.
    pub fn traffic(&self, bytes_in: u64, bytes_out: u64, frames_in: u64, frames_out: u64) {
        self.bytes
            .get_or_create(&vec![("direction", "in")])
            .inc_by(bytes_in);
        self.bytes
            .get_or_create(&vec![("direction", "out")])
            .inc_by(bytes_out);
        self.frames
            .get_or_create(&vec![("direction", "in")])
            .inc_by(frames_in);
        self.frames
            .get_or_create(&vec![("direction", "out")])
            .inc_by(frames_out);
    }

    /// The text exposition, with the gauges set to `gauges`.
    pub fn render(&self, gauges: Gauges) -> String {
        let set = |g: &Gauge, v: usize| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        set(&self.pending, gauges.pending);
        set(&self.live, gauges.live);
        set(&self.bridge_threads, gauges.bridge_threads);
        set(&self.waiters, gauges.waiters);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::default();
        m.create_request("created");
        m.create_request("created");
        m.create_request("unauthorized");
        m.session_ended("exited");
        m.traffic(3, 10, 1, 2);
        m.connected(0.05);
        m.webhook_delivery("dropped");
        assert_eq!(m.webhook_deliveries("dropped"), 1);
        let text = m.render(Gauges {
            pending: 4,
            live: 2,
            bridge_threads: 2,
            waiters: 3,
        });
        for line in [
            "alfresco_create_session_requests_total{outcome=\"created\"} 2",
            "alfresco_create_session_requests_total{outcome=\"unauthorized\"} 1",
            "alfresco_sessions_ended_total{reason=\"exited\"} 1",
            "alfresco_terminal_bytes_total{direction=\"out\"} 10",
            "alfresco_sessions_pending 4",
            "alfresco_sessions_live 2",
            "alfresco_bridge_threads 2",
            "alfresco_session_waiters 3",
            "alfresco_ssh_connect_seconds_count 1",
            "alfresco_webhook_deliveries_total{outcome=\"dropped\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
