//! Host-key verification: is the key a server offered in the handshake the one expected for
//! that host:port? Owns the OpenSSH known_hosts format (plain and hashed `|1|` names,
//! `[host]:port`, wildcards, `@revoked`), SHA-256 fingerprints, and the decision between a
//! session's pinned `host_key`, the operator's `--known-hosts` file and the policy, whose
//! accept-new keys it records. It runs on the bridge thread after the handshake and before
//! authentication, and never sees a credential.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use parking_lot::Mutex;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::error::{SshError, SshErrorKind};
use crate::config::HostKeyPolicy;
use crate::request::HostKeyPin;

/// The file accept-new writes under `--state-dir`.
pub const RECORDED_FILE: &str = "known_hosts";
/// Host key algorithms offered, best first, as OpenSSH orders them (ed25519 first), so that
/// a fingerprint taken from a server's ed25519 key is the one negotiated. RSA keys only with
/// SHA-2 signatures (no `ssh-rsa`, as OpenSSH since 8.8); certificates and DSA are left out.
const ALGORITHMS: [&str; 6] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
];
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
    kind: String,
    blob: Vec<u8>,
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

    fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.blob).into()
    }

    /// `SHA256:<base64, no padding>`, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", STANDARD_NO_PAD.encode(self.sha256()))
    }

    /// `type base64`, the key part of a known_hosts line.
    fn to_line_part(&self) -> String {
        format!(
            "{} {}",
            self.kind,
            base64::engine::general_purpose::STANDARD.encode(&self.blob)
        )
    }
}

/// Parses a `type base64` pair, checking that the stated type is the one inside the blob.
fn parse_key(kind: &str, base64: &str) -> Option<HostKey> {
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
pub fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// host:port for messages, with IPv6 in brackets.
fn display_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
}

/// Which names a known_hosts line is for.
#[derive(Debug, Clone)]
enum Hosts {
    /// `|1|salt|hash`: HMAC-SHA1 of the name, keyed with the salt.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// Comma-separated patterns with `*`, `?` and `!` negation.
    Patterns(String),
}

impl Hosts {
    fn parse(field: &str) -> Result<Hosts, &'static str> {
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

    fn matches(&self, name: &str) -> bool {
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
struct Entry {
    marker: Marker,
    hosts: Hosts,
    key: HostKey,
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
fn parse_file(text: &str, path: &Path) -> Vec<Entry> {
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

/// Which source accepted a key, for the session's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Pinned,
    KnownHosts,
    /// Matches a key accept-new recorded earlier.
    Recorded,
    /// Seen for the first time, and now recorded.
    FirstUse,
    Unchecked,
}

impl Accepted {
    pub fn label(self) -> &'static str {
        match self {
            Accepted::Pinned => "pinned",
            Accepted::KnownHosts => "known_hosts",
            Accepted::Recorded => "recorded",
            Accepted::FirstUse => "first_use",
            Accepted::Unchecked => "unchecked",
        }
    }
}

/// The host-key part of the configuration, loaded: shared by all sessions.
pub struct HostKeys {
    policy: HostKeyPolicy,
    /// The operator's `--known-hosts`, read once at start-up.
    known: Vec<Entry>,
    /// accept-new's keys; `file` is `None` when they live in memory only.
    recorded: Mutex<Vec<Entry>>,
    file: Option<PathBuf>,
}

impl HostKeys {
    /// Reads `known_hosts` and, under accept-new with a `state_dir`, creates the directory
    /// (0700) and reads the keys recorded there. An unreadable file is an error; a bad line
    /// is skipped with a warning.
    pub fn load(
        policy: HostKeyPolicy,
        known_hosts: Option<&Path>,
        state_dir: Option<&Path>,
    ) -> io::Result<HostKeys> {
        let known = match known_hosts {
            Some(path) => {
                let bytes = fs::read(path).map_err(|e| with_path(e, path))?;
                let known = parse_file(&String::from_utf8_lossy(&bytes), path);
                tracing::info!(file = %path.display(), keys = known.len(), "known hosts loaded");
                known
            }
            None => Vec::new(),
        };
        let mut recorded = Vec::new();
        let mut file = None;
        match (policy, state_dir) {
            (HostKeyPolicy::InsecureAcceptAny, _) => tracing::warn!(
                "--host-key-policy insecure-accept-any: host keys not pinned or in --known-hosts \
                 are not checked; a man in the middle would receive the credentials"
            ),
            (HostKeyPolicy::AcceptNew, None) => tracing::info!(
                "host keys seen first are remembered in memory only (no state directory)"
            ),
            (HostKeyPolicy::AcceptNew, Some(dir)) => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| with_path(e, dir))?;
                let path = dir.join(RECORDED_FILE);
                match fs::read(&path) {
                    Ok(bytes) => recorded = parse_file(&String::from_utf8_lossy(&bytes), &path),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(with_path(e, &path)),
                }
                tracing::info!(file = %path.display(), keys = recorded.len(), "host keys seen first are recorded");
                file = Some(path);
            }
            (HostKeyPolicy::Strict, _) => {}
        }
        Ok(HostKeys {
            policy,
            known,
            recorded: Mutex::new(recorded),
            file,
        })
    }

    /// Keys in memory only, for tests.
    #[cfg(test)]
    fn in_memory(policy: HostKeyPolicy, known: &str) -> HostKeys {
        HostKeys {
            policy,
            known: parse_file(known, Path::new("test")),
            recorded: Mutex::new(Vec::new()),
            file: None,
        }
    }

    /// The host key algorithms to offer, best first: the types already known for this
    /// host:port lead, so that a server with several keys shows the one we can check.
    pub fn algorithms(&self, host: &str, port: u16, pin: Option<&HostKeyPin>) -> String {
        let name = known_hosts_name(host, port);
        let mut kinds: Vec<String> = match pin {
            Some(HostKeyPin::Key(blob)) => HostKey::from_blob(blob.clone())
                .map(|k| vec![k.kind])
                .unwrap_or_default(),
            // A fingerprint does not say its type; the default order decides.
            Some(HostKeyPin::Sha256(_)) => Vec::new(),
            None => {
                let known = kinds_for(&self.known, &name);
                if known.is_empty() && self.policy == HostKeyPolicy::AcceptNew {
                    kinds_for(&self.recorded.lock(), &name)
                } else {
                    known
                }
            }
        };
        // An RSA key is used with any of the RSA signature algorithms.
        if kinds.iter().any(|k| k == "ssh-rsa") {
            kinds.extend(["rsa-sha2-512".into(), "rsa-sha2-256".into()]);
        }
        let (known, rest): (Vec<&str>, Vec<&str>) = ALGORITHMS
            .iter()
            .partition(|a| kinds.iter().any(|k| k == *a));
        [known, rest].concat().join(",")
    }

    /// Decides on the key `offered` by host:port: the pin alone if there is one, else the
    /// --known-hosts entries for it, else the policy. Records a first-seen key under
    /// accept-new (blocking file I/O: call it on the bridge thread).
    pub fn verify(
        &self,
        host: &str,
        port: u16,
        pin: Option<&HostKeyPin>,
        offered: &HostKey,
    ) -> Result<Accepted, SshError> {
        let addr = display_addr(host, port);
        let refuse = |why: &str| {
            SshError::new(
                SshErrorKind::HostKeyMismatch,
                format!(
                    "the server's {} key {} {why} for {addr}",
                    offered.kind,
                    offered.fingerprint()
                ),
            )
        };
        if let Some(pin) = pin {
            let matches = match pin {
                HostKeyPin::Sha256(digest) => offered.sha256() == *digest,
                HostKeyPin::Key(blob) => offered.blob == *blob,
            };
            return if matches {
                Ok(Accepted::Pinned)
            } else {
                Err(refuse("does not match the session's host_key"))
            };
        }

        let name = known_hosts_name(host, port);
        let for_host = || self.known.iter().filter(|e| e.hosts.matches(&name));
        if for_host().any(|e| e.marker == Marker::Revoked && e.key == *offered) {
            return Err(refuse("is marked @revoked in the known-hosts file"));
        }
        let mut listed = for_host().filter(|e| e.marker == Marker::None).peekable();
        if listed.peek().is_some() {
            return if listed.any(|e| e.key == *offered) {
                Ok(Accepted::KnownHosts)
            } else {
                Err(refuse(
                    "does not match the known key in the known-hosts file",
                ))
            };
        }

        match self.policy {
            HostKeyPolicy::InsecureAcceptAny => Ok(Accepted::Unchecked),
            HostKeyPolicy::Strict => Err(SshError::new(
                SshErrorKind::HostKeyUnknown,
                format!(
                    "the server's {} key {} is not known for {addr}, and the host-key policy is strict",
                    offered.kind,
                    offered.fingerprint()
                ),
            )),
            HostKeyPolicy::AcceptNew => match self.accept_new(&name, offered) {
                Ok(Some(accepted)) => Ok(accepted),
                Ok(None) => Err(refuse("does not match the key recorded on first use")),
                Err(e) => {
                    tracing::error!(error = %e, "cannot record a host key");
                    Err(SshError::new(
                        SshErrorKind::SshFailed,
                        "the gateway cannot record the server's host key",
                    ))
                }
            },
        }
    }

    /// Compares with the keys recorded for `name`, or records `offered` if there are none.
    /// `Ok(None)` is a mismatch.
    fn accept_new(&self, name: &str, offered: &HostKey) -> io::Result<Option<Accepted>> {
        let compare = |recorded: &[Entry]| {
            let mut listed = recorded.iter().filter(|e| e.hosts.matches(name)).peekable();
            listed
                .peek()
                .is_some()
                .then(|| listed.any(|e| e.key == *offered))
        };
        let entry = Entry {
            marker: Marker::None,
            hosts: Hosts::Patterns(name.to_ascii_lowercase()),
            key: offered.clone(),
        };
        let Some(path) = &self.file else {
            // Check and insert under one lock, so two sessions cannot both record.
            let mut recorded = self.recorded.lock();
            return Ok(match compare(&recorded) {
                Some(true) => Some(Accepted::Recorded),
                Some(false) => None,
                None => {
                    recorded.push(entry);
                    Some(Accepted::FirstUse)
                }
            });
        };
        if let Some(same) = compare(&self.recorded.lock()) {
            return Ok(same.then_some(Accepted::Recorded));
        }

        // Not known here: the file decides, under an exclusive flock(2), which also orders
        // other gateways sharing the state directory. Holders keep it for one read and one
        // append, so the blocking wait is short. The memory lock is not held meanwhile.
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| with_path(e, path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
        let on_disk = read_all(&mut file, path);
        let verdict = match compare(&on_disk) {
            Some(same) => same.then_some(Accepted::Recorded),
            None => {
                // One write of one whole line with O_APPEND; start a line if the file
                // (edited by hand) does not end with one.
                let mut line = String::new();
                if file.metadata()?.len() > 0 && !ends_with_newline(&mut file)? {
                    line.push('\n');
                }
                let _ = writeln!(line, "{} {}", name, offered.to_line_part());
                file.write_all(line.as_bytes())?;
                file.sync_data()?;
                tracing::info!(
                    host = name,
                    kind = offered.kind,
                    fingerprint = offered.fingerprint(),
                    "host key recorded on first use"
                );
                Some(Accepted::FirstUse)
            }
        };
        // Closing the file releases the flock.
        drop(file);
        let mut recorded = self.recorded.lock();
        // What the file holds now, for this name; memory may have caught up meanwhile.
        recorded.retain(|e| !e.hosts.matches(name));
        recorded.extend(on_disk.into_iter().filter(|e| e.hosts.matches(name)));
        if verdict == Some(Accepted::FirstUse) {
            recorded.push(entry);
        }
        Ok(verdict)
    }
}

fn kinds_for(entries: &[Entry], name: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    entries
        .iter()
        .filter(|e| e.marker == Marker::None && e.hosts.matches(name))
        .map(|e| e.key.kind.clone())
        .filter(|k| seen.insert(k.clone()))
        .collect()
}

fn read_all(file: &mut File, path: &Path) -> Vec<Entry> {
    let mut bytes = Vec::new();
    match file.read_to_end(&mut bytes) {
        Ok(_) => parse_file(&String::from_utf8_lossy(&bytes), path),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read recorded host keys");
            Vec::new()
        }
    }
}

fn ends_with_newline(file: &mut File) -> io::Result<bool> {
    let mut last = [0u8; 1];
    file.seek(io::SeekFrom::End(-1))?;
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real keys from ssh-keygen, with their `ssh-keygen -lf` fingerprints.
    const A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG8yuQzWDbuazfTvRkAoYIYgFCKS5+4qsuvIf5uaviNG";
    const A_FP: &str = "SHA256:XXkgCBclf7u8N2U6LMzRVGjMQyZ5vLfHJVSjjpWoOZc";
    const B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPQIm4a4iEKrdIFFg9R99fv4GFObZQ3IT2y8aLCkpC/K";
    const E: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBI7deGEgaMM5nrg+KFr5rCjmQ48lDLzYxJS24bmisUTiUC8OILQpYCMIukUJMMkrcyt1gPUOCBgqRzwk1uZdgFw=";
    const E_FP: &str = "SHA256:D+4iPGdM/v8fv73fNib7wjS0vv3Hcf2TFY3Dmr0M9S4";
    // `ssh-keygen -H` of "[127.0.0.1]:2222 <A>" and "gw.example.com <A>".
    const HASHED: &str = "|1|vIkd7Dshg6hTOQMh4aw2Ukjr18U=|oOFuIGGqjtrSR2MPtLFr4s2hncA= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG8yuQzWDbuazfTvRkAoYIYgFCKS5+4qsuvIf5uaviNG\n\
        |1|oZC11pvO4W9AEyrmT6a3f2m3ea8=|ZbTsNBSZnSt8B+LPdQDx65Qww1Q= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG8yuQzWDbuazfTvRkAoYIYgFCKS5+4qsuvIf5uaviNG\n";

    fn key(line: &str) -> HostKey {
        let mut f = line.split_ascii_whitespace();
        parse_key(f.next().unwrap(), f.next().unwrap()).unwrap()
    }

    fn code(r: Result<Accepted, SshError>) -> &'static str {
        match r {
            Ok(a) => a.label(),
            Err(e) => e.code(),
        }
    }

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

    #[test]
    fn a_pin_alone_decides() {
        // The file would accept A and the policy B; the pin says E.
        let keys = HostKeys::in_memory(HostKeyPolicy::InsecureAcceptAny, &format!("h {A}\n"));
        let pin = parse_pin(E_FP).unwrap();
        assert_eq!(code(keys.verify("h", 22, Some(&pin), &key(E))), "pinned");
        let err = keys.verify("h", 22, Some(&pin), &key(A)).unwrap_err();
        assert_eq!(err.kind, SshErrorKind::HostKeyMismatch);
        assert_eq!(
            err.message,
            format!(
                "the server's ssh-ed25519 key {A_FP} does not match the session's host_key for h:22"
            )
        );
        let pin = parse_pin(&format!("anything {E}")).unwrap();
        assert_eq!(code(keys.verify("h", 22, Some(&pin), &key(E))), "pinned");
        assert_eq!(
            code(keys.verify("h", 22, Some(&pin), &key(B))),
            "host_key_mismatch"
        );
    }

    #[test]
    fn known_hosts_decides_for_the_hosts_it_lists() {
        let known = format!("h {A}\nh {E}\n[h]:2222 {B}\n{HASHED}@revoked * {B}\n");
        let keys = HostKeys::in_memory(HostKeyPolicy::Strict, &known);
        assert_eq!(code(keys.verify("h", 22, None, &key(A))), "known_hosts");
        assert_eq!(code(keys.verify("h", 22, None, &key(E))), "known_hosts");
        // Port 22 entries do not cover other ports, and the reverse.
        assert_eq!(
            code(keys.verify("h", 2223, None, &key(A))),
            "host_key_unknown"
        );
        // Listed, but revoked.
        let err = keys.verify("h", 2222, None, &key(B)).unwrap_err();
        assert_eq!(err.kind, SshErrorKind::HostKeyMismatch);
        assert!(err.message.contains("@revoked"), "{}", err.message);
        // The hashed entries.
        assert_eq!(
            code(keys.verify("127.0.0.1", 2222, None, &key(A))),
            "known_hosts"
        );
        assert_eq!(
            code(keys.verify("gw.example.com", 22, None, &key(A))),
            "known_hosts"
        );
        let err = keys
            .verify("gw.example.com", 22, None, &key(E))
            .unwrap_err();
        assert_eq!(err.kind, SshErrorKind::HostKeyMismatch);
        assert!(err.message.contains(E_FP) && err.message.contains("gw.example.com:22"));
        // Even insecure-accept-any keeps to a listed key.
        let keys = HostKeys::in_memory(HostKeyPolicy::InsecureAcceptAny, &known);
        assert_eq!(
            code(keys.verify("h", 22, None, &key(B))),
            "host_key_mismatch"
        );
        assert_eq!(code(keys.verify("other", 22, None, &key(E))), "unchecked");
        // A revoked key stays revoked for hosts the file otherwise does not list.
        assert_eq!(
            code(keys.verify("other", 22, None, &key(B))),
            "host_key_mismatch"
        );
    }

    #[test]
    fn strict_refuses_unknown_keys() {
        let keys = HostKeys::in_memory(HostKeyPolicy::Strict, "");
        let err = keys.verify("::1", 2222, None, &key(E)).unwrap_err();
        assert_eq!(err.kind, SshErrorKind::HostKeyUnknown);
        assert_eq!(
            err.message,
            format!(
                "the server's ecdsa-sha2-nistp256 key {E_FP} is not known for [::1]:2222, and the host-key policy is strict"
            )
        );
    }

    #[test]
    fn accept_new_in_memory() {
        let keys = HostKeys::in_memory(HostKeyPolicy::AcceptNew, "");
        assert_eq!(code(keys.verify("h", 22, None, &key(A))), "first_use");
        assert_eq!(code(keys.verify("h", 22, None, &key(A))), "recorded");
        assert_eq!(
            code(keys.verify("h", 22, None, &key(B))),
            "host_key_mismatch"
        );
        assert_eq!(code(keys.verify("h", 2222, None, &key(B))), "first_use");
    }

    #[test]
    fn accept_new_records_in_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let keys = HostKeys::load(HostKeyPolicy::AcceptNew, None, Some(&state)).unwrap();
        assert_eq!(code(keys.verify("h", 22, None, &key(A))), "first_use");
        assert_eq!(code(keys.verify("h", 2222, None, &key(E))), "first_use");
        assert_eq!(code(keys.verify("h", 22, None, &key(A))), "recorded");
        let path = state.join(RECORDED_FILE);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("h {A}\n[h]:2222 {E}\n"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );

        // A restart reads them back; a hand edit without a final newline is respected.
        fs::write(&path, format!("{text}x {B}")).unwrap();
        let keys = HostKeys::load(HostKeyPolicy::AcceptNew, None, Some(&state)).unwrap();
        assert_eq!(
            code(keys.verify("h", 22, None, &key(B))),
            "host_key_mismatch"
        );
        assert_eq!(code(keys.verify("y", 2222, None, &key(E))), "first_use");
        assert_eq!(code(keys.verify("x", 22, None, &key(B))), "recorded");
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.ends_with(&format!("x {B}\n[y]:2222 {E}\n")), "{text}");
        // Algorithms: the recorded type leads.
        assert!(
            keys.algorithms("h", 2222, None)
                .starts_with("ecdsa-sha2-nistp256,ssh-ed25519,")
        );
    }

    #[test]
    fn concurrent_recorders_agree_on_one_key() {
        // Two gateways sharing a state dir, several sessions each, racing for the same
        // host:port with different keys: one key wins everywhere, and the file says which.
        let dir = tempfile::tempdir().unwrap();
        let load = || HostKeys::load(HostKeyPolicy::AcceptNew, None, Some(dir.path())).unwrap();
        let gateways = [load(), load()];
        let results: Vec<(usize, Accepted)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let keys = &gateways[i % 2];
                    s.spawn(move || {
                        let offered = if i < 4 { key(A) } else { key(E) };
                        let host = format!("host{}", i % 3);
                        keys.verify(&host, 2222, None, &offered)
                            .ok()
                            .map(|a| (i, a))
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect()
        });
        let text = fs::read_to_string(dir.path().join(RECORDED_FILE)).unwrap();
        assert_eq!(text.lines().count(), 3, "one line per host: {text}");
        assert_eq!(
            results
                .iter()
                .filter(|(_, a)| *a == Accepted::FirstUse)
                .count(),
            3
        );
        for (i, _) in results {
            let offered = if i < 4 { key(A) } else { key(E) };
            let line = format!("[host{}]:2222 {}", i % 3, offered.to_line_part());
            assert!(
                text.contains(&line),
                "accepted {line} but the file has {text}"
            );
        }
    }

    #[test]
    fn algorithms_put_known_types_first() {
        let keys = HostKeys::in_memory(
            HostKeyPolicy::AcceptNew,
            &format!("h {E}\nr ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDN\n"),
        );
        assert_eq!(keys.algorithms("other", 22, None), ALGORITHMS.join(","));
        assert!(
            keys.algorithms("h", 22, None)
                .starts_with("ecdsa-sha2-nistp256,ssh-ed25519,")
        );
        let pin = parse_pin(A).unwrap();
        assert!(
            keys.algorithms("h", 22, Some(&pin))
                .starts_with("ssh-ed25519,ecdsa")
        );
        let pin = parse_pin(E_FP).unwrap();
        assert_eq!(keys.algorithms("h", 22, Some(&pin)), ALGORITHMS.join(","));
        assert_eq!(
            keys.algorithms("h", 22, None).split(',').count(),
            ALGORITHMS.len()
        );
        assert!(
            keys.algorithms("r", 22, None)
                .starts_with("rsa-sha2-512,rsa-sha2-256,ssh-ed25519,")
        );
    }
}
