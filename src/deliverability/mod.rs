//! Deliverability checks (domain logic, no Kubernetes): the sender domain's MX, SPF,
//! DKIM and DMARC records, and the relay's sending addresses in DNS blocklists.
//!
//! Lookups go through one [`Checker`]: one resolver (the system's, or `--dns-server`)
//! whose cache honours TTLs, and concurrent checks of the same domain share one
//! evaluation. What the results mean for conditions is decided in [`verdict`], pure.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use hickory_resolver::TokioResolver;
use mail_auth::MessageAuthenticator;

use crate::api::{BlocklistStatus, DomainDeliverability, RelayDeliverabilitySpec};

pub mod dkim;
pub mod dmarc;
pub mod dns;
pub mod dnsbl;
pub mod mx;
pub mod spf;
pub mod verdict;

pub use dns::{DnsSettings, Miss, ResolverError};

/// Blocklists asked when the operator is given none (`--dnsbl-zones`): Spamhaus ZEN
/// (SBL, XBL, PBL) and SpamCop. Spamhaus refuses queries that come through public
/// resolvers (reported as BlocklistQueryRefused, never as a listing).
pub const DEFAULT_DNSBL_ZONES: &[&str] = &["zen.spamhaus.org", "bl.spamcop.net"];

/// Addresses looked up per relay in the blocklists, at most.
pub const MAX_BLOCKLIST_ADDRESSES: usize = 16;

/// One check of a sender domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DomainQuery {
    /// The sender address (its domain is checked).
    pub address: String,
    /// The relay's sending addresses (already resolved).
    pub sending: Vec<IpAddr>,
    /// Where they come from ([`sending_label`]): what the check is re-run for. Not
    /// the resolved addresses, which rotate behind many providers' host names.
    pub sending_label: String,
    /// DKIM selectors to check.
    pub selectors: Vec<String>,
    /// The relay host (HELO name for SPF macros).
    pub relay_host: String,
}

impl DomainQuery {
    /// The check of an identity's address through a relay whose sending addresses
    /// were resolved as `sending`: the identity's DKIM selectors, else the relay's.
    pub fn for_identity(
        identity: &crate::api::SenderIdentitySpec,
        relay: &crate::api::SmtpRelaySpec,
        sending: Vec<IpAddr>,
    ) -> DomainQuery {
        let selectors = if identity.deliverability.dkim_selectors.is_empty() {
            &relay.deliverability.dkim_selectors
        } else {
            &identity.deliverability.dkim_selectors
        };
        DomainQuery {
            address: identity.address.clone(),
            sending,
            sending_label: sending_label(&relay.deliverability, &relay.host),
            selectors: selectors.clone(),
            relay_host: relay.host.clone(),
        }
    }

    pub fn domain(&self) -> &str {
        self.address
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or(&self.address)
    }

    /// What the results depend on: a change checks again at once.
    pub fn inputs(&self) -> String {
        format!(
            "{} via {} dkim [{}]",
            self.domain().to_ascii_lowercase(),
            self.sending_label,
            self.selectors.join(",")
        )
    }
}

type Pending = Shared<BoxFuture<'static, Arc<DomainDeliverability>>>;

/// Where a relay's sending addresses come from, for [`DomainQuery::sending_label`].
pub fn sending_label(spec: &RelayDeliverabilitySpec, host: &str) -> String {
    if spec.sending_addresses.is_empty() {
        format!("host {}", host.to_ascii_lowercase())
    } else {
        format!("[{}]", spec.sending_addresses.join(","))
    }
}

/// The resolver, the blocklist zones and the checks in flight.
#[derive(Clone)]
pub struct Checker {
    auth: MessageAuthenticator,
    zones: Arc<Vec<String>>,
    in_flight: Arc<Mutex<HashMap<DomainQuery, (u64, Pending)>>>,
    runs: Arc<std::sync::atomic::AtomicU64>,
}

fn parse_cidr(entry: &str) -> Option<(IpAddr, u32)> {
    let (ip, prefix) = match entry.split_once('/') {
        Some((ip, p)) => (ip.parse::<IpAddr>().ok()?, p.parse::<u32>().ok()?),
        None => {
            let ip = entry.parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

/// Up to `limit` addresses of a CIDR from its first, plus its last when `last`.
fn expand(entry: &str, limit: usize, last: bool) -> Vec<IpAddr> {
    let Some((ip, prefix)) = parse_cidr(entry) else {
        return Vec::new();
    };
    match ip {
        IpAddr::V4(v4) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            let first = u32::from(v4) & mask;
            let end = first | !mask;
            let mut out: Vec<IpAddr> = (0..limit as u64)
                .map(|i| first as u64 + i)
                .take_while(|n| *n <= end as u64)
                .map(|n| IpAddr::V4((n as u32).into()))
                .collect();
            if last && !out.contains(&IpAddr::V4(end.into())) {
                out.push(IpAddr::V4(end.into()));
            }
            out
        }
        IpAddr::V6(v6) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            let first = u128::from(v6) & mask;
            let end = first | !mask;
            let mut out: Vec<IpAddr> = (0..limit as u128)
                .map(|i| first.saturating_add(i))
                .take_while(|n| *n <= end)
                .map(|n| IpAddr::V6(n.into()))
                .collect();
            out.dedup();
            if last && !out.contains(&IpAddr::V6(end.into())) {
                out.push(IpAddr::V6(end.into()));
            }
            out
        }
    }
}

/// The addresses SPF is evaluated for: each IP, and each CIDR's first and last.
pub fn spf_addresses(configured: &[String]) -> Vec<IpAddr> {
    configured.iter().flat_map(|e| expand(e, 1, true)).collect()
}

/// The addresses looked up in blocklists: up to 16 in all.
pub fn blocklist_addresses(configured: &[String]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = configured
        .iter()
        .flat_map(|e| expand(e, MAX_BLOCKLIST_ADDRESSES, false))
        .collect();
    out.truncate(MAX_BLOCKLIST_ADDRESSES);
    out
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("zones", &self.zones)
            .finish()
    }
}

impl Checker {
    pub fn new(settings: &DnsSettings, zones: Vec<String>) -> Result<Self, ResolverError> {
        Ok(Checker {
            auth: MessageAuthenticator(dns::resolver(settings)?),
            zones: Arc::new(zones),
            in_flight: Arc::default(),
            runs: Arc::default(),
        })
    }

    pub fn resolver(&self) -> &TokioResolver {
        &self.auth.0
    }

    pub fn zones(&self) -> &[String] {
        &self.zones
    }

    /// The relay's sending addresses: spec.deliverability.sendingAddresses, else the
    /// addresses of its host. For SPF, each CIDR's ends; for blocklists, up to 16.
    pub async fn sending_addresses(
        &self,
        spec: &RelayDeliverabilitySpec,
        host: &str,
        for_blocklists: bool,
    ) -> Result<Vec<IpAddr>, Miss> {
        if !spec.sending_addresses.is_empty() {
            return Ok(if for_blocklists {
                blocklist_addresses(&spec.sending_addresses)
            } else {
                spf_addresses(&spec.sending_addresses)
            });
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let mut ips = dns::addresses(self.resolver(), bare).await?;
        ips.sort();
        ips.dedup();
        ips.truncate(MAX_BLOCKLIST_ADDRESSES);
        Ok(ips)
    }

    /// Check a sender domain. Concurrent checks of the same query share one run; the
    /// run itself removes its entry when done (whoever waits, or not), and a panic in
    /// it becomes a temporary failure instead of poisoning the entry.
    pub async fn check_domain(&self, query: &DomainQuery) -> Arc<DomainDeliverability> {
        let pending = {
            let mut map = self
                .in_flight
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let next_id = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            map.entry(query.clone())
                .or_insert_with(|| {
                    let auth = self.auth.clone();
                    let q = query.clone();
                    let map = Arc::clone(&self.in_flight);
                    let run = async move {
                        let out = std::panic::AssertUnwindSafe(run_domain(&auth, &q))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| failed_run(&q));
                        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
                        if map.get(&q).is_some_and(|(id, _)| *id == next_id) {
                            map.remove(&q);
                        }
                        Arc::new(out)
                    };
                    (next_id, run.boxed().shared())
                })
                .1
                .clone()
        };
        pending.await
    }

    /// Look every address up in every zone.
    pub async fn check_blocklists(&self, addresses: &[IpAddr], now: &str) -> BlocklistStatus {
        let r = self.resolver();
        let jobs = addresses.iter().flat_map(|ip| {
            self.zones
                .iter()
                .map(move |zone| async move { dnsbl::lookup(r, ip, zone).await })
        });
        let answers = futures::future::join_all(jobs).await;
        let mut out = BlocklistStatus {
            checked_at: now.to_string(),
            addresses: addresses.iter().map(|i| i.to_string()).collect(),
            zones: self.zones.to_vec(),
            ..Default::default()
        };
        for a in answers {
            match a {
                Ok(Some(listing)) => out.listings.push(listing),
                Ok(None) => {}
                Err(unanswered) => out.unanswered.push(unanswered),
            }
        }
        out
    }
}

/// The result of a run that failed unexpectedly: a temporary failure everywhere.
fn failed_run(q: &DomainQuery) -> DomainDeliverability {
    let why = "the check failed unexpectedly; it is tried again".to_string();
    let mut d = DomainDeliverability {
        domain: q.domain().to_ascii_lowercase(),
        checked_at: jiff::Timestamp::now().to_string(),
        inputs: q.inputs(),
        ..Default::default()
    };
    d.mx.result = "TempError".into();
    d.mx.message = why.clone();
    d.spf.result = "temperror".into();
    d.spf.message = why.clone();
    d.dmarc.result = "TempError".into();
    d.dmarc.message = why;
    d
}

async fn run_domain(auth: &MessageAuthenticator, q: &DomainQuery) -> DomainDeliverability {
    let r = &auth.0;
    let domain = q.domain().to_ascii_lowercase();
    let (mx, spf, dmarc, dkim) = futures::join!(
        mx::check(r, &domain),
        spf::evaluate(auth, &domain, &q.address, &q.relay_host, &q.sending),
        dmarc::check(r, &domain),
        futures::future::join_all(q.selectors.iter().map(|s| dkim::check(r, &domain, s))),
    );
    DomainDeliverability {
        domain,
        checked_at: jiff::Timestamp::now().to_string(),
        inputs: q.inputs(),
        sending_addresses: q.sending.iter().map(|i| i.to_string()).collect(),
        mx,
        spf,
        dkim,
        dmarc,
        temporary_failure: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_expand_to_their_ends_and_at_most_sixteen() {
        let spf = spf_addresses(&["192.0.2.0/30".into(), "2001:db8::1".into()]);
        let s: Vec<String> = spf.iter().map(|i| i.to_string()).collect();
        assert_eq!(s, ["192.0.2.0", "192.0.2.3", "2001:db8::1"]);
        let bl = blocklist_addresses(&["198.51.100.0/24".into()]);
        assert_eq!(bl.len(), 16);
        assert_eq!(bl[15].to_string(), "198.51.100.15");
        assert!(spf_addresses(&["not-an-ip".into(), "10.0.0.0/40".into()]).is_empty());
    }

    #[test]
    fn dnsbl_names_reverse_octets_and_nibbles() {
        let v4: IpAddr = "192.0.2.99".parse().unwrap();
        assert_eq!(dnsbl::query_name(&v4, "zen.test."), "99.2.0.192.zen.test");
        let v6: IpAddr = "2001:db8::567:89ab".parse().unwrap();
        assert_eq!(
            dnsbl::query_name(&v6, "bl.test"),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test"
        );
    }

    #[test]
    fn refusal_codes_are_never_listings() {
        let codes = |s: &[&str]| {
            s.iter()
                .map(|c| c.parse().unwrap())
                .collect::<Vec<IpAddr>>()
        };
        assert_eq!(
            dnsbl::classify(&codes(&["127.0.0.2"])),
            dnsbl::Answer::Listed
        );
        for refused in [
            "127.255.255.254",
            "127.255.255.255",
            "127.255.255.252",
            "10.0.0.1",
        ] {
            assert!(matches!(
                dnsbl::classify(&codes(&[refused])),
                dnsbl::Answer::Refused(_)
            ));
        }
    }
}
