//! Which pages may open a WebSocket: an `Origin` header parsed into scheme, host and port
//! (default ports filled in), and `OriginPolicy`, the gateway's own origins and the
//! configured ones. The `Host` header is never trusted for this: a DNS-rebinding page sends
//! `Host` and `Origin` both naming the attacker's domain, so matching one against the other
//! proves nothing. Our own origins are the address the connection arrived on, the
//! `--public-url` origin and the `--allowed-host` names. On a loopback listener, any
//! loopback origin (`localhost`, 127.0.0.0/8, `[::1]`) on any port counts too: only local
//! processes serve those, no DNS answer can rebind them, and `ssh -L 9000:localhost:8022`
//! or a local proxy puts the page on another port.

use std::net::{IpAddr, SocketAddr};

/// `scheme://host:port` of a web origin, lower case, the port always explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: &'static str,
    /// A name without a trailing dot, or an IP literal (IPv6 in brackets).
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Parses `http(s)://host[:port]`; `None` for anything else, `null` included.
    pub fn parse(text: &str) -> Option<Origin> {
        let text = text.to_ascii_lowercase();
        let (scheme, rest) = text.split_once("://")?;
        let (scheme, default_port) = match scheme {
            "http" => ("http", 80),
            "https" => ("https", 443),
            _ => return None,
        };
        if rest.is_empty()
            || rest
                .bytes()
                .any(|b| matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\') || b <= b' ')
        {
            return None;
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (addr, after) = v6.split_once(']')?;
                addr.parse::<std::net::Ipv6Addr>().ok()?;
                let port = match after {
                    "" => None,
                    p => Some(p.strip_prefix(':')?),
                };
                (format!("[{addr}]"), port)
            }
            None => match rest.split_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (rest.to_owned(), None),
            },
        };
        let host = host.strip_suffix('.').map(str::to_owned).unwrap_or(host);
        if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
            return None;
        }
        let port = match port {
            None => default_port,
            Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().ok()?
            }
            Some(_) => return None,
        };
        Some(Origin { scheme, host, port })
    }

    /// The port a browser leaves out of the origin for this scheme.
    fn default_port(&self) -> u16 {
        if self.scheme == "https" { 443 } else { 80 }
    }

    /// The host as an address, when it is an IP literal.
    fn ip(&self) -> Option<IpAddr> {
        let bare = self
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host);
        bare.parse().ok()
    }
}

/// The origins whose pages may open WebSockets, built once from the configuration.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// `http`, or `https` when the listener speaks TLS.
    pub scheme: &'static str,
    /// The `--public-url` origin.
    pub public: Option<Origin>,
    /// `--allow-origin`.
    pub extra: Vec<Origin>,
    /// `--allowed-host` names, lower case, without a trailing dot.
    pub hosts: Vec<String>,
}

impl OriginPolicy {
    /// `public_url` and `extra` were checked by the configuration; one that does not parse
    /// here matches nothing.
    pub fn new(
        scheme: &'static str,
        public_url: Option<&str>,
        extra: &[String],
        hosts: &[String],
    ) -> Self {
        let origin_of = |url: &str| {
            let (scheme, rest) = url.split_once("://")?;
            let authority = rest.split('/').next().unwrap_or_default();
            Origin::parse(&format!("{scheme}://{authority}"))
        };
        OriginPolicy {
            scheme,
            public: public_url.and_then(origin_of),
            extra: extra.iter().filter_map(|o| Origin::parse(o)).collect(),
            hosts: hosts.to_vec(),
        }
    }

    /// Whether a page at `origin` may open a WebSocket on a connection that arrived at
    /// `local`.
    pub fn allows(&self, origin: &str, local: SocketAddr) -> bool {
        let Some(origin) = Origin::parse(origin) else {
            return false;
        };
        if self.public.as_ref() == Some(&origin) || self.extra.contains(&origin) {
            return true;
        }
        let loopback_origin = origin.host == "localhost"
            || origin
                .ip()
                .is_some_and(|ip| ip.to_canonical().is_loopback());
        if origin.scheme == self.scheme
            && loopback_origin
            && local.ip().to_canonical().is_loopback()
        {
            return true;
        }
        // The address the client reached us at, exactly (an IPv4 client of a dual-stack
        // listener arrives at a mapped address).
        if origin.scheme == self.scheme
            && origin.port == local.port()
            && origin.ip().map(|ip| ip.to_canonical()) == Some(local.ip().to_canonical())
        {
            return true;
        }
        // A configured name, on our port or (behind a proxy) the scheme's default one.
        self.hosts.contains(&origin.host)
            && (origin.port == local.port() || origin.port == origin.default_port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(scheme: &'static str, host: &str, port: u16) -> Option<Origin> {
        Some(Origin {
            scheme,
            host: host.into(),
            port,
        })
    }

    #[test]
    fn parses_origins() {
        assert_eq!(
            Origin::parse("https://gw.example"),
            origin("https", "gw.example", 443)
        );
        assert_eq!(
            Origin::parse("HTTP://GW.Example.:8022"),
            origin("http", "gw.example", 8022)
        );
        assert_eq!(
            Origin::parse("http://[::1]:8022"),
            origin("http", "[::1]", 8022)
        );
        assert_eq!(Origin::parse("http://[::1]"), origin("http", "[::1]", 80));
        for bad in [
            "null",
            "",
            "http://",
            "ftp://gw.example",
            "http://gw.example/",
            "http://gw.example:",
            "http://gw.example:99999",
            "http://gw.example:80:80",
            "http://::1:80",
            "http://[nope]:80",
            "http://[::1]x",
            "http://user@gw.example",
            "http://gw .example",
            "http://.",
        ] {
            assert_eq!(Origin::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn own_origins() {
        let local: SocketAddr = "127.0.0.1:8022".parse().unwrap();
        let open = OriginPolicy::new("http", None, &[], &[]);
        // On loopback: any loopback origin of our scheme (a port forward, a local proxy).
        for good in [
            "http://127.0.0.1:8022",
            "http://localhost:8022",
            "http://LOCALHOST.:8022",
            "http://localhost:9000",
            "http://127.0.0.2",
            "http://[::1]:9000",
        ] {
            assert!(open.allows(good, local), "{good}");
        }
        for bad in [
            "http://evil.example:8022",
            "https://127.0.0.1:8022",
            "http://localhost.evil.example:8022",
            "null",
        ] {
            assert!(!open.allows(bad, local), "{bad}");
        }
        // Elsewhere, only the address reached, exactly (here through a dual-stack listener).
        let mapped: SocketAddr = "[::ffff:10.0.0.2]:8022".parse().unwrap();
        assert!(open.allows("http://10.0.0.2:8022", mapped));
        for bad in [
            "http://10.0.0.2",
            "http://10.0.0.3:8022",
            "http://localhost:8022",
            "http://127.0.0.1:8022",
        ] {
            assert!(!open.allows(bad, mapped), "{bad}");
        }

        let public = OriginPolicy::new(
            "http",
            Some("https://gw.example:443/ssh"),
            &["https://portal.example.com:443".into()],
            &["gw.internal".into()],
        );
        for good in [
            "https://gw.example",
            "https://gw.example:443",
            "https://portal.example.com",
            "http://gw.internal:8022",
            "https://gw.internal",
        ] {
            assert!(public.allows(good, mapped), "{good}");
        }
        for bad in [
            "http://gw.example",
            "https://gw.example:8443",
            "http://gw.internal:9000",
            "https://portal.example.com.evil.example",
        ] {
            assert!(!public.allows(bad, mapped), "{bad}");
        }
    }
}
