//! The `waits` scenario (issue 12): `WAITERS` requests long-polling one session's state
//! (`GET /sessions/<id>?wait=opened`), as that many CI jobs would. What each waiter costs the
//! gateway in memory, what they cost in CPU while nothing happens, and how long the gateway
//! takes to answer all of them once the session is opened. There is no direct-SSH
//! counterpart: the figures are the gateway's alone.

use crate::*;

/// Concurrent waiters; `BENCH_WAITERS` overrides it.
const WAITERS: usize = 1000;

pub(crate) fn waits(bed: &Bed) -> Vec<(String, Row)> {
    let n = std::env::var("BENCH_WAITERS")
        .ok()
        .map(|v| v.parse().expect("BENCH_WAITERS is a number"))
        .unwrap_or(WAITERS);
    let deadline = Deadline::new("waits");
    let rt = current_thread_runtime();
    let addr = bed.gateway.addr;
    let id = rt.block_on(create_session(addr, &bed.body()));
    let before = bed.gateway.status();
    // Every waiter is a plain HTTP/1.1 request on its own connection, sent at once.
    let mut streams = rt.block_on(async {
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            let mut stream = tokio::net::TcpStream::connect(addr)
                .await
                .expect("waits: connect");
            let head = format!(
                "GET /sessions/{id}?wait=opened&timeout=5m HTTP/1.1\r\nHost: {addr}\r\n\
                 Authorization: Bearer {BENCH_TOKEN}\r\nConnection: close\r\n\r\n"
            );
            tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
                .await
                .expect("waits: send");
            streams.push(stream);
        }
        streams
    });
    wait_for_waiters(addr, n);
    deadline.check();
    let with = bed.gateway.status();
    let clk_tck = clock_ticks();
    let idle_ticks = bed.gateway.cpu_ticks();
    thread::sleep(IDLE_WINDOW);
    let idle_cpu_ms = ticks_ms(bed.gateway.cpu_ticks() - idle_ticks, clk_tck);

    // Open the link; every waiter is answered with the new state.
    let (answered_ms, opened) = rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("waits: connect the page");
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
            .await
            .expect("waits: WebSocket upgrade");
        let t0 = Instant::now();
        let start = json!(["start-session", {"id": id, "cols": COLS, "rows": ROWS}]);
        ws.send(Message::text(start.to_string()))
            .await
            .expect("waits: start-session");
        let reads = streams.drain(..).map(|mut stream| async move {
            let mut answer = Vec::new();
            let read = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer);
            tokio::time::timeout(WAIT, read)
                .await
                .map_err(|_| "no answer in time".to_owned())?
                .map_err(|e| e.to_string())?;
            let state = json_body(&answer)["state"].as_str().map(str::to_owned);
            state.ok_or_else(|| String::from_utf8_lossy(&answer).into_owned())
        });
        let states = futures_util::future::join_all(reads).await;
        let answered_ms = ms(t0.elapsed());
        let _ = ws.close(None).await;
        (answered_ms, states)
    });
    let (states, errors) = split_results(opened);
    assert!(
        errors.is_empty(),
        "waits: {} of {n} waiters got no state: {:?}",
        errors.len(),
        errors.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        states.iter().all(|s| s != "pending"),
        "waits: a waiter was answered with pending"
    );
    bed.gateway.wait_idle();
    wait_for_waiters(addr, 0);
    let after = bed.gateway.status();
    let per_waiter = (with.rss_kb as f64 - before.rss_kb as f64) / n.max(1) as f64;
    eprintln!("waits: gateway before {before:?}, with {n} waiters {with:?}, after {after:?}");
    let rows = vec![
        gw_only(&format!("RSS per waiter, N={n}"), "KiB", per_waiter),
        gw_only(
            &format!("gateway CPU while {n} wait {}s", IDLE_WINDOW.as_secs()),
            "ms",
            idle_cpu_ms,
        ),
        gw_only(
            &format!("time to answer all {n} on open"),
            "ms",
            answered_ms,
        ),
        gw_only("threads before", "count", before.threads as f64),
        gw_only(
            &format!("threads with {n} waiters"),
            "count",
            with.threads as f64,
        ),
        gw_only("RSS after they are answered", "KiB", after.rss_kb as f64),
    ];
    report("waits", rows, json!({"n": n}))
}

/// Waits (bounded) until `/metrics` shows exactly `n` waiters.
fn wait_for_waiters(addr: SocketAddr, n: usize) {
    let limit = Instant::now() + WAIT;
    let line = format!("alfresco_session_waiters {n}");
    loop {
        let mut stream = TcpStream::connect(addr).expect("waits: connect for /metrics");
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .expect("waits: ask /metrics");
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < limit, "waits: never {n} waiters");
        thread::sleep(Duration::from_millis(20));
    }
}
