//! The `webhooks` scenario (issue 12): the same session figures on the benchmark's gateway
//! and on a second one that posts every session event to a webhook receiver that never
//! answers (so every delivery waits out its timeout and is retried). Deliveries must never
//! slow a session: the "direct" column here is the gateway without webhooks, the "gateway"
//! column the one with them, interleaved A B A B.

use crate::*;

const SETUP_RUNS: usize = 10;
const ECHO_RUNS: usize = 300;

pub(crate) fn webhooks(bed: &Bed) -> Vec<(String, Row)> {
    let deadline = Deadline::new("webhooks");
    let receiver = Stalled::start();
    let url = format!("http://{}/hook", receiver.addr);
    let hooked = GatewayProcess::start_with(&["--webhook", &url]);
    let gateways = [&bed.gateway, &hooked];

    // Create to prompt: every one posts `created`, `opened`, `ready` and `ended`.
    let mut setup: [Vec<f64>; 2] = Default::default();
    for _ in 0..SETUP_RUNS {
        deadline.check();
        for (gateway, samples) in gateways.iter().zip(setup.iter_mut()) {
            let t0 = Instant::now();
            let mut gw = Gw::open(current_thread_runtime(), gateway.addr, &bed.body());
            samples.push(wait_prompt(&mut gw, t0).1);
            gw.close();
        }
    }
    // Echo and throughput on one open session each, while the receiver holds every delivery.
    let mut shells: Vec<Gw> = gateways
        .iter()
        .map(|g| {
            let mut gw = Gw::open(current_thread_runtime(), g.addr, &bed.body());
            wait_for(&mut gw, PROMPT);
            gw
        })
        .collect();
    let mut echo: [Vec<f64>; 2] = Default::default();
    for _ in 0..ECHO_RUNS {
        deadline.check();
        for (gw, samples) in shells.iter_mut().zip(echo.iter_mut()) {
            samples.push(echo_once(gw) * 1000.0);
        }
    }
    let mut rate: [Vec<f64>; 2] = Default::default();
    for _ in 0..THROUGHPUT_RUNS {
        for (gw, samples) in shells.iter_mut().zip(rate.iter_mut()) {
            let secs = cat_run(gw, &bed.files.printable, &deadline);
            samples.push(PAYLOAD_BYTES as f64 / MIB / secs);
        }
    }
    for gw in shells {
        gw.close();
    }
    bed.gateway.wait_idle();
    hooked.wait_idle();
    let held = receiver.stop();
    eprintln!("webhooks: the stalled receiver held {held} connections");
    let rows = vec![
        Row::new(
            "median to prompt, with webhooks vs without",
            "ms",
            median(&setup[0]),
            median(&setup[1]),
        ),
        Row::new(
            "echo p50, with webhooks vs without",
            "µs",
            percentile(&echo[0], 50.0),
            percentile(&echo[1], 50.0),
        ),
        Row::new(
            "echo p99, with webhooks vs without",
            "µs",
            percentile(&echo[0], 99.0),
            percentile(&echo[1], 99.0),
        ),
        Row::new(
            "1 session, with webhooks vs without",
            "MiB/s",
            median(&rate[0]),
            median(&rate[1]),
        ),
        gw_only(
            "connections the stalled receiver held",
            "count",
            held as f64,
        ),
    ];
    report(
        "webhooks",
        rows,
        json!({"setup_runs": SETUP_RUNS, "echo_runs": ECHO_RUNS, "receiver": "never answers",
               "setup_ms": setup, "mib_s": rate}),
    )
}

/// A webhook receiver on loopback that accepts every connection and never answers; it
/// reads what it is sent so the sender's writes never block on a full socket.
struct Stalled {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: thread::JoinHandle<usize>,
}

impl Stalled {
    fn start() -> Stalled {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the receiver");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let addr = listener.local_addr().expect("the receiver's address");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            let mut buf = [0u8; 4096];
            let limit = Instant::now() + SCENARIO_LIMIT;
            while !stopping.load(std::sync::atomic::Ordering::Acquire) && Instant::now() < limit {
                if let Ok((stream, _)) = listener.accept() {
                    let _ = stream.set_nonblocking(true);
                    held.push(stream);
                }
                for stream in &mut held {
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                }
                thread::sleep(Duration::from_millis(5));
            }
            held.len()
        });
        Stalled { addr, stop, thread }
    }

    /// Stops it; how many connections it held.
    fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread.join().expect("the receiver thread")
    }
}
