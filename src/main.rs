//! The command line: flags and environment into a `Config`, logging, the listener and
//! signals. Everything else lives in the library.

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use alfresco_ssh::{Args, Config, Server};

fn main() -> anyhow_free::Result {
    let args = Args::parse();
    let config = Config::try_from(&args).map_err(|e| format!("invalid configuration: {e}"))?;
    let filter = EnvFilter::try_new(&args.log).map_err(|e| format!("invalid --log filter: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let server = Server::new(&config);
        let base = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        tracing::info!(
            "listening on http://{addr}; create sessions with POST {base}/create-session"
        );
        server
            .run(listener, shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    })?;
    Ok(())
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
    let again = CancellationToken::new();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    drop(again);
}

/// `main`'s error: a message for the operator, printed once, exit status 1.
mod anyhow_free {
    pub type Result = std::result::Result<(), Message>;

    pub struct Message(String);

    impl From<String> for Message {
        fn from(s: String) -> Self {
            Message(s)
        }
    }

    impl std::fmt::Debug for Message {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
}
