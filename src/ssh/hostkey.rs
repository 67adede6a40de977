//! Host-key verification: is the key a server offered in the handshake the one expected for
//! that host:port? The decision between a session's pinned `host_key`, the operator's
//! `--known-hosts` file and the policy, and the accept-new store it records into; the
//! format itself is `known_hosts`. It runs on the bridge thread after the handshake and
//! before authentication, and never sees a credential.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::error::{SshError, SshErrorKind};
use super::known_hosts::{Entry, Hosts, Marker, kinds_for, known_hosts_name, parse_file};
pub use super::known_hosts::{HostKey, parse_pin};
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

/// host:port for messages, with IPv6 in brackets.
fn display_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
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
    use super::super::known_hosts::samples::*;
    use super::*;

    fn code(r: Result<Accepted, SshError>) -> &'static str {
        match r {
            Ok(a) => a.label(),
            Err(e) => e.code(),
        }
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
    fn accept_new_knows_a_host_under_every_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let keys = HostKeys::load(HostKeyPolicy::AcceptNew, None, Some(dir.path())).unwrap();
        assert_eq!(
            code(keys.verify("127.0.0.1", 2222, None, &key(A))),
            "first_use"
        );
        assert_eq!(
            code(keys.verify("localhost", 2222, None, &key(A))),
            "first_use"
        );
        for spelling in [
            "::ffff:127.0.0.1",
            "::FFFF:7f00:1",
            "localhost.",
            "LOCALHOST.",
        ] {
            assert_eq!(
                code(keys.verify(spelling, 2222, None, &key(B))),
                "host_key_mismatch",
                "{spelling}"
            );
            assert_eq!(code(keys.verify(spelling, 2222, None, &key(A))), "recorded");
        }
        // One line per host, in its one spelling; a restart reads them back the same way.
        let path = dir.path().join(RECORDED_FILE);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("[127.0.0.1]:2222 {A}\n[localhost]:2222 {A}\n")
        );
        let keys = HostKeys::load(HostKeyPolicy::AcceptNew, None, Some(dir.path())).unwrap();
        assert_eq!(
            code(keys.verify("Localhost.", 2222, None, &key(B))),
            "host_key_mismatch"
        );
        // The operator's file is looked up the same way.
        let keys = HostKeys::in_memory(HostKeyPolicy::Strict, &format!("[127.0.0.1]:2222 {A}\n"));
        assert_eq!(
            code(keys.verify("::ffff:127.0.0.1", 2222, None, &key(A))),
            "known_hosts"
        );
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
