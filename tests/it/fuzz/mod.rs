//! Property tests ("fuzzing") of what takes untrusted input. Here, the two pure parsers: the
//! create-session body (`http::parse_create`) and the WebSocket event decoder
//! (`ws::decode_text`), with no sshd or gateway; `wire` sends raw requests to the real binary.
//!
//! Each property runs a fixed number of random cases on its own thread under a deadline (a
//! hang fails the test instead of stalling the suite), writes no `proptest-regressions/`
//! files, and prints the shrunk input on failure. Bodies are built from small models (`Json`,
//! `FormPair`) so the tests know what was sent.

mod wire;

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use alfresco_ssh::http::{ApiError, BodyKind, parse_create};
use alfresco_ssh::request::{self, Credentials, MAX_HOSTNAME_LEN, SessionRequest};
use alfresco_ssh::ws::{Answers, AuthResponse, ClientEvent, decode_text, event_name};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

/// Cases per property: enough to reach the odd corners, few enough that the file runs in seconds.
const CASES: u32 = 2000;
/// A property still running after this is hanging, not slow (each takes a second or two).
const DEADLINE: Duration = Duration::from_secs(120);
/// Bounds the search for a minimal failing input, so a failure is reported promptly too.
const MAX_SHRINK_MS: u32 = 30_000;

const FIELDS: [&str; 7] = [
    "hostname",
    "port",
    "username",
    "password",
    "private_key",
    "passphrase",
    "term",
];
const SECRET_FIELDS: [&str; 3] = ["password", "private_key", "passphrase"];
/// Secrets at least this long must never appear in an error message.
const SECRET_MIN_CHARS: usize = 8;
/// The events a client may send; every other name decodes to `Unknown`.
const CLIENT_EVENTS: [&str; 9] = [
    event_name::AUTH_RESPONSE,
    event_name::START_SESSION,
    event_name::RESUME_SESSION,
    event_name::VIEW_SESSION,
    event_name::SSH_INPUT,
    event_name::RESIZE,
    event_name::PAUSE,
    event_name::RESUME,
    event_name::HANDBACK,
];
const MAX_DIMENSION: u64 = 1000;
const SESSION_ID: &str = "5b0e6f1c-9c1f-4a57-b2a2-3f1d2e4c5a6b";

/// Runs `test` on `CASES` values of the strategy, on a thread, and fails on a panic, a failed
/// check or the deadline.
fn fuzz<S: Strategy + 'static>(
    strategy: impl FnOnce() -> S + Send + 'static,
    test: impl Fn(S::Value) -> Result<(), TestCaseError> + Send + 'static,
) {
    fuzz_cases(CASES, strategy, test);
}

/// `fuzz` with its own case count, for properties whose cases cost more than a parse.
fn fuzz_cases<S: Strategy + 'static>(
    cases: u32,
    strategy: impl FnOnce() -> S + Send + 'static,
    test: impl Fn(S::Value) -> Result<(), TestCaseError> + Send + 'static,
) {
    let (done, finished) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let config = Config {
            cases,
            failure_persistence: None,
            max_shrink_time: MAX_SHRINK_MS,
            ..Config::default()
        };
        let result = TestRunner::new(config)
            .run(&strategy(), test)
            .map_err(|e| e.to_string());
        let _ = done.send(());
        result
    });
    // Disconnected means the thread died without sending; `join` below reports why.
    if let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(DEADLINE) {
        panic!("the property did not finish within {DEADLINE:?}: a parser hangs");
    }
    match worker.join() {
        Ok(Ok(())) => {}
        Ok(Err(failure)) => panic!("{failure}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

// ---- A model of JSON text, so a test can send what serde_json would never write ----

/// One character of a JSON string as written on the wire.
#[derive(Debug, Clone)]
enum Piece {
    /// As itself where JSON allows it, else with a short or `\u` escape.
    Plain(char),
    /// As `\uXXXX` (a surrogate pair above the BMP).
    Escaped(char),
    /// `\uD800`–`\uDFFF` on its own: valid only as the right half of a pair.
    Lone(u16),
}

#[derive(Debug, Clone)]
struct JStr(Vec<Piece>);

impl JStr {
    /// The string a correct JSON parser reads, or `None` when a lone surrogate makes it invalid.
    fn decoded(&self) -> Option<String> {
        let mut out = String::new();
        let mut pieces = self.0.iter().peekable();
        while let Some(piece) = pieces.next() {
            match *piece {
                Piece::Plain(c) | Piece::Escaped(c) => out.push(c),
                Piece::Lone(high @ 0xD800..=0xDBFF) => match pieces.next() {
                    Some(&Piece::Lone(low @ 0xDC00..=0xDFFF)) => {
                        out.push(char::decode_utf16([high, low]).next()?.ok()?);
                    }
                    _ => return None,
                },
                Piece::Lone(_) => return None,
            }
        }
        Some(out)
    }

    fn render(&self, out: &mut String) {
        out.push('"');
        for piece in &self.0 {
            match *piece {
                Piece::Plain('"') => out.push_str("\\\""),
                Piece::Plain('\\') => out.push_str("\\\\"),
                Piece::Plain('\n') => out.push_str("\\n"),
                Piece::Plain('\t') => out.push_str("\\t"),
                Piece::Plain(c) if c < ' ' => out.push_str(&format!("\\u{:04x}", c as u32)),
                Piece::Plain(c) => out.push(c),
                Piece::Escaped(c) => {
                    for unit in c.encode_utf16(&mut [0; 2]) {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
                Piece::Lone(unit) => out.push_str(&format!("\\u{unit:04x}")),
            }
        }
        out.push('"');
    }
}

#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    /// The literal as sent: valid JSON syntax, though maybe beyond u64 or f64.
    Number(String),
    Str(JStr),
    Array(Vec<Json>),
    /// Entries in order, repeated keys allowed.
    Object(Vec<(JStr, Json)>),
}

impl Json {
    fn text(&self) -> String {
        let mut out = String::new();
        self.render(&mut out);
        out
    }

    fn render(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(n),
            Json::Str(s) => s.render(out),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.render(out);
                }
                out.push(']');
            }
            Json::Object(entries) => {
                out.push_str("{ ");
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    key.render(out);
                    out.push(':');
                    value.render(out);
                }
                out.push_str(" }");
            }
        }
    }

    /// Every string inside, decodable ones only.
    fn strings(&self, out: &mut Vec<String>) {
        match self {
            Json::Str(s) => out.extend(s.decoded()),
            Json::Array(items) => items.iter().for_each(|item| item.strings(out)),
            Json::Object(entries) => entries.iter().for_each(|(_, value)| value.strings(out)),
            _ => {}
        }
    }
}

/// Arbitrary text, control characters and all (`any::<String>()` leaves those out).
fn any_text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

/// A JSON string for `text`, with about one character in eight escaped (chosen by `seed`, so
/// the text still shrinks well) and now and then a lone surrogate.
fn jstr(text: impl Strategy<Value = String>) -> impl Strategy<Value = JStr> {
    let lone = option::weighted(0.005, (any::<usize>(), 0xD800u16..=0xDFFF));
    (text, any::<u64>(), lone).prop_map(|(s, seed, lone)| {
        let escape = |i: u64| {
            let mixed =
                (seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            mixed >> 61 == 0
        };
        let mut pieces: Vec<Piece> = s
            .chars()
            .zip(0..)
            .map(|(c, i)| {
                if escape(i) {
                    Piece::Escaped(c)
                } else {
                    Piece::Plain(c)
                }
            })
            .collect();
        if let Some((at, unit)) = lone {
            pieces.insert(at % (pieces.len() + 1), Piece::Lone(unit));
        }
        JStr(pieces)
    })
}

/// Valid JSON number syntax: small, huge, negative, fractional, out of f64 range.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        4 => (0u32..70_000).prop_map(|n| n.to_string()),
        1 => any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        2 => "-?(0|[1-9][0-9]{0,5})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?",
        1 => "[1-9][0-9]{19,400}",
        2 => select(vec![
            "0",
            "-0",
            "1",
            "22",
            "65535",
            "65536",
            "1000",
            "1001",
            "22.0",
            "2.2e1",
            "1e400",
            "-1e400",
            "18446744073709551616",
            "4294967318",
        ])
        .prop_map(String::from),
    ]
}

fn key_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(FIELDS.to_vec()).prop_map(String::from),
        1 => select(vec!["cols", "rows", "id", "Hostname", "password ", ""]).prop_map(String::from),
        1 => "[a-z_]{1,12}",
        1 => any_text(12),
    ]
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        number().prop_map(Json::Number),
        jstr(any_text(24)).prop_map(Json::Str),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Json::Array),
            vec((jstr(key_name()), inner), 0..6).prop_map(Json::Object),
        ]
    })
}

// ---- Plausible field values, so that some bodies get far into the checks, or pass ----

fn host_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(vec![
            "example.com",
            "Host-1.Example.ORG",
            "10.0.0.5",
            "::1",
            "[::1]",
            "[fe80::1]",
            "::FFFF:10.0.0.1",
            "h:22",
            "-x",
            ".x",
            "a b",
            "[a.b]",
            "localhost\n",
            "",
        ])
        .prop_map(String::from),
        4 => "[a-zA-Z0-9][a-zA-Z0-9._-]{0,40}",
        2 => any::<std::net::IpAddr>().prop_map(|ip| ip.to_string()),
        1 => any::<std::net::Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
        1 => "[a-zA-Z0-9._-]{240,260}",
        1 => "\\[?[0-9a-fA-F:.%]{0,45}\\]?",
        1 => any_text(40),
    ]
}

fn username_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(vec!["deploy", "root", "Ülrich", "a\u{7}b", "x\u{85}", ""]).prop_map(String::from),
        4 => "[a-z_][a-z0-9_.-]{0,40}",
        1 => "[a-z]{250,260}",
        1 => any_text(40),
    ]
}

fn term_text() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "xterm-256color",
            "vt100",
            "xterm;rm",
            "",
            "screen.linux+x"
        ])
        .prop_map(String::from),
        "[a-zA-Z0-9.+_-]{0,70}",
        any_text(20),
    ]
}

fn port_text() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "22", "0", "00022", "65535", "65536", "99999", "", "+22", " 22"
        ])
        .prop_map(String::from),
        "[0-9]{0,7}",
        any_text(8),
    ]
}

/// A credential: long and recognisable, short, blank, key-shaped, or anything.
fn secret_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[ -~]{8,40}",
        2 => vec(any::<char>(), 8..40).prop_map(String::from_iter),
        1 => "[ -~]{0,7}",
        1 => "[ \t\r\n]{0,4}",
        1 => "-----BEGIN OPENSSH PRIVATE KEY-----\n[A-Za-z0-9+/=\n]{8,200}\n-----END OPENSSH PRIVATE KEY-----\n",
    ]
}

fn field_text(name: &str) -> BoxedStrategy<String> {
    match name {
        "hostname" => host_text().boxed(),
        "username" => username_text().boxed(),
        "term" => term_text().boxed(),
        "port" => port_text().boxed(),
        _ => secret_text().boxed(),
    }
}

/// A JSON value for a create-session field: mostly a plausible one, sometimes any value.
fn json_field(name: &'static str) -> impl Strategy<Value = (JStr, Json)> {
    let value = if name == "port" {
        prop_oneof![
            4 => (1u16..=65535).prop_map(|n| Json::Number(n.to_string())),
            4 => number().prop_map(Json::Number),
            4 => jstr(port_text()).prop_map(Json::Str),
            1 => json_value(),
        ]
        .boxed()
    } else {
        prop_oneof![
            12 => jstr(field_text(name)).prop_map(Json::Str),
            1 => json_value(),
        ]
        .boxed()
    };
    (jstr(Just(name.to_owned())), value)
}

/// Entries of a create-session object: each target field usually there, a credential choice,
/// now and then an unknown key or a repeated field.
fn json_entries() -> impl Strategy<Value = Vec<(JStr, Json)>> {
    let credentials = prop_oneof![
        4 => json_field("password").prop_map(|p| vec![p]),
        3 => (json_field("private_key"), option::of(json_field("passphrase")))
            .prop_map(|(k, p)| [Some(k), p].into_iter().flatten().collect()),
        1 => (
            option::of(json_field("password")),
            option::of(json_field("private_key")),
            option::of(json_field("passphrase")),
        )
            .prop_map(|(a, b, c)| [a, b, c].into_iter().flatten().collect()),
    ];
    (
        option::weighted(0.9, json_field("hostname")),
        option::weighted(0.9, json_field("username")),
        option::weighted(0.5, json_field("port")),
        option::weighted(0.4, json_field("term")),
        credentials,
        option::weighted(0.1, (jstr(key_name()), json_value())),
        option::weighted(0.1, select(FIELDS.to_vec()).prop_flat_map(json_field)),
    )
        .prop_flat_map(|(host, user, port, term, creds, extra, repeat)| {
            let mut entries: Vec<_> = [host, user, port, term].into_iter().flatten().collect();
            entries.extend(creds);
            entries.extend(extra);
            entries.extend(repeat);
            Just(entries).prop_shuffle()
        })
}

// ---- Form bodies ----

#[derive(Debug, Clone)]
struct FormPair {
    key: String,
    value: String,
    /// 0: as a browser encodes; 1: every byte as `%XX`; 2: only what must be, spaces as `%20`.
    style: u8,
    /// Send `key` alone, without `=` (read as an empty value).
    bare: bool,
}

fn form_encode(text: &str, style: u8, out: &mut String) {
    match style {
        0 => out.extend(form_urlencoded::byte_serialize(text.as_bytes())),
        1 => text
            .bytes()
            .for_each(|b| out.push_str(&format!("%{b:02X}"))),
        _ => {
            for c in text.chars() {
                match c {
                    '&' | '=' | '+' | '%' | '#' | ' ' => {
                        let mut buf = [0; 4];
                        for b in c.encode_utf8(&mut buf).bytes() {
                            out.push_str(&format!("%{b:02x}"));
                        }
                    }
                    c => out.push(c),
                }
            }
        }
    }
}

fn form_body(pairs: &[FormPair]) -> String {
    let mut out = String::new();
    for (i, pair) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        form_encode(&pair.key, pair.style, &mut out);
        if !pair.bare {
            out.push('=');
            form_encode(&pair.value, pair.style, &mut out);
        }
    }
    out
}

fn form_field(name: &'static str) -> impl Strategy<Value = FormPair> {
    (field_text(name), 0u8..3, proptest::bool::weighted(0.02)).prop_map(
        move |(value, style, bare)| FormPair {
            key: name.to_owned(),
            value: if bare { String::new() } else { value },
            style,
            bare,
        },
    )
}

fn form_pairs() -> impl Strategy<Value = Vec<FormPair>> {
    let credentials = prop_oneof![
        4 => form_field("password").prop_map(|p| vec![p]),
        3 => (form_field("private_key"), option::of(form_field("passphrase")))
            .prop_map(|(k, p)| [Some(k), p].into_iter().flatten().collect()),
        1 => (
            option::of(form_field("password")),
            option::of(form_field("private_key")),
            option::of(form_field("passphrase")),
        )
            .prop_map(|(a, b, c)| [a, b, c].into_iter().flatten().collect()),
    ];
    let unknown = (key_name(), any_text(16), 0u8..3).prop_map(|(key, value, style)| FormPair {
        key,
        value,
        style,
        bare: false,
    });
    (
        option::weighted(0.9, form_field("hostname")),
        option::weighted(0.9, form_field("username")),
        option::weighted(0.5, form_field("port")),
        option::weighted(0.4, form_field("term")),
        credentials,
        option::weighted(0.1, unknown),
        option::weighted(0.1, select(FIELDS.to_vec()).prop_flat_map(form_field)),
    )
        .prop_flat_map(|(host, user, port, term, creds, extra, repeat)| {
            let mut pairs: Vec<_> = [host, user, port, term].into_iter().flatten().collect();
            pairs.extend(creds);
            pairs.extend(extra);
            pairs.extend(repeat);
            Just(pairs).prop_shuffle()
        })
}

/// Bytes that look like form data, with broken escapes and stray separators.
fn form_garbage() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        select(FIELDS.to_vec()).prop_map(|s| s.as_bytes().to_vec()),
        select(vec![
            "=", "&", "&&", "==", "+", "%", "%4", "%zz", "%ff", "%C3", "%00", ";"
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        vec(any::<u8>(), 0..6),
        "[a-z0-9.:-]{0,12}".prop_map(String::into_bytes),
    ];
    vec(token, 0..24).prop_map(|tokens| tokens.concat())
}

// ---- What every parse_create result must satisfy ----

/// The checks that hold for every body: an accepted request is sane, a refusal is a 400
/// that does not repeat any long secret it was sent.
fn check_create(
    result: &Result<SessionRequest, ApiError>,
    secrets: &[String],
) -> Result<(), TestCaseError> {
    match result {
        Ok(req) => {
            let t = &req.target;
            prop_assert!(!t.host.is_empty() && t.host.len() <= MAX_HOSTNAME_LEN);
            prop_assert!(
                t.host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':')),
                "host {:?}",
                t.host
            );
            prop_assert_ne!(t.port, 0);
            prop_assert!(!t.username.is_empty());
            prop_assert!(!t.username.chars().any(char::is_control));
            prop_assert!(request::valid_term(&req.term), "term {:?}", req.term);
            match &req.credentials {
                Credentials::Password(_) => {}
                Credentials::PrivateKey { key, passphrase }
                | Credentials::KeyAndPassword {
                    key, passphrase, ..
                } => {
                    prop_assert!(!key.expose().trim().is_empty());
                    prop_assert!(passphrase.as_ref().is_none_or(|p| !p.expose().is_empty()));
                }
                Credentials::Interactive => {}
            }
        }
        Err(e) => {
            prop_assert_eq!(e.status().as_u16(), 400, "{:?}", e);
            prop_assert!(
                [
                    "malformed_body",
                    "missing_field",
                    "invalid_field",
                    "ambiguous_credentials"
                ]
                .contains(&e.code()),
                "{:?}",
                e
            );
            for secret in secrets {
                if secret.chars().count() >= SECRET_MIN_CHARS {
                    prop_assert!(
                        !e.message.contains(secret.as_str()),
                        "the error {:?} repeats the secret {:?}",
                        e.message,
                        secret
                    );
                }
            }
        }
    }
    Ok(())
}

/// A field's value as the body sent it (the last one, when a JSON key is repeated).
#[derive(Debug)]
enum Sent {
    Text(String),
    Number(String),
    Other,
}

/// What an accepted request must say, given the fields that were sent.
fn check_accepted(req: &SessionRequest, sent: &HashMap<String, Sent>) -> Result<(), TestCaseError> {
    let text = |name: &str| match sent.get(name) {
        Some(Sent::Text(s)) => Some(s.as_str()),
        _ => None,
    };
    prop_assert!(sent.keys().all(|k| FIELDS.contains(&k.as_str())));
    prop_assert!(sent.values().all(|v| !matches!(v, Sent::Other)));
    let host = text("hostname").and_then(request::normalize_host);
    prop_assert_eq!(Some(req.target.host.as_str()), host.as_deref());
    prop_assert_eq!(Some(req.target.username.as_str()), text("username"));
    prop_assert_eq!(
        req.term.as_str(),
        text("term").unwrap_or(request::DEFAULT_TERM)
    );
    let port = match sent.get("port") {
        None => Some(22),
        Some(Sent::Number(n) | Sent::Text(n)) => n.parse::<u16>().ok(),
        Some(Sent::Other) => None,
    };
    prop_assert_eq!(Some(req.target.port), port);
    match &req.credentials {
        Credentials::Password(p) => {
            prop_assert_eq!(Some(p.expose().as_str()), text("password"));
            prop_assert!(!sent.contains_key("private_key") && !sent.contains_key("passphrase"));
        }
        Credentials::PrivateKey { key, passphrase } => {
            prop_assert_eq!(Some(key.expose().as_str()), text("private_key"));
            prop_assert!(!sent.contains_key("password"));
            let sent_phrase = text("passphrase").filter(|p| !p.is_empty());
            prop_assert_eq!(
                passphrase.as_ref().map(|p| p.expose().as_str()),
                sent_phrase
            );
        }
        Credentials::KeyAndPassword {
            key,
            passphrase,
            password,
        } => {
            prop_assert_eq!(Some(key.expose().as_str()), text("private_key"));
            prop_assert_eq!(Some(password.expose().as_str()), text("password"));
            let sent_phrase = text("passphrase").filter(|p| !p.is_empty());
            prop_assert_eq!(
                passphrase.as_ref().map(|p| p.expose().as_str()),
                sent_phrase
            );
        }
        Credentials::Interactive => {
            prop_assert_eq!(text("auth"), Some("interactive"));
        }
    }
    Ok(())
}

fn json_create(entries: &[(JStr, Json)]) -> Result<(), TestCaseError> {
    let body = Json::Object(entries.to_vec()).text();
    let result = parse_create(BodyKind::Json, body.into_bytes()).map(|(r, _)| r);
    let mut secrets = Vec::new();
    for (key, value) in entries {
        if key
            .decoded()
            .is_some_and(|k| SECRET_FIELDS.contains(&k.as_str()))
        {
            value.strings(&mut secrets);
        }
    }
    check_create(&result, &secrets)?;

    // A lone surrogate anywhere makes the whole body invalid JSON.
    let mut sent = HashMap::new();
    for (key, value) in entries {
        let Some(key) = key.decoded() else {
            return expect_malformed(&result);
        };
        let raw = match value {
            Json::Null => {
                sent.remove(&key);
                continue;
            }
            Json::Str(s) => match s.decoded() {
                Some(s) => Sent::Text(s),
                None => return expect_malformed(&result),
            },
            // A number beyond f64 is a parse error; its acceptance is checked via `port`.
            Json::Number(n) => Sent::Number(n.clone()),
            _ => Sent::Other,
        };
        sent.insert(key, raw);
    }
    if let Ok(req) = &result {
        check_accepted(req, &sent)?;
    }
    Ok(())
}

fn expect_malformed(result: &Result<SessionRequest, ApiError>) -> Result<(), TestCaseError> {
    match result {
        Err(e) if e.code() == "malformed_body" => Ok(()),
        other => Err(TestCaseError::fail(format!(
            "a lone surrogate was accepted: {other:?}"
        ))),
    }
}

#[test]
fn create_session_survives_arbitrary_bytes() {
    let bytes = || {
        prop_oneof![
            vec(any::<u8>(), 0..1024),
            "[{}\\[\\]\":,0-9a-z\\\\ .eEu+-]{0,400}".prop_map(String::into_bytes),
        ]
    };
    fuzz(
        move || (bytes(), any::<bool>()),
        |(body, json)| {
            let kind = if json { BodyKind::Json } else { BodyKind::Form };
            check_create(&parse_create(kind, body).map(|(r, _)| r), &[])
        },
    );
}

#[test]
fn create_session_survives_arbitrary_json_values() {
    fuzz(json_value, |value| {
        let mut secrets = Vec::new();
        if let Json::Object(entries) = &value {
            for (key, value) in entries {
                if key
                    .decoded()
                    .is_some_and(|k| SECRET_FIELDS.contains(&k.as_str()))
                {
                    value.strings(&mut secrets);
                }
            }
        }
        let result = parse_create(BodyKind::Json, value.text().into_bytes()).map(|(r, _)| r);
        if !matches!(value, Json::Object(_)) {
            prop_assert!(result.is_err());
        }
        check_create(&result, &secrets)
    });
}

#[test]
fn create_session_json_bodies_are_checked() {
    fuzz(json_entries, |entries| json_create(&entries));
}

#[test]
fn create_session_form_bodies_are_checked() {
    fuzz(form_pairs, |pairs| {
        let result = parse_create(BodyKind::Form, form_body(&pairs).into_bytes()).map(|(r, _)| r);
        let secrets: Vec<String> = pairs
            .iter()
            .filter(|p| SECRET_FIELDS.contains(&p.key.as_str()))
            .map(|p| p.value.clone())
            .collect();
        check_create(&result, &secrets)?;

        let mut sent = HashMap::new();
        for pair in &pairs {
            // form_urlencoded skips empty pairs ("&&"); a repeated key is refused.
            if pair.bare && pair.key.is_empty() {
                continue;
            }
            if sent
                .insert(pair.key.clone(), Sent::Text(pair.value.clone()))
                .is_some()
            {
                prop_assert!(
                    matches!(&result, Err(e) if e.code() == "invalid_field"),
                    "repeated {:?} gave {:?}",
                    pair.key,
                    result
                );
                return Ok(());
            }
        }
        if let Ok(req) = &result {
            check_accepted(req, &sent)?;
        }
        Ok(())
    });
}

#[test]
fn create_session_survives_form_garbage() {
    fuzz(form_garbage, |body| {
        check_create(&parse_create(BodyKind::Form, body).map(|(r, _)| r), &[])
    });
}

// ---- The WebSocket event decoder ----

/// Event data shaped like what the decoder looks for, with random-typed `cols`, `rows`, `id`.
fn event_data() -> impl Strategy<Value = Json> {
    let dimension = prop_oneof![
        12 => (1u64..=MAX_DIMENSION).prop_map(|n| Json::Number(n.to_string())),
        2 => number().prop_map(Json::Number),
        1 => jstr("[0-9]{1,4}").prop_map(Json::Str),
        1 => json_value(),
    ]
    .boxed();
    let id = prop_oneof![
        8 => Just(SESSION_ID.to_owned()),
        1 => Just(SESSION_ID.to_uppercase()),
        1 => Just(SESSION_ID.replace('-', "")),
        1 => "[0-9a-f-]{0,40}",
    ];
    let key = |k: &str| jstr(Just(k.to_owned()));
    let object = (
        option::weighted(0.9, (key("cols"), dimension.clone())),
        option::weighted(0.9, (key("rows"), dimension)),
        option::weighted(0.9, (key("id"), jstr(id).prop_map(Json::Str))),
        vec((jstr(key_name()), json_value()), 0..2),
    )
        .prop_flat_map(|(cols, rows, id, mut others)| {
            others.extend([cols, rows, id].into_iter().flatten());
            Just(others).prop_shuffle()
        });
    prop_oneof![
        6 => object.prop_map(Json::Object),
        1 => json_value(),
    ]
}

/// A frame `[name, data]`, sometimes with a wrong name type, no data or extra items.
fn event_frame() -> impl Strategy<Value = Json> {
    let name = prop_oneof![
        6 => select(CLIENT_EVENTS.to_vec())
            .prop_map(|n| Json::Str(JStr(n.chars().map(Piece::Plain).collect()))),
        2 => select(event_name::ALL.to_vec()).prop_map(|n| Json::Str(JStr(n.chars().map(Piece::Plain).collect()))),
        2 => jstr(any_text(16)).prop_map(Json::Str),
        1 => json_value(),
    ];
    let data = prop_oneof![
        4 => event_data(),
        2 => jstr(any_text(32)).prop_map(Json::Str),
        1 => json_value(),
    ];
    (
        name,
        option::weighted(0.9, data),
        option::weighted(0.05, json_value()),
    )
        .prop_map(|(name, data, extra)| {
            Json::Array([Some(name), data, extra].into_iter().flatten().collect())
        })
}

/// What every decoded event must satisfy, given the frame as a reference parser reads it.
fn check_event(text: &str) -> Result<(), TestCaseError> {
    let decoded = decode_text(text);
    if let Ok(ClientEvent::Resize { cols, rows } | ClientEvent::StartSession { cols, rows, .. }) =
        &decoded
    {
        for dim in [cols, rows] {
            prop_assert!(
                (1..=MAX_DIMENSION).contains(&u64::from(*dim)),
                "{decoded:?}"
            );
        }
    }
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) else {
        prop_assert!(
            decoded.is_err(),
            "{text:?} is not an array, yet gave {decoded:?}"
        );
        return Ok(());
    };
    let (name, data) = match items.as_slice() {
        [Value::String(name)] => (name.as_str(), None),
        [Value::String(name), data] => (name.as_str(), Some(data)),
        _ => {
            prop_assert!(decoded.is_err(), "{text:?} gave {decoded:?}");
            return Ok(());
        }
    };
    let dim = |key: &str| data.and_then(|d| d.get(key)).and_then(Value::as_u64);
    match (name, &decoded) {
        (event_name::PAUSE, _) => prop_assert_eq!(decoded, Ok(ClientEvent::Pause)),
        (event_name::RESUME, _) => prop_assert_eq!(decoded, Ok(ClientEvent::Resume)),
        (event_name::SSH_INPUT, Ok(ClientEvent::Input(bytes))) => {
            prop_assert_eq!(
                data.and_then(Value::as_str).map(str::as_bytes),
                Some(&bytes[..])
            );
        }
        (event_name::SSH_INPUT, Err(_)) => {
            prop_assert!(!data.is_some_and(Value::is_string), "{text:?} refused");
        }
        (event_name::RESIZE, Ok(ClientEvent::Resize { cols, rows })) => {
            prop_assert_eq!(dim("cols"), Some(u64::from(*cols)));
            prop_assert_eq!(dim("rows"), Some(u64::from(*rows)));
        }
        (event_name::RESIZE, Err(_)) => {
            let fits = |key| dim(key).is_some_and(|n| (1..=MAX_DIMENSION).contains(&n));
            prop_assert!(!(fits("cols") && fits("rows")), "{text:?} refused");
        }
        (event_name::START_SESSION, Ok(ClientEvent::StartSession { id, cols, rows })) => {
            prop_assert_eq!(session_id(data), Some(*id));
            prop_assert_eq!(start_size(data), Some((*cols, *rows)));
        }
        (event_name::START_SESSION, Err(_)) => {
            let valid = session_id(data).is_some() && start_size(data).is_some();
            prop_assert!(!valid, "{text:?} refused");
        }
        (
            event_name::RESUME_SESSION,
            Ok(ClientEvent::ResumeSession {
                token,
                offset,
                cols,
                rows,
            }),
        ) => {
            prop_assert_eq!(resume_token(data), Some(token.as_str()));
            prop_assert_eq!(
                data.and_then(|d| d.get("offset")).and_then(Value::as_u64),
                Some(*offset)
            );
            prop_assert_eq!(start_size(data), Some((*cols, *rows)));
        }
        (event_name::RESUME_SESSION, Err(_)) => {
            let offset = data.and_then(|d| d.get("offset")).and_then(Value::as_u64);
            let valid =
                resume_token(data).is_some() && offset.is_some() && start_size(data).is_some();
            prop_assert!(!valid, "{text:?} refused");
        }
        (event_name::VIEW_SESSION, Ok(ClientEvent::ViewSession { id })) => {
            prop_assert_eq!(session_id(data), Some(*id));
        }
        (event_name::VIEW_SESSION, Err(_)) => {
            prop_assert!(session_id(data).is_none(), "{text:?} refused");
        }
        (event_name::HANDBACK, Ok(ClientEvent::Handback(verdict))) => {
            prop_assert_eq!(data.and_then(Value::as_str), Some(verdict.code()));
        }
        (event_name::HANDBACK, Err(_)) => {
            let verdict = data.and_then(Value::as_str);
            prop_assert!(
                !matches!(verdict, Some("continue" | "fail")),
                "{text:?} refused"
            );
        }
        (event_name::AUTH_RESPONSE, Ok(ClientEvent::AuthResponse(response))) => {
            let sent = auth_answers(data);
            prop_assert!(sent.is_some(), "{text:?} gave {decoded:?}");
            let sent = sent.unwrap_or_default();
            match response {
                AuthResponse::Answers(Answers(answers)) => {
                    let got: Vec<&str> = answers.iter().map(|a| a.expose().as_str()).collect();
                    prop_assert_eq!(got, sent);
                }
                AuthResponse::Oversized => prop_assert!(
                    sent.len() > alfresco_ssh::ssh::MAX_PROMPTS
                        || sent.iter().any(|a| a.len() > alfresco_ssh::ssh::MAX_ANSWER),
                    "{text:?} called oversized"
                ),
            }
        }
        (event_name::AUTH_RESPONSE, Err(_)) => {
            prop_assert!(auth_answers(data).is_none(), "{text:?} refused");
        }
        (name, _) if CLIENT_EVENTS.contains(&name) => {
            prop_assert!(decoded.is_err(), "{text:?} gave {decoded:?}");
        }
        (name, _) => prop_assert_eq!(decoded, Ok(ClientEvent::Unknown(name.to_owned()))),
    }
    Ok(())
}

/// The size a first event (start-session, resume-session) asks for: `cols` and `rows`
/// from 1 to 1000 each, 80×24 where left out or null; `None` if either is invalid.
fn start_size(data: Option<&Value>) -> Option<(u16, u16)> {
    let dim = |key: &str, default: u16| match data.and_then(|d| d.get(key)) {
        None | Some(Value::Null) => Some(default),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_DIMENSION).contains(n))
            .map(|n| n as u16),
    };
    Some((dim("cols", 80)?, dim("rows", 24)?))
}

/// The answers of an auth-response's data: `{"answers": [strings]}`, else `None`.
fn auth_answers(data: Option<&Value>) -> Option<Vec<&str>> {
    data?
        .get("answers")?
        .as_array()?
        .iter()
        .map(Value::as_str)
        .collect()
}

/// A well-formed resume token: 64 lower-case hex digits.
fn resume_token(data: Option<&Value>) -> Option<&str> {
    let token = data?.get("token")?.as_str()?;
    (token.len() == 64
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(token)
}

fn session_id(data: Option<&Value>) -> Option<uuid::Uuid> {
    let id = data?.get("id")?.as_str()?;
    uuid::Uuid::parse_str(id).ok()
}

#[test]
fn events_survive_arbitrary_text() {
    let text = || {
        prop_oneof![
            any_text(300),
            "[\\[\\]{}\",:0-9a-z\\\\ .eE+-]{0,300}",
            "\\[\"(ssh-input|resize|start-session|pause)\",[\\[\\]{}\",:0-9a-z\\\\ .-]{0,100}\\]",
        ]
    };
    fuzz(text, |text| check_event(&text));
}

#[test]
fn events_are_checked() {
    fuzz(event_frame, |frame| check_event(&frame.text()));
}

#[test]
fn ssh_input_round_trips_any_string() {
    fuzz(
        || (any_text(200), vec(0u8..3, 200)),
        |(input, modes)| {
            // Escaped as serde_json writes it, and with random `\u` escapes and surrogate pairs.
            let plain = serde_json::json!([event_name::SSH_INPUT, input]).to_string();
            let pieces = input
                .chars()
                .zip(modes.iter().cycle())
                .map(|(c, mode)| match mode {
                    0 => Piece::Escaped(c),
                    _ => Piece::Plain(c),
                });
            let escaped = Json::Array(vec![
                Json::Str(JStr(
                    event_name::SSH_INPUT.chars().map(Piece::Plain).collect(),
                )),
                Json::Str(JStr(pieces.collect())),
            ])
            .text();
            for text in [plain, escaped] {
                let expected = ClientEvent::Input(input.clone().into_bytes().into());
                prop_assert_eq!(decode_text(&text), Ok(expected), "{:?}", text);
            }
            Ok(())
        },
    );
}

/// Deeply nested input is refused by serde_json's recursion limit, not by running out of stack.
#[test]
fn deep_nesting_is_an_error() {
    const DEPTH: usize = 10_000;
    let nestings = [
        format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH)),
        "[".repeat(DEPTH),
        format!("{}1{}", "{\"a\":".repeat(DEPTH), "}".repeat(DEPTH)),
        "[{\"cols\":".repeat(DEPTH),
    ];
    for nested in &nestings {
        for frame in [
            nested.clone(),
            format!("[\"resize\",{nested}]"),
            format!("[\"start-session\",{{\"id\":\"{SESSION_ID}\",\"cols\":{nested}}}]"),
            format!("[\"ssh-input\",{nested}]"),
        ] {
            assert!(decode_text(&frame).is_err(), "{}…", &frame[..40]);
        }
        for body in [
            nested.clone(),
            format!(r#"{{"hostname":"h","username":"u","password":"pw","port":{nested}}}"#),
            format!(r#"{{"hostname":"h","username":"u","password":{nested}}}"#),
        ] {
            let err = parse_create(BodyKind::Json, body.into_bytes())
                .map(|(r, _)| r)
                .unwrap_err();
            assert_eq!(err.code(), "malformed_body");
        }
        assert!(
            parse_create(BodyKind::Form, nested.clone().into_bytes())
                .map(|(r, _)| r)
                .is_err()
        );
    }
}
