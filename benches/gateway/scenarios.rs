//! The scenarios: each runs the same work directly and through the gateway and
//! returns its rows.

use crate::*;

/// 1. From SSH connect (direct) or `POST /create-session` (gateway) to the prompt.
pub(crate) fn setup(bed: &Bed) -> Vec<(String, Row)> {
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
pub(crate) fn throughput(bed: &Bed) -> Vec<(String, Row)> {
    let deadline = Deadline::new("throughput");
    let path = bed.files.printable.clone();
    let (mut direct, mut gw, mut ossh) = open_three(bed);

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
pub(crate) fn echo(bed: &Bed) -> Vec<(String, Row)> {
    let deadline = Deadline::new("echo");
    let (mut direct, mut gw, mut ossh) = open_three(bed);
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
pub(crate) fn echo_busy(bed: &Bed) -> Vec<Row> {
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
pub(crate) fn scale(bed: &Bed, n: usize) -> Vec<(String, Row)> {
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
pub(crate) fn gw_only(figure: &str, unit: &'static str, value: f64) -> Row {
    Row::new(figure, unit, f64::NAN, value)
}

/// What `n` idle sessions cost the gateway, from its status before, with them open and after
/// closing them (the rows `scale` and `target` share).
pub(crate) fn footprint_rows(
    n: usize,
    [before, open, after]: [&ProcStatus; 3],
    idle_cpu_ms: f64,
) -> Vec<Row> {
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
pub(crate) fn typing_rows(n: usize, echo_ms: &[f64], echo_secs: f64, close_secs: f64) -> Vec<Row> {
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
pub(crate) fn scale_rounds() -> usize {
    std::env::var("BENCH_SCALE_ROUNDS")
        .ok()
        .map(|v| v.parse().expect("BENCH_SCALE_ROUNDS is a number"))
        .unwrap_or(3)
        .max(1)
}

/// Opens `n` sessions on the bench's gateway, `SCALE_CONCURRENCY` at a time, each to its
/// prompt; checks the gateway counts them all.
pub(crate) fn scale_open(
    bed: &Bed,
    rt: &Runtime,
    n: usize,
) -> Vec<WebSocketStream<tokio::net::TcpStream>> {
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
pub(crate) fn scale_close(
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
pub(crate) type Typed = (
    Vec<(WebSocketStream<tokio::net::TcpStream>, f64)>,
    Vec<String>,
);

/// Types one key into every session, `limit` at a time, and times each echo.
pub(crate) fn type_into_all(
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
pub(crate) fn record(bed: &Bed) -> Vec<(String, Row)> {
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
pub(crate) fn integrity(bed: &Bed) -> Vec<(String, Row)> {
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
pub(crate) fn target(asked: usize) -> Vec<(String, Row)> {
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
pub(crate) fn target_n(asked: usize, gateway: &GatewayProcess) -> (usize, Option<String>) {
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

/// One shell of each client, every one at its prompt: ssh2 direct, the gateway, ssh -tt.
fn open_three(bed: &Bed) -> (Direct, Gw, OpenSsh) {
    let mut direct = Direct::open(bed.sshd_addr, &bed.key);
    wait_for(&mut direct, PROMPT);
    let mut gw = Gw::open(current_thread_runtime(), bed.gateway.addr, &bed.body());
    wait_for(&mut gw, PROMPT);
    let mut ossh = OpenSsh::open(bed.sshd_addr, &bed.key_file);
    wait_for(&mut ossh, PROMPT);
    (direct, gw, ossh)
}
