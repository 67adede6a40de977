//! `Secret<T>`: a credential the compiler keeps out of logs and JSON.
//!
//! `Debug` prints `[redacted]`, there is no `Display` and no `Serialize`, and the value is
//! zeroized when dropped. Reading it takes an explicit `expose()`, which is easy to audit.

use std::fmt;

use zeroize::Zeroize;

/// A value that must never be printed, serialized or left in freed memory.
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret itself; call sites are the audit trail of who reads credentials.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Undoes the escapes of a JSON string literal (`"…"`, as serde_json's `RawValue` holds
/// it) into a `String` allocated once at its final size: a credential parsed this way leaves
/// no partial copy in a grown and freed buffer, as serde_json's own unescaping does (every
/// PEM key has `\n` escapes). `None` for what is not a string literal; the partial result
/// is wiped then.
pub fn unescape_json_string(literal: &str) -> Option<String> {
    let inner = literal.strip_prefix('"')?.strip_suffix('"')?;
    // Escapes only shrink: `inner.len()` bytes always suffice.
    let mut out = zeroize::Zeroizing::new(String::with_capacity(inner.len()));
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        // JSON allows neither a bare quote nor a raw control character inside a string.
        if c == '"' || u32::from(c) < 0x20 {
            return None;
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let unescaped = match chars.next()? {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let high = hex4(&mut chars)?;
                if (0xd800..0xdc00).contains(&high) {
                    // A surrogate pair, `\ud83d\ude00`: the low half must follow.
                    let (Some('\\'), Some('u')) = (chars.next(), chars.next()) else {
                        return None;
                    };
                    let low = hex4(&mut chars)?;
                    if !(0xdc00..0xe000).contains(&low) {
                        return None;
                    }
                    char::from_u32(0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00))?
                } else {
                    char::from_u32(high)?
                }
            }
            _ => return None,
        };
        out.push(unescaped);
    }
    // Moves the string out (no copy), leaving an empty one for `Zeroizing` to drop.
    Some(std::mem::take(&mut *out))
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    let mut value = 0;
    for _ in 0..4 {
        value = value * 16 + chars.next()?.to_digit(16)?;
    }
    Some(value)
}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let secret = Secret::new(String::from("hunter2"));
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&secret)), "Some([redacted])");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn json_strings_unescape_like_serde_json() {
        for text in [
            "",
            "plain",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END-----\n",
            "quote \" backslash \\ slash / tab \t cr \r ff \u{c} bs \u{8}",
            "é ü 日本 😀 \u{1} del \u{7f}",
        ] {
            let literal = serde_json::to_string(text).unwrap();
            assert_eq!(
                unescape_json_string(&literal).as_deref(),
                Some(text),
                "{literal}"
            );
        }
        for (literal, text) in [
            (r#""\u00e9\u65E5\ud83d\ude00""#, "é日😀"),
            (r#""a\/b""#, "a/b"),
        ] {
            assert_eq!(unescape_json_string(literal).as_deref(), Some(text));
            let parsed: String = serde_json::from_str(literal).unwrap();
            assert_eq!(parsed, text);
        }
        for bad in [
            "plain",
            r#""unterminated"#,
            r#""bad \x escape""#,
            r#""\u12""#,
            r#""\ud83d alone""#,
            r#""\ude00""#,
            "\"raw\ncontrol\"",
            r#""in"side""#,
        ] {
            assert_eq!(unescape_json_string(bad), None, "{bad}");
        }
    }
}
