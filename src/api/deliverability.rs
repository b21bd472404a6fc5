//! Deliverability: what receivers judge besides the relay accepting the mail — the
//! sender domain's MX, SPF, DKIM and DMARC records, and the relay's presence on DNS
//! blocklists. Spec fields on relays and identities, results in their status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::patterns::*;

/// Deliverability settings of a relay.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelayDeliverabilitySpec {
    /// The addresses the relay sends from as receivers see them (IPs or CIDRs, e.g.
    /// the provider's published outbound range). SPF of every sender domain must
    /// authorize them, and they are looked up in the DNS blocklists. Empty: the
    /// addresses of spec.host. A CIDR is checked at its first and last address for
    /// SPF, and at up to 16 of its addresses for blocklists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 49), pattern(IP_OR_CIDR)))]
    pub sending_addresses: Vec<String>,
    /// DKIM selectors the relay signs with: SELECTOR._domainkey.DOMAIN must hold a
    /// usable key for every sender domain. An identity's own selectors replace these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(length(min = 1, max = 63), pattern(DKIM_SELECTOR))
    )]
    pub dkim_selectors: Vec<String>,
}

/// Deliverability settings of a sender identity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityDeliverabilitySpec {
    /// DKIM selectors to check for the address's domain; empty: the relay's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(length(min = 1, max = 63), pattern(DKIM_SELECTOR))
    )]
    pub dkim_selectors: Vec<String>,
    /// When true, the identity is Ready only while DomainAuthenticated is True. By
    /// default DNS problems are reported without blocking the identity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enforce: bool,
}

/// The sender domain's DNS records as receivers judge them, checked on the relay's
/// verification interval and whenever the address, relay or selectors change.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainDeliverability {
    /// The domain checked (the part of spec.address after the @).
    pub domain: String,
    /// When these results were read from DNS.
    pub checked_at: String,
    /// What the check was about (domain, sending addresses, selectors); a change
    /// checks again at once.
    pub inputs: String,
    /// The relay's sending addresses SPF was evaluated for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sending_addresses: Vec<String>,
    /// Whether the domain accepts mail (bounces and replies need it).
    pub mx: MxCheck,
    /// SPF (RFC 7208) of the domain for the relay's sending addresses.
    pub spf: SpfCheck,
    /// One entry per DKIM selector checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dkim: Vec<DkimCheck>,
    /// The DMARC policy that applies to the domain.
    pub dmarc: DmarcCheck,
    /// Set when the latest check failed temporarily (DNS timeout, SERVFAIL): the
    /// results above are the last complete ones, from checkedAt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary_failure: Option<TemporaryFailure>,
}

/// A check that could not be made this time.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemporaryFailure {
    /// When the check was attempted.
    pub time: String,
    /// What failed.
    pub message: String,
}

/// MX records of the domain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MxCheck {
    /// Found (MX records), ImplicitA (no MX, but an A/AAAA record receives mail),
    /// NullMx (the domain says it accepts no mail, RFC 7505), NoMx (neither), or
    /// TempError.
    pub result: String,
    /// The MX records as "PREFERENCE EXCHANGE", or the addresses of the fallback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<String>,
    /// The result in words.
    pub message: String,
}

/// SPF evaluation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpfCheck {
    /// The RFC 7208 result for the relay: pass, fail, softfail, neutral, none,
    /// permerror or temperror (the worst over the sending addresses).
    pub result: String,
    /// The domain's v=spf1 record as published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// DNS-querying terms (include, a, mx, ptr, exists, redirect) counted through
    /// includes and redirects; receivers give up past 10.
    #[serde(default)]
    pub lookups: i32,
    /// Lookups that returned no records; receivers give up past 2.
    #[serde(default)]
    pub void_lookups: i32,
    /// The result for each sending address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<AddressResult>,
    /// The result in words.
    pub message: String,
}

/// One sending address's SPF result.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressResult {
    pub address: String,
    pub result: String,
}

/// One DKIM selector's key record.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DkimCheck {
    pub selector: String,
    /// Valid, Weak (RSA under 2048 bits), TooWeak (RSA under 1024 bits: receivers
    /// ignore it), Missing, Revoked (empty p=), Invalid or TempError.
    pub result: String,
    /// rsa or ed25519.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
    /// Size of an RSA key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_bits: Option<i32>,
    /// The record as published, its key shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// The result in words.
    pub message: String,
}

/// The DMARC record that applies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DmarcCheck {
    /// Found, Missing, Invalid or TempError.
    pub result: String,
    /// Where the record was found: _dmarc.DOMAIN, or the organisational domain's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_at: Option<String>,
    /// The record as published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// p=: none, quarantine or reject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// sp=: the policy for subdomains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain_policy: Option<String>,
    /// pct=: the share of failing mail the policy applies to (100 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pct: Option<i32>,
    /// adkim=: relaxed or strict DKIM alignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adkim: Option<String>,
    /// aspf=: relaxed or strict SPF alignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspf: Option<String>,
    /// The result in words.
    pub message: String,
}

/// The relay's sending addresses in the DNS blocklists (DNSBL, RFC 5782).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlocklistStatus {
    /// When the zones were asked.
    pub checked_at: String,
    /// The addresses looked up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The zones asked (the operator's --dnsbl-zones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// Every listing, with the zone's code and reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listings: Vec<BlocklistEntry>,
    /// Zones that refused the query (e.g. Spamhaus's 127.255.255.254 for queries
    /// through public resolvers) or did not answer: not listings, but no answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unanswered: Vec<BlocklistEntry>,
    /// Set when no zone answered the latest check: the results above are the last
    /// complete ones, from checkedAt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary_failure: Option<TemporaryFailure>,
}

/// One zone's answer for one address.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlocklistEntry {
    pub address: String,
    pub zone: String,
    /// The 127.0.0.x answer, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The zone's TXT reason, or what went wrong.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}
