//! Jump hosts, on the session's bridge thread: the gateway logs in to the first hop over
//! the dialled TCP socket, opens a `direct-tcpip` channel from it to the next host, and
//! runs the next SSH session over that channel, and so on to the target.
//!
//! libssh2 speaks only over a socket, so each channel is bridged to a UNIX socket pair: the
//! next session gets one end, and a `Link` here copies bytes between the channel and the
//! other end. Everything stays on the one thread: the sessions behind a hop run
//! non-blocking, and every call on them goes through `Relay::drive`, which retries it on
//! EAGAIN and, in between, forwards through every link and sleeps in `poll(2)` on all their
//! descriptors. The pump (`thread.rs`) forwards and polls the links the same way each turn.
//! Only the first hop, on real TCP, logs in blocking, with `connect`'s own steps; behind it
//! `auth` runs the same methods through `Behind`, so a host there may ask the person too.
//! While the person answers, the thread waits in the prompt and the links stand still.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use ssh2::{BlockDirections, Channel, ErrorCode, ExtendedData, Session};

use super::auth::{self, Page};
use super::connect::{self, SharedSocket, Shell};
use super::error::{SshError, SshErrorKind};
use super::exchange::Shared;
use super::hostkey::HostKeys;
use crate::request::{Credentials, HostKeyPin, SessionRequest, Target};

const LIBSSH2_ERROR_EAGAIN: i32 = -37;
/// libssh2's code when a channel open is refused; its message carries the reason.
const LIBSSH2_ERROR_CHANNEL_FAILURE: i32 = -21;
/// Bytes held per direction per link between the channel and its socket. Beyond the UNIX
/// socket's own buffer this is all a link holds: when it is full the link stops reading,
/// and the SSH window pushes back on the far side.
const LINK_BUFFER: usize = 64 * 1024;
/// Rounds of copying in one `forward` before the caller gets a turn (it then comes back
/// without polling): a fast stream must not keep the pump from its queues.
const FORWARD_ROUNDS: usize = 64;
/// SSH keepalive on each hop, as on the target: NAT between hops drops idle flows too.
const KEEPALIVE_SECS: u32 = 30;

/// The links of a session's route, the first hop's outermost.
pub struct Relay {
    links: Vec<Link>,
}

/// One hop's open channel to the next host, bridged to the socket the next session uses.
struct Link {
    /// 1 for the hop the gateway dialled.
    hop: u8,
    session: Session,
    /// The hop's transport: the TCP socket for hop 1, else the previous link's far end.
    socket: Arc<TcpStream>,
    channel: Channel,
    /// Our end of the pair; the next session speaks over the other.
    near: UnixStream,
    /// Read from `near`, to be written to the channel.
    up: Pipe,
    /// Read from the channel, to be written to `near`.
    down: Pipe,
    /// The next session closed its end (or broke it): nothing more goes up.
    near_closed: bool,
    /// The channel had EOF: once `down` is delivered, `near` is shut for writing.
    channel_eof: bool,
    eof_sent: bool,
}

/// How long `Relay::drive` may keep at a call.
#[derive(Clone, Copy)]
pub(super) enum Until<'a> {
    /// While connecting: the session's connect deadline as it stands (it stops while a
    /// person is asked), and not past the session's closing.
    Connect(&'a Shared),
    /// While closing: a fixed instant.
    Close(Instant),
}

/// Authentication's calls on a session behind the links, driven like every other call
/// there; `auth` runs the same methods, prompts included, as on a blocking session.
struct Behind<'a> {
    relay: &'a mut Relay,
    session: &'a Session,
    socket: &'a TcpStream,
    shared: &'a Shared,
}

impl auth::Calls for Behind<'_> {
    fn call<T>(
        &mut self,
        op: &mut dyn FnMut() -> Result<T, ssh2::Error>,
    ) -> Result<Result<T, ssh2::Error>, SshError> {
        self.relay
            .drive(self.session, self.socket, Until::Connect(self.shared), op)
    }
}

/// A bounded byte buffer, filled at the end and drained from the front.
struct Pipe {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Pipe {
    fn new() -> Self {
        Pipe {
            buf: vec![0; LINK_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn has_room(&self) -> bool {
        self.end < self.buf.len()
    }

    fn space(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
    }

    fn consumed(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
}

impl Link {
    fn lost(&self, what: &str) -> SshError {
        tracing::debug!(hop = self.hop, what, "jump host link lost");
        SshError::new(
            SshErrorKind::ConnectionLost,
            "the connection through the jump host was lost",
        )
        .at_hop(self.hop)
    }

    /// Copies what can be copied without blocking, both ways. Returns whether anything
    /// moved; an error ends the route.
    fn forward(&mut self) -> Result<bool, SshError> {
        let mut moved = false;
        for _ in 0..FORWARD_ROUNDS {
            let mut progress = false;
            if !self.near_closed && self.up.has_room() {
                match self.near.read(self.up.space()) {
                    Ok(0) => {
                        self.near_closed = true;
                        progress = true;
                    }
                    Ok(n) => {
                        self.up.filled(n);
                        progress = true;
                    }
                    Err(e) if would_block(&e) => {}
                    Err(_) => {
                        self.near_closed = true;
                        progress = true;
                    }
                }
            }
            while !self.up.is_empty() {
                match self.channel.write(self.up.data()) {
                    Ok(0) => break,
                    Ok(n) => {
                        self.up.consumed(n);
                        progress = true;
                    }
                    Err(e) if would_block(&e) => break,
                    Err(_) => return Err(self.lost("channel write")),
                }
            }
            if self.near_closed && self.up.is_empty() && !self.eof_sent {
                // The next session is gone; telling the hop lets it close the far side.
                match self.channel.send_eof() {
                    Err(e) if e.code() == ErrorCode::Session(LIBSSH2_ERROR_EAGAIN) => {}
                    _ => self.eof_sent = true,
                }
            }
            if !self.channel_eof && self.down.has_room() {
                match self.channel.read(self.down.space()) {
                    // Ok(0) is EOF only when libssh2 says so; otherwise nothing was ready.
                    Ok(0) if self.channel.eof() => {
                        self.channel_eof = true;
                        progress = true;
                    }
                    Ok(0) => {}
                    Ok(n) => {
                        self.down.filled(n);
                        progress = true;
                    }
                    Err(e) if would_block(&e) => {}
                    Err(_) => return Err(self.lost("channel read")),
                }
            }
            while !self.down.is_empty() {
                match (&self.near).write(self.down.data()) {
                    Ok(n) => {
                        self.down.consumed(n);
                        progress = true;
                    }
                    Err(e) if would_block(&e) => break,
                    // The next session closed its end: what it did not take is dropped.
                    Err(_) => {
                        self.down.consumed(self.down.data().len());
                        self.near_closed = true;
                        progress = true;
                    }
                }
            }
            if self.channel_eof && self.down.is_empty() {
                // The far host closed: the next session reads EOF, as over TCP.
                let _ = self.near.shutdown(Shutdown::Write);
            }
            if !progress {
                return Ok(moved);
            }
            moved = true;
        }
        Ok(moved)
    }

    /// What this link waits for: its hop's transport, and its near end.
    fn interest(&self) -> (PollFlags, PollFlags) {
        let mut transport = PollFlags::empty();
        if !self.channel_eof && self.down.has_room() {
            transport |= PollFlags::IN;
        }
        if !self.up.is_empty() {
            transport |= directions(&self.session) | PollFlags::IN;
        }
        let mut near = PollFlags::empty();
        if !self.near_closed && self.up.has_room() {
            near |= PollFlags::IN;
        }
        if !self.down.is_empty() {
            near |= PollFlags::OUT;
        }
        (transport, near)
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn directions(session: &Session) -> PollFlags {
    match session.block_directions() {
        BlockDirections::Inbound => PollFlags::IN,
        BlockDirections::Outbound => PollFlags::OUT,
        BlockDirections::Both => PollFlags::IN | PollFlags::OUT,
        // Asked only after EAGAIN, when libssh2 does wait for something; reading is safe.
        BlockDirections::None => PollFlags::IN,
    }
}

fn is_eagain(e: &ssh2::Error) -> bool {
    e.code() == ErrorCode::Session(LIBSSH2_ERROR_EAGAIN)
}

impl Relay {
    /// Forwards through every link, outermost first. Returns whether anything moved.
    pub(super) fn forward(&mut self) -> Result<bool, SshError> {
        let mut moved = false;
        for link in &mut self.links {
            moved |= link.forward()?;
        }
        Ok(moved)
    }

    /// The descriptors the links wait on, with what they wait for (none left out that
    /// asks for something; none put in that asks for nothing, which a hung-up socket would
    /// report at once, whatever the flags).
    pub(super) fn poll_fds(&self) -> Vec<PollFd<'_>> {
        let mut fds = Vec::with_capacity(self.links.len() * 2);
        for link in &self.links {
            let (transport, near) = link.interest();
            if !transport.is_empty() {
                fds.push(PollFd::new(&*link.socket, transport));
            }
            if !near.is_empty() {
                fds.push(PollFd::new(&link.near, near));
            }
        }
        fds
    }

    /// Sends the hops' keepalives that are due; returns the seconds until the next one.
    pub(super) fn keepalive(&self) -> u32 {
        self.links
            .iter()
            .map(|l| l.session.keepalive_send().unwrap_or(KEEPALIVE_SECS))
            .min()
            .unwrap_or(KEEPALIVE_SECS)
    }

    /// Runs `op` on `session`, a non-blocking session speaking over `socket` through these
    /// links, until it stops answering EAGAIN; meanwhile forwards, and sleeps in `poll` when
    /// nothing moves. The outer error is the route's (a link broke, the time is up, the
    /// session is closing), the inner one `op`'s own.
    pub(super) fn drive<T>(
        &mut self,
        session: &Session,
        socket: &TcpStream,
        until: Until<'_>,
        mut op: impl FnMut() -> Result<T, ssh2::Error>,
    ) -> Result<Result<T, ssh2::Error>, SshError> {
        // Bounded by the deadline: every round either returns, moves bytes, or sleeps in
        // `poll` no later than it.
        loop {
            match op() {
                Err(e) if is_eagain(&e) => {}
                done => return Ok(done),
            }
            if self.forward()? {
                continue;
            }
            let shared = match until {
                Until::Connect(shared) => Some(shared),
                Until::Close(_) => None,
            };
            // Read each round: `op` may have waited for a person, and that time is theirs.
            let deadline = match until {
                Until::Connect(shared) => shared.deadline.at(),
                Until::Close(at) => at,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SshError::connect_timeout());
            }
            if shared.is_some_and(|s| s.closing.load(Ordering::Acquire)) {
                return Err(SshError::new(
                    SshErrorKind::ConnectionLost,
                    "the session is closing",
                ));
            }
            let mut fds = self.poll_fds();
            fds.push(PollFd::new(socket, directions(session)));
            if let Some(shared) = shared {
                fds.push(PollFd::new(&shared.wake, PollFlags::IN));
            }
            let timeout = Timespec {
                tv_sec: left.as_secs() as i64,
                // At least a millisecond: a sliver of time is not a busy loop.
                tv_nsec: i64::from(left.subsec_nanos().max(1_000_000)),
            };
            match poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    return Err(SshError::new(
                        SshErrorKind::SshFailed,
                        format!("poll failed: {e}"),
                    ));
                }
            }
            if let Some(shared) = shared {
                shared.wake.clear();
            }
        }
    }

    /// Bridges `channel` (on hop `hop`'s `session`) to a new socket pair and returns the
    /// end the next session is to speak over.
    fn extend(
        &mut self,
        hop: u8,
        session: Session,
        socket: Arc<TcpStream>,
        channel: Channel,
    ) -> Result<Arc<TcpStream>, SshError> {
        let fail = |e: io::Error| {
            SshError::new(
                SshErrorKind::SshFailed,
                format!("cannot make a socket pair: {e}"),
            )
        };
        let (far, near) = UnixStream::pair().map_err(fail)?;
        near.set_nonblocking(true).map_err(fail)?;
        far.set_nonblocking(true).map_err(fail)?;
        session.set_keepalive(false, KEEPALIVE_SECS);
        session.set_blocking(false);
        self.links.push(Link {
            hop,
            session,
            socket,
            channel,
            near,
            up: Pipe::new(),
            down: Pipe::new(),
            near_closed: false,
            channel_eof: false,
            eof_sent: false,
        });
        // A UNIX socket held as a TcpStream, so `Shell`, the pump and `Shared` keep one
        // socket type: std converts any socket descriptor, and only what both kinds share
        // (recv, send, shutdown, poll) is ever done with it.
        Ok(Arc::new(TcpStream::from(OwnedFd::from(far))))
    }

    /// Closes every hop's channel and session, innermost first (each speaks through the
    /// ones before it), within `deadline`, and releases their descriptors.
    pub(super) fn close(mut self, deadline: Instant) {
        while let Some(mut link) = self.links.pop() {
            let _ = link.near.shutdown(Shutdown::Both);
            let (session, socket) = (&link.session, &*link.socket);
            let until = Until::Close(deadline);
            let _ = self.drive(session, socket, until, || link.channel.close());
            let _ = self.drive(session, socket, until, || {
                session.disconnect(None, "session closed", None)
            });
            let _ = link.socket.shutdown(Shutdown::Both);
        }
    }
}

/// Connects through `request.jump` to the target, and starts its shell: the counterpart of
/// `connect::open_shell` for a session with jump hosts. Each hop's host key is checked
/// before any credential is sent to it; an error names the hop it happened at.
#[allow(clippy::too_many_arguments)]
pub(super) fn open_shell(
    stream: TcpStream,
    request: SessionRequest,
    host_keys: &HostKeys,
    remote_lang: Option<&str>,
    cols: u32,
    rows: u32,
    page: &mut dyn Page,
    shared: &Shared,
) -> Result<(Shell, Relay), SshError> {
    let SessionRequest {
        target,
        credentials,
        term,
        host_key,
        jump,
        ..
    } = request;
    // Where each hop's channel goes: the next hop, and from the last one the target.
    let next: Vec<Target> = jump
        .iter()
        .skip(1)
        .map(|h| h.target.clone())
        .chain([target.clone()])
        .collect();
    let mut relay = Relay { links: Vec::new() };
    let mut transport = Arc::new(stream);
    // Each hop's credentials are dropped (wiped) as soon as its authentication is over.
    for ((n, hop), to) in (1u8..).zip(jump).zip(&next) {
        let login = Login {
            at: &hop.target,
            pin: hop.host_key.as_ref(),
            hop: Some(n),
        };
        let (session, channel) = if n == 1 {
            let session = login_direct(&transport, host_keys, &login, hop.credentials, page)
                .map_err(|e| e.at_hop(n))?;
            auth::set_timeout(&session, page.deadline()).map_err(|e| e.at_hop(n))?;
            let channel = session
                .channel_direct_tcpip(&to.host, to.port, None)
                .map_err(|e| refused(&e, to).at_hop(n));
            (session, channel?)
        } else {
            let session =
                relay.login(&transport, host_keys, &login, hop.credentials, page, shared)?;
            let channel = relay
                .drive(&session, &transport, Until::Connect(shared), || {
                    session.channel_direct_tcpip(&to.host, to.port, None)
                })
                .map_err(|e| login.tag(e))?
                .map_err(|e| refused(&e, to).at_hop(n))?;
            (session, channel)
        };
        tracing::debug!(hop = n, next = %to, "jump host forwarding");
        transport = relay.extend(n, session, transport, channel)?;
    }

    let login = Login {
        at: &target,
        pin: host_key.as_ref(),
        hop: None,
    };
    let session = relay.login(&transport, host_keys, &login, credentials, page, shared)?;
    let until = Until::Connect(shared);
    let mut channel = relay
        .drive(&session, &transport, until, || session.channel_session())?
        .map_err(|e| connect::map_error(&e, "cannot open a channel"))?;
    let mut step = |op: &mut dyn FnMut(&mut Channel) -> Result<(), ssh2::Error>| {
        relay.drive(&session, &transport, until, || op(&mut channel))
    };
    // As `open_shell`: stderr merged, LANG asked for (and may be refused), a PTY, a shell.
    step(&mut |c| c.handle_extended_data(ExtendedData::Merge))?
        .map_err(|e| connect::map_error(&e, "cannot set up the channel"))?;
    if let Some(lang) = remote_lang {
        let _ = step(&mut |c| c.setenv("LANG", lang))?;
    }
    step(&mut |c| c.request_pty(&term, None, Some((cols, rows, 0, 0))))?
        .map_err(|e| connect::map_error(&e, "the server refused a terminal"))?;
    step(&mut |c| c.shell())?.map_err(|e| connect::map_error(&e, "the server refused a shell"))?;
    Ok((
        Shell {
            session,
            channel,
            socket: transport,
            size: (cols, rows),
        },
        relay,
    ))
}

/// Who a login is with: a hop (numbered) or the target.
struct Login<'a> {
    at: &'a Target,
    pin: Option<&'a HostKeyPin>,
    hop: Option<u8>,
}

impl Login<'_> {
    fn account(&self) -> auth::Account<'_> {
        auth::Account {
            target: self.at,
            hop: self.hop,
        }
    }

    /// Names the hop in an error that does not name one yet (one from a link already does).
    fn tag(&self, e: SshError) -> SshError {
        match (self.hop, e.hop) {
            (Some(n), None) => e.at_hop(n),
            _ => e,
        }
    }
}

/// The first hop, over the dialled TCP socket: `connect::open_shell`'s own blocking steps,
/// handshake, host key, then credentials.
fn login_direct(
    socket: &Arc<TcpStream>,
    host_keys: &HostKeys,
    login: &Login<'_>,
    credentials: Credentials,
    page: &mut dyn Page,
) -> Result<Session, SshError> {
    let mut session =
        Session::new().map_err(|e| connect::failed("cannot create an SSH session", &e))?;
    session.set_tcp_stream(SharedSocket(socket.clone()));
    connect::set_preferences(&session, host_keys, login.at, login.pin)?;
    auth::set_timeout(&session, page.deadline())?;
    session
        .handshake()
        .map_err(|e| connect::map_error(&e, "SSH handshake failed"))?;
    // Before any credential leaves, as for a target.
    connect::check_host_key(&session, host_keys, login.at, login.pin)?;
    auth::set_timeout(&session, page.deadline())?;
    auth::authenticate(
        &session,
        login.account(),
        credentials,
        page,
        &mut auth::Blocking,
    )?;
    Ok(session)
}

impl Relay {
    /// A session behind the links so far, over `socket`: handshake, host key (before any
    /// credential leaves), then authentication as on a blocking session (every method,
    /// prompts in the page), all driven non-blocking.
    fn login(
        &mut self,
        socket: &Arc<TcpStream>,
        host_keys: &HostKeys,
        login: &Login<'_>,
        credentials: Credentials,
        page: &mut dyn Page,
        shared: &Shared,
    ) -> Result<Session, SshError> {
        let tag = |e| login.tag(e);
        let mut session =
            Session::new().map_err(|e| tag(connect::failed("cannot create an SSH session", &e)))?;
        session.set_tcp_stream(SharedSocket(socket.clone()));
        connect::set_preferences(&session, host_keys, login.at, login.pin).map_err(tag)?;
        session.set_blocking(false);
        // `handshake` takes the session mutably; a clone is the same libssh2 session.
        let mut handshaking = session.clone();
        self.drive(&session, socket, Until::Connect(shared), || {
            handshaking.handshake()
        })
        .map_err(tag)?
        .map_err(|e| tag(connect::map_error(&e, "SSH handshake failed")))?;
        connect::check_host_key(&session, host_keys, login.at, login.pin).map_err(tag)?;
        let mut calls = Behind {
            relay: self,
            session: &session,
            socket,
            shared,
        };
        auth::authenticate(&session, login.account(), credentials, page, &mut calls)
            .map_err(tag)?;
        Ok(session)
    }
}

/// A `direct-tcpip` open the hop refused: it could not reach `to`, or will not forward.
fn refused(e: &ssh2::Error, to: &Target) -> SshError {
    let place = Target {
        username: String::new(),
        ..to.clone()
    };
    let place = place.to_string();
    let place = place.trim_start_matches('@');
    match e.code() {
        // libssh2 puts the server's reason in its message ("(connect failed)").
        ErrorCode::Session(LIBSSH2_ERROR_CHANNEL_FAILURE)
            if e.message().contains("connect failed") =>
        {
            SshError::new(
                SshErrorKind::ConnectFailed,
                format!("it cannot connect to {place}"),
            )
        }
        ErrorCode::Session(LIBSSH2_ERROR_CHANNEL_FAILURE) => SshError::new(
            SshErrorKind::ForwardingRefused,
            format!(
                "it refused to forward a connection to {place} ({})",
                e.message()
            ),
        ),
        _ => connect::map_error(e, "cannot open a channel to the next host"),
    }
}
