//! The blocking start of a session, run on the bridge thread: SSH handshake, the host-key
//! check, authentication (`auth.rs`) and the PTY shell, each bounded by the connect
//! deadline, which stands still while the person answers a prompt.
//!
//! Credentials are consumed here: the `SessionRequest` is moved in and dropped (zeroized)
//! as soon as authentication is over, whatever its outcome.

use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use ssh2::{Channel, ErrorCode, ExtendedData, MethodType, Session};

use super::auth::{self, Page, set_timeout};
use super::error::{SshError, SshErrorKind};
use super::hostkey::{HostKey, HostKeys};
use crate::request::{HostKeyPin, SessionRequest, Target};

// libssh2 error codes we tell apart (libssh2.h).
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;

/// AES-GCM first: through libssh2 it is markedly faster than chacha20-poly1305 on CPUs with
/// AES-NI, and both are AEAD. The CTR modes stay for older servers; no CBC, no RC4.
const CIPHERS: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr";
/// Key exchange without SHA-1 or 1024-bit groups; post-quantum hybrid first. libssh2 adds
/// `kex-strict-c-v00@openssh.com` (the Terrapin fix) and `ext-info-c` in front itself.
const KEX: &str = "mlkem768x25519-sha256,curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256";
/// MACs (used only with the CTR ciphers): SHA-2, encrypt-then-MAC first.
const MACS: &str =
    "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha2-256,hmac-sha2-512";

/// The SSH socket, shared between libssh2 (which wants to own a stream) and the pump's
/// `poll`, without duplicating the descriptor.
pub struct SharedSocket(pub Arc<TcpStream>);

impl AsRawFd for SharedSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// An authenticated session with a running PTY shell, still in blocking mode.
pub struct Shell {
    pub session: Session,
    pub channel: Channel,
    pub socket: Arc<TcpStream>,
    /// The terminal size the PTY was asked for.
    pub size: (u32, u32),
}

/// Handshake, check the host key, authenticate and start a shell of `cols`×`rows` before
/// the page's deadline (or at the size the page last asked for, if it changed while the
/// person answered a prompt).
pub fn open_shell(
    stream: TcpStream,
    request: SessionRequest,
    host_keys: &HostKeys,
    remote_lang: Option<&str>,
    cols: u32,
    rows: u32,
    page: &mut dyn Page,
) -> Result<Shell, SshError> {
    let socket = Arc::new(stream);
    let mut session = Session::new().map_err(|e| failed("cannot create an SSH session", &e))?;
    session.set_tcp_stream(SharedSocket(socket.clone()));
    let SessionRequest {
        target,
        credentials,
        term,
        host_key,
        ..
    } = request;
    set_preferences(&session, host_keys, &target, host_key.as_ref())?;

    set_timeout(&session, page.deadline())?;
    session
        .handshake()
        .map_err(|e| map_error(&e, "SSH handshake failed"))?;
    log_negotiated(&session);

    // Before any credential leaves: a server with the wrong key gets nothing, not even
    // the user name. On refusal `credentials` is dropped (wiped) on the way out.
    check_host_key(&session, host_keys, &target, host_key.as_ref())?;

    set_timeout(&session, page.deadline())?;
    let account = auth::Account {
        target: &target,
        hop: None,
    };
    auth::authenticate(&session, account, credentials, page, &mut auth::Blocking)?;

    set_timeout(&session, page.deadline())?;
    let (cols, rows) = page.size().unwrap_or((cols, rows));
    let mut channel = session
        .channel_session()
        .map_err(|e| map_error(&e, "cannot open a channel"))?;
    // A PTY merges stderr already; this keeps exec-style channels byte-complete too.
    channel
        .handle_extended_data(ExtendedData::Merge)
        .map_err(|e| map_error(&e, "cannot set up the channel"))?;
    // Servers may refuse the variable (AcceptEnv); the session works without it.
    if let Some(lang) = remote_lang {
        let _ = channel.setenv("LANG", lang);
    }
    channel
        .request_pty(&term, None, Some((cols, rows, 0, 0)))
        .map_err(|e| map_error(&e, "the server refused a terminal"))?;
    channel
        .shell()
        .map_err(|e| map_error(&e, "the server refused a shell"))?;
    Ok(Shell {
        session,
        channel,
        socket,
        size: (cols, rows),
    })
}

/// What the handshake settled on, once per session: the first thing to read when a server
/// behaves oddly, and where docs/COMPATIBILITY.md's table comes from (tests/it/compat.rs
/// reads it). The server's version string is network input: logged with `?`, so escaped.
fn log_negotiated(session: &Session) {
    let method = |kind| session.methods(kind).unwrap_or("-");
    tracing::info!(
        server = ?session.banner().unwrap_or("-"),
        kex = method(MethodType::Kex),
        host_key = method(MethodType::HostKey),
        cipher_cs = method(MethodType::CryptCs),
        cipher_sc = method(MethodType::CryptSc),
        mac_cs = method(MethodType::MacCs),
        mac_sc = method(MethodType::MacSc),
        "negotiated"
    );
}

/// The gateway's algorithm preferences for a session to `target`: host key types already
/// known for it first (see hostkey.rs). Shared with the jump hosts' sessions (`jump.rs`).
pub(super) fn set_preferences(
    session: &Session,
    host_keys: &HostKeys,
    target: &Target,
    pin: Option<&HostKeyPin>,
) -> Result<(), SshError> {
    let host_key_algorithms = host_keys.algorithms(&target.host, target.port, pin);
    let prefs = [
        (MethodType::Kex, KEX),
        (MethodType::HostKey, host_key_algorithms.as_str()),
        (MethodType::CryptCs, CIPHERS),
        (MethodType::CryptSc, CIPHERS),
        (MethodType::MacCs, MACS),
        (MethodType::MacSc, MACS),
    ];
    for (method, list) in prefs {
        // libssh2 skips names it does not know; it fails only if it knows none of them.
        session
            .method_pref(method, list)
            .map_err(|e| failed("cannot set SSH algorithm preferences", &e))?;
    }
    Ok(())
}

pub(super) fn check_host_key(
    session: &Session,
    host_keys: &HostKeys,
    target: &Target,
    pin: Option<&HostKeyPin>,
) -> Result<(), SshError> {
    let offered = session
        .host_key()
        .and_then(|(blob, _)| HostKey::from_blob(blob.to_vec()))
        .ok_or_else(|| {
            SshError::new(
                SshErrorKind::SshFailed,
                "the server sent no usable host key",
            )
        })?;
    match host_keys.verify(&target.host, target.port, pin, &offered) {
        Ok(accepted) => {
            tracing::info!(
                kind = offered.kind(),
                fingerprint = offered.fingerprint(),
                by = accepted.label(),
                "host key accepted"
            );
            Ok(())
        }
        Err(e) => {
            tracing::warn!(code = e.code(), "{}", e.message);
            Err(e)
        }
    }
}

pub(super) fn map_error(e: &ssh2::Error, context: &str) -> SshError {
    match e.code() {
        ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) => SshError::connect_timeout(),
        _ => failed(context, e),
    }
}

/// libssh2's own message helps an operator and holds no secrets (it never sees them in text).
pub(super) fn failed(context: &str, e: &ssh2::Error) -> SshError {
    SshError::new(
        SshErrorKind::SshFailed,
        format!("{context}: {}", e.message()),
    )
}
