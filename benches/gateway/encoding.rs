//! Scenario 7, what `encoding` costs (issue 14): `cat` of a GBK file through one gateway,
//! in a session created with `"encoding": "gbk"` and in one without, interleaved A B A B.
//! Without, the bytes pass through untouched (the page would show mojibake); with, every
//! chunk is decoded to UTF-8 in the session task. The "direct" column is the session
//! without `encoding`, so the ratio is decoding / not decoding.

use crate::*;

/// Hanzi per line of the GBK payload, with a newline: 77 bytes a line, text as a legacy
/// host's log or man page would hold it, rather than ASCII that decodes at memcpy speed.
const HANZI_PER_LINE: usize = 38;

/// Throughput and gateway CPU of a GBK `cat`, with `encoding: gbk` against without.
pub(crate) fn encoding_cost(bed: &Bed) -> Vec<(String, Row)> {
    let deadline = Deadline::new("encoding");
    let dir = tempfile::Builder::new()
        .prefix("alfresco-bench-gbk-")
        .tempdir()
        .expect("create the GBK payload dir");
    // 0755 with a 0644 file: the test user's shell must be able to `cat` it.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let path = dir.path().join("gbk.txt");
    let payload = gbk_payload(PAYLOAD_BYTES);
    fs::write(&path, &payload).expect("write the GBK payload");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod file");

    let mut gbk_body = bed.body();
    gbk_body["encoding"] = "gbk".into();
    let mut plain = Gw::open(current_thread_runtime(), bed.gateway.addr, &bed.body());
    wait_for(&mut plain, PROMPT);
    let mut decoded = Gw::open(current_thread_runtime(), bed.gateway.addr, &gbk_body);
    wait_for(&mut decoded, PROMPT);
    let (mut p_rate, mut d_rate, mut p_cpu, mut d_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..THROUGHPUT_RUNS {
        eprintln!("encoding: run {}/{THROUGHPUT_RUNS}", run + 1);
        for (gw, rate, cpu) in [
            (&mut plain, &mut p_rate, &mut p_cpu),
            (&mut decoded, &mut d_rate, &mut d_cpu),
        ] {
            let cpu0 = bed.gateway.cpu_ticks();
            let secs = cat_run(gw, &path, &deadline);
            rate.push(PAYLOAD_BYTES as f64 / MIB / secs);
            cpu.push(ticks_ms(bed.gateway.cpu_ticks() - cpu0, bed.clk_tck) / mib(PAYLOAD_BYTES));
        }
    }
    plain.close();
    decoded.close();
    bed.gateway.wait_idle();
    let rows = vec![
        Row::new(
            "GBK cat, 1 session, encoding gbk vs none",
            "MiB/s",
            median(&p_rate),
            median(&d_rate),
        ),
        Row::new(
            "gateway CPU per file MiB, encoding gbk vs none",
            "ms/MiB",
            median(&p_cpu),
            median(&d_cpu),
        ),
    ];
    report(
        "encoding",
        rows,
        json!({"runs": THROUGHPUT_RUNS, "payload_bytes": payload.len(),
               "plain_mib_s": p_rate, "gbk_mib_s": d_rate,
               "plain_cpu_ms_per_mib": p_cpu, "gbk_cpu_ms_per_mib": d_cpu}),
    )
}

/// `len` bytes of GBK: lines of hanzi from the CJK block GBK holds whole (U+4E00–U+9FA5),
/// drawn from a fixed xorshift seed so every run sends the same file.
fn gbk_payload(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut text = String::with_capacity(len / 2 * 3 + 128);
    // 77 bytes of GBK a line; a few lines over `len`, cut below at a line end.
    let lines = len / (HANZI_PER_LINE * 2 + 1) + 1;
    for _ in 0..lines {
        for _ in 0..HANZI_PER_LINE {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let c = char::from_u32(0x4E00 + (state % (0x9FA6 - 0x4E00)) as u32)
                .expect("the CJK block has no gaps");
            text.push(c);
        }
        text.push('\n');
    }
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(&text);
    assert!(!unmappable, "GBK holds every character of U+4E00–U+9FA5");
    let mut bytes = bytes.into_owned();
    let cut = bytes[..len.min(bytes.len())]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    bytes.truncate(cut);
    // Pad with ASCII to exactly `len`, so the MiB/s figures count the same bytes as the
    // other scenarios' (and `cat_run`'s byte check holds).
    while bytes.len() < len {
        let room = (len - bytes.len()).min(80);
        bytes.extend(std::iter::repeat_n(b'.', room - 1));
        bytes.push(b'\n');
    }
    bytes
}
