//! DNS blocklists (RFC 5782): ADDRESS-REVERSED.ZONE has an A record in 127.0.0.0/8
//! when the address is listed, and a TXT record saying why.

use std::net::IpAddr;

use hickory_resolver::TokioResolver;

use super::dns::{self, Miss};
use crate::api::BlocklistEntry;

/// The query name of `ip` in `zone`: IPv4 octets reversed, IPv6 nibbles reversed.
pub fn query_name(ip: &IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut parts = Vec::with_capacity(33);
            for byte in v6.octets().iter().rev() {
                parts.push(format!("{:x}", byte & 0x0f));
                parts.push(format!("{:x}", byte >> 4));
            }
            parts.push(zone.to_string());
            parts.join(".")
        }
    }
}

/// What an answer means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Listed,
    /// The zone refused or rate-limited the query (Spamhaus answers 127.255.255.x:
    /// .252 typing error, .254 query through a public resolver, .255 too many
    /// queries), or answered something that is not a listing code.
    Refused(String),
}

/// Classify the A records of a listing (pure).
pub fn classify(codes: &[IpAddr]) -> Answer {
    for code in codes {
        let IpAddr::V4(v4) = code else {
            return Answer::Refused(format!("answered {code}, not a 127.0.0.x code"));
        };
        let o = v4.octets();
        if o[0] != 127 {
            return Answer::Refused(format!(
                "answered {v4}, not a 127.0.0.x code (a wildcarding resolver?)"
            ));
        }
        if o[1] == 255 && o[2] == 255 {
            let why = match o[3] {
                252 => "the zone name is wrong",
                254 => "queries through public or open resolvers are refused",
                255 => "too many queries: rate-limited",
                _ => "the query was refused",
            };
            return Answer::Refused(format!("answered {v4}: {why}"));
        }
    }
    Answer::Listed
}

/// Look `ip` up in `zone`: Ok(None) not listed, Ok(Some) listed, Err unanswered.
pub async fn lookup(
    r: &TokioResolver,
    ip: &IpAddr,
    zone: &str,
) -> Result<Option<BlocklistEntry>, BlocklistEntry> {
    let name = query_name(ip, zone);
    let entry = |code: Option<String>, reason: String| BlocklistEntry {
        address: ip.to_string(),
        zone: zone.to_string(),
        code,
        reason,
    };
    match dns::a(r, &name).await {
        Err(Miss::NotFound) => Ok(None),
        Err(Miss::Temporary(e)) => Err(entry(None, format!("no answer: {e}"))),
        Ok(codes) => {
            let text = codes
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",");
            match classify(&codes) {
                Answer::Refused(why) => Err(entry(Some(text), why)),
                Answer::Listed => {
                    let reason = match dns::txt(r, &name).await {
                        Ok(t) => crate::table::clip(&t.join(" "), 300),
                        Err(_) => String::new(),
                    };
                    Ok(Some(entry(Some(text), reason)))
                }
            }
        }
    }
}
