//! Session recording (`--record-dir`): each session's terminal output, resizes and, only
//! with `--record-input`, its input, written as an asciicast v2 file (`asciicast`) that
//! `replay` and asciinema play back.
//!
//! A recording never ends a session: a file that cannot be created or written is logged
//! once and the session goes on unrecorded. The files are the operator's; nothing here
//! deletes or rotates them.

pub mod asciicast;
pub mod replay;

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use asciicast::{Env, Event, Header, Kind, Utf8Stream};

/// Buffered bytes that force a write: bounds memory per session and the loss on a crash.
pub const BUFFER_SIZE: usize = 64 * 1024;
/// Buffered events are written at least this often (when the owner calls `tick`), so a
/// crash loses at most about this much of a session.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Name collisions tried (`-2`, `-3`, …) before giving up; two sessions whose ids share 8
/// hex digits in the same second are already rare.
const MAX_NAME_TRIES: u32 = 100;
/// Mode bits a recording directory must not have: write for its group or for others. Read
/// and search for them stay the operator's choice (a log shipper's group, `mkdir`'s 0755):
/// the files themselves are 0600.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// Where recordings go and what they hold; checked at start-up by `prepare_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSettings {
    pub dir: PathBuf,
    /// Off by default: input holds whatever is typed at password prompts.
    pub record_input: bool,
}

/// Creates the recording directory (0700) when missing and checks that a file can be
/// created in it, so a bad `--record-dir` fails at start-up and not at the first session.
/// An existing directory that other users may write to is refused rather than fixed: files
/// may already have been planted, replaced or deleted there, and whether that matters is
/// for the operator to judge, not for a chmod to hide.
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode & WRITABLE_BY_OTHERS != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the directory has mode {mode:04o}, so other users may plant, replace or \
                 delete recordings; make it private first (chmod 0700)"
            ),
        ));
    }
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let _ = std::fs::remove_file(&probe);
    create_private(&probe)?;
    std::fs::remove_file(&probe)
}

/// A session's recording as the session loop drives it: nothing until the shell is ready
/// (`start`), then a `Recorder`. Every call is a no-op when recording is off, could not
/// start, or stopped after a write error, so the loop calls them unconditionally.
pub struct Recording {
    /// What `start` needs; `None` when recording is off or already started.
    plan: Option<(RecordSettings, String, String)>,
    /// A resize asked for before the shell was ready; the bridge applies it after.
    early_resize: Option<(u16, u16)>,
    recorder: Option<Recorder>,
}

impl Recording {
    /// `short_id`: the first 8 characters of the session id; `term`: the session's TERM.
    pub fn new(settings: Option<&RecordSettings>, short_id: &str, term: &str) -> Recording {
        Recording {
            plan: settings.map(|s| (s.clone(), short_id.to_owned(), term.to_owned())),
            early_resize: None,
            recorder: None,
        }
    }

    /// The shell is ready at this size: create the file. A failure is logged, once, and
    /// the session goes on unrecorded.
    pub fn start(&mut self, cols: u16, rows: u16, title: &str) {
        let Some((settings, short_id, term)) = self.plan.take() else {
            return;
        };
        match Recorder::create(&settings, &short_id, cols, rows, title, &term) {
            Ok(mut recorder) => {
                tracing::info!(path = %recorder.path().display(), "recording");
                if let Some((c, r)) = self.early_resize.filter(|&size| size != (cols, rows)) {
                    recorder.resize(c, r);
                }
                self.recorder = Some(recorder);
            }
            Err(e) => {
                tracing::warn!(dir = %settings.dir.display(), error = %e, "cannot record this session");
            }
        }
    }

    /// The recording's file name (as `/recordings/<name>` serves it), once started.
    pub fn name(&self) -> Option<String> {
        let path = self.recorder.as_ref()?.path();
        path.file_name()?.to_str().map(str::to_owned)
    }

    /// Whether there is a file to write, i.e. whether `tick` needs calling.
    pub fn is_active(&self) -> bool {
        self.recorder.as_ref().is_some_and(|r| r.out.is_some())
    }

    pub fn output(&mut self, bytes: &[u8]) {
        if let Some(r) = &mut self.recorder {
            r.output(bytes);
        }
    }

    pub fn input(&mut self, bytes: &[u8]) {
        if let Some(r) = &mut self.recorder {
            r.input(bytes);
        }
    }

    pub fn resize(&mut self, cols: u16, rows: u16) {
        match &mut self.recorder {
            Some(r) => r.resize(cols, rows),
            None if self.plan.is_some() => self.early_resize = Some((cols, rows)),
            None => {}
        }
    }

    pub fn tick(&mut self) {
        if let Some(r) = &mut self.recorder {
            r.tick();
        }
    }

    pub fn finish(self) {
        if let Some(r) = self.recorder {
            r.finish();
        }
    }
}

/// One session's cast file, written as the session runs.
///
/// Writes are blocking and happen on the session's task. That is acceptable because they
/// are buffered: the task touches the file once per `BUFFER_SIZE` bytes, once per
/// `FLUSH_EVERY` (from `tick`) and at `finish`, never per event.
pub struct Recorder {
    path: PathBuf,
    /// `None` once a write failed: the recording stopped, the session goes on.
    out: Option<BufWriter<File>>,
    started: Instant,
    last_flush: Instant,
    record_input: bool,
    output: Utf8Stream,
    input: Utf8Stream,
}

impl Recorder {
    /// Creates `<dir>/<UTC date>-<short_id>.cast` (mode 0600, never an existing file) and
    /// writes the header. `short_id`: the first 8 characters of the session id; the full
    /// id is a capability and must not end up in a file name.
    pub fn create(
        settings: &RecordSettings,
        short_id: &str,
        cols: u16,
        rows: u16,
        title: &str,
        term: &str,
    ) -> io::Result<Recorder> {
        if short_id.is_empty()
            || short_id.len() > 8
            || !short_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a recording's id is 1 to 8 letters or digits",
            ));
        }
        let now = SystemTime::now();
        let (path, file) = create_unique(&settings.dir, &file_stem(now, short_id))?;
        let header = Header {
            version: asciicast::VERSION,
            width: cols,
            height: rows,
            timestamp: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs()),
            title: Some(title.to_owned()),
            env: Env {
                term: Some(term.to_owned()),
            },
        };
        let mut out = BufWriter::with_capacity(BUFFER_SIZE, file);
        let written = writeln!(out, "{}", header.line()).and_then(|()| out.flush());
        if let Err(e) = written {
            // An empty or partial file is worth nothing; the caller logs the error.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let started = Instant::now();
        Ok(Recorder {
            path,
            out: Some(out),
            started,
            last_flush: started,
            record_input: settings.record_input,
            output: Utf8Stream::default(),
            input: Utf8Stream::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Terminal output, as the remote side sent it (any chunking).
    pub fn output(&mut self, bytes: &[u8]) {
        let text = self.output.push(bytes);
        self.event(Kind::Output, text);
    }

    /// What the client typed; ignored unless `record_input`.
    pub fn input(&mut self, bytes: &[u8]) {
        if self.record_input {
            let text = self.input.push(bytes);
            self.event(Kind::Input, text);
        }
    }

    pub fn resize(&mut self, cols: u16, rows: u16) {
        self.event(Kind::Resize, Event::resize_data(cols, rows));
    }

    /// Called by the owner at least once a second: writes out what is buffered once
    /// `FLUSH_EVERY` has passed since the last write.
    pub fn tick(&mut self) {
        if self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush();
        }
    }

    /// Writes out the rest (an incomplete UTF-8 tail as U+FFFD) and closes the file.
    pub fn finish(mut self) {
        let tail = self.output.finish();
        self.event(Kind::Output, tail);
        let tail = self.input.finish();
        if self.record_input {
            self.event(Kind::Input, tail);
        }
        self.flush();
    }

    fn event(&mut self, kind: Kind, data: String) {
        if data.is_empty() {
            return;
        }
        let Some(out) = &mut self.out else { return };
        let event = Event {
            time: self.started.elapsed().as_secs_f64(),
            kind,
            data,
        };
        // BufWriter writes through to the file whenever BUFFER_SIZE would be passed.
        if let Err(e) = writeln!(out, "{}", event.line()) {
            self.fail(&e);
        }
    }

    fn flush(&mut self) {
        self.last_flush = Instant::now();
        if let Some(Err(e)) = self.out.as_mut().map(Write::flush) {
            self.fail(&e);
        }
    }

    /// Stops recording for good, with one warning; the buffered rest is dropped unwritten.
    fn fail(&mut self, e: &io::Error) {
        if let Some(out) = self.out.take() {
            let _ = out.into_parts();
            tracing::warn!(path = %self.path.display(), error = %e, "recording stopped: cannot write");
        }
    }
}

/// `20261203T074012Z-5b0e6f1c`: sorts by time in a plain `ls`.
fn file_stem(now: SystemTime, short_id: &str) -> String {
    let rfc3339 = humantime::format_rfc3339_seconds(now).to_string();
    let compact: String = rfc3339
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    format!("{compact}-{short_id}")
}

/// `<stem>.cast`, else `<stem>-2.cast`, `-3`, …: O_EXCL, so an existing file (or a link an
/// attacker planted) is never opened.
fn create_unique(dir: &Path, stem: &str) -> io::Result<(PathBuf, File)> {
    for n in 1..=MAX_NAME_TRIES {
        let name = match n {
            1 => format!("{stem}.cast"),
            n => format!("{stem}-{n}.cast"),
        };
        let path = dir.join(name);
        match create_private(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{MAX_NAME_TRIES} recordings named {stem} already exist"),
    ))
}

/// A new file only its owner can read: a recording holds everything the session printed.
fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn settings(dir: &Path, record_input: bool) -> RecordSettings {
        RecordSettings {
            dir: dir.to_owned(),
            record_input,
        }
    }

    fn read(recorder: Recorder) -> (PathBuf, asciicast::Cast) {
        let path = recorder.path().to_owned();
        recorder.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        (path, asciicast::parse(&text).unwrap())
    }

    #[test]
    fn writes_header_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Recorder::create(
            &settings(dir.path(), false),
            "5b0e6f1c",
            100,
            30,
            "me@h:22",
            "xterm",
        )
        .unwrap();
        let name = r.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.ends_with("Z-5b0e6f1c.cast"), "{name}");
        assert_eq!(name.len(), "20261203T074012Z-5b0e6f1c.cast".len(), "{name}");
        r.output(b"hello \xe2\x82");
        r.output(b"\xac\r\n");
        r.resize(132, 43);
        r.input(b"secret\r");
        let (_, cast) = read(r);
        assert_eq!((cast.header.width, cast.header.height), (100, 30));
        assert_eq!(cast.header.title.as_deref(), Some("me@h:22"));
        assert_eq!(cast.header.env.term.as_deref(), Some("xterm"));
        let age = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - cast.header.timestamp.unwrap();
        assert!(age < 60);
        let events: Vec<_> = cast
            .events
            .iter()
            .map(|e| (e.kind.clone(), e.data.as_str()))
            .collect();
        assert_eq!(
            events,
            [
                (Kind::Output, "hello "),
                (Kind::Output, "€\r\n"),
                (Kind::Resize, "132x43"),
            ],
            "input is not recorded by default"
        );
        assert!(cast.events.windows(2).all(|w| w[0].time <= w[1].time));
    }

    #[test]
    fn input_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut r =
            Recorder::create(&settings(dir.path(), true), "abcd1234", 80, 24, "t", "x").unwrap();
        r.input("pässword\r".as_bytes());
        // A trailing incomplete sequence is U+FFFD at the end.
        r.output(b"\xf0\x9f");
        let (_, cast) = read(r);
        let data: Vec<_> = cast.events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["pässword\r", "\u{fffd}"]);
        assert_eq!(cast.events[0].kind, Kind::Input);
    }

    #[test]
    fn file_is_private_and_names_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), false);
        let recorders: Vec<_> = (0..3)
            .map(|_| Recorder::create(&s, "00000000", 80, 24, "t", "x").unwrap())
            .collect();
        let mut names: Vec<String> = recorders
            .iter()
            .map(|r| r.path().file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        for r in &recorders {
            let mode = std::fs::metadata(r.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 3);
        // The same second for all three is likely but not certain; when it happened, the
        // later ones carry -2 and -3.
        if names[0][..16] == names[2][..16] {
            assert!(
                names.iter().any(|n| n.ends_with("-00000000-2.cast")),
                "{names:?}"
            );
            assert!(
                names.iter().any(|n| n.ends_with("-00000000-3.cast")),
                "{names:?}"
            );
        }
    }

    #[test]
    fn collision_suffix_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let stem = "20261203T074012Z-5b0e6f1c";
        std::fs::write(dir.path().join(format!("{stem}.cast")), "keep").unwrap();
        let (path, _) = create_unique(dir.path(), stem).unwrap();
        assert!(path.ends_with(format!("{stem}-2.cast")));
        let kept = std::fs::read_to_string(dir.path().join(format!("{stem}.cast"))).unwrap();
        assert_eq!(kept, "keep");
        assert_eq!(
            file_stem(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_283_612),
                "5b0e6f1c"
            ),
            stem
        );
    }

    #[test]
    fn bad_short_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), false);
        for id in ["", "../x", "123456789", "a/b"] {
            assert!(
                Recorder::create(&s, id, 80, 24, "t", "x").is_err(),
                "{id:?}"
            );
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn tick_flushes_after_a_second_and_big_output_is_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut r =
            Recorder::create(&settings(dir.path(), false), "abcd1234", 80, 24, "t", "x").unwrap();
        let path = r.path().to_owned();
        let size = || std::fs::metadata(&path).unwrap().len();
        let header_only = size();
        r.output(b"small");
        r.tick();
        assert_eq!(size(), header_only, "buffered for now");
        r.last_flush -= FLUSH_EVERY;
        r.tick();
        assert!(size() > header_only, "written once a second passed");
        let written = size();
        r.output(&vec![b'x'; BUFFER_SIZE + 1]);
        assert!(
            size() > written + BUFFER_SIZE as u64,
            "a full buffer is written"
        );
        r.finish();
    }

    #[test]
    fn a_failed_write_stops_the_recording_quietly() {
        let dir = tempfile::tempdir().unwrap();
        let mut r =
            Recorder::create(&settings(dir.path(), true), "abcd1234", 80, 24, "t", "x").unwrap();
        // /dev/full fails every write with ENOSPC, as a full disk would.
        let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        r.out = Some(BufWriter::with_capacity(BUFFER_SIZE, full));
        let mut recording = Recording {
            plan: None,
            early_resize: None,
            recorder: Some(r),
        };
        assert!(recording.is_active());
        recording.output(&vec![b'x'; BUFFER_SIZE * 2]);
        assert!(!recording.is_active(), "stopped at the first failed write");
        // Everything after is a no-op, and finishing does not panic.
        recording.output(b"more");
        recording.input(b"typed");
        recording.resize(100, 30);
        recording.tick();
        recording.finish();
    }

    #[test]
    fn recording_starts_at_ready_with_an_early_resize() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), false);
        let mut recording = Recording::new(Some(&s), "abcd1234", "xterm");
        recording.output(b"before ready is not recorded");
        recording.resize(120, 40);
        assert!(!recording.is_active());
        recording.start(80, 24, "me@h:22");
        assert!(recording.is_active());
        recording.output(b"after");
        recording.finish();
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let cast = asciicast::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
        let data: Vec<_> = cast.events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["120x40", "after"]);

        // Off: nothing is created, every call is a no-op.
        let mut off = Recording::new(None, "abcd1234", "xterm");
        off.start(80, 24, "t");
        off.output(b"x");
        assert!(!off.is_active());
        off.finish();
    }

    #[test]
    fn prepare_dir_creates_a_private_directory() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        prepare_dir(&nested).unwrap();
        let mode = std::fs::metadata(&nested).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(
            std::fs::read_dir(&nested).unwrap().count(),
            0,
            "no probe left"
        );
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(prepare_dir(&file.join("sub")).is_err());
    }

    #[test]
    fn prepare_dir_refuses_a_directory_others_may_use() {
        use std::fs::Permissions;
        let dir = tempfile::tempdir().unwrap();
        for (mode, ok) in [
            (0o777, false),
            (0o1777, false),
            (0o770, false),
            (0o702, false),
            (0o720, false),
            (0o755, true),
            (0o750, true),
            (0o700, true),
        ] {
            std::fs::set_permissions(dir.path(), Permissions::from_mode(mode)).unwrap();
            let result = prepare_dir(dir.path());
            assert_eq!(result.is_ok(), ok, "{mode:o}: {result:?}");
            if let Err(e) = result {
                assert!(e.to_string().contains(&format!("{mode:04o}")), "{e}");
            }
            // Refused as it was found: the mode is not changed behind the operator's back.
            let now = std::fs::metadata(dir.path()).unwrap().permissions().mode();
            assert_eq!(now & 0o7777, mode);
        }
    }
}
