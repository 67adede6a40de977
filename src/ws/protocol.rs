//! The Socket.IO-lite codec: WebSocket frames to `ClientEvent`s and `ServerEvent`s to
//! frames. Pure: no I/O, no session state, so every hostile frame is unit-tested here.
//!
//! Text frames are JSON arrays `[event, data]`; terminal bytes travel in binary frames in
//! both directions. Unknown event names decode to `ClientEvent::Unknown` (answered with a
//! warning, not a dropped session), malformed frames to a `ProtocolError`.

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::ledger::Verdict;
use crate::secret::{self, Secret};
use crate::ssh::{AuthPrompt, ExitInfo, MAX_ANSWER, MAX_PROMPTS};

/// Largest WebSocket frame or message the server reads: a big paste, not a file transfer.
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// Terminal sizes outside this range are a client bug (or an attack on the PTY).
pub const MAX_DIMENSION: u16 = 1000;
pub const DEFAULT_COLS: u16 = 80;
pub const DEFAULT_ROWS: u16 = 24;

/// Event names, as they appear on the wire (and in docs/PROTOCOL.md).
pub mod name {
    pub const START_SESSION: &str = "start-session";
    pub const SSH_INPUT: &str = "ssh-input";
    pub const RESIZE: &str = "resize";
    pub const PAUSE: &str = "pause";
    pub const RESUME: &str = "resume";
    pub const CONNECTION_READY: &str = "connection-ready";
    pub const SSH_OUTPUT: &str = "ssh-output";
    pub const SSH_CLOSED: &str = "ssh-closed";
    pub const SSH_ERROR: &str = "ssh-error";
    pub const WARNING: &str = "warning";
    pub const RESUME_SESSION: &str = "resume-session";
    pub const VIEW_SESSION: &str = "view-session";
    pub const SESSION_RESUMED: &str = "session-resumed";
    pub const TERMINAL_SIZE: &str = "terminal-size";
    pub const HANDBACK: &str = "handback";
    pub const SESSION_TIMER: &str = "session-timer";
    pub const AUTH_PROMPT: &str = "auth-prompt";
    pub const AUTH_RESPONSE: &str = "auth-response";
    pub const ALL: [&str; 18] = [
        AUTH_PROMPT,
        AUTH_RESPONSE,
        HANDBACK,
        SESSION_TIMER,
        PAUSE,
        RESUME,
        START_SESSION,
        RESUME_SESSION,
        VIEW_SESSION,
        SESSION_RESUMED,
        TERMINAL_SIZE,
        SSH_INPUT,
        RESIZE,
        CONNECTION_READY,
        SSH_OUTPUT,
        SSH_CLOSED,
        SSH_ERROR,
        WARNING,
    ];
}

#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent {
    StartSession {
        id: Uuid,
        cols: u16,
        rows: u16,
    },
    /// Keystrokes or paste, from `ssh-input` text or a binary frame.
    Input(Bytes),
    Resize {
        cols: u16,
        rows: u16,
    },
    /// Attach to a live session again after a dropped socket, with its current resume
    /// token and how many output bytes the client has already received.
    ResumeSession {
        token: String,
        offset: u64,
        cols: u16,
        rows: u16,
    },
    /// Watch a live session, read-only, through a share link.
    ViewSession {
        id: Uuid,
    },
    /// Flow control: stop sending output until `Resume`.
    Pause,
    Resume,
    /// The person is done and hands the job its verdict; the session ends.
    Handback(Verdict),
    /// Answers to the open `auth-prompt`.
    AuthResponse(AuthResponse),
    Unknown(String),
}

/// An `auth-response` as it came: its answers, or the note that they exceed the bounds
/// (answered with a warning, the prompt stays open).
#[derive(Debug, PartialEq, Eq)]
pub enum AuthResponse {
    Answers(Answers),
    /// More than `MAX_PROMPTS` answers, or one longer than `MAX_ANSWER` bytes.
    Oversized,
}

/// The person's answers, each a `Secret` from the frame on (unescaped by us, not in
/// serde_json's scratch buffer).
#[derive(Debug)]
pub struct Answers(pub Vec<Secret<String>>);

impl PartialEq for Answers {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| a.expose() == b.expose())
    }
}

impl Eq for Answers {}

/// A frame that is not a valid event. Always answered with `bad_message`.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

pub fn decode_text(text: &str) -> Result<ClientEvent, ProtocolError> {
    // The items stay raw until the event is known: an auth-response's answers are secrets,
    // which must not pass through serde_json's own (unwiped) unescaping.
    let items: Vec<&RawValue> = match serde_json::from_str(text) {
        Ok(items) => items,
        // serde_json's message names only a position and a reason, never the content.
        Err(e) => {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => bad("a text frame must be a JSON array [event, data]"),
                Err(_) => bad(&format!("the frame is not valid JSON: {e}")),
            });
        }
    };
    let (event, data) = match items.as_slice() {
        [event] => (*event, None),
        [event, data] => (*event, Some(*data)),
        _ => return Err(bad("a text frame must be a JSON array [event, data]")),
    };
    let Ok(event) = serde_json::from_str::<String>(event.get()) else {
        return Err(bad("the event name must be a string"));
    };
    if event == name::AUTH_RESPONSE {
        return auth_response(data);
    }
    let data = match data {
        Some(raw) => Some(
            serde_json::from_str::<Value>(raw.get())
                .map_err(|e| bad(&format!("the frame is not valid JSON: {e}")))?,
        ),
        None => None,
    };
    match event.as_str() {
        name::START_SESSION => {
            let data = data.ok_or_else(|| bad("start-session needs {\"id\": …}"))?;
            let id = data
                .get("id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| bad("start-session needs a session id"))?;
            let (cols, rows) = size(&data, true)?;
            Ok(ClientEvent::StartSession { id, cols, rows })
        }
        name::RESUME_SESSION => {
            let data = data.ok_or_else(|| bad("resume-session needs {\"token\", \"offset\"}"))?;
            let token = data
                .get("token")
                .and_then(Value::as_str)
                .filter(|t| is_resume_token(t))
                .ok_or_else(|| bad("resume-session needs the resume token"))?
                .to_owned();
            let offset = data
                .get("offset")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("offset must be a non-negative integer"))?;
            let (cols, rows) = size(&data, true)?;
            Ok(ClientEvent::ResumeSession {
                token,
                offset,
                cols,
                rows,
            })
        }
        name::VIEW_SESSION => {
            let id = data
                .as_ref()
                .and_then(|d| d.get("id"))
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| bad("view-session needs a view link id"))?;
            Ok(ClientEvent::ViewSession { id })
        }
        name::SSH_INPUT => match data {
            Some(Value::String(s)) => Ok(ClientEvent::Input(Bytes::from(s))),
            _ => Err(bad("ssh-input data must be a string")),
        },
        name::RESIZE => {
            let data = data.ok_or_else(|| bad("resize needs {\"cols\", \"rows\"}"))?;
            let (cols, rows) = size(&data, false)?;
            Ok(ClientEvent::Resize { cols, rows })
        }
        name::PAUSE => Ok(ClientEvent::Pause),
        name::RESUME => Ok(ClientEvent::Resume),
        name::HANDBACK => match data
            .as_ref()
            .and_then(Value::as_str)
            .and_then(Verdict::parse)
        {
            Some(verdict) => Ok(ClientEvent::Handback(verdict)),
            None => Err(bad("handback data must be \"continue\" or \"fail\"")),
        },
        _ => Ok(ClientEvent::Unknown(event)),
    }
}

/// `{"answers": ["…", …]}`: every answer a string, unescaped into a `Secret`.
fn auth_response(data: Option<&RawValue>) -> Result<ClientEvent, ProtocolError> {
    let shape = || bad("auth-response needs {\"answers\": [strings]}");
    #[derive(serde::Deserialize)]
    struct Data<'a> {
        #[serde(borrow)]
        answers: Vec<&'a RawValue>,
    }
    let data = data.ok_or_else(shape)?.get();
    // serde would also read a struct from an array (`[["pw"]]`); only an object is one.
    if !data.starts_with('{') {
        return Err(shape());
    }
    let data: Data = serde_json::from_str(data).map_err(|_| shape())?;
    if data.answers.len() > MAX_PROMPTS {
        return Ok(ClientEvent::AuthResponse(AuthResponse::Oversized));
    }
    let mut answers = Vec::with_capacity(data.answers.len());
    for raw in data.answers {
        let answer = Secret::new(secret::unescape_json_string(raw.get()).ok_or_else(shape)?);
        if answer.expose().len() > MAX_ANSWER {
            return Ok(ClientEvent::AuthResponse(AuthResponse::Oversized));
        }
        answers.push(answer);
    }
    Ok(ClientEvent::AuthResponse(AuthResponse::Answers(Answers(
        answers,
    ))))
}

/// Resume tokens are 64 lower-case hex digits (see `registry::new_token`); anything else
/// is refused before it is looked up.
pub fn is_resume_token(token: &str) -> bool {
    token.len() == 64
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Binary frames are raw input bytes.
pub fn decode_binary(bytes: Bytes) -> ClientEvent {
    ClientEvent::Input(bytes)
}

/// Reads `cols` and `rows`; with `defaults`, missing ones take 80×24.
fn size(data: &Value, defaults: bool) -> Result<(u16, u16), ProtocolError> {
    let dim = |key: &str, default: u16| -> Result<u16, ProtocolError> {
        match data.get(key) {
            None | Some(Value::Null) if defaults => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=u64::from(MAX_DIMENSION)).contains(n))
                .map(|n| n as u16)
                .ok_or_else(|| {
                    bad(&format!(
                        "{key} must be an integer from 1 to {MAX_DIMENSION}"
                    ))
                }),
            None => Err(bad(&format!("{key} is required"))),
        }
    };
    if !data.is_object() {
        return Err(bad("event data must be an object"));
    }
    Ok((dim("cols", DEFAULT_COLS)?, dim("rows", DEFAULT_ROWS)?))
}

fn bad(message: &str) -> ProtocolError {
    ProtocolError(message.to_owned())
}

#[derive(Debug)]
pub enum ServerEvent<'a> {
    /// `target` is `user@host:port`, for the page's status line.
    /// `resume_token` is present when the session can be resumed; `read_only` for viewers.
    ConnectionReady {
        cols: u16,
        rows: u16,
        target: &'a str,
        resume_token: Option<&'a str>,
        read_only: bool,
        /// The page offers to hand a verdict back (never to viewers).
        handback: bool,
        /// Seconds to the session's cap; `None`: no cap.
        ends_in: Option<u64>,
    },
    /// The cap moved (an extend): seconds from now.
    SessionTimer {
        ends_in: Option<u64>,
    },
    /// Ended by the gateway on someone's word: `revoked` through the API, or `handback`
    /// from the page (with its verdict).
    EndedBy {
        reason: &'a str,
        handback: Option<Verdict>,
    },
    /// A resume was accepted: output follows from byte `offset`; `truncated` when the
    /// buffer no longer held everything the client missed.
    SessionResumed {
        cols: u16,
        rows: u16,
        target: &'a str,
        resume_token: &'a str,
        offset: u64,
        truncated: bool,
        /// As in `connection-ready`: a resumed page learns (again) what it may show.
        handback: bool,
        ends_in: Option<u64>,
        /// The shell is not ready yet: the session is still logging in (an open prompt
        /// follows, if there is one).
        authenticating: bool,
    },
    /// The session's terminal size changed (sent to viewers, whose page follows it).
    TerminalSize {
        cols: u16,
        rows: u16,
    },
    /// The session ended without the remote side ending it (no one resumed it in time).
    Abandoned,
    Output(Bytes),
    Closed(&'a ExitInfo),
    Error {
        code: &'a str,
        message: &'a str,
        /// The jump host the error happened at (1 = the first); sent only when set.
        hop: Option<u8>,
    },
    Warning {
        code: &'a str,
        message: &'a str,
    },
    /// The server (or the gateway, for a password-only server) asks the person. The first
    /// prompt of a resumable session carries its resume token, so that a page that loses
    /// its socket at the prompt can come back to it.
    AuthPrompt {
        prompt: &'a AuthPrompt,
        resume_token: Option<&'a str>,
    },
}

impl ServerEvent<'_> {
    pub fn encode(&self) -> Message {
        let event = |name: &str, data: Value| Message::text(json!([name, data]).to_string());
        match self {
            ServerEvent::Output(bytes) => Message::Binary(bytes.clone()),
            ServerEvent::ConnectionReady {
                cols,
                rows,
                target,
                resume_token,
                read_only,
                handback,
                ends_in,
            } => {
                let mut data = json!({"cols": cols, "rows": rows, "target": target,
                                      "handback": handback, "ends_in": ends_in});
                if let Some(token) = resume_token {
                    data["resume_token"] = json!(token);
                }
                if *read_only {
                    data["read_only"] = json!(true);
                }
                event(name::CONNECTION_READY, data)
            }
            ServerEvent::SessionTimer { ends_in } => {
                event(name::SESSION_TIMER, json!({"ends_in": ends_in}))
            }
            ServerEvent::EndedBy { reason, handback } => {
                let mut data = json!({"exit_status": null, "exit_signal": null, "reason": reason});
                if let Some(verdict) = handback {
                    data["handback"] = json!(verdict.code());
                }
                event(name::SSH_CLOSED, data)
            }
            ServerEvent::SessionResumed {
                cols,
                rows,
                target,
                resume_token,
                offset,
                truncated,
                handback,
                ends_in,
                authenticating,
            } => {
                let mut data = json!({"cols": cols, "rows": rows, "target": target,
                       "resume_token": resume_token, "offset": offset, "truncated": truncated,
                       "handback": handback, "ends_in": ends_in});
                if *authenticating {
                    data["authenticating"] = true.into();
                }
                event(name::SESSION_RESUMED, data)
            }
            ServerEvent::TerminalSize { cols, rows } => {
                event(name::TERMINAL_SIZE, json!({"cols": cols, "rows": rows}))
            }
            ServerEvent::Abandoned => event(
                name::SSH_CLOSED,
                json!({"exit_status": null, "exit_signal": null, "reason": "abandoned"}),
            ),
            ServerEvent::Closed(info) => event(
                name::SSH_CLOSED,
                json!({"exit_status": info.exit_status, "exit_signal": info.exit_signal, "reason": info.reason()}),
            ),
            ServerEvent::Error { code, message, hop } => {
                let mut data = json!({"code": code, "message": message});
                if let Some(hop) = hop {
                    data["hop"] = json!(hop);
                }
                event(name::SSH_ERROR, data)
            }
            ServerEvent::Warning { code, message } => {
                event(name::WARNING, json!({"code": code, "message": message}))
            }
            ServerEvent::AuthPrompt {
                prompt,
                resume_token,
            } => {
                let prompts: Vec<Value> = prompt
                    .prompts
                    .iter()
                    .map(|p| json!({"text": p.text, "echo": p.echo}))
                    .collect();
                let mut data = json!({"target": prompt.target, "name": prompt.name,
                                      "instruction": prompt.instruction, "prompts": prompts});
                if let Some(hop) = prompt.hop {
                    data["hop"] = hop.into();
                }
                if let Some(token) = resume_token {
                    data["resume_token"] = (*token).into();
                }
                event(name::AUTH_PROMPT, data)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "5b0e6f1c-9c1f-4a57-b2a2-3f1d2e4c5a6b";

    #[test]
    fn start_session() {
        let ev = decode_text(&format!(
            r#"["start-session",{{"id":"{ID}","cols":120,"rows":40}}]"#
        ))
        .unwrap();
        assert_eq!(
            ev,
            ClientEvent::StartSession {
                id: ID.parse().unwrap(),
                cols: 120,
                rows: 40
            }
        );
        let ev = decode_text(&format!(r#"["start-session",{{"id":"{ID}"}}]"#)).unwrap();
        assert_eq!(
            ev,
            ClientEvent::StartSession {
                id: ID.parse().unwrap(),
                cols: 80,
                rows: 24
            }
        );
    }

    #[test]
    fn input_and_resize() {
        assert_eq!(
            decode_text(r#"["ssh-input","ls\r"]"#).unwrap(),
            ClientEvent::Input(Bytes::from_static(b"ls\r"))
        );
        assert_eq!(
            decode_text(r#"["ssh-input","é€😀"]"#).unwrap(),
            ClientEvent::Input(Bytes::from("é€😀"))
        );
        assert_eq!(
            decode_text(r#"["resize",{"cols":1,"rows":1000}]"#).unwrap(),
            ClientEvent::Resize {
                cols: 1,
                rows: 1000
            }
        );
        assert_eq!(
            decode_binary(Bytes::from_static(b"\x03")),
            ClientEvent::Input(Bytes::from_static(b"\x03"))
        );
    }

    #[test]
    fn resume_and_view() {
        let token = "0123456789abcdef".repeat(4);
        assert_eq!(
            decode_text(&format!(
                r#"["resume-session",{{"token":"{token}","offset":12345,"cols":100,"rows":30}}]"#
            ))
            .unwrap(),
            ClientEvent::ResumeSession {
                token: token.clone(),
                offset: 12345,
                cols: 100,
                rows: 30
            }
        );
        assert_eq!(
            decode_text(&format!(r#"["view-session",{{"id":"{ID}"}}]"#)).unwrap(),
            ClientEvent::ViewSession {
                id: ID.parse().unwrap()
            }
        );
        for text in [
            r#"["resume-session"]"#.to_owned(),
            format!(r#"["resume-session",{{"token":"{token}"}}]"#),
            format!(r#"["resume-session",{{"token":"{token}","offset":-1}}]"#),
            format!(r#"["resume-session",{{"token":"{token}","offset":"5"}}]"#),
            format!(
                r#"["resume-session",{{"token":"{}","offset":0}}]"#,
                token.to_uppercase()
            ),
            r#"["resume-session",{"token":"short","offset":0}]"#.to_owned(),
            format!(r#"["resume-session",{{"token":"{token}","offset":0,"cols":0}}]"#),
            r#"["view-session"]"#.to_owned(),
            r#"["view-session",{"id":"x"}]"#.to_owned(),
        ] {
            assert!(decode_text(&text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn flow_control() {
        assert_eq!(decode_text(r#"["pause"]"#).unwrap(), ClientEvent::Pause);
        assert_eq!(
            decode_text(r#"["resume",null]"#).unwrap(),
            ClientEvent::Resume
        );
    }

    #[test]
    fn unknown_events_are_values() {
        assert_eq!(
            decode_text(r#"["ping"]"#).unwrap(),
            ClientEvent::Unknown("ping".into())
        );
        assert_eq!(
            decode_text(r#"["x",{"a":1}]"#).unwrap(),
            ClientEvent::Unknown("x".into())
        );
    }

    #[test]
    fn auth_response() {
        let answers = |event: ClientEvent| match event {
            ClientEvent::AuthResponse(AuthResponse::Answers(Answers(a))) => {
                a.iter().map(|s| s.expose().clone()).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            answers(decode_text(r#"["auth-response",{"answers":["hunter2","12 34"]}]"#).unwrap()),
            ["hunter2", "12 34"]
        );
        // Escapes are undone by us, surrogate pairs included.
        assert_eq!(
            answers(
                decode_text(r#"["auth-response",{"answers":["a\"b\\c\u00e9\ud83d\ude00"]}]"#)
                    .unwrap()
            ),
            ["a\"b\\cé😀"]
        );
        assert_eq!(
            answers(decode_text(r#"["auth-response",{"answers":[]}]"#).unwrap()),
            Vec::<String>::new()
        );
        // Exactly at the bounds is fine; past them is `Oversized`, not a broken session.
        let longest = "x".repeat(MAX_ANSWER);
        let at_bound = format!(r#"["auth-response",{{"answers":["{longest}"]}}]"#);
        assert_eq!(answers(decode_text(&at_bound).unwrap()).len(), 1);
        let too_long = format!(r#"["auth-response",{{"answers":["{longest}x"]}}]"#);
        let many = format!(
            r#"["auth-response",{{"answers":[{}]}}]"#,
            [r#""1""#; MAX_PROMPTS + 1].join(",")
        );
        for text in [too_long, many] {
            assert_eq!(
                decode_text(&text).unwrap(),
                ClientEvent::AuthResponse(AuthResponse::Oversized)
            );
        }
        for text in [
            r#"["auth-response"]"#,
            r#"["auth-response",null]"#,
            r#"["auth-response",["a"]]"#,
            r#"["auth-response",[["a"]]]"#,
            r#"["auth-response",{}]"#,
            r#"["auth-response",{"answers":"a"}]"#,
            r#"["auth-response",{"answers":[1]}]"#,
            r#"["auth-response",{"answers":[null]}]"#,
            r#"["auth-response",{"answers":["\ud800"]}]"#,
            r#"["auth-response",{"answers":["a"]},3]"#,
        ] {
            assert!(decode_text(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn auth_prompt_encodes_texts_as_data() {
        let mut prompt = AuthPrompt {
            target: "u@h:22".into(),
            hop: None,
            name: "<b>n</b>".into(),
            instruction: "say \"hi\"".into(),
            prompts: vec![
                crate::ssh::PromptText {
                    text: "Password: ".into(),
                    echo: false,
                },
                crate::ssh::PromptText {
                    text: "Code: ".into(),
                    echo: true,
                },
            ],
        };
        let text = ServerEvent::AuthPrompt {
            prompt: &prompt,
            resume_token: None,
        }
        .encode()
        .into_text()
        .unwrap()
        .to_string();
        assert_eq!(
            text,
            r#"["auth-prompt",{"instruction":"say \"hi\"","name":"<b>n</b>","prompts":[{"echo":false,"text":"Password: "},{"echo":true,"text":"Code: "}],"target":"u@h:22"}]"#
        );
        // A jump host that asks is named by its number, as in errors; the first prompt of a
        // resumable session brings its token.
        prompt.hop = Some(1);
        let text = ServerEvent::AuthPrompt {
            prompt: &prompt,
            resume_token: Some("t0k"),
        }
        .encode()
        .into_text()
        .unwrap();
        assert!(text.starts_with(r#"["auth-prompt",{"hop":1,"#), "{text}");
        assert!(text.contains(r#""resume_token":"t0k""#), "{text}");
    }

    #[test]
    fn garbage_is_an_error() {
        for text in [
            "",
            "not json",
            "{}",
            "[]",
            "[1,2]",
            r#"["a","b","c"]"#,
            r#"{"event":"ssh-input"}"#,
            r#"["ssh-input"]"#,
            r#"["ssh-input",5]"#,
            r#"["resize"]"#,
            r#"["resize",{"cols":0,"rows":10}]"#,
            r#"["resize",{"cols":10,"rows":1001}]"#,
            r#"["resize",{"cols":-1,"rows":10}]"#,
            r#"["resize",{"cols":1.5,"rows":10}]"#,
            r#"["resize",{"cols":"80","rows":10}]"#,
            r#"["resize",{"cols":80}]"#,
            r#"["resize",[80,24]]"#,
            r#"["start-session"]"#,
            r#"["start-session",{"id":"nope"}]"#,
            r#"["start-session",{"id":5}]"#,
            r#"["start-session","5b0e6f1c-9c1f-4a57-b2a2-3f1d2e4c5a6b"]"#,
            "[\"ssh-input\",\"\\ud800\"]",
        ] {
            assert!(decode_text(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(decode_text(&text).is_err());
    }

    #[test]
    fn encode() {
        let text = |m: Message| m.into_text().unwrap().to_string();
        assert_eq!(
            text(
                ServerEvent::ConnectionReady {
                    cols: 80,
                    rows: 24,
                    target: "u@h:22",
                    resume_token: None,
                    read_only: false,
                    handback: true,
                    ends_in: Some(3600),
                }
                .encode()
            ),
            r#"["connection-ready",{"cols":80,"ends_in":3600,"handback":true,"rows":24,"target":"u@h:22"}]"#
        );
        let token = "ab".repeat(32);
        assert_eq!(
            text(
                ServerEvent::ConnectionReady {
                    cols: 80,
                    rows: 24,
                    target: "u@h:22",
                    resume_token: Some(&token),
                    read_only: true,
                    handback: false,
                    ends_in: None,
                }
                .encode()
            ),
            format!(
                r#"["connection-ready",{{"cols":80,"ends_in":null,"handback":false,"read_only":true,"resume_token":"{token}","rows":24,"target":"u@h:22"}}]"#
            )
        );
        assert_eq!(
            text(ServerEvent::SessionTimer { ends_in: Some(299) }.encode()),
            r#"["session-timer",{"ends_in":299}]"#
        );
        assert_eq!(
            text(
                ServerEvent::EndedBy {
                    reason: "revoked",
                    handback: None
                }
                .encode()
            ),
            r#"["ssh-closed",{"exit_signal":null,"exit_status":null,"reason":"revoked"}]"#
        );
        assert_eq!(
            text(
                ServerEvent::EndedBy {
                    reason: "handback",
                    handback: Some(Verdict::Fail)
                }
                .encode()
            ),
            r#"["ssh-closed",{"exit_signal":null,"exit_status":null,"handback":"fail","reason":"handback"}]"#
        );
        assert_eq!(
            decode_text(r#"["handback","continue"]"#),
            Ok(ClientEvent::Handback(Verdict::Continue))
        );
        for bad in [
            r#"["handback"]"#,
            r#"["handback","maybe"]"#,
            r#"["handback",{"verdict":"fail"}]"#,
        ] {
            assert!(decode_text(bad).is_err(), "{bad}");
        }
        assert_eq!(
            text(ServerEvent::Abandoned.encode()),
            r#"["ssh-closed",{"exit_signal":null,"exit_status":null,"reason":"abandoned"}]"#
        );
        let info = ExitInfo {
            exit_status: Some(3),
            exit_signal: None,
        };
        assert_eq!(
            text(ServerEvent::Closed(&info).encode()),
            r#"["ssh-closed",{"exit_signal":null,"exit_status":3,"reason":"exited"}]"#
        );
        let msg = ServerEvent::Error {
            code: "auth_failed",
            message: "authentication \"failed\"",
            hop: None,
        }
        .encode();
        assert_eq!(
            text(msg),
            r#"["ssh-error",{"code":"auth_failed","message":"authentication \"failed\""}]"#
        );
        let msg = ServerEvent::Error {
            code: "host_key_mismatch",
            message: "m",
            hop: Some(2),
        }
        .encode();
        assert_eq!(
            text(msg),
            r#"["ssh-error",{"code":"host_key_mismatch","hop":2,"message":"m"}]"#
        );
        assert!(
            matches!(ServerEvent::Output(Bytes::from_static(b"\xff\x00")).encode(), Message::Binary(b) if &b[..] == b"\xff\x00")
        );
    }
}
