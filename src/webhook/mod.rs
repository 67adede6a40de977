//! Webhooks: session events POSTed to the operator's `--webhook` URLs, signed, and never in
//! a session's way. `Webhooks::notify` builds the body and `try_send`s it to each endpoint's
//! bounded queue, nothing more: it neither blocks nor awaits, so the ledger may call it from
//! any task. One task per endpoint (`delivery`) sends, retries and gives up; a full queue drops
//! the event, counted in `alfresco_webhook_deliveries_total{outcome="dropped"}`.
//! Bodies are `format`, signatures `sign`, host names `resolve`. docs/WEBHOOKS.md is the receiver's side.

mod delivery;
mod format;
mod resolve;
mod sign;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use delivery::DeliveryPolicy;

use crate::config::{Config, WebhookFormat, WebhookSettings};
use crate::metrics::Metrics;

/// The event names, in the order a session meets them (the contract's list).
pub const EVENTS: [&str; 9] = [
    "created", "opened", "ready", "detached", "resumed", "ended", "expired", "revoked", "failed",
];

/// The event's name, repeated from the body so a receiver can route before parsing.
pub const EVENT_HEADER: &str = "X-Alfresco-Event";
/// The delivery's id (UUID v4): the same on every attempt, so a receiver drops repeats.
pub const DELIVERY_HEADER: &str = "X-Alfresco-Delivery";
/// Unix seconds when this attempt was sent (the body's `timestamp` is when the event
/// happened); signed with the body, so a receiver refuses what is older than its window.
pub const TIMESTAMP_HEADER: &str = "X-Alfresco-Timestamp";
/// `sha256=<hex>`, with `--webhook-secret-file` only.
pub const SIGNATURE_HEADER: &str = "X-Alfresco-Signature";

/// What became of one delivery: the `outcome` label of `alfresco_webhook_deliveries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered,
    /// Every attempt failed, or the receiver refused it (4xx, 3xx).
    Failed,
    /// Never sent: the endpoint's queue was full, or the gateway stopped first.
    Dropped,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Delivered, Outcome::Failed, Outcome::Dropped];

    pub fn code(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::Dropped => "dropped",
        }
    }
}

/// The HTTP client could not be set up (its TLS roots); webhooks cannot run.
#[derive(Debug)]
pub struct StartError(String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the webhook HTTP client could not be built: {}", self.0)
    }
}

impl std::error::Error for StartError {}

/// The handle the gateway notifies; owns the endpoint tasks, which stop when it is dropped.
pub struct Webhooks {
    endpoints: Vec<delivery::Endpoint>,
    format: WebhookFormat,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    closing: CancellationToken,
    tasks: TaskTracker,
}

impl Webhooks {
    /// None when no --webhook is configured (or, logged, when the HTTP client cannot be
    /// built). Call it inside the tokio runtime: the endpoint tasks are spawned on it.
    pub fn from_config(config: &Config, metrics: Arc<Metrics>) -> Option<Arc<Webhooks>> {
        let settings = config.webhook.as_ref()?;
        match Webhooks::start(settings, DeliveryPolicy::default(), metrics) {
            Ok(webhooks) => {
                webhooks.log_start(settings);
                Some(webhooks)
            }
            Err(e) => {
                tracing::error!(error = %e, "webhooks are off");
                None
            }
        }
    }

    /// Spawns one task per endpoint, on the current tokio runtime, with `policy`.
    pub fn start(
        settings: &WebhookSettings,
        policy: DeliveryPolicy,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Webhooks>, StartError> {
        let client = reqwest::Client::builder()
            // A 3xx is the receiver's answer, not an order: following it would post the
            // event (and the link) to an address the operator never configured.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(policy.timeout)
            // HTTP(S)_PROXY would be the environment read below `main`; posts go direct.
            .no_proxy()
            .dns_resolver(Arc::new(resolve::SystemResolver::new()))
            .user_agent(concat!("alfresco-ssh/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StartError(e.without_url().to_string()))?;
        let stop = CancellationToken::new();
        let closing = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut endpoints = Vec::with_capacity(settings.endpoints.len());
        for url in &settings.endpoints {
            // A zero-sized queue is not a bound mpsc takes; one is the least.
            let (queue, receiver) = mpsc::channel(policy.queue.max(1));
            let worker = delivery::Worker {
                client: client.clone(),
                url: url.clone(),
                secret: settings.secret.clone(),
                policy,
                metrics: metrics.clone(),
                stop: stop.clone(),
                closing: closing.clone(),
            };
            tasks.spawn(worker.run(receiver));
            endpoints.push(delivery::Endpoint {
                url: url.clone(),
                queue,
                dropping: AtomicU64::new(0),
            });
        }
        tasks.close();
        Ok(Arc::new(Webhooks {
            endpoints,
            format: settings.format,
            metrics,
            stop,
            closing,
            tasks,
        }))
    }

    /// Says once, at start-up, where events go and what is unsafe about it: unsigned
    /// bodies can be forged, and plain http off this host carries the link in clear.
    fn log_start(&self, settings: &WebhookSettings) {
        let endpoints: Vec<String> = settings.endpoints.iter().map(|e| e.to_string()).collect();
        tracing::info!(
            endpoints = ?endpoints,
            format = ?settings.format,
            signed = settings.secret.is_some(),
            "webhooks on"
        );
        if settings.secret.is_none() {
            tracing::warn!(
                "webhooks are unsigned (no --webhook-secret-file): receivers cannot tell them from forgeries"
            );
        }
        for endpoint in &settings.endpoints {
            let url = endpoint.expose();
            let host = url.host_str().unwrap_or_default();
            // IPv6 hosts come bracketed, `[::1]`.
            let bare = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            let loopback = bare.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if url.scheme() == "http" && !loopback {
                tracing::warn!(
                    endpoint = %endpoint,
                    "webhook over plain http: session links and status cross the network in clear"
                );
            }
        }
    }

    /// Never blocks, never awaits: queues one delivery per endpoint (a full queue drops it,
    /// counted `dropped`, one log line per burst). `session` is the status object of
    /// `GET /sessions/<id>`; `url` is the session link, sent only with `created`.
    pub fn notify(&self, event: &'static str, session: &serde_json::Value, url: Option<&str>) {
        let at = SystemTime::now();
        for endpoint in &self.endpoints {
            endpoint.offer(&self.metrics, || {
                // An id per endpoint: each receiver dedups its own deliveries.
                let id = uuid::Uuid::new_v4();
                let body = format::body(self.format, event, id, at, session, url);
                delivery::Delivery {
                    event,
                    id,
                    body: body.into(),
                }
            });
        }
    }

    /// Sends what is queued, for at most `within`, then stops; later `notify` calls are
    /// dropped. For a graceful shutdown, so the last `ended` events go out.
    pub async fn drain(&self, within: Duration) {
        self.closing.cancel();
        if tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                within = ?within,
                "webhook deliveries still queued at shutdown were dropped"
            );
        }
        self.stop.cancel();
        self.tasks.wait().await;
    }

    /// Stops the endpoint tasks at once; queued and in-flight deliveries are dropped.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Endpoint tasks still running (0 after `shutdown` or `drain`, once they noticed); for
    /// leak checks.
    pub fn running_tasks(&self) -> usize {
        self.tasks.len()
    }
}

/// The ledger tells every session event here, after releasing its lock.
impl crate::ledger::Observer for Webhooks {
    fn notify(&self, event: &'static str, session: &serde_json::Value, url: Option<&str>) {
        Webhooks::notify(self, event, session, url);
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field(
                "endpoints",
                &self.endpoints.iter().map(|e| &e.url).collect::<Vec<_>>(),
            )
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_codes_are_distinct() {
        let codes: Vec<&str> = Outcome::ALL.iter().map(|o| o.code()).collect();
        assert_eq!(codes, ["delivered", "failed", "dropped"]);
    }

    #[test]
    fn no_webhook_flag_no_handle() {
        let config = Config::new("127.0.0.1:0".parse().unwrap());
        assert!(Webhooks::from_config(&config, Arc::new(Metrics::default())).is_none());
    }
}
