//! Webhook bodies: `json` for programs (the event, its delivery id and time, the session's
//! status object as `GET /sessions/<id>` gives it) and `slack` (`{"text": "…"}`, one line a
//! person reads in a channel). Pure: the session object is read, never trusted to be
//! well-formed; a missing field shows as `?`, never as a panic.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use crate::config::WebhookFormat;

/// The JSON body; field order is the documented one.
#[derive(Serialize)]
struct JsonBody<'a> {
    event: &'a str,
    delivery: String,
    timestamp: String,
    session: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
}

#[derive(Serialize)]
struct SlackBody {
    text: String,
}

/// The body of one delivery. `url` is sent with `created` only: later events go to people
/// after the link was claimed or died, and repeating a one-time credential helps no one.
pub fn body(
    format: WebhookFormat,
    event: &str,
    delivery: uuid::Uuid,
    at: SystemTime,
    session: &Value,
    url: Option<&str>,
) -> Vec<u8> {
    let url = url.filter(|_| event == "created");
    let written = match format {
        WebhookFormat::Json => serde_json::to_vec(&JsonBody {
            event,
            delivery: delivery.to_string(),
            timestamp: humantime::format_rfc3339_seconds(at).to_string(),
            session,
            url,
        }),
        WebhookFormat::Slack => serde_json::to_vec(&SlackBody {
            text: slack_text(event, session, url),
        }),
    };
    // Strings and an already-parsed `Value` always serialize.
    written.expect("a webhook body serializes")
}

/// One readable line: what happened to which session, with the link on `created`.
pub fn slack_text(event: &str, session: &Value, url: Option<&str>) -> String {
    let field = |name: &str| match session.get(name) {
        Some(Value::String(s)) => Some(s.as_str()),
        _ => None,
    };
    // Backticks keep a user name from turning into markup; one inside would end the span.
    let target = field("target").unwrap_or("?").replace('`', "'");
    // The first block of the id tells sessions apart in a channel; the full id is not
    // needed there (it is in the JSON format and the status API).
    let short = field("id").and_then(|id| id.get(..8)).unwrap_or("?");
    let who = format!("SSH session `{target}` ({short})");
    let text = match event {
        "created" => {
            let link = url.unwrap_or("(no link)");
            let until = field("expires_at")
                .map(|t| format!(", open it before {t}"))
                .unwrap_or_default();
            let token = field("token")
                .map(|t| format!(" (token {t})"))
                .unwrap_or_default();
            format!("{who} is waiting{token}: {link}{until}")
        }
        "opened" => format!("{who} opened from {}", field("client").unwrap_or("?")),
        "ready" => format!("{who} is live"),
        "detached" => format!("{who} detached: its page went away, it can resume"),
        "resumed" => format!("{who} resumed from {}", field("client").unwrap_or("?")),
        "ended" => format!("{who} ended: {}", outcome(session)),
        "expired" => format!("{who} expired: nobody opened the link in time"),
        "revoked" => format!("{who} was revoked through the API"),
        "failed" => match field("end_message") {
            Some(message) => format!("{who} failed: {} ({message})", outcome(session)),
            None => format!("{who} failed: {}", outcome(session)),
        },
        other => format!("{who}: {other}"),
    };
    slack_escape(&text)
}

/// How the session ended, as `alfresco-ssh session` prints it: `exited 0`, `signalled
/// KILL`, `handback continue`, or the end reason.
fn outcome(session: &Value) -> String {
    let reason = session
        .get("end_reason")
        .and_then(Value::as_str)
        .unwrap_or("?");
    match reason {
        "exited" => match session.get("exit_status").and_then(Value::as_i64) {
            Some(status) => format!("exited {status}"),
            None => "exited".into(),
        },
        "signalled" => match session.get("exit_signal").and_then(Value::as_str) {
            Some(signal) => format!("signalled {signal}"),
            None => "signalled".into(),
        },
        "handback" => match session.get("handback").and_then(Value::as_str) {
            Some(verdict) => format!("handback {verdict}"),
            None => "handback".into(),
        },
        other => other.to_owned(),
    }
}

/// Slack's three control characters, escaped as its message format asks: a user name such as
/// `<!channel>` stays text and pings no one. Control characters (a newline in an SSH
/// server's error message) become spaces, so the message stays one line.
fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn session() -> Value {
        json!({"id": "0123abcd-aaaa-4bbb-8ccc-dddddddddddd", "state": "ended",
               "target": "ci@build-7:22", "token": "ci", "client": "203.0.113.7",
               "expires_at": "2026-12-03T15:10:00Z", "end_reason": "exited", "exit_status": 7})
    }

    #[test]
    fn json_body_has_the_documented_fields() {
        let id = uuid::Uuid::new_v4();
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_310_000);
        let bytes = body(
            WebhookFormat::Json,
            "created",
            id,
            at,
            &session(),
            Some("https://gw/x"),
        );
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["event"], "created");
        assert_eq!(v["delivery"], id.to_string());
        assert_eq!(v["timestamp"], "2026-12-03T15:00:00Z");
        assert_eq!(v["session"], session());
        assert_eq!(v["url"], "https://gw/x");
        // The link goes with `created` only.
        let v: Value = serde_json::from_slice(&body(
            WebhookFormat::Json,
            "ended",
            id,
            at,
            &session(),
            Some("https://gw/x"),
        ))
        .unwrap();
        assert_eq!(v.get("url"), None);
    }

    #[test]
    fn slack_lines() {
        let s = session();
        assert_eq!(
            slack_text("created", &s, Some("https://gw.example/0123")),
            "SSH session `ci@build-7:22` (0123abcd) is waiting (token ci): \
             https://gw.example/0123, open it before 2026-12-03T15:10:00Z"
        );
        assert_eq!(
            slack_text("ended", &s, None),
            "SSH session `ci@build-7:22` (0123abcd) ended: exited 7"
        );
        assert!(slack_text("opened", &s, None).ends_with("opened from 203.0.113.7"));
        let failed = json!({"id": "x", "end_reason": "auth_failed", "end_message": "no"});
        assert_eq!(
            slack_text("failed", &failed, None),
            "SSH session `?` (?) failed: auth_failed (no)"
        );
        let handback = json!({"end_reason": "handback", "handback": "fail"});
        assert!(slack_text("ended", &handback, None).ends_with("ended: handback fail"));
        // Not an object at all: still a line.
        assert!(slack_text("ready", &json!(null), None).ends_with("is live"));
    }

    #[test]
    fn slack_text_cannot_ping_or_break_markup() {
        let s = json!({"target": "<!channel>`x&y@h:22", "id": "short"});
        assert_eq!(
            slack_text("ready", &s, None),
            "SSH session `&lt;!channel&gt;'x&amp;y@h:22` (?) is live"
        );
        let s = json!({"end_reason": "auth_failed", "end_message": "denied\r\nby\tpolicy"});
        assert!(
            slack_text("failed", &s, None).ends_with("failed: auth_failed (denied  by policy)"),
            "{}",
            slack_text("failed", &s, None)
        );
    }
}
