//! `POST /create-session` and `GET /healthz`.
//!
//! The body (JSON or form data) is parsed into a checked `SessionRequest` by a pure
//! function, `parse_create`, so every malformed body is unit-tested without a server.
//! Credentials go straight into `Secret`s, unescaped by us rather than in serde_json's
//! scratch buffer; the raw body is wiped after parsing.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{Value, json};
use zeroize::Zeroize;

use super::error::ApiError;
use crate::request::{self, Credentials, SessionRequest, Target};
use crate::secret::{self, Secret};
use crate::ssh;

/// Largest create-session body: a 16 KiB RSA key fits several times over.
pub const MAX_BODY: usize = 64 * 1024;

const FIELDS: [&str; 8] = [
    "hostname",
    "port",
    "username",
    "password",
    "private_key",
    "passphrase",
    "term",
    "host_key",
];

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
enum Raw {
    Text(String),
    Number(Value),
    Other,
}

/// Parses and checks a create-session body, then wipes it.
pub fn parse_create(kind: BodyKind, mut body: Vec<u8>) -> Result<SessionRequest, ApiError> {
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
        } else {
            match serde_json::from_str::<Value>(text).map_err(|_| not_json())? {
                Value::Null => {
                    fields.remove(&key);
                    continue;
                }
                Value::String(s) => Raw::Text(s),
                n @ Value::Number(_) => Raw::Number(n),
                _ => Raw::Other,
            }
        };
        fields.insert(key, raw);
    }
    Ok(fields)
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

fn build(mut fields: HashMap<String, Raw>) -> Result<SessionRequest, ApiError> {
    if fields.keys().any(|k| !FIELDS.contains(&k.as_str())) {
        // The unknown name is not echoed: in a form body, an unencoded `&` inside a password
        // turns the rest of the password into a "field name".
        return Err(ApiError::unknown_field(&FIELDS));
    }
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
    let host_key = text("host_key")?
        .map(|s| ssh::parse_host_key_pin(&s))
        .transpose()
        .map_err(|why| ApiError::invalid_field("host_key", why))?;
    // Secrets go into `Secret` at once, so an early return below still wipes them.
    let password = text("password")?.map(Secret::new);
    let private_key = text("private_key")?.map(Secret::new);
    let passphrase = text("passphrase")?.map(Secret::new);
    let port = port(fields.remove("port"))?;

    let credentials = match (password, private_key) {
        (Some(_), Some(_)) => return Err(ApiError::ambiguous_credentials()),
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
    Ok(SessionRequest {
        target: Target {
            host,
            port,
            username,
        },
        credentials,
        term,
        host_key,
        // Filled in by the caller, which knows the API token.
        creator: String::new(),
    })
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
pub fn created_body(id: &uuid::Uuid, url: &str, expires_at: std::time::SystemTime) -> String {
    json!({"id": id.to_string(), "url": url, "expires_at": humantime::format_rfc3339_seconds(expires_at).to_string()}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> Result<SessionRequest, ApiError> {
        parse_create(BodyKind::Json, body.as_bytes().to_vec())
    }

    fn form(body: &str) -> Result<SessionRequest, ApiError> {
        parse_create(BodyKind::Form, body.as_bytes().to_vec())
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
                r#"{"hostname":"h","username":"u","password":"p","private_key":"k"}"#
            )),
            "ambiguous_credentials"
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

    #[test]
    fn errors_never_echo_secrets() {
        for body in [
            r#"{"hostname":"h","username":"u","password":"SECRET-1","private_key":"SECRET-2"}"#,
            r#"{"hostname":"h","username":"u","password":"SECRET-1","passphrase":"SECRET-2"}"#,
            r#"{"hostname":"h","username":"u","password":"SECRET-1","port":"SECRET-2"}"#,
            r#"{"hostname":"h","username":"u","password":"SECRET-1","SECRET-2":"x"}"#,
        ] {
            let err = json(body).unwrap_err();
            assert!(!err.message.contains("SECRET"), "{}", err.message);
        }
    }
}
