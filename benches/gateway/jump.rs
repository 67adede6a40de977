//! The `jump` scenario (issue 14): the same session figures through the benchmark's gateway
//! straight to its sshd, and through a second sshd as a jump host (`jump`: one hop, which
//! opens a `direct-tcpip` channel to the same target). The "direct" column is the direct
//! session, the "gateway" column the jumped one, interleaved A B A B. The jumped session
//! pays a second handshake and login at setup, and for each byte a second SSH layer and the
//! bridge thread's copy through the relay's socket pair.

use crate::*;

const SETUP_RUNS: usize = 10;
const ECHO_RUNS: usize = 300;

pub(crate) fn jump(bed: &Bed) -> Vec<(String, Row)> {
    let deadline = Deadline::new("jump");
    let hop = sshd::Sshd::start();
    let mut jumped = bed.body();
    jumped["jump"] = json!([{
        "hostname": "127.0.0.1",
        "port": hop.port,
        "username": sshd::TEST_USER,
        "private_key": bed.key,
    }]);
    let bodies = [bed.body(), jumped];

    // Create to prompt: the jumped one logs in twice, the second time over the relay.
    let mut setup: [Vec<f64>; 2] = Default::default();
    for _ in 0..SETUP_RUNS {
        deadline.check();
        for (body, samples) in bodies.iter().zip(setup.iter_mut()) {
            let t0 = Instant::now();
            let mut gw = Gw::open(current_thread_runtime(), bed.gateway.addr, body);
            samples.push(wait_prompt(&mut gw, t0).1);
            gw.close();
        }
    }
    let mut shells: Vec<Gw> = bodies
        .iter()
        .map(|body| {
            let mut gw = Gw::open(current_thread_runtime(), bed.gateway.addr, body);
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
    drop(hop);
    let rows = vec![
        Row::new(
            "median to prompt, through one jump host vs direct",
            "ms",
            median(&setup[0]),
            median(&setup[1]),
        ),
        Row::new(
            "echo p50, through one jump host vs direct",
            "µs",
            percentile(&echo[0], 50.0),
            percentile(&echo[1], 50.0),
        ),
        Row::new(
            "echo p99, through one jump host vs direct",
            "µs",
            percentile(&echo[0], 99.0),
            percentile(&echo[1], 99.0),
        ),
        Row::new(
            "cat, 1 session, through one jump host vs direct",
            "MiB/s",
            median(&rate[0]),
            median(&rate[1]),
        ),
    ];
    report(
        "jump",
        rows,
        json!({"setup_runs": SETUP_RUNS, "echo_runs": ECHO_RUNS, "hops": 1,
               "setup_ms": setup, "mib_s": rate}),
    )
}
