//! The processes the bench starts and stops by PID: the gateway binary and the
//! russh target.

use crate::*;

/// The gateway binary on a free loopback port; killed by PID on drop, and by a watchdog
/// shell if this process dies without dropping it.
pub(crate) struct GatewayProcess {
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
    pub(crate) child: Owned,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcStatus {
    pub(crate) rss_kb: u64,
    pub(crate) threads: u64,
}

impl GatewayProcess {
    pub(crate) fn start() -> GatewayProcess {
        Self::start_with(&[])
    }

    /// The gateway with `extra` flags besides the benchmark's own.
    pub(crate) fn start_with(extra: &[&str]) -> GatewayProcess {
        // Hundreds of sessions a minute are the point here, so no create-session limit.
        // Sessions end when the benchmark closes their sockets, so that "closed" means
        // gone; the resume ring (its per-byte cost) is on all the same.
        let defaults = ["--create-rate-limit", "0", "--resume-grace", "0"];
        Self::start_plain(&[&defaults[..], extra].concat())
    }

    /// The gateway with only its address, its log level and `extra` flags.
    pub(crate) fn start_plain(extra: &[&str]) -> GatewayProcess {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("find a free loopback port")
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let child = Command::new(env!("CARGO_BIN_EXE_alfresco-ssh"))
            .args(["--listen", &addr.to_string(), "--log", "warn"])
            .args(extra)
            .env("ALFRESCO_API_TOKEN", BENCH_TOKEN)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the gateway binary");
        let pid = child.id();
        let mut gateway = GatewayProcess {
            pid,
            addr,
            child: Owned::watched(child),
        };
        let limit = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = gateway.child.0.try_wait().expect("poll the gateway") {
                panic!("the gateway exited at start ({status})");
            }
            if try_healthz(addr).is_ok() {
                return gateway;
            }
            assert!(
                Instant::now() < limit,
                "the gateway did not answer /healthz"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn healthz(&self) -> Value {
        try_healthz(self.addr).unwrap_or_else(|e| panic!("gateway /healthz: {e}"))
    }

    /// Waits (bounded) until the gateway has no live or pending session.
    pub(crate) fn wait_idle(&self) {
        let limit = Instant::now() + WAIT;
        loop {
            let health = self.healthz();
            if health["live"] == 0 && health["pending"] == 0 {
                return;
            }
            assert!(
                Instant::now() < limit,
                "gateway still busy after {WAIT:?}: {health}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn cpu_ticks(&self) -> u64 {
        cpu_ticks(&self.pid.to_string())
    }

    pub(crate) fn status(&self) -> ProcStatus {
        proc_status(self.pid)
    }

    /// Where the resident memory is: the gateway's mappings grouped by size (thread stacks
    /// are all one size), largest total first. Printed by the scale scenario to show what
    /// an idle session costs.
    pub(crate) fn rss_by_mapping_size(&self) -> Vec<(u64, usize, u64)> {
        let text = fs::read_to_string(format!("/proc/{}/smaps", self.pid)).unwrap_or_default();
        let mut groups: std::collections::BTreeMap<u64, (usize, u64)> = Default::default();
        let mut size = 0;
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("Size:") => size = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0),
                Some("Rss:") => {
                    let rss: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                    let group = groups.entry(size).or_default();
                    group.0 += 1;
                    group.1 += rss;
                }
                _ => {}
            }
        }
        let mut out: Vec<(u64, usize, u64)> = groups
            .into_iter()
            .map(|(size, (n, rss))| (size, n, rss))
            .collect();
        out.sort_by_key(|&(_, _, rss)| std::cmp::Reverse(rss));
        out
    }
}

/// The russh target (support/ssh_target.rs): this bench binary re-executed, in a process of
/// its own so its sockets count against its descriptor limit, not ours. Killed by PID on
/// drop, and by a watchdog shell if this process dies without dropping it.
pub(crate) struct TargetProcess {
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
    /// Held for its drop, which stops the process.
    pub(crate) _child: Owned,
}

impl TargetProcess {
    pub(crate) fn start() -> TargetProcess {
        let exe = std::env::current_exe().expect("the benchmark binary's path");
        let mut child = Command::new(exe)
            .env(ssh_target::TARGET_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start the russh target");
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        // Built before the first wait, so that a panic from here on still kills it.
        let mut target = TargetProcess {
            pid,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            _child: Owned::watched(child),
        };
        // Its first line is its port; read on a thread so the wait is bounded.
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("the russh target printed no port within {WAIT:?}: {e}"));
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the russh target printed {line:?}, not a port"));
        target.addr.set_port(port);
        target
    }
}

/// A child process this bench started, and so may stop: killed by PID and reaped on drop,
/// however the scenario ends. `watched` also arms a watchdog shell that kills it if this
/// process dies without dropping it; the watchdog goes first, so it cannot outlive the child.
pub(crate) struct Owned(pub(crate) Child, Option<Watchdog>);

impl Owned {
    pub(crate) fn new(child: Child) -> Owned {
        Owned(child, None)
    }

    pub(crate) fn watched(child: Child) -> Owned {
        let watchdog = Watchdog::spawn(&child.id().to_string(), None);
        Owned(child, Some(watchdog))
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        drop(self.1.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn proc_status(pid: u32) -> ProcStatus {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).expect("read a /proc status");
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    ProcStatus {
        rss_kb: field("VmRSS:"),
        threads: field("Threads:"),
    }
}

/// How many descriptors a process holds now.
pub(crate) fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list /proc/<pid>/fd")
        .count()
}

/// The soft "Max open files" of a process, from `/proc/<pid>/limits`.
pub(crate) fn open_files_limit(pid: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).expect("read /proc limits");
    text.lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric \"Max open files\" in /proc/{pid}/limits"))
}

/// As the gateway does at start (src/main.rs): the soft descriptor limit up to the hard one.
pub(crate) fn raise_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` means unlimited, which the kernel refuses for NOFILE: leave that alone.
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            let raised = Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                eprintln!("bench: cannot raise the open-files limit: {e}");
            }
        }
    }
}

pub(crate) fn try_healthz(addr: SocketAddr) -> std::io::Result<Value> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(json_body(&response))
}
