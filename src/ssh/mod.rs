//! The SSH side: each live session is a `Bridge` whose dedicated thread owns a blocking
//! libssh2 session (ssh2 crate). `dial` resolves and connects on the async side; `bridge` is
//! the async handle; `thread` and `connect` run on the session's thread and are the only
//! files that touch libssh2; `exchange` is what the two sides pass between them. `connect`
//! asks `hostkey` whether the server's key is the expected one before it sends any credential,
//! then `auth` authenticates, asking the person's page through the bridge's queues when the
//! server asks what the session cannot answer.

mod auth;
mod bridge;
mod connect;
mod dial;
mod error;
mod exchange;
mod hostkey;
mod jump;
mod known_hosts;
mod thread;
mod wake;

pub use auth::{MAX_ANSWER, MAX_PROMPTS};
pub use bridge::{Bridge, InputPermit, InputSender, Start};
pub use dial::Dialer;
pub use error::{SshError, SshErrorKind};
pub use exchange::{AuthPrompt, BridgeEvent, ExitInfo, Input, PromptText};
pub use hostkey::{HostKeys, RECORDED_FILE, parse_pin as parse_host_key_pin};
