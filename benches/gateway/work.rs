//! Work done the same way through every client: waiting for output, timed `cat`
//! runs, one echo, and the side-by-side comparison.

use crate::*;

/// A terminal the benchmark types into and reads from, whatever carries it.
pub(crate) trait Shell {
    fn send(&mut self, text: &str);
    /// Appends at least one byte of terminal output to `out` within `WAIT`, or panics.
    fn recv(&mut self, out: &mut Vec<u8>);
}

/// Reads until `needle` has arrived; returns everything read.
pub(crate) fn wait_for(sh: &mut dyn Shell, needle: &[u8]) -> Vec<u8> {
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
pub(crate) fn wait_prompt(sh: &mut dyn Shell, t0: Instant) -> (f64, f64) {
    let mut out = Vec::new();
    sh.recv(&mut out);
    let first = ms(t0.elapsed());
    if find(&out, PROMPT).is_none() {
        wait_for(sh, PROMPT);
    }
    (first, ms(t0.elapsed()))
}

/// Runs `cat path` and returns the seconds until the marker after it arrives.
pub(crate) fn cat_run(sh: &mut dyn Shell, path: &Path, deadline: &Deadline) -> f64 {
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
pub(crate) fn parallel_cat<S: Shell + Send>(
    shells: &mut [S],
    path: &Path,
    deadline: &Deadline,
) -> f64 {
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
pub(crate) fn echo_once(sh: &mut dyn Shell) -> f64 {
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
pub(crate) fn compare(
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
