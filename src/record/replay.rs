//! `alfresco-ssh replay FILE`: plays a recording's output in this terminal with its timing,
//! faster with `--speed`, long pauses cut to `--idle-limit`. `steps` is the timing, pure;
//! `play` only sleeps and writes.
//!
//! Input and resize events are not played: the terminal replaying is the reader's own.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::asciicast::{self, Cast, CastError, Kind};

/// The flags of the `replay` subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "alfresco-ssh replay",
    bin_name = "alfresco-ssh replay",
    about = "Play a session recording (asciicast v2, from --record-dir) in this terminal."
)]
pub struct ReplayArgs {
    /// The recording, a .cast file.
    pub file: PathBuf,

    /// Playback speed: 2 plays twice as fast, 0.5 half as fast.
    #[arg(long, default_value = "1", value_parser = positive)]
    pub speed: f64,

    /// The longest pause played, in seconds, however long the session sat idle
    /// (0 = keep every pause).
    #[arg(long, default_value = "2", value_parser = not_negative)]
    pub idle_limit: f64,
}

impl ReplayArgs {
    /// Parses `replay …` (the subcommand name first, as clap expects a program name).
    pub fn try_parse(argv: impl IntoIterator<Item = OsString>) -> Result<Self, clap::Error> {
        Self::try_parse_from(argv)
    }

    fn idle_limit(&self) -> Option<Duration> {
        (self.idle_limit > 0.0).then(|| Duration::from_secs_f64(self.idle_limit))
    }
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err("must be a number above 0".into()),
    }
}

fn not_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        // Capped so Duration::from_secs_f64 cannot overflow; a day is "no limit" enough.
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x.min(86_400.0)),
        _ => Err("must be a number of seconds, 0 or more".into()),
    }
}

/// Why a replay failed. Every variant names the file or the line.
#[derive(Debug)]
pub enum ReplayError {
    Read(PathBuf, io::Error),
    Cast(PathBuf, CastError),
    /// Writing to the terminal failed (a closed pipe, say).
    Write(io::Error),
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::Read(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            ReplayError::Cast(path, e) => {
                write!(f, "{}: not an asciicast v2 recording: {e}", path.display())
            }
            ReplayError::Write(e) => write!(f, "cannot write the output: {e}"),
        }
    }
}

impl std::error::Error for ReplayError {}

/// One write of the replay: wait `delay`, then write `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step<'a> {
    pub delay: Duration,
    pub data: &'a str,
}

/// The output events of `cast` as waits and writes. Each gap is cut to `idle_limit` first
/// (a pause is a pause, whatever the speed), then divided by `speed`. Gaps before other
/// events (input, resize) count towards the next output; times that go backwards count as 0.
pub fn steps(cast: &Cast, speed: f64, idle_limit: Option<Duration>) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    let mut previous = 0.0_f64;
    let mut waited = Duration::ZERO;
    for event in &cast.events {
        let mut gap = Duration::from_secs_f64((event.time - previous).max(0.0));
        previous = previous.max(event.time);
        if let Some(limit) = idle_limit {
            gap = gap.min(limit);
        }
        waited += gap;
        if event.kind == Kind::Output {
            steps.push(Step {
                delay: waited.div_f64(speed),
                data: &event.data,
            });
            waited = Duration::ZERO;
        }
    }
    steps
}

/// Reads and checks the whole file, then plays it to `out`. A bad file is refused before
/// anything is written.
pub fn play(args: &ReplayArgs, out: &mut impl Write) -> Result<(), ReplayError> {
    let bytes = std::fs::read(&args.file).map_err(|e| ReplayError::Read(args.file.clone(), e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let valid = e.utf8_error().valid_up_to();
        let line = 1 + bytes[..valid].iter().filter(|&&b| b == b'\n').count();
        let message = "the file is not UTF-8 text".to_owned();
        ReplayError::Cast(args.file.clone(), CastError { line, message })
    })?;
    let cast = asciicast::parse(&text).map_err(|e| ReplayError::Cast(args.file.clone(), e))?;
    for step in steps(&cast, args.speed, args.idle_limit()) {
        std::thread::sleep(step.delay);
        out.write_all(step.data.as_bytes())
            .and_then(|()| out.flush())
            .map_err(ReplayError::Write)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cast(events: &str) -> Cast {
        asciicast::parse(&format!(
            "{{\"version\":2,\"width\":80,\"height\":24}}\n{events}"
        ))
        .unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn steps_follow_the_timing() {
        let c = cast(
            "[0.5,\"o\",\"a\"]\n[1.0,\"r\",\"10x5\"]\n[1.5,\"o\",\"b\"]\n[1.5,\"i\",\"x\"]\n[9.5,\"o\",\"c\"]\n",
        );
        let delays = |speed, limit| {
            steps(&c, speed, limit)
                .iter()
                .map(|s| s.delay)
                .collect::<Vec<_>>()
        };
        assert_eq!(delays(1.0, None), [ms(500), ms(1000), ms(8000)]);
        assert_eq!(delays(2.0, None), [ms(250), ms(500), ms(4000)]);
        // The limit cuts each gap, the one before the resize and the one after it apart.
        assert_eq!(delays(1.0, Some(ms(400))), [ms(400), ms(800), ms(400)]);
        assert_eq!(delays(4.0, Some(ms(2000))), [ms(125), ms(250), ms(500)]);
        let data: Vec<_> = steps(&c, 1.0, None).iter().map(|s| s.data).collect();
        assert_eq!(data, ["a", "b", "c"]);
    }

    #[test]
    fn times_going_backwards_wait_nothing() {
        let c = cast("[2.0,\"o\",\"a\"]\n[1.0,\"o\",\"b\"]\n[2.5,\"o\",\"c\"]\n");
        let delays: Vec<_> = steps(&c, 1.0, None).iter().map(|s| s.delay).collect();
        assert_eq!(delays, [ms(2000), ms(0), ms(500)]);
    }

    #[test]
    fn flags() {
        let parse = |argv: &[&str]| {
            let mut all = vec!["replay"];
            all.extend_from_slice(argv);
            ReplayArgs::try_parse(all.into_iter().map(OsString::from))
        };
        let a = parse(&["x.cast"]).unwrap();
        assert_eq!((a.speed, a.idle_limit()), (1.0, Some(ms(2000))));
        let a = parse(&["x.cast", "--speed", "16", "--idle-limit", "0"]).unwrap();
        assert_eq!((a.speed, a.idle_limit()), (16.0, None));
        assert!(parse(&["x.cast", "--speed", "0"]).is_err());
        assert!(parse(&["x.cast", "--speed", "NaN"]).is_err());
        assert!(parse(&["x.cast", "--idle-limit", "-1"]).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn play_writes_the_output_and_refuses_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.cast");
        let args = |file: &std::path::Path| ReplayArgs {
            file: file.to_owned(),
            speed: 100.0,
            idle_limit: 2.0,
        };
        std::fs::write(
            &file,
            "{\"version\":2,\"width\":80,\"height\":24}\n[0.1,\"o\",\"hé\"]\n[0.2,\"o\",\"llo\"]\n",
        )
        .unwrap();
        let mut out = Vec::new();
        play(&args(&file), &mut out).unwrap();
        assert_eq!(out, "héllo".as_bytes());

        std::fs::write(
            &file,
            b"{\"version\":2,\"width\":80,\"height\":24}\n[0.1,\"o\",\"\xff\"]\n",
        )
        .unwrap();
        let e = play(&args(&file), &mut out).unwrap_err().to_string();
        assert!(e.contains("line 2: the file is not UTF-8"), "{e}");
        std::fs::write(&file, "{\"version\":2,\"width\":80,\"height\":24}\n[1]\n").unwrap();
        let e = play(&args(&file), &mut out).unwrap_err().to_string();
        assert!(
            e.contains("a.cast: not an asciicast v2 recording: line 2"),
            "{e}"
        );
        let e = play(&args(&dir.path().join("missing.cast")), &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read"), "{e}");
    }
}
