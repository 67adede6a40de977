//! The `soak` scenario (issue 19; `make soak`, or `BENCH_ONLY=soak`): the long, mixed life of
//! a bastion gateway in one run. A population of simulated people, each on its own session,
//! each following a random script seeded from `SOAK_SEED` and its number (so a failure can
//! be replayed), types with human timing, runs commands with known output, pastes, resizes,
//! floods, idles, drops its socket and resumes, reloads, lets a viewer watch, and exits with
//! a status; some kill their own sshd child (an injected fault). Meanwhile bursts of
//! create-session go past the rate limit, and at the end a drain is started. Every output
//! is checked byte-exact; the run fails (after printing its table) if a byte was lost or
//! repeated, or a session ended other than as its script said.
//!
//! Only named runs include it (`BENCH_ONLY=soak`): it takes `SOAK_MINUTES` (default 10) of
//! the machine. `SOAK_SESSIONS` (default 200) sets the population, `SOAK_SEED` the seed
//! (default: from the clock, printed), `SOAK_PERSON` runs one person of that seed alone.
//! The gateway is its own process with resume on and a ring larger than any flood here, so
//! that a resume must replay exactly.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::*;

type Ws = WebSocketStream<tokio::net::TcpStream>;

const MINUTES: f64 = 10.0;
const SESSIONS: usize = 200;
/// The soak gateway's resume ring: more than the largest flood a person resumes across.
const RING_BYTES: usize = 8 << 20;
/// A person's output history is kept (for the reload check) up to this size.
const HISTORY_CAP: usize = 1 << 20;
/// Sessions opened at once: sshd forks per handshake, and a storm of them measures sshd.
const OPENING_AT_ONCE: usize = 8;
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// A person that failed this often stops, so one defect does not flood the report.
const MAX_FAILURES_PER_PERSON: usize = 3;
/// Script entries kept for a failure report.
const SCRIPT_TAIL: usize = 40;
/// The drain at the end: sessions kept open for it, and its timeout.
const DRAIN_SESSIONS: usize = 3;
const DRAIN_SECS: u64 = 5;

/// splitmix64: tiny, seedable, and good enough to pick actions and sizes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Log-uniform in `lo..=hi`: sizes from a KiB to MiBs, each decade as likely.
    fn log_range(&mut self, lo: u64, hi: u64) -> u64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
        ((l + unit * (h - l)).exp() as u64).clamp(lo, hi)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

/// What every person adds up.
#[derive(Default)]
struct Tally {
    sessions: u64,
    commands: u64,
    bytes_checked: u64,
    /// Bytes of output checks that did not match (lost, repeated or garbled).
    bytes_bad: u64,
    resumes: u64,
    resumes_exact: u64,
    reloads: u64,
    reloads_exact: u64,
    viewers: u64,
    links_revoked: u64,
    resizes: u64,
    /// Resizes whose `stty size` showed the old size first and the new one on a retry.
    resizes_late: u64,
    pastes: u64,
    floods: u64,
    exits: u64,
    /// Fault name → (injected, survived as expected).
    faults: BTreeMap<&'static str, (u64, u64)>,
    /// Every `ssh-error`/`warning` code and close reason seen.
    codes: BTreeMap<String, u64>,
    echo_us: Vec<f64>,
    /// Reports of failures: seed, person, script, what went wrong.
    failures: Vec<String>,
}

type Shared = Arc<Mutex<Tally>>;

fn tally(shared: &Shared) -> std::sync::MutexGuard<'_, Tally> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

struct Knobs {
    minutes: f64,
    sessions: usize,
    seed: u64,
    person: Option<usize>,
}

fn knobs() -> Knobs {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let seed = var("SOAK_SEED")
        .map(|v| v.parse().expect("SOAK_SEED is a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_007)
        });
    Knobs {
        minutes: var("SOAK_MINUTES").map_or(MINUTES, |v| v.parse().expect("SOAK_MINUTES")),
        sessions: var("SOAK_SESSIONS").map_or(SESSIONS, |v| v.parse().expect("SOAK_SESSIONS")),
        seed,
        person: var("SOAK_PERSON").map(|v| v.parse().expect("SOAK_PERSON is a number")),
    }
}

/// One sample of the gateway's process.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    cpu_ticks: u64,
    rss_kb: u64,
    threads: u64,
    fds: usize,
}

fn sample(gw: &GatewayProcess, t0: Instant) -> Sample {
    let status = gw.status();
    Sample {
        secs: t0.elapsed().as_secs_f64(),
        cpu_ticks: gw.cpu_ticks(),
        rss_kb: status.rss_kb,
        threads: status.threads,
        fds: open_fds(gw.pid),
    }
}

pub(crate) fn soak(bed: &Bed) -> Vec<(String, Row)> {
    let mut knobs = knobs();
    let population: Vec<usize> = match knobs.person {
        Some(p) => vec![p],
        None => (0..knobs.sessions).collect(),
    };
    // From here on: the people in this run (one, when replaying one).
    knobs.sessions = population.len();
    let run_for = Duration::from_secs_f64(knobs.minutes * 60.0);
    eprintln!(
        "soak: seed {} · {} people · {:.1} min (replay one: SOAK_SEED={} SOAK_PERSON=<n>)",
        knobs.seed,
        population.len(),
        knobs.minutes,
        knobs.seed
    );
    // A limit the population fits under and a burst of twice it does not.
    let rate = (population.len() + 100).to_string();
    let ring = RING_BYTES.to_string();
    let most = (population.len() * 2 + 50).to_string();
    let drain = format!("{DRAIN_SECS}s");
    let gateway = GatewayProcess::start_plain(&[
        "--resume-grace",
        "60s",
        "--resume-buffer",
        &ring,
        "--create-rate-limit",
        &rate,
        "--max-sessions",
        &most,
        "--max-pending",
        &most,
        "--drain-timeout",
        &drain,
    ]);
    let addr = gateway.addr;
    let t0 = Instant::now();
    let start = sample(&gateway, t0);
    let shared: Shared = Arc::default();

    // The sampler: the gateway's CPU, memory, threads and descriptors over the run.
    let stop = Arc::new(AtomicBool::new(false));
    let samples = thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut samples = vec![start];
            while !stop.load(Ordering::Relaxed) {
                let next = Instant::now() + SAMPLE_EVERY;
                while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(100));
                }
                samples.push(sample(&gateway, t0));
            }
            samples
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("soak: tokio runtime");
        let end = Instant::now() + run_for;
        rt.block_on(async {
            let opening = Arc::new(tokio::sync::Semaphore::new(OPENING_AT_ONCE));
            let mut people = Vec::new();
            for (n, &who) in population.iter().enumerate() {
                let person = Person {
                    who,
                    rng: Rng(knobs.seed ^ (who as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)),
                    seed: knobs.seed,
                    addr,
                    body: bed.body(),
                    shared: shared.clone(),
                    opening: opening.clone(),
                    script: Vec::new(),
                    end,
                    failures: 0,
                };
                // Staggered arrivals, as people do, rather than one fork storm.
                let delay = Duration::from_millis(n as u64 * 50);
                people.push(tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    person.live().await
                }));
            }
            let bursts = tokio::spawn(bursts(addr, bed.body(), shared.clone(), end, knobs.seed));
            // Each person stops after its last action: bounded by the run and one action.
            let limit = run_for + SCENARIO_LIMIT;
            for person in people {
                match tokio::time::timeout(limit, person).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tally(&shared)
                        .failures
                        .push(format!("a person panicked: {e}")),
                    Err(_) => tally(&shared)
                        .failures
                        .push("a person did not finish in time".to_owned()),
                }
            }
            let _ = tokio::time::timeout(WAIT, bursts).await;
        });
        // Every session closed: the gateway must be back where it started.
        let settled = wait_settled(&gateway, start, t0);
        stop.store(true, Ordering::Relaxed);
        let mut samples = sampler.join().expect("soak: the sampler panicked");
        samples.push(settled);
        samples
    });
    let end_health = gateway.healthz();
    let end = *samples.last().expect("samples");
    let drained = drain_at_end(&gateway, bed, &shared);
    report_soak(&knobs, &shared, &samples, start, end, &end_health, drained)
}

/// Waits (bounded) for live and pending sessions to reach zero and the threads and
/// descriptors to come back to their start; returns the last sample either way.
fn wait_settled(gateway: &GatewayProcess, start: Sample, t0: Instant) -> Sample {
    let limit = Instant::now() + WAIT;
    loop {
        let health = gateway.healthz();
        let now = sample(gateway, t0);
        let idle = health["live"] == 0 && health["pending"] == 0;
        if (idle && now.threads <= start.threads && now.fds <= start.fds) || Instant::now() > limit
        {
            return now;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The drain near the end: a few sessions open, then SIGTERM. Each must be warned, then
/// ended by the drain, and the gateway must exit on its own within the drain timeout.
/// Returns (sessions warned and ended as expected, sessions open, the gateway exited).
fn drain_at_end(gateway: &GatewayProcess, bed: &Bed, shared: &Shared) -> (usize, usize, bool) {
    let rt = current_thread_runtime();
    let addr = gateway.addr;
    let sessions = rt.block_on(async {
        let mut open = Vec::new();
        for _ in 0..DRAIN_SESSIONS {
            match Sess::open(addr, &bed.body()).await {
                Ok(s) => open.push(s),
                Err(e) => tally(shared)
                    .failures
                    .push(format!("drain: a session did not open: {e}")),
            }
        }
        open
    });
    let opened = sessions.len();
    let pid = rustix::process::Pid::from_raw(gateway.pid as i32).expect("a gateway pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)
        .expect("soak: SIGTERM the gateway");
    let ended = rt.block_on(async {
        let mut ended = 0;
        for mut s in sessions {
            let warned = s.expect_event("warning").await;
            let last = s.expect_any_end().await;
            let warned = warned.is_ok_and(|w| w["code"] == "server_draining");
            match last {
                Ok(code) => {
                    *tally(shared)
                        .codes
                        .entry(format!("drain: {code}"))
                        .or_default() += 1;
                    if warned {
                        ended += 1;
                    }
                }
                Err(e) => tally(shared)
                    .failures
                    .push(format!("drain: a session was not ended by the drain: {e}")),
            }
        }
        ended
    });
    let limit = Instant::now() + Duration::from_secs(DRAIN_SECS) + WAIT;
    let mut exited = false;
    while Instant::now() < limit {
        if !Path::new(&format!("/proc/{}/stat", gateway.pid)).exists()
            || fs::read_to_string(format!("/proc/{}/stat", gateway.pid))
                .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
        {
            exited = true;
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    (ended, opened, exited)
}

/// Bursts of create-session past the rate limit, about once a minute: the limit answers
/// 429, and the sessions that did get created are revoked again (nothing left pending).
async fn bursts(addr: SocketAddr, body: Value, shared: Shared, end: Instant, seed: u64) {
    let mut rng = Rng(seed ^ 0xB0B5);
    loop {
        let pause = Duration::from_secs(rng.range(20, 60));
        if Instant::now() + pause >= end {
            return;
        }
        tokio::time::sleep(pause).await;
        let (mut created, mut limited) = (0u64, 0u64);
        for _ in 0..200 {
            match http(addr, "POST", "/create-session", BENCH_TOKEN, Some(&body)).await {
                Ok((201, answer)) => {
                    created += 1;
                    if let Some(id) = answer["id"].as_str() {
                        let _ = http(
                            addr,
                            "DELETE",
                            &format!("/sessions/{id}"),
                            BENCH_TOKEN,
                            None,
                        )
                        .await;
                    }
                }
                Ok((429, _)) => limited += 1,
                Ok((status, answer)) => {
                    tally(&shared)
                        .failures
                        .push(format!("burst: create-session answered {status} {answer}"));
                    return;
                }
                Err(e) => {
                    tally(&shared).failures.push(format!("burst: {e}"));
                    return;
                }
            }
            if limited >= 20 {
                break;
            }
        }
        let mut t = tally(&shared);
        let fault = t.faults.entry("create-session burst").or_default();
        fault.0 += 1;
        fault.1 += u64::from(limited > 0);
        *t.codes.entry("429 rate_limited".to_owned()).or_default() += limited;
        *t.codes
            .entry("burst: created and revoked".to_owned())
            .or_default() += created;
    }
}

/// A plain HTTP/1.1 request; the status and the JSON body (`null` if none).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Authorization: Bearer {bearer}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status line in {text:?}"))?;
        let json = match (text.find('{'), text.rfind('}')) {
            (Some(s), Some(e)) if s < e => {
                serde_json::from_str(&text[s..=e]).unwrap_or(Value::Null)
            }
            _ => Value::Null,
        };
        Ok((status, json))
    };
    tokio::time::timeout(WAIT, work)
        .await
        .map_err(|_| format!("{method} {path}: no answer in {WAIT:?}"))?
}

/// One WebSocket event.
enum Ev {
    Output,
    Named(String, Value),
    Closed(String),
}

/// A person's session as its page sees it.
struct Sess {
    ws: Ws,
    id: String,
    token: String,
    /// Output bytes since the session began (the resume offset).
    received: u64,
    /// Output since the current action began.
    seen: Vec<u8>,
    /// Where the last search of `seen` ended, so a wait does not rescan.
    searched: usize,
    /// All output, while it is under `HISTORY_CAP` and exact (for the reload check).
    history: Option<Vec<u8>>,
    cols: u16,
    rows: u16,
}

async fn connect_ws(addr: SocketAddr) -> Result<Ws, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .map_err(|e| format!("WebSocket upgrade: {e}"))?;
    Ok(ws)
}

impl Sess {
    /// create-session (retrying on 429 as a CI job would), start-session, the prompt.
    async fn open(addr: SocketAddr, body: &Value) -> Result<Sess, String> {
        let mut id = None;
        for _ in 0..60 {
            match http(addr, "POST", "/create-session", BENCH_TOKEN, Some(body)).await? {
                (201, answer) => {
                    id = answer["id"].as_str().map(str::to_owned);
                    break;
                }
                (429, _) => tokio::time::sleep(Duration::from_secs(2)).await,
                (status, answer) => return Err(format!("create-session: {status} {answer}")),
            }
        }
        let id = id.ok_or("create-session: rate-limited for two minutes")?;
        let mut ws = connect_ws(addr).await?;
        let start = json!(["start-session", {"id": id, "cols": COLS, "rows": ROWS}]);
        send(&mut ws, Message::text(start.to_string())).await?;
        let mut sess = Sess {
            ws,
            id,
            token: String::new(),
            received: 0,
            seen: Vec::new(),
            searched: 0,
            history: Some(Vec::new()),
            cols: COLS,
            rows: ROWS,
        };
        let ready = sess.expect_event("connection-ready").await?;
        sess.token = ready["resume_token"]
            .as_str()
            .ok_or("connection-ready without a resume token")?
            .to_owned();
        sess.read_until(PROMPT).await?;
        Ok(sess)
    }

    /// Starts a new action: what it checks is the output from here on.
    fn mark(&mut self) {
        self.seen.clear();
        self.searched = 0;
    }

    async fn next(&mut self) -> Result<Ev, String> {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .map_err(|_| format!("nothing from the gateway for {WAIT:?}"))?;
            return Ok(match message {
                Some(Ok(Message::Binary(bytes))) => {
                    self.received += bytes.len() as u64;
                    self.seen.extend_from_slice(&bytes);
                    if let Some(h) = self.history.as_mut() {
                        if h.len() + bytes.len() <= HISTORY_CAP {
                            h.extend_from_slice(&bytes);
                        } else {
                            self.history = None;
                        }
                    }
                    Ev::Output
                }
                Some(Ok(Message::Text(text))) => {
                    let v: Value =
                        serde_json::from_str(&text).map_err(|e| format!("bad JSON {e}"))?;
                    Ev::Named(v[0].as_str().unwrap_or("").to_owned(), v[1].clone())
                }
                Some(Ok(Message::Close(frame))) => Ev::Closed(
                    frame.map_or("no code".to_owned(), |f| u16::from(f.code).to_string()),
                ),
                Some(Ok(_)) => continue,
                Some(Err(e)) => Ev::Closed(format!("error: {e}")),
                None => Ev::Closed("ended".to_owned()),
            });
        }
    }

    /// Reads output until `needle` appears after the mark; any event but a warning fails.
    async fn read_until(&mut self, needle: &[u8]) -> Result<(), String> {
        let limit = Instant::now() + SCENARIO_LIMIT;
        loop {
            let from = self.searched.saturating_sub(needle.len());
            if find(&self.seen[from..], needle).is_some() {
                return Ok(());
            }
            self.searched = self.seen.len();
            if Instant::now() > limit {
                return Err(format!(
                    "{:?} not seen in time",
                    String::from_utf8_lossy(needle)
                ));
            }
            match self.next().await? {
                Ev::Output => {}
                Ev::Named(name, data) if name == "warning" => {
                    return Err(format!("warning {data}"));
                }
                Ev::Named(name, data) => return Err(format!("unexpected {name} {data}")),
                Ev::Closed(why) => return Err(format!("socket closed ({why})")),
            }
        }
    }

    /// Reads (keeping output) until the named event; another named event fails.
    async fn expect_event(&mut self, want: &str) -> Result<Value, String> {
        for _ in 0..100_000 {
            match self.next().await? {
                Ev::Output => {}
                Ev::Named(name, data) if name == want => return Ok(data),
                Ev::Named(name, data) => return Err(format!("{name} {data} instead of {want}")),
                Ev::Closed(why) => return Err(format!("socket closed ({why}) instead of {want}")),
            }
        }
        Err(format!("no {want} in 100000 frames"))
    }

    /// The session's last event: `ssh-closed` (its reason) or `ssh-error` (its code).
    async fn expect_any_end(&mut self) -> Result<String, String> {
        for _ in 0..100_000 {
            match self.next().await? {
                Ev::Output => {}
                Ev::Named(name, data) if name == "ssh-closed" => {
                    return Ok(format!(
                        "ssh-closed {}",
                        data["reason"].as_str().unwrap_or("?")
                    ));
                }
                Ev::Named(name, data) if name == "ssh-error" => {
                    return Ok(format!(
                        "ssh-error {}",
                        data["code"].as_str().unwrap_or("?")
                    ));
                }
                Ev::Named(..) => {}
                Ev::Closed(why) => {
                    return Err(format!("socket closed ({why}) without a last event"));
                }
            }
        }
        Err("no end in 100000 frames".to_owned())
    }

    async fn input(&mut self, text: &str) -> Result<(), String> {
        let frame = json!(["ssh-input", text]).to_string();
        send(&mut self.ws, Message::text(frame)).await
    }
}

async fn send(ws: &mut Ws, message: Message) -> Result<(), String> {
    match tokio::time::timeout(WAIT, ws.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("send: {e}")),
        Err(_) => Err(format!("send: not taken in {WAIT:?}")),
    }
}

/// `seq 1 n` as a terminal shows it.
fn seq_text(n: u64) -> Vec<u8> {
    let mut text = Vec::new();
    for i in 1..=n {
        text.extend_from_slice(i.to_string().as_bytes());
        text.extend_from_slice(b"\r\n");
    }
    text
}

/// Checks that the output after the echoed command line (its first CRLF) is `expected`
/// followed by `then`. The count of bytes that differ, or 0.
fn check_after_command(seen: &[u8], expected: &[u8], then: &[u8]) -> Result<(), String> {
    let start = find(seen, b"\r\n").ok_or("no end of the command line")? + 2;
    let got = &seen[start..];
    if got.len() >= expected.len() + then.len()
        && got[..expected.len()] == *expected
        && got[expected.len()..expected.len() + then.len()] == *then
    {
        return Ok(());
    }
    let same = got.iter().zip(expected).take_while(|(a, b)| a == b).count();
    Err(format!(
        "output differs at byte {same} of {} (got {} bytes): {:?}",
        expected.len(),
        got.len(),
        String::from_utf8_lossy(&got[same..(same + 80).min(got.len())])
    ))
}

/// What one action did to the session.
enum Next {
    Goes,
    /// The session ended as the script said; open a new one.
    Ended,
}

struct Person {
    who: usize,
    rng: Rng,
    seed: u64,
    addr: SocketAddr,
    body: Value,
    shared: Shared,
    opening: Arc<tokio::sync::Semaphore>,
    /// What it did, for a failure report.
    script: Vec<String>,
    end: Instant,
    failures: usize,
}

impl Person {
    async fn live(mut self) {
        let mut actions = 0u64;
        while Instant::now() < self.end && self.failures < MAX_FAILURES_PER_PERSON {
            let opened = {
                let _permit = self.opening.acquire().await.expect("semaphore open");
                Sess::open(self.addr, &self.body).await
            };
            let mut sess = match opened {
                Ok(s) => s,
                Err(e) => {
                    self.fail("open", &e, None);
                    continue;
                }
            };
            tally(&self.shared).sessions += 1;
            self.note(format!("opened {}", &sess.id[..8]));
            loop {
                if Instant::now() >= self.end {
                    // The run is over: leave as a person does.
                    let _ = self.exit(&mut sess, 0).await;
                    return;
                }
                actions += 1;
                match self.act(&mut sess, actions).await {
                    Ok(Next::Goes) => {}
                    Ok(Next::Ended) => break,
                    Err((what, e)) => {
                        self.fail(what, &e, Some(&sess.seen));
                        // Ended through the API, whatever state the shell is in; a dropped
                        // socket would leave it detached for the resume grace.
                        let path = format!("/sessions/{}", sess.id);
                        let _ = http(self.addr, "DELETE", &path, BENCH_TOKEN, None).await;
                        break;
                    }
                }
            }
        }
    }

    fn note(&mut self, entry: String) {
        self.script.push(entry);
        if self.script.len() > SCRIPT_TAIL * 2 {
            self.script.drain(..SCRIPT_TAIL);
        }
    }

    fn fail(&mut self, what: &str, error: &str, seen: Option<&[u8]>) {
        self.failures += 1;
        let tail =
            seen.map(|s| String::from_utf8_lossy(&s[s.len().saturating_sub(200)..]).into_owned());
        let start = self.script.len().saturating_sub(SCRIPT_TAIL);
        let report = format!(
            "seed {} person {} failed in {what}: {error}\n  last output: {:?}\n  script: {}",
            self.seed,
            self.who,
            tail.unwrap_or_default(),
            self.script[start..].join(" · ")
        );
        eprintln!("soak: {report}");
        tally(&self.shared).failures.push(report);
    }

    /// Picks and runs one action. An error names the action.
    async fn act(&mut self, s: &mut Sess, n: u64) -> Result<Next, (&'static str, String)> {
        let roll = self.rng.range(0, 99);
        let marker = format!("p{}a{n}", self.who);
        s.mark();
        match roll {
            0..=29 => self.command(s, &marker).await.map_err(|e| ("command", e))?,
            30..=39 => self.paste(s, &marker).await.map_err(|e| ("paste", e))?,
            40..=49 => self.resize(s).await.map_err(|e| ("resize", e))?,
            50..=59 => self
                .flood(s, &marker, false)
                .await
                .map_err(|e| ("flood", e))?,
            60..=64 => self
                .flood(s, &marker, true)
                .await
                .map_err(|e| ("slow reader", e))?,
            65..=74 => self.idle(s).await.map_err(|e| ("idle", e))?,
            75..=82 => self
                .drop_and_resume(s, &marker)
                .await
                .map_err(|e| ("resume", e))?,
            83..=86 => self.reload(s).await.map_err(|e| ("reload", e))?,
            87..=92 => self.viewer(s, &marker).await.map_err(|e| ("viewer", e))?,
            93..=97 => {
                let status = self.rng.range(0, 9) as i64;
                self.exit(s, status).await.map_err(|e| ("exit", e))?;
                return Ok(Next::Ended);
            }
            _ => {
                self.kill_sshd_child(s)
                    .await
                    .map_err(|e| ("kill sshd child", e))?;
                return Ok(Next::Ended);
            }
        }
        Ok(Next::Goes)
    }

    /// Types `echo <marker>` key by key with human gaps, timing each key's echo, and checks
    /// the command's output byte-exact.
    async fn command(&mut self, s: &mut Sess, marker: &str) -> Result<(), String> {
        let (head, tail) = marker.split_at(2);
        let line = format!("echo {head}''{tail}");
        self.note(format!("type {line:?}"));
        for (i, key) in line.char_indices() {
            tokio::time::sleep(self.rng.millis(20, 150)).await;
            let t0 = Instant::now();
            s.input(&key.to_string()).await?;
            // The echo of this key: the line typed so far ends the output.
            let typed = &line.as_bytes()[..i + key.len_utf8()];
            while !s.seen.ends_with(typed) {
                match s.next().await? {
                    Ev::Output => {}
                    Ev::Named(name, data) => return Err(format!("{name} {data} while typing")),
                    Ev::Closed(why) => return Err(format!("socket closed ({why}) while typing")),
                }
            }
            tally(&self.shared)
                .echo_us
                .push(t0.elapsed().as_secs_f64() * 1e6);
        }
        s.mark();
        s.input("\r").await?;
        s.read_until(PROMPT).await?;
        let expected = format!("\r\n{marker}\r\n").into_bytes();
        if s.seen != [expected.as_slice(), PROMPT].concat() {
            return Err(format!(
                "command output {:?}, expected {:?}",
                String::from_utf8_lossy(&s.seen),
                String::from_utf8_lossy(&expected)
            ));
        }
        let mut t = tally(&self.shared);
        t.commands += 1;
        t.bytes_checked += s.seen.len() as u64;
        Ok(())
    }

    /// Pastes 1 KiB to 4 MiB, as one line or as 64-byte lines, into a raw-mode `head -c |
    /// wc -c`, in frames of the sizes a browser sends; the count must be exact.
    async fn paste(&mut self, s: &mut Sess, marker: &str) -> Result<(), String> {
        let len = self.rng.log_range(1 << 10, 4 << 20) as usize;
        let lines = self.rng.chance(0.5);
        let chunk = self.rng.log_range(1 << 10, 64 << 10) as usize;
        self.note(format!("paste {len} B lines={lines} frames of {chunk}"));
        s.input(&format!(
            "stty raw -echo; echo ready''-{marker}; head -c {len} | wc -c; stty sane; echo counted''-{marker}\r"
        ))
        .await?;
        s.read_until(format!("ready-{marker}").as_bytes()).await?;
        let body: Vec<u8> = (0..len)
            .map(|i| {
                if lines && i % 64 == 63 {
                    b'\r'
                } else {
                    b'a' + (i % 26) as u8
                }
            })
            .collect();
        for piece in body.chunks(chunk) {
            let text = std::str::from_utf8(piece).expect("ASCII");
            s.input(text).await?;
        }
        s.mark();
        s.read_until(format!("counted-{marker}").as_bytes()).await?;
        let counted = [format!("{len}\r\n"), format!("{len}\n")];
        if !counted
            .iter()
            .any(|c| find(&s.seen, c.as_bytes()).is_some())
        {
            tally(&self.shared).bytes_bad += len as u64;
            return Err(format!(
                "{len} bytes pasted, counted {:?}",
                String::from_utf8_lossy(&s.seen)
            ));
        }
        s.read_until(PROMPT).await?;
        let mut t = tally(&self.shared);
        t.pastes += 1;
        t.bytes_checked += len as u64;
        Ok(())
    }

    /// A new size, then `stty size` until it shows it: a retry that finds it is a late
    /// resize (counted), none in 6 s a lost one.
    async fn resize(&mut self, s: &mut Sess) -> Result<(), String> {
        let (cols, rows) = (
            self.rng.range(60, 250) as u16,
            self.rng.range(10, 80) as u16,
        );
        self.note(format!("resize {cols}x{rows}"));
        let frame = json!(["resize", {"cols": cols, "rows": rows}]).to_string();
        send(&mut s.ws, Message::text(frame)).await?;
        s.cols = cols;
        s.rows = rows;
        let want = format!("\r\n{rows} {cols}\r\n");
        let limit = Instant::now() + Duration::from_secs(6);
        for attempt in 0.. {
            // The shell redraws its prompt on SIGWINCH: wait for a marker, not a prompt.
            s.mark();
            s.input(&format!("stty size; echo s''-{attempt}\r")).await?;
            let done = format!("s-{attempt}\r\n");
            s.read_until(done.as_bytes()).await?;
            s.read_until(PROMPT).await?;
            if find(&s.seen, want.as_bytes()).is_some() {
                let mut t = tally(&self.shared);
                t.resizes += 1;
                t.resizes_late += u64::from(attempt > 0);
                return Ok(());
            }
            if Instant::now() > limit {
                return Err(format!(
                    "the PTY kept another size for {attempt} retries: {:?}",
                    String::from_utf8_lossy(&s.seen)
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        unreachable!("the loop returns")
    }

    /// `seq 1 n`, checked byte-exact; a slow reader stops reading for seconds meanwhile.
    async fn flood(&mut self, s: &mut Sess, marker: &str, slow: bool) -> Result<(), String> {
        let n = self.rng.log_range(1_000, 300_000);
        let stall = self.rng.millis(1_000, 5_000);
        self.note(format!("flood seq {n} slow={slow}"));
        s.input(&format!("seq 1 {n}; echo f''-{marker}\r")).await?;
        if slow {
            tokio::time::sleep(stall).await;
        }
        let then = format!("f-{marker}\r\n");
        s.read_until(then.as_bytes()).await?;
        let expected = seq_text(n);
        if let Err(e) = check_after_command(&s.seen, &expected, then.as_bytes()) {
            tally(&self.shared).bytes_bad += expected.len() as u64;
            return Err(e);
        }
        s.read_until(PROMPT).await?;
        let mut t = tally(&self.shared);
        t.floods += 1;
        t.bytes_checked += expected.len() as u64;
        if slow {
            let fault = t.faults.entry("client stops reading").or_default();
            fault.0 += 1;
            fault.1 += 1;
        }
        Ok(())
    }

    async fn idle(&mut self, s: &mut Sess) -> Result<(), String> {
        let pause = self.rng.millis(1_000, 15_000);
        self.note(format!("idle {pause:?}"));
        match tokio::time::timeout(pause, s.next()).await {
            Err(_) => Ok(()),
            Ok(Ok(Ev::Named(name, data))) if name == "warning" => Err(format!("warning {data}")),
            Ok(Ok(Ev::Output)) => Err(format!(
                "output while idle: {:?}",
                String::from_utf8_lossy(&s.seen)
            )),
            Ok(Ok(Ev::Named(name, data))) => Err(format!("{name} {data} while idle")),
            Ok(Ok(Ev::Closed(why))) => Err(format!("socket closed ({why}) while idle")),
            Ok(Err(e)) => Err(e),
        }
    }

    /// A flood, the socket dropped without a close midway, a new socket resuming from the
    /// bytes received: together they must hold the flood exactly once.
    async fn drop_and_resume(&mut self, s: &mut Sess, marker: &str) -> Result<(), String> {
        let n = self.rng.log_range(20_000, 400_000);
        let after = self.rng.log_range(1_000, 100_000) as usize;
        self.note(format!("flood seq {n}, drop after {after} B, resume"));
        s.input(&format!("seq 1 {n}; echo f''-{marker}\r")).await?;
        let then = format!("f-{marker}\r\n");
        while s.seen.len() < after && find(&s.seen, then.as_bytes()).is_none() {
            match s.next().await? {
                Ev::Output => {}
                Ev::Named(name, data) => return Err(format!("{name} {data} during the flood")),
                Ev::Closed(why) => return Err(format!("socket closed ({why}) during the flood")),
            }
        }
        let fresh = connect_ws(self.addr).await?;
        // The old socket goes without a close frame: dropped, as a lost network drops it.
        drop(std::mem::replace(&mut s.ws, fresh));
        let offset = s.received;
        let resume = json!(["resume-session", {"token": s.token, "offset": offset,
                            "cols": s.cols, "rows": s.rows}]);
        send(&mut s.ws, Message::text(resume.to_string())).await?;
        tally(&self.shared).resumes += 1;
        let resumed = s.expect_event("session-resumed").await?;
        s.token = resumed["resume_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if resumed["offset"] != offset || resumed["truncated"] != false {
            return Err(format!("resumed at {resumed}, asked for {offset}"));
        }
        s.read_until(then.as_bytes()).await?;
        let expected = seq_text(n);
        if let Err(e) = check_after_command(&s.seen, &expected, then.as_bytes()) {
            tally(&self.shared).bytes_bad += expected.len() as u64;
            return Err(e);
        }
        s.read_until(PROMPT).await?;
        let mut t = tally(&self.shared);
        t.resumes_exact += 1;
        t.bytes_checked += expected.len() as u64;
        let fault = t
            .faults
            .entry("socket dropped without a close")
            .or_default();
        fault.0 += 1;
        fault.1 += 1;
        Ok(())
    }

    /// A page reload: the old socket closes, a new one resumes from offset 0 and must get
    /// back the session's whole output so far (while it is small enough to be kept).
    async fn reload(&mut self, s: &mut Sess) -> Result<(), String> {
        let Some(history) = s.history.clone() else {
            return Ok(());
        };
        self.note(format!("reload at {} B", history.len()));
        let fresh = connect_ws(self.addr).await?;
        let mut old = std::mem::replace(&mut s.ws, fresh);
        let _ = tokio::time::timeout(WAIT, old.close(None)).await;
        drop(old);
        let resume = json!(["resume-session", {"token": s.token, "offset": 0,
                            "cols": s.cols, "rows": s.rows}]);
        send(&mut s.ws, Message::text(resume.to_string())).await?;
        tally(&self.shared).reloads += 1;
        let resumed = s.expect_event("session-resumed").await?;
        s.token = resumed["resume_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if resumed["offset"] != 0 || resumed["truncated"] != false {
            return Err(format!("reload resumed at {resumed}"));
        }
        // The replay is counted afresh from 0.
        s.received = 0;
        s.history = Some(Vec::new());
        s.mark();
        while s.seen.len() < history.len() {
            match s.next().await? {
                Ev::Output => {}
                Ev::Named(name, data) => return Err(format!("{name} {data} during the replay")),
                Ev::Closed(why) => return Err(format!("socket closed ({why}) during the replay")),
            }
        }
        if s.seen[..history.len()] != history[..] {
            tally(&self.shared).bytes_bad += history.len() as u64;
            return Err("the replay differs from the output first received".to_owned());
        }
        let mut t = tally(&self.shared);
        t.reloads_exact += 1;
        t.bytes_checked += history.len() as u64;
        Ok(())
    }

    /// A share link, a viewer that must see the owner's next command, then the link revoked
    /// (the viewer told `share_revoked`) or the viewer leaving.
    async fn viewer(&mut self, s: &mut Sess, marker: &str) -> Result<(), String> {
        let revoke = self.rng.chance(0.5);
        self.note(format!("viewer, revoke={revoke}"));
        let (status, link) = http(
            self.addr,
            "POST",
            &format!("/sessions/{}/share", s.id),
            &s.token,
            None,
        )
        .await?;
        let view_id = link["view_id"].as_str().filter(|_| status == 201);
        let view_id = view_id
            .ok_or(format!("share answered {status} {link}"))?
            .to_owned();
        let mut viewer = Sess {
            ws: connect_ws(self.addr).await?,
            id: view_id.clone(),
            token: String::new(),
            received: 0,
            seen: Vec::new(),
            searched: 0,
            history: None,
            cols: s.cols,
            rows: s.rows,
        };
        let view = json!(["view-session", {"id": view_id}]).to_string();
        send(&mut viewer.ws, Message::text(view)).await?;
        let ready = viewer.expect_event("connection-ready").await?;
        if ready["read_only"] != true {
            return Err(format!("the viewer got {ready}"));
        }
        tally(&self.shared).viewers += 1;
        viewer.mark();
        let (head, tail) = marker.split_at(2);
        s.input(&format!("echo v-{head}''{tail}\r")).await?;
        let want = format!("v-{marker}\r\n");
        s.read_until(want.as_bytes()).await?;
        viewer.read_until(want.as_bytes()).await?;
        s.read_until(PROMPT).await?;
        if revoke {
            let path = format!("/sessions/{}/share/{view_id}", s.id);
            let (status, answer) = http(self.addr, "DELETE", &path, &s.token, None).await?;
            if status != 204 {
                return Err(format!("revoke answered {status} {answer}"));
            }
            let end = viewer.expect_any_end().await?;
            if end != "ssh-error share_revoked" {
                return Err(format!("the revoked viewer got {end}"));
            }
            tally(&self.shared).links_revoked += 1;
        } else {
            let _ = tokio::time::timeout(WAIT, viewer.ws.close(None)).await;
        }
        Ok(())
    }

    /// `exit <status>`: the session must end with exactly that status.
    async fn exit(&mut self, s: &mut Sess, status: i64) -> Result<(), String> {
        self.note(format!("exit {status}"));
        s.input(&format!("exit {status}\r")).await?;
        let closed = s.expect_event("ssh-closed").await?;
        if closed["exit_status"] != status {
            return Err(format!("exit {status} ended as {closed}"));
        }
        tally(&self.shared).exits += 1;
        Ok(())
    }

    /// The injected fault a person can cause alone: its sshd child killed. The session must
    /// end with `connection_lost`, and only this one.
    async fn kill_sshd_child(&mut self, s: &mut Sess) -> Result<(), String> {
        self.note("kill -9 $PPID".to_owned());
        s.input("kill -9 $PPID\r").await?;
        let end = s.expect_any_end().await?;
        let mut t = tally(&self.shared);
        *t.codes.entry(end.clone()).or_default() += 1;
        let fault = t.faults.entry("sshd child killed").or_default();
        fault.0 += 1;
        if end == "ssh-error connection_lost" {
            fault.1 += 1;
            Ok(())
        } else {
            Err(format!("the session ended with {end}"))
        }
    }
}

fn report_soak(
    knobs: &Knobs,
    shared: &Shared,
    samples: &[Sample],
    start: Sample,
    end: Sample,
    health: &Value,
    (drain_ended, drain_open, exited): (usize, usize, bool),
) -> Vec<(String, Row)> {
    let t = tally(shared);
    let clk_tck = clock_ticks();
    let secs = end.secs.max(1.0);
    let cpu_s = ticks_ms(end.cpu_ticks.saturating_sub(start.cpu_ticks), clk_tck) / 1e3;
    let peak_rss = samples.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    let peak_threads = samples.iter().map(|s| s.threads).max().unwrap_or(0);
    let (injected, survived) = t
        .faults
        .values()
        .fold((0, 0), |(i, s), (fi, fs)| (i + fi, s + fs));
    let rows = vec![
        gw_only("people (sessions at once)", "count", knobs.sessions as f64),
        gw_only("sessions run", "count", t.sessions as f64),
        gw_only("commands checked", "count", t.commands as f64),
        gw_only("pastes checked", "count", t.pastes as f64),
        gw_only("floods checked", "count", t.floods as f64),
        gw_only("bytes checked", "MiB", t.bytes_checked as f64 / MIB),
        gw_only("bytes lost or repeated", "bytes", t.bytes_bad as f64),
        gw_only(
            "unexplained ends and failures",
            "count",
            t.failures.len() as f64,
        ),
        gw_only("resumes attempted", "count", t.resumes as f64),
        gw_only("resumes exact", "count", t.resumes_exact as f64),
        gw_only("reloads attempted", "count", t.reloads as f64),
        gw_only("reloads exact", "count", t.reloads_exact as f64),
        gw_only("viewers", "count", t.viewers as f64),
        gw_only("links revoked", "count", t.links_revoked as f64),
        gw_only("resizes checked", "count", t.resizes as f64),
        gw_only(
            "resizes seen only on a retry",
            "count",
            t.resizes_late as f64,
        ),
        gw_only("exits with their status", "count", t.exits as f64),
        gw_only("faults injected", "count", injected as f64),
        gw_only("faults survived as expected", "count", survived as f64),
        gw_only("echo p50 while soaking", "µs", percentile(&t.echo_us, 50.0)),
        gw_only("echo p99 while soaking", "µs", percentile(&t.echo_us, 99.0)),
        gw_only("gateway CPU", "% of one core", cpu_s / secs * 100.0),
        gw_only("RSS at start", "MiB", start.rss_kb as f64 / 1024.0),
        gw_only("RSS peak", "MiB", peak_rss as f64 / 1024.0),
        gw_only("RSS at end", "MiB", end.rss_kb as f64 / 1024.0),
        gw_only("threads at peak", "count", peak_threads as f64),
        gw_only(
            "threads at end minus start",
            "count",
            end.threads as f64 - start.threads as f64,
        ),
        gw_only(
            "descriptors at end minus start",
            "count",
            end.fds as f64 - start.fds as f64,
        ),
        gw_only(
            "live + pending at end",
            "count",
            health["live"].as_f64().unwrap_or(f64::NAN)
                + health["pending"].as_f64().unwrap_or(f64::NAN),
        ),
        gw_only(
            "drain: sessions warned and ended",
            "count",
            drain_ended as f64,
        ),
    ];
    let over_time: Vec<Value> = samples
        .iter()
        .map(|s| {
            json!({"secs": s.secs.round(), "rss_kb": s.rss_kb, "threads": s.threads, "fds": s.fds,
                        "cpu_ms": ticks_ms(s.cpu_ticks.saturating_sub(start.cpu_ticks), clk_tck)})
        })
        .collect();
    eprintln!("soak: error codes and ends seen: {:?}", t.codes);
    eprintln!("soak: faults (injected, survived): {:?}", t.faults);
    eprintln!(
        "soak: threads start {} peak {peak_threads} end {}; descriptors start {} end {}",
        start.threads, end.threads, start.fds, end.fds
    );
    let details = json!({
        "seed": knobs.seed, "minutes": knobs.minutes, "people": knobs.sessions, "person": knobs.person,
        "codes": t.codes, "faults": t.faults.iter().map(|(k, v)| (k.to_string(), json!([v.0, v.1]))).collect::<BTreeMap<_, _>>(),
        "samples": over_time, "failures": t.failures,
    });
    let rows = report("soak", rows, details);
    let mut problems = t.failures.clone();
    if t.bytes_bad > 0 {
        problems.push(format!("{} bytes lost or repeated", t.bytes_bad));
    }
    if end.threads > start.threads || end.fds > start.fds {
        problems.push(format!(
            "threads {} → {}, descriptors {} → {}",
            start.threads, end.threads, start.fds, end.fds
        ));
    }
    if health["live"] != 0 || health["pending"] != 0 {
        problems.push(format!("sessions left after the run: {health}"));
    }
    if drain_ended != drain_open || !exited {
        problems.push(format!(
            "drain: {drain_ended} of {drain_open} sessions warned and ended, gateway exited: {exited}"
        ));
    }
    assert!(
        problems.is_empty(),
        "soak (seed {}) found {} problems:\n{}",
        knobs.seed,
        problems.len(),
        problems.join("\n")
    );
    rows
}
