//! Webhooks against a real loopback receiver (`receiver`, a small hyper server started per
//! test) through the public API, `alfresco_ssh::webhook::Webhooks`: signatures verify, the
//! link goes with `created` only, retries are bounded and spaced, redirects are not followed,
//! a silent receiver costs at most timeout × attempts, and `notify` never waits for any of it.
//! `sessions` is the same end to end, through the gateway and a real sshd.

mod receiver;
mod sessions;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use alfresco_ssh::config::parse_command_line;
use alfresco_ssh::metrics::Metrics;
use alfresco_ssh::webhook::{DeliveryPolicy, EVENTS, Outcome, Webhooks};
use alfresco_ssh::{Args, Config};
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::WAIT;
use crate::support::logs::Capture;
use crate::support::tls::TestCert;
use receiver::{Answer, Received, Receiver};

const SECRET: &str = "webhook-secret-for-tests-5e1f";

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
