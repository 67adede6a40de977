//! Session recording end to end: a real session with `--record-dir` leaves an asciicast v2
//! file that holds exactly what the client was sent, that asciinema itself reads and that
//! `alfresco-ssh replay` plays; typed input stays out unless asked for; `/recordings` needs
//! the API token and serves only plain names from the directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::gateway::{ADMIN_TOKEN, Gateway};
use crate::support::password_body;
use crate::support::sshd::{Sshd, TEST_USER};

/// Bounds each external command (asciinema, the replay binary): `timeout` kills it.
const COMMAND_TIMEOUT: &str = "20";

/// The one recording in `dir`.
fn only_recording(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one recording: {files:?}");
    files.into_iter().next().unwrap()
}

/// Each line of a cast as JSON: the header, then the events.
fn read_cast(path: &Path) -> (Value, Vec<Value>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines().map(|l| {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
    });
    let header = lines.next().expect("a header line");
    (header, lines.collect())
}

/// The concatenated data of the events with `code`.
fn joined(events: &[Value], code: &str) -> String {
    events
        .iter()
        .filter(|e| e[1] == code)
        .map(|e| e[2].as_str().expect("event data is a string"))
        .collect()
}

/// Runs `program args…` under `timeout`, so a hung tool fails the test instead of hanging it.
fn run_bounded(program: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg(COMMAND_TIMEOUT)
        .arg(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_is_recorded_as_asciicast() {
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("recordings");
    let gw = Gateway::start_recording(&dir, false).await;
    let id = gw.create_id(&password_body(&sshd)).await;
    let mut term = gw.ws().await;
    term.start(&id, 100, 30).await;
    term.ready().await;

    let marker = format!("rec-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    // Two-, three- and four-byte characters, typed as ASCII escapes so only the output
    // holds them.
    assert_eq!(
        term.run(&format!(
            "printf '{marker} h\\303\\251 \\342\\202\\254 \\360\\237\\230\\200\\n'"
        ))
        .await,
        format!("{marker} hé € 😀\r\n")
    );
    term.resize(132, 43).await;
    assert_eq!(term.run("stty size").await, "43 132\r\n");
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
    term.expect_close().await;
    gw.assert_idle().await;

    let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700, "the directory is created private");
    let path = only_recording(&dir);
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    let short_id = &id.replace('-', "")[..8];
    assert!(
        name.len() == 30 && name.ends_with(&format!("Z-{short_id}.cast")),
        "date and the first 8 hex digits of the id, no more: {name}"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let (header, events) = read_cast(&path);
    assert_eq!(header["version"], 2);
    assert_eq!(
        (header["width"].clone(), header["height"].clone()),
        (100.into(), 30.into())
    );
    let target = format!("{TEST_USER}@127.0.0.1:{}", sshd.addr().port());
    assert_eq!(header["title"], target.as_str());
    assert_eq!(header["env"]["TERM"], "xterm-256color");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let started = header["timestamp"].as_u64().expect("a unix timestamp");
    assert!(
        now >= started && now - started < 120,
        "timestamp {started}, now {now}"
    );
    for event in &events {
        let [time, code, data] = event.as_array().unwrap().as_slice() else {
            panic!("an event is [time, code, data]: {event}");
        };
        assert!(time.as_f64().unwrap() >= 0.0 && data.is_string(), "{event}");
        assert!(
            code == "o" || code == "r",
            "no input without --record-input: {event}"
        );
    }
    assert!(
        events
            .windows(2)
            .all(|w| w[0][0].as_f64() <= w[1][0].as_f64()),
        "times never go back"
    );
    // Exactly what the client was sent, however the chunks split the characters.
    let sent = String::from_utf8(term.output.clone()).expect("the session's output is UTF-8");
    assert_eq!(joined(&events, "o"), sent);
    assert_eq!(joined(&events, "r"), "132x43");

    // asciinema itself reads the file. `asciinema cat` puts /dev/tty in raw mode, so it
    // runs under script(1) for a terminal; raw mode also leaves the output unchanged.
    let path_str = path.to_str().unwrap();
    let cat = run_bounded(
        "script",
        &["-qec", &format!("asciinema cat '{path_str}'"), "/dev/null"],
    );
    let printed = String::from_utf8_lossy(&cat.stdout);
    assert!(cat.status.success(), "asciinema cat: {printed}");
    assert!(
        printed.contains(&format!("{marker} hé € 😀")),
        "asciinema cat printed {printed:?}"
    );
    assert_eq!(
        printed, sent,
        "asciinema prints exactly what the client was sent"
    );

    // So does our replay, and a damaged copy is refused with the line named.
    let replay = run_bounded(
        env!("CARGO_BIN_EXE_alfresco-ssh"),
        &["replay", path_str, "--speed", "100"],
    );
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert_eq!(String::from_utf8(replay.stdout).unwrap(), sent);
    let damaged = tmp.path().join("damaged.cast");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&damaged, format!("{text}[1.0, \"o\"\n")).unwrap();
    let replay = run_bounded(
        env!("CARGO_BIN_EXE_alfresco-ssh"),
        &["replay", damaged.to_str().unwrap()],
    );
    assert_eq!(replay.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&replay.stderr);
    let line = text.lines().count() + 1;
    assert!(stderr.contains(&format!("line {line}:")), "{stderr}");
    gw.stop().await;
}

/// Types a password at a `read -s` prompt and returns what the recording holds.
async fn record_a_password(record_input: bool, secret: &str) -> (Vec<Value>, String) {
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start_recording(tmp.path(), record_input).await;
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    term.ready().await;
    // The prompt is split in the typed line so its echo cannot match.
    term.input("read -rs -p 'Pass''word: ' pw; echo; echo \"got ${#pw}\"\r")
        .await;
    term.wait_for("Password: ").await;
    term.input(&format!("{secret}\r")).await;
    term.wait_for(&format!("got {}\r\n", secret.len())).await;
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
    term.expect_close().await;
    gw.assert_idle().await;
    let path = only_recording(tmp.path());
    let text = std::fs::read_to_string(&path).unwrap();
    gw.stop().await;
    (read_cast(&path).1, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_input_is_recorded_only_when_asked() {
    let secret = format!(
        "hunter2-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let (events, text) = record_a_password(false, &secret).await;
    assert!(!text.contains(&secret), "the password is not in the file");
    assert!(joined(&events, "o").contains("Password: "));
    assert_eq!(joined(&events, "i"), "", "no input events at all");

    let (events, text) = record_a_password(true, &secret).await;
    assert!(text.contains(&secret));
    let input = joined(&events, "i");
    assert!(input.contains(&format!("{secret}\r")), "{input:?}");
    assert!(input.ends_with("exit\r"), "{input:?}");
    assert!(
        !joined(&events, "o").contains(&secret),
        "read -s did not echo it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_need_the_token_and_plain_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("recordings");
    let gw = Gateway::start_recording(&dir, false).await;
    // Outside the directory: what a traversal would be after.
    std::fs::write(tmp.path().join("secret.cast"), "outside").unwrap();
    let old = "20261203T074012Z-5b0e6f1c.cast";
    let new = "20261203T080000Z-0a1b2c3d.cast";
    let cast = "{\"version\":2,\"width\":80,\"height\":24}\n[0.5,\"o\",\"xyzzy-data\"]\n";
    for (name, age) in [(old, 3600), (new, 60)] {
        let path = dir.join(name);
        std::fs::write(&path, cast).unwrap();
        let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not a recording").unwrap();

    for path in ["/recordings", &format!("/recordings/{new}")] {
        let res = gw.get(path).await;
        assert_eq!(res.status, 401, "{path}");
        assert_eq!(res.error_code(), "unauthorized");
    }
    let res = gw.get_as("/recordings", ADMIN_TOKEN).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let list = res.json();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].clone())
        .collect();
    assert_eq!(names, [new, old], "newest first, *.cast only");
    assert_eq!(list[0]["size"], cast.len());
    assert!(list[0]["modified"].as_str().unwrap().ends_with('Z'));

    let res = gw.get_authorized(&format!("/recordings/{new}")).await;
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (403, "admin_required"),
        "another session's recording needs an admin token"
    );
    let res = gw.get_authorized("/recordings").await;
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (403, "admin_required")
    );
    let res = gw.get_as(&format!("/recordings/{new}"), ADMIN_TOKEN).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/x-asciicast"));
    assert_eq!(res.header("cache-control"), Some("no-store"));
    assert_eq!(res.text(), cast);

    for path in [
        "/recordings/..%2Fsecret.cast",
        "/recordings/..%2f..%2fsecret.cast",
        "/recordings/../secret.cast",
        "/recordings/a/b.cast",
        "/recordings/.cast",
        "/recordings/20261203T074012Z-00000000.cast",
        "/recordings/",
    ] {
        let res = gw.get_as(path, ADMIN_TOKEN).await;
        assert_eq!(res.status, 404, "{path}");
        assert_eq!(res.error_code(), "not_found", "{path}");
    }

    // The player page holds no recording, so it needs no token; only plain names get one.
    let stem = new.trim_end_matches(".cast");
    let page = gw.get(&format!("/recordings/{stem}")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .starts_with("default-src 'self'")
    );
    assert!(page.text().contains("/assets/player.js"));
    assert!(
        !page.text().contains("xyzzy"),
        "no recording data in the page"
    );
    assert_eq!(gw.get("/recordings/..%2Fsecret").await.status, 404);
    assert_eq!(gw.get("/assets/player.js").await.status, 200);

    let post = gw.post("/recordings", "application/json", b"{}").await;
    assert_eq!(post.status, 405);
    gw.stop().await;

    // Without --record-dir the endpoints do not exist.
    let gw = Gateway::start().await;
    assert_eq!(gw.get_as("/recordings", ADMIN_TOKEN).await.status, 404);
    assert_eq!(
        gw.get_as(&format!("/recordings/{new}"), ADMIN_TOKEN)
            .await
            .status,
        404
    );
    gw.stop().await;
}

/// A recording that cannot be made (the directory vanished after start-up) is logged and
/// skipped; the session itself works as without recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_that_cannot_be_made_does_not_cost_the_session() {
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("recordings");
    let gw = Gateway::start_recording(&dir, false).await;
    std::fs::remove_dir(&dir).unwrap();
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    term.ready().await;
    assert_eq!(term.run("echo still-here").await, "still-here\r\n");
    term.input("exit 4\r").await;
    assert_eq!(term.expect("ssh-closed").await["exit_status"], 4);
    term.expect_close().await;
    gw.assert_idle().await;
    assert!(!dir.exists(), "nothing was created in its place");
    gw.stop().await;
}

/// A recording belongs to the session, not to a socket: it goes on across a drop and a
/// resume, and holds the output sent while no one was attached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_spans_a_resume() {
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("recordings");
    alfresco_ssh::record::prepare_dir(&dir).unwrap();
    let settings = alfresco_ssh::record::RecordSettings {
        dir: dir.clone(),
        record_input: false,
    };
    let gw = Gateway::start_with(|c| {
        c.record = Some(settings);
        c.resume_grace = Some(std::time::Duration::from_secs(60));
    })
    .await;
    let id = gw.create_id(&password_body(&sshd)).await;
    let mut first = gw.ws().await;
    first.start(&id, 80, 24).await;
    let token = first.ready().await["resume_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Printed after the socket is gone: only the ring and the recording see it at first.
    first.input("sleep 0.5; echo while-''away\r").await;
    let mut sent = first.output.clone();
    let offset = sent.len();
    first.vanish();
    let mut second = gw.ws().await;
    second
        .send_event(
            "resume-session",
            serde_json::json!({"token": token, "offset": offset, "cols": 80, "rows": 24}),
        )
        .await;
    second.expect("session-resumed").await;
    second.wait_for("while-away\r\n").await;
    second.input("exit\r").await;
    second.expect("ssh-closed").await;
    gw.assert_idle().await;

    let (_, events) = read_cast(&only_recording(&dir));
    sent.extend_from_slice(&second.output);
    assert_eq!(joined(&events, "o"), String::from_utf8(sent).unwrap());
}

/// An existing `--record-dir` that every user may write to stops the start-up with a
/// message naming the mode, and is left as it was. Before, it was used silently.
#[test]
fn a_world_writable_record_dir_is_refused_at_start_up() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("recordings");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run_bounded(
        env!("CARGO_BIN_EXE_alfresco-ssh"),
        &["--record-dir", dir.to_str().unwrap(), "--check-config"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started anyway: {stderr}");
    assert!(
        stderr.contains("--record-dir") && stderr.contains("0777"),
        "{stderr}"
    );
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o777, "the mode is the operator's to change");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing written"
    );
}
