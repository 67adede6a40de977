//! The client keys the Dropbear and TinySSH tests log in with, and the SHA-256 fingerprint of a
//! public key line as the tests compute it themselves.
//!
//! Unlike OpenSSH's sshd (which `sshd.rs` points at a per-run authorized_keys file), neither
//! server can read another file than the account's `~/.ssh/authorized_keys`, which every test
//! process shares. So these keys are made once by `tests/setup-test-user.sh`, kept, and only
//! read here: concurrent test runs never write that file.

use std::fs;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};

/// Where tests/setup-test-user.sh keeps the private halves (root-only, beside the password).
const DIR: &str = "/var/lib/alfresco-ssh-test";

/// Private keys (OpenSSH format, no passphrase) listed in the test account's
/// `~/.ssh/authorized_keys`.
pub struct CompatKeys {
    pub ed25519: String,
    pub rsa: String,
    pub ecdsa: String,
}

impl CompatKeys {
    pub fn get() -> &'static CompatKeys {
        static KEYS: OnceLock<CompatKeys> = OnceLock::new();
        KEYS.get_or_init(|| CompatKeys {
            ed25519: read("ed25519"),
            rsa: read("rsa"),
            ecdsa: read("ecdsa"),
        })
    }
}

fn read(kind: &str) -> String {
    let path = format!("{DIR}/compat_{kind}");
    match fs::read_to_string(&path) {
        Ok(text) if text.contains("PRIVATE KEY") => text,
        Ok(_) => panic!("{path} holds no private key; run `sudo tests/setup-test-user.sh`"),
        Err(e) => panic!(
            "cannot read {path} ({e}): the Dropbear and TinySSH tests need the keys \
             tests/setup-test-user.sh makes; run `make test-deps` or `sudo tests/setup-test-user.sh`"
        ),
    }
}

/// `SHA256:` and the unpadded base64 of the SHA-256 of the key blob, as `ssh-keygen -lf`
/// prints it, from a `type base64 [comment]` line.
pub fn fingerprint_sha256(public_line: &str) -> String {
    let blob = public_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("not a public key line: {public_line:?}"));
    let blob = STANDARD
        .decode(blob)
        .unwrap_or_else(|e| panic!("public key is not base64 ({e}): {public_line:?}"));
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(&blob)))
}
