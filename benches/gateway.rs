//! `cargo bench --bench gateway` (issue 4): the gateway against a direct SSH client, side by
//! side, in one run on loopback. It starts its own throw-away sshd (tests/it/support/sshd.rs)
//! and the gateway binary as a separate process, so /proc shows the gateway's CPU, RSS and
//! threads apart from the client's. Every loop is bounded in count and time: a run that cannot
//! finish fails with a message instead of hanging. Only processes it started are stopped, by PID.
//! The `target` scenario adds a second gateway and a russh SSH target (support/ssh_target.rs),
//! which is this binary re-executed with `ssh_target::TARGET_ENV` set.
//!
//! Layout: this file holds the constants, `main` and the test bed; `gateway/scenarios.rs`
//! the scenarios (`gateway/waits.rs` the status long-polls, `gateway/webhooks.rs` sessions
//! with webhooks on, `gateway/encoding.rs` what `encoding` costs, `gateway/jump.rs` sessions
//! through a jump host, `gateway/soak.rs` the long mixed run of `make soak`),
//! `gateway/work.rs` what every client does alike, `gateway/clients.rs` the
//! three clients, `gateway/process.rs` the processes it starts, `gateway/report.rs` payloads,
//! /proc and the rows. The parts share this file's imports and constants (`use crate::*`):
//! one bench binary, read as one program.

#![forbid(unsafe_code)]

#[path = "gateway/clients.rs"]
mod clients;
#[path = "gateway/encoding.rs"]
mod encoding;
#[path = "gateway/jump.rs"]
mod jump;
#[path = "gateway/process.rs"]
mod process;
#[path = "gateway/report.rs"]
mod report;
#[path = "gateway/scenarios.rs"]
mod scenarios;
#[path = "gateway/soak.rs"]
mod soak;
#[path = "support/ssh_target.rs"]
mod ssh_target;
#[allow(dead_code)]
#[path = "../tests/it/support/sshd.rs"]
mod sshd;
#[path = "gateway/waits.rs"]
mod waits;
#[allow(dead_code)]
#[path = "../tests/it/support/watchdog.rs"]
mod watchdog;
#[path = "gateway/webhooks.rs"]
mod webhooks;
#[path = "gateway/work.rs"]
mod work;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use clients::*;
use encoding::*;
use jump::*;
use process::*;
use report::*;
use scenarios::*;
use soak::*;
use waits::*;
use webhooks::*;
use work::*;

use watchdog::Watchdog;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use ssh2::{Channel, ExtendedData, MethodType, Session};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// The test user's prompt (tests/setup-test-user.sh).
const PROMPT: &[u8] = b"alfresco-test$ ";
/// Bounds every single wait (one read, one connect); far above any healthy figure.
const WAIT: Duration = Duration::from_secs(20);
/// Bounds each scenario as a whole, so a slow leak cannot stretch a run indefinitely.
const SCENARIO_LIMIT: Duration = Duration::from_secs(300);
const SETUP_SAMPLES: usize = 20;
const THROUGHPUT_RUNS: usize = 3;
/// 64 MiB of printable ASCII; throughput is reported in MiB/s of file bytes.
const PAYLOAD_BYTES: usize = 64 << 20;
const PARALLEL: usize = 4;
const ECHO_SAMPLES: usize = 500;
/// Sessions typing in the background during the loaded echo measurement, and how often.
const BUSY_SESSIONS: usize = 50;
const BUSY_PERIOD: Duration = Duration::from_millis(100);
/// Idle sessions for the scale scenario; `BENCH_SCALE_N` overrides it.
const SCALE_N: usize = 100;
/// Sessions opened at once in the scale scenario: all at once would measure sshd's fork storm
/// and risk the gateway's 10 s connect timeout, not the gateway.
const SCALE_CONCURRENCY: usize = 16;
/// How long the scale scenario watches the gateway's CPU with every session idle.
const IDLE_WINDOW: Duration = Duration::from_secs(5);
/// Sessions the target scenario asks for (issue 4's figure); `BENCH_TARGET_N` overrides it.
/// The gateway's descriptor limit may cap it: see `target_n`.
const TARGET_N: usize = 10_000;
/// Sessions opened, and typed into, at once in the target scenario: the russh target
/// answers a handshake without forking, so more at once than `SCALE_CONCURRENCY`.
const TARGET_CONCURRENCY: usize = 32;
/// Descriptors a gateway session holds: its WebSocket, its SSH socket and its bridge
/// thread's eventfd.
const FDS_PER_SESSION: u64 = 3;
/// Descriptors left to the gateway's own use (listener, runtime, stdio, /healthz, state
/// files) and to the benchmark client's, when fitting N into a descriptor limit.
const FD_RESERVE: u64 = 200;
const UTF8_BYTES: usize = 8 << 20;
/// The gateway's cipher preference (src/ssh/connect.rs), so direct runs the same SSH leg.
const CIPHERS: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr";
const TERM: &str = "xterm-256color";
/// The API token the benchmark's gateway accepts.
const BENCH_TOKEN: &str = "bench-token-0123456789abcdef";
const COLS: u16 = 80;
const ROWS: u16 = 24;
const MIB: f64 = (1 << 20) as f64;

fn main() {
    // The target scenario holds one client WebSocket per session here, and the target
    // process (our child) inherits this limit for its one socket per session.
    raise_fd_limit();
    if std::env::var_os(ssh_target::TARGET_ENV).is_some() {
        ssh_target::serve();
    }
    let scale_n = std::env::var("BENCH_SCALE_N")
        .ok()
        .map(|v| v.parse().expect("BENCH_SCALE_N is a number"))
        .unwrap_or(SCALE_N);
    let target_n = std::env::var("BENCH_TARGET_N")
        .ok()
        .map(|v| v.parse().expect("BENCH_TARGET_N is a number"))
        .unwrap_or(TARGET_N);
    let sshd = sshd::Sshd::start();
    let files = Payloads::write(&sshd.keys().ed25519);
    let gateway = GatewayProcess::start();
    let clk_tck = clock_ticks();
    let bed = Bed {
        sshd_addr: sshd.addr(),
        key: sshd.keys().ed25519.clone(),
        key_file: files.dir.path().join("keys/id_ed25519"),
        gateway,
        files,
        clk_tck,
    };
    eprintln!(
        "bench: sshd on {}, gateway pid {} on {}, CLK_TCK {}",
        bed.sshd_addr, bed.gateway.pid, bed.gateway.addr, bed.clk_tck
    );

    // BENCH_ONLY=scale,echo runs a subset (for profiling one figure); default: all.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o.trim() == name);
    let mut all = Vec::new();
    if wanted("setup") {
        all.extend(setup(&bed));
    }
    if wanted("throughput") {
        all.extend(throughput(&bed));
    }
    if wanted("echo") {
        all.extend(echo(&bed));
    }
    if wanted("scale") {
        all.extend(scale(&bed, scale_n));
    }
    if wanted("integrity") {
        all.extend(integrity(&bed));
    }
    if wanted("record") {
        all.extend(record(&bed));
    }
    if wanted("waits") {
        all.extend(waits(&bed));
    }
    if wanted("webhooks") {
        all.extend(webhooks(&bed));
    }
    if wanted("encoding") {
        all.extend(encoding_cost(&bed));
    }
    if wanted("jump") {
        all.extend(jump(&bed));
    }
    // Last: the heaviest load, on a gateway and a target of its own (both gone after it).
    if wanted("target") {
        all.extend(target(target_n));
    }
    // Only when named (`make soak`): it takes SOAK_MINUTES of the machine.
    if only.split(',').any(|o| o.trim() == "soak") {
        all.extend(soak(&bed));
    }

    println!("\n## Summary\n");
    println!("| scenario | figure | direct | gateway | gateway/direct |");
    println!("|---|---|---|---|---|");
    for (scenario, row) in &all {
        println!(
            "| {scenario} | {} ({}) | {} | {} | {} |",
            row.figure,
            row.unit,
            fmt(row.direct),
            fmt(row.gateway),
            fmt(row.ratio())
        );
    }
    drop(bed);
    drop(sshd);
}

/// Everything a scenario needs.
struct Bed {
    sshd_addr: SocketAddr,
    key: String,
    key_file: PathBuf,
    gateway: GatewayProcess,
    files: Payloads,
    clk_tck: f64,
}

impl Bed {
    fn body(&self) -> Value {
        json!({
            "hostname": "127.0.0.1",
            "port": self.sshd_addr.port(),
            "username": sshd::TEST_USER,
            "private_key": self.key,
        })
    }
}
