//! A throw-away TinySSH server (Debian `tinysshd`) on a loopback port. `tinysshd` is
//! inetd-style, one process per connection speaking on stdin/stdout, so the harness is the
//! listener: a thread accepts on `127.0.0.1:0` and starts `tinysshd` with the accepted socket
//! as its stdin and stdout (no tcpserver needed). The host key is made per start by
//! `tinysshd-makekey`. Every connection's process has a watchdog, and stop (and drop) ends the
//! accept thread and kills each connection's process tree by PID. TinySSH reads only
//! `~/.ssh/authorized_keys`, so clients log in with `CompatKeys::ed25519`.

use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::compat_keys::fingerprint_sha256;
use super::sshd::{freeze_tree, is_alive, read_banner, signal};
use super::watchdog::Watchdog;

const TINYSSHD: &str = "/usr/sbin/tinysshd";
/// Connections one server accepts before its thread ends: a test opens a handful, and a
/// runaway loop should fail rather than fork without end.
const MAX_CONNECTIONS: usize = 64;
/// The first connection (the readiness check) answers in milliseconds; 10 s bounds a broken
/// setup.
const READY_DEADLINE: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Bounds the wait for killed processes to disappear; SIGKILL normally takes microseconds.
const EXIT_DEADLINE: Duration = Duration::from_secs(5);

/// One connection's `tinysshd`, with the watchdog that kills it if this process dies.
struct Connection {
    child: Child,
    watchdog: Option<Watchdog>,
}

/// What the accept thread and the harness share.
struct Shared {
    stop: AtomicBool,
    connections: Mutex<Vec<Connection>>,
    /// Why the accept thread ended early, if it did (shown when a test fails).
    failure: Mutex<Option<String>>,
}

/// A listening TinySSH. Dropping it stops it; see [`TinySsh::stop`].
pub struct TinySsh {
    pub port: u16,
    dir: TempDir,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl TinySsh {
    /// Makes a host key, listens on a free 127.0.0.1 port and checks that a connection gets
    /// TinySSH's banner. Panics, with the servers' stderr, if it does not.
    pub fn start() -> TinySsh {
        let dir = tempfile::Builder::new()
            .prefix("alfresco-tinyssh-")
            .tempdir()
            .expect("create a temp dir for tinysshd");
        let keydir = dir.path().join("keys");
        let out = Command::new("tinysshd-makekey")
            .arg(&keydir)
            .output()
            .expect("run tinysshd-makekey (is tinysshd installed?)");
        assert!(out.status.success(), "tinysshd-makekey: {out:?}");
        File::create(dir.path().join("tinysshd.log")).expect("create tinysshd.log");

        // Bound while we hold it, so no other listener can take the port meanwhile.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
        let port = listener.local_addr().expect("listener address").port();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
        });
        let acceptor = {
            let shared = shared.clone();
            let dir = dir.path().to_owned();
            thread::Builder::new()
                .name(format!("tinyssh-{port}"))
                .spawn(move || accept_loop(&listener, &dir, &shared))
                .expect("start the tinysshd accept thread")
        };
        let server = TinySsh {
            port,
            dir,
            shared,
            acceptor: Some(acceptor),
        };
        match read_banner(server.addr(), READY_DEADLINE) {
            Ok(banner) if banner.starts_with("SSH-2.0-tinyssh") => server,
            other => panic!(
                "tinysshd on port {port} answered {other:?}; its stderr:\n{}",
                server.log()
            ),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The host public key as `ssh-ed25519 base64`, as `tinysshd-printkey` prints it.
    pub fn host_public_key(&self) -> String {
        let out = Command::new("tinysshd-printkey")
            .arg(self.dir.path().join("keys"))
            .output()
            .expect("run tinysshd-printkey");
        assert!(out.status.success(), "tinysshd-printkey: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = text.split_whitespace().take(2).collect();
        assert_eq!(fields.first(), Some(&"ssh-ed25519"), "{text:?}");
        fields.join(" ")
    }

    /// The SHA256 fingerprint of the host key, computed from its public key.
    pub fn host_key_fingerprint_sha256(&self) -> String {
        fingerprint_sha256(&self.host_public_key())
    }

    /// Ends the accept thread, then kills every connection's process tree (tinysshd forks the
    /// user's shell into a session of its own) and waits until they are gone. Idempotent.
    pub fn stop(&mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            self.shared.stop.store(true, Ordering::SeqCst);
            // Wakes the blocking accept; the thread sees the flag and drops this connection.
            // If the thread already ended (MAX_CONNECTIONS), the connect is refused: fine.
            let _ = TcpStream::connect_timeout(&self.addr(), EXIT_DEADLINE);
            let _ = acceptor.join();
        }
        let connections = std::mem::take(&mut *self.shared.connections.lock().unwrap());
        for mut connection in connections {
            drop(connection.watchdog.take());
            let tree = freeze_tree(connection.child.id());
            signal("KILL", &tree);
            let _ = connection.child.wait();
            let deadline = Instant::now() + EXIT_DEADLINE;
            while tree[1..].iter().any(|&pid| is_alive(pid)) {
                if Instant::now() > deadline {
                    eprintln!(
                        "tinyssh harness: {tree:?} still alive {EXIT_DEADLINE:?} after SIGKILL"
                    );
                    break;
                }
                thread::sleep(POLL_INTERVAL);
            }
        }
    }

    fn log(&self) -> String {
        let mut text = fs::read_to_string(self.dir.path().join("tinysshd.log"))
            .unwrap_or_else(|e| format!("(no tinysshd log: {e})"));
        if let Some(failure) = self.shared.failure.lock().unwrap().as_ref() {
            text.push_str(&format!("\naccept thread: {failure}"));
        }
        text
    }
}

impl Drop for TinySsh {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("tinysshd log of the failed test:\n{}", self.log());
        }
        self.stop();
    }
}

/// Accepts until told to stop or `MAX_CONNECTIONS` is reached, starting one `tinysshd` per
/// connection. Processes that have ended are reaped on the way, so none stays a zombie.
fn accept_loop(listener: &TcpListener, dir: &Path, shared: &Shared) {
    let fail = |why: String| *shared.failure.lock().unwrap() = Some(why);
    for _ in 0..MAX_CONNECTIONS {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => return fail(format!("accept: {e}")),
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut connections = shared.connections.lock().unwrap();
        reap_finished(&mut connections);
        match spawn_tinysshd(stream, dir) {
            Ok(connection) => connections.push(connection),
            Err(e) => return fail(format!("start {TINYSSHD}: {e}")),
        }
    }
    fail(format!(
        "stopped accepting after {MAX_CONNECTIONS} connections"
    ));
}

/// Starts `tinysshd -v keydir` on `stream`. Our copies of the socket are closed on return, so
/// the connection ends when tinysshd does.
fn spawn_tinysshd(stream: TcpStream, dir: &Path) -> std::io::Result<Connection> {
    let input = OwnedFd::from(stream.try_clone()?);
    let output = OwnedFd::from(stream);
    let log = OpenOptions::new()
        .append(true)
        .open(dir.join("tinysshd.log"))?;
    let child = Command::new(TINYSSHD)
        .arg("-v") // log each connection and authentication to the kept stderr
        .arg(dir.join("keys"))
        .stdin(Stdio::from(input))
        .stdout(Stdio::from(output))
        .stderr(log)
        // Its own group, so terminal signals aimed at the test runner do not reach it.
        .process_group(0)
        .spawn()?;
    // Each removes the temp dir too: whichever fires first, if this process dies.
    let watchdog = Watchdog::spawn(&child.id().to_string(), Some(dir));
    Ok(Connection {
        child,
        watchdog: Some(watchdog),
    })
}

/// Reaps connections whose tinysshd has exited. The watchdog is stopped before the reap:
/// afterwards the PID may be reused.
fn reap_finished(connections: &mut Vec<Connection>) {
    connections.retain_mut(|connection| {
        if is_alive(connection.child.id()) {
            return true;
        }
        drop(connection.watchdog.take());
        let _ = connection.child.wait();
        false
    });
}
