//! Who may create sessions, where they may connect, which pages may open them, and how long
//! they may last: each refusal with its code.

use std::sync::Arc;
use std::time::Duration;

use alfresco_ssh::config::ApiToken;
use alfresco_ssh::destination::DestinationPolicy;
use alfresco_ssh::secret::Secret;
use serde_json::json;

use crate::support::gateway::{Gateway, TEST_TOKEN};
use crate::support::logs::Capture;
use crate::support::password_body;
use crate::support::sshd::Sshd;

fn body(host: &str) -> serde_json::Value {
    json!({"hostname": host, "port": 22, "username": "u", "password": "p"})
}

fn create_with(auth: &str) -> String {
    format!("POST /create-session HTTP/1.1\r\nContent-Type: application/json{auth}")
}

#[tokio::test]
async fn create_session_needs_a_valid_token() {
    let gw = Gateway::start_with(|c| {
        c.api_tokens = Arc::new(vec![
            ApiToken {
                name: "ci".into(),
                token: Secret::new("ci-token-0123456789abcdef".into()),
                admin: false,
            },
            ApiToken {
                name: "ops".into(),
                token: Secret::new("ops-token-0123456789abcde".into()),
                admin: false,
            },
        ])
    })
    .await;
    let payload = body("10.0.0.5").to_string();
    for auth in [
        "",
        "\r\nAuthorization: Bearer wrong-token-0123456789ab",
        "\r\nAuthorization: Basic Y2k6eA==",
        "\r\nAuthorization: Bearer ",
    ] {
        let res = gw.raw(&create_with(auth), payload.as_bytes()).await;
        assert_eq!(
            (res.status, res.error_code().as_str()),
            (401, "unauthorized"),
            "{auth:?}"
        );
    }
    for token in ["ci-token-0123456789abcdef", "ops-token-0123456789abcde"] {
        let res = gw
            .raw(
                &create_with(&format!("\r\nAuthorization: Bearer {token}")),
                payload.as_bytes(),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.text());
    }
    // The scheme is case-insensitive (RFC 9110 §11.1).
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let auth = format!("\r\nAuthorization: {scheme} ci-token-0123456789abcdef");
        let res = gw.raw(&create_with(&auth), payload.as_bytes()).await;
        assert_eq!(res.status, 201, "{scheme}: {}", res.text());
    }
    assert_eq!(gw.handle.pending(), 5);
}

#[tokio::test]
async fn create_session_is_rate_limited() {
    let gw = Gateway::start_with(|c| c.create_rate_per_minute = 3).await;
    for _ in 0..3 {
        assert_eq!(gw.create(&body("10.0.0.5")).await.status, 201);
    }
    let res = gw.create(&body("10.0.0.5")).await;
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (429, "rate_limited")
    );
    let retry: u64 = res
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    assert_eq!(gw.handle.pending(), 3);
}

/// 200 wrong tokens from one address under a limit of 5 a minute: 5 are refused (401), the
/// rest throttled (429, the rate-limit answer), a right token too while throttled; the log
/// has one line for the burst, with the address and without the token.
#[test]
fn failed_token_attempts_are_throttled_and_logged_once() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let guess = "guessed-token-0123456789abcdef";
    runtime.block_on(async {
        let gw = Gateway::start_with(|c| c.create_rate_per_minute = 5).await;
        let payload = body("10.0.0.5").to_string();
        let with_guess = create_with(&format!("\r\nAuthorization: Bearer {guess}"));
        let mut refused = 0;
        for _ in 0..200 {
            let res = gw.raw(&with_guess, payload.as_bytes()).await;
            match (res.status, res.error_code().as_str()) {
                (401, "unauthorized") => refused += 1,
                (429, "rate_limited") => assert!(res.header("retry-after").is_some()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            refused, 5,
            "the limit's burst is refused, the rest throttled"
        );
        let res = gw.create(&body("10.0.0.5")).await;
        assert_eq!(
            (res.status, res.error_code().as_str()),
            (429, "rate_limited"),
            "a throttled address is not told that a token is right"
        );
        assert_eq!(gw.handle.pending(), 0);
    });
    let log = capture.text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("API token attempts failed"))
        .collect();
    assert_eq!(lines.len(), 1, "one line for the burst: {log}");
    assert!(lines[0].contains("client=127.0.0.1"), "{}", lines[0]);
    assert!(
        lines[0].contains(" connection{client=127.0.0.1 port="),
        "logged in its connection's span: {}",
        lines[0]
    );
    assert!(
        !log.contains(guess) && !log.contains(TEST_TOKEN),
        "no token in the log: {log}"
    );
}

#[tokio::test]
async fn destination_policy_at_create_time() {
    let gw = Gateway::start_with(|c| {
        let deny = vec![
            "127.0.0.0/8".to_owned(),
            "::1".to_owned(),
            "10.9.0.0/16".to_owned(),
        ];
        c.destinations = Arc::new(DestinationPolicy::parse(&[], &deny).unwrap());
    })
    .await;
    // Denied CIDRs, the cloud metadata address (denied by default), and a name that
    // resolves (through /etc/hosts, no query leaves the machine) to a denied address.
    for host in [
        "10.9.1.2",
        "127.0.0.1",
        "169.254.169.254",
        "fd00:ec2::254",
        "localhost",
    ] {
        let res = gw.create(&body(host)).await;
        assert_eq!(
            (res.status, res.error_code().as_str()),
            (403, "destination_forbidden"),
            "{host}"
        );
    }
    assert_eq!(gw.create(&body("10.0.0.5")).await.status, 201);
    assert_eq!(gw.handle.pending(), 1);
}

/// A rule with a port refuses that port only, for an IP literal and for a name that
/// resolves there. (That connecting checks the resolved address again is tested in
/// `ssh::dial`'s unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_rules_with_ports() {
    let sshd = Sshd::start();
    let port = sshd.addr().port();
    let gw = Gateway::start_with(|c| {
        let deny = vec![format!("127.0.0.1:{port}"), format!("[::1]:{port}")];
        c.destinations = Arc::new(DestinationPolicy::parse(&[], &deny).unwrap());
    })
    .await;
    let res = gw.create(&password_body(&sshd)).await;
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (403, "destination_forbidden")
    );
    let mut by_name = password_body(&sshd);
    by_name["hostname"] = "localhost".into();
    assert_eq!(
        gw.create(&by_name).await.status,
        403,
        "the name resolves to denied addresses"
    );
    let mut other_port = password_body(&sshd);
    other_port["port"] = (port ^ 1).into();
    assert_eq!(
        gw.create(&other_port).await.status,
        201,
        "other ports are fine"
    );
}

/// Sends a WebSocket upgrade with these header lines first (each `Name: value\r\n`; a
/// `Host` here comes before ours, and is the one the gateway reads) and returns the status,
/// reading only the head: an upgraded socket would wait out the start-session deadline.
async fn upgrade_status(gw: &Gateway, first_headers: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = gw.connect().await;
    let request = format!(
        "GET /ws HTTP/1.1\r\n{first_headers}Host: {}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        gw.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        // Bounded by the size check here and the timeout below.
        while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
            if stream.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
    };
    tokio::time::timeout(crate::support::WAIT, read)
        .await
        .expect("an answer in time");
    let head = String::from_utf8_lossy(&head).into_owned();
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_origin_is_checked_before_the_upgrade() {
    let gw = Gateway::start_with(|c| c.allowed_origins = vec!["https://portal.example.com".into()])
        .await;
    for origin in [
        "http://evil.example",
        "null",
        "https://portal.example.com.evil.example",
        "https://127.0.0.1",
    ] {
        let res = gw
            .raw(&upgrade_head(&format!("\r\nOrigin: {origin}")), b"")
            .await;
        assert_eq!(
            (res.status, res.error_code().as_str()),
            (403, "origin_forbidden"),
            "{origin}"
        );
    }
    for origin in [
        format!("http://{}", gw.addr),
        "https://portal.example.com".into(),
        "HTTPS://Portal.Example.com".into(),
        "https://portal.example.com:443".into(),
    ] {
        let status = upgrade_status(&gw, &format!("Origin: {origin}\r\n")).await;
        assert_eq!(status, 101, "{origin}");
    }
    // Scripts send no Origin; a hostile page cannot make a browser leave it out.
    assert_eq!(upgrade_status(&gw, "").await, 101);
}

/// An upgrade request head for `gw.raw` (which adds Host and Connection: close).
fn upgrade_head(extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=={extra}"
    )
}

/// DNS rebinding: a page on a name the attacker points at the gateway sends `Host` and
/// `Origin` both naming it. Only the address we were reached at, `--public-url`,
/// `--allowed-host` names and (on a loopback listener) loopback origins count as our own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_origin_does_not_trust_the_host_header() {
    let gw = Gateway::start().await;
    let port = gw.addr.port();
    let evil = format!("evil.example:{port}");
    let with_host = |host: &str, origin: &str| format!("Host: {host}\r\nOrigin: {origin}\r\n");
    let res = gw
        .raw(
            &upgrade_head(&format!("\r\nOrigin: http://{evil}")).replacen(
                "GET /ws HTTP/1.1",
                &format!("GET /ws HTTP/1.1\r\nHost: {evil}"),
                1,
            ),
            b"",
        )
        .await;
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (403, "origin_forbidden")
    );
    let localhost = format!("localhost:{port}");
    assert_eq!(
        upgrade_status(&gw, &with_host(&localhost, &format!("http://{localhost}"))).await,
        101,
        "localhost on a loopback listener"
    );
    assert_eq!(
        upgrade_status(&gw, &with_host("localhost:9000", "http://localhost:9000")).await,
        101,
        "and on another port: a port forward"
    );

    let gw = Gateway::start_with(|c| c.allowed_hosts = vec!["gw.internal".into()]).await;
    let port = gw.addr.port();
    for (origin, status) in [
        (format!("http://gw.internal:{port}"), 101),
        ("http://gw.internal".to_owned(), 101),
        ("http://gw.internal:1".to_owned(), 403),
        (format!("http://evil.example:{port}"), 403),
    ] {
        let host = origin.trim_start_matches("http://").to_owned();
        assert_eq!(
            upgrade_status(&gw, &with_host(&host, &origin)).await,
            status,
            "{origin}"
        );
    }

    let gw = Gateway::start_with(|c| c.public_url = Some("https://gw.example:443".into())).await;
    for (origin, status) in [
        ("https://gw.example", 101),
        ("https://gw.example:443", 101),
        ("http://gw.example", 403),
        ("https://gw.example:8443", 403),
    ] {
        let host = origin.split_once("://").unwrap().1;
        assert_eq!(
            upgrade_status(&gw, &with_host(host, origin)).await,
            status,
            "{origin}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_and_session_time_limit() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.idle_timeout = Some(Duration::from_millis(800))).await;
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    term.ready().await;
    // Activity keeps it alive past the idle limit…
    for _ in 0..3 {
        assert_eq!(term.run("sleep 0.4; echo busy").await, "busy\r\n");
    }
    // …and silence ends it.
    assert_eq!(term.expect_error("idle_timeout").await.1, Some(1001));
    gw.assert_idle().await;

    let gw = Gateway::start_with(|c| c.max_session_time = Some(Duration::from_secs(1))).await;
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    term.ready().await;
    term.input("while :; do echo tick; sleep 0.1; done\r").await;
    assert_eq!(term.expect_error("session_time_limit").await.1, Some(1001));
    gw.assert_idle().await;
}

/// The page forbids framing unless --allow-frame-ancestors names who may frame it.
#[tokio::test]
async fn page_headers_and_framing() {
    let gw = Gateway::start().await;
    let id = gw.create_id(&body("10.0.0.5")).await;
    let page = gw.get(&format!("/{id}")).await;
    let csp = page.header("content-security-policy").unwrap().to_owned();
    assert!(
        csp.starts_with("default-src 'self'") && csp.ends_with("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("cache-control"), Some("no-store"));

    let gw = Gateway::start_with(|c| c.frame_ancestors = vec!["https://portal.example.com".into()])
        .await;
    let id = gw.create_id(&body("10.0.0.5")).await;
    let page = gw.get(&format!("/{id}")).await;
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.ends_with("frame-ancestors https://portal.example.com"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), None);
}

/// --max-sessions-per-token: a token at its limit of live sessions gets
/// `too_many_sessions` at create-session; other tokens, and the same one later, do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sessions_per_token() {
    let sshd = Sshd::start();
    let other = "other-token-0123456789abcdef";
    let gw = Gateway::start_with(|c| {
        c.max_sessions_per_token = 1;
        let tokens = vec![
            ApiToken {
                name: "test".into(),
                token: Secret::new(crate::support::gateway::TEST_TOKEN.into()),
                admin: false,
            },
            ApiToken {
                name: "other".into(),
                token: Secret::new(other.into()),
                admin: false,
            },
        ];
        c.api_tokens = Arc::new(tokens);
    })
    .await;
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    term.ready().await;
    let res = gw.create(&password_body(&sshd)).await;
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (503, "too_many_sessions")
    );
    let payload = password_body(&sshd).to_string();
    let res = gw
        .raw(
            &create_with(&format!("\r\nAuthorization: Bearer {other}")),
            payload.as_bytes(),
        )
        .await;
    assert_eq!(res.status, 201, "another token has its own limit");
    term.close().await;
    gw.assert_idle().await;
    assert_eq!(gw.create(&password_body(&sshd)).await.status, 201);
}

/// An accepted create-session whose body trickles in at a byte a second gets 408
/// `body_timeout` at the body deadline (from the start, however recent the last byte) and
/// the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start().await;
    let (mut reader, mut writer) = tokio::io::split(gw.connect().await);
    let head = format!(
        "POST /create-session HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {TEST_TOKEN}\r\nContent-Length: 1000\r\n\r\n",
        gw.addr
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let trickle = tokio::spawn(async move {
        // Paces the trickle (not a synchronisation); ends when the gateway closes.
        for _ in 0..60 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(crate::support::WAIT, reader.read_to_end(&mut answer))
        .await
        .expect("answered and closed in time")
        .ok();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"body_timeout""#), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "not before the 10 s deadline"
    );
    assert_eq!(gw.handle.pending(), 0);
}

/// A client that trickles its request headers (slowloris) is cut off after the 10 s header
/// deadline; it holds nothing else up meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start().await;
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        gw.get("/healthz").await.status,
        200,
        "others are served meanwhile"
    );
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection is closed within the deadline");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "not before the 10 s header deadline"
    );
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "the request was not served"
    );
}
