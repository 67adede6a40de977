//! Webhooks against a real loopback receiver (`Receiver`, a small hyper server started per
//! test) through the public API, `alfresco_ssh::webhook::Webhooks`: signatures verify, the
//! link goes with `created` only, retries are bounded and spaced, redirects are not followed,
//! a silent receiver costs at most timeout × attempts, and `notify` never waits for any of it.
//! Then end to end, the gateway and a real sshd: the events of real sessions, in order, and
//! a stalled or failing receiver that does not change the session.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use alfresco_ssh::config::parse_command_line;
use alfresco_ssh::metrics::Metrics;
use alfresco_ssh::webhook::{DeliveryPolicy, EVENTS, Outcome, Webhooks};
use alfresco_ssh::{Args, Config};
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::watch;

use crate::support::gateway::{Gateway, TEST_TOKEN};
use crate::support::logs::Capture;
use crate::support::sshd::Sshd;
use crate::support::tls::TestCert;
use crate::support::{WAIT, password_body};

const SECRET: &str = "webhook-secret-for-tests-5e1f";

/// How the receiver answers each request.
#[derive(Debug, Clone)]
enum Answer {
    Ok,
    /// 200 after this long.
    Slow(Duration),
    Status(u16),
    /// Reads the request, then never answers.
    Never,
    /// 302 to this URL.
    Redirect(String),
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A loopback HTTP server that records every request; stopped (with its connections) when
/// dropped.
struct Receiver {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    seen: Arc<Mutex<Vec<Received>>>,
    count: watch::Receiver<usize>,
    /// TCP connections accepted, TLS handshakes that failed included.
    connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(answer: Answer) -> Receiver {
        Receiver::serve(answer, None).await
    }

    /// Over TLS with `cert` (self-signed: trusted by no root store).
    async fn start_tls(answer: Answer, cert: &TestCert) -> Receiver {
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config());
        Receiver::serve(answer, Some(acceptor)).await
    }

    async fn serve(answer: Answer, tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (counter, count) = watch::channel(0);
        let counter = Arc::new(counter);
        let (a, s) = (answer.clone(), seen.clone());
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            // Connections live in the set, so aborting this task closes them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (a, s, counter) = (a.clone(), s.clone(), counter.clone());
                let service = hyper::service::service_fn(move |request| {
                    handle(request, a.clone(), s.clone(), counter.clone())
                });
                let tls = tls.clone();
                connections.spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = http.serve_connection(io, service).await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = http.serve_connection(io, service).await;
                        }
                    }
                });
            }
        });
        Receiver {
            addr,
            answer,
            seen,
            count,
            connections,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// The first `n` requests, once they arrived (bounded by `WAIT`).
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let mut count = self.count.clone();
        tokio::time::timeout(WAIT, count.wait_for(|&c| c >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} requests did not arrive; got {:?}", self.seen()))
            .unwrap();
        self.seen().into_iter().take(n).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    request: Request<Incoming>,
    answer: Arc<Mutex<Answer>>,
    seen: Arc<Mutex<Vec<Received>>>,
    counter: Arc<watch::Sender<usize>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    seen.lock().unwrap().push(Received {
        at,
        headers: parts.headers,
        body,
    });
    counter.send_modify(|c| *c += 1);
    let answer = answer.lock().unwrap().clone();
    let response = Response::builder();
    let response = match answer {
        Answer::Ok => response.status(200),
        Answer::Slow(delay) => {
            tokio::time::sleep(delay).await;
            response.status(200)
        }
        Answer::Status(status) => response.status(status),
        Answer::Never => std::future::pending().await,
        Answer::Redirect(to) => response.status(302).header("location", to),
    };
    Ok(response.body(Full::new(Bytes::from_static(b"ok"))).unwrap())
}

/// The configuration an operator would get from these flags (webhooks only).
fn config(flags: &[&str]) -> Config {
    let mut argv: Vec<std::ffi::OsString> = vec!["alfresco-ssh".into()];
    argv.extend(flags.iter().map(Into::into));
    let args: Args = parse_command_line(argv).unwrap();
    Config::try_from(&args).unwrap()
}

/// Webhooks to `urls`, signed with `SECRET` when `signed`, with `policy`.
fn start(
    urls: &[String],
    signed: bool,
    format: &str,
    policy: DeliveryPolicy,
) -> (Arc<Webhooks>, Arc<Metrics>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let mut flags: Vec<&str> = vec!["--webhook-format", format];
    for url in urls {
        flags.extend(["--webhook", url]);
    }
    if signed {
        flags.extend(["--webhook-secret-file", secret.to_str().unwrap()]);
    }
    let config = config(&flags);
    let metrics = Arc::new(Metrics::default());
    let webhooks = Webhooks::start(config.webhook.as_ref().unwrap(), policy, metrics.clone())
        .expect("the HTTP client");
    (webhooks, metrics, dir)
}

/// Short times, so the retry tests take a second rather than half a minute.
fn quick() -> DeliveryPolicy {
    DeliveryPolicy {
        queue: 256,
        timeout: Duration::from_millis(300),
        attempts: 4,
        backoff: Duration::from_millis(50),
    }
}

/// Polls `metrics` until `outcome` reaches `n` (bounded by `WAIT`).
async fn counted(metrics: &Metrics, outcome: Outcome, n: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = metrics.webhook_deliveries(outcome.code());
        if now >= n {
            assert_eq!(now, n, "{outcome:?} counted more than expected");
            return;
        }
        assert!(Instant::now() < deadline, "{outcome:?}: {now} of {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn status(state: &str) -> Value {
    json!({"id": "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f", "state": state,
           "target": "alfresco-test@127.0.0.1:22", "token": "ci",
           "created_at": "2026-12-03T15:00:00Z", "expires_at": "2026-12-03T15:10:00Z",
           "end_reason": if state == "ended" { json!("exited") } else { Value::Null },
           "exit_status": if state == "ended" { json!(7) } else { Value::Null },
           "client": "127.0.0.1", "bytes_in": 12, "bytes_out": 3400})
}

/// What a receiver does: HMAC-SHA256 of "<timestamp>.<body>" with the shared secret,
/// compared in constant time by `verify_slice`.
fn verifies(received: &Received) -> bool {
    let timestamp = received.header("x-alfresco-timestamp");
    let Some(hex) = received
        .header("x-alfresco-signature")
        .strip_prefix("sha256=")
    else {
        return false;
    };
    let Some(tag) = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&received.body);
    mac.verify_slice(&tag).is_ok()
}

#[tokio::test]
async fn signed_json_deliveries_verify_and_keep_their_order() {
    let receiver = Receiver::start(Answer::Ok).await;
    let (webhooks, metrics, _dir) = start(&[receiver.url("/hook")], true, "json", quick());
    let link = "http://127.0.0.1:8022/6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f";
    webhooks.notify("created", &status("pending"), Some(link));
    webhooks.notify("opened", &status("connecting"), Some(link));
    webhooks.notify("ready", &status("live"), None);
    webhooks.notify("ended", &status("ended"), None);
    let got = receiver.wait_for(4).await;
    counted(&metrics, Outcome::Delivered, 4).await;

    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut ids = Vec::new();
    for (r, (event, state)) in got.iter().zip([
        ("created", "pending"),
        ("opened", "connecting"),
        ("ready", "live"),
        ("ended", "ended"),
    ]) {
        let body = r.json();
        assert_eq!(body["event"], event);
        assert_eq!(body["session"], status(state), "the status object as given");
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("x-alfresco-event"), event);
        assert!(r.header("user-agent").starts_with("alfresco-ssh/"));
        let id = uuid::Uuid::parse_str(r.header("x-alfresco-delivery")).unwrap();
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(body["delivery"], id.to_string());
        ids.push(id);
        let ts: u64 = r.header("x-alfresco-timestamp").parse().unwrap();
        assert!(ts.abs_diff(now) < 60, "timestamp {ts}, now {now}");
        // The event's time, in the body, is at most the attempt's, in the header.
        let happened = humantime::parse_rfc3339(body["timestamp"].as_str().unwrap()).unwrap();
        let happened = happened
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            happened <= ts && ts - happened < 60,
            "event {happened}, sent {ts}"
        );
        assert!(verifies(r), "{event}: the signature verifies");
        // The link is a one-time credential: on `created` only, even when passed again.
        let url = (event == "created").then(|| json!(link));
        assert_eq!(body.get("url").cloned(), url);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "a fresh delivery id each");

    // A body changed on the way, or an old signature on a new timestamp, does not verify.
    let mut tampered = got[3].clone();
    tampered.body = Bytes::from(
        String::from_utf8(tampered.body.to_vec())
            .unwrap()
            .replace("\"exit_status\":7", "\"exit_status\":0"),
    );
    assert_ne!(tampered.body, got[3].body);
    assert!(!verifies(&tampered));
    let mut replayed = got[0].clone();
    replayed.headers.insert(
        "x-alfresco-timestamp",
        (now + 3600).to_string().parse().unwrap(),
    );
    assert!(!verifies(&replayed));
}

#[tokio::test]
async fn without_a_secret_deliveries_are_unsigned() {
    let receiver = Receiver::start(Answer::Ok).await;
    let (webhooks, metrics, _dir) = start(&[receiver.url("/")], false, "json", quick());
    webhooks.notify("ready", &status("live"), None);
    let got = receiver.wait_for(1).await;
    assert!(got[0].headers.get("x-alfresco-signature").is_none());
    assert!(got[0].headers.get("x-alfresco-delivery").is_some());
    counted(&metrics, Outcome::Delivered, 1).await;
}

#[test]
fn failing_receivers_are_retried_a_bounded_number_of_times() {
    let capture = Capture::default();
    // At TRACE, so that nothing below the warning line holds what it must not either.
    let subscriber = alfresco_ssh::logging::subscriber("trace", false, false, capture.clone())
        .expect("the log filter");
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let receiver = Receiver::start(Answer::Status(500)).await;
        let hook = receiver.url("/hook/SECRET-PATH-a9f3");
        let (webhooks, metrics, _dir) = start(&[hook], true, "json", quick());

        // 500: four attempts, the same delivery each time (each signed with its own
        // timestamp), spaced 50, 100, 200 ms.
        webhooks.notify("ended", &status("ended"), None);
        counted(&metrics, Outcome::Failed, 1).await;
        let got = receiver.seen();
        assert_eq!(got.len(), 4, "exactly `attempts` attempts");
        for r in &got {
            assert_eq!(r.body, got[0].body);
            assert_eq!(
                r.header("x-alfresco-delivery"),
                got[0].header("x-alfresco-delivery")
            );
            assert!(verifies(r));
        }
        for (pair, backoff) in got.windows(2).zip([50, 100, 200]) {
            let gap = pair[1].at - pair[0].at;
            assert!(
                gap >= Duration::from_millis(backoff),
                "attempts {gap:?} apart, back-off {backoff} ms"
            );
        }

        // 429 is retried the same way.
        receiver.answer(Answer::Status(429));
        webhooks.notify("ended", &status("ended"), None);
        counted(&metrics, Outcome::Failed, 2).await;
        assert_eq!(receiver.seen().len(), 8);

        // Another 4xx is the receiver's verdict: one attempt.
        receiver.answer(Answer::Status(404));
        webhooks.notify("ended", &status("ended"), None);
        counted(&metrics, Outcome::Failed, 3).await;
        assert_eq!(receiver.seen().len(), 9);

        // And the endpoint recovers for the next delivery.
        receiver.answer(Answer::Ok);
        webhooks.notify("ended", &status("ended"), None);
        counted(&metrics, Outcome::Delivered, 1).await;
        assert_eq!(receiver.seen().len(), 10);
    });
    // One line per failed delivery, naming the endpoint by host only: no path (a chat
    // webhook's secret), no body, no signing secret.
    let logs = capture.text();
    assert_eq!(
        logs.matches("webhook delivery failed; dropped").count(),
        3,
        "{logs}"
    );
    assert!(
        logs.contains("answered 500") && logs.contains("answered 404"),
        "{logs}"
    );
    for secret in ["SECRET-PATH", SECRET, "exit_status", "alfresco-test@"] {
        assert!(!logs.contains(secret), "{secret:?} logged:\n{logs}");
    }
}

/// A host name is resolved (hickory, through /etc/hosts: no query leaves the machine).
#[tokio::test]
async fn a_named_endpoint_is_resolved() {
    let receiver = Receiver::start(Answer::Ok).await;
    let url = format!("http://localhost:{}/hook", receiver.addr.port());
    let (webhooks, metrics, _dir) = start(&[url], false, "json", quick());
    webhooks.notify("ready", &status("live"), None);
    receiver.wait_for(1).await;
    counted(&metrics, Outcome::Delivered, 1).await;
}

/// Start-up says where events go, and warns of unsigned bodies and of plain http off this
/// host, naming endpoints by host only.
#[test]
fn start_up_warns_of_unsigned_and_cleartext_webhooks() {
    let capture = Capture::default();
    let subscriber = alfresco_ssh::logging::subscriber("info", false, false, capture.clone())
        .expect("the log filter");
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = config(&[
        "--webhook",
        "http://198.51.100.7/hook/SECRET-PATH",
        "--webhook",
        "http://127.0.0.1:9/x",
        "--webhook",
        "http://[::1]:9/x",
    ]);
    runtime.block_on(async {
        let metrics = Arc::new(Metrics::default());
        let webhooks = Webhooks::from_config(&config, metrics).expect("webhooks on");
        webhooks.shutdown();
    });
    let logs = capture.text();
    assert!(logs.contains("webhooks on"), "{logs}");
    assert_eq!(logs.matches("webhooks are unsigned").count(), 1, "{logs}");
    let cleartext: Vec<&str> = logs.lines().filter(|l| l.contains("plain http")).collect();
    assert_eq!(cleartext.len(), 1, "{logs}");
    assert!(cleartext[0].contains("http://198.51.100.7"), "{logs}");
    assert!(!logs.contains("SECRET-PATH"), "{logs}");
}

/// HTTPS receivers are verified: one whose certificate no root vouches for (self-signed)
/// gets the TLS handshake and nothing more, each attempt, and the delivery fails.
#[tokio::test]
async fn an_untrusted_certificate_gets_no_delivery() {
    let cert = TestCert::generate();
    let receiver = Receiver::start_tls(Answer::Ok, &cert).await;
    let url = format!("https://127.0.0.1:{}/hook", receiver.addr.port());
    let (webhooks, metrics, _dir) = start(&[url], true, "json", quick());
    webhooks.notify("created", &status("pending"), Some("https://gw/link"));
    counted(&metrics, Outcome::Failed, 1).await;
    assert_eq!(receiver.seen().len(), 0, "no request got through");
    let tried = receiver
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        tried, 4,
        "each attempt reached the port and was refused at the handshake"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let elsewhere = Receiver::start(Answer::Ok).await;
    let receiver = Receiver::start(Answer::Redirect(elsewhere.url("/stolen"))).await;
    let (webhooks, metrics, _dir) = start(&[receiver.url("/")], true, "json", quick());
    webhooks.notify("created", &status("pending"), Some("http://gw/link"));
    counted(&metrics, Outcome::Failed, 1).await;
    assert_eq!(receiver.seen().len(), 1, "a 3xx is not retried");
    assert_eq!(elsewhere.seen().len(), 0, "nor followed");
}

#[tokio::test]
async fn a_silent_receiver_costs_at_most_timeout_times_attempts() {
    let receiver = Receiver::start(Answer::Never).await;
    let policy = DeliveryPolicy {
        attempts: 3,
        ..quick()
    };
    let (webhooks, metrics, _dir) = start(&[receiver.url("/")], true, "json", policy);
    let started = Instant::now();
    webhooks.notify("ready", &status("live"), None);
    counted(&metrics, Outcome::Failed, 1).await;
    let took = started.elapsed();
    assert_eq!(receiver.seen().len(), 3);
    // 3 × 300 ms of timeouts and 50 + 100 ms of back-off; a second's slack for a busy machine.
    let floor = Duration::from_millis(3 * 300 + 150);
    assert!(took >= floor, "gave up after {took:?}");
    assert!(
        took < floor + Duration::from_secs(1),
        "gave up after {took:?}"
    );
    eprintln!("silent receiver: failed after {took:?} (3 attempts of 300 ms, back-off 150 ms)");
}

#[tokio::test]
async fn a_closed_port_fails_after_its_retries() {
    // A port just freed: connections are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (webhooks, metrics, _dir) = start(&[format!("http://{closed}/")], false, "json", quick());
    let started = Instant::now();
    webhooks.notify("ready", &status("live"), None);
    counted(&metrics, Outcome::Failed, 1).await;
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "back-off between attempts"
    );
}

#[test]
fn notify_never_blocks_on_a_stalled_receiver() {
    let capture = Capture::default();
    let subscriber = alfresco_ssh::logging::subscriber("info", false, false, capture.clone())
        .expect("the log filter");
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let receiver = Receiver::start(Answer::Never).await;
        // The gateway's own policy: 5 s per attempt, so the endpoint stays stalled throughout.
        let (webhooks, metrics, _dir) = start(
            &[receiver.url("/")],
            true,
            "json",
            DeliveryPolicy::default(),
        );
        let queue = DeliveryPolicy::default().queue as u64;
        // The endpoint task takes the first delivery off the queue, and stalls on it.
        webhooks.notify("ready", &status("live"), None);
        receiver.wait_for(1).await;

        let session = status("live");
        let started = Instant::now();
        for _ in 0..10_000 {
            webhooks.notify("ready", &session, None);
        }
        let took = started.elapsed();
        eprintln!("10,000 notify calls with a stalled receiver: {took:?}");
        assert!(took < Duration::from_secs(2), "notify waited: {took:?}");
        // The queue holds `queue`; every other call was dropped, not waited for.
        assert_eq!(metrics.webhook_deliveries("dropped"), 10_000 - queue);
        assert_eq!(metrics.webhook_deliveries("delivered"), 0);
        assert_eq!(receiver.seen().len(), 1, "one attempt in flight");

        // Stopping drops the queued and the in-flight ones, and ends the task.
        webhooks.shutdown();
        let deadline = Instant::now() + WAIT;
        while webhooks.running_tasks() > 0 {
            assert!(Instant::now() < deadline, "the endpoint task did not stop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(metrics.webhook_deliveries("dropped"), 10_001);
    });
    let logs = capture.text();
    assert_eq!(
        logs.matches("webhook deliveries dropped").count(),
        1,
        "one line per burst:\n{logs}"
    );
}

#[tokio::test]
async fn drain_sends_what_is_queued_then_refuses() {
    let receiver = Receiver::start(Answer::Slow(Duration::from_millis(50))).await;
    let (webhooks, metrics, _dir) = start(&[receiver.url("/")], true, "json", quick());
    for event in ["ready", "detached", "ended"] {
        webhooks.notify(event, &status("live"), None);
    }
    webhooks.drain(WAIT).await;
    assert_eq!(metrics.webhook_deliveries("delivered"), 3);
    assert_eq!(webhooks.running_tasks(), 0);
    let events: Vec<String> = receiver
        .seen()
        .iter()
        .map(|r| r.header("x-alfresco-event").to_owned())
        .collect();
    assert_eq!(events, ["ready", "detached", "ended"]);
    webhooks.notify("ended", &status("ended"), None);
    assert_eq!(metrics.webhook_deliveries("dropped"), 1);
}

#[tokio::test]
async fn slack_bodies_are_one_readable_line() {
    let receiver = Receiver::start(Answer::Ok).await;
    let (webhooks, metrics, _dir) =
        start(&[receiver.url("/services/T0/B0/x")], true, "slack", quick());
    let link = "https://gw.example/6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f";
    webhooks.notify("created", &status("pending"), Some(link));
    webhooks.notify("ended", &status("ended"), None);
    let got = receiver.wait_for(2).await;
    counted(&metrics, Outcome::Delivered, 2).await;
    let texts: Vec<String> = got
        .iter()
        .map(|r| {
            assert!(verifies(r), "slack bodies are signed the same way");
            assert_eq!(r.header("content-type"), "application/json");
            let body = r.json();
            let object = body.as_object().unwrap();
            assert_eq!(object.keys().collect::<Vec<_>>(), ["text"], "{body}");
            body["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        texts[0],
        format!(
            "SSH session `alfresco-test@127.0.0.1:22` (6f1c2d3e) is waiting (token ci): {link}, \
             open it before 2026-12-03T15:10:00Z"
        )
    );
    assert_eq!(
        texts[1],
        "SSH session `alfresco-test@127.0.0.1:22` (6f1c2d3e) ended: exited 7"
    );
    for text in &texts {
        assert!(!text.contains('\n'), "one line: {text:?}");
    }
}

/// docs/WEBHOOKS.md names every event, outcome and header, so a receiver's author finds them.
#[test]
fn docs_name_every_event_outcome_and_header() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/WEBHOOKS.md")).unwrap();
    let mut names: Vec<&str> = EVENTS.to_vec();
    names.extend(Outcome::ALL.iter().map(|o| o.code()));
    names.extend([
        alfresco_ssh::webhook::EVENT_HEADER,
        alfresco_ssh::webhook::DELIVERY_HEADER,
        alfresco_ssh::webhook::TIMESTAMP_HEADER,
        alfresco_ssh::webhook::SIGNATURE_HEADER,
    ]);
    let missing: Vec<&str> = names
        .into_iter()
        .filter(|n| !doc.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "missing from docs/WEBHOOKS.md: {missing:?}"
    );
}

// End to end: the gateway's ledger tells the webhooks of each transition of a real session.

/// The gateway with `flags` (webhook flags) applied on top of the test configuration.
async fn gateway_with(flags: &[&str]) -> Gateway {
    let webhook = config(flags).webhook;
    Gateway::start_with(move |c| c.webhook = webhook).await
}

/// The event names the receiver got, in order.
fn events(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| r.header("x-alfresco-event").to_owned())
        .collect()
}

/// `/metrics` counts `delivered` deliveries, polled until `n` (bounded by `WAIT`).
async fn metrics_delivered(gw: &Gateway, n: u64) {
    let line = format!("alfresco_webhook_deliveries_total{{outcome=\"delivered\"}} {n}");
    let deadline = Instant::now() + WAIT;
    loop {
        let text = gw.get("/metrics").await.text();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "no {line:?} in\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_that_exits_posts_created_opened_ready_ended() {
    let sshd = Sshd::start();
    let receiver = Receiver::start(Answer::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let url = receiver.url("/hook");
    let gw = gateway_with(&[
        "--webhook",
        &url,
        "--webhook-secret-file",
        secret.to_str().unwrap(),
    ])
    .await;

    let created = gw.create(&password_body(&sshd)).await.json();
    let id = created["id"].as_str().unwrap().to_owned();
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    term.input("exit 7\r").await;
    let ended = gw
        .get_authorized(&format!("/sessions/{id}?wait=ended&timeout=15s"))
        .await
        .json();
    assert_eq!(ended["state"], "ended", "{ended}");

    let got = receiver.wait_for(4).await;
    assert_eq!(events(&got), ["created", "opened", "ready", "ended"]);
    for r in &got {
        assert!(verifies(r), "signed");
        let body = r.json();
        assert_eq!(body["session"]["id"], id.as_str());
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert!(
            !text.contains(&crate::support::sshd::test_password()),
            "no credential in {text}"
        );
    }
    let states: Vec<Value> = got
        .iter()
        .map(|r| r.json()["session"]["state"].clone())
        .collect();
    assert_eq!(states, ["pending", "connecting", "live", "ended"]);
    assert_eq!(got[0].json()["url"], created["url"], "the link, on created");
    for r in &got[1..] {
        assert_eq!(r.json().get("url"), None, "and on created only");
    }
    assert_eq!(got[1].json()["session"]["client"], "127.0.0.1");
    let last = got[3].json();
    assert_eq!(last["session"]["end_reason"], "exited");
    assert_eq!(last["session"]["exit_status"], 7);
    assert_eq!(last["session"], ended_without_wait_fields(ended));
    metrics_delivered(&gw, 4).await;
    gw.assert_idle().await;
    gw.stop().await;
}

/// A wait's answer is the status object plus its own fields.
fn ended_without_wait_fields(mut answer: Value) -> Value {
    let object = answer.as_object_mut().unwrap();
    object.remove("timed_out");
    object.remove("draining");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_nobody_opens_posts_expired() {
    let sshd = Sshd::start();
    let receiver = Receiver::start(Answer::Ok).await;
    let url = receiver.url("/hook");
    let gw = gateway_with(&["--webhook", &url, "--webhook-format", "slack"]).await;
    let mut body = password_body(&sshd);
    body["ttl"] = "1s".into();
    let id = gw.create_id(&body).await;
    let s = gw
        .get_authorized(&format!("/sessions/{id}?wait=ended&timeout=15s"))
        .await
        .json();
    assert_eq!(s["state"], "expired", "{s}");
    let got = receiver.wait_for(2).await;
    assert_eq!(events(&got), ["created", "expired"]);
    let text = got[1].json()["text"].as_str().unwrap().to_owned();
    assert!(
        text.ends_with("expired: nobody opened the link in time"),
        "{text}"
    );
    assert!(got[0].json()["text"].as_str().unwrap().contains(&id));
    gw.assert_idle().await;
    gw.stop().await;
}

/// A receiver that never answers and one that answers 500 (the gateway's own policy: 5 s
/// per attempt, 4 attempts) leave the session as it is: the shell answers, exits, and the
/// end is seen at once, long before the deliveries give up. Shutdown waits for them at most
/// `WEBHOOK_DRAIN` (5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_failing_receivers_do_not_change_the_session() {
    let sshd = Sshd::start();
    let stalled = Receiver::start(Answer::Never).await;
    let failing = Receiver::start(Answer::Status(500)).await;
    let (a, b) = (stalled.url("/"), failing.url("/"));
    let gw = gateway_with(&["--webhook", &a, "--webhook", &b]).await;

    let started = Instant::now();
    let id = gw.create_id(&password_body(&sshd)).await;
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    for n in 0..20 {
        let marker = format!("echo-{n}-{}", std::process::id());
        assert_eq!(
            term.run(&format!("echo {marker}")).await,
            format!("{marker}\r\n")
        );
    }
    term.input("exit 0\r").await;
    let ended = gw
        .get_authorized(&format!("/sessions/{id}?wait=ended&timeout=15s"))
        .await
        .json();
    let took = started.elapsed();
    assert_eq!(
        (ended["end_reason"].as_str(), ended["exit_status"].as_i64()),
        (Some("exited"), Some(0)),
        "{ended}"
    );
    // The stalled receiver still holds its first delivery (`created`, 5 s per attempt).
    assert!(took < Duration::from_secs(5), "the session took {took:?}");
    assert_eq!(stalled.seen().len(), 1, "one attempt in flight");
    assert!(!failing.seen().is_empty());
    eprintln!("session with a stalled and a failing receiver: {took:?} create to ended");
    gw.assert_idle().await;
    let stopping = Instant::now();
    gw.stop().await;
    let stop_took = stopping.elapsed();
    eprintln!("shutdown with a stalled receiver: {stop_took:?}");
    assert!(
        stop_took < Duration::from_secs(8),
        "shutdown took {stop_took:?}"
    );
}

/// 20 echo round trips and a 100,000-line flood through one session of `gw`: how long each
/// took.
async fn session_figures(gw: &Gateway, sshd: &Sshd) -> (Duration, Duration) {
    let mut term = gw.open(&password_body(sshd), 80, 24).await;
    term.ready().await;
    let started = Instant::now();
    for n in 0..20 {
        let marker = format!("echo-{n}-{}", std::process::id());
        assert_eq!(
            term.run(&format!("echo {marker}")).await,
            format!("{marker}\r\n")
        );
    }
    let echoes = started.elapsed();
    let started = Instant::now();
    term.input("seq 1 100000; echo flood-''done\r").await;
    term.wait_for("flood-done\r\n").await;
    let flood = started.elapsed();
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
    (echoes, flood)
}

/// The same session figures with no webhooks and with a stalled and a failing receiver:
/// webhooks act only at state changes, so nothing on the data path waits for them. Printed
/// for the record; asserted only to work, since timings on a shared machine are noisy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_figures_with_and_without_stalled_webhooks() {
    let sshd = Sshd::start();
    let plain = Gateway::start().await;
    let (echo_plain, flood_plain) = session_figures(&plain, &sshd).await;
    plain.assert_idle().await;
    plain.stop().await;

    let stalled = Receiver::start(Answer::Never).await;
    let failing = Receiver::start(Answer::Status(500)).await;
    let (a, b) = (stalled.url("/"), failing.url("/"));
    let hooked = gateway_with(&["--webhook", &a, "--webhook", &b]).await;
    let (echo_hooked, flood_hooked) = session_figures(&hooked, &sshd).await;
    eprintln!(
        "20 echoes: {echo_plain:?} without webhooks, {echo_hooked:?} with a stalled and a \
         failing receiver; 100,000-line flood: {flood_plain:?} / {flood_hooked:?}"
    );
    assert_eq!(
        stalled.seen().len(),
        1,
        "the stalled receiver held its first delivery"
    );
    hooked.assert_idle().await;
}

/// A graceful shutdown still sends the last events, `ended` with `server_shutdown`: the
/// receiver takes 1 s per event, so when the session has ended `ended` is still queued
/// behind the others, and `run` returns only once it went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_the_last_ended() {
    let sshd = Sshd::start();
    let receiver = Receiver::start(Answer::Slow(Duration::from_secs(1))).await;
    let url = receiver.url("/hook");
    let gw = gateway_with(&["--webhook", &url]).await;
    let id = gw.create_id(&password_body(&sshd)).await;
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    let stopping = Instant::now();
    gw.stop().await;
    eprintln!("shutdown with a live session: {:?}", stopping.elapsed());
    let got = receiver.seen();
    assert_eq!(events(&got), ["created", "opened", "ready", "ended"]);
    assert_eq!(got[3].json()["session"]["end_reason"], "server_shutdown");
}

/// The ends that never went live: `revoked` for a link deleted while pending, `failed` with
/// its code for a wrong password. Each after `created` (and `opened`), and nothing after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_failed_sessions_post_their_end() {
    let sshd = Sshd::start();
    let receiver = Receiver::start(Answer::Ok).await;
    let url = receiver.url("/hook");
    let gw = gateway_with(&["--webhook", &url]).await;

    let revoked = gw.create_id(&password_body(&sshd)).await;
    let path = format!("/sessions/{revoked}");
    let answer = gw.call("DELETE", &path, Some(TEST_TOKEN), None).await;
    assert_eq!(answer.json()["state"], "revoked");
    // Idempotent, and so silent: a second DELETE changes nothing and posts nothing.
    gw.call("DELETE", &path, Some(TEST_TOKEN), None).await;
    let got = receiver.wait_for(2).await;
    assert_eq!(events(&got), ["created", "revoked"]);
    assert_eq!(got[1].json()["session"]["end_reason"], "revoked");

    let mut body = password_body(&sshd);
    body["password"] = "not-the-password".into();
    let failed = gw.create_id(&body).await;
    let mut term = gw.ws().await;
    term.start(&failed, 80, 24).await;
    term.expect_error("auth_failed").await;
    let got = receiver.wait_for(5).await;
    assert_eq!(
        events(&got),
        ["created", "revoked", "created", "opened", "failed"]
    );
    let end = got[4].json();
    assert_eq!(end["session"]["id"], failed.as_str());
    assert_eq!(end["session"]["state"], "failed");
    assert_eq!(end["session"]["end_reason"], "auth_failed");
    assert!(!String::from_utf8_lossy(&got[4].body).contains("not-the-password"));
    gw.assert_idle().await;
    gw.stop().await;
    assert_eq!(receiver.seen().len(), 5, "nothing after the end");
}

/// A page that goes away and comes back: `detached`, then `resumed` from its address, and no
/// resume token in either body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_leaves_and_resumes_posts_detached_and_resumed() {
    let sshd = Sshd::start();
    let receiver = Receiver::start(Answer::Ok).await;
    let webhook = config(&["--webhook", &receiver.url("/hook")]).webhook;
    let gw = Gateway::start_with(move |c| {
        c.webhook = webhook;
        c.resume_grace = Some(Duration::from_secs(60));
    })
    .await;
    let mut first = gw.open(&password_body(&sshd), 80, 24).await;
    let ready = first.ready().await;
    let token = ready["resume_token"].as_str().unwrap().to_owned();
    let received = first.output.len();
    first.vanish();
    let got = receiver.wait_for(4).await;
    assert_eq!(events(&got), ["created", "opened", "ready", "detached"]);
    assert_eq!(got[3].json()["session"]["state"], "detached");

    let mut second = gw.ws().await;
    second
        .send_event(
            "resume-session",
            json!({"token": token, "offset": received, "cols": 80, "rows": 24}),
        )
        .await;
    let resumed = second.expect("session-resumed").await;
    let got = receiver.wait_for(5).await;
    assert_eq!(got[4].header("x-alfresco-event"), "resumed");
    assert_eq!(got[4].json()["session"]["state"], "live");
    assert_eq!(got[4].json()["session"]["client"], "127.0.0.1");
    let new_token = resumed["resume_token"].as_str().unwrap();
    for r in &got {
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert!(
            !text.contains(&token) && !text.contains(new_token),
            "a resume token in {text}"
        );
    }
    second.input("exit\r").await;
    second.expect("ssh-closed").await;
    let got = receiver.wait_for(6).await;
    assert_eq!(got[5].header("x-alfresco-event"), "ended");
    gw.assert_idle().await;
    gw.stop().await;
}

/// The binary refuses a bad webhook flag at start-up (`--check-config` here), with the
/// flag's position and never the URL: a URL's path may be its secret.
#[test]
fn check_config_refuses_bad_webhook_flags() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_alfresco-ssh"))
            .arg("--check-config")
            .args(args)
            .env_remove("ALFRESCO_WEBHOOK")
            .env_remove("ALFRESCO_WEBHOOK_SECRET_FILE")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = run(&["--webhook", "ftp://hooks.example/SECRET-PATH"]);
    assert!(!ok);
    assert!(stderr.contains("--webhook #1: only http"), "{stderr}");
    assert!(!stderr.contains("SECRET-PATH"), "{stderr}");
    let (ok, stderr) = run(&["--webhook-secret-file", "/nonexistent/secret"]);
    assert!(!ok);
    assert!(
        stderr.contains("--webhook-secret-file needs --webhook"),
        "{stderr}"
    );
    let (ok, stderr) = run(&["--webhook", "https://hooks.example/x"]);
    assert!(ok, "{stderr}");
}
