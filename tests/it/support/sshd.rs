//! A throw-away OpenSSH `sshd` on a free loopback port, with its own config, host keys and
//! authorized keys in a temp dir, for the user that `tests/setup-test-user.sh` creates.
//! Owns the sshd's whole process tree: `stop` (and drop) kills the listener and every
//! per-connection child by PID, and a watchdog kills the listener if this test process dies
//! without dropping it. It must never touch a process it did not start, nor a non-loopback address.

use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::watchdog::Watchdog;

/// The account `tests/setup-test-user.sh` creates; its prompt is exactly `alfresco-test$ `.
pub const TEST_USER: &str = "alfresco-test";

const PASSWORD_FILE: &str = "/var/lib/alfresco-ssh-test/password";
/// sshd re-executes itself per connection, so it must be started by absolute path.
const SSHD: &str = "/usr/sbin/sshd";
const HOST_KEY_KINDS: [&str; 3] = ["ed25519", "rsa", "ecdsa"];
/// sshd is usually ready in tens of milliseconds; 10 s only bounds a broken setup.
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// Polling interval while waiting for a state change we cannot be notified of.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Bounds the wait for killed processes to disappear; SIGKILL normally takes microseconds.
const EXIT_DEADLINE: Duration = Duration::from_secs(5);

/// Reads the test user's password, written by `tests/setup-test-user.sh`.
pub fn test_password() -> String {
    match fs::read_to_string(PASSWORD_FILE) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
        Ok(_) => {
            panic!("{PASSWORD_FILE} is empty; run `make test` or `sudo tests/setup-test-user.sh`")
        }
        Err(e) => panic!(
            "cannot read {PASSWORD_FILE} ({e}); the integration tests need the `{TEST_USER}` \
             account: run `make test`, or `sudo tests/setup-test-user.sh` then `cargo test` as root"
        ),
    }
}

/// Client private keys as text (what a browser would paste), all authorized for [`TEST_USER`]
/// except `unauthorized_ed25519`. All are OpenSSH format except `rsa_pem` (PKCS#1 PEM).
pub struct ClientKeys {
    pub ed25519: String,
    pub rsa: String,
    pub rsa_pem: String,
    pub ecdsa: String,
    /// OpenSSH format, encrypted with `passphrase` (ssh-keygen's default: aes256-ctr, bcrypt).
    pub ed25519_encrypted: String,
    pub passphrase: String,
    /// A valid key that no sshd lists in its authorized_keys.
    pub unauthorized_ed25519: String,
    /// The authorized public keys, one per line, as each sshd's authorized_keys file.
    authorized_keys: String,
}

impl ClientKeys {
    /// Generated once per test process: RSA generation is the slow part of a start, and the
    /// keys need no freshness. Only the texts are kept; the files are deleted at once.
    fn get() -> &'static ClientKeys {
        static KEYS: OnceLock<ClientKeys> = OnceLock::new();
        KEYS.get_or_init(|| {
            let dir = tempfile::Builder::new()
                .prefix("alfresco-client-keys-")
                .tempdir()
                .expect("create a temp dir for client keys");
            let passphrase = "alfresco test passphrase".to_owned();
            let path = |name: &str| dir.path().join(name);
            // All six in parallel; each call is one ssh-keygen process.
            let jobs = [
                keygen(&path("ed25519"), &["-t", "ed25519"], ""),
                keygen(&path("rsa"), &["-t", "rsa", "-b", "3072"], ""),
                keygen(
                    &path("rsa_pem"),
                    &["-t", "rsa", "-b", "3072", "-m", "PEM"],
                    "",
                ),
                keygen(&path("ecdsa"), &["-t", "ecdsa", "-b", "256"], ""),
                keygen(&path("ed25519_encrypted"), &["-t", "ed25519"], &passphrase),
                keygen(&path("unauthorized_ed25519"), &["-t", "ed25519"], ""),
            ];
            jobs.into_iter().for_each(finish);
            let read = |name: &str| read_text(&path(name));
            let authorized = ["ed25519", "rsa", "rsa_pem", "ecdsa", "ed25519_encrypted"];
            ClientKeys {
                ed25519: read("ed25519"),
                rsa: read("rsa"),
                rsa_pem: read("rsa_pem"),
                ecdsa: read("ecdsa"),
                ed25519_encrypted: read("ed25519_encrypted"),
                passphrase,
                unauthorized_ed25519: read("unauthorized_ed25519"),
                authorized_keys: authorized
                    .iter()
                    .map(|k| read(&format!("{k}.pub")))
                    .collect(),
            }
        })
    }
}

/// A running sshd. Dropping it stops it; see [`Sshd::stop`].
pub struct Sshd {
    pub port: u16,
    dir: TempDir,
    keys: &'static ClientKeys,
    /// sshd_config lines that come before the defaults (sshd keeps a keyword's first value).
    extra_config: String,
    /// What sshd is started as: its file name is the PAM service it uses.
    program: PathBuf,
    child: Option<Child>,
    /// Stdin of a `sh` that kills the listener when it reads EOF, that is when this process
    /// exits without dropping `Sshd` (a `static`, an abort, Ctrl-C, SIGKILL).
    watchdog: Option<Watchdog>,
}

impl Sshd {
    /// Starts an sshd on a free 127.0.0.1 port with fresh host keys, and waits until it
    /// answers with an SSH banner. Panics, with sshd's stderr, if it does not.
    pub fn start() -> Sshd {
        Sshd::start_as(None, "")
    }

    /// As `start`, with `extra_config` (sshd_config lines) taking precedence over the
    /// defaults: `"PasswordAuthentication no\n"` turns passwords off.
    pub fn start_with(extra_config: &str) -> Sshd {
        Sshd::start_as(None, extra_config)
    }

    /// As `start_with`, with sshd run under the name `pam_service` (a symlink in its temp
    /// dir), so that with `UsePAM yes` it uses the stack in `/etc/pam.d/<pam_service>`,
    /// which `tests/setup-test-user.sh` writes.
    pub fn start_pam(pam_service: &str, extra_config: &str) -> Sshd {
        Sshd::start_as(Some(pam_service), extra_config)
    }

    /// The same as `start_with` (the jump-host tests' name for it).
    pub fn start_with_config(extra_config: &str) -> Sshd {
        Sshd::start_as(None, extra_config)
    }

    fn start_as(pam_service: Option<&str>, extra_config: &str) -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("alfresco-sshd-")
            .tempdir()
            .expect("create a temp dir for sshd");
        // sshd reads authorized_keys as the test user, so the user must be able to reach it;
        // 0711 lets it open a file it knows the name of, and the host keys stay 0600.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711))
            .expect("chmod sshd temp dir");
        let keys = ClientKeys::get();
        let authorized_keys = dir.path().join("authorized_keys");
        fs::write(&authorized_keys, &keys.authorized_keys).expect("write authorized_keys");
        fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o644))
            .expect("chmod authorized_keys");

        // sshd names its PAM service after its own file name, and re-executes itself by the
        // same absolute path, so a symlink is enough.
        let program = match pam_service {
            None => PathBuf::from(SSHD),
            Some(service) => {
                assert!(
                    Path::new(&format!("/etc/pam.d/{service}")).exists(),
                    "/etc/pam.d/{service} is missing: run `sudo tests/setup-test-user.sh`"
                );
                let link = dir.path().join(service);
                std::os::unix::fs::symlink(SSHD, &link).expect("symlink sshd");
                link
            }
        };
        let port = free_listen_port();
        let mut sshd = Sshd {
            port,
            dir,
            keys,
            extra_config: extra_config.to_owned(),
            program,
            child: None,
            watchdog: None,
        };
        sshd.write_config();
        sshd.generate_host_keys();
        sshd.spawn();
        sshd
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn keys(&self) -> &ClientKeys {
        self.keys
    }

    /// The SHA256 fingerprint of the current `kind` ("ed25519", "rsa" or "ecdsa") host key,
    /// as `ssh-keygen -lf` prints it: `SHA256:` then unpadded base64.
    pub fn host_key_fingerprint_sha256(&self, kind: &str) -> String {
        assert!(
            HOST_KEY_KINDS.contains(&kind),
            "unknown host key kind {kind:?}"
        );
        let public = self.host_key_path(kind).with_extension("pub");
        let out = Command::new("ssh-keygen")
            .args(["-E", "sha256", "-l", "-f"])
            .arg(&public)
            .output()
            .expect("run ssh-keygen -l");
        assert!(
            out.status.success(),
            "ssh-keygen -lf {public:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // "256 SHA256:base64 comment (ED25519)"
        let text = String::from_utf8_lossy(&out.stdout);
        let fingerprint = text.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            fingerprint.starts_with("SHA256:"),
            "unexpected ssh-keygen -lf output: {text:?}"
        );
        fingerprint.to_owned()
    }

    /// The current `kind` host public key as `type base64`, the key part of a known_hosts
    /// line.
    pub fn host_public_key(&self, kind: &str) -> String {
        assert!(
            HOST_KEY_KINDS.contains(&kind),
            "unknown host key kind {kind:?}"
        );
        let text = read_text(&self.host_key_path(kind).with_extension("pub"));
        let fields: Vec<&str> = text.split_whitespace().take(2).collect();
        assert_eq!(fields.len(), 2, "unexpected public key file: {text:?}");
        fields.join(" ")
    }

    /// A known_hosts line for the current `kind` host key: `[127.0.0.1]:port type base64`.
    pub fn known_hosts_line(&self, kind: &str) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_public_key(kind))
    }

    /// Kills sshd and every process it started (per-connection monitors, their unprivileged
    /// children, user shells), so open SSH connections drop, and waits until they are gone.
    /// Idempotent.
    ///
    /// Killing sshd's process group is not enough: sshd calls `setsid()` in each
    /// per-connection child, so those live in their own sessions and would outlive it.
    /// Instead the tree is found through `/proc` parent links while stopped (SIGSTOP), so
    /// that nothing in it can fork a process we miss, and then killed (SIGKILL) at once.
    pub fn stop(&mut self) {
        // The watchdog goes first: once the listener is reaped its PID may be reused.
        drop(self.watchdog.take());
        let Some(mut child) = self.child.take() else {
            return;
        };
        let tree = freeze_tree(child.id());
        signal("KILL", &tree);
        let _ = child.wait();
        // The descendants were reparented when the listener died; wait for them by PID.
        let deadline = Instant::now() + EXIT_DEADLINE;
        while tree[1..].iter().any(|&pid| is_alive(pid)) {
            if Instant::now() > deadline {
                eprintln!(
                    "sshd harness: processes {tree:?} still alive {EXIT_DEADLINE:?} after SIGKILL"
                );
                break;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Stops sshd, replaces all its host keys, and starts it again on the same port, so a
    /// client that remembered the old key sees a mismatch.
    pub fn restart_with_new_host_keys(&mut self) {
        self.stop();
        self.generate_host_keys();
        self.spawn();
    }

    fn host_key_path(&self, kind: &str) -> PathBuf {
        self.dir.path().join(format!("ssh_host_{kind}_key"))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    /// The PID of the listening sshd, while it runs; its per-connection processes (and
    /// any connection they open) descend from it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What sshd has logged so far (its stderr).
    pub fn log_text(&self) -> String {
        self.log()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("(no sshd log: {e})"))
    }

    fn generate_host_keys(&self) {
        let jobs: Vec<_> = HOST_KEY_KINDS
            .iter()
            .map(|kind| {
                let path = self.host_key_path(kind);
                // ssh-keygen asks before overwriting; a restart wants new keys.
                for old in [path.clone(), path.with_extension("pub")] {
                    match fs::remove_file(&old) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => panic!("remove old host key {old:?}: {e}"),
                    }
                }
                // 1024-bit RSA (sshd's minimum, RequiredRSASize): generating it takes ~30 ms
                // against ~250 ms for 2048 bits, most of a start; its strength is irrelevant.
                let bits = if *kind == "rsa" { "1024" } else { "256" };
                keygen(&path, &["-t", kind, "-b", bits], "")
            })
            .collect();
        jobs.into_iter().for_each(finish);
    }

    fn write_config(&self) {
        let quoted = |p: &Path| format!("\"{}\"", p.display());
        let host_keys: String = HOST_KEY_KINDS
            .iter()
            .map(|kind| format!("HostKey {}\n", quoted(&self.host_key_path(kind))))
            .collect();
        let config = format!(
            "# Written by tests/it/support/sshd.rs for one test process.\n\
             {extra}\n\
             ListenAddress 127.0.0.1:{port}\n\
             {host_keys}\
             PidFile none\n\
             UsePAM no\n\
             StrictModes no\n\
             PasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             AuthorizedKeysFile {authorized_keys}\n\
             AllowUsers {TEST_USER}\n\
             PermitRootLogin no\n\
             AcceptEnv LANG LC_*\n\
             # Load tests open many connections at once; never let sshd drop one for that.\n\
             MaxStartups 2000:30:4000\n\
             MaxSessions 100\n\
             LogLevel ERROR\n\
             Subsystem sftp internal-sftp\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             ClientAliveInterval 0\n",
            port = self.port,
            extra = self.extra_config,
            authorized_keys = quoted(&self.dir.path().join("authorized_keys")),
        );
        fs::write(self.config_path(), config).expect("write sshd_config");
    }

    /// Starts the listener and its watchdog, then waits for the banner.
    fn spawn(&mut self) {
        let log = File::create(self.log_path()).expect("create sshd.log");
        let child = Command::new(&self.program)
            .arg("-D") // stay in the foreground, so it is our child
            .arg("-e") // log to stderr, which is sshd.log
            .arg("-f")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup sshd.log"))
            .stderr(log)
            // Its own group, so terminal signals aimed at the test runner do not reach it:
            // sshd lives exactly as long as this `Sshd` (`stop`) or this process (watchdog).
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {SSHD} (is openssh-server installed?): {e}"));
        let pid = child.id();
        self.child = Some(child);

        // Kills the listener and removes the temp dir (which `TempDir`'s drop would never
        // remove) if this process dies first.
        self.watchdog = Some(Watchdog::spawn(&pid.to_string(), Some(self.dir.path())));

        self.wait_ready();
    }

    /// Polls until sshd sends its `SSH-2.0-` banner, panicking with its log if it exits or
    /// the deadline passes. There is no readiness notification without systemd.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        let mut last_error = String::from("no attempt yet");
        loop {
            let child = self.child.as_mut().expect("wait_ready after spawn");
            if let Some(status) = child.try_wait().expect("poll sshd") {
                panic!(
                    "sshd exited early ({status}) on port {}; its stderr:\n{}",
                    self.port,
                    self.log()
                );
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                panic!(
                    "sshd not ready on port {} after {READY_DEADLINE:?} ({last_error}); its stderr:\n{}",
                    self.port,
                    self.log()
                );
            }
            match read_banner(self.addr(), remaining) {
                Ok(banner) if banner.starts_with("SSH-2.0-") => return,
                Ok(banner) => panic!(
                    "port {} answered {banner:?}, not sshd; sshd stderr:\n{}",
                    self.port,
                    self.log()
                ),
                Err(e) => last_error = e.to_string(),
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("sshd log of the failed test:\n{}", self.log());
        }
        self.stop();
    }
}

/// Connects and reads the server's first line, within `limit`.
pub fn read_banner(addr: SocketAddr, limit: Duration) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, limit)?;
    stream.set_read_timeout(Some(limit))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    // RFC 4253 caps the identification line at 255 bytes.
    while line.len() < 255 && !line.ends_with(b"\n") {
        match stream.read(&mut byte)? {
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            _ => line.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
}

/// Starts `ssh-keygen` writing a new key (no comment) to `path` and `path.pub`.
fn keygen(path: &Path, args: &[&str], passphrase: &str) -> Child {
    Command::new("ssh-keygen")
        .arg("-q")
        .args(args)
        .args(["-N", passphrase, "-C", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssh-keygen (is openssh-client installed?)")
}

fn finish(child: Child) {
    let out = child.wait_with_output().expect("wait for ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_text(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path:?}: {e}"))
}

/// SIGSTOPs `root` and all its descendants, and returns them, root first. Each process is
/// seen stopped before its children are listed, so no descendant can appear afterwards.
pub fn freeze_tree(root: u32) -> Vec<u32> {
    let mut tree = vec![root];
    let mut frontier = vec![root];
    while !frontier.is_empty() {
        signal("STOP", &frontier);
        for &pid in &frontier {
            wait_stopped(pid);
        }
        frontier = children_of(&frontier);
        frontier.retain(|pid| !tree.contains(pid));
        tree.extend(&frontier);
    }
    tree
}

/// Sends `SIGname` to `pids` with kill(1), keeping the harness free of `unsafe`. Errors are
/// ignored: a process may have exited meanwhile.
pub fn signal(name: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg("--")
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// The state letter and parent PID from `/proc/PID/stat`, or `None` if it is gone.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ..."; comm may hold spaces and parentheses, so split after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

pub fn is_alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// SIGSTOP is delivered asynchronously; wait until the process shows it (or has died).
/// Gives up quietly at the deadline: this runs in `drop`, where a panic would abort.
fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + EXIT_DEADLINE;
    while matches!(proc_stat(pid), Some((state, _)) if !matches!(state, 'T' | 't' | 'Z' | 'X')) {
        if Instant::now() > deadline {
            eprintln!("sshd harness: process {pid} did not stop within {EXIT_DEADLINE:?}");
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn children_of(parents: &[u32]) -> Vec<u32> {
    let entries = fs::read_dir("/proc").expect("list /proc");
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| matches!(proc_stat(pid), Some((_, ppid)) if parents.contains(&ppid)))
        .collect()
}

/// A free loopback port below the kernel's ephemeral range, so that no client socket of a
/// concurrent test can be given it: `restart_with_new_host_keys` binds the same port again,
/// and a client that took it meanwhile made sshd fail with "Address already in use".
/// Picking and releasing still leaves a small window for another listener; sshd then fails
/// to bind and `wait_ready` panics with its message.
pub fn free_listen_port() -> u16 {
    let low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let first = low.saturating_sub(12_000).max(1024);
    if low > first {
        let span = u128::from(low - first);
        for _ in 0..200 {
            let port = first + (uuid::Uuid::new_v4().as_u128() % span) as u16;
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return port;
            }
        }
    }
    // No room below the ephemeral range: any free port will do.
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("find a free loopback port")
        .port()
}
