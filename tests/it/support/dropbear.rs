//! A throw-away Dropbear server (Debian `dropbear-bin`) on a free loopback port, with host keys
//! made per start by `dropbearkey` in a temp dir, for the account `tests/setup-test-user.sh`
//! creates. Like `sshd.rs` it owns the server's whole process tree: stop (and drop) kills the
//! listener and every per-connection child by PID, and a watchdog kills the listener if this
//! test process dies first. Clients log in with the password or `CompatKeys`: Dropbear 2022.83
//! has no option for another authorized_keys file than `~/.ssh/authorized_keys`.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::compat_keys::fingerprint_sha256;
use super::sshd::{free_listen_port, freeze_tree, is_alive, read_banner, signal};
use super::watchdog::Watchdog;

const DROPBEAR: &str = "/usr/sbin/dropbear";
/// The host key kinds Dropbear 2022.83 serves (DSS it still has, but OpenSSH and libssh2
/// users should not meet it), with the sizes `dropbearkey -s` takes.
pub const HOST_KEY_KINDS: [(&str, &str); 3] =
    [("ed25519", "256"), ("rsa", "2048"), ("ecdsa", "256")];
/// Dropbear is ready in milliseconds; 10 s only bounds a broken setup.
const READY_DEADLINE: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Bounds the wait for killed processes to disappear; SIGKILL normally takes microseconds.
const EXIT_DEADLINE: Duration = Duration::from_secs(5);

/// A running Dropbear. Dropping it stops it; see [`Dropbear::stop`].
pub struct Dropbear {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
    watchdog: Option<Watchdog>,
}

impl Dropbear {
    /// Starts Dropbear on a free 127.0.0.1 port with fresh host keys, and waits until it sends
    /// its SSH banner. Panics, with Dropbear's stderr, if it does not.
    pub fn start() -> Dropbear {
        let dir = tempfile::Builder::new()
            .prefix("alfresco-dropbear-")
            .tempdir()
            .expect("create a temp dir for dropbear");
        let mut server = Dropbear {
            port: free_listen_port(),
            dir,
            child: None,
            watchdog: None,
        };
        server.generate_host_keys();
        server.spawn();
        server
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The `kind` host public key as `type base64`, as `dropbearkey -y` prints it.
    pub fn host_public_key(&self, kind: &str) -> String {
        let path = self.host_key_path(kind);
        let out = Command::new("dropbearkey")
            .args(["-y", "-f"])
            .arg(&path)
            .output()
            .expect("run dropbearkey -y");
        assert!(out.status.success(), "dropbearkey -y -f {path:?}: {out:?}");
        // "Public key portion is:\nssh-ed25519 AAAA… root@host\nFingerprint: …"
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("ssh-") || l.starts_with("ecdsa-"))
            .unwrap_or_else(|| panic!("no public key in dropbearkey's output: {text:?}"));
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The SHA256 fingerprint of the `kind` host key, computed from its public key.
    pub fn host_key_fingerprint_sha256(&self, kind: &str) -> String {
        fingerprint_sha256(&self.host_public_key(kind))
    }

    /// Kills Dropbear and every process it started (per-connection children, which Dropbear
    /// puts in sessions of their own, and the user shells), and waits until they are gone.
    /// Idempotent. The tree is frozen before it is killed, as in `Sshd::stop`.
    pub fn stop(&mut self) {
        // The watchdog goes first: once the listener is reaped its PID may be reused.
        drop(self.watchdog.take());
        let Some(mut child) = self.child.take() else {
            return;
        };
        let tree = freeze_tree(child.id());
        signal("KILL", &tree);
        let _ = child.wait();
        let deadline = Instant::now() + EXIT_DEADLINE;
        while tree[1..].iter().any(|&pid| is_alive(pid)) {
            if Instant::now() > deadline {
                eprintln!("dropbear harness: {tree:?} still alive {EXIT_DEADLINE:?} after SIGKILL");
                break;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn host_key_path(&self, kind: &str) -> PathBuf {
        assert!(
            HOST_KEY_KINDS.iter().any(|(k, _)| *k == kind),
            "unknown host key kind {kind:?}"
        );
        self.dir.path().join(format!("dropbear_{kind}_host_key"))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("dropbear.log")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("(no dropbear log: {e})"))
    }

    /// All kinds in parallel, one `dropbearkey` each (RSA is the slow one, ~0.1 s).
    fn generate_host_keys(&self) {
        let jobs: Vec<(PathBuf, Child)> = HOST_KEY_KINDS
            .iter()
            .map(|(kind, bits)| {
                let path = self.host_key_path(kind);
                let child = Command::new("dropbearkey")
                    .args(["-t", kind, "-s", bits, "-f"])
                    .arg(&path)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("run dropbearkey (is dropbear-bin installed?)");
                (path, child)
            })
            .collect();
        for (path, child) in jobs {
            let out = child.wait_with_output().expect("wait for dropbearkey");
            assert!(
                out.status.success(),
                "dropbearkey -f {path:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    fn spawn(&mut self) {
        let log = File::create(self.log_path()).expect("create dropbear.log");
        let mut command = Command::new(DROPBEAR);
        command
            .arg("-F") // stay in the foreground, so it is our child
            .arg("-E") // log to stderr, which is dropbear.log
            .arg("-m") // no motd: the tests wait for the bare prompt
            .arg("-w") // no root logins: only the test account is meant to log in
            .arg("-p")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("-P")
            .arg(self.dir.path().join("dropbear.pid"));
        for (kind, _) in HOST_KEY_KINDS {
            command.arg("-r").arg(self.host_key_path(kind));
        }
        let child = command
            // Dropbear ignores `env` requests and gives the shell its own LANG instead, so
            // it is fixed here rather than inherited from whoever runs the tests.
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup dropbear.log"))
            .stderr(log)
            // Its own group, so terminal signals aimed at the test runner do not reach it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {DROPBEAR} (is dropbear-bin installed?): {e}"));
        let pid = child.id();
        self.child = Some(child);
        self.watchdog = Some(Watchdog::spawn(&pid.to_string(), Some(self.dir.path())));
        self.wait_ready();
    }

    /// Polls until Dropbear sends its `SSH-2.0-` banner, panicking with its log if it exits or
    /// the deadline passes.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        let mut last_error = String::from("no attempt yet");
        loop {
            let child = self.child.as_mut().expect("wait_ready after spawn");
            if let Some(status) = child.try_wait().expect("poll dropbear") {
                panic!(
                    "dropbear exited early ({status}); its stderr:\n{}",
                    self.log()
                );
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                panic!(
                    "dropbear not ready on port {} after {READY_DEADLINE:?} ({last_error}); its stderr:\n{}",
                    self.port,
                    self.log()
                );
            }
            match read_banner(self.addr(), remaining) {
                Ok(banner) if banner.starts_with("SSH-2.0-dropbear") => return,
                Ok(banner) => panic!(
                    "port {} answered {banner:?}, not dropbear; its stderr:\n{}",
                    self.port,
                    self.log()
                ),
                Err(e) => last_error = e.to_string(),
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Dropbear {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("dropbear log of the failed test:\n{}", self.log());
        }
        self.stop();
    }
}
