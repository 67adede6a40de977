//! The SSH side: each live session is a `Bridge` whose dedicated thread owns a blocking
//! libssh2 session (ssh2 crate). `dial` resolves and connects on the async side; the thread
//! (`connect`, then `pump`) does everything that touches libssh2; `connect` asks `hostkey`
//! whether the server's key is the expected one before it sends any credential.

mod bridge;
mod connect;
mod dial;
mod error;
mod hostkey;
mod known_hosts;
mod pump;
mod wake;

pub use bridge::{Bridge, BridgeEvent, ExitInfo, Input, InputPermit, InputSender, Start};
pub use dial::Dialer;
pub use error::{SshError, SshErrorKind};
pub use hostkey::{HostKeys, RECORDED_FILE, parse_pin as parse_host_key_pin};
