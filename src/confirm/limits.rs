//! The confirmation endpoint's bounds: per-client request budgets, per-identity API
//! reads (with the last read kept for when the budget is spent), and open
//! connections in all and per client. Every limit is per replica.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::SenderIdentity;
use crate::smtp::Cidr;

/// The endpoint's bounds. Every limit is per replica.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Requests per client address per window.
    pub per_client: u32,
    /// API reads per identity per window; beyond it, links are checked against the
    /// last read (a valid link still confirms; guesses cost the API server nothing).
    pub lookups_per_identity: u32,
    pub window: Duration,
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections per client address (trusted proxies: max_connections).
    pub max_connections_per_client: usize,
    /// Time to send the request line and headers.
    pub header_timeout: Duration,
    /// Longest life of a connection (one request: no keep-alive).
    pub connection_timeout: Duration,
    /// API reads in flight at once (more wait their turn; none are refused).
    pub concurrent_lookups: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_client: 20,
            lookups_per_identity: 30,
            window: Duration::from_secs(60),
            max_connections: 512,
            max_connections_per_client: 8,
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(20),
            concurrent_lookups: 16,
        }
    }
}

/// Fixed-window request budget per client address.
pub struct RateLimiter {
    per_client: u32,
    window: Duration,
    state: Mutex<(Instant, HashMap<IpAddr, u32>)>,
}

impl RateLimiter {
    pub fn new(per_client: u32, window: Duration) -> Self {
        RateLimiter {
            per_client,
            window,
            state: Mutex::new((Instant::now(), HashMap::new())),
        }
    }

    /// May this client make one more request now? (No budget is shared between
    /// clients: many addresses together cannot spend the owner's.)
    pub fn allow(&self, ip: IpAddr) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0.elapsed() >= self.window {
            *s = (Instant::now(), HashMap::new());
        }
        let count = s.1.entry(ip).or_insert(0);
        if *count >= self.per_client {
            return false;
        }
        *count += 1;
        true
    }
}

/// What the endpoint last read of one identity (enough to check a link).
#[derive(Clone)]
pub(super) struct Snapshot {
    pub(super) identity: Option<Arc<SenderIdentity>>,
}

/// Per (namespace, name): reads this window, and the last read.
type Reads = HashMap<(String, String), (u32, Option<Snapshot>)>;

/// Per-identity API reads in the current window, and the last read.
pub(super) struct IdentityBudget {
    per_identity: u32,
    window: Duration,
    state: Mutex<(Instant, Reads)>,
}

pub(super) enum Budget {
    /// Read the API server.
    Read,
    /// Over budget: use this (possibly absent) last read.
    Cached(Option<Snapshot>),
}

impl IdentityBudget {
    pub(super) fn new(per_identity: u32, window: Duration) -> Self {
        IdentityBudget {
            per_identity,
            window,
            state: Mutex::new((Instant::now(), HashMap::new())),
        }
    }

    pub(super) fn take(&self, namespace: &str, name: &str) -> Budget {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0.elapsed() >= self.window {
            *s = (Instant::now(), HashMap::new());
        }
        let entry =
            s.1.entry((namespace.to_string(), name.to_string()))
                .or_insert((0, None));
        if entry.0 >= self.per_identity {
            return Budget::Cached(entry.1.clone());
        }
        entry.0 += 1;
        Budget::Read
    }

    pub(super) fn remember(&self, namespace: &str, name: &str, snapshot: Snapshot) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = s.1.get_mut(&(namespace.to_string(), name.to_string())) {
            entry.1 = Some(snapshot);
        }
    }
}

/// Open connections, in all and per client address.
pub struct Connections {
    max: usize,
    per_client: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One open connection; closing it (dropping this) frees its slots.
pub struct ConnectionSlot<'a> {
    owner: &'a Connections,
    ip: IpAddr,
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        let mut s = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = s.0.saturating_sub(1);
        if let Some(n) = s.1.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.1.remove(&self.ip);
            }
        }
    }
}

impl Connections {
    pub fn new(max: usize, per_client: usize) -> Self {
        Connections {
            max,
            per_client,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    /// A slot for a new connection from `ip`, or None when a cap is reached.
    /// `trusted` clients (proxies) are bound only by the total.
    pub fn open(&self, ip: IpAddr, trusted: bool) -> Option<ConnectionSlot<'_>> {
        let mut s = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let from_ip = s.1.get(&ip).copied().unwrap_or(0);
        if s.0 >= self.max || (!trusted && from_ip >= self.per_client) {
            return None;
        }
        s.0 += 1;
        *s.1.entry(ip).or_insert(0) += 1;
        Some(ConnectionSlot { owner: self, ip })
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

/// The client a request is counted against: the TCP peer, or, when the peer is a
/// trusted proxy, the rightmost address in X-Forwarded-For that is not one.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = forwarded_for
        .unwrap_or("")
        .split(',')
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .copied()
        .find(|ip| !is_trusted(*ip))
        .or(hops.first().copied())
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_are_per_client_only() {
        let l = RateLimiter::new(2, Duration::from_secs(60));
        let a: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!(l.allow(a) && l.allow(a));
        assert!(!l.allow(a), "per-client limit");
        // A thousand other clients spending their budgets leave everyone's intact.
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(l.allow(ip) && l.allow(ip));
        }
        let owner: IpAddr = "192.0.2.7".parse().expect("ip");
        assert!(l.allow(owner), "no shared budget to starve the owner");
        let l = RateLimiter::new(1, Duration::from_millis(1));
        assert!(l.allow(a));
        std::thread::sleep(Duration::from_millis(5));
        assert!(l.allow(a), "a new window");
    }

    #[test]
    fn identity_reads_are_bounded_and_the_last_read_is_kept() {
        let b = IdentityBudget::new(2, Duration::from_secs(60));
        assert!(matches!(b.take("team", "sales"), Budget::Read));
        b.remember("team", "sales", Snapshot { identity: None });
        assert!(matches!(b.take("team", "sales"), Budget::Read));
        assert!(matches!(b.take("team", "sales"), Budget::Cached(Some(_))));
        assert!(
            matches!(b.take("team", "other"), Budget::Read),
            "per identity"
        );
    }

    #[test]
    fn connections_are_capped_in_all_and_per_client() {
        let c = Connections::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().expect("ip");
        let b: IpAddr = "127.0.0.2".parse().expect("ip");
        let p: IpAddr = "10.0.0.1".parse().expect("ip");
        let a1 = c.open(a, false).expect("first");
        let _a2 = c.open(a, false).expect("second");
        assert!(c.open(a, false).is_none(), "per client");
        let _b1 = c.open(b, false).expect("another client");
        assert!(c.open(p, true).is_none(), "in all, even for a proxy");
        drop(a1);
        assert_eq!(c.count(), 2);
        assert!(
            c.open(p, true).is_some(),
            "a closed connection frees its slot"
        );
    }

    #[test]
    fn the_client_behind_a_trusted_proxy_is_counted() {
        let trusted: Vec<Cidr> = vec![
            "10.0.0.0/8".parse().expect("cidr"),
            "fd00::/8".parse().expect("cidr"),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some("198.51.100.1"), &trusted),
            ip("203.0.113.9"),
            "untrusted peer: XFF ignored"
        );
        assert_eq!(
            client_ip(ip("10.1.2.3"), Some("198.51.100.1"), &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(
                ip("10.1.2.3"),
                Some("6.6.6.6, 198.51.100.1, 10.9.9.9"),
                &trusted
            ),
            ip("198.51.100.1"),
            "spoofed left entries ignored"
        );
        assert_eq!(client_ip(ip("10.1.2.3"), None, &trusted), ip("10.1.2.3"));
        assert_eq!(
            client_ip(ip("fd00::1"), Some("2001:db8::7"), &trusted),
            ip("2001:db8::7")
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::1")));
    }
}
