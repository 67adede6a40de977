//! Payload files, /proc readings, statistics and the report rows.

use crate::*;

pub(crate) struct Payloads {
    /// 0755 with 0644 files: the test user's shell must be able to `cat` them.
    pub(crate) dir: TempDir,
    pub(crate) printable: PathBuf,
    pub(crate) utf8: PathBuf,
}

impl Payloads {
    pub(crate) fn write(key_text: &str) -> Payloads {
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
pub(crate) fn printable_payload(len: usize) -> Vec<u8> {
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
pub(crate) fn utf8_payload(len: usize) -> String {
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
pub(crate) fn cpu_ticks(pid: &str) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the ")" that closes the command name start at field 3 (state).
    let rest = &stat[stat.rfind(')').expect("stat has a comm field") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| fields[i].parse::<u64>().expect("numeric stat field");
    num(11) + num(12)
}

/// `getconf CLK_TCK`, or 100 (Linux's USER_HZ on every common architecture) if that fails.
pub(crate) fn clock_ticks() -> f64 {
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

pub(crate) fn ticks_ms(ticks: u64, clk_tck: f64) -> f64 {
    ticks as f64 * 1000.0 / clk_tck
}

pub(crate) fn mib(bytes: usize) -> f64 {
    bytes as f64 / MIB
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub(crate) fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// Nearest-rank percentile.
/// The `p`th percentile of `v`; NaN (printed as "–") when there is nothing to rank.
pub(crate) fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) struct Deadline {
    pub(crate) name: &'static str,
    pub(crate) at: Instant,
}

impl Deadline {
    pub(crate) fn new(name: &'static str) -> Deadline {
        eprintln!("bench: scenario {name}");
        Deadline {
            name,
            at: Instant::now() + SCENARIO_LIMIT,
        }
    }

    pub(crate) fn check(&self) {
        assert!(
            Instant::now() < self.at,
            "scenario {} did not finish within {SCENARIO_LIMIT:?}; failing rather than hanging",
            self.name
        );
    }
}

/// One figure; NaN where a side does not apply.
pub(crate) struct Row {
    pub(crate) figure: String,
    pub(crate) unit: &'static str,
    pub(crate) direct: f64,
    pub(crate) gateway: f64,
}

impl Row {
    pub(crate) fn new(figure: &str, unit: &'static str, direct: f64, gateway: f64) -> Row {
        Row {
            figure: figure.to_owned(),
            unit,
            direct,
            gateway,
        }
    }

    pub(crate) fn ratio(&self) -> f64 {
        self.gateway / self.direct
    }

    pub(crate) fn json(&self) -> Value {
        let num = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
        json!({"figure": self.figure, "unit": self.unit, "direct": num(self.direct),
               "gateway": num(self.gateway), "ratio": num(self.ratio())})
    }
}

pub(crate) fn fmt(v: f64) -> String {
    match v {
        v if !v.is_finite() => "–".to_owned(),
        v if v.abs() >= 100.0 => format!("{v:.0}"),
        v if v.abs() >= 10.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    }
}

/// Prints the rows and a JSON line, and writes `target/bench/<scenario>.json`.
pub(crate) fn report(scenario: &str, rows: Vec<Row>, extra: Value) -> Vec<(String, Row)> {
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
