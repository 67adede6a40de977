//! The destination policy: which targets sessions may connect to (`--allow`, `--deny`).
//!
//! Checked against resolved addresses: at create-session when the name resolves then, and
//! again by `ssh::Dialer` on the very addresses it connects to, so a name that re-resolves
//! elsewhere (DNS rebinding) cannot slip past. Link-local and cloud metadata addresses are
//! refused unless an `--allow` rule names them. Pure: no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Net(IpNet),
    /// An exact host name, lower case.
    Name(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    matcher: Matcher,
    port: Option<u16>,
    text: String,
}

/// A rule that could not be parsed; the message names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationError(pub String);

impl fmt::Display for DestinationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a destination is refused (safe to show: it names the rule, not the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

#[derive(Debug, Default)]
pub struct DestinationPolicy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

impl DestinationPolicy {
    pub fn parse(allow: &[String], deny: &[String]) -> Result<Self, DestinationError> {
        let rules = |list: &[String]| {
            list.iter()
                .map(|r| parse_rule(r))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(DestinationPolicy {
            allow: rules(allow)?,
            deny: rules(deny)?,
        })
    }

    /// May a session connect to `ip:port`, reached through the name `host` (or an IP literal)?
    pub fn check(&self, host: &str, ip: IpAddr, port: u16) -> Result<(), Denied> {
        let ip = ip.to_canonical();
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(rule) = self.deny.iter().find(|r| r.matches(&host, ip, port)) {
            return Err(Denied(format!("denied by the rule {}", rule.text)));
        }
        let allowed = self.allow.iter().any(|r| r.matches(&host, ip, port));
        if is_link_local_or_metadata(ip) && !allowed {
            return Err(Denied(
                "link-local and cloud metadata addresses are refused".into(),
            ));
        }
        if !self.allow.is_empty() && !allowed {
            return Err(Denied("not in the allowed destinations".into()));
        }
        Ok(())
    }

    /// One line for the start-up log, e.g. "any host except link-local".
    pub fn summary(&self) -> String {
        let list = |rules: &[Rule]| {
            rules
                .iter()
                .map(|r| r.text.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = if self.allow.is_empty() {
            "any host".to_owned()
        } else {
            format!("only {}", list(&self.allow))
        };
        if !self.deny.is_empty() {
            out.push_str(&format!(", never {}", list(&self.deny)));
        }
        out.push_str(" (link-local and cloud metadata refused unless an --allow rule matches)");
        out
    }
}

impl Rule {
    fn matches(&self, host: &str, ip: IpAddr, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match &self.matcher {
            Matcher::Net(net) => net.contains(&ip),
            Matcher::Name(name) => host == name,
            Matcher::Suffix(suffix) => host.ends_with(suffix.as_str()),
        }
    }
}

/// 169.254.0.0/16, fe80::/10 and the AWS IPv6 metadata address: where cloud credentials live.
fn is_link_local_or_metadata(ip: IpAddr) -> bool {
    const AWS_V6_METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 || v6 == AWS_V6_METADATA,
    }
}

/// `CIDR`, `IP`, `name`, `*.suffix`, each optionally with `:port` (`[v6]:port` for IPv6).
fn parse_rule(text: &str) -> Result<Rule, DestinationError> {
    let bad = || {
        DestinationError(format!(
            "{text:?} is not a CIDR, IP address or host name, with an optional :port"
        ))
    };
    let raw = text.trim();
    let (target, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad)?),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        (inner, port)
    } else if raw.matches(':').count() == 1 {
        let (target, p) = raw.split_once(':').ok_or_else(bad)?;
        (
            target,
            Some(p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad)?),
        )
    } else {
        (raw, None)
    };
    let matcher = if let Ok(net) = target.parse::<IpNet>() {
        Matcher::Net(net.trunc())
    } else if let Ok(ip) = target.parse::<IpAddr>() {
        Matcher::Net(IpNet::from(ip.to_canonical()))
    } else if let Some(suffix) = target.strip_prefix("*.") {
        Matcher::Suffix(format!(".{}", valid_name(suffix).ok_or_else(bad)?))
    } else {
        Matcher::Name(valid_name(target).ok_or_else(bad)?)
    };
    Ok(Rule {
        matcher,
        port,
        text: raw.to_owned(),
    })
}

fn valid_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    ok.then(|| name.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> DestinationPolicy {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        DestinationPolicy::parse(&own(allow), &own(deny)).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_refuses_only_link_local_and_metadata() {
        let p = DestinationPolicy::default();
        assert!(p.check("10.0.0.5", ip("10.0.0.5"), 22).is_ok());
        assert!(p.check("example.com", ip("93.184.216.34"), 22).is_ok());
        for bad in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert!(p.check(bad, ip(bad), 22).is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_list_and_deny_wins() {
        let p = policy(
            &["10.0.0.0/8", "*.corp.example", "bastion.example:2222"],
            &["10.9.0.0/16", "secret.corp.example"],
        );
        assert!(p.check("10.1.2.3", ip("10.1.2.3"), 22).is_ok());
        assert!(
            p.check("10.9.0.1", ip("10.9.0.1"), 22).is_err(),
            "deny wins over allow"
        );
        assert!(
            p.check("192.168.1.1", ip("192.168.1.1"), 22).is_err(),
            "not allowed"
        );
        assert!(
            p.check("db.corp.example", ip("192.168.1.1"), 22).is_ok(),
            "allowed by name"
        );
        assert!(
            p.check("secret.corp.example", ip("192.168.1.2"), 22)
                .is_err()
        );
        assert!(p.check("bastion.example", ip("203.0.113.9"), 2222).is_ok());
        assert!(
            p.check("bastion.example", ip("203.0.113.9"), 22).is_err(),
            "port must match"
        );
        // A name rule does not make a resolved link-local address acceptable by accident…
        let p = policy(&["*.corp.example"], &[]);
        assert!(
            p.check("meta.corp.example", ip("169.254.169.254"), 22)
                .is_ok(),
            "…unless it names it"
        );
        let p = policy(&["169.254.10.0/24"], &[]);
        assert!(p.check("x", ip("169.254.10.1"), 22).is_ok());
        assert!(p.check("x", ip("169.254.169.254"), 22).is_err());
    }

    #[test]
    fn rule_forms() {
        for good in [
            "10.0.0.0/8",
            "10.0.0.1",
            "::1",
            "fd00::/8",
            "[fd00::1]:22",
            "[fd00::/8]",
            "host.example",
            "*.example.com",
            "h:2222",
            "10.0.0.0/8:22",
        ] {
            assert!(parse_rule(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a b",
            "h:0",
            "h:x",
            "[::1",
            "[::1]x",
            "*.",
            "10.0.0.0/33",
            "http://x",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn summary() {
        assert!(
            DestinationPolicy::default()
                .summary()
                .starts_with("any host")
        );
        assert!(
            policy(&["10.0.0.0/8"], &["10.9.0.0/16"])
                .summary()
                .starts_with("only 10.0.0.0/8, never 10.9.0.0/16")
        );
    }
}
