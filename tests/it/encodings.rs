//! `encoding` in create-session, against a real sshd: text the remote prints in GBK,
//! Shift_JIS or a single-byte code page reaches the page (and its viewers, the resume ring
//! and the recording) as the right Unicode text, a character split across SSH reads or
//! input frames arrives whole, typed text reaches the remote in its encoding, and an
//! unknown label is refused before anything is stored. The expected bytes come from the
//! system's iconv, an implementation independent of the gateway's.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::gateway::{Gateway, TEST_TOKEN};
use crate::support::password_body;
use crate::support::sshd::Sshd;
use crate::support::term::{PROMPT, Term};

/// Bounds each local command (iconv, asciinema): `timeout` kills it.
const COMMAND_TIMEOUT: &str = "20";

/// A password session to `sshd` whose remote side speaks `encoding`.
fn body(sshd: &Sshd, encoding: &str) -> Value {
    let mut body = password_body(sshd);
    body["encoding"] = encoding.into();
    body
}

/// `text`'s UTF-8 as printf octal escapes, so the typed command line is plain ASCII.
fn octal(text: &str) -> String {
    text.bytes().map(|b| format!("\\{b:03o}")).collect()
}

/// `text` in `charset`, as the system's iconv writes it.
fn iconv(text: &str, charset: &str) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .args([COMMAND_TIMEOUT, "iconv", "-f", "UTF-8", "-t", charset])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run iconv");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "iconv -t {charset} of {text:?}");
    out.stdout
}

/// Hex pairs as `od -An -tx1` prints them.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!(" {b:02x}")).collect()
}

/// The remote's iconv turns `text` into `charset` and prints it; returns what the page got.
async fn remote_prints(term: &mut Term, text: &str, charset: &str) -> String {
    term.run(&format!(
        "printf '{}\\n' | iconv -f UTF-8 -t {charset}",
        octal(text)
    ))
    .await
}

/// Sends `frames` as typed input, then Enter and end-of-file, to `od` on the remote; returns
/// the bytes od read (as od prints them, Enter's `0a` last) and the session's output from
/// the readiness marker to the next prompt (the terminal's echo among it).
async fn remote_receives(term: &mut Term, frames: Vec<Message>) -> (String, String) {
    // `sh` prints the marker once the shell has handed the terminal over in canonical
    // mode, so input sent after it is read by od, not by the shell's line editor.
    term.input("sh -c 'echo od-''ready; exec od -An -tx1'\r")
        .await;
    term.wait_for("od-ready\r\n").await;
    for frame in frames {
        term.send(frame).await;
    }
    term.input("\r").await;
    term.input("\u{4}").await;
    let out = term.wait_for(PROMPT).await;
    let read = out
        .lines()
        .filter(|l| {
            let pairs: Vec<&str> = l.split_whitespace().collect();
            l.starts_with(' ')
                && !pairs.is_empty()
                && pairs
                    .iter()
                    .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .map(|l| l.trim_end())
        .collect();
    (read, out)
}

/// Ends the session from the shell and waits for the close.
async fn exit(mut term: Term) {
    term.input("exit\r").await;
    assert_eq!(term.expect("ssh-closed").await["reason"], "exited");
    term.expect_close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gbk_output_and_input() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let mut term = gw.open(&body(&sshd, "gbk"), 100, 30).await;
    term.ready().await;

    let text = "中文编码测试：你好，世界！";
    assert_eq!(
        remote_prints(&mut term, text, "GBK").await,
        format!("{text}\r\n")
    );
    // A file in GBK, written and shown by the remote.
    assert_eq!(
        term.run(&format!(
            "printf '{}\\n' | iconv -f UTF-8 -t GBK > gbk.txt; cat gbk.txt; rm gbk.txt",
            octal("简体中文文件")
        ))
        .await,
        "简体中文文件\r\n"
    );
    // 中 is d6 d0 in GBK: its two bytes in two SSH reads still make one character.
    assert_eq!(
        term.run("printf '\\326'; sleep 0.3; printf '\\320\\n'")
            .await,
        "中\r\n"
    );
    // Bytes that are not GBK: U+FFFD, and the stream goes on.
    assert_eq!(term.run("printf '\\377ok\\n'").await, "\u{fffd}ok\r\n");

    // Typed CJK reaches the remote in GBK, 中 split across two frames; an emoji GBK cannot
    // hold is typed as `?`, not as HTML's `&#128512;`.
    let typed = "中文".as_bytes();
    let (head, tail) = typed.split_at(2);
    let frames = vec![
        Message::binary(head.to_vec()),
        Message::binary(tail.to_vec()),
        Message::text(json!(["ssh-input", "😀x"]).to_string()),
    ];
    let (read, out) = remote_receives(&mut term, frames).await;
    let mut expected = iconv("中文", "GBK");
    expected.extend_from_slice(b"?x\n");
    assert_eq!(read, hex(&expected), "what od read; output: {out}");
    assert!(out.contains("中文?x\r\n"), "the echo, decoded: {out:?}");

    exit(term).await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shift_jis_output_and_input() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let mut term = gw.open(&body(&sshd, "shift_jis"), 100, 30).await;
    term.ready().await;
    let text = "日本語のテキスト、ｶﾀｶﾅ";
    assert_eq!(
        remote_prints(&mut term, text, "SHIFT_JIS").await,
        format!("{text}\r\n")
    );
    // 日 is 93 fa: split across reads.
    assert_eq!(
        term.run("printf '\\223'; sleep 0.3; printf '\\372\\n'")
            .await,
        "日\r\n"
    );
    let (read, out) = remote_receives(
        &mut term,
        vec![Message::text(json!(["ssh-input", "日本"]).to_string())],
    )
    .await;
    let mut expected = iconv("日本", "SHIFT_JIS");
    expected.push(b'\n');
    assert_eq!(read, hex(&expected), "output: {out}");
    exit(term).await;
    gw.assert_idle().await;
}

/// One single-byte code page each: Latin-1 (WHATWG's windows-1252), windows-1251, KOI8-R.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_byte_code_pages() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    for (label, charset, text) in [
        ("iso-8859-1", "ISO-8859-1", "café naïve Ærø"),
        ("windows-1251", "WINDOWS-1251", "Привет, мир"),
        ("koi8-r", "KOI8-R", "Съешь же ещё"),
    ] {
        let mut term = gw.open(&body(&sshd, label), 100, 30).await;
        term.ready().await;
        assert_eq!(
            remote_prints(&mut term, text, charset).await,
            format!("{text}\r\n"),
            "{label}"
        );
        let (read, out) = remote_receives(
            &mut term,
            vec![Message::text(json!(["ssh-input", text]).to_string())],
        )
        .await;
        let mut expected = iconv(text, charset);
        expected.push(b'\n');
        assert_eq!(read, hex(&expected), "{label}; output: {out}");
        exit(term).await;
    }
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_encodings_are_refused() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    for label in ["klingon", "", "utf-16le", "replacement", "gbk;rm"] {
        let res = gw.create(&body(&sshd, label)).await;
        assert_eq!(
            (res.status, res.error_code()),
            (400, "unknown_encoding".to_owned()),
            "{label:?}"
        );
        if !label.is_empty() {
            assert!(!res.text().contains(label), "not echoed: {}", res.text());
        }
    }
    let mut wrong_type = password_body(&sshd);
    wrong_type["encoding"] = 936.into();
    let res = gw.create(&wrong_type).await;
    assert_eq!(
        (res.status, res.error_code()),
        (400, "invalid_field".into())
    );
    let form = format!(
        "hostname=127.0.0.1&port={}&username=u&password=p&encoding=nope",
        sshd.addr().port()
    );
    let res = gw
        .post(
            "/create-session",
            "application/x-www-form-urlencoded",
            form.as_bytes(),
        )
        .await;
    assert_eq!(res.error_code(), "unknown_encoding");
    assert_eq!(gw.handle.pending(), 0, "nothing was stored");
    // UTF-8 by any of its labels is no conversion: bytes pass through as they are.
    let mut term = gw.open(&body(&sshd, "UTF8"), 80, 24).await;
    term.ready().await;
    assert_eq!(term.run("printf 'h\\303\\251\\n'").await, "hé\r\n");
    term.close().await;
    gw.assert_idle().await;
}

/// A resume in the middle of GBK output gets exactly the rest: offsets count the UTF-8
/// bytes the page received, and the ring holds the same bytes. A viewer sees UTF-8 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_mid_gbk_output_loses_and_repeats_nothing() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| {
        c.resume_grace = Some(Duration::from_secs(60));
        c.resume_buffer = 16 << 20;
    })
    .await;
    let id = gw.create_id(&body(&sshd, "gbk")).await;
    let mut first = gw.ws().await;
    first.start(&id, 80, 24).await;
    let ready = first.ready().await;
    let token = ready["resume_token"].as_str().expect("a token").to_owned();

    let share = gw
        .raw(
            &format!("POST /sessions/{id}/share HTTP/1.1\r\nAuthorization: Bearer {TEST_TOKEN}"),
            b"",
        )
        .await;
    assert_eq!(share.status, 201, "{}", share.text());
    let mut viewer = gw.ws().await;
    viewer
        .send_event("view-session", json!({"id": share.json()["view_id"]}))
        .await;
    viewer.expect("connection-ready").await;

    // 中文 d6 d0 ce c4, then the line number: two-byte characters throughout the flood.
    let lines = 100_000;
    first
        .input(&format!(
            "printf '\\326\\320\\316\\304 %s\\n' $(seq 1 {lines}); echo gbk-''done\r"
        ))
        .await;
    first.wait_for("中文 1000\r\n").await;
    let received = first.output.clone();
    first.vanish();

    let mut second = gw.ws().await;
    second
        .send_event(
            "resume-session",
            json!({"token": token, "offset": received.len(), "cols": 80, "rows": 24}),
        )
        .await;
    let resumed = second.expect("session-resumed").await;
    assert_eq!(
        (resumed["offset"].as_u64(), resumed["truncated"].as_bool()),
        (Some(received.len() as u64), Some(false)),
        "{resumed}"
    );
    second.wait_for("gbk-done\r\n").await;
    let mut all = received;
    all.extend_from_slice(&second.output);
    let all = String::from_utf8(all).expect("the page gets UTF-8 only");
    let expected: String = (1..=lines).map(|i| format!("中文 {i}\r\n")).collect();
    assert!(
        all.contains(&expected),
        "the output across the resume differs ({} bytes, {} expected)",
        all.len(),
        expected.len()
    );
    assert!(!all.contains('\u{fffd}'), "no character was broken");
    viewer.wait_for("gbk-done\r\n").await;
    let watched = String::from_utf8(viewer.output.clone()).expect("the viewer gets UTF-8");
    assert!(watched.contains(&expected), "the viewer saw it all");
    exit(second).await;
    viewer.expect("ssh-closed").await;
    gw.assert_idle().await;
}

/// The recording of a GBK session is UTF-8, input included, and asciinema reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gbk_session_is_recorded_in_utf8() {
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("recordings");
    let gw = Gateway::start_recording(&dir, true).await;
    let mut term = gw.open(&body(&sshd, "gbk"), 100, 30).await;
    term.ready().await;
    let text = "录像里的中文";
    assert_eq!(
        remote_prints(&mut term, text, "GBK").await,
        format!("{text}\r\n")
    );
    let (read, _) = remote_receives(
        &mut term,
        vec![Message::text(json!(["ssh-input", "输入"]).to_string())],
    )
    .await;
    assert_eq!(read, hex(&iconv("输入\n", "GBK")));
    exit(term).await;
    gw.assert_idle().await;

    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let cast = std::fs::read_to_string(&files[0]).expect("the recording is UTF-8");
    let events: Vec<Value> = cast
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let joined = |code: &str| -> String {
        events
            .iter()
            .filter(|e| e[1] == code)
            .filter_map(|e| e[2].as_str())
            .collect()
    };
    assert!(joined("o").contains(&format!("{text}\r\n")), "{cast}");
    assert!(joined("i").contains("输入"), "typed text as typed: {cast}");
    assert!(!cast.contains('\u{fffd}'), "{cast}");

    // asciinema's own parser: `asciinema cat` needs a terminal, so under script(1).
    let path = files[0].to_str().unwrap();
    let cat = Command::new("timeout")
        .args([COMMAND_TIMEOUT, "script", "-qec"])
        .arg(format!("asciinema cat '{path}'"))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("run asciinema");
    let printed = String::from_utf8_lossy(&cat.stdout);
    assert!(cat.status.success(), "asciinema cat: {printed}");
    assert!(printed.contains(text), "asciinema cat printed {printed:?}");
}
