//! The session's `encoding`: where a remote side that does not speak UTF-8 is converted,
//! once, so that everything past this point (page, resume ring, viewers, recording, byte
//! counters) sees UTF-8 only.
//!
//! It sits in the session task, on the bridge's output events and the client's input,
//! rather than on the bridge thread, which stays about libssh2 alone. Either place keeps
//! resume offsets right as long as the ring is filled with the decoded bytes: offsets count
//! what the page received, so ring, replay and page count the same bytes. Both directions
//! are streams: a character split across reads (or input frames) waits in its decoder for
//! the rest, never turned into two replacement characters. UTF-8 costs nothing: the bytes
//! pass through as they are, no decoder is made.

use bytes::Bytes;
use encoding_rs::{CoderResult, Decoder, Encoder, EncoderResult, UTF_8};

use crate::request::RemoteEncoding;

/// Typed in place of a character the remote encoding cannot hold. Not the crate's own
/// replacement, HTML's `&#NNNN;`: in a shell `&` and `;` are operators, and a pasted emoji
/// must not turn a command into a background job. `?` is what terminals and iconv type.
const UNMAPPABLE: u8 = b'?';

/// Converts one session's traffic; made per session, since both directions keep state.
pub(super) struct Charset(Option<Box<Codec>>);

struct Codec {
    /// The remote's bytes to UTF-8, for the page.
    output: Decoder,
    /// The page's bytes to text: UTF-8, but a frame may end inside a character.
    typed: Decoder,
    /// That text to the remote's bytes. Stateful for ISO-2022-JP.
    input: Encoder,
    /// Scratch buffers, kept so a flood does not allocate its worst case per chunk.
    text: String,
    bytes: Vec<u8>,
}

impl Charset {
    pub(super) fn new(encoding: RemoteEncoding) -> Charset {
        match encoding {
            RemoteEncoding::Utf8 => Charset(None),
            // No BOM sniffing: a terminal stream is not a document, and a BOM-like start
            // must not switch the session to UTF-8 or UTF-16.
            RemoteEncoding::Other(encoding) => Charset(Some(Box::new(Codec {
                output: encoding.new_decoder_without_bom_handling(),
                typed: UTF_8.new_decoder_without_bom_handling(),
                input: encoding.new_encoder(),
                text: String::new(),
                bytes: Vec::new(),
            }))),
        }
    }

    /// The page's UTF-8 for output the remote sent; empty when all of it is the start of a
    /// character whose rest has not arrived. Invalid bytes become U+FFFD.
    pub(super) fn decode(&mut self, raw: Bytes) -> Bytes {
        let Some(codec) = self.0.as_mut() else {
            return raw;
        };
        decode_into(&mut codec.output, &raw, &mut codec.text);
        Bytes::copy_from_slice(codec.text.as_bytes())
    }

    /// The remote's bytes for what the page typed (UTF-8); empty when the frame ended
    /// inside a character. Characters the encoding cannot hold are sent as `?`.
    pub(super) fn encode(&mut self, typed: Bytes) -> Bytes {
        let Some(codec) = self.0.as_mut() else {
            return typed;
        };
        decode_into(&mut codec.typed, &typed, &mut codec.text);
        codec.bytes.clear();
        let mut rest = codec.text.as_str();
        // Each turn consumes input (an unmappable character included) or makes room, so
        // the loop ends within one turn per character.
        loop {
            let room = codec
                .input
                .max_buffer_length_from_utf8_without_replacement(rest.len())
                .unwrap_or(rest.len());
            codec.bytes.reserve(room);
            let (result, read) = codec.input.encode_from_utf8_to_vec_without_replacement(
                rest,
                &mut codec.bytes,
                false,
            );
            rest = rest.get(read..).unwrap_or_default();
            match result {
                EncoderResult::InputEmpty => break,
                EncoderResult::OutputFull => {}
                // The ISO-2022-JP encoder has switched back to ASCII when it says this, so
                // an ASCII byte is right in every encoding's state.
                EncoderResult::Unmappable(_) => codec.bytes.push(UNMAPPABLE),
            }
        }
        Bytes::copy_from_slice(&codec.bytes)
    }
}

/// Decodes `src` into `text` (cleared first), keeping an incomplete character in `decoder`.
fn decode_into(decoder: &mut Decoder, src: &[u8], text: &mut String) {
    text.clear();
    let mut rest = src;
    // The room reserved is the decoder's own worst case, so one turn is the rule; each
    // turn consumes input or makes room, so the loop ends.
    loop {
        let room = decoder
            .max_utf8_buffer_length(rest.len())
            .unwrap_or(rest.len());
        text.reserve(room);
        let (result, read, _replaced) = decoder.decode_to_string(rest, text, false);
        rest = rest.get(read..).unwrap_or_default();
        if result == CoderResult::InputEmpty {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charset(label: &str) -> Charset {
        Charset::new(RemoteEncoding::from_label(label).expect("a known label"))
    }

    fn decode_all(charset: &mut Charset, chunks: &[&[u8]]) -> Vec<String> {
        chunks
            .iter()
            .map(|c| String::from_utf8(charset.decode(Bytes::copy_from_slice(c)).to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn utf8_passes_through_untouched() {
        let mut utf8 = Charset::new(RemoteEncoding::Utf8);
        let raw = Bytes::from_static(b"\xe4\xb8 invalid \xff");
        let out = utf8.decode(raw.clone());
        assert_eq!(out.as_ptr(), raw.as_ptr(), "the same bytes, not a copy");
        let typed = Bytes::from_static("日本".as_bytes());
        assert_eq!(utf8.encode(typed.clone()).as_ptr(), typed.as_ptr());
    }

    #[test]
    fn output_is_decoded_as_a_stream() {
        // 中文 in GBK is d6 d0 ce c4; split inside each character.
        let mut gbk = charset("gbk");
        let out = decode_all(&mut gbk, &[b"a\xd6", b"\xd0\xce", b"", b"\xc4b"]);
        assert_eq!(out, ["a", "中", "", "文b"]);
        // Shift_JIS 日本 is 93 fa 96 7b.
        let mut sjis = charset("shift_jis");
        assert_eq!(
            decode_all(&mut sjis, &[b"\x93", b"\xfa\x96\x7b"]),
            ["", "日本"]
        );
        // Invalid bytes: U+FFFD as the WHATWG decoder defines, the stream goes on.
        let mut gbk = charset("gbk");
        assert_eq!(decode_all(&mut gbk, &[b"\xff", b"ok"]), ["\u{fffd}", "ok"]);
        // Single-byte encodings have nothing to carry over.
        assert_eq!(
            decode_all(&mut charset("koi8-r"), &[b"\xf0\xd2\xc9"]),
            ["При"]
        );
        assert_eq!(decode_all(&mut charset("iso-8859-15"), &[b"\xa4"]), ["€"]);
    }

    #[test]
    fn input_is_encoded_as_a_stream() {
        let mut gbk = charset("gbk");
        let typed = "中文".as_bytes();
        // A UTF-8 character split across two frames arrives whole.
        let (head, tail) = typed.split_at(2);
        assert_eq!(gbk.encode(Bytes::copy_from_slice(head)), &b""[..]);
        assert_eq!(
            gbk.encode(Bytes::copy_from_slice(tail)),
            &b"\xd6\xd0\xce\xc4"[..]
        );
        // GBK has no emoji (GB18030's four-byte forms): `?`, not `&#128512;`.
        assert_eq!(gbk.encode(Bytes::from("a😀b")), &b"a?b"[..]);
        // The page's bytes that are not UTF-8 are U+FFFD, which GBK cannot hold either.
        assert_eq!(gbk.encode(Bytes::from_static(b"\xffx")), &b"?x"[..]);
        assert_eq!(
            charset("windows-1251").encode(Bytes::from("Привет")),
            &b"\xcf\xf0\xe8\xe2\xe5\xf2"[..]
        );
        assert_eq!(
            charset("latin1").encode(Bytes::from("é€")),
            &b"\xe9\x80"[..]
        );
    }

    #[test]
    fn a_stateful_encoder_stays_in_step() {
        // ISO-2022-JP switches modes with escapes; an unmappable character in the middle of
        // kanji must leave the stream in ASCII before the `?`.
        let mut jis = charset("iso-2022-jp");
        let out = jis.encode(Bytes::from("日😀本x"));
        let mut back = charset("iso-2022-jp");
        assert_eq!(back.decode(out), "日?本x".as_bytes());
    }

    #[test]
    fn a_flood_decodes_whole() {
        let mut gbk = charset("gbk");
        let line = b"\xd6\xd0\xce\xc4 abc\n".repeat(10_000);
        let mut text = Vec::new();
        for chunk in line.chunks(4095) {
            text.extend_from_slice(&gbk.decode(Bytes::copy_from_slice(chunk)));
        }
        assert_eq!(text, "中文 abc\n".repeat(10_000).as_bytes());
    }
}
