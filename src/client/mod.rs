//! `alfresco-ssh session …`: the client a CI job runs to create a session, follow it to its
//! end and exit with its outcome, or ask about, end and extend sessions.
//!
//! `args` (flags), `body` (the create-session body and the secrets it carries), `api` (HTTP,
//! retries), `status` (the status object, pure), `watch` (the long-poll loop and the
//! state-change lines), `exit` (the exit codes), `error`. This file dispatches. Like `main`,
//! the client may read the environment (through `Env`); never a secret from argv.

pub mod api;
pub mod args;
pub mod body;
pub mod error;
pub mod exit;
pub mod status;
pub mod watch;

use std::ffi::OsString;
use std::io::Write;

use serde::Deserialize;
use serde_json::Value;

use api::{Api, ApiSettings, SessionRef};
use args::{Command, CreateArgs, GatewayArgs, SessionArgs};
use body::{create_body, read_secret_file, read_secret_var};
use error::ClientError;
use exit::Exit;
use status::{State, Status};
use watch::{Followed, follow, write_line};

/// How long a cancelled `create --wait` tries to revoke its session: GitHub Actions sends
/// SIGINT, then SIGTERM 7.5 s later, then kills.
const REVOKE_ON_CANCEL: std::time::Duration = std::time::Duration::from_secs(5);

/// Pages `list` follows at most (each up to the gateway's default of 50 sessions).
const MAX_PAGES: usize = 20;

/// Where the client reads its environment: `std::env::var_os` in `main`, a map in tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// Runs `session …` (argv from the subcommand's name on) and returns how it ended.
pub fn run(argv: impl IntoIterator<Item = OsString>, env: Env<'_>) -> Exit {
    let args = match SessionArgs::try_parse(argv) {
        Ok(args) => args,
        Err(clap_answer) => {
            let _ = clap_answer.print();
            // Help and version go to stdout and are a success; flag errors are usage.
            return if clap_answer.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("alfresco-ssh session: cannot start: {e}");
            return Exit::Unreachable;
        }
    };
    let mut stdout = std::io::stdout();
    match runtime.block_on(dispatch(args.command, env, &mut stdout)) {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("alfresco-ssh session: {e}");
            e.kind.exit()
        }
    }
}

async fn dispatch(
    command: Command,
    env: Env<'_>,
    out: &mut dyn Write,
) -> Result<Exit, ClientError> {
    match command {
        Command::Create(args) => create(args, env, out).await,
        Command::Status(args) => {
            let api = connect(&args.gateway, env)?;
            let answer = api.status(&SessionRef::parse(&args.id)?, None).await?;
            let status = parse_status(&answer)?;
            if args.gateway.json {
                write_line(out, &answer.to_string());
            } else {
                write_line(out, &describe(&status));
            }
            Ok(Exit::Success)
        }
        Command::Wait(args) => {
            let until = State::parse_list(&args.states)
                .map_err(|e| ClientError::usage(format!("--for: {e}")))?;
            let api = connect(&args.gateway, env)?;
            let id = SessionRef::parse(&args.id)?;
            let followed = follow(
                &api,
                &id,
                None,
                &until,
                args.timeout,
                args.gateway.json,
                out,
            )
            .await?;
            Ok(match followed {
                Followed::Reached(status) => Exit::of(&status).unwrap_or(Exit::Success),
                Followed::TimedOut(status) => {
                    eprintln!(
                        "alfresco-ssh session: still {} after --timeout",
                        status.state.name()
                    );
                    Exit::WaitTimedOut
                }
            })
        }
        Command::Revoke(args) => {
            let api = connect(&args.gateway, env)?;
            let answer = api.revoke(&SessionRef::parse(&args.id)?).await?;
            let status = parse_status(&answer)?;
            if args.gateway.json {
                write_line(out, &answer.to_string());
            } else {
                write_line(out, &format!("revoke asked; {}", describe(&status)));
            }
            Ok(Exit::Success)
        }
        Command::Extend(args) => {
            let api = connect(&args.gateway, env)?;
            let answer = api.extend(&SessionRef::parse(&args.id)?, args.by).await?;
            let status = parse_status(&answer)?;
            if args.gateway.json {
                write_line(out, &answer.to_string());
            } else {
                write_line(out, &describe(&status));
            }
            Ok(Exit::Success)
        }
        Command::List(args) => {
            let api = connect(&args.gateway, env)?;
            if let Some(states) = &args.state {
                State::parse_list(states)
                    .map_err(|e| ClientError::usage(format!("--state: {e}")))?;
            }
            let mut cursor: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let page = api.list(args.state.as_deref(), cursor.as_deref()).await?;
                if args.gateway.json {
                    write_line(out, &page.to_string());
                } else {
                    let sessions = page.get("sessions").and_then(Value::as_array);
                    for session in sessions.into_iter().flatten() {
                        let status = parse_status(session)?;
                        let created = status.created_at.as_deref().unwrap_or("-");
                        write_line(
                            out,
                            &format!("{} {created} {}", status.id, describe(&status)),
                        );
                    }
                }
                cursor = page
                    .get("next_cursor")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if cursor.is_none() {
                    return Ok(Exit::Success);
                }
            }
            eprintln!("alfresco-ssh session: more than {MAX_PAGES} pages; narrow with --state");
            Ok(Exit::Success)
        }
    }
}

/// `session create`: the URL on its own line, the CI annotation, then with `--wait` the
/// session followed to its end.
async fn create(args: CreateArgs, env: Env<'_>, out: &mut dyn Write) -> Result<Exit, ClientError> {
    let api = connect(&args.gateway, env)?;
    let body = create_body(&args, env)?;
    let answer = api.create(body).await?;
    let field = |name: &str| {
        answer
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::bad_answer(format!("the create answer has no {name:?}")))
    };
    let (id, url) = (field("id")?, field("url")?);
    let json = args.gateway.json;
    if json {
        write_line(out, &answer.to_string());
    } else {
        write_line(out, &url);
    }
    // The annotations are not JSON: with --json they go to stderr, where the runner still
    // sees them and a parser of stdout does not.
    let mut stderr = std::io::stderr();
    let notes: &mut dyn Write = if json { &mut stderr } else { out };
    if is_true(env("GITHUB_ACTIONS")) {
        // A workflow command: shown on the run's summary page, not only deep in the log.
        write_line(notes, &format!("::notice title=alfresco-ssh::{url}"));
    }
    if is_true(env("GITLAB_CI")) {
        // GitLab has no annotations; a bold line (its log renders ANSI) stands out.
        write_line(
            notes,
            &format!("\x1b[1;33m>>> alfresco-ssh: open {url}\x1b[0m"),
        );
    }
    if !args.wait {
        return Ok(Exit::Success);
    }
    let id = SessionRef::parse(&id)?;
    let final_states: Vec<State> = State::ALL.into_iter().filter(|s| s.is_final()).collect();
    let followed = tokio::select! {
        followed = follow(&api, &id, None, &final_states, None, json, out) => followed?,
        signal = interrupted() => {
            // A cancelled job: its runner is about to go, so the session it made must not
            // stay behind, a link anyone in the log could still open, or a shell.
            eprintln!("alfresco-ssh session: interrupted: revoking the session");
            match tokio::time::timeout(REVOKE_ON_CANCEL, api.revoke(&id)).await {
                Ok(Ok(_)) => eprintln!("alfresco-ssh session: revoked"),
                Ok(Err(e)) => eprintln!("alfresco-ssh session: cannot revoke: {e}"),
                Err(_) => eprintln!("alfresco-ssh session: cannot revoke: no answer in time"),
            }
            return Ok(Exit::Signalled(Some(signal)));
        }
    };
    match followed {
        Followed::Reached(status) => Ok(Exit::of(&status).unwrap_or(Exit::Success)),
        // No timeout was given: only the gateway's timers end the wait.
        Followed::TimedOut(_) => Ok(Exit::WaitTimedOut),
    }
}

/// Resolves with the signal's number at the first SIGINT or SIGTERM (how CI systems cancel a
/// job); never, if the handlers cannot be installed.
async fn interrupted() -> u8 {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => 2,
        _ = term.recv() => 15,
    }
}

/// The API client for `gateway`, with the token from `--token-file` or `ALFRESCO_TOKEN`.
fn connect(gateway: &GatewayArgs, env: Env<'_>) -> Result<Api, ClientError> {
    let token = match &gateway.token_file {
        Some(path) => read_secret_file(path, "--token-file", true)?,
        None => read_secret_var(env, "ALFRESCO_TOKEN", "the API token").map_err(|_| {
            ClientError::usage("no API token: set ALFRESCO_TOKEN or pass --token-file")
        })?,
    };
    let ca_pem = gateway
        .ca_file
        .as_deref()
        .map(|path| {
            std::fs::read(path)
                .map_err(|e| ClientError::usage(format!("--ca-file {}: {e}", path.display())))
        })
        .transpose()?;
    if cleartext(&gateway.gateway) {
        eprintln!(
            "alfresco-ssh session: warning: {} is plain http: the token and the SSH \
             credentials cross the network unencrypted",
            gateway.gateway
        );
    }
    Api::new(ApiSettings {
        gateway: gateway.gateway.clone(),
        token,
        ca_pem,
        retry_for: gateway.retry_for,
    })
}

/// Plain http to anything but this machine.
fn cleartext(gateway: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(gateway) else {
        return false;
    };
    // An IPv6 host comes in brackets; a name other than localhost may resolve anywhere.
    let host = url.host_str().unwrap_or("");
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    url.scheme() == "http" && !loopback
}

fn is_true(value: Option<OsString>) -> bool {
    value.is_some_and(|v| v == "true")
}

fn parse_status(answer: &Value) -> Result<Status, ClientError> {
    Status::deserialize(answer)
        .map_err(|e| ClientError::bad_answer(format!("not a status object: {e}")))
}

/// One line about a session: its state, target, and outcome or deadline.
fn describe(status: &Status) -> String {
    let target = status.target.as_deref().unwrap_or("?");
    let state = status.state.name();
    if status.state.is_final() {
        format!("{state} {target}: {}", status.outcome())
    } else if let Some(ends_at) = &status.ends_at {
        format!("{state} {target}, ends at {ends_at}")
    } else if let Some(expires_at) = &status.expires_at {
        format!("{state} {target}, link expires at {expires_at}")
    } else {
        format!("{state} {target}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleartext_is_plain_http_beyond_loopback() {
        for (url, warned) in [
            ("http://127.0.0.1:8022", false),
            ("http://[::1]:8022", false),
            ("http://localhost", false),
            ("https://ssh.example.com", false),
            ("http://ssh.example.com", true),
            ("http://10.0.0.5:8022", true),
        ] {
            assert_eq!(cleartext(url), warned, "{url}");
        }
    }

    #[test]
    fn one_line_per_session() {
        let mut s = Status::test("live");
        s.target = Some("u@h:22".into());
        s.ends_at = Some("2026-12-03T16:00:00Z".into());
        assert_eq!(describe(&s), "live u@h:22, ends at 2026-12-03T16:00:00Z");
        s.state = State::Ended;
        s.end_reason = Some("exited".into());
        s.exit_status = Some(0);
        assert_eq!(describe(&s), "ended u@h:22: exited 0");
    }
}
