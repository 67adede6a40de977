//! One task per endpoint: takes deliveries from its bounded queue in order, POSTs each with
//! a timeout, retries connection errors, timeouts, 5xx and 429 with doubling back-off up to
//! `DeliveryPolicy::attempts`, and then gives up with one log line. It owns nothing a session
//! waits for, so a receiver that is slow, failing or silent costs its own queue, never a
//! session's time. Logs name the endpoint by scheme, host and port only (a chat webhook's path
//! is its secret), and never a body or the signing secret.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Outcome, sign};
use crate::config::WebhookUrl;
use crate::metrics::Metrics;
use crate::secret::Secret;

/// How deliveries are queued, timed and retried. `Default` is what the gateway runs with;
/// tests shorten the times.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryPolicy {
    /// Deliveries waiting per endpoint; more are dropped. 256 holds a burst of events from
    /// dozens of sessions while one attempt waits out its timeout, in a few hundred KiB.
    pub queue: usize,
    /// Per attempt, connect to response headers. Receivers answer in milliseconds; 5 s
    /// rides out a hiccup without letting a dead one hold the queue for long.
    pub timeout: Duration,
    /// Attempts per delivery, the first included.
    pub attempts: u32,
    /// The wait before the second attempt, doubled before each further one (1 s, 2 s, 4 s):
    /// a receiver that is restarting gets time to come back.
    pub backoff: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            queue: 256,
            timeout: Duration::from_secs(5),
            attempts: 4,
            backoff: Duration::from_secs(1),
        }
    }
}

/// One event on its way to one endpoint.
pub(super) struct Delivery {
    pub event: &'static str,
    pub id: uuid::Uuid,
    /// Shared by the attempts without a copy.
    pub body: bytes::Bytes,
}

/// The sending side of one endpoint's queue, held by `Webhooks`.
pub(super) struct Endpoint {
    pub url: WebhookUrl,
    pub queue: mpsc::Sender<Delivery>,
    /// Deliveries dropped since the queue last accepted one: the first of a burst is logged.
    pub dropping: AtomicU64,
}

impl Endpoint {
    /// Queues `delivery()` if there is room, without waiting; builds it only then, so a full
    /// queue costs no serialisation.
    pub fn offer(&self, metrics: &Metrics, delivery: impl FnOnce() -> Delivery) {
        match self.queue.try_reserve() {
            Ok(permit) => {
                permit.send(delivery());
                self.dropping.store(0, Ordering::Relaxed);
            }
            Err(full_or_closed) => {
                metrics.webhook_delivery(Outcome::Dropped.code());
                if self.dropping.fetch_add(1, Ordering::Relaxed) == 0 {
                    let why = match full_or_closed {
                        mpsc::error::TrySendError::Full(()) => "its queue is full",
                        mpsc::error::TrySendError::Closed(()) => "webhooks are stopping",
                    };
                    tracing::warn!(
                        endpoint = %self.url,
                        why,
                        "webhook deliveries dropped until the endpoint catches up"
                    );
                }
            }
        }
    }
}

/// What one endpoint's task works with.
pub(super) struct Worker {
    pub client: reqwest::Client,
    pub url: WebhookUrl,
    pub secret: Option<Arc<Secret<Vec<u8>>>>,
    pub policy: DeliveryPolicy,
    pub metrics: Arc<Metrics>,
    /// Stop now: what is queued or in flight is dropped.
    pub stop: CancellationToken,
    /// Accept no more, send what is queued, then end.
    pub closing: CancellationToken,
}

/// Why an attempt did not deliver; logged, never sent anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Timeout,
    Connect,
    /// The request broke off after connecting (reset, bad response).
    Request,
    Status(StatusCode),
}

impl Failure {
    /// Worth another attempt: the receiver may be back, or less busy, in a moment. A 3xx is
    /// not (redirects are not followed: the operator configured this URL, not another), nor
    /// is another 4xx (the receiver refused this delivery and would again).
    fn is_transient(self) -> bool {
        match self {
            Failure::Timeout | Failure::Connect | Failure::Request => true,
            Failure::Status(s) => s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("timed out"),
            Failure::Connect => f.write_str("could not connect"),
            Failure::Request => f.write_str("the request broke off"),
            Failure::Status(s) if s.is_redirection() => {
                write!(f, "answered {} (redirects are not followed)", s.as_u16())
            }
            Failure::Status(s) => write!(f, "answered {}", s.as_u16()),
        }
    }
}

impl Worker {
    /// The endpoint's task: until stopped, or closed and empty.
    pub async fn run(self, mut queue: mpsc::Receiver<Delivery>) {
        let mut closed = false;
        loop {
            let next = tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                () = self.closing.cancelled(), if !closed => {
                    // Refuse new deliveries; `recv` still yields the queued ones, then None.
                    queue.close();
                    closed = true;
                    continue;
                }
                next = queue.recv() => next,
            };
            let Some(delivery) = next else { break };
            let outcome = tokio::select! {
                biased;
                () = self.stop.cancelled() => Outcome::Dropped,
                outcome = self.deliver(&delivery) => outcome,
            };
            self.metrics.webhook_delivery(outcome.code());
        }
        // Stopped: whatever is still queued will not be sent.
        queue.close();
        while queue.try_recv().is_ok() {
            self.metrics.webhook_delivery(Outcome::Dropped.code());
        }
    }

    /// Every attempt of one delivery: the same body and delivery id each time, so a receiver
    /// that got an earlier attempt after all can tell it is a repeat.
    async fn deliver(&self, delivery: &Delivery) -> Outcome {
        let mut wait = self.policy.backoff;
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(delivery).await {
                Ok(()) => {
                    tracing::debug!(
                        endpoint = %self.url,
                        event = delivery.event,
                        delivery = %delivery.id,
                        attempt,
                        "webhook delivered"
                    );
                    return Outcome::Delivered;
                }
                Err(failure) => failure,
            };
            if !failure.is_transient() || attempt >= self.policy.attempts {
                tracing::warn!(
                    endpoint = %self.url,
                    event = delivery.event,
                    delivery = %delivery.id,
                    attempts = attempt,
                    reason = %failure,
                    "webhook delivery failed; dropped"
                );
                return Outcome::Failed;
            }
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
            attempt += 1;
        }
    }

    /// One POST. The timestamp header is this attempt's time, signed with the body: a
    /// delivery that waited in the queue or for its retries is still fresh when it arrives,
    /// so receivers can keep their replay window short.
    async fn attempt(&self, delivery: &Delivery) -> Result<(), Failure> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut request = self
            .client
            .post(self.url.expose().clone())
            .timeout(self.policy.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(super::EVENT_HEADER, delivery.event)
            .header(super::DELIVERY_HEADER, delivery.id.to_string())
            .header(super::TIMESTAMP_HEADER, now.to_string())
            .body(delivery.body.clone());
        if let Some(secret) = &self.secret {
            let signature = sign::signature(secret.expose(), now, &delivery.body);
            request = request.header(super::SIGNATURE_HEADER, signature);
        }
        // The response's body is not read: the status is the whole answer, and a receiver
        // that streams a large one must not hold the queue.
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(Failure::Status(response.status())),
            // reqwest's errors print the URL; only their kind is kept.
            Err(e) if e.is_timeout() => Err(Failure::Timeout),
            Err(e) if e.is_connect() => Err(Failure::Connect),
            Err(_) => Err(Failure::Request),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_retried() {
        for transient in [
            Failure::Timeout,
            Failure::Connect,
            Failure::Request,
            Failure::Status(StatusCode::INTERNAL_SERVER_ERROR),
            Failure::Status(StatusCode::BAD_GATEWAY),
            Failure::Status(StatusCode::TOO_MANY_REQUESTS),
        ] {
            assert!(transient.is_transient(), "{transient}");
        }
        for last in [
            StatusCode::FOUND,
            StatusCode::PERMANENT_REDIRECT,
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::NOT_FOUND,
            StatusCode::GONE,
        ] {
            assert!(!Failure::Status(last).is_transient(), "{last}");
        }
        assert_eq!(
            Failure::Status(StatusCode::FOUND).to_string(),
            "answered 302 (redirects are not followed)"
        );
    }
}
