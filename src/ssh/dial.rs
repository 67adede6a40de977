//! Name resolution and the TCP connection, on the async side so that a browser that goes
//! away (or a shutdown) cancels them at once instead of tying up a thread.
//!
//! Names are resolved by hickory (reading /etc/hosts and /etc/resolv.conf itself), not
//! glibc's NSS: a statically linked binary cannot load NSS modules.
//!
//! A session through jump hosts dials its first hop; the hosts beyond it are resolved by
//! the hop before them, so the policy judges them as given (`dial_route`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use std::sync::Arc;

use hickory_resolver::TokioResolver;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::error::{SshError, SshErrorKind};
use crate::destination::DestinationPolicy;
use crate::request::{SessionRequest, Target};

/// TCP keepalive on the SSH socket, so a target that vanishes without a FIN is noticed.
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

pub struct Dialer {
    /// `None` when the system resolver configuration could not be read; IP literals still work.
    resolver: Option<TokioResolver>,
    /// Checked on the resolved addresses, the very ones connected to.
    policy: Arc<DestinationPolicy>,
}

impl Dialer {
    pub fn from_system(policy: Arc<DestinationPolicy>) -> Self {
        let resolver = TokioResolver::builder_tokio().and_then(|b| b.build());
        if let Err(e) = &resolver {
            tracing::warn!(error = %e, "cannot read the resolver configuration; only IP addresses will work as targets");
        }
        Dialer {
            resolver: resolver.ok(),
            policy,
        }
    }

    /// Resolves `host` and connects to the first address that answers, by `deadline`.
    pub async fn dial(
        &self,
        host: &str,
        port: u16,
        deadline: Instant,
    ) -> Result<std::net::TcpStream, SshError> {
        let addrs = timeout_at(deadline, self.resolve(host))
            .await
            .map_err(|_| {
                SshError::new(
                    SshErrorKind::ConnectTimeout,
                    format!("resolving {host} timed out"),
                )
            })??;
        // Only addresses the policy allows are tried; refusing them all is its own error.
        let mut last = None;
        for ip in addrs {
            if let Err(denied) = self.policy.check(host, ip, port) {
                tracing::info!(%ip, port, reason = %denied.0, "destination refused");
                if last.is_none() {
                    last = Some(SshError::new(
                        SshErrorKind::DestinationForbidden,
                        format!("the gateway may not connect there: {}", denied.0),
                    ));
                }
                continue;
            }
            let addr = SocketAddr::new(ip, port);
            match timeout_at(deadline, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return prepare(stream),
                Ok(Err(e)) => {
                    last = Some(SshError::new(
                        SshErrorKind::ConnectFailed,
                        format!("cannot connect to {addr}: {}", describe(&e)),
                    ))
                }
                Err(_) => {
                    return Err(SshError::new(
                        SshErrorKind::ConnectTimeout,
                        format!("connecting to {addr} timed out"),
                    ));
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            SshError::new(SshErrorKind::DnsFailed, format!("{host} has no addresses"))
        }))
    }

    /// Connects to the first host of `request`'s route: the target, or its first jump host
    /// once every host beyond that one passes the policy as given. A refusal, or a failure
    /// to reach the first hop, names the hop (1 = the first).
    pub async fn dial_route(
        &self,
        request: &SessionRequest,
        deadline: Instant,
    ) -> Result<std::net::TcpStream, SshError> {
        let Some(first) = request.jump.first() else {
            let target = &request.target;
            return self.dial(&target.host, target.port, deadline).await;
        };
        for (n, hop) in (2u8..).zip(&request.jump[1..]) {
            self.check_given(&hop.target).map_err(|e| e.at_hop(n))?;
        }
        self.check_given(&request.target)?;
        let hop = &first.target;
        self.dial(&hop.host, hop.port, deadline)
            .await
            .map_err(|e| e.at_hop(1))
    }

    fn check_given(&self, endpoint: &Target) -> Result<(), SshError> {
        self.policy
            .check_given(&endpoint.host, endpoint.port)
            .map_err(|denied| {
                tracing::info!(host = endpoint.host, port = endpoint.port, reason = %denied.0, "destination refused");
                SshError::new(
                    SshErrorKind::DestinationForbidden,
                    format!("the gateway may not connect there: {}", denied.0),
                )
            })
    }

    /// The addresses of `host` (an IP literal is its own answer).
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, SshError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let not_found = || SshError::new(SshErrorKind::DnsFailed, format!("cannot resolve {host}"));
        // RFC 6761: `.invalid` never resolves, and must not leave the machine.
        if host == "invalid" || host.ends_with(".invalid") {
            return Err(not_found());
        }
        let resolver = self.resolver.as_ref().ok_or_else(not_found)?;
        // A trailing dot makes the name absolute, so search domains are not tried.
        let fqdn = if host.ends_with('.') {
            host.to_owned()
        } else {
            format!("{host}.")
        };
        let lookup = resolver
            .lookup_ip(fqdn.as_str())
            .await
            .map_err(|_| not_found())?;
        let addrs: Vec<IpAddr> = lookup.iter().collect();
        if addrs.is_empty() {
            Err(not_found())
        } else {
            Ok(addrs)
        }
    }
}

/// Hands the socket to the blocking world with latency and liveness settings applied.
fn prepare(stream: TcpStream) -> Result<std::net::TcpStream, SshError> {
    let fail = |e: std::io::Error| {
        SshError::new(
            SshErrorKind::ConnectFailed,
            format!("socket setup failed: {e}"),
        )
    };
    // Keystrokes must not wait for Nagle.
    stream.set_nodelay(true).map_err(fail)?;
    let keepalive = TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL);
    SockRef::from(&stream)
        .set_tcp_keepalive(&keepalive)
        .map_err(fail)?;
    let std = stream.into_std().map_err(fail)?;
    std.set_nonblocking(false).map_err(fail)?;
    Ok(std)
}

fn describe(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused",
        HostUnreachable => "host unreachable",
        NetworkUnreachable => "network unreachable",
        TimedOut => "timed out",
        _ => "connection failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invalid_tld_fails_without_a_query() {
        let dialer = Dialer {
            resolver: None,
            policy: Default::default(),
        };
        let err = dialer
            .dial(
                "nowhere.invalid",
                22,
                Instant::now() + Duration::from_secs(1),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind, SshErrorKind::DnsFailed);
    }

    #[tokio::test]
    async fn closed_port_is_connect_failed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let dialer = Dialer {
            resolver: None,
            policy: Default::default(),
        };
        let err = dialer
            .dial("127.0.0.1", port, Instant::now() + Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.kind, SshErrorKind::ConnectFailed);
    }

    #[tokio::test]
    async fn connect_checks_the_policy_on_the_resolved_address() {
        let deny = vec!["127.0.0.0/8".to_owned()];
        let dialer = Dialer {
            resolver: None,
            policy: Arc::new(DestinationPolicy::parse(&[], &deny).unwrap()),
        };
        let err = dialer
            .dial("127.0.0.1", 22, Instant::now() + Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err.kind, SshErrorKind::DestinationForbidden);
    }

    fn routed(hops: &[(&str, u16)], target: (&str, u16)) -> SessionRequest {
        let at = |(host, port): (&str, u16)| Target {
            host: host.into(),
            port,
            username: "u".into(),
        };
        let password = || crate::request::Credentials::Password(String::from("pw").into());
        SessionRequest {
            target: at(target),
            credentials: password(),
            term: "xterm".into(),
            host_key: None,
            creator: "ci".into(),
            options: Default::default(),
            jump: hops
                .iter()
                .map(|&hop| crate::request::Hop {
                    target: at(hop),
                    credentials: password(),
                    host_key: None,
                })
                .collect(),
        }
    }

    /// At connect time too, every host beyond the first hop is judged as given before the
    /// first is dialled, and the refusal names the hop; the first hop's own refusal is
    /// hop 1, on its addresses.
    #[tokio::test]
    async fn a_route_is_judged_before_its_first_hop_is_dialled() {
        let deny = vec!["db.internal".to_owned(), "10.9.0.0/16".to_owned()];
        let dialer = Dialer {
            resolver: None,
            policy: Arc::new(DestinationPolicy::parse(&[], &deny).unwrap()),
        };
        let deadline = || Instant::now() + Duration::from_secs(1);
        let cases = [
            (routed(&[("10.9.0.1", 22)], ("10.1.0.1", 22)), Some(1)),
            (
                routed(&[("10.1.0.1", 22), ("10.9.0.2", 22)], ("h", 22)),
                Some(2),
            ),
            (routed(&[("10.1.0.1", 22)], ("DB.internal", 22)), None),
        ];
        for (request, hop) in cases {
            let err = dialer.dial_route(&request, deadline()).await.unwrap_err();
            assert_eq!(
                (err.kind, err.hop),
                (SshErrorKind::DestinationForbidden, hop)
            );
        }
    }

    /// The dial-time check refuses what the create-time one would have: an address that
    /// reaches this host under another spelling is never connected to.
    #[tokio::test]
    async fn connect_never_tries_unspecified_addresses() {
        let deny = vec!["127.0.0.0/8".to_owned(), "::1".to_owned()];
        let dialer = Dialer {
            resolver: None,
            policy: Arc::new(DestinationPolicy::parse(&[], &deny).unwrap()),
        };
        for host in ["0.0.0.0", "::", "::ffff:0.0.0.0", "64:ff9b::7f00:1"] {
            let err = dialer
                .dial(host, 22, Instant::now() + Duration::from_secs(1))
                .await
                .unwrap_err();
            assert_eq!(err.kind, SshErrorKind::DestinationForbidden, "{host}");
        }
    }
}
