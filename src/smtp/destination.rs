//! Where a relay may send the operator: a destination policy checked on every
//! address a host resolves to, right before connecting (so a name that resolves to
//! a public address once and to 169.254.169.254 the next time is refused then).
//!
//! A SmtpRelay is written by a namespace user: without a policy it would make the
//! operator, from inside the cluster, knock on cloud metadata, the API server's
//! service IP or an internal database, and report what answered. By default a
//! SmtpRelay may not reach loopback, link-local, unspecified, multicast, broadcast
//! or reserved addresses, cloud metadata endpoints, nor the cluster's service and
//! pod ranges when they are given. A ClusterSmtpRelay is a cluster-admin object: it
//! may reach loopback and the cluster's ranges, but not link-local (cloud metadata),
//! unspecified, multicast, broadcast or reserved addresses.
//!
//! `--allowed-destinations` and `--denied-destinations` add rules; an explicit rule
//! wins over the defaults, and between explicit rules the most specific (longest
//! prefix) wins, a deny on a tie. IPv4 addresses embedded in IPv6 (IPv4-mapped
//! `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) are judged as the IPv4 address too.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `fe80::/10`). A bare
/// address is a network of one (`/32`, `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A CIDR that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let text = s.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError(format!("{s:?}: not an IP address or ADDRESS/PREFIX")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| CidrError(format!("{s:?}: prefix must be 0-{max}")))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// A network from its address and prefix (the prefix is capped at the address width).
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        Cidr {
            addr,
            prefix: prefix.min(max),
        }
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Is `ip` inside this network? (An IPv4 network never contains an IPv6 address
    /// and the other way round: embedded forms are unwrapped by the policy.)
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| -> (u128, u8) {
            match a {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ((net, width), (host, host_width)) = (bits(self.addr), bits(ip));
        if width != host_width {
            return false;
        }
        let shift = u32::from(width.saturating_sub(self.prefix));
        self.prefix == 0 || net.checked_shr(shift) == host.checked_shr(shift)
    }
}

/// Which kind of relay is connecting: the defaults differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A SmtpRelay, written by a namespace user.
    Namespaced,
    /// A ClusterSmtpRelay, written by a cluster administrator.
    Cluster,
}

impl Scope {
    fn kind(self) -> &'static str {
        match self {
            Scope::Namespaced => "SmtpRelay",
            Scope::Cluster => "ClusterSmtpRelay",
        }
    }
}

/// One built-in rule: a network, what it is, and whether ClusterSmtpRelays may use it.
struct BuiltIn {
    net: &'static str,
    what: &'static str,
    cluster_may: bool,
}

const DEFAULT_DENIED: &[BuiltIn] = &[
    BuiltIn {
        net: "0.0.0.0/8",
        what: "unspecified (\"this network\")",
        cluster_may: false,
    },
    BuiltIn {
        net: "127.0.0.0/8",
        what: "loopback",
        cluster_may: true,
    },
    BuiltIn {
        net: "169.254.0.0/16",
        what: "link-local (cloud metadata)",
        cluster_may: false,
    },
    BuiltIn {
        net: "100.100.100.200/32",
        what: "cloud metadata",
        cluster_may: false,
    },
    BuiltIn {
        net: "224.0.0.0/4",
        what: "multicast",
        cluster_may: false,
    },
    BuiltIn {
        net: "240.0.0.0/4",
        what: "reserved and broadcast",
        cluster_may: false,
    },
    BuiltIn {
        net: "::/128",
        what: "unspecified",
        cluster_may: false,
    },
    BuiltIn {
        net: "::1/128",
        what: "loopback",
        cluster_may: true,
    },
    BuiltIn {
        net: "fe80::/10",
        what: "link-local",
        cluster_may: false,
    },
    BuiltIn {
        net: "fd00:ec2::254/128",
        what: "cloud metadata",
        cluster_may: false,
    },
    BuiltIn {
        net: "ff00::/8",
        what: "multicast",
        cluster_may: false,
    },
];

/// Why an address is refused: the address and the rule, in words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{address} is not an allowed destination for a {kind}: {rule}")]
pub struct Refusal {
    pub address: IpAddr,
    pub kind: &'static str,
    pub rule: String,
}

/// The operator's destination rules (from `--allowed-destinations`,
/// `--denied-destinations` and `--cluster-cidrs`), shared by every session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    allowed: Vec<Cidr>,
    denied: Vec<Cidr>,
    cluster_ranges: Vec<Cidr>,
}

impl DestinationPolicy {
    /// Explicit allows and denies, and the cluster's service and pod ranges
    /// (refused for SmtpRelays unless explicitly allowed).
    pub fn new(allowed: Vec<Cidr>, denied: Vec<Cidr>, cluster_ranges: Vec<Cidr>) -> Self {
        DestinationPolicy {
            allowed,
            denied,
            cluster_ranges,
        }
    }

    /// The defaults plus explicit allows (what tests aimed at loopback need).
    pub fn allowing(allowed: &[&str]) -> Result<Self, CidrError> {
        Ok(DestinationPolicy {
            allowed: allowed
                .iter()
                .map(|c| c.parse())
                .collect::<Result<_, _>>()?,
            ..Default::default()
        })
    }

    /// May a relay of `scope` connect to `ip`?
    pub fn check(&self, scope: Scope, ip: IpAddr) -> Result<(), Refusal> {
        for view in views(ip) {
            if let Some(rule) = self.refusal_rule(scope, view) {
                return Err(Refusal {
                    address: ip,
                    kind: scope.kind(),
                    rule: if view == ip {
                        rule
                    } else {
                        format!("it embeds {view}, and {rule}")
                    },
                });
            }
        }
        Ok(())
    }

    /// The rule refusing `ip` (already unwrapped), if any.
    fn refusal_rule(&self, scope: Scope, ip: IpAddr) -> Option<String> {
        let best = |rules: &[Cidr]| {
            rules
                .iter()
                .filter(|c| c.contains(ip))
                .max_by_key(|c| c.prefix())
                .copied()
        };
        match (best(&self.allowed), best(&self.denied)) {
            (Some(a), Some(d)) if a.prefix() > d.prefix() => return None,
            (_, Some(d)) => return Some(format!("refused by --denied-destinations {d}")),
            (Some(_), None) => return None,
            (None, None) => {}
        }
        if scope == Scope::Namespaced
            && let Some(c) = best(&self.cluster_ranges)
        {
            return Some(format!(
                "{c} is one of the cluster's service and pod ranges (--cluster-cidrs), refused by default for a SmtpRelay; allow it with --allowed-destinations"
            ));
        }
        DEFAULT_DENIED
            .iter()
            .filter(|d| scope == Scope::Namespaced || !d.cluster_may)
            .find_map(|d| {
                let net: Cidr = d.net.parse().ok()?;
                net.contains(ip).then(|| {
                    format!(
                        "{} addresses ({net}) are refused by default; allow them with --allowed-destinations",
                        d.what
                    )
                })
            })
    }
}

/// The address, and the IPv4 address it carries when it is IPv4-mapped or NAT64.
fn views(ip: IpAddr) -> Vec<IpAddr> {
    let mut out = vec![ip];
    if let IpAddr::V6(v6) = ip {
        if let Some(v4) = v6.to_ipv4_mapped() {
            out.push(IpAddr::V4(v4));
        }
        let s = v6.segments();
        if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
            let o = v6.octets();
            out.push(IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15])));
        }
        // IPv4-compatible (::a.b.c.d, deprecated) other than :: and ::1.
        if s[..6] == [0; 6] && v6 != Ipv6Addr::UNSPECIFIED && v6 != Ipv6Addr::LOCALHOST {
            let o = v6.octets();
            out.push(IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15])));
        }
    }
    out
}

/// The policy a session applies: the operator's rules and the relay's kind.
#[derive(Clone, Debug)]
pub struct Destinations {
    pub policy: Arc<DestinationPolicy>,
    pub scope: Scope,
}

impl Destinations {
    pub fn new(policy: Arc<DestinationPolicy>, scope: Scope) -> Self {
        Destinations { policy, scope }
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.policy.check(self.scope, ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn namespaced_relays_cannot_reach_internal_addresses_by_default() {
        let p = DestinationPolicy::default();
        for refused in [
            "169.254.169.254",
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "ff02::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            let r = p.check(Scope::Namespaced, ip(refused));
            assert!(r.is_err(), "{refused} accepted");
        }
        for allowed in ["192.0.2.10", "10.1.2.3", "2001:db8::25", "172.16.0.1"] {
            assert_eq!(p.check(Scope::Namespaced, ip(allowed)), Ok(()), "{allowed}");
        }
    }

    #[test]
    fn the_refusal_names_the_address_and_the_rule() {
        let p = DestinationPolicy::default();
        let r = p
            .check(Scope::Namespaced, ip("169.254.169.254"))
            .expect_err("refused");
        let text = r.to_string();
        assert!(text.contains("169.254.169.254"), "{text}");
        assert!(text.contains("169.254.0.0/16"), "{text}");
        assert!(text.contains("SmtpRelay"), "{text}");
        let mapped = p
            .check(Scope::Namespaced, ip("::ffff:169.254.169.254"))
            .expect_err("refused")
            .to_string();
        assert!(mapped.contains("embeds 169.254.169.254"), "{mapped}");
    }

    #[test]
    fn cluster_relays_may_reach_loopback_but_not_metadata() {
        let p = DestinationPolicy::default();
        assert_eq!(p.check(Scope::Cluster, ip("127.0.0.1")), Ok(()));
        assert_eq!(p.check(Scope::Cluster, ip("::1")), Ok(()));
        assert!(p.check(Scope::Cluster, ip("169.254.169.254")).is_err());
        assert!(p.check(Scope::Cluster, ip("0.0.0.0")).is_err());
        let allowed = DestinationPolicy::allowing(&["169.254.169.254"]).expect("cidr");
        assert_eq!(allowed.check(Scope::Cluster, ip("169.254.169.254")), Ok(()));
    }

    #[test]
    fn explicit_rules_win_over_defaults_and_the_most_specific_wins() {
        let p = DestinationPolicy::new(
            vec!["127.0.0.0/8".parse().expect("cidr")],
            vec![
                "127.0.0.1/32".parse().expect("cidr"),
                "10.0.0.0/8".parse().expect("cidr"),
            ],
            vec!["10.96.0.0/12".parse().expect("cidr")],
        );
        assert_eq!(p.check(Scope::Namespaced, ip("127.0.0.2")), Ok(()));
        let r = p.check(Scope::Namespaced, ip("127.0.0.1"));
        assert!(
            r.as_ref()
                .is_err_and(|r| r.rule.contains("--denied-destinations 127.0.0.1/32")),
            "{r:?}"
        );
        assert!(p.check(Scope::Cluster, ip("10.1.1.1")).is_err());
        // The cluster's ranges: refused for SmtpRelays, allowed for ClusterSmtpRelays
        // (unless explicitly denied, as 10.0.0.0/8 is here).
        let ranges =
            DestinationPolicy::new(vec![], vec![], vec!["10.96.0.0/12".parse().expect("cidr")]);
        assert!(ranges.check(Scope::Namespaced, ip("10.96.0.1")).is_err());
        assert_eq!(ranges.check(Scope::Cluster, ip("10.96.0.1")), Ok(()));
        assert_eq!(ranges.check(Scope::Namespaced, ip("10.0.0.1")), Ok(()));
    }

    #[test]
    fn cidrs_parse_and_print() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().map(|c| c.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            "127.0.0.1".parse::<Cidr>().map(|c| c.to_string()),
            Ok("127.0.0.1/32".into())
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        let all: Cidr = "::/0".parse().expect("cidr");
        assert!(all.contains(ip("2001:db8::1")));
        assert!(!all.contains(ip("10.0.0.1")));
    }
}
