//! DNS lookups for the deliverability checks, through one hickory resolver whose
//! cache honours the records' TTLs: ten thousand identities on fifty domains ask the
//! server about fifty times per record type, not ten thousand.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;

/// Why a lookup returned nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Miss {
    /// NXDOMAIN or no record of that type (NODATA): an answer.
    NotFound,
    /// Timeout, SERVFAIL, refused, unreachable server: no answer, ask again later.
    Temporary(String),
}

impl Miss {
    pub fn is_temporary(&self) -> bool {
        matches!(self, Miss::Temporary(_))
    }
}

/// Which resolver to ask.
#[derive(Clone, Debug, Default)]
pub struct DnsSettings {
    /// A resolver's HOST:PORT (UDP, then TCP for long answers); None: the system's.
    pub server: Option<SocketAddr>,
    /// Time for one query (default 3 s); each query is tried twice.
    pub timeout: Option<Duration>,
}

/// Cannot build the resolver (unreadable /etc/resolv.conf, ...).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS resolver: {0}")]
pub struct ResolverError(String);

pub fn resolver(settings: &DnsSettings) -> Result<TokioResolver, ResolverError> {
    let (config, mut opts) = match settings.server {
        Some(addr) => {
            let mut udp = ConnectionConfig::new(ProtocolConfig::Udp);
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::new(ProtocolConfig::Tcp);
            tcp.port = addr.port();
            let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            (
                ResolverConfig::from_parts(None, vec![], vec![server]),
                ResolverOpts::default(),
            )
        }
        None => hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| ResolverError(e.to_string()))?,
    };
    opts.timeout = settings.timeout.unwrap_or(Duration::from_secs(3));
    opts.attempts = 2;
    opts.cache_size = 8192;
    opts.ndots = 0;
    // Names here are DNS names, never /etc/hosts entries.
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| ResolverError(e.to_string()))
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn miss(err: NetError) -> Miss {
    match &err {
        NetError::Dns(DnsError::NoRecordsFound(none))
            if matches!(
                none.response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            ) =>
        {
            Miss::NotFound
        }
        NetError::Dns(DnsError::NoRecordsFound(none)) => {
            Miss::Temporary(format!("the DNS server answered {}", none.response_code))
        }
        _ => Miss::Temporary(crate::table::clip(&err.to_string(), 200)),
    }
}

/// TXT records at `name`, each record's strings joined (RFC 7208 §3.3).
pub async fn txt(r: &TokioResolver, name: &str) -> Result<Vec<String>, Miss> {
    let lookup = r.txt_lookup(fqdn(name)).await.map_err(miss)?;
    let mut out = Vec::new();
    for record in lookup.answers() {
        if let RData::TXT(txt) = &record.data {
            let mut joined = Vec::new();
            for part in txt.txt_data.iter() {
                joined.extend_from_slice(part);
            }
            out.push(String::from_utf8_lossy(&joined).into_owned());
        }
    }
    if out.is_empty() {
        return Err(Miss::NotFound);
    }
    Ok(out)
}

/// MX records at `name` as (preference, exchange without the final dot), best first.
pub async fn mx(r: &TokioResolver, name: &str) -> Result<Vec<(u16, String)>, Miss> {
    let lookup = r.mx_lookup(fqdn(name)).await.map_err(miss)?;
    let mut out: Vec<(u16, String)> = lookup
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::MX(mx) => Some((
                mx.preference,
                mx.exchange.to_ascii().trim_end_matches('.').to_string(),
            )),
            _ => None,
        })
        .collect();
    if out.is_empty() {
        return Err(Miss::NotFound);
    }
    out.sort();
    Ok(out)
}

/// A records at `name`.
pub async fn a(r: &TokioResolver, name: &str) -> Result<Vec<IpAddr>, Miss> {
    let lookup = r.ipv4_lookup(fqdn(name)).await.map_err(miss)?;
    let out: Vec<IpAddr> = lookup
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    if out.is_empty() {
        return Err(Miss::NotFound);
    }
    Ok(out)
}

/// AAAA records at `name`.
pub async fn aaaa(r: &TokioResolver, name: &str) -> Result<Vec<IpAddr>, Miss> {
    let lookup = r.ipv6_lookup(fqdn(name)).await.map_err(miss)?;
    let out: Vec<IpAddr> = lookup
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    if out.is_empty() {
        return Err(Miss::NotFound);
    }
    Ok(out)
}

/// A and AAAA records: NotFound only when both are absent.
pub async fn addresses(r: &TokioResolver, name: &str) -> Result<Vec<IpAddr>, Miss> {
    let (v4, v6) = futures::join!(a(r, name), aaaa(r, name));
    match (v4, v6) {
        (Ok(mut x), Ok(y)) => {
            x.extend(y);
            Ok(x)
        }
        (Ok(x), Err(_)) | (Err(_), Ok(x)) => Ok(x),
        (Err(Miss::Temporary(e)), _) | (_, Err(Miss::Temporary(e))) => Err(Miss::Temporary(e)),
        _ => Err(Miss::NotFound),
    }
}
