//! Keyboard-interactive authentication, prompts in the page, two-step authentication and
//! login banners, against real sshds: PAM-only passwords, a PAM stack that asks for a
//! one-time code after the password (`tests/setup-test-user.sh` writes both), an
//! `AuthenticationMethods publickey,password` server and a `Banner`. Every bad
//! `auth-response` gets its own code, and nothing is left behind.

use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

use crate::support::browser::Browser;
use crate::support::gateway::{Gateway, TEST_TOKEN};
use crate::support::logs::Capture;
use crate::support::sshd::{Sshd, TEST_USER, test_password};
use crate::support::term::{PROMPT, Term};
use crate::support::{key_body, password_body};

/// PAM service names of `tests/setup-test-user.sh`: pam_unix alone, and pam_unix then
/// pam_google_authenticator (a TOTP code).
pub(crate) const PAM_PASSWORD: &str = "alfresco-sshd-pam";
pub(crate) const PAM_OTP: &str = "alfresco-sshd-otp";
/// The code's secret, root-only, written by `tests/setup-test-user.sh`.
const OTP_SECRET_FILE: &str = "/var/lib/alfresco-ssh-test/otp-secret";
/// Passwords through PAM only, as FreeBSD's default and every PAM-password server is.
const KBD_ONLY: &str = "UsePAM yes\nPasswordAuthentication no\nKbdInteractiveAuthentication yes\n";

pub(crate) fn pam_sshd(service: &str) -> Sshd {
    Sshd::start_pam(service, KBD_ONLY)
}

fn interactive_body(sshd: &Sshd) -> Value {
    json!({
        "hostname": "127.0.0.1",
        "port": sshd.addr().port(),
        "username": TEST_USER,
        "auth": "interactive",
    })
}

/// The one-time code valid now (RFC 6238: HMAC-SHA1, 30 s steps, 6 digits), from the
/// secret the PAM module reads.
pub(crate) fn otp_code() -> String {
    totp(std::time::SystemTime::now())
}

fn totp(at: std::time::SystemTime) -> String {
    let text = std::fs::read_to_string(OTP_SECRET_FILE)
        .unwrap_or_else(|e| panic!("{OTP_SECRET_FILE}: {e}; run tests/setup-test-user.sh"));
    let secret = base32(text.lines().next().expect("the secret line"));
    let step = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 30;
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&secret).expect("any key length");
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let word = u32::from_be_bytes(digest[offset..offset + 4].try_into().unwrap()) & 0x7fff_ffff;
    format!("{:06}", word % 1_000_000)
}

/// RFC 4648 base32, upper case, no padding (what the secret file holds).
fn base32(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut bits, mut count) = (0u64, 0);
    for c in text.trim().bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("not base32: {c}"),
        };
        bits = (bits << 5) | u64::from(value);
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

/// A code no window of the module accepts now.
pub(crate) fn wrong_code() -> String {
    let now = std::time::SystemTime::now();
    let step = Duration::from_secs(30);
    let valid = [now - 2 * step, now - step, now, now + step, now + 2 * step].map(totp);
    (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| !valid.contains(c))
        .unwrap()
}

pub(crate) async fn answer(term: &mut Term, answers: &[&str]) {
    term.send_event("auth-response", json!({ "answers": answers }))
        .await;
}

/// Waits for an `auth-prompt` and checks its prompt texts and echo flags.
pub(crate) async fn expect_prompt(term: &mut Term, prompts: &[(&str, bool)]) -> Value {
    let prompt = term.expect("auth-prompt").await;
    let want: Vec<Value> = prompts
        .iter()
        .map(|(text, echo)| json!({"text": text, "echo": echo}))
        .collect();
    assert_eq!(prompt["prompts"], json!(want), "{prompt}");
    prompt
}

async fn expect_warning(term: &mut Term, code: &str) {
    let warning = term.expect("warning").await;
    assert_eq!(warning["code"], code, "{warning}");
}

pub(crate) async fn exit(mut term: Term) {
    term.input("exit\r").await;
    let closed = term.expect("ssh-closed").await;
    assert_eq!(closed["exit_status"], 0, "{closed}");
    term.expect_close().await;
}

/// A password session reaches a server that takes passwords through PAM only: the lone
/// "Password: " prompt is answered with the session's password, the page never asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_over_keyboard_interactive() {
    let sshd = pam_sshd(PAM_PASSWORD);
    let gw = Gateway::start().await;
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    // `ready` panics on any other event: no auth-prompt reached the page.
    term.ready().await;
    assert_eq!(term.run("echo kbd-''ok").await, "kbd-ok\r\n");
    exit(term).await;

    // A wrong password is auth_failed, as before.
    let mut body = password_body(&sshd);
    body["password"] = "not-the-password".into();
    let mut term = gw.open(&body, 80, 24).await;
    term.expect_error("auth_failed").await;
    gw.assert_idle().await;
}

/// The one-time code goes to the page; the right one logs in, a wrong one is auth_failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_code_is_asked_in_the_page() {
    let sshd = pam_sshd(PAM_OTP);
    let gw = Gateway::start().await;
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    let prompt = expect_prompt(&mut term, &[("Verification code: ", false)]).await;
    assert!(prompt["name"].is_string() && prompt["instruction"].is_string());
    answer(&mut term, &[&otp_code()]).await;
    term.ready().await;
    assert_eq!(term.run("echo otp-''ok").await, "otp-ok\r\n");
    exit(term).await;

    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    expect_prompt(&mut term, &[("Verification code: ", false)]).await;
    answer(&mut term, &[&wrong_code()]).await;
    term.expect_error("auth_failed").await;
    gw.assert_idle().await;
}

/// `"auth": "interactive"`: the person types the password and the code in the page; on a
/// server that offers only `password`, the gateway asks for the password itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_sessions_ask_the_person() {
    let otp = pam_sshd(PAM_OTP);
    let gw = Gateway::start().await;
    let mut term = gw.open(&interactive_body(&otp), 80, 24).await;
    expect_prompt(&mut term, &[("Password: ", false)]).await;
    answer(&mut term, &[&test_password()]).await;
    expect_prompt(&mut term, &[("Verification code: ", false)]).await;
    answer(&mut term, &[&otp_code()]).await;
    term.ready().await;
    exit(term).await;

    // With the password method offered too, the server's own prompts come first, so the
    // person types the password once (the password method cannot ask for the code).
    let both = Sshd::start_pam(
        PAM_OTP,
        "UsePAM yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication yes\n",
    );
    let mut term = gw.open(&interactive_body(&both), 80, 24).await;
    expect_prompt(&mut term, &[("Password: ", false)]).await;
    answer(&mut term, &[&test_password()]).await;
    expect_prompt(&mut term, &[("Verification code: ", false)]).await;
    answer(&mut term, &[&otp_code()]).await;
    term.ready().await;
    exit(term).await;

    let plain = Sshd::start();
    let mut term = gw.open(&interactive_body(&plain), 80, 24).await;
    let prompt = expect_prompt(&mut term, &[("Password:", false)]).await;
    assert_eq!(prompt["name"], "");
    answer(&mut term, &[&test_password()]).await;
    term.ready().await;
    exit(term).await;

    let mut term = gw.open(&interactive_body(&plain), 80, 24).await;
    expect_prompt(&mut term, &[("Password:", false)]).await;
    answer(&mut term, &["wrong"]).await;
    term.expect_error("auth_failed").await;
    gw.assert_idle().await;
}

/// Time at a prompt is the person's: it does not count against --connect-timeout, and
/// --auth-prompt-timeout bounds it with `auth_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_waits_have_their_own_timeout() {
    let sshd = Sshd::start();
    let connect_timeout = Duration::from_secs(2);
    let prompt_timeout = Duration::from_secs(3);
    let gw = Gateway::start_with(|c| {
        c.connect_timeout = connect_timeout;
        c.auth_prompt_timeout = prompt_timeout;
    })
    .await;
    let mut term = gw.open(&interactive_body(&sshd), 80, 24).await;
    expect_prompt(&mut term, &[("Password:", false)]).await;
    // The condition under test is time passing: longer than the whole connect timeout.
    tokio::time::sleep(connect_timeout + Duration::from_millis(500)).await;
    answer(&mut term, &[&test_password()]).await;
    term.ready().await;
    exit(term).await;

    let mut term = gw.open(&interactive_body(&sshd), 80, 24).await;
    expect_prompt(&mut term, &[("Password:", false)]).await;
    let asked = Instant::now();
    let (message, close) = term.expect_error("auth_timeout").await;
    assert!(asked.elapsed() >= prompt_timeout - Duration::from_millis(100));
    assert!(message.contains("not answered in time"), "{message}");
    assert_eq!(close, Some(1011));
    gw.assert_idle().await;
}

/// Every bad auth-response has its own code; the prompt stays open through the warnings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_auth_responses() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;

    // No prompt open: a key session never asks.
    let mut term = gw
        .open(&key_body(&sshd, &sshd.keys().ed25519, None), 80, 24)
        .await;
    answer(&mut term, &["early"]).await;
    expect_warning(&mut term, "no_auth_prompt").await;
    term.ready().await;
    exit(term).await;

    let mut term = gw.open(&interactive_body(&sshd), 80, 24).await;
    expect_prompt(&mut term, &[("Password:", false)]).await;
    answer(&mut term, &["a", "b"]).await;
    expect_warning(&mut term, "auth_answers_mismatch").await;
    answer(&mut term, &[]).await;
    expect_warning(&mut term, "auth_answers_mismatch").await;
    answer(&mut term, &[&"x".repeat(1025)]).await;
    expect_warning(&mut term, "auth_response_too_large").await;
    answer(&mut term, &["1"; 9]).await;
    expect_warning(&mut term, "auth_response_too_large").await;
    // Keys typed into the terminal during the prompt never reach the shell.
    term.input("echo typed-''during-prompt\r").await;
    answer(&mut term, &[&test_password()]).await;
    term.ready().await;
    // Answered: nothing is open any more.
    answer(&mut term, &[&test_password()]).await;
    expect_warning(&mut term, "no_auth_prompt").await;
    assert_eq!(term.run("echo after").await, "after\r\n");
    assert!(
        !term.text().contains("typed-during-prompt"),
        "{}",
        term.text()
    );
    exit(term).await;

    // A malformed one is a bad message, like any malformed event.
    let mut term = gw.open(&interactive_body(&sshd), 80, 24).await;
    expect_prompt(&mut term, &[("Password:", false)]).await;
    term.send_event("auth-response", json!({"answers": "pw"}))
        .await;
    term.expect_error("bad_message").await;

    // A client that leaves at the prompt takes the session, and its thread, with it.
    let mut term = gw.open(&interactive_body(&sshd), 80, 24).await;
    expect_prompt(&mut term, &[("Password:", false)]).await;
    term.close().await;
    gw.assert_idle().await;
}

/// A page that loses its socket at a prompt comes back to it: the first prompt carries a
/// resume token, a resume gets `session-resumed` with `authenticating` and the open prompt
/// again, and a resume that takes over mid-login moves the prompt to the new socket. With
/// resume off the prompt has no token and a lost socket ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_during_authentication_gets_the_open_prompt() {
    let sshd = pam_sshd(PAM_OTP);
    let gw = Gateway::start_with(|c| c.resume_grace = Some(Duration::from_secs(60))).await;
    let resume = async |token: &str| {
        let mut term = gw.ws().await;
        term.send_event(
            "resume-session",
            json!({"token": token, "offset": 0, "cols": 100, "rows": 30}),
        )
        .await;
        let resumed = term.expect("session-resumed").await;
        assert_eq!(resumed["authenticating"], true, "{resumed}");
        let token = resumed["resume_token"].as_str().unwrap().to_owned();
        (term, token)
    };
    let mut first = gw.open(&interactive_body(&sshd), 80, 24).await;
    let prompt = expect_prompt(&mut first, &[("Password: ", false)]).await;
    let token = prompt["resume_token"]
        .as_str()
        .expect("a resume token")
        .to_owned();
    assert_eq!(token.len(), 64, "{prompt}");
    first.vanish();

    let (mut second, token) = resume(&token).await;
    let prompt = expect_prompt(&mut second, &[("Password: ", false)]).await;
    assert!(prompt.get("resume_token").is_none(), "{prompt}");
    answer(&mut second, &[&test_password()]).await;
    expect_prompt(&mut second, &[("Verification code: ", false)]).await;

    // Taken over with the code prompt open: the old socket is told, the new one asked.
    let (mut third, token) = resume(&token).await;
    second.expect_error("session_taken_over").await;
    expect_prompt(&mut third, &[("Verification code: ", false)]).await;
    answer(&mut third, &[&otp_code()]).await;
    let ready = third.ready().await;
    assert_eq!(
        ready["resume_token"], token,
        "the token given at the resume stays"
    );
    // The size the resume asked for reached the terminal.
    assert_eq!(third.run("stty size").await, "30 100\r\n");
    exit(third).await;
    gw.assert_idle().await;

    // The harness's default: resume off.
    let gw = Gateway::start().await;
    let mut term = gw.open(&interactive_body(&sshd), 80, 24).await;
    let prompt = expect_prompt(&mut term, &[("Password: ", false)]).await;
    assert!(prompt.get("resume_token").is_none(), "{prompt}");
    term.vanish();
    gw.assert_idle().await;
}

/// A viewer never sees a prompt, and its auth-response is refused as any viewer input is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_never_see_prompts() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.max_viewers = 2).await;
    let id = gw.create_id(&interactive_body(&sshd)).await;
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    expect_prompt(&mut term, &[("Password:", false)]).await;

    let res = gw
        .raw(
            &format!("POST /sessions/{id}/share HTTP/1.1\r\nAuthorization: Bearer {TEST_TOKEN}"),
            b"",
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let link = res.json()["view_id"].as_str().unwrap().to_owned();
    let mut viewer = gw.ws().await;
    viewer.send_event("view-session", json!({"id": link})).await;
    let ready = viewer.expect("connection-ready").await;
    assert_eq!(ready["read_only"], true);
    answer(&mut viewer, &[&test_password()]).await;
    expect_warning(&mut viewer, "read_only").await;

    answer(&mut term, &[&test_password()]).await;
    term.ready().await;
    // `wait_for` panics on any event but output: the viewer got no auth-prompt.
    term.input("echo for-''viewer\r").await;
    viewer.wait_for("for-viewer\r\n").await;
    exit(term).await;
    viewer.expect("ssh-closed").await;
    gw.assert_idle().await;
}

/// `AuthenticationMethods publickey,password`: the key, then the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_step_key_then_password() {
    let sshd = Sshd::start_with("AuthenticationMethods publickey,password\n");
    let gw = Gateway::start().await;
    let mut both = key_body(&sshd, &sshd.keys().ed25519, None);
    both["password"] = test_password().into();
    let mut term = gw.open(&both, 80, 24).await;
    term.ready().await;
    assert_eq!(term.run("echo two-''step").await, "two-step\r\n");
    exit(term).await;

    // Either alone is not enough.
    for body in [
        key_body(&sshd, &sshd.keys().ed25519, None),
        password_body(&sshd),
    ] {
        let mut term = gw.open(&body, 80, 24).await;
        term.expect_error("auth_failed").await;
    }

    // The key, then keyboard-interactive through PAM, answered with the password.
    let pam = Sshd::start_pam(
        PAM_PASSWORD,
        &format!("{KBD_ONLY}AuthenticationMethods publickey,keyboard-interactive\n"),
    );
    let mut both = key_body(&pam, &pam.keys().ed25519, None);
    both["password"] = test_password().into();
    let mut term = gw.open(&both, 80, 24).await;
    term.ready().await;
    exit(term).await;
    gw.assert_idle().await;
}

/// The server's banner is shown in the terminal before the prompt and the shell, cleaned
/// of control characters, with CRLF line ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banner_is_shown_before_the_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let banner = dir.path().join("banner");
    std::fs::write(
        &banner,
        "Authorized use only\n\x1b[2Jno escapes\x07 here\n\tindented\n",
    )
    .unwrap();
    let sshd = Sshd::start_with(&format!("Banner {}\n", banner.display()));
    let gw = Gateway::start().await;
    let mut term = gw.open(&interactive_body(&sshd), 80, 24).await;
    expect_prompt(&mut term, &[("Password:", false)]).await;
    assert_eq!(
        term.text(),
        "Authorized use only\r\n[2Jno escapes here\r\n\tindented\r\n"
    );
    answer(&mut term, &[&test_password()]).await;
    term.ready().await;
    assert!(term.text().starts_with("Authorized use only\r\n"));
    exit(term).await;

    // Without a prompt, too: before the shell's first output.
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    term.ready().await;
    assert!(
        term.text().starts_with("Authorized use only\r\n"),
        "{}",
        term.text()
    );
    assert!(term.text().ends_with(PROMPT));
    exit(term).await;
    gw.assert_idle().await;
}

/// Answers never reach the logs (at TRACE, tungstenite's frames included) nor a recording
/// of the session with its input.
#[test]
fn answers_are_never_logged_or_recorded() {
    let _ = tracing_log::LogTracer::init();
    let capture = Capture::default();
    let spec = "trace,tungstenite=trace,tungstenite::protocol=trace,tokio_tungstenite=trace";
    let subscriber = alfresco_ssh::logging::subscriber(spec, false, false, capture.clone())
        .expect("the log filter");
    // With a single registered dispatcher, tracing-core asks only the *calling thread's*
    // default whether a callsite is wanted, the first time that callsite is hit: a gateway
    // callsite first hit by a test running beside this one (the in-process russh test gets
    // there within milliseconds) would be cached as unwanted, and this capture stay empty.
    // A second registered dispatcher makes it ask every one, this capture included.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sshd = pam_sshd(PAM_OTP);
    let records = tempfile::tempdir().unwrap();
    let code = otp_code();
    runtime.block_on(async {
        let gw = Gateway::start_recording(records.path(), true).await;
        let mut term = gw.open(&interactive_body(&sshd), 80, 24).await;
        expect_prompt(&mut term, &[("Password: ", false)]).await;
        answer(&mut term, &[&test_password()]).await;
        expect_prompt(&mut term, &[("Verification code: ", false)]).await;
        answer(&mut term, &[&code]).await;
        term.ready().await;
        assert_eq!(term.run("echo recorded").await, "recorded\r\n");
        exit(term).await;
        gw.assert_idle().await;
        gw.stop().await;
    });
    let logs = capture.text();
    assert!(
        logs.contains("session claimed"),
        "the capture works:\n{logs}"
    );
    let mut cast = String::new();
    for entry in std::fs::read_dir(records.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            cast.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    assert!(cast.contains("recorded"), "the recording holds the session");
    // The password (32 hex digits) was an answer too; the six-digit code is not searched
    // for, as timestamps hold such digits by chance.
    for (what, text) in [("logs", &logs), ("recording", &cast)] {
        assert!(
            !text.contains(&test_password()),
            "the password is in the {what}"
        );
    }
}

/// The page's form, in real Chromium: the server's prompts as labels over the terminal,
/// masked inputs, the password and the code typed into them reach PAM and log in, and no
/// answer stays in the DOM once sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_asks_in_a_form_and_keeps_no_answer() {
    let sshd = pam_sshd(PAM_OTP);
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    let id = gw.create_id(&interactive_body(&sshd)).await;
    browser.open(&format!("http://{}/{id}", gw.addr)).await;
    // The answers are passed as arguments, never written into a script (which a failing
    // wait would print).
    let holds = async |answer: &str| {
        let script = "const a = arguments[0]; \
             return document.documentElement.outerHTML.includes(a) \
             || Array.from(document.querySelectorAll('input')).some(i => i.value.includes(a))";
        browser.execute_with(script, vec![json!(answer)]).await == true
    };
    let password = test_password();
    for (label, answer) in [
        ("Password: ", password.clone()),
        ("Verification code: ", otp_code()),
    ] {
        let form = browser
            .wait_until(&format!("the form asks {label:?}"), async || {
                let form = browser
                    .execute(
                        "const f = document.getElementById('auth-prompt'); \
                         const i = f.querySelector('input'); \
                         return f.hidden || !i ? null : \
                         [f.querySelector('label').textContent, i.type, document.activeElement === i, \
                          document.getElementById('auth-prompt-target').textContent]",
                    )
                    .await;
                (form[0] == label).then_some(form)
            })
            .await;
        let who = format!("Log in to {TEST_USER}@127.0.0.1:{}", sshd.addr().port());
        assert_eq!(
            form,
            json!([label, "password", true, who]),
            "masked, focused, and says who asks"
        );
        browser
            .send_keys("#auth-prompt-fields input", &format!("{answer}\n"))
            .await;
        browser
            .wait_until("the answer sent", async || {
                let hidden = browser
                    .execute("return document.getElementById('auth-prompt').hidden")
                    .await;
                (hidden == true || !holds(&answer).await).then_some(())
            })
            .await;
        assert!(
            !holds(&answer).await,
            "the answer to {label:?} is still in the DOM"
        );
    }
    browser.wait_for_line(PROMPT.trim_end()).await;
    assert_eq!(browser.state().await, "connected");
    assert!(
        !holds(&password).await,
        "the password is in the DOM after login"
    );
    browser.close().await;
    gw.assert_idle().await;
}

/// A reload at the code prompt (or a dropped Wi-Fi) comes back to the same prompt: the page
/// resumes with the token the first prompt gave, shows the form again, and the code typed
/// there logs in. No share button shows before the shell is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_at_a_prompt_comes_back_to_it() {
    let sshd = pam_sshd(PAM_OTP);
    let gw = Gateway::start_with(|c| c.resume_grace = Some(Duration::from_secs(60))).await;
    let browser = Browser::start().await;
    let id = gw.create_id(&interactive_body(&sshd)).await;
    let url = format!("http://{}/{id}", gw.addr);
    let asks = async |label: &str| {
        browser
            .wait_until(&format!("the form asks {label:?}"), async || {
                let form = browser
                    .execute(
                        "const f = document.getElementById('auth-prompt'); \
                         const l = f.querySelector('label'); \
                         return f.hidden || !l ? null : \
                         [l.textContent, document.getElementById('share').hidden]",
                    )
                    .await;
                (form[0] == label).then_some(form)
            })
            .await
    };
    browser.open(&url).await;
    asks("Password: ").await;
    browser
        .send_keys(
            "#auth-prompt-fields input",
            &format!("{}\n", test_password()),
        )
        .await;
    asks("Verification code: ").await;

    browser.open(&url).await;
    let form = asks("Verification code: ").await;
    assert_eq!(form[1], true, "no share button while logging in");
    assert_eq!(browser.state().await, "connecting");
    browser
        .send_keys("#auth-prompt-fields input", &format!("{}\n", otp_code()))
        .await;
    browser.wait_for_line(PROMPT.trim_end()).await;
    assert_eq!(browser.state().await, "connected");
    // Resume is on: closing the page would only detach the session.
    browser.enter("exit").await;
    browser.wait_for_state("ended").await;
    browser.close().await;
    gw.assert_idle().await;
}

/// A hostile server that asks forever, with oversized texts: the page gets at most
/// `MAX_PROMPT_ROUNDS` rounds, each text cut on a character boundary, and the attempt ends
/// with `auth_failed`, nothing left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_flood_is_bounded() {
    let (addr, server) = flood_server().await;
    let gw = Gateway::start().await;
    let body = json!({"hostname": "127.0.0.1", "port": addr.port(), "username": "u", "auth": "interactive"});
    let mut term = gw.open(&body, 80, 24).await;
    let mut rounds = 0;
    let error = loop {
        match term.next().await {
            crate::support::term::Event::Named(name, prompt) if name == "auth-prompt" => {
                rounds += 1;
                assert!(rounds <= 8, "round {rounds}");
                let text = prompt["prompts"][0]["text"].as_str().unwrap();
                assert!(text.len() <= 512 && text.starts_with("é") && !text.contains('\u{fffd}'));
                assert!(prompt["instruction"].as_str().unwrap().len() <= 2048);
                answer(&mut term, &["x"]).await;
            }
            crate::support::term::Event::Named(name, data) if name == "ssh-error" => break data,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(rounds, 8);
    assert_eq!(error["code"], "auth_failed", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("too many questions")
    );
    gw.assert_idle().await;
    server.abort();
}

/// An in-process russh server whose keyboard-interactive never ends.
async fn flood_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use russh::keys::PrivateKey;
    use russh::keys::ssh_key::private::Ed25519Keypair;
    use russh::server::Server as _;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seed: [u8; 32] = uuid::Uuid::new_v4()
        .as_u128()
        .to_le_bytes()
        .repeat(2)
        .try_into()
        .unwrap();
    let config = std::sync::Arc::new(russh::server::Config {
        keys: vec![PrivateKey::from(Ed25519Keypair::from_seed(&seed))],
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        ..Default::default()
    });
    let task = tokio::spawn(async move {
        let _ = Flood.run_on_socket(config, &listener).await;
    });
    (addr, task)
}

#[derive(Clone)]
struct Flood;

impl russh::server::Server for Flood {
    type Handler = Flood;

    fn new_client(&mut self, _: Option<std::net::SocketAddr>) -> Flood {
        Flood
    }
}

impl russh::server::Handler for Flood {
    type Error = russh::Error;

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        _response: Option<russh::server::Response<'a>>,
    ) -> Result<russh::server::Auth, Self::Error> {
        use std::borrow::Cow;
        Ok(russh::server::Auth::Partial {
            name: Cow::Borrowed("flood"),
            instructions: Cow::Owned("i".repeat(5000)),
            prompts: Cow::Owned(vec![(Cow::Owned(format!("{}:", "é".repeat(1000))), false)]),
        })
    }
}
