//! `POST /create-session` and `GET /healthz`.
//!
//! The body (JSON or form data) is parsed into a checked `SessionRequest` by a pure
//! function, `parse_create`, so every malformed body is unit-tested without a server.
//! Credentials go straight into `Secret`s, unescaped by us rather than in serde_json's
//! scratch buffer; the raw body is wiped after parsing.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Value, json};
use zeroize::Zeroize;

use super::error::ApiError;
use crate::request::{
    self, AskedTimers, Credentials, Hop, MAX_HOPS, RemoteEncoding, SessionOptions, SessionRequest,
    Target,
};
use crate::secret::{self, Secret};
use crate::ssh;

/// Largest create-session body: a 16 KiB RSA key fits several times over.
pub const MAX_BODY: usize = 64 * 1024;

const FIELDS: [&str; 16] = [
    "auth",
    "hostname",
    "port",
    "username",
    "password",
    "private_key",
    "passphrase",
    "term",
    "host_key",
    "ttl",
    "max_duration",
    "idle_timeout",
    "resume_grace",
    "handback",
    "encoding",
    "jump",
];

/// What a jump host in `jump` may say: a target's fields, without a terminal or timers.
const HOP_FIELDS: [&str; 8] = [
    "hostname",
    "port",
    "username",
    "password",
    "private_key",
    "passphrase",
    "auth",
    "host_key",
];

/// Longest duration anyone may ask for, so arithmetic on instants never overflows.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// The body's format, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
}

impl BodyKind {
    pub fn from_content_type(value: Option<&str>) -> Result<Self, ApiError> {
        let mime = value
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" => Ok(BodyKind::Json),
            "application/x-www-form-urlencoded" => Ok(BodyKind::Form),
            _ => Err(ApiError::unsupported_media_type()),
        }
    }
}

/// A field's raw value: JSON keeps its type, form data is always text.
pub enum Raw {
    Text(String),
    Number(Value),
    Bool(bool),
    /// `jump`: each jump host's fields, read as a body's are (`json_hops`).
    Hops(Vec<HashMap<String, Raw>>),
    Other,
}

/// Parses and checks a create-session body, then wipes it. The request's `options` are
/// left at their defaults; the caller sets them from the timers asked for and its bounds
/// (`TimerBounds::apply`).
pub fn parse_create(
    kind: BodyKind,
    mut body: Vec<u8>,
) -> Result<(SessionRequest, AskedTimers), ApiError> {
    let fields = match kind {
        BodyKind::Json => json_fields(&body),
        BodyKind::Form => form_fields(&body),
    };
    body.zeroize();
    build(fields?)
}

/// Fields whose strings are unescaped by `secret::unescape_json_string`, not serde_json.
const SECRET_FIELDS: [&str; 3] = ["password", "private_key", "passphrase"];

fn json_fields(body: &[u8]) -> Result<HashMap<String, Raw>, ApiError> {
    // Values stay raw (borrowed from the body, which is wiped): serde_json would undo a
    // key's `\n` escapes in a scratch buffer that is grown, copied and freed unwiped.
    let not_json = || ApiError::malformed_body("the body is not valid JSON");
    let value: &RawValue = serde_json::from_slice(body).map_err(|_| not_json())?;
    if !value.get().starts_with('{') {
        return Err(ApiError::malformed_body("the body must be a JSON object"));
    }
    let RawPairs(pairs) = serde_json::from_str(value.get()).map_err(|_| not_json())?;
    let mut fields = HashMap::new();
    // Every value is decoded, even one a later duplicate replaces, so that anything serde_json
    // would refuse (a lone surrogate) still makes the whole body malformed.
    for (key, value) in pairs {
        let text = value.get();
        let raw = if text.starts_with('"') && SECRET_FIELDS.contains(&key.as_str()) {
            Raw::Text(secret::unescape_json_string(text).ok_or_else(not_json)?)
        } else if key == "jump" && text.starts_with('[') {
            json_hops(text)?
        } else {
            match serde_json::from_str::<Value>(text).map_err(|_| not_json())? {
                Value::Null => {
                    fields.remove(&key);
                    continue;
                }
                Value::String(s) => Raw::Text(s),
                n @ Value::Number(_) => Raw::Number(n),
                Value::Bool(b) => Raw::Bool(b),
                _ => Raw::Other,
            }
        };
        fields.insert(key, raw);
    }
    Ok(fields)
}

/// `jump`'s list. Each jump host is an object read by `json_fields`, as a body is, so its
/// secrets get the same care as the target's. Counted before any is read.
fn json_hops(text: &str) -> Result<Raw, ApiError> {
    let not_a_list = || ApiError::invalid_field("jump", "must be a list of jump host objects");
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|_| not_a_list())?;
    if items.len() > MAX_HOPS {
        return Err(ApiError::too_many_hops(MAX_HOPS));
    }
    let mut hops = Vec::with_capacity(items.len());
    for item in items {
        if !item.get().starts_with('{') {
            return Err(not_a_list());
        }
        hops.push(json_fields(item.get().as_bytes())?);
    }
    Ok(Raw::Hops(hops))
}

/// A JSON object's members in order, values raw, duplicates kept.
struct RawPairs<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawPairs<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Members<'a> {
            type Value = RawPairs<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, &'a RawValue>()? {
                    pairs.push(pair);
                }
                Ok(RawPairs(pairs))
            }
        }
        deserializer.deserialize_map(Members(std::marker::PhantomData))
    }
}

fn form_fields(body: &[u8]) -> Result<HashMap<String, Raw>, ApiError> {
    let mut fields = HashMap::new();
    for (key, value) in form_urlencoded::parse(body) {
        let key = key.into_owned();
        if fields
            .insert(key.clone(), Raw::Text(value.into_owned()))
            .is_some()
        {
            // Named only when it is one of ours: any other name is input we do not echo.
            return Err(match FIELDS.iter().find(|f| **f == key) {
                Some(field) => ApiError::invalid_field(field, "is given more than once"),
                None => ApiError::unknown_field(&FIELDS),
            });
        }
    }
    Ok(fields)
}

fn build(mut fields: HashMap<String, Raw>) -> Result<(SessionRequest, AskedTimers), ApiError> {
    if fields.keys().any(|k| !FIELDS.contains(&k.as_str())) {
        // The unknown name is not echoed: in a form body, an unencoded `&` inside a password
        // turns the rest of the password into a "field name".
        return Err(ApiError::unknown_field(&FIELDS));
    }
    let jump = fields.remove("jump");
    let mut text = |name: &str| -> Result<Option<String>, ApiError> {
        match fields.remove(name) {
            None => Ok(None),
            Some(Raw::Text(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid_field(name, "must be a string")),
        }
    };
    let hostname = text("hostname")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::missing_field("hostname"))?;
    let host = request::normalize_host(&hostname).ok_or_else(|| {
        ApiError::invalid_field("hostname", "is not a valid host name or IP address")
    })?;
    let username = text("username")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::missing_field("username"))?;
    if !request::valid_username(&username) {
        return Err(ApiError::invalid_field(
            "username",
            "is not a valid user name",
        ));
    }
    let term = text("term")?.unwrap_or_else(|| request::DEFAULT_TERM.to_owned());
    if !request::valid_term(&term) {
        return Err(ApiError::invalid_field(
            "term",
            "is not a valid terminal type",
        ));
    }
    // No field, or any UTF-8 label, is UTF-8: no conversion at all.
    let encoding = text("encoding")?
        .map(|label| RemoteEncoding::from_label(&label).ok_or_else(ApiError::unknown_encoding))
        .transpose()?
        .unwrap_or_default();
    let host_key = text("host_key")?
        .map(|s| ssh::parse_host_key_pin(&s))
        .transpose()
        .map_err(|why| ApiError::invalid_field("host_key", why))?;
    // Secrets go into `Secret` at once, so an early return below still wipes them.
    let password = text("password")?.map(Secret::new);
    let private_key = text("private_key")?.map(Secret::new);
    let passphrase = text("passphrase")?.map(Secret::new);
    let interactive = match text("auth")?.as_deref() {
        None => false,
        Some("interactive") => true,
        Some(_) => return Err(ApiError::invalid_field("auth", "must be \"interactive\"")),
    };
    let port = port(fields.remove("port"))?;
    let asked = AskedTimers {
        ttl: duration("ttl", fields.remove("ttl"))?,
        max_duration: duration("max_duration", fields.remove("max_duration"))?,
        idle_timeout: duration("idle_timeout", fields.remove("idle_timeout"))?,
        resume_grace: duration("resume_grace", fields.remove("resume_grace"))?,
        handback: flag("handback", fields.remove("handback"))?,
        encoding,
    };

    let credentials = match (password, private_key) {
        _ if interactive && passphrase.is_some() => {
            return Err(ApiError::invalid_field(
                "passphrase",
                "is only for use with `private_key`",
            ));
        }
        (None, None) if interactive => Credentials::Interactive,
        (Some(_), _) | (_, Some(_)) if interactive => {
            return Err(ApiError::ambiguous_credentials());
        }
        // Both: for servers that want two methods in turn (publickey, then password).
        (Some(password), Some(key)) => {
            if key.expose().trim().is_empty() {
                return Err(ApiError::invalid_field("private_key", "is empty"));
            }
            Credentials::KeyAndPassword {
                key,
                passphrase: passphrase.filter(|p| !p.expose().is_empty()),
                password,
            }
        }
        (None, None) => return Err(ApiError::missing_field("password` or `private_key")),
        (Some(_), None) if passphrase.is_some() => {
            return Err(ApiError::invalid_field(
                "passphrase",
                "is only for use with `private_key`",
            ));
        }
        (Some(password), None) => Credentials::Password(password),
        (None, Some(key)) => {
            if key.expose().trim().is_empty() {
                return Err(ApiError::invalid_field("private_key", "is empty"));
            }
            Credentials::PrivateKey {
                key,
                passphrase: passphrase.filter(|p| !p.expose().is_empty()),
            }
        }
    };
    let target = Target {
        host,
        port,
        username,
    };
    let jump = hops(jump)?;
    check_route(&target, &jump)?;
    let request = SessionRequest {
        target,
        credentials,
        term,
        host_key,
        // Filled in by the caller, which knows the API token and the bounds.
        creator: String::new(),
        options: SessionOptions::default(),
        jump,
    };
    Ok((request, asked))
}

/// The jump hosts of `jump`, each checked by `build`, the target's own rules; an error
/// says which hop (1 = the first, the one the gateway dials).
fn hops(raw: Option<Raw>) -> Result<Vec<Hop>, ApiError> {
    let list = match raw {
        None => return Ok(Vec::new()),
        Some(Raw::Hops(list)) => list,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "jump",
                "must be a JSON list of jump host objects",
            ));
        }
    };
    if list.len() > MAX_HOPS {
        return Err(ApiError::too_many_hops(MAX_HOPS));
    }
    let mut hops = Vec::with_capacity(list.len());
    for (n, fields) in (1u8..).zip(list) {
        let in_hop = |e: ApiError| {
            ApiError {
                message: format!("jump host {n}: {}", e.message),
                ..e
            }
            .at_hop(n)
        };
        // `term`, the timers and a nested `jump` are the session's, not a hop's.
        if fields.keys().any(|k| !HOP_FIELDS.contains(&k.as_str())) {
            return Err(in_hop(ApiError::unknown_field(&HOP_FIELDS)));
        }
        let (hop, _) = build(fields).map_err(in_hop)?;
        hops.push(Hop {
            target: hop.target,
            credentials: hop.credentials,
            host_key: hop.host_key,
        });
    }
    Ok(hops)
}

/// Refuses a route that goes in a circle: a jump host at the target's host and port, or at
/// an earlier jump host's. Names are compared as given (normalized): each is resolved by
/// the hop before it, so only the same spelling is surely the same place.
fn check_route(target: &Target, hops: &[Hop]) -> Result<(), ApiError> {
    let place = |t: &Target| (t.host.trim_end_matches('.').to_owned(), t.port);
    for (i, hop) in hops.iter().enumerate() {
        let n = i as u8 + 1;
        if place(&hop.target) == place(target) {
            return Err(
                ApiError::jump_loop(&format!("jump host {n} is the target itself")).at_hop(n),
            );
        }
        if let Some(earlier) = hops[..i]
            .iter()
            .position(|h| place(&h.target) == place(&hop.target))
        {
            let why = format!("jump host {n} is jump host {} again", earlier + 1);
            return Err(ApiError::jump_loop(&why).at_hop(n));
        }
    }
    Ok(())
}

/// A timer: a duration string (`"90s"`, `"10m"`, `"1h 30m"`) or whole seconds as a number
/// (a JSON number, or digits in a form). Zero, negative and fractional values are refused.
pub fn duration(name: &str, raw: Option<Raw>) -> Result<Option<Duration>, ApiError> {
    let invalid = || {
        ApiError::invalid_field(
            name,
            "must be a duration such as \"90s\", \"10m\" or \"2h\", or whole seconds",
        )
    };
    let parsed = match raw {
        None => return Ok(None),
        Some(Raw::Number(n)) => Duration::from_secs(n.as_u64().ok_or_else(invalid)?),
        Some(Raw::Text(s)) if !s.is_empty() && s.len() <= 32 => {
            if s.bytes().all(|b| b.is_ascii_digit()) {
                Duration::from_secs(s.parse().map_err(|_| invalid())?)
            } else {
                humantime::parse_duration(&s).map_err(|_| invalid())?
            }
        }
        Some(_) => return Err(invalid()),
    };
    if parsed.is_zero() {
        return Err(ApiError::invalid_field(name, "must be more than zero"));
    }
    Ok(Some(parsed.min(MAX_DURATION)))
}

/// The `by` of an extend body: `{"by": "30m"}` or `{"by": 1800}`, nothing else.
pub fn parse_extend(body: &[u8]) -> Result<Duration, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::malformed_body("the body is not valid JSON"))?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::malformed_body("the body must be a JSON object"));
    };
    let by = fields.remove("by");
    if !fields.is_empty() {
        return Err(ApiError::unknown_field(&["by"]));
    }
    let raw = match by {
        None | Some(Value::Null) => return Err(ApiError::missing_field("by")),
        Some(Value::String(s)) => Raw::Text(s),
        Some(n @ Value::Number(_)) => Raw::Number(n),
        Some(_) => Raw::Other,
    };
    Ok(duration("by", Some(raw))?.expect("a value was given"))
}

/// A yes/no field: a JSON boolean, or `true`/`false` in a form.
fn flag(name: &str, raw: Option<Raw>) -> Result<bool, ApiError> {
    match raw {
        None => Ok(false),
        Some(Raw::Bool(b)) => Ok(b),
        Some(Raw::Text(s)) if s == "true" => Ok(true),
        Some(Raw::Text(s)) if s == "false" => Ok(false),
        Some(_) => Err(ApiError::invalid_field(name, "must be true or false")),
    }
}

/// The operator's timers: the defaults a session gets and the most it may ask for.
#[derive(Debug, Clone)]
pub struct TimerBounds {
    /// `--session-ttl` and `--max-session-ttl`.
    pub ttl: Duration,
    pub max_ttl: Duration,
    /// `--max-session-time`, `--idle-timeout`, `--resume-grace`: each the default and the
    /// bound (`None`: off by default, and any value may be asked for, except a resume
    /// grace, which needs resume on).
    pub max_session_time: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub resume_grace: Option<Duration>,
}

impl TimerBounds {
    /// The session's options: what it asked for, or the defaults; above a bound is an
    /// error naming the field and the bound, never silently clamped.
    pub fn apply(&self, asked: AskedTimers) -> Result<SessionOptions, ApiError> {
        let above = |field: &str, flag: &str, bound: Duration| {
            ApiError::invalid_field(
                field,
                &format!(
                    "must be at most {} on this gateway ({flag})",
                    humantime::format_duration(bound)
                ),
            )
        };
        let ttl = asked.ttl.unwrap_or(self.ttl);
        if ttl > self.max_ttl {
            return Err(above("ttl", "--max-session-ttl", self.max_ttl));
        }
        let bounded =
            |field, flag, asked: Option<Duration>, bound: Option<Duration>| match (asked, bound) {
                (Some(a), Some(b)) if a > b => Err(above(field, flag, b)),
                (Some(a), _) => Ok(Some(a)),
                (None, b) => Ok(b),
            };
        let max_duration = bounded(
            "max_duration",
            "--max-session-time",
            asked.max_duration,
            self.max_session_time,
        )?;
        let idle_timeout = bounded(
            "idle_timeout",
            "--idle-timeout",
            asked.idle_timeout,
            self.idle_timeout,
        )?;
        if asked.resume_grace.is_some() && self.resume_grace.is_none() {
            return Err(ApiError::invalid_field(
                "resume_grace",
                "cannot be set: resume is off on this gateway (--resume-grace 0)",
            ));
        }
        let resume_grace = bounded(
            "resume_grace",
            "--resume-grace",
            asked.resume_grace,
            self.resume_grace,
        )?;
        Ok(SessionOptions {
            ttl,
            max_duration,
            idle_timeout,
            resume_grace,
            handback: asked.handback,
            encoding: asked.encoding,
        })
    }
}

/// Port 1–65535; a JSON number, or a string of digits (as forms send).
fn port(raw: Option<Raw>) -> Result<u16, ApiError> {
    let invalid = || ApiError::invalid_field("port", "must be a number from 1 to 65535");
    let port = match raw {
        None => return Ok(22),
        Some(Raw::Number(n)) => n.as_u64().ok_or_else(invalid)?,
        Some(Raw::Text(s))
            if !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse().map_err(|_| invalid())?
        }
        Some(_) => return Err(invalid()),
    };
    u16::try_from(port)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(invalid)
}

/// The created-session answer.
pub fn created_body(
    id: &uuid::Uuid,
    url: &str,
    status_url: &str,
    expires_at: std::time::SystemTime,
) -> String {
    let expires_at = humantime::format_rfc3339_seconds(expires_at).to_string();
    json!({"id": id.to_string(), "url": url, "status_url": status_url, "expires_at": expires_at})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> Result<SessionRequest, ApiError> {
        parse_create(BodyKind::Json, body.as_bytes().to_vec()).map(|(r, _)| r)
    }

    fn form(body: &str) -> Result<SessionRequest, ApiError> {
        parse_create(BodyKind::Form, body.as_bytes().to_vec()).map(|(r, _)| r)
    }

    fn timers(extra: &str) -> Result<AskedTimers, ApiError> {
        let body = format!(r#"{{"hostname":"h","username":"u","password":"p"{extra}}}"#);
        parse_create(BodyKind::Json, body.into_bytes()).map(|(_, t)| t)
    }

    fn bounds() -> TimerBounds {
        TimerBounds {
            ttl: Duration::from_secs(600),
            max_ttl: Duration::from_secs(86_400),
            max_session_time: Some(Duration::from_secs(7200)),
            idle_timeout: None,
            resume_grace: Some(Duration::from_secs(300)),
        }
    }

    #[test]
    fn timers_are_parsed_and_bounded() {
        let t =
            timers(r#","ttl":"15m","max_duration":3600,"idle_timeout":"1h 30m","handback":true"#)
                .unwrap();
        assert_eq!(t.ttl, Some(Duration::from_secs(900)));
        assert_eq!(t.max_duration, Some(Duration::from_secs(3600)));
        assert_eq!(t.idle_timeout, Some(Duration::from_secs(5400)));
        assert!(t.handback);
        let o = bounds().apply(t).unwrap();
        assert_eq!(
            (o.ttl, o.max_duration),
            (Duration::from_secs(900), Some(Duration::from_secs(3600)))
        );
        assert_eq!(
            o.resume_grace,
            Some(Duration::from_secs(300)),
            "the flag's default"
        );
        let o = bounds().apply(AskedTimers::default()).unwrap();
        assert_eq!(
            (o.ttl, o.max_duration, o.idle_timeout),
            (
                Duration::from_secs(600),
                Some(Duration::from_secs(7200)),
                None
            )
        );
        assert!(!o.handback);
        for bad in [
            r#","ttl":0"#,
            r#","ttl":"0s""#,
            r#","ttl":-5"#,
            r#","ttl":"-5s""#,
            r#","ttl":1.5"#,
            r#","ttl":"soon""#,
            r#","ttl":true"#,
            r#","ttl":"""#,
            r#","max_duration":[1]"#,
            r#","handback":"yes""#,
            r#","handback":1"#,
        ] {
            let err = timers(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_field", "{bad}");
        }
        for (bad, field) in [
            (r#","ttl":"25h""#, "`ttl`"),
            (r#","max_duration":"3h""#, "`max_duration`"),
            (r#","resume_grace":"10m""#, "`resume_grace`"),
        ] {
            let err = bounds().apply(timers(bad).unwrap()).unwrap_err();
            assert_eq!(err.code(), "invalid_field");
            assert!(
                err.message.contains(field) && err.message.contains("at most"),
                "{}",
                err.message
            );
        }
        let no_resume = TimerBounds {
            resume_grace: None,
            ..bounds()
        };
        let err = no_resume
            .apply(timers(r#","resume_grace":"1m""#).unwrap())
            .unwrap_err();
        assert!(err.message.contains("resume is off"), "{}", err.message);
        let huge = timers(r#","idle_timeout":99999999999999"#).unwrap();
        assert_eq!(huge.idle_timeout, Some(MAX_DURATION), "no overflow later");
    }

    fn code(r: Result<SessionRequest, ApiError>) -> &'static str {
        r.unwrap_err().code()
    }

    #[test]
    fn content_types() {
        assert_eq!(
            BodyKind::from_content_type(Some("application/json; charset=utf-8")).unwrap(),
            BodyKind::Json
        );
        assert_eq!(
            BodyKind::from_content_type(Some("Application/X-WWW-Form-Urlencoded")).unwrap(),
            BodyKind::Form
        );
        assert_eq!(
            BodyKind::from_content_type(Some("text/plain"))
                .unwrap_err()
                .code(),
            "unsupported_media_type"
        );
        assert_eq!(
            BodyKind::from_content_type(None).unwrap_err().code(),
            "unsupported_media_type"
        );
    }

    #[test]
    fn json_password() {
        let r = json(r#"{"hostname":"10.0.0.5","port":2222,"username":"deploy","password":"pw"}"#)
            .unwrap();
        assert_eq!(
            r.target,
            Target {
                host: "10.0.0.5".into(),
                port: 2222,
                username: "deploy".into()
            }
        );
        assert!(matches!(r.credentials, Credentials::Password(ref p) if p.expose() == "pw"));
        assert_eq!(r.term, "xterm-256color");
    }

    #[test]
    fn key_and_password_and_interactive() {
        let r = json(
            r#"{"hostname":"h","username":"u","password":"pw","private_key":"k","passphrase":"pp"}"#,
        )
        .unwrap();
        match r.credentials {
            Credentials::KeyAndPassword {
                key,
                passphrase,
                password,
            } => {
                assert_eq!(
                    (key.expose().as_str(), password.expose().as_str()),
                    ("k", "pw")
                );
                assert_eq!(passphrase.unwrap().expose(), "pp");
            }
            other => panic!("{other:?}"),
        }
        let r = form("hostname=h&username=u&auth=interactive").unwrap();
        assert!(matches!(r.credentials, Credentials::Interactive));
        assert_eq!(r.credentials.method(), "interactive");
    }

    #[test]
    fn form_key_with_passphrase() {
        let r = form("hostname=h.example&username=u&private_key=-----BEGIN%0Akey&passphrase=pp&port=22&term=xterm").unwrap();
        assert_eq!(r.target.port, 22);
        assert_eq!(r.term, "xterm");
        match r.credentials {
            Credentials::PrivateKey { key, passphrase } => {
                assert_eq!(key.expose(), "-----BEGIN\nkey");
                assert_eq!(passphrase.unwrap().expose(), "pp");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_bodies() {
        assert_eq!(code(json("{")), "malformed_body");
        assert_eq!(code(json("[]")), "malformed_body");
        assert_eq!(code(json("\"x\"")), "malformed_body");
        assert_eq!(
            code(json(r#"{"username":"u","password":"p"}"#)),
            "missing_field"
        );
        assert_eq!(
            code(json(r#"{"hostname":"","username":"u","password":"p"}"#)),
            "missing_field"
        );
        assert_eq!(
            code(json(r#"{"hostname":"h","password":"p"}"#)),
            "missing_field"
        );
        assert_eq!(
            code(json(r#"{"hostname":"h","username":"u"}"#)),
            "missing_field"
        );
        assert_eq!(
            code(json(
                r#"{"hostname":"h","username":"u","auth":"interactive","password":"p"}"#
            )),
            "ambiguous_credentials"
        );
        assert_eq!(
            code(json(
                r#"{"hostname":"h","username":"u","auth":"interactive","private_key":"k"}"#
            )),
            "ambiguous_credentials"
        );
        assert_eq!(
            code(json(
                r#"{"hostname":"h","username":"u","auth":"interactive","passphrase":"x"}"#
            )),
            "invalid_field"
        );
        for auth in [r#""password""#, r#""""#, "true", "1"] {
            assert_eq!(
                code(json(&format!(
                    r#"{{"hostname":"h","username":"u","password":"p","auth":{auth}}}"#
                ))),
                "invalid_field",
                "{auth}"
            );
        }
        assert_eq!(
            code(json(
                r#"{"hostname":"h","username":"u","password":"p","private_key":" "}"#
            )),
            "invalid_field"
        );
        assert_eq!(
            code(json(
                r#"{"hostname":"h","username":"u","password":"p","passphrase":"x"}"#
            )),
            "invalid_field"
        );
        assert_eq!(
            code(json(
                r#"{"hostname":"h","username":"u","private_key":"  "}"#
            )),
            "invalid_field"
        );
        assert_eq!(
            code(json(r#"{"hostname":5,"username":"u","password":"p"}"#)),
            "invalid_field"
        );
        assert_eq!(
            code(json(r#"{"hostname":"a b","username":"u","password":"p"}"#)),
            "invalid_field"
        );
        assert_eq!(
            code(json(
                r#"{"hostname":"h","username":"u","password":"p","term":"x;y"}"#
            )),
            "invalid_field"
        );
        assert_eq!(
            code(json(
                r#"{"hostname":"h","username":"u","password":"p","pasword":"p"}"#
            )),
            "invalid_field"
        );
        assert_eq!(
            code(form("hostname=h&hostname=i&username=u&password=p")),
            "invalid_field"
        );
    }

    #[test]
    fn encodings() {
        let with = |e: &str| {
            let body =
                serde_json::json!({"hostname":"h","username":"u","password":"p","encoding":e});
            let (_, asked) = parse_create(BodyKind::Json, body.to_string().into_bytes())?;
            bounds().apply(asked)
        };
        let gbk = with("GBK").unwrap().encoding;
        assert_eq!(gbk.name(), "GBK");
        assert_eq!(with("utf-8").unwrap().encoding, RemoteEncoding::Utf8);
        assert_eq!(
            bounds().apply(timers("").unwrap()).unwrap().encoding,
            RemoteEncoding::Utf8,
            "no field: UTF-8"
        );
        let form_body = "hostname=h&username=u&password=p&encoding=shift_jis";
        let (_, asked) = parse_create(BodyKind::Form, form_body.into()).unwrap();
        assert_eq!(asked.encoding.name(), "Shift_JIS");
        for bad in ["", "klingon", "utf-16le", "hz-gb-2312"] {
            let err = with(bad).unwrap_err();
            assert_eq!(err.code(), "unknown_encoding", "{bad:?}");
            assert_eq!(err.status(), hyper::StatusCode::BAD_REQUEST);
        }
        assert!(!with("klingon").unwrap_err().message.contains("klingon"));
        let err =
            json(r#"{"hostname":"h","username":"u","password":"p","encoding":936}"#).unwrap_err();
        assert_eq!(err.code(), "invalid_field", "not a string");
    }

    #[test]
    fn ports() {
        let with_port = |p: &str| {
            json(&format!(
                r#"{{"hostname":"h","username":"u","password":"p","port":{p}}}"#
            ))
        };
        assert_eq!(with_port("65535").unwrap().target.port, 65535);
        assert_eq!(with_port("\"2222\"").unwrap().target.port, 2222);
        for bad in [
            "0", "65536", "-1", "22.5", "\"\"", "\"22a\"", "\"-22\"", "true", "[22]", "1e3",
        ] {
            assert_eq!(code(with_port(bad)), "invalid_field", "port {bad}");
        }
        assert_eq!(
            code(form("hostname=h&username=u&password=p&port=abc")),
            "invalid_field"
        );
    }

    #[test]
    fn host_keys() {
        let with_key = |k: &str| {
            json(
                &serde_json::json!({"hostname":"h","username":"u","password":"p","host_key":k})
                    .to_string(),
            )
        };
        let fp = "SHA256:XXkgCBclf7u8N2U6LMzRVGjMQyZ5vLfHJVSjjpWoOZc";
        assert!(matches!(
            with_key(fp).unwrap().host_key,
            Some(crate::request::HostKeyPin::Sha256(_))
        ));
        let line = "[h]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG8yuQzWDbuazfTvRkAoYIYgFCKS5+4qsuvIf5uaviNG";
        assert!(matches!(
            with_key(line).unwrap().host_key,
            Some(crate::request::HostKeyPin::Key(_))
        ));
        assert_eq!(
            json(r#"{"hostname":"h","username":"u","password":"p"}"#)
                .unwrap()
                .host_key,
            None
        );
        for bad in ["", "SHA256:nope", "md5:aa", "h ssh-ed25519 AAAA"] {
            let err = with_key(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_field", "{bad:?}");
            assert!(err.message.contains("`host_key`"), "{}", err.message);
        }
        let err =
            json(r#"{"hostname":"h","username":"u","password":"p","host_key":7}"#).unwrap_err();
        assert_eq!(err.code(), "invalid_field");
    }

    fn hop(host: &str, port: u16) -> serde_json::Value {
        serde_json::json!({"hostname": host, "port": port, "username": "j", "password": "jp"})
    }

    fn with_jump(jump: serde_json::Value) -> Result<SessionRequest, ApiError> {
        let body = serde_json::json!({"hostname":"db","username":"u","password":"p","jump":jump});
        json(&body.to_string())
    }

    #[test]
    fn jump_hosts_are_parsed_as_targets_are() {
        let r = with_jump(serde_json::json!([
            hop("Bastion.example", 2222),
            {"hostname":"10.0.0.7","username":"k","private_key":"-----BEGIN\nkey","passphrase":"pp",
             "host_key":"SHA256:XXkgCBclf7u8N2U6LMzRVGjMQyZ5vLfHJVSjjpWoOZc"},
        ]))
        .unwrap();
        assert_eq!(r.jump.len(), 2);
        assert_eq!(r.jump[0].target.host, "bastion.example");
        assert_eq!(r.jump[0].target.port, 2222);
        assert!(
            matches!(r.jump[0].credentials, Credentials::Password(ref p) if p.expose() == "jp")
        );
        assert!(r.jump[0].host_key.is_none());
        assert_eq!(r.jump[1].target.port, 22);
        match &r.jump[1].credentials {
            Credentials::PrivateKey { key, passphrase } => {
                assert_eq!(key.expose(), "-----BEGIN\nkey");
                assert_eq!(passphrase.as_ref().unwrap().expose(), "pp");
            }
            other => panic!("{other:?}"),
        }
        assert!(r.jump[1].host_key.is_some());
        assert_eq!(
            r.route().to_string(),
            "u@db:22 via j@bastion.example:2222, k@10.0.0.7:22"
        );
        assert!(with_jump(serde_json::json!([])).unwrap().jump.is_empty());
        assert!(
            json(r#"{"hostname":"h","username":"u","password":"p"}"#)
                .unwrap()
                .jump
                .is_empty()
        );
    }

    #[test]
    fn bad_jump_lists() {
        let err = |jump: serde_json::Value| with_jump(jump).unwrap_err();
        let four: Vec<_> = (1..=4).map(|n| hop(&format!("j{n}"), 22)).collect();
        assert_eq!(err(serde_json::json!(four)).code(), "too_many_hops");
        let e = err(serde_json::json!([hop("j1", 22), hop("db", 22)]));
        assert_eq!((e.code(), e.hop), ("jump_loop", Some(2)));
        let e = err(serde_json::json!([
            hop("j1", 22),
            hop("j2", 22),
            hop("j1", 22)
        ]));
        assert_eq!((e.code(), e.hop), ("jump_loop", Some(3)));
        assert!(e.message.contains("jump host 1"), "{}", e.message);
        // Anyone on the route may ask the person: the target and the hops.
        let interactive = serde_json::json!({"hostname":"db","username":"u","auth":"interactive",
                                              "jump":[{"hostname":"j1","username":"j","auth":"interactive"}]});
        let r = json(&interactive.to_string()).unwrap();
        assert!(r.credentials.is_interactive() && r.jump[0].credentials.is_interactive());
        // A hop may carry a key and a password, for a two-step login there.
        let two_step =
            serde_json::json!([{"hostname":"j1","username":"j","password":"x","private_key":"k"}]);
        assert!(with_jump(two_step).is_ok());
        // Another port on the same host is another place.
        assert!(with_jump(serde_json::json!([hop("db", 2222)])).is_ok());
        for (bad, code) in [
            (serde_json::json!("j1"), "invalid_field"),
            (serde_json::json!({"hostname":"j1"}), "invalid_field"),
            (serde_json::json!([1]), "invalid_field"),
            (
                serde_json::json!([{"hostname":"j1","username":"j"}]),
                "missing_field",
            ),
            (
                serde_json::json!([{"hostname":"a b","username":"j","password":"x"}]),
                "invalid_field",
            ),
            (
                serde_json::json!([{"hostname":"j1","username":"j","password":"x","port":0}]),
                "invalid_field",
            ),
            (
                serde_json::json!([{"hostname":"j1","username":"j","auth":"interactive","password":"x"}]),
                "ambiguous_credentials",
            ),
            (
                serde_json::json!([{"hostname":"j1","username":"j","password":"x","term":"vt100"}]),
                "invalid_field",
            ),
            (
                serde_json::json!([{"hostname":"j1","username":"j","password":"x","jump":[]}]),
                "invalid_field",
            ),
            (
                serde_json::json!([{"hostname":"j1","username":"j","password":"x","host_key":"nope"}]),
                "invalid_field",
            ),
        ] {
            let e = err(bad.clone());
            assert_eq!(e.code(), code, "{bad}");
        }
        let e = err(
            serde_json::json!([hop("j1", 22), {"hostname":"j2","username":"j","password":"x","port":"x"}]),
        );
        assert_eq!(e.hop, Some(2));
        assert!(
            e.message.starts_with("jump host 2: field `port`"),
            "{}",
            e.message
        );
        // A form body cannot carry a list.
        assert_eq!(
            code(form("hostname=h&username=u&password=p&jump=j1")),
            "invalid_field"
        );
        // A hop's secret is never echoed either.
        let e = err(
            serde_json::json!([{"hostname":"j1","username":"j","password":"SECRET-1","SECRET-2":"x"}]),
        );
        assert!(!e.message.contains("SECRET"), "{}", e.message);
    }

    #[test]
    fn errors_never_echo_secrets() {
        for body in [
            r#"{"hostname":"h","username":"u","auth":"interactive","password":"SECRET-1","private_key":"SECRET-2"}"#,
            r#"{"hostname":"h","username":"u","password":"SECRET-1","passphrase":"SECRET-2"}"#,
            r#"{"hostname":"h","username":"u","password":"SECRET-1","port":"SECRET-2"}"#,
            r#"{"hostname":"h","username":"u","password":"SECRET-1","SECRET-2":"x"}"#,
        ] {
            let err = json(body).unwrap_err();
            assert!(!err.message.contains("SECRET"), "{}", err.message);
        }
    }
}
