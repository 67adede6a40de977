//! `cargo bench --bench gateway` (issue 4): the gateway against a direct SSH client, side by
//! side, in one run on loopback. It starts its own throw-away sshd (tests/it/support/sshd.rs)
//! and the gateway binary as a separate process, so /proc shows the gateway's CPU, RSS and
//! threads apart from the client's. Every loop is bounded in count and time: a run that cannot
//! finish fails with a message instead of hanging. Only processes it started are stopped, by PID.
//! The `target` scenario adds a second gateway and a russh SSH target (support/ssh_target.rs),
//! which is this binary re-executed with `ssh_target::TARGET_ENV` set.

#![forbid(unsafe_code)]

#[path = "support/ssh_target.rs"]
mod ssh_target;
#[allow(dead_code)]
#[path = "../tests/it/support/sshd.rs"]
mod sshd;
#[allow(dead_code)]
#[path = "../tests/it/support/watchdog.rs"]
mod watchdog;

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
    // Last: the heaviest load, on a gateway and a target of its own (both gone after it).
    if wanted("target") {
        all.extend(target(target_n));
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

// ---------------------------------------------------------------------------------------
// Scenarios

/// 1. From SSH connect (direct) or `POST /create-session` (gateway) to the prompt.
fn setup(bed: &Bed) -> Vec<(String, Row)> {
    let deadline = Deadline::new("setup");
    let (mut d_first, mut d_prompt) = (Vec::new(), Vec::new());
    let (mut g_first, mut g_prompt) = (Vec::new(), Vec::new());
    let (mut o_first, mut o_prompt) = (Vec::new(), Vec::new());
    for _ in 0..SETUP_SAMPLES {
        deadline.check();
        let t0 = Instant::now();
        let mut direct = Direct::open(bed.sshd_addr, &bed.key);
        let (first, prompt) = wait_prompt(&mut direct, t0);
        d_first.push(first);
        d_prompt.push(prompt);
        drop(direct);

        let rt = current_thread_runtime();
        let t0 = Instant::now();
        let mut gw = Gw::open(rt, bed.gateway.addr, &bed.body());
        let (first, prompt) = wait_prompt(&mut gw, t0);
        g_first.push(first);
        g_prompt.push(prompt);
        gw.close();

        let t0 = Instant::now();
        let mut ossh = OpenSsh::open(bed.sshd_addr, &bed.key_file);
        let (first, prompt) = wait_prompt(&mut ossh, t0);
        o_first.push(first);
        o_prompt.push(prompt);
    }
    bed.gateway.wait_idle();
    let rows = vec![
        Row::new(
            "median to prompt, vs ssh2",
            "ms",
            median(&d_prompt),
            median(&g_prompt),
        ),
        Row::new(
            "median to first byte, vs ssh2",
            "ms",
            median(&d_first),
            median(&g_first),
        ),
        Row::new(
            "median to prompt, vs ssh -tt",
            "ms",
            median(&o_prompt),
            median(&g_prompt),
        ),
    ];
    report(
        "setup",
        rows,
        json!({"samples": SETUP_SAMPLES, "direct_ms": d_prompt, "gateway_ms": g_prompt,
               "openssh_ms": o_prompt}),
    )
}

/// 2. `cat` of the 64 MiB printable file, one session then `PARALLEL`, interleaved A B A B.
fn throughput(bed: &Bed) -> Vec<(String, Row)> {
    let deadline = Deadline::new("throughput");
    let path = bed.files.printable.clone();
    let mut direct = Direct::open(bed.sshd_addr, &bed.key);
    wait_for(&mut direct, PROMPT);
    let mut gw = Gw::open(current_thread_runtime(), bed.gateway.addr, &bed.body());
    wait_for(&mut gw, PROMPT);
    let mut ossh = OpenSsh::open(bed.sshd_addr, &bed.key_file);
    wait_for(&mut ossh, PROMPT);

    let (mut d_rate, mut g_rate, mut o_rate) = (Vec::new(), Vec::new(), Vec::new());
    let (mut d_cpu, mut g_cpu) = (Vec::new(), Vec::new());
    for run in 0..THROUGHPUT_RUNS {
        eprintln!("throughput: single run {}/{THROUGHPUT_RUNS}", run + 1);
        let cpu0 = cpu_ticks("self");
        let secs = cat_run(&mut direct, &path, &deadline);
        d_rate.push(PAYLOAD_BYTES as f64 / MIB / secs);
        d_cpu.push(ticks_ms(cpu_ticks("self") - cpu0, bed.clk_tck) / mib(PAYLOAD_BYTES));

        let cpu0 = bed.gateway.cpu_ticks();
        let secs = cat_run(&mut gw, &path, &deadline);
        g_rate.push(PAYLOAD_BYTES as f64 / MIB / secs);
        g_cpu.push(ticks_ms(bed.gateway.cpu_ticks() - cpu0, bed.clk_tck) / mib(PAYLOAD_BYTES));

        let secs = cat_run(&mut ossh, &path, &deadline);
        o_rate.push(PAYLOAD_BYTES as f64 / MIB / secs);
    }
    drop(direct);
    gw.close();
    drop(ossh);

    let mut directs: Vec<Direct> = (0..PARALLEL)
        .map(|_| Direct::open(bed.sshd_addr, &bed.key))
        .collect();
    // One runtime per session: a current-thread runtime is driven by one thread at a time.
    let mut gws: Vec<Gw> = (0..PARALLEL)
        .map(|_| Gw::open(current_thread_runtime(), bed.gateway.addr, &bed.body()))
        .collect();
    directs.iter_mut().for_each(|s| drop(wait_for(s, PROMPT)));
    gws.iter_mut().for_each(|s| drop(wait_for(s, PROMPT)));
    let total = (PARALLEL * PAYLOAD_BYTES) as f64 / MIB;
    let (mut dp_rate, mut gp_rate, mut gp_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..THROUGHPUT_RUNS {
        eprintln!(
            "throughput: {PARALLEL} parallel, run {}/{THROUGHPUT_RUNS}",
            run + 1
        );
        dp_rate.push(total / parallel_cat(&mut directs, &path, &deadline));
        let cpu0 = bed.gateway.cpu_ticks();
        gp_rate.push(total / parallel_cat(&mut gws, &path, &deadline));
        gp_cpu.push(ticks_ms(bed.gateway.cpu_ticks() - cpu0, bed.clk_tck) / total);
    }
    drop(directs);
    gws.into_iter().for_each(Gw::close);
    bed.gateway.wait_idle();

    let rows = vec![
        Row::new(
            "1 session, vs ssh2",
            "MiB/s",
            median(&d_rate),
            median(&g_rate),
        ),
        Row::new(
            "1 session, vs ssh -tt",
            "MiB/s",
            median(&o_rate),
            median(&g_rate),
        ),
        Row::new(
            &format!("{PARALLEL} sessions total, vs ssh2"),
            "MiB/s",
            median(&dp_rate),
            median(&gp_rate),
        ),
        Row::new(
            "CPU per MiB, 1 session (direct = ssh2 client process)",
            "ms/MiB",
            median(&d_cpu),
            median(&g_cpu),
        ),
        Row::new(
            &format!("gateway CPU per MiB, {PARALLEL} sessions"),
            "ms/MiB",
            f64::NAN,
            median(&gp_cpu),
        ),
    ];
    report(
        "throughput",
        rows,
        json!({"runs": THROUGHPUT_RUNS, "payload_bytes": PAYLOAD_BYTES,
               "direct_mib_s": d_rate, "gateway_mib_s": g_rate, "openssh_mib_s": o_rate,
               "direct_parallel_mib_s": dp_rate, "gateway_parallel_mib_s": gp_rate,
               "gateway_cpu_ms_per_mib": g_cpu, "direct_client_cpu_ms_per_mib": d_cpu,
               "gateway_parallel_cpu_ms_per_mib": gp_cpu, "clk_tck": bed.clk_tck}),
    )
}

/// 3. Type one character at an idle prompt and time its echo; erase it untimed.
fn echo(bed: &Bed) -> Vec<(String, Row)> {
    let deadline = Deadline::new("echo");
    let mut direct = Direct::open(bed.sshd_addr, &bed.key);
    wait_for(&mut direct, PROMPT);
    let mut gw = Gw::open(current_thread_runtime(), bed.gateway.addr, &bed.body());
    wait_for(&mut gw, PROMPT);
    let mut ossh = OpenSsh::open(bed.sshd_addr, &bed.key_file);
    wait_for(&mut ossh, PROMPT);
    let (mut d, mut g, mut o) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ECHO_SAMPLES {
        deadline.check();
        d.push(echo_once(&mut direct));
        g.push(echo_once(&mut gw));
        o.push(echo_once(&mut ossh));
    }
    drop(direct);
    gw.close();
    drop(ossh);
    bed.gateway.wait_idle();
    let us = |v: &[f64]| v.iter().map(|x| x * 1000.0).collect::<Vec<_>>();
    let (d, g, o) = (us(&d), us(&g), us(&o));
    let mut rows = Vec::new();
    for p in [50.0, 90.0, 99.0] {
        rows.push(Row::new(
            &format!("p{p} vs ssh2"),
            "µs",
            percentile(&d, p),
            percentile(&g, p),
        ));
    }
    for p in [50.0, 99.0] {
        rows.push(Row::new(
            &format!("p{p} vs ssh -tt"),
            "µs",
            percentile(&o, p),
            percentile(&g, p),
        ));
    }
    rows.extend(echo_busy(bed));
    report(
        "echo",
        rows,
        json!({"samples": ECHO_SAMPLES, "busy_sessions": BUSY_SESSIONS}),
    )
}

/// Echo latency while `BUSY_SESSIONS` direct and as many gateway sessions each type a key
/// every `BUSY_PERIOD` (both loads run at once, so both measurements see the same machine).
fn echo_busy(bed: &Bed) -> Vec<Row> {
    let deadline = Deadline::new("echo with busy sessions");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for i in 0..BUSY_SESSIONS * 2 {
        let stop = stop.clone();
        let (addr, key, gw_addr, body) =
            (bed.sshd_addr, bed.key.clone(), bed.gateway.addr, bed.body());
        workers.push(thread::spawn(move || {
            let mut shell: Box<dyn Shell> = if i % 2 == 0 {
                Box::new(Direct::open(addr, &key))
            } else {
                Box::new(Gw::open(current_thread_runtime(), gw_addr, &body))
            };
            wait_for(shell.as_mut(), PROMPT);
            // Bounded: the stop flag ends it, and every wait inside is bounded by WAIT.
            let until = Instant::now() + SCENARIO_LIMIT;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                thread::sleep(BUSY_PERIOD);
                echo_once(shell.as_mut());
            }
        }));
    }
    // Let every busy session open and settle into its rhythm.
    while bed.gateway.healthz()["live"].as_u64().unwrap_or(0) < BUSY_SESSIONS as u64 {
        deadline.check();
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_secs(1));
    let mut direct = Direct::open(bed.sshd_addr, &bed.key);
    wait_for(&mut direct, PROMPT);
    let mut gw = Gw::open(current_thread_runtime(), bed.gateway.addr, &bed.body());
    wait_for(&mut gw, PROMPT);
    let (mut d, mut g) = (Vec::new(), Vec::new());
    for _ in 0..ECHO_SAMPLES {
        deadline.check();
        d.push(echo_once(&mut direct) * 1000.0);
        g.push(echo_once(&mut gw) * 1000.0);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().expect("a busy session failed");
    }
    drop(direct);
    gw.close();
    bed.gateway.wait_idle();
    [50.0, 99.0]
        .iter()
        .map(|&p| {
            let figure = format!("p{p} with {BUSY_SESSIONS} busy sessions, vs ssh2");
            Row::new(&figure, "µs", percentile(&d, p), percentile(&g, p))
        })
        .collect()
}

/// 4. N idle gateway sessions: RSS and threads before, with and after them.
fn scale(bed: &Bed, n: usize) -> Vec<(String, Row)> {
    let deadline = Deadline::new("scale");
    let before = bed.gateway.status();
    let rt = current_thread_runtime();
    let t0 = Instant::now();
    let sockets = scale_open(bed, &rt, n);
    let open_secs = t0.elapsed().as_secs_f64();
    deadline.check();
    let open = bed.gateway.status();
    for (size, count, rss) in bed.gateway.rss_by_mapping_size().into_iter().take(6) {
        eprintln!("scale: {count} mappings of {size} KiB hold {rss} KiB resident");
    }
    // Idle cost: the gateway's CPU while N sessions sit at their prompts. The bridge threads
    // sleep in poll(2) until input, output or the 30 s SSH keepalive, so this should be ~0.
    let clk_tck = clock_ticks();
    let idle_ticks = bed.gateway.cpu_ticks();
    thread::sleep(IDLE_WINDOW);
    let idle_cpu_ms = ticks_ms(bed.gateway.cpu_ticks() - idle_ticks, clk_tck);
    // Every one usable: a key typed into each session comes back.
    let t1 = Instant::now();
    let (usable, errors) = type_into_all(&rt, sockets, SCALE_CONCURRENCY);
    let echo_secs = t1.elapsed().as_secs_f64();
    assert!(
        errors.is_empty(),
        "scale: {} of {n} sessions did not echo a key: {:?}",
        errors.len(),
        errors.iter().take(3).collect::<Vec<_>>()
    );
    let (sockets, echo_ms): (Vec<_>, Vec<f64>) = usable.into_iter().unzip();
    deadline.check();
    let t2 = Instant::now();
    let after = scale_close(bed, &rt, sockets, &before);
    let close_secs = t2.elapsed().as_secs_f64();
    // More rounds show whether the memory kept after closing is reused (the allocator
    // holding freed pages) or lost (a leak): a leak adds the same again every round.
    let mut rounds = vec![(open.rss_kb, after.rss_kb)];
    for _ in 1..scale_rounds() {
        let again = scale_open(bed, &rt, n);
        let with = bed.gateway.status().rss_kb;
        let after = scale_close(bed, &rt, again, &before).rss_kb;
        rounds.push((with, after));
        deadline.check();
    }
    let (open_again, after_again) = *rounds.last().expect("one round at least");
    eprintln!("scale: RSS (KiB) with {n} and after closing, round by round: {rounds:?}");
    eprintln!(
        "scale: gateway before {before:?}, with {n} sessions {open:?}, after closing {after:?}"
    );
    let mut rows = footprint_rows(n, [&before, &open, &after], idle_cpu_ms);
    rows.extend([
        gw_only(
            &format!("RSS with {n} in round {}", rounds.len()),
            "KiB",
            open_again as f64,
        ),
        gw_only(
            &format!("RSS after closing round {}", rounds.len()),
            "KiB",
            after_again as f64,
        ),
        gw_only(&format!("time to open {n}"), "s", open_secs),
        gw_only(
            &format!("usable: a typed key echoed, of {n}"),
            "count",
            echo_ms.len() as f64,
        ),
    ]);
    rows.extend(typing_rows(n, &echo_ms, echo_secs, close_secs));
    report(
        "scale",
        rows,
        json!({"n": n, "concurrency": SCALE_CONCURRENCY,
               "rss_kb_with_and_after_by_round": rounds}),
    )
}

/// A row with only a gateway figure.
fn gw_only(figure: &str, unit: &'static str, value: f64) -> Row {
    Row::new(figure, unit, f64::NAN, value)
}

/// What `n` idle sessions cost the gateway, from its status before, with them open and after
/// closing them (the rows `scale` and `target` share).
fn footprint_rows(n: usize, [before, open, after]: [&ProcStatus; 3], idle_cpu_ms: f64) -> Vec<Row> {
    let per_session = (open.rss_kb as f64 - before.rss_kb as f64) / n.max(1) as f64;
    vec![
        gw_only(&format!("RSS per idle session, N={n}"), "KiB", per_session),
        gw_only(
            &format!(
                "gateway CPU while {n} sessions idle {}s",
                IDLE_WINDOW.as_secs()
            ),
            "ms",
            idle_cpu_ms,
        ),
        gw_only("threads before", "count", before.threads as f64),
        gw_only(&format!("threads with {n}"), "count", open.threads as f64),
        gw_only("threads after close", "count", after.threads as f64),
        gw_only("RSS before", "KiB", before.rss_kb as f64),
        gw_only(&format!("RSS with {n}"), "KiB", open.rss_kb as f64),
        gw_only("RSS after close", "KiB", after.rss_kb as f64),
    ]
}

/// The echo of a key typed into every one of `n` sessions, and the time to close them.
fn typing_rows(n: usize, echo_ms: &[f64], echo_secs: f64, close_secs: f64) -> Vec<Row> {
    vec![
        gw_only(
            &format!("echo across all {n}, p50"),
            "ms",
            percentile(echo_ms, 50.0),
        ),
        gw_only(
            &format!("echo across all {n}, p99"),
            "ms",
            percentile(echo_ms, 99.0),
        ),
        gw_only(&format!("time to type into all {n}"), "s", echo_secs),
        gw_only("time to close all (live=0, threads back)", "s", close_secs),
    ]
}

/// Open-and-close rounds of the scale scenario: `BENCH_SCALE_ROUNDS`, default 3.
fn scale_rounds() -> usize {
    std::env::var("BENCH_SCALE_ROUNDS")
        .ok()
        .map(|v| v.parse().expect("BENCH_SCALE_ROUNDS is a number"))
        .unwrap_or(3)
        .max(1)
}

/// Opens `n` sessions on the bench's gateway, `SCALE_CONCURRENCY` at a time, each to its
/// prompt; checks the gateway counts them all.
fn scale_open(bed: &Bed, rt: &Runtime, n: usize) -> Vec<WebSocketStream<tokio::net::TcpStream>> {
    let addr = bed.gateway.addr;
    let body = bed.body();
    let sockets = rt.block_on(async {
        let permits = Arc::new(tokio::sync::Semaphore::new(SCALE_CONCURRENCY));
        let opens = (0..n).map(|_| {
            let permits = permits.clone();
            let body = body.clone();
            async move {
                let _permit = permits.acquire().await.expect("semaphore open");
                let mut ws = ws_open(addr, &body).await;
                let mut out = Vec::new();
                while find(&out, PROMPT).is_none() {
                    ws_recv(&mut ws, &mut out).await;
                }
                ws
            }
        });
        futures_util::future::join_all(opens).await
    });
    let health = bed.gateway.healthz();
    assert_eq!(
        health["live"], n,
        "live sessions after opening {n}: {health}"
    );
    sockets
}

/// Closes every socket, waits (bounded) until the gateway has no session and its bridge
/// threads are back to `before`, and returns its status then.
fn scale_close(
    bed: &Bed,
    rt: &Runtime,
    mut sockets: Vec<WebSocketStream<tokio::net::TcpStream>>,
    before: &ProcStatus,
) -> ProcStatus {
    rt.block_on(async {
        let closes = sockets.iter_mut().map(|ws| async move {
            let _ = tokio::time::timeout(WAIT, ws.close(None)).await;
        });
        futures_util::future::join_all(closes).await;
    });
    drop(sockets);
    bed.gateway.wait_idle();
    // Bridge threads exit after the session is gone from `live`; wait (bounded) for them.
    let limit = Instant::now() + WAIT;
    let mut after = bed.gateway.status();
    while after.threads > before.threads && Instant::now() < limit {
        thread::sleep(Duration::from_millis(20));
        after = bed.gateway.status();
    }
    after
}

/// What `type_into_all` found: the sessions that echoed (with the echo time, ms) and why the
/// others did not.
type Typed = (
    Vec<(WebSocketStream<tokio::net::TcpStream>, f64)>,
    Vec<String>,
);

/// Types one key into every session, `limit` at a time, and times each echo.
fn type_into_all(
    rt: &Runtime,
    sockets: Vec<WebSocketStream<tokio::net::TcpStream>>,
    limit: usize,
) -> Typed {
    let echoed = rt.block_on(bounded(sockets, limit, |mut ws| async move {
        let t = Instant::now();
        tokio::time::timeout(WAIT, ws.send(Message::binary(&b"x"[..])))
            .await
            .expect("send a key in time")
            .expect("send a key");
        let mut out = Vec::new();
        let echo = async {
            while !out.contains(&b'x') {
                ws_recv(&mut ws, &mut out).await;
            }
        };
        tokio::time::timeout(WAIT, echo)
            .await
            .unwrap_or_else(|_| panic!("no echo within {WAIT:?}"));
        (ws, ms(t.elapsed()))
    }));
    split_results(echoed)
}

/// Scenario 6, what recording costs (`--record-dir`): the 1-session `cat` through a gateway
/// that records every session, interleaved with the plain gateway. The "direct" column is
/// the plain gateway here, so the ratio is recording / not recording.
fn record(bed: &Bed) -> Vec<(String, Row)> {
    let deadline = Deadline::new("record");
    let dir = tempfile::Builder::new()
        .prefix("alfresco-bench-rec-")
        .tempdir()
        .expect("create the recording dir");
    let rec_dir = dir.path().join("recordings");
    let recording = GatewayProcess::start_with(&["--record-dir", rec_dir.to_str().unwrap()]);
    let path = bed.files.printable.clone();
    let mut plain = Gw::open(current_thread_runtime(), bed.gateway.addr, &bed.body());
    wait_for(&mut plain, PROMPT);
    let mut rec = Gw::open(current_thread_runtime(), recording.addr, &bed.body());
    wait_for(&mut rec, PROMPT);
    let (mut p_rate, mut r_rate, mut p_cpu, mut r_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..THROUGHPUT_RUNS {
        eprintln!("record: run {}/{THROUGHPUT_RUNS}", run + 1);
        for (gw, process, rate, cpu) in [
            (&mut plain, &bed.gateway, &mut p_rate, &mut p_cpu),
            (&mut rec, &recording, &mut r_rate, &mut r_cpu),
        ] {
            let cpu0 = process.cpu_ticks();
            let secs = cat_run(gw, &path, &deadline);
            rate.push(PAYLOAD_BYTES as f64 / MIB / secs);
            cpu.push(ticks_ms(process.cpu_ticks() - cpu0, bed.clk_tck) / mib(PAYLOAD_BYTES));
        }
    }
    plain.close();
    rec.close();
    recording.wait_idle();
    let recorded: u64 = fs::read_dir(&rec_dir)
        .expect("read the recording dir")
        .map(|e| {
            e.expect("a directory entry")
                .metadata()
                .expect("stat")
                .len()
        })
        .sum();
    let rows = vec![
        Row::new(
            "1 session, recording vs not",
            "MiB/s",
            median(&p_rate),
            median(&r_rate),
        ),
        Row::new(
            "gateway CPU per MiB, recording vs not",
            "ms/MiB",
            median(&p_cpu),
            median(&r_cpu),
        ),
        Row::new(
            "recording file bytes per output byte",
            "ratio",
            f64::NAN,
            recorded as f64 / (THROUGHPUT_RUNS * PAYLOAD_BYTES) as f64,
        ),
    ];
    report(
        "record",
        rows,
        json!({"runs": THROUGHPUT_RUNS, "payload_bytes": PAYLOAD_BYTES,
               "plain_mib_s": p_rate, "recording_mib_s": r_rate,
               "plain_cpu_ms_per_mib": p_cpu, "recording_cpu_ms_per_mib": r_cpu,
               "recorded_bytes": recorded}),
    )
}

/// 5. A multi-MiB UTF-8 file with 1–4 byte characters, with `stty -onlcr`, byte for byte.
fn integrity(bed: &Bed) -> Vec<(String, Row)> {
    let deadline = Deadline::new("integrity");
    let expected = fs::read(&bed.files.utf8).expect("read the UTF-8 payload back");
    let mut direct = Direct::open(bed.sshd_addr, &bed.key);
    wait_for(&mut direct, PROMPT);
    let d = compare(&mut direct, &bed.files.utf8, &expected, &deadline);
    drop(direct);
    let mut gw = Gw::open(current_thread_runtime(), bed.gateway.addr, &bed.body());
    wait_for(&mut gw, PROMPT);
    let g = compare(&mut gw, &bed.files.utf8, &expected, &deadline);
    gw.close();
    bed.gateway.wait_idle();
    let ok = |r: &Result<(), String>| if r.is_ok() { 1.0 } else { 0.0 };
    if let Err(e) = &d {
        eprintln!("integrity: DIRECT MISMATCH: {e}");
    }
    if let Err(e) = &g {
        eprintln!("integrity: GATEWAY MISMATCH: {e}");
    }
    let rows = vec![Row::new(
        &format!("{} bytes byte-exact (1 = yes)", expected.len()),
        "bool",
        ok(&d),
        ok(&g),
    )];
    report(
        "integrity",
        rows,
        json!({"bytes": expected.len(), "direct_error": d.err(), "gateway_error": g.err()}),
    )
}

/// 6. N idle sessions through a second gateway to the russh target, each typed into once.
///
/// Issue 4's "10,000 against a lightweight target", so that sshd's process per session is
/// not the limit. Every session must echo its key. N is capped by the gateway's descriptors.
fn target(asked: usize) -> Vec<(String, Row)> {
    let deadline = Deadline::new("target");
    let ssh = TargetProcess::start();
    let state = tempfile::Builder::new()
        .prefix("alfresco-bench-target-")
        .tempdir()
        .expect("create the target gateway's state dir");
    let most = asked.max(1).to_string();
    let gateway = GatewayProcess::start_with(&[
        "--max-sessions",
        &most,
        "--max-pending",
        &most,
        // The target makes a new host key every run, so there is nothing to pin or remember;
        // trust on first use would also write every key to the state dir.
        "--host-key-policy",
        "insecure-accept-any",
        "--state-dir",
        state.path().to_str().expect("a UTF-8 temp dir"),
    ]);
    let (n, cap) = target_n(asked, &gateway);
    eprintln!(
        "target: russh target pid {} on {}, gateway pid {} on {}, N = {n}",
        ssh.pid, ssh.addr, gateway.pid, gateway.addr
    );
    let body = json!({
        "hostname": "127.0.0.1",
        "port": ssh.addr.port(),
        "username": "bench",
        "password": "bench",
    });
    let before = gateway.status();
    let fds_before = open_fds(gateway.pid);
    let rt = current_thread_runtime();
    let addr = gateway.addr;

    let t0 = Instant::now();
    let opened = rt.block_on(bounded(0..n, TARGET_CONCURRENCY, move |_| {
        let body = body.clone();
        async move {
            let t = Instant::now();
            let open = async {
                let mut ws = ws_open(addr, &body).await;
                let mut out = Vec::new();
                while find(&out, ssh_target::PROMPT).is_none() {
                    ws_recv(&mut ws, &mut out).await;
                }
                ws
            };
            let ws = tokio::time::timeout(WAIT, open)
                .await
                .unwrap_or_else(|_| panic!("no prompt within {WAIT:?}"));
            (ws, ms(t.elapsed()))
        }
    }));
    let open_secs = t0.elapsed().as_secs_f64();
    deadline.check();
    let (opened, open_errors) = split_results(opened);
    let open_ms: Vec<f64> = opened.iter().map(|(_, ms)| *ms).collect();
    let sockets: Vec<_> = opened.into_iter().map(|(ws, _)| ws).collect();
    let health = gateway.healthz();
    eprintln!(
        "target: {} of {n} opened in {open_secs:.1} s; gateway says {health}",
        sockets.len()
    );
    let open = gateway.status();
    // Checks FDS_PER_SESSION, which the cap on N rests on.
    let fds_open = open_fds(gateway.pid);
    let target_rss_kb = proc_status(ssh.pid).rss_kb;
    let clk_tck = clock_ticks();
    let idle_ticks = gateway.cpu_ticks();
    thread::sleep(IDLE_WINDOW);
    let idle_cpu_ms = ticks_ms(gateway.cpu_ticks() - idle_ticks, clk_tck);
    deadline.check();

    // Every open session is typed into once; it counts as usable if its echo comes back.
    let t1 = Instant::now();
    let (usable, echo_errors) = type_into_all(&rt, sockets, TARGET_CONCURRENCY);
    let echo_secs = t1.elapsed().as_secs_f64();
    let echo_ms: Vec<f64> = usable.iter().map(|(_, ms)| *ms).collect();
    let mut sockets: Vec<_> = usable.into_iter().map(|(ws, _)| ws).collect();
    eprintln!(
        "target: {} of {n} echoed a key, all typed in {echo_secs:.1} s",
        sockets.len()
    );
    deadline.check();

    let t2 = Instant::now();
    rt.block_on(async {
        let closes = sockets.iter_mut().map(|ws| async move {
            let _ = tokio::time::timeout(WAIT, ws.close(None)).await;
        });
        futures_util::future::join_all(closes).await;
    });
    drop(sockets);
    gateway.wait_idle();
    let limit = Instant::now() + WAIT;
    let mut after = gateway.status();
    while after.threads > before.threads && Instant::now() < limit {
        thread::sleep(Duration::from_millis(20));
        after = gateway.status();
    }
    let close_secs = t2.elapsed().as_secs_f64();
    eprintln!(
        "target: gateway before {before:?}, with {n} sessions {open:?}, after closing {after:?}"
    );
    drop(gateway);
    drop(ssh);

    let usable_n = echo_ms.len();
    let mut rows = vec![
        gw_only("sessions asked", "count", asked as f64),
        gw_only("N, after the descriptor cap", "count", n as f64),
        gw_only("opened to the prompt", "count", open_ms.len() as f64),
        gw_only("usable (a typed key echoed)", "count", usable_n as f64),
    ];
    rows.extend(footprint_rows(n, [&before, &open, &after], idle_cpu_ms));
    rows.extend([
        gw_only(&format!("descriptors with {n}"), "count", fds_open as f64),
        gw_only(
            "descriptors per session",
            "count",
            (fds_open as f64 - fds_before as f64) / n.max(1) as f64,
        ),
        gw_only(
            &format!("russh target RSS with {n}"),
            "KiB",
            target_rss_kb as f64,
        ),
        gw_only(&format!("time to open {n}"), "s", open_secs),
        gw_only("open to prompt, p50", "ms", percentile(&open_ms, 50.0)),
        gw_only("open to prompt, p99", "ms", percentile(&open_ms, 99.0)),
    ]);
    rows.extend(typing_rows(n, &echo_ms, echo_secs, close_secs));
    let first = |errors: &[String]| errors.iter().take(5).cloned().collect::<Vec<_>>();
    let rows = report(
        "target",
        rows,
        json!({"asked": asked, "n": n, "cap": cap, "concurrency": TARGET_CONCURRENCY,
               "open_failures": open_errors.len(), "first_open_errors": first(&open_errors),
               "echo_failures": echo_errors.len(), "first_echo_errors": first(&echo_errors)}),
    );
    assert!(
        open_errors.is_empty() && echo_errors.is_empty(),
        "target: {} of {n} sessions failed to open ({:?}) and {} failed to echo ({:?})",
        open_errors.len(),
        first(&open_errors),
        echo_errors.len(),
        first(&echo_errors)
    );
    rows
}

/// `asked`, capped so the gateway's sessions fit in its descriptor limit and our client
/// WebSockets in ours; with the reason when capped, which is also printed.
fn target_n(asked: usize, gateway: &GatewayProcess) -> (usize, Option<String>) {
    let gateway_limit = open_files_limit(&gateway.pid.to_string());
    let own_limit = open_files_limit("self");
    let gateway_fits = (gateway_limit.saturating_sub(FD_RESERVE) / FDS_PER_SESSION) as usize;
    let own_fits = own_limit.saturating_sub(FD_RESERVE) as usize;
    let reason = if asked > gateway_fits && gateway_fits <= own_fits {
        format!(
            "{asked} asked, N = {gateway_fits} because the gateway process may open \
             {gateway_limit} descriptors ({FDS_PER_SESSION} per session, {FD_RESERVE} kept back)"
        )
    } else if asked > own_fits {
        format!(
            "{asked} asked, N = {own_fits} because this benchmark process may open \
             {own_limit} descriptors (1 per client WebSocket, {FD_RESERVE} kept back)"
        )
    } else {
        return (asked, None);
    };
    eprintln!("target: {reason}");
    (asked.min(gateway_fits).min(own_fits), Some(reason))
}

// ---------------------------------------------------------------------------------------
// Work done the same way through every client

/// A terminal the benchmark types into and reads from, whatever carries it.
trait Shell {
    fn send(&mut self, text: &str);
    /// Appends at least one byte of terminal output to `out` within `WAIT`, or panics.
    fn recv(&mut self, out: &mut Vec<u8>);
}

/// Reads until `needle` has arrived; returns everything read.
fn wait_for(sh: &mut dyn Shell, needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let limit = Instant::now() + WAIT;
    loop {
        let from = out.len().saturating_sub(needle.len());
        sh.recv(&mut out);
        if find(&out[from..], needle).is_some() {
            return out;
        }
        assert!(
            Instant::now() < limit,
            "no {:?} within {WAIT:?}; got {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(&out[out.len().saturating_sub(200)..])
        );
    }
}

/// (first output byte, full prompt) in ms since `t0`.
fn wait_prompt(sh: &mut dyn Shell, t0: Instant) -> (f64, f64) {
    let mut out = Vec::new();
    sh.recv(&mut out);
    let first = ms(t0.elapsed());
    if find(&out, PROMPT).is_none() {
        wait_for(sh, PROMPT);
    }
    (first, ms(t0.elapsed()))
}

/// Runs `cat path` and returns the seconds until the marker after it arrives.
fn cat_run(sh: &mut dyn Shell, path: &Path, deadline: &Deadline) -> f64 {
    // The quotes split the marker in the typed (echoed) line, so only `echo`'s output matches;
    // the prompt after it means the shell is idle again for the next run.
    let command = format!("cat {}; echo CAT''DONE\r", path.display());
    let mut needle = b"CATDONE\r\n".to_vec();
    needle.extend_from_slice(PROMPT);
    let mut buf = Vec::with_capacity(1 << 20);
    let mut total = 0usize;
    let t0 = Instant::now();
    sh.send(&command);
    loop {
        let before = buf.len();
        sh.recv(&mut buf);
        total += buf.len() - before;
        if find(&buf, &needle).is_some() {
            break;
        }
        let cut = buf.len().saturating_sub(needle.len());
        buf.drain(..cut);
        deadline.check();
    }
    let secs = t0.elapsed().as_secs_f64();
    // onlcr turns each '\n' into "\r\n": anything less than the file means lost bytes.
    assert!(
        total >= PAYLOAD_BYTES,
        "cat delivered {total} bytes, fewer than the {PAYLOAD_BYTES}-byte file"
    );
    secs
}

/// All shells cat at once (released by a barrier); seconds from the first start to the last end.
fn parallel_cat<S: Shell + Send>(shells: &mut [S], path: &Path, deadline: &Deadline) -> f64 {
    let barrier = Barrier::new(shells.len());
    let spans: Vec<(Instant, Instant)> = thread::scope(|scope| {
        let handles: Vec<_> = shells
            .iter_mut()
            .map(|sh| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    cat_run(sh, path, deadline);
                    (start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a parallel cat panicked"))
            .collect()
    });
    let start = spans.iter().map(|s| s.0).min().expect("some shells");
    let end = spans.iter().map(|s| s.1).max().expect("some shells");
    (end - start).as_secs_f64()
}

/// Types `x`, returns ms until its echo; then erases it (untimed) so the line stays empty.
fn echo_once(sh: &mut dyn Shell) -> f64 {
    let mut out = Vec::new();
    let t0 = Instant::now();
    sh.send("x");
    while !out.contains(&b'x') {
        sh.recv(&mut out);
        assert!(t0.elapsed() < WAIT, "no echo within {WAIT:?}");
    }
    let elapsed = ms(t0.elapsed());
    // readline answers DEL at the end of the line with a backspace ("\b \b" or "\b\e[K").
    out.clear();
    sh.send("\x7f");
    while !out.contains(&b'\x08') {
        sh.recv(&mut out);
        assert!(t0.elapsed() < WAIT, "no erase echo within {WAIT:?}");
    }
    elapsed
}

/// Cats `path` with output post-processing off and compares what arrives with `expected`.
fn compare(
    sh: &mut dyn Shell,
    path: &Path,
    expected: &[u8],
    deadline: &Deadline,
) -> Result<(), String> {
    sh.send(&format!(
        "stty -onlcr; echo BEGIN''MARK; cat {}; echo END''MARK; stty onlcr\r",
        path.display()
    ));
    let mut out = Vec::new();
    let (begin, end) = (b"BEGINMARK\n", b"\nENDMARK\n");
    let limit = expected.len() + (64 << 10);
    while find(&out, end).is_none() {
        sh.recv(&mut out);
        deadline.check();
        if out.len() > limit + (1 << 20) {
            return Err(format!("no end marker after {} bytes", out.len()));
        }
    }
    let start = find(&out, begin).ok_or("no begin marker")? + begin.len();
    // The payload ends with '\n', which is also the first byte of the end needle.
    let stop = find(&out, end).expect("checked above") + 1;
    let got = &out[start..stop];
    if got == expected {
        return Ok(());
    }
    let at = got
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(expected.len()));
    Err(format!(
        "got {} bytes, expected {}; first difference at byte {at}",
        got.len(),
        expected.len()
    ))
}

// ---------------------------------------------------------------------------------------
// Clients

/// Direct: a libssh2 PTY shell driven from this process, like the gateway's bridge thread.
struct Direct {
    _session: Session,
    channel: Channel,
    buf: Vec<u8>,
}

impl Direct {
    fn open(addr: SocketAddr, key: &str) -> Direct {
        let tcp = TcpStream::connect_timeout(&addr, WAIT).expect("direct: connect to sshd");
        tcp.set_nodelay(true).expect("TCP_NODELAY");
        let mut session = Session::new().expect("direct: libssh2 session");
        session.set_tcp_stream(tcp);
        for dir in [MethodType::CryptCs, MethodType::CryptSc] {
            let _ = session.method_pref(dir, CIPHERS);
        }
        // Every blocking libssh2 call fails after this instead of hanging.
        session.set_timeout(WAIT.as_millis() as u32);
        session.handshake().expect("direct: SSH handshake");
        session
            .userauth_pubkey_memory(sshd::TEST_USER, None, key, None)
            .expect("direct: key authentication");
        let mut channel = session.channel_session().expect("direct: channel");
        channel
            .handle_extended_data(ExtendedData::Merge)
            .expect("direct: merge stderr");
        let _ = channel.setenv("LANG", "C.UTF-8");
        channel
            .request_pty(TERM, None, Some((COLS.into(), ROWS.into(), 0, 0)))
            .expect("direct: PTY");
        channel.shell().expect("direct: shell");
        Direct {
            _session: session,
            channel,
            buf: vec![0; 64 << 10],
        }
    }
}

impl Shell for Direct {
    fn send(&mut self, text: &str) {
        self.channel
            .write_all(text.as_bytes())
            .and_then(|()| self.channel.flush())
            .expect("direct: write to the shell");
    }

    fn recv(&mut self, out: &mut Vec<u8>) {
        let limit = Instant::now() + WAIT;
        loop {
            let n = self
                .channel
                .read(&mut self.buf)
                .unwrap_or_else(|e| panic!("direct: read from the shell: {e}"));
            if n > 0 {
                out.extend_from_slice(&self.buf[..n]);
                return;
            }
            assert!(!self.channel.eof(), "direct: the shell closed");
            assert!(Instant::now() < limit, "direct: no output within {WAIT:?}");
        }
    }
}

/// The gateway: `POST /create-session`, then the WebSocket, driven by a current-thread
/// runtime on the calling thread (no cross-thread wake-up in the timed path).
struct Gw {
    rt: Arc<Runtime>,
    ws: WebSocketStream<tokio::net::TcpStream>,
}

impl Gw {
    fn open(rt: Arc<Runtime>, addr: SocketAddr, body: &Value) -> Gw {
        let ws = rt.block_on(ws_open(addr, body));
        Gw { rt, ws }
    }

    fn close(mut self) {
        self.rt.block_on(async {
            let _ = tokio::time::timeout(WAIT, self.ws.close(None)).await;
        });
    }
}

impl Shell for Gw {
    fn send(&mut self, text: &str) {
        // As the page sends keystrokes: a binary frame of UTF-8.
        let frame = Message::binary(text.as_bytes().to_vec());
        self.rt.block_on(async {
            tokio::time::timeout(WAIT, self.ws.send(frame))
                .await
                .expect("gateway: send in time")
                .expect("gateway: send");
        });
    }

    fn recv(&mut self, out: &mut Vec<u8>) {
        self.rt.block_on(ws_recv(&mut self.ws, out));
    }
}

fn current_thread_runtime() -> Arc<Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime"),
    )
}

/// Creates a session and starts it on a new WebSocket; the prompt is still to come.
async fn ws_open(addr: SocketAddr, body: &Value) -> WebSocketStream<tokio::net::TcpStream> {
    let work = async {
        let id = create_session(addr, body).await;
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("gateway: connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        // A small read buffer, as the gateway uses: tungstenite zero-fills the whole buffer
        // before each read, and a browser pays no such cost, so the default 128 KiB would
        // bill the gateway for the benchmark client's memsets.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(16 * 1024);
        let (mut ws, response) = tokio_tungstenite::client_async_with_config(
            format!("ws://{addr}/ws"),
            stream,
            Some(config),
        )
        .await
        .expect("gateway: WebSocket upgrade");
        assert_eq!(response.status(), 101);
        let start = json!(["start-session", {"id": id, "cols": COLS, "rows": ROWS}]);
        ws.send(Message::text(start.to_string()))
            .await
            .expect("gateway: send start-session");
        ws
    };
    tokio::time::timeout(WAIT, work)
        .await
        .expect("gateway: session opened in time")
}

/// Appends the next binary frame to `out`; skips `connection-ready`, panics on errors.
async fn ws_recv(ws: &mut WebSocketStream<tokio::net::TcpStream>, out: &mut Vec<u8>) {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap_or_else(|_| panic!("gateway: no output within {WAIT:?}"));
        match message {
            Some(Ok(Message::Binary(bytes))) => {
                out.extend_from_slice(&bytes);
                return;
            }
            Some(Ok(Message::Text(text))) => {
                let event: Value = serde_json::from_str(&text).expect("text frames are JSON");
                match event[0].as_str() {
                    Some("connection-ready") => {}
                    Some("warning") => eprintln!("gateway warning: {text}"),
                    _ => panic!("gateway: unexpected event {text}"),
                }
            }
            Some(Ok(Message::Close(frame))) => panic!("gateway: socket closed: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("gateway: WebSocket error: {e}"),
            None => panic!("gateway: WebSocket ended"),
        }
    }
}

/// Runs `job` on every item, at most `limit` at once, each as its own task on the current
/// runtime so that a panic (a failed wait, a closed socket) fails that item alone: its
/// `Err` holds the panic message. In the items' order.
async fn bounded<I, F, Fut>(
    items: impl IntoIterator<Item = I>,
    limit: usize,
    job: F,
) -> Vec<Result<Fut::Output, String>>
where
    F: Fn(I) -> Fut,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(limit));
    let tasks: Vec<_> = items
        .into_iter()
        .map(|item| {
            let permits = permits.clone();
            let work = job(item);
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore open");
                work.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.map_err(|e| {
            match e.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic without a message".to_owned()),
                Err(e) => e.to_string(),
            }
        }));
    }
    out
}

/// The successes, and the error messages.
fn split_results<T>(results: Vec<Result<T, String>>) -> (Vec<T>, Vec<String>) {
    let mut ok = Vec::with_capacity(results.len());
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(v) => ok.push(v),
            Err(e) => errors.push(e),
        }
    }
    (ok, errors)
}

/// `POST /create-session` with a JSON body; returns the id.
async fn create_session(addr: SocketAddr, body: &Value) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("gateway: connect for create-session");
    let request = format!(
        "POST /create-session HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {BENCH_TOKEN}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("gateway: send create-session");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("gateway: read create-session answer");
    let json = json_body(&response);
    json["id"]
        .as_str()
        .unwrap_or_else(|| {
            panic!(
                "create-session answered {}",
                String::from_utf8_lossy(&response)
            )
        })
        .to_owned()
}

/// The JSON object in an HTTP answer, whether sent with a length or chunked.
fn json_body(response: &[u8]) -> Value {
    let text = String::from_utf8_lossy(response);
    let (start, end) = (text.find('{'), text.rfind('}'));
    match (start, end) {
        (Some(s), Some(e)) if s < e => serde_json::from_str(&text[s..=e])
            .unwrap_or_else(|err| panic!("bad JSON in {text:?}: {err}")),
        _ => panic!("no JSON in {text:?}"),
    }
}

/// The OpenSSH client, `ssh -tt` with key auth, its stdout read by a thread.
struct OpenSsh {
    child: Child,
    stdin: ChildStdin,
    output: mpsc::Receiver<Vec<u8>>,
}

impl OpenSsh {
    fn open(addr: SocketAddr, key_file: &Path) -> OpenSsh {
        let mut child = Command::new("ssh")
            .arg("-tt")
            .arg("-F")
            .arg("/dev/null")
            .arg("-i")
            .arg(key_file)
            .args(["-p", &addr.port().to_string()])
            .args(["-e", "none"])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .args(["-o", &format!("Ciphers={CIPHERS}")])
            .arg(format!("{}@{}", sshd::TEST_USER, addr.ip()))
            .env("TERM", TERM)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ssh (openssh-client)");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let (tx, output) = mpsc::sync_channel(64);
        thread::spawn(move || {
            let mut buf = vec![0; 64 << 10];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        OpenSsh {
            child,
            stdin,
            output,
        }
    }
}

impl Shell for OpenSsh {
    fn send(&mut self, text: &str) {
        self.stdin
            .write_all(text.as_bytes())
            .and_then(|()| self.stdin.flush())
            .expect("ssh: write to stdin");
    }

    fn recv(&mut self, out: &mut Vec<u8>) {
        match self.output.recv_timeout(WAIT) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(e) => panic!("ssh -tt: no output within {WAIT:?} ({e})"),
        }
    }
}

impl Drop for OpenSsh {
    fn drop(&mut self) {
        // Our own child, by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// The gateway process

/// The gateway binary on a free loopback port; killed by PID on drop, and by a watchdog
/// shell if this process dies without dropping it.
struct GatewayProcess {
    pid: u32,
    addr: SocketAddr,
    child: Child,
    watchdog: Option<Watchdog>,
}

#[derive(Debug, Clone, Copy)]
struct ProcStatus {
    rss_kb: u64,
    threads: u64,
}

impl GatewayProcess {
    fn start() -> GatewayProcess {
        Self::start_with(&[])
    }

    /// The gateway with `extra` flags besides the benchmark's own.
    fn start_with(extra: &[&str]) -> GatewayProcess {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("find a free loopback port")
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let child = Command::new(env!("CARGO_BIN_EXE_alfresco-ssh"))
            // Hundreds of sessions a minute are the point here, so no create-session limit.
            .args([
                "--listen",
                &addr.to_string(),
                "--log",
                "warn",
                "--create-rate-limit",
                "0",
                // Sessions end when the benchmark closes their sockets, so that "closed"
                // means gone; the resume ring (its per-byte cost) is on all the same.
                "--resume-grace",
                "0",
            ])
            .args(extra)
            .env("ALFRESCO_API_TOKEN", BENCH_TOKEN)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the gateway binary");
        let pid = child.id();
        let watchdog = Watchdog::spawn(&pid.to_string(), None);
        let mut gateway = GatewayProcess {
            pid,
            addr,
            child,
            watchdog: Some(watchdog),
        };
        let limit = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = gateway.child.try_wait().expect("poll the gateway") {
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

    fn healthz(&self) -> Value {
        try_healthz(self.addr).unwrap_or_else(|e| panic!("gateway /healthz: {e}"))
    }

    /// Waits (bounded) until the gateway has no live or pending session.
    fn wait_idle(&self) {
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

    fn cpu_ticks(&self) -> u64 {
        cpu_ticks(&self.pid.to_string())
    }

    fn status(&self) -> ProcStatus {
        proc_status(self.pid)
    }

    /// Where the resident memory is: the gateway's mappings grouped by size (thread stacks
    /// are all one size), largest total first. Printed by the scale scenario to show what
    /// an idle session costs.
    fn rss_by_mapping_size(&self) -> Vec<(u64, usize, u64)> {
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

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        drop(self.watchdog.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The russh target (support/ssh_target.rs): this bench binary re-executed, in a process of
/// its own so its sockets count against its descriptor limit, not ours. Killed by PID on
/// drop, and by a watchdog shell if this process dies without dropping it.
struct TargetProcess {
    pid: u32,
    addr: SocketAddr,
    child: Child,
    watchdog: Option<Watchdog>,
}

impl TargetProcess {
    fn start() -> TargetProcess {
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
            child,
            watchdog: Some(Watchdog::spawn(&pid.to_string(), None)),
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

impl Drop for TargetProcess {
    fn drop(&mut self) {
        drop(self.watchdog.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status(pid: u32) -> ProcStatus {
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
fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list /proc/<pid>/fd")
        .count()
}

/// The soft "Max open files" of a process, from `/proc/<pid>/limits`.
fn open_files_limit(pid: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).expect("read /proc limits");
    text.lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric \"Max open files\" in /proc/{pid}/limits"))
}

/// As the gateway does at start (src/main.rs): the soft descriptor limit up to the hard one.
fn raise_fd_limit() {
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

fn try_healthz(addr: SocketAddr) -> std::io::Result<Value> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(json_body(&response))
}

// ---------------------------------------------------------------------------------------
// Payloads, /proc and reporting

struct Payloads {
    /// 0755 with 0644 files: the test user's shell must be able to `cat` them.
    dir: TempDir,
    printable: PathBuf,
    utf8: PathBuf,
}

impl Payloads {
    fn write(key_text: &str) -> Payloads {
        let dir = tempfile::Builder::new()
            .prefix("alfresco-bench-")
            .tempdir()
            .expect("create the payload dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            fs::write(&path, bytes).expect("write a payload");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod file");
            path
        };
        let printable = write("printable.txt", &printable_payload(PAYLOAD_BYTES));
        let utf8 = write("utf8.txt", utf8_payload(UTF8_BYTES).as_bytes());
        // The OpenSSH client's key: root-owned and 0600 in a 0700 dir, or ssh ignores it.
        let keys = dir.path().join("keys");
        fs::create_dir(&keys).expect("create the key dir");
        fs::set_permissions(&keys, fs::Permissions::from_mode(0o700)).expect("chmod key dir");
        let key = keys.join("id_ed25519");
        fs::write(&key, key_text).expect("write the client key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod key");
        Payloads {
            dir,
            printable,
            utf8,
        }
    }
}

/// Lines of 79 printable ASCII characters and a newline.
fn printable_payload(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 80);
    let mut line = 0usize;
    while out.len() < len {
        out.extend((0..79).map(|j| b' ' + ((line + j) % 95) as u8));
        out.push(b'\n');
        line += 1;
    }
    out.truncate(len - 1);
    out.push(b'\n');
    out
}

/// Lines of 64 characters drawn from the 1-, 2-, 3- and 4-byte UTF-8 ranges (no controls,
/// no surrogates), from a fixed xorshift seed so every run sends the same file.
fn utf8_payload(len: usize) -> String {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = String::with_capacity(len + 256);
    while out.len() < len {
        let mut count = 0;
        while count < 64 {
            let r = next();
            let (lo, hi) = match r % 4 {
                0 => (0x21, 0x7e),
                1 => (0xa0, 0x7ff),
                2 => (0x800, 0xffff),
                _ => (0x1_0000, 0x10_ffff),
            };
            if let Some(c) = char::from_u32(lo + ((r >> 8) as u32) % (hi - lo + 1)) {
                out.push(c);
                count += 1;
            }
        }
        out.push('\n');
    }
    out
}

/// utime + stime of `/proc/<pid>/stat`, in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the ")" that closes the command name start at field 3 (state).
    let rest = &stat[stat.rfind(')').expect("stat has a comm field") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| fields[i].parse::<u64>().expect("numeric stat field");
    num(11) + num(12)
}

/// `getconf CLK_TCK`, or 100 (Linux's USER_HZ on every common architecture) if that fails.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            eprintln!("getconf CLK_TCK failed; assuming 100");
            100.0
        })
}

fn ticks_ms(ticks: u64, clk_tck: f64) -> f64 {
    ticks as f64 * 1000.0 / clk_tck
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / MIB
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// Nearest-rank percentile.
/// The `p`th percentile of `v`; NaN (printed as "–") when there is nothing to rank.
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Deadline {
    name: &'static str,
    at: Instant,
}

impl Deadline {
    fn new(name: &'static str) -> Deadline {
        eprintln!("bench: scenario {name}");
        Deadline {
            name,
            at: Instant::now() + SCENARIO_LIMIT,
        }
    }

    fn check(&self) {
        assert!(
            Instant::now() < self.at,
            "scenario {} did not finish within {SCENARIO_LIMIT:?}; failing rather than hanging",
            self.name
        );
    }
}

/// One figure; NaN where a side does not apply.
struct Row {
    figure: String,
    unit: &'static str,
    direct: f64,
    gateway: f64,
}

impl Row {
    fn new(figure: &str, unit: &'static str, direct: f64, gateway: f64) -> Row {
        Row {
            figure: figure.to_owned(),
            unit,
            direct,
            gateway,
        }
    }

    fn ratio(&self) -> f64 {
        self.gateway / self.direct
    }

    fn json(&self) -> Value {
        let num = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
        json!({"figure": self.figure, "unit": self.unit, "direct": num(self.direct),
               "gateway": num(self.gateway), "ratio": num(self.ratio())})
    }
}

fn fmt(v: f64) -> String {
    match v {
        v if !v.is_finite() => "–".to_owned(),
        v if v.abs() >= 100.0 => format!("{v:.0}"),
        v if v.abs() >= 10.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    }
}

/// Prints the rows and a JSON line, and writes `target/bench/<scenario>.json`.
fn report(scenario: &str, rows: Vec<Row>, extra: Value) -> Vec<(String, Row)> {
    println!("\n{scenario}: | figure | direct | gateway | gateway/direct |");
    for row in &rows {
        println!(
            "{scenario}: | {} ({}) | {} | {} | {} |",
            row.figure,
            row.unit,
            fmt(row.direct),
            fmt(row.gateway),
            fmt(row.ratio())
        );
    }
    let line = json!({
        "scenario": scenario,
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "details": extra,
    });
    println!("{line}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    fs::create_dir_all(&dir).expect("create target/bench");
    fs::write(dir.join(format!("{scenario}.json")), format!("{line}\n"))
        .expect("write the scenario JSON");
    rows.into_iter().map(|r| (scenario.to_owned(), r)).collect()
}
