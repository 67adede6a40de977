//! The destination policy: which targets sessions may connect to (`--allow`, `--deny`).
//!
//! Checked against resolved addresses: at create-session when the name resolves then, and
//! again by `ssh::Dialer` on the very addresses it connects to, so a name that re-resolves
//! elsewhere (DNS rebinding) cannot slip past. An address is judged as what it reaches: an
//! IPv4-mapped, IPv4-compatible, NAT64 or 6to4 form counts as the IPv4 address it embeds.
//! Unspecified addresses are always refused; loopback, link-local and cloud metadata
//! addresses pass a name rule only if an address rule (CIDR) also allows them. Pure: no I/O.
//!
//! Beyond a jump host the gateway resolves nothing (the hop before does), so a later hop and
//! the target of a jumped session are judged as given (`check_given`): an IP literal by the
//! address rules above, a name by the name rules alone.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// Addresses that need more than a name rule to be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guarded {
    /// 169.254.0.0/16, fe80::/10 and the clouds' metadata services: where credentials live.
    LinkLocalOrMetadata,
    /// The gateway's own host: its sshd, and any service it listens to on loopback only.
    Loopback,
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
        // What a packet to `ip` reaches; deny rules and the guards look at both forms, so
        // `64:ff9b::127.0.0.1` is as loopback as `127.0.0.1` and as denied by 127.0.0.0/8.
        let reached = embedded_v4(ip).map_or(ip, IpAddr::V4);
        // 0.0.0.0 and `::` connect to the gateway's own host on Linux, past any loopback
        // rule; no rule can make them a destination (not even `--allow 0.0.0.0/0`).
        if is_unspecified(ip) || is_unspecified(reached) {
            return Err(Denied("unspecified addresses are refused".into()));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let views = [ip, reached];
        if let Some(rule) = self
            .deny
            .iter()
            .find(|r| views.iter().any(|&v| r.matches(&host, v, port)))
        {
            return Err(Denied(format!("denied by the rule {}", rule.text)));
        }
        // Allow rules judge the address reached, so `--allow 2002::/16` does not open the
        // IPv4 internet through 6to4 forms, nor `--allow 10.0.0.0/8` NAT64 ones by accident.
        let by_address = self.allow.iter().any(|r| r.allows_address(reached, port));
        let by_name = self.allow.iter().any(|r| r.allows_name(&host, port));
        match guarded(ip).or(guarded(reached)) {
            Some(Guarded::LinkLocalOrMetadata) if !by_address => {
                return Err(Denied(
                    "link-local and cloud metadata addresses are refused unless an address rule allows them"
                        .into(),
                ));
            }
            // With no allow list the gateway's own host is a destination like any other
            // (the default admits any host); a name rule alone must not reach it, or a
            // name under an allowed domain that resolves to 127.0.0.1 would.
            Some(Guarded::Loopback) if !self.allow.is_empty() && !by_address => {
                return Err(Denied(
                    "loopback addresses are refused unless an address rule allows them".into(),
                ));
            }
            _ => {}
        }
        if !self.allow.is_empty() && !by_address && !by_name {
            return Err(Denied("not in the allowed destinations".into()));
        }
        Ok(())
    }

    /// May a jump host reach `host:port`, which it resolves itself? An IP literal is judged
    /// as `check` judges it; a name by the name rules only, since no address is known here:
    /// a name a deny rule names is refused, and with an allow list a name must be allowed
    /// by a name rule (an address rule cannot vouch for an address nobody has seen).
    pub fn check_given(&self, host: &str, port: u16) -> Result<(), Denied> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.check(host, ip, port);
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(rule) = self.deny.iter().find(|r| r.allows_name(&host, port)) {
            return Err(Denied(format!("denied by the rule {}", rule.text)));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|r| r.allows_name(&host, port)) {
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
        out.push_str(if self.allow.is_empty() {
            " (unspecified addresses refused; link-local and cloud metadata refused unless an \
             --allow address rule matches)"
        } else {
            " (unspecified addresses refused; loopback, link-local and cloud metadata refused \
             unless an --allow address rule matches)"
        });
        out
    }
}

impl Rule {
    fn port_ok(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    fn matches(&self, host: &str, ip: IpAddr, port: u16) -> bool {
        self.allows_address(ip, port) || self.allows_name(host, port)
    }

    fn allows_address(&self, ip: IpAddr, port: u16) -> bool {
        matches!(&self.matcher, Matcher::Net(net) if net.contains(&ip)) && self.port_ok(port)
    }

    fn allows_name(&self, host: &str, port: u16) -> bool {
        let named = match &self.matcher {
            Matcher::Net(_) => false,
            Matcher::Name(name) => host == name,
            Matcher::Suffix(suffix) => host.ends_with(suffix.as_str()),
        };
        named && self.port_ok(port)
    }
}

/// The IPv4 address an IPv6 form carries to: NAT64's well-known prefix (64:ff9b::/96,
/// RFC 6052), 6to4 (2002::/16, RFC 3056) and the deprecated IPv4-compatible `::a.b.c.d`
/// (RFC 4291; `::` and `::1` are IPv6's own). IPv4-mapped forms are already canonical here.
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        [0, 0, 0, 0, 0, 0, hi, lo] if u32::from(hi) << 16 | u32::from(lo) > 1 => Some(low(hi, lo)),
        _ => None,
    }
}

/// 0.0.0.0/8 ("this network", RFC 1122: never a destination) and `::`.
fn is_unspecified(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_unspecified(),
    }
}

/// Cloud metadata and platform services outside 169.254.0.0/16 and fe80::/10.
const METADATA: [IpAddr; 5] = [
    // AWS's IPv6 instance metadata service, and its IPv6 DNS resolver beside it.
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x253)),
    // Alibaba Cloud's metadata service.
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    // Azure's WireServer (agent and extension configuration) and Oracle Cloud's metadata.
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 0, 192)),
];

fn guarded(ip: IpAddr) -> Option<Guarded> {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if link_local || METADATA.contains(&ip) {
        Some(Guarded::LinkLocalOrMetadata)
    } else if ip.is_loopback() {
        Some(Guarded::Loopback)
    } else {
        None
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
        // A name rule does not make a resolved link-local, metadata or loopback address
        // acceptable: a name under the domain may resolve anywhere.
        let p = policy(&["*.corp.example"], &[]);
        for bad in [
            "169.254.169.254",
            "127.0.0.1",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
        ] {
            assert!(
                p.check("meta.corp.example", ip(bad), 22).is_err(),
                "{bad} by name"
            );
        }
        let p = policy(&["meta.corp.example", "exact.example:22"], &[]);
        assert!(
            p.check("meta.corp.example", ip("169.254.169.254"), 22)
                .is_err()
        );
        assert!(p.check("exact.example", ip("127.0.0.1"), 22).is_err());
        // An address rule does.
        let p = policy(&["*.corp.example", "127.0.0.1", "169.254.169.254/32"], &[]);
        assert!(p.check("db.corp.example", ip("127.0.0.1"), 22).is_ok());
        assert!(
            p.check("meta.corp.example", ip("169.254.169.254"), 22)
                .is_ok()
        );
        let p = policy(&["169.254.10.0/24"], &[]);
        assert!(p.check("x", ip("169.254.10.1"), 22).is_ok());
        assert!(p.check("x", ip("169.254.169.254"), 22).is_err());
    }

    #[test]
    fn unspecified_addresses_are_always_refused() {
        let loopback_denied = policy(&[], &["127.0.0.0/8", "::1"]);
        let allow_all = policy(&["0.0.0.0/0", "::/0"], &[]);
        for p in [&DestinationPolicy::default(), &loopback_denied, &allow_all] {
            for bad in [
                "0.0.0.0",
                "0.1.2.3",
                "::",
                "::ffff:0.0.0.0",
                "64:ff9b::",
                "2002::",
                "::2",
            ] {
                // As an IP literal, and as what a name resolved to.
                assert!(p.check(bad, ip(bad), 22).is_err(), "{bad}");
                assert!(p.check("zero.example", ip(bad), 22).is_err(), "{bad}");
            }
        }
        let why = loopback_denied.check("::", ip("::"), 22).unwrap_err();
        assert_eq!(why.0, "unspecified addresses are refused");
    }

    #[test]
    fn embedded_ipv4_counts_as_what_it_embeds() {
        let p = policy(&[], &["127.0.0.0/8", "10.9.0.0/16"]);
        for denied in [
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:7f00:1:ffff::1",
            "64:ff9b::10.9.1.1",
            "2002:a09:101::1",
        ] {
            assert!(p.check(denied, ip(denied), 22).is_err(), "{denied}");
        }
        let default = DestinationPolicy::default();
        for metadata in [
            "64:ff9b::169.254.169.254",
            "2002:a9fe:a9fe::",
            "::169.254.169.254",
            "::ffff:100.100.100.200",
            "100.100.100.200",
            "fd00:ec2::253",
            "64:ff9b::100.100.100.200",
            "168.63.129.16",
            "192.0.0.192",
        ] {
            let why = default.check(metadata, ip(metadata), 22).unwrap_err();
            assert!(
                why.0.starts_with("link-local and cloud metadata"),
                "{metadata}"
            );
        }
        // What they embed decides for allow rules too: allowing the IPv6 prefix is not
        // allowing what it reaches.
        let p = policy(&["2002::/16", "10.0.0.0/8"], &[]);
        assert!(
            p.check("x", ip("2002:a00:1::"), 22).is_ok(),
            "reaches 10.0.0.1"
        );
        assert!(
            p.check("x", ip("2002:c000:201::"), 22).is_err(),
            "reaches 192.0.2.1"
        );
        assert!(p.check("x", ip("64:ff9b::a00:1"), 22).is_ok());
        assert!(p.check("x", ip("2002:7f00:1::"), 22).is_err(), "loopback");
        // Plain IPv6 addresses are not mistaken for embedded ones.
        assert_eq!(embedded_v4(ip("::1")), None);
        assert_eq!(embedded_v4(ip("2001:db8::1")), None);
        assert_eq!(embedded_v4(ip("64:ff9b:1::1")), None);
        assert_eq!(
            embedded_v4(ip("64:ff9b::c000:201")),
            Some(Ipv4Addr::new(192, 0, 2, 1))
        );
        assert!(default.check("x", ip("2001:db8::1"), 22).is_ok());
    }

    /// A hop's next host is judged as given: literals by address, names by name only.
    #[test]
    fn given_names_and_literals() {
        let p = policy(&["10.0.0.0/8", "*.corp.example"], &["secret.corp.example"]);
        assert!(p.check_given("db.corp.example", 22).is_ok());
        assert!(p.check_given("DB.corp.example.", 22).is_ok());
        assert!(p.check_given("10.1.2.3", 22).is_ok());
        for bad in [
            "secret.corp.example",
            "other.example",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
        ] {
            assert!(p.check_given(bad, 22).is_err(), "{bad}");
        }
        // An address rule says nothing about a name nobody here resolved.
        let p = policy(&["10.0.0.0/8"], &[]);
        assert!(p.check_given("db.corp.example", 22).is_err());
        let default = DestinationPolicy::default();
        assert!(default.check_given("anything.example", 22).is_ok());
        assert!(default.check_given("169.254.169.254", 22).is_err());
        let p = policy(&[], &["db.example:22"]);
        assert!(p.check_given("db.example", 22).is_err());
        assert!(p.check_given("db.example", 2222).is_ok());
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
        assert!(
            policy(&["*.corp.example"], &[])
                .summary()
                .contains("loopback")
        );
        assert!(!DestinationPolicy::default().summary().contains("loopback"));
    }
}
