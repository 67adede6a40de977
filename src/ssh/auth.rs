//! Authenticating one libssh2 session with one set of credentials, on the bridge thread.
//!
//! The methods the server offers are tried as OpenSSH's client would, each at most once:
//! publickey, password, then keyboard-interactive; after a partial success (`AuthenticationMethods
//! publickey,password`) the server's new list says what comes next. A keyboard-interactive
//! round that is a lone masked password prompt gets the session's password; every other
//! round goes to the person through `Page`. Also the pre-authentication banner, cleaned for
//! the terminal. Jump hosts call `authenticate` once per hop: the first over its blocking
//! session, later ones through `Calls` that keep the jump relay moving.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ssh2::{ErrorCode, KeyboardInteractivePrompt, Prompt, Session};

use super::error::{SshError, SshErrorKind};
use super::exchange::{AuthPrompt, PromptText};
use crate::request::{Credentials, Target};
use crate::secret::Secret;

/// Prompt rounds per session, answered or not: PAM with a one-time code needs three (the
/// password, the code, an empty closing round); a hostile server gets no more than this.
pub const MAX_PROMPT_ROUNDS: usize = 8;
/// Prompts in one round; more is a hostile server (the page shows them all at once).
pub const MAX_PROMPTS: usize = 8;
/// A prompt's text and a round's name, in bytes; longer server texts are cut.
pub const MAX_PROMPT_TEXT: usize = 512;
/// A round's instruction, in bytes (PAM puts its messages there).
pub const MAX_INSTRUCTION: usize = 2048;
/// One answer, in bytes: a password or a code, never a document.
pub const MAX_ANSWER: usize = 1024;
/// The banner shown in the terminal, in bytes.
pub const MAX_BANNER: usize = 8 * 1024;

// libssh2 error codes we tell apart (libssh2.h).
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;
const LIBSSH2_ERROR_FILE: i32 = -16;
const LIBSSH2_ERROR_AUTHENTICATION_FAILED: i32 = -18;
const LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED: i32 = -19;

const PUBLICKEY: &str = "publickey";
const PASSWORD: &str = "password";
const KEYBOARD_INTERACTIVE: &str = "keyboard-interactive";
/// The order methods are tried in, when offered and when the session can use them: the
/// session's own credentials first, so that a person is asked only for what they lack.
const METHODS: [&str; 3] = [PUBLICKEY, PASSWORD, KEYBOARD_INTERACTIVE];
/// For an interactive session the person answers either way: the server's own prompts
/// first (as OpenSSH's client prefers), so that a PAM stack with a one-time code, which
/// the password method cannot complete, does not ask for the password twice.
const INTERACTIVE_METHODS: [&str; 3] = [PUBLICKEY, KEYBOARD_INTERACTIVE, PASSWORD];

/// The person's page, as the bridge thread sees it while connecting.
pub trait Page {
    /// Shows a round of prompts and waits (bounded) for one answer per prompt.
    fn ask(&mut self, prompt: AuthPrompt) -> Result<Vec<Secret<String>>, SshError>;
    /// Shows text in the terminal, before the shell's output (the banner, an info round).
    fn show(&mut self, text: Bytes);
    /// Ends the attempt now: libssh2 is inside a call that cannot be cancelled otherwise.
    fn abort(&mut self);
    /// The connect deadline as it stands (it stops while the person is asked).
    fn deadline(&self) -> Instant;
    /// The longest one `ask` may wait.
    fn wait_bound(&self) -> Duration;
    /// The terminal size the page asked for meanwhile (a resize while it was asked).
    fn size(&self) -> Option<(u32, u32)>;
}

/// How authentication's libssh2 calls are made: once, on a blocking session (a direct
/// target, the first jump host), or again and again while `jump::Relay` moves the bytes
/// of a non-blocking session behind a jump host.
pub trait Calls {
    /// Runs `op` until it is done. The outer error is the transport's (a link lost, the
    /// deadline passed), the inner one libssh2's answer to the call.
    fn call<T>(
        &mut self,
        op: &mut dyn FnMut() -> Result<T, ssh2::Error>,
    ) -> Result<Result<T, ssh2::Error>, SshError>;
}

/// The calls of a blocking session: each returns when it is done.
pub struct Blocking;

impl Calls for Blocking {
    fn call<T>(
        &mut self,
        op: &mut dyn FnMut() -> Result<T, ssh2::Error>,
    ) -> Result<Result<T, ssh2::Error>, SshError> {
        Ok(op())
    }
}

/// Who a login is with, as the prompts name it: the target, or jump host `hop`.
#[derive(Clone, Copy)]
pub struct Account<'a> {
    pub target: &'a Target,
    pub hop: Option<u8>,
}

impl Account<'_> {
    fn prompt(&self, name: String, instruction: String, prompts: Vec<PromptText>) -> AuthPrompt {
        AuthPrompt {
            target: self.target.to_string(),
            hop: self.hop,
            name,
            instruction,
            prompts,
        }
    }
}

/// Authenticates as `account`'s user. Consumes the credentials: they are dropped, and so wiped,
/// when this returns, whatever the outcome.
pub fn authenticate(
    session: &Session,
    account: Account<'_>,
    credentials: Credentials,
    page: &mut dyn Page,
    calls: &mut impl Calls,
) -> Result<(), SshError> {
    let result = run(session, account, &credentials, page, calls);
    drop(credentials);
    result
}

fn run(
    session: &Session,
    account: Account<'_>,
    credentials: &Credentials,
    page: &mut dyn Page,
    calls: &mut impl Calls,
) -> Result<(), SshError> {
    let username = account.target.username.as_str();
    // The "none" request: the server answers with the methods it takes, and sends its
    // banner first, which libssh2 keeps.
    let mut offered = list(session, username, calls)?;
    if session.authenticated() {
        return Ok(());
    }
    if let Ok(Some(banner)) = session.userauth_banner() {
        let text = terminal_text(banner, MAX_BANNER);
        if !text.is_empty() {
            page.show(text);
        }
    }
    let mut tried: Vec<&str> = Vec::new();
    let mut rounds = Rounds::default();
    let mut failure = SshError::new(SshErrorKind::AuthFailed, "authentication failed");
    let order = if credentials.is_interactive() {
        INTERACTIVE_METHODS
    } else {
        METHODS
    };
    // Each method at most once: at most three attempts, whatever the server says.
    loop {
        let next = order.into_iter().find(|method| {
            !tried.contains(method) && offers(&offered, method) && usable(method, credentials)
        });
        let Some(method) = next else {
            return Err(failure);
        };
        tried.push(method);
        let attempt = match method {
            PUBLICKEY => publickey(session, username, credentials, calls),
            PASSWORD => password(session, account, credentials, page, calls),
            _ => keyboard_interactive(
                session,
                account,
                credentials.password(),
                page,
                &mut rounds,
                calls,
            ),
        };
        // Ended from inside the callback (a flood, the person's timeout): the socket is
        // shut, nothing more can be tried.
        if let Err(e) = attempt.as_ref()
            && rounds.ended
        {
            return Err(e.clone());
        }
        match attempt {
            _ if session.authenticated() => {
                tracing::info!(method, "authenticated");
                return Ok(());
            }
            // An attempt that failed as an attempt: the next method may still do.
            Ok(()) => {}
            Err(e) if matches!(e.kind, SshErrorKind::AuthFailed | SshErrorKind::KeyInvalid) => {
                tracing::debug!(method, code = e.code(), "authentication method failed");
                // A key that cannot be read says more than the failure of what followed.
                if failure.kind != SshErrorKind::KeyInvalid {
                    failure = e;
                }
            }
            // The connection, the deadline or the person: nothing more can be tried.
            Err(e) => return Err(e),
        }
        let more = order
            .into_iter()
            .any(|m| !tried.contains(&m) && usable(m, credentials));
        if !more {
            return Err(failure);
        }
        // After a partial success the list names what is still wanted; after a failure it
        // is the same list again.
        offered = list(session, username, calls)?;
        if session.authenticated() {
            return Ok(());
        }
    }
}

/// The methods the server takes now, as a comma-separated list.
fn list(session: &Session, username: &str, calls: &mut impl Calls) -> Result<String, SshError> {
    match calls.call(&mut || session.auth_methods(username).map(str::to_owned))? {
        Ok(list) => Ok(list),
        // The "none" request itself was accepted.
        Err(_) if session.authenticated() => Ok(String::new()),
        Err(e) => Err(auth_error(&e)),
    }
}

fn offers(list: &str, method: &str) -> bool {
    list.split(',').any(|m| m.trim() == method)
}

/// Whether the session has what `method` needs. Keyboard-interactive always qualifies:
/// what the session cannot answer, the person can.
fn usable(method: &str, credentials: &Credentials) -> bool {
    match method {
        PUBLICKEY => credentials.private_key().is_some(),
        PASSWORD => credentials.password().is_some() || credentials.is_interactive(),
        _ => true,
    }
}

fn publickey(
    session: &Session,
    username: &str,
    credentials: &Credentials,
    calls: &mut impl Calls,
) -> Result<(), SshError> {
    let Some((key, passphrase)) = credentials.private_key() else {
        return Ok(());
    };
    calls
        .call(&mut || {
            session.userauth_pubkey_memory(
                username,
                None,
                key.expose(),
                passphrase.map(|p| p.expose().as_str()),
            )
        })?
        .map_err(|e| auth_error(&e))
}

/// The session's password; for an interactive session, the gateway asks the page itself
/// (servers that offer `password` alone never send a prompt of their own).
fn password(
    session: &Session,
    account: Account<'_>,
    credentials: &Credentials,
    page: &mut dyn Page,
    calls: &mut impl Calls,
) -> Result<(), SshError> {
    let username = account.target.username.as_str();
    if let Some(password) = credentials.password() {
        return calls
            .call(&mut || session.userauth_password(username, password.expose()))?
            .map_err(|e| auth_error(&e));
    }
    let question = account.prompt(
        String::new(),
        String::new(),
        vec![PromptText {
            text: "Password:".into(),
            echo: false,
        }],
    );
    let answers = page.ask(question)?;
    let Some(answer) = answers.first() else {
        return Err(SshError::new(SshErrorKind::AuthFailed, "no password given"));
    };
    // The person's time did not count; libssh2's own timeout must not count it either.
    set_timeout(session, page.deadline())?;
    calls
        .call(&mut || session.userauth_password(username, answer.expose()))?
        .map_err(|e| auth_error(&e))
}

fn keyboard_interactive(
    session: &Session,
    account: Account<'_>,
    password: Option<&Secret<String>>,
    page: &mut dyn Page,
    rounds: &mut Rounds,
    calls: &mut impl Calls,
) -> Result<(), SshError> {
    // libssh2 counts the time our callback waits against the call's timeout; the server's
    // share is bounded by the deadline timer instead (`bridge::abort_at_deadline`).
    let left = page.deadline().saturating_duration_since(Instant::now());
    let bound = left + page.wait_bound() * MAX_PROMPT_ROUNDS as u32;
    session.set_timeout(bound.as_millis().clamp(1, u32::MAX as u128) as u32);
    let username = account.target.username.as_str();
    let mut prompter = Prompter {
        account,
        page,
        password,
        password_used: false,
        rounds,
        failure: None,
    };
    let result = calls.call(&mut || session.userauth_keyboard_interactive(username, &mut prompter));
    // Before the transport's error: the attempt's end shut the socket under both.
    if let Some(e) = prompter.failure {
        prompter.rounds.ended = true;
        return Err(e);
    }
    set_timeout(session, prompter.page.deadline())?;
    result?.map_err(|e| auth_error(&e))
}

/// The keyboard-interactive rounds of a session, over all its attempts.
#[derive(Default)]
struct Rounds {
    count: usize,
    /// An attempt was ended from inside the callback: the connection is shut.
    ended: bool,
}

/// Answers keyboard-interactive rounds inside libssh2's callback.
struct Prompter<'a, 'p> {
    account: Account<'a>,
    page: &'p mut dyn Page,
    password: Option<&'a Secret<String>>,
    password_used: bool,
    rounds: &'a mut Rounds,
    /// Why the attempt was ended from inside the callback; it overrides libssh2's result.
    failure: Option<SshError>,
}

impl Prompter<'_, '_> {
    fn fail(&mut self, e: SshError) {
        self.page.abort();
        self.failure = Some(e);
    }
}

impl KeyboardInteractivePrompt for Prompter<'_, '_> {
    fn prompt<'b>(&mut self, name: &str, instruction: &str, prompts: &[Prompt<'b>]) -> Vec<String> {
        // What libssh2 sends when the attempt is over anyway (the socket is shut down).
        let blank = || vec![String::new(); prompts.len()];
        if self.failure.is_some() {
            return blank();
        }
        self.rounds.count += 1;
        if self.rounds.count > MAX_PROMPT_ROUNDS || prompts.len() > MAX_PROMPTS {
            tracing::warn!(
                rounds = self.rounds.count,
                prompts = prompts.len(),
                "prompt flood"
            );
            self.fail(SshError::new(
                SshErrorKind::AuthFailed,
                "the SSH server asked too many questions",
            ));
            return blank();
        }
        if prompts.is_empty() {
            // An information round (PAM's messages): shown, answered at once.
            let text = [name, instruction]
                .iter()
                .filter(|t| !t.trim().is_empty())
                .map(|t| format!("{}\n", t.trim_end()))
                .collect::<String>();
            let text = terminal_text(&text, MAX_INSTRUCTION);
            if !text.is_empty() {
                self.page.show(text);
            }
            return Vec::new();
        }
        if !self.password_used
            && is_password_prompt(prompts)
            && let Some(password) = self.password
        {
            self.password_used = true;
            // ssh2 takes owned strings and frees them unwiped (its API); the copy lives
            // only until libssh2 has its own.
            return vec![password.expose().clone()];
        }
        let round = self.account.prompt(
            truncate(name, MAX_PROMPT_TEXT).to_owned(),
            truncate(instruction, MAX_INSTRUCTION).to_owned(),
            prompts
                .iter()
                .map(|p| PromptText {
                    text: truncate(&p.text, MAX_PROMPT_TEXT).to_owned(),
                    echo: p.echo,
                })
                .collect(),
        );
        match self.page.ask(round) {
            Ok(answers) if answers.len() == prompts.len() => {
                answers.iter().map(|a| a.expose().clone()).collect()
            }
            Ok(_) => {
                self.fail(SshError::new(
                    SshErrorKind::AuthFailed,
                    "the answers do not match the prompts",
                ));
                blank()
            }
            Err(e) => {
                self.fail(e);
                blank()
            }
        }
    }
}

/// A lone masked prompt that reads as a password prompt ("Password:", "user@host's
/// password:"), as PAM's pam_unix and most servers word it.
fn is_password_prompt(prompts: &[Prompt<'_>]) -> bool {
    match prompts {
        [only] => !only.echo && only.text.to_lowercase().contains("password"),
        _ => false,
    }
}

/// At most `max` bytes of `text`, cut on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Server text made safe for the terminal, as OpenSSH's client prints a banner: at most
/// `max` bytes, control characters other than tab and line ends dropped (no escape
/// sequence of the server's reaches the terminal before the shell does), CRLF line ends.
pub fn terminal_text(text: &str, max: usize) -> Bytes {
    let mut out = String::with_capacity(text.len().min(max) + 16);
    for c in truncate(text, max).chars() {
        match c {
            '\n' => out.push_str("\r\n"),
            '\t' => out.push('\t'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    Bytes::from(out)
}

/// libssh2's timeout for the next blocking call: what is left before `deadline`.
pub fn set_timeout(session: &Session, deadline: Instant) -> Result<(), SshError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(SshError::connect_timeout());
    }
    // libssh2 treats 0 as "no timeout"; round up so a sliver of time is not infinite.
    session.set_timeout(left.as_millis().clamp(1, u32::MAX as u128) as u32);
    Ok(())
}

fn auth_error(e: &ssh2::Error) -> SshError {
    match e.code() {
        ErrorCode::Session(LIBSSH2_ERROR_FILE) => SshError::new(
            SshErrorKind::KeyInvalid,
            "the private key cannot be read, or the passphrase is wrong",
        ),
        ErrorCode::Session(
            LIBSSH2_ERROR_AUTHENTICATION_FAILED | LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED,
        ) => SshError::new(SshErrorKind::AuthFailed, "authentication failed"),
        ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) => SshError::connect_timeout(),
        // libssh2's own message helps an operator and holds no secrets.
        _ => SshError::new(
            SshErrorKind::SshFailed,
            format!("authentication failed: {}", e.message()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn prompt(text: &str, echo: bool) -> Prompt<'_> {
        Prompt {
            text: Cow::Borrowed(text),
            echo,
        }
    }

    #[test]
    fn password_prompts() {
        for text in ["Password: ", "alfresco-test@host's password:", "PASSWORD"] {
            assert!(is_password_prompt(&[prompt(text, false)]), "{text}");
        }
        assert!(!is_password_prompt(&[prompt("Password: ", true)]));
        assert!(!is_password_prompt(&[prompt("Verification code: ", false)]));
        assert!(!is_password_prompt(&[
            prompt("Password: ", false),
            prompt("Code: ", false)
        ]));
        assert!(!is_password_prompt(&[]));
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abc", 2), "ab");
        // "é" is two bytes: a cut inside it drops it.
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("€", 1), "");
    }

    #[test]
    fn terminal_text_is_cleaned() {
        assert_eq!(
            &terminal_text("Welcome\n\x1b[31mred\x1b[0m\tok\r\n\x07", 100)[..],
            b"Welcome\r\n[31mred[0m\tok\r\n"
        );
        assert_eq!(&terminal_text("\u{9b}2Jx", 100)[..], b"2Jx");
        assert_eq!(terminal_text(&"x".repeat(100), 10).len(), 10);
    }

    /// A page that answers every round with `answer` per prompt, and keeps what it saw.
    #[derive(Default)]
    struct FakePage {
        asked: Vec<AuthPrompt>,
        shown: Vec<Bytes>,
        aborted: bool,
    }

    impl Page for FakePage {
        fn ask(&mut self, prompt: AuthPrompt) -> Result<Vec<Secret<String>>, SshError> {
            let n = prompt.prompts.len();
            self.asked.push(prompt);
            Ok((0..n).map(|_| Secret::new("424242".to_owned())).collect())
        }
        fn show(&mut self, text: Bytes) {
            self.shown.push(text);
        }
        fn abort(&mut self) {
            self.aborted = true;
        }
        fn deadline(&self) -> Instant {
            Instant::now() + Duration::from_secs(10)
        }
        fn wait_bound(&self) -> Duration {
            Duration::from_secs(1)
        }
        fn size(&self) -> Option<(u32, u32)> {
            None
        }
    }

    fn target() -> Target {
        Target {
            host: "db.internal".into(),
            port: 22,
            username: "alice".into(),
        }
    }

    #[test]
    fn prompter_answers_the_password_once_and_asks_the_rest() {
        let target = target();
        let mut page = FakePage::default();
        let password = Secret::new("pw".to_owned());
        let mut rounds = Rounds::default();
        let mut prompter = Prompter {
            account: Account {
                target: &target,
                hop: Some(2),
            },
            page: &mut page,
            password: Some(&password),
            password_used: false,
            rounds: &mut rounds,
            failure: None,
        };
        assert_eq!(
            prompter.prompt("", "", &[prompt("Password: ", false)]),
            ["pw"]
        );
        let long = "é".repeat(MAX_PROMPT_TEXT);
        assert_eq!(
            prompter.prompt("n", "i", &[prompt(&long, false)]),
            ["424242"]
        );
        // An information round is shown, not asked.
        assert!(prompter.prompt("", "Hello\n", &[]).is_empty());
        assert!(prompter.failure.is_none());
        assert_eq!(rounds.count, 3);
        assert_eq!(page.asked.len(), 1);
        // The second password prompt went to the person, its text cut on a char boundary.
        assert_eq!(page.asked[0].prompts[0].text.len(), MAX_PROMPT_TEXT);
        // Named for the page: who asks.
        assert_eq!(
            (page.asked[0].target.as_str(), page.asked[0].hop),
            ("alice@db.internal:22", Some(2))
        );
        assert_eq!(page.shown, [Bytes::from_static(b"Hello\r\n")]);
    }

    #[test]
    fn prompter_ends_a_flood() {
        let target = target();
        let mut page = FakePage::default();
        let mut rounds = Rounds::default();
        let mut prompter = Prompter {
            account: Account {
                target: &target,
                hop: Some(2),
            },
            page: &mut page,
            password: None,
            password_used: false,
            rounds: &mut rounds,
            failure: None,
        };
        for _ in 0..MAX_PROMPT_ROUNDS {
            assert_eq!(prompter.prompt("", "", &[prompt("Code: ", true)]).len(), 1);
        }
        assert!(prompter.failure.is_none());
        // One round too many: blank answers, the attempt ended, the page no longer asked.
        assert_eq!(prompter.prompt("", "", &[prompt("Code: ", true)]), [""]);
        assert_eq!(
            prompter.failure.as_ref().map(|e| e.kind),
            Some(SshErrorKind::AuthFailed)
        );
        assert_eq!(prompter.prompt("", "", &[prompt("Code: ", true)]), [""]);
        assert_eq!(page.asked.len(), MAX_PROMPT_ROUNDS);
        assert!(page.aborted);

        // Too many prompts in one round is a flood too.
        let mut page = FakePage::default();
        let mut rounds = Rounds::default();
        let mut prompter = Prompter {
            account: Account {
                target: &target,
                hop: Some(2),
            },
            page: &mut page,
            password: None,
            password_used: false,
            rounds: &mut rounds,
            failure: None,
        };
        let many: Vec<_> = (0..=MAX_PROMPTS).map(|_| prompt("Q: ", true)).collect();
        assert_eq!(prompter.prompt("", "", &many).len(), many.len());
        assert!(prompter.failure.is_some());
        assert!(page.asked.is_empty() && page.aborted);
    }
}
