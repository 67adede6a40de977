//! The log subscriber: `--log` and `--log-format` into one, for `main` and the tests alike.
//!
//! Whatever `--log` asks for, dependencies that log the bytes they carry stay at WARN and
//! above: tungstenite's DEBUG and TRACE lines hold every WebSocket frame, so every
//! keystroke (passwords typed at prompts), session id, resume token and view link. The
//! guard is a filter of its own beside `--log`'s, so no directive in `--log` can undo it.

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::{EnvFilter, FilterExt, FilterFn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

/// Crates that log payloads (frames, headers, records) below WARN, by target prefix.
/// hyper, hyper-util and rustls log nothing in this build (their logging features are off),
/// but a feature turned on elsewhere in the tree would bring request heads and
/// `Authorization` headers with it, so they are held to the same line.
pub const PAYLOAD_TARGETS: [&str; 6] = [
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "rustls",
    "tokio_rustls",
];

/// A `--log` value that `EnvFilter` refuses.
#[derive(Debug)]
pub struct LogFilterError(String);

impl std::fmt::Display for LogFilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The subscriber for `spec` (an `EnvFilter` directive list such as `info` or
/// `alfresco_ssh=trace`), writing text or JSON lines to `writer`.
pub fn subscriber<W>(
    spec: &str,
    json: bool,
    ansi: bool,
    writer: W,
) -> Result<impl Subscriber + Send + Sync + 'static, LogFilterError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(spec).map_err(|e| LogFilterError(e.to_string()))?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    // Both must agree for a line to be written; `--log` cannot widen the guard.
    let filter = filter.and(FilterFn::new(carries_no_payload));
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = if json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    Ok(Registry::default().with(fmt))
}

/// False for DEBUG and TRACE events and spans of the payload-carrying crates.
fn carries_no_payload(meta: &Metadata<'_>) -> bool {
    *meta.level() <= Level::WARN || !is_payload_target(meta.target())
}

fn is_payload_target(target: &str) -> bool {
    PAYLOAD_TARGETS.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_targets_by_crate_not_by_prefix() {
        assert!(is_payload_target("tungstenite"));
        assert!(is_payload_target("tungstenite::protocol::frame"));
        assert!(is_payload_target("tokio_tungstenite::compat"));
        assert!(is_payload_target("hyper::proto::h1::io"));
        assert!(!is_payload_target("hyperion"));
        assert!(!is_payload_target("alfresco_ssh::ws::live"));
        assert!(!is_payload_target("hickory_resolver"));
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(subscriber("info", false, false, std::io::sink).is_ok());
        assert!(subscriber("trace,tungstenite=trace", true, false, std::io::sink).is_ok());
        assert!(subscriber("=[", false, false, std::io::sink).is_err());
    }
}
