//! The OpenSSH known_hosts format, pure: keys (`type base64`, SHA-256 fingerprints), host
//! fields (plain and hashed `|1|` names, `[host]:port`, wildcards, `!` negation), `@revoked`
//! lines, create-session's `host_key` pins, and the one spelling of a host that names are
//! recorded and looked up by. No files and no decisions: `hostkey` owns those.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::request::HostKeyPin;

/// Key type names are short (`ecdsa-sha2-nistp521`); anything longer is not a key.
const MAX_KIND_LEN: usize = 64;

/// known_hosts writes base64 padded; be lenient about padding when reading it.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A public host key: its type name (as written inside the blob) and the raw blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    pub(super) kind: String,
    pub(super) blob: Vec<u8>,
}

impl HostKey {
    /// Reads the type name from the blob (an SSH string at its start). `None` when the blob
    /// does not start with a plausible one.
    pub fn from_blob(blob: Vec<u8>) -> Option<HostKey> {
        let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
        let name = blob.get(4..4usize.checked_add(len)?)?;
        let plausible = !name.is_empty()
            && name.len() <= MAX_KIND_LEN
            && name.iter().all(|b| b.is_ascii_graphic());
        let kind = std::str::from_utf8(name)
            .ok()
            .filter(|_| plausible)?
            .to_owned();
        Some(HostKey { kind, blob })
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub(super) fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.blob).into()
    }

    /// `SHA256:<base64, no padding>`, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", STANDARD_NO_PAD.encode(self.sha256()))
    }

    /// `type base64`, the key part of a known_hosts line.
    pub(super) fn to_line_part(&self) -> String {
        format!(
            "{} {}",
            self.kind,
            base64::engine::general_purpose::STANDARD.encode(&self.blob)
        )
    }
}

/// Parses a `type base64` pair, checking that the stated type is the one inside the blob.
pub(super) fn parse_key(kind: &str, base64: &str) -> Option<HostKey> {
    let key = HostKey::from_blob(LENIENT.decode(base64).ok()?)?;
    (key.kind == kind).then_some(key)
}

/// Parses create-session's `host_key`: a `SHA256:` fingerprint, or a known_hosts line
/// (`host type base64`; the host part is ignored, since the pin is for this session's
/// target whatever name it was recorded under) or a `.pub` line (`type base64 comment`).
pub fn parse_pin(text: &str) -> Result<HostKeyPin, &'static str> {
    const EXPECTED: &str = "must be a `SHA256:…` fingerprint or a known_hosts line";
    let text = text.trim();
    if let Some(b64) = text.strip_prefix("SHA256:") {
        let digest = STANDARD_NO_PAD.decode(b64).map_err(|_| EXPECTED)?;
        return digest
            .try_into()
            .map(HostKeyPin::Sha256)
            .map_err(|_| EXPECTED);
    }
    if text.contains('\n') || text.starts_with('@') {
        return Err(EXPECTED);
    }
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let key = match fields.as_slice() {
        [kind, b64, ..] if parse_key(kind, b64).is_some() => parse_key(kind, b64),
        [_host, kind, b64, ..] => parse_key(kind, b64),
        _ => None,
    };
    key.map(|k| HostKeyPin::Key(k.blob)).ok_or(EXPECTED)
}

/// The name a known_hosts file uses for host:port: `host`, or `[host]:port` off port 22.
/// The host is first brought to its one spelling (`canonical_host`), so that trust on first
/// use cannot be had again for the same host under another spelling.
pub fn known_hosts_name(host: &str, port: u16) -> String {
    let host = canonical_host(host);
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// One spelling per host: names in lower case without the trailing dot (`LOCALHOST.` is
/// `localhost`: DNS names are case-blind and the dot only says "absolute"); IP addresses in
/// their canonical text, IPv4-mapped ones as the IPv4 address they are (`::ffff:127.0.0.1`
/// is `127.0.0.1`), brackets dropped. A name and its address stay two hosts, as in OpenSSH
/// (which keys by the name typed; its CheckHostIP is off by default): a name may move to
/// another address, and an address may serve several names with different keys.
pub fn canonical_host(host: &str) -> String {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => bare.trim_end_matches('.').to_ascii_lowercase(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Marker {
    None,
    Revoked,
}

/// Which names a known_hosts line is for.
#[derive(Debug, Clone)]
pub(super) enum Hosts {
    /// `|1|salt|hash`: HMAC-SHA1 of the name, keyed with the salt.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// Comma-separated patterns with `*`, `?` and `!` negation.
    Patterns(String),
}

impl Hosts {
    pub(super) fn parse(field: &str) -> Result<Hosts, &'static str> {
        let Some(rest) = field.strip_prefix("|1|") else {
            return Ok(Hosts::Patterns(field.to_ascii_lowercase()));
        };
        let (salt, hash) = rest
            .split_once('|')
            .ok_or("a hashed host name is malformed")?;
        let salt = LENIENT
            .decode(salt)
            .map_err(|_| "a hashed host name is malformed")?;
        let hash = LENIENT
            .decode(hash)
            .map_err(|_| "a hashed host name is malformed")?;
        if hash.len() != 20 {
            return Err("a hashed host name is malformed");
        }
        Ok(Hosts::Hashed { salt, hash })
    }

    pub(super) fn matches(&self, name: &str) -> bool {
        match self {
            Hosts::Hashed { salt, hash } => {
                // Any salt length is a valid HMAC key; verify_slice compares in constant time.
                let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            Hosts::Patterns(patterns) => {
                let name = name.to_ascii_lowercase();
                let mut matched = false;
                for pattern in patterns.split(',') {
                    match pattern.strip_prefix('!') {
                        // A negated match rules the line out, whatever else matches.
                        Some(negated) if glob(negated.as_bytes(), name.as_bytes()) => {
                            return false;
                        }
                        Some(_) => {}
                        None => matched |= glob(pattern.as_bytes(), name.as_bytes()),
                    }
                }
                matched
            }
        }
    }
}

/// OpenSSH's host patterns: `*` any run, `?` any one character, all else literal.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob(rest, &name[i..])),
        Some((&p, rest)) => name
            .split_first()
            .is_some_and(|(&c, tail)| (p == b'?' || p == c) && glob(rest, tail)),
    }
}

/// One known_hosts line.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) marker: Marker,
    pub(super) hosts: Hosts,
    pub(super) key: HostKey,
}

/// Parses a known_hosts line: `Ok(None)` for blanks and comments, `Err(why)` for a line to
/// skip with a warning.
fn parse_line(line: &str) -> Result<Option<Entry>, &'static str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut fields = line.split_ascii_whitespace();
    let mut first = fields.next().unwrap_or_default();
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => return Err("@cert-authority is not supported"),
        m if m.starts_with('@') => return Err("unknown marker"),
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next().ok_or("no host names")?;
    }
    let hosts = Hosts::parse(first)?;
    let (Some(kind), Some(b64)) = (fields.next(), fields.next()) else {
        return Err("a key type and key are expected after the host names");
    };
    let key = parse_key(kind, b64).ok_or("the key is not valid base64 of a key of that type")?;
    Ok(Some(Entry { marker, hosts, key }))
}

/// Parses a whole file, warning about (and skipping) bad lines by number. Bytes that are not
/// UTF-8 only spoil their own line.
pub(super) fn parse_file(text: &str, path: &Path) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => {}
            Err(reason) => tracing::warn!(
                file = %path.display(),
                line = n + 1,
                reason,
                "known_hosts line skipped"
            ),
        }
    }
    entries
}

pub(super) fn kinds_for(entries: &[Entry], name: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    entries
        .iter()
        .filter(|e| e.marker == Marker::None && e.hosts.matches(name))
        .map(|e| e.key.kind.clone())
        .filter(|k| seen.insert(k.clone()))
        .collect()
}

#[cfg(test)]
pub(super) mod samples {
    use super::*;

    // Real keys from ssh-keygen, with their `ssh-keygen -lf` fingerprints.
    pub const A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG8yuQzWDbuazfTvRkAoYIYgFCKS5+4qsuvIf5uaviNG";
    pub const A_FP: &str = "SHA256:XXkgCBclf7u8N2U6LMzRVGjMQyZ5vLfHJVSjjpWoOZc";
    pub const B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPQIm4a4iEKrdIFFg9R99fv4GFObZQ3IT2y8aLCkpC/K";
    pub const E: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBI7deGEgaMM5nrg+KFr5rCjmQ48lDLzYxJS24bmisUTiUC8OILQpYCMIukUJMMkrcyt1gPUOCBgqRzwk1uZdgFw=";
    pub const E_FP: &str = "SHA256:D+4iPGdM/v8fv73fNib7wjS0vv3Hcf2TFY3Dmr0M9S4";
    // `ssh-keygen -H` of "[127.0.0.1]:2222 <A>" and "gw.example.com <A>".
    pub const HASHED: &str = "|1|vIkd7Dshg6hTOQMh4aw2Ukjr18U=|oOFuIGGqjtrSR2MPtLFr4s2hncA= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG8yuQzWDbuazfTvRkAoYIYgFCKS5+4qsuvIf5uaviNG\n\
        |1|oZC11pvO4W9AEyrmT6a3f2m3ea8=|ZbTsNBSZnSt8B+LPdQDx65Qww1Q= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG8yuQzWDbuazfTvRkAoYIYgFCKS5+4qsuvIf5uaviNG\n";

    pub fn key(line: &str) -> HostKey {
        let mut f = line.split_ascii_whitespace();
        parse_key(f.next().unwrap(), f.next().unwrap()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::samples::*;
    use super::*;

    #[test]
    fn fingerprints_match_ssh_keygen() {
        assert_eq!(key(A).fingerprint(), A_FP);
        assert_eq!(key(E).fingerprint(), E_FP);
        assert_eq!(key(E).kind(), "ecdsa-sha2-nistp256");
    }

    #[test]
    fn blobs_must_name_their_type() {
        assert!(HostKey::from_blob(vec![]).is_none());
        assert!(HostKey::from_blob(vec![0, 0, 0, 9, b'a']).is_none());
        assert!(HostKey::from_blob(vec![0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(HostKey::from_blob(vec![0, 0, 0, 0]).is_none());
        assert!(HostKey::from_blob(vec![0, 0, 0, 2, b'a', b'\n']).is_none());
        // The stated type must be the one inside the blob.
        let b64 = A.split(' ').nth(1).unwrap();
        assert!(parse_key("ssh-rsa", b64).is_none());
        assert!(parse_key("ssh-ed25519", "not base64!").is_none());
    }

    #[test]
    fn pins() {
        let a = key(A);
        assert_eq!(parse_pin(A_FP), Ok(HostKeyPin::Sha256(a.sha256())));
        assert_eq!(
            parse_pin(&format!(" {A_FP}\n")),
            Ok(HostKeyPin::Sha256(a.sha256()))
        );
        let blob = HostKeyPin::Key(a.blob.clone());
        assert_eq!(
            parse_pin(A).as_ref(),
            Ok(&blob),
            "a .pub line without comment"
        );
        assert_eq!(parse_pin(&format!("{A} root@host")).as_ref(), Ok(&blob));
        assert_eq!(
            parse_pin(&format!("[10.0.0.5]:2222 {A}")).as_ref(),
            Ok(&blob)
        );
        assert_eq!(
            parse_pin(&format!("other.example {A} comment")).as_ref(),
            Ok(&blob)
        );
        for bad in [
            "",
            "SHA256:",
            "SHA256:XXkgCBclf7u8N2U6LMzRVGjMQyZ5vLfHJVSjjpWoOZc=",
            "SHA256:XXkgCBclf7u8N2U6LMzRVGjMQyZ5vLfHJVSjjpWo",
            "MD5:aa:bb",
            "ssh-ed25519",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIG8yuQzWDbuazfTvRkAoYIYgFCKS5+4qsuvIf5uaviNG",
            "@revoked * ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG8yuQzWDbuazfTvRkAoYIYgFCKS5+4qsuvIf5uaviNG",
            "host ssh-ed25519 AAAA",
        ] {
            assert!(parse_pin(bad).is_err(), "{bad:?}");
        }
        let two_lines = format!("{A}\n{B}");
        assert!(parse_pin(&two_lines).is_err());
    }

    #[test]
    fn one_spelling_per_host() {
        for (spelling, canonical) in [
            ("localhost", "localhost"),
            ("localhost.", "localhost"),
            ("LOCALHOST.", "localhost"),
            ("Gw.Example.COM", "gw.example.com"),
            ("127.0.0.1", "127.0.0.1"),
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::FFFF:7F00:1", "127.0.0.1"),
            ("[::ffff:127.0.0.1]", "127.0.0.1"),
            ("0:0:0:0:0:0:0:1", "::1"),
            ("[::1]", "::1"),
            ("FD00::1", "fd00::1"),
        ] {
            assert_eq!(canonical_host(spelling), canonical, "{spelling}");
        }
        assert_eq!(known_hosts_name("LOCALHOST.", 22), "localhost");
        assert_eq!(
            known_hosts_name("::ffff:127.0.0.1", 2222),
            "[127.0.0.1]:2222"
        );
        assert_eq!(known_hosts_name("::1", 2222), "[::1]:2222");
    }

    #[test]
    fn host_patterns() {
        let m = |patterns: &str, name: &str| Hosts::parse(patterns).unwrap().matches(name);
        assert!(m("gw.example.com", "gw.example.com"));
        assert!(m("GW.example.com", "gw.example.com"));
        assert!(m("a,gw.example.com", "gw.example.com"));
        assert!(!m("gw.example.com", "[gw.example.com]:2222"));
        assert!(m("[gw.example.com]:2222", "[gw.example.com]:2222"));
        assert!(m("*.example.com", "gw.example.com"));
        assert!(m("10.0.0.?", "10.0.0.5"));
        assert!(!m("10.0.0.?", "10.0.0.50"));
        assert!(m("[10.0.0.*]:2222", "[10.0.0.50]:2222"));
        assert!(!m("*.example.com,!gw.example.com", "gw.example.com"));
        assert!(m("*.example.com,!gw.example.com", "db.example.com"));
        assert!(
            !m("!gw.example.com", "db.example.com"),
            "negation alone matches nothing"
        );
    }

    #[test]
    fn hashed_names_match_what_ssh_keygen_wrote() {
        let entries = parse_file(HASHED, Path::new("test"));
        assert_eq!(entries.len(), 2);
        assert!(entries[0].hosts.matches("[127.0.0.1]:2222"));
        assert!(!entries[0].hosts.matches("[127.0.0.1]:2223"));
        assert!(!entries[0].hosts.matches("127.0.0.1"));
        assert!(entries[1].hosts.matches("gw.example.com"));
        assert!(!entries[1].hosts.matches("gw.example.org"));
    }

    #[test]
    fn bad_lines_are_skipped() {
        let text = format!(
            "# comment\n\n\
             @cert-authority *.example.com {A}\n\
             @other host {A}\n\
             host-without-key\n\
             host ssh-ed25519 AAAA\n\
             |1|bad|x {A}\n\
             \u{0}\u{fffd} binary \u{7f}\n\
             good.example {A}\n\
             @revoked * {B}\n"
        );
        let entries = parse_file(&text, Path::new("test"));
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].marker, Marker::Revoked);
    }
}
