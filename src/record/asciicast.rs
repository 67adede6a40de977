//! The asciicast v2 format (asciinema's): one JSON header line, then one JSON array per
//! event, `[seconds, code, text]`. This module writes and parses lines and turns byte
//! chunks into text; it does no IO, so the recorder and the replayer share one definition.
//!
//! Spec: <https://docs.asciinema.org/manual/asciicast/v2/>.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only version this module writes and reads.
pub const VERSION: u64 = 2;

/// The first line of a cast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub version: u64,
    pub width: u16,
    pub height: u16,
    /// Unix seconds when the recording started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default)]
    pub env: Env,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Env {
    #[serde(rename = "TERM", default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
}

/// What an event line carries. Codes we do not know (`m` markers, future ones) are kept
/// so a reader can skip them rather than refuse the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Output,
    Input,
    Resize,
    Other(String),
}

impl Kind {
    fn code(&self) -> &str {
        match self {
            Kind::Output => "o",
            Kind::Input => "i",
            Kind::Resize => "r",
            Kind::Other(code) => code,
        }
    }

    fn from_code(code: &str) -> Kind {
        match code {
            "o" => Kind::Output,
            "i" => Kind::Input,
            "r" => Kind::Resize,
            other => Kind::Other(other.to_owned()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the start of the recording.
    pub time: f64,
    pub kind: Kind,
    pub data: String,
}

impl Header {
    /// The header line, without its newline.
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("a header always serializes")
    }
}

impl Event {
    /// The event line, without its newline. Times are kept to the microsecond, which is
    /// what asciinema itself writes; more digits would only grow the file.
    pub fn line(&self) -> String {
        let time = (self.time * 1e6).round() / 1e6;
        serde_json::to_string(&(time, self.kind.code(), &self.data))
            .expect("an event always serializes")
    }

    /// `COLSxROWS`, the data of a resize event.
    pub fn resize_data(cols: u16, rows: u16) -> String {
        format!("{cols}x{rows}")
    }

    /// The size a resize event names, if its data is well formed.
    pub fn resize_size(&self) -> Option<(u16, u16)> {
        let (cols, rows) = self.data.split_once('x')?;
        Some((cols.parse().ok()?, rows.parse().ok()?))
    }
}

/// A whole cast, as read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Cast {
    pub header: Header,
    pub events: Vec<Event>,
}

/// Why a cast could not be read; `line` is 1-based, as an editor shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CastError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for CastError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for CastError {}

/// Parses a whole cast. Blank lines are skipped (asciinema does too); anything else that
/// is not a header or an event is an error naming its line.
pub fn parse(text: &str) -> Result<Cast, CastError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty());
    let error = |line, message: String| CastError { line, message };
    let (n, first) = lines
        .next()
        .ok_or_else(|| error(1, "the file is empty".into()))?;
    let value: Value = serde_json::from_str(first)
        .map_err(|e| error(n, format!("the header is not JSON: {e}")))?;
    match value.get("version").and_then(Value::as_u64) {
        Some(VERSION) => {}
        Some(v) => return Err(error(n, format!("asciicast version {v}; only 2 is read"))),
        None => return Err(error(n, "the header has no version".into())),
    }
    let header: Header =
        serde_json::from_value(value).map_err(|e| error(n, format!("a bad header field: {e}")))?;
    let mut events = Vec::new();
    for (n, line) in lines {
        events.push(parse_event(line).map_err(|m| error(n, m))?);
    }
    Ok(Cast { header, events })
}

fn parse_event(line: &str) -> Result<Event, String> {
    let value: Value =
        serde_json::from_str(line).map_err(|e| format!("an event is not JSON: {e}"))?;
    let shape = "an event must be [seconds, code, text]";
    let Some([time, code, data]) = value.as_array().map(Vec::as_slice) else {
        return Err(shape.into());
    };
    let (Some(time), Some(code), Some(data)) = (time.as_f64(), code.as_str(), data.as_str()) else {
        return Err(shape.into());
    };
    if !time.is_finite() || time < 0.0 {
        return Err(format!("an event time must be 0 or more, not {time}"));
    }
    Ok(Event {
        time,
        kind: Kind::from_code(code),
        data: data.to_owned(),
    })
}

/// Turns a byte stream cut into arbitrary chunks into text: a UTF-8 sequence split across
/// chunks is held back until its end arrives; invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    /// The start of a sequence the last chunk ended in the middle of (at most 3 bytes).
    carry: Vec<u8>,
}

impl Utf8Stream {
    /// The text of `chunk`, plus what was carried over, minus an incomplete tail.
    pub fn push(&mut self, chunk: &[u8]) -> String {
        let joined;
        let mut rest: &[u8] = if self.carry.is_empty() {
            chunk
        } else {
            joined = [std::mem::take(&mut self.carry).as_slice(), chunk].concat();
            &joined
        };
        let mut text = String::with_capacity(rest.len());
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    return text;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    text.push_str(std::str::from_utf8(valid).expect("checked valid"));
                    match e.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        // The input ends inside a sequence that may still complete.
                        None => {
                            self.carry = after.to_vec();
                            return text;
                        }
                    }
                }
            }
        }
    }

    /// At the end of the stream, an incomplete sequence is invalid: U+FFFD, or nothing.
    pub fn finish(&mut self) -> String {
        if std::mem::take(&mut self.carry).is_empty() {
            String::new()
        } else {
            char::REPLACEMENT_CHARACTER.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: VERSION,
            width: 80,
            height: 24,
            timestamp: Some(1_700_000_000),
            title: Some("me@host:22".into()),
            env: Env {
                term: Some("xterm-256color".into()),
            },
        }
    }

    #[test]
    fn header_line() {
        assert_eq!(
            header().line(),
            r#"{"version":2,"width":80,"height":24,"timestamp":1700000000,"title":"me@host:22","env":{"TERM":"xterm-256color"}}"#
        );
    }

    #[test]
    fn event_lines() {
        let event = |time, kind, data: &str| Event {
            time,
            kind,
            data: data.into(),
        };
        assert_eq!(
            event(1.5, Kind::Output, "a\"\u{1b}[0m\r\n").line(),
            r#"[1.5,"o","a\"\u001b[0m\r\n"]"#
        );
        assert_eq!(
            event(0.0000004, Kind::Input, "ls").line(),
            r#"[0.0,"i","ls"]"#
        );
        let resize = event(2.0, Kind::Resize, &Event::resize_data(132, 43));
        assert_eq!(resize.line(), r#"[2.0,"r","132x43"]"#);
        assert_eq!(resize.resize_size(), Some((132, 43)));
    }

    #[test]
    fn round_trip() {
        let text = format!(
            "{}\n[0.25,\"o\",\"hé\"]\n\n[1.0,\"r\",\"100x30\"]\n[1.5,\"m\",\"\"]\n",
            header().line()
        );
        let cast = parse(&text).unwrap();
        assert_eq!(cast.header, header());
        assert_eq!(cast.events.len(), 3);
        assert_eq!(cast.events[0].data, "hé");
        assert_eq!(cast.events[1].kind, Kind::Resize);
        assert_eq!(cast.events[2].kind, Kind::Other("m".into()));
    }

    #[test]
    fn bad_casts_name_the_line() {
        let cases = [
            ("", 1, "empty"),
            ("not json\n", 1, "not JSON"),
            (
                "{\"version\":1,\"width\":80,\"height\":24}\n",
                1,
                "version 1",
            ),
            ("{\"width\":80,\"height\":24}\n", 1, "no version"),
            (
                "{\"version\":2,\"width\":\"80\",\"height\":24}\n",
                1,
                "header",
            ),
            (
                "{\"version\":2,\"width\":80,\"height\":24}\n[0.1,\"o\",\"x\"]\n[1,\"o\"]\n",
                3,
                "[seconds, code, text]",
            ),
            (
                "{\"version\":2,\"width\":80,\"height\":24}\n\n[0.1,\"o\",\"x\"\n",
                3,
                "not JSON",
            ),
            (
                "{\"version\":2,\"width\":80,\"height\":24}\n[-1,\"o\",\"x\"]\n",
                2,
                "0 or more",
            ),
            (
                "{\"version\":2,\"width\":80,\"height\":24}\n[\"1\",\"o\",\"x\"]\n",
                2,
                "[seconds",
            ),
        ];
        for (text, line, needle) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn utf8_split_at_every_point() {
        let text = "a😀b€c";
        let bytes = text.as_bytes();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let mut stream = Utf8Stream::default();
                let mut out = stream.push(&bytes[..i]);
                out += &stream.push(&bytes[i..j]);
                out += &stream.push(&bytes[j..]);
                out += &stream.finish();
                assert_eq!(out, text, "split at {i} and {j}");
            }
        }
    }

    #[test]
    fn utf8_one_byte_at_a_time() {
        let mut stream = Utf8Stream::default();
        let out: String = "😀".bytes().map(|b| stream.push(&[b])).collect();
        assert_eq!(out, "😀");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut stream = Utf8Stream::default();
        assert_eq!(stream.push(b"a\xffb\xc3"), "a\u{fffd}b");
        // The carried lead byte followed by a non-continuation byte is invalid too.
        assert_eq!(stream.push(b"(c"), "\u{fffd}(c");
        assert_eq!(stream.push(b"\xf0\x9f"), "");
        assert_eq!(stream.finish(), "\u{fffd}");
        assert_eq!(stream.finish(), "");
    }
}
