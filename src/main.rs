//! The command line: flags and environment into a `Config`, logging, the listener and
//! signals; or `replay FILE`, handed to the library. Everything else lives in the library.
//! Before anything is read, the process is made undumpable: it will hold credentials.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use tracing_subscriber::util::SubscriberInitExt;

use alfresco_ssh::{Config, Server};

fn main() -> ExitCode {
    // First of all, before a token file or a request is read: a core dump (or a debugger
    // attached by the same user) would otherwise hold every credential in flight.
    let hardening = harden_process();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // A subcommand before the flags: the server's flags are all options, so a bare
    // `replay` cannot be mistaken for one of them.
    if argv.get(1).is_some_and(|a| a == "replay") {
        return replay(argv.into_iter().skip(1));
    }
    match run(argv, hardening) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("alfresco-ssh: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `alfresco-ssh replay FILE [--speed X] [--idle-limit SECS]`.
fn replay(argv: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    use alfresco_ssh::record::replay::{ReplayArgs, play};
    let args = ReplayArgs::try_parse(argv).unwrap_or_else(|clap_answer| clap_answer.exit());
    match play(&args, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alfresco-ssh replay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(argv: Vec<std::ffi::OsString>, hardening: Vec<String>) -> Result<(), String> {
    let mut args = match alfresco_ssh::config::parse_command_line(argv) {
        Ok(args) => args,
        // Help, version and flag errors: clap prints them and exits with the right status.
        Err(Ok(clap_answer)) => clap_answer.exit(),
        Err(Err(e)) => return Err(format!("invalid configuration: {e}")),
    };
    if args.state_dir.is_none() {
        args.state_dir = default_state_dir();
    }
    let mut config = Config::try_from(&args).map_err(|e| format!("invalid configuration: {e}"))?;
    if args.check_config {
        println!(
            "configuration OK: listen {}, {} API token(s), destinations: {}",
            config.listen,
            config.api_tokens.len(),
            config.destinations.summary()
        );
        return Ok(());
    }
    if config.api_tokens.is_empty() {
        // Printed once, to the terminal only, never to the log.
        let generated = alfresco_ssh::config::generate_token();
        eprintln!(
            "alfresco-ssh: no API token configured; this run's token is:\n\n    {}\n\n\
             Send it as `Authorization: Bearer <token>` to POST /create-session. Set fixed \
             tokens with --api-token-file or ALFRESCO_API_TOKEN.",
            generated.token.expose()
        );
        config.api_tokens = std::sync::Arc::new(vec![generated]);
    }
    // Colour only for a person at a terminal, not in journald or a file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logs = alfresco_ssh::logging::subscriber(
        &args.log,
        args.log_format == "json",
        ansi,
        std::io::stdout,
    )
    .map_err(|e| format!("invalid --log filter: {e}"))?;
    // Also routes what dependencies log through the `log` crate into the subscriber.
    logs.try_init()
        .map_err(|e| format!("cannot set up logging: {e}"))?;
    for failure in hardening {
        tracing::warn!("{failure}; a crash or a debugger could expose credentials");
    }
    raise_fd_limit();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let server = Server::new(&config).map_err(|e| format!("cannot start: {e}"))?;
        let scheme = config.scheme();
        let base = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}"));
        tracing::info!(
            "listening on {scheme}://{addr}; create sessions with POST {base}/create-session"
        );
        tracing::info!("destinations: {}", config.destinations.summary());
        if let Some(record) = &config.record {
            tracing::info!(dir = %record.dir.display(), input = record.record_input, "recording sessions");
        }
        if config.is_cleartext_exposed() {
            tracing::warn!(
                "listening on {addr} without TLS: passwords and keys sent to create-session, \
                 and everything typed in a terminal, cross the network in clear text; \
                 use --tls-cert and --tls-key, or put a TLS-terminating proxy in front"
            );
        }
        if config.reached_only_by_address() {
            tracing::warn!(
                "no --public-url or --allowed-host: browsers may open terminals only from                  {addr} itself; a page reached by a host name or through a proxy gets 403                  (the Host header is not trusted, against DNS rebinding)"
            );
        }
        reload_on_hangup(server.handle());
        server
            .run(listener, shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    })
}

/// SIGHUP reads the API token file again: tokens are added and retired without a restart.
/// A file that no longer parses is logged and the tokens in force stay.
fn reload_on_hangup(handle: alfresco_ssh::Handle) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler; token changes need a restart");
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match handle.reload_tokens() {
                Ok(n) => tracing::info!(tokens = n, "API tokens reloaded"),
                Err(e) => tracing::warn!(error = %e, "API tokens not reloaded; the old ones stay"),
            }
        }
    });
}

/// Where accept-new records host keys when --state-dir is not given: systemd's
/// `StateDirectory=` (the first, if it lists several), else the XDG default under $HOME.
/// `None` (no such variables) leaves the keys in memory.
fn default_state_dir() -> Option<PathBuf> {
    let systemd = std::env::var_os("STATE_DIRECTORY")
        .and_then(|dirs| std::env::split_paths(&dirs).next())
        .filter(|dir| !dir.as_os_str().is_empty());
    systemd.or_else(|| {
        std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .map(|home| PathBuf::from(home).join(".local/state/alfresco-ssh"))
    })
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits at once.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("signal received: closing sessions (send it again to exit at once)");
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

/// Each session holds a few descriptors (WebSocket, SSH socket, eventfd); the soft limit
/// (often 1024) would cap sessions far below `--max-sessions`, so raise it to the hard one.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` means unlimited; the kernel refuses an unlimited NOFILE, so leave that alone.
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            let raised = rustix::process::Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::warn!(error = %e, "cannot raise the open-files limit");
            }
        }
    }
}

/// No core dumps, and no ptrace or /proc/<pid>/mem by other processes of the same user:
/// `PR_SET_DUMPABLE` 0 covers both (and a setuid-style `suid_dumpable` sysctl cannot turn
/// dumps back on), `RLIMIT_CORE` 0 is the belt to its braces, and children (none today)
/// inherit the limit. Returns what could not be set, to be logged once logging is up.
fn harden_process() -> Vec<String> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    let mut failures = Vec::new();
    if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        failures.push(format!("cannot make the process undumpable: {e}"));
    }
    let none = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(e) = setrlimit(Resource::Core, none) {
        failures.push(format!("cannot turn core dumps off: {e}"));
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardening_leaves_no_core_and_no_dumpable_process() {
        use rustix::process::{DumpableBehavior, Resource, dumpable_behavior, getrlimit};
        assert_eq!(harden_process(), Vec::<String>::new());
        assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::NotDumpable);
        let core = getrlimit(Resource::Core);
        assert_eq!((core.current, core.maximum), (Some(0), Some(0)));
    }
}
