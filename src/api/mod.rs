//! Custom resource types of the `smtprelay.io/v1alpha1` API.
//!
//! Doc comments on fields become the CRD's descriptions, so they are what
//! `kubectl explain` prints: write them for the platform engineer reading them.

mod condition;
mod deliverability;
mod identity;
mod relay;
mod roundtrip;
mod trend;
mod vocabulary;

pub use condition::{Condition, ConditionStatus};
pub use deliverability::*;
pub use identity::*;
pub use relay::*;
pub use roundtrip::*;
pub use trend::{TREND_WINDOW, VerificationTrend};
pub use vocabulary::*;

/// API group of every kind in this crate.
pub const GROUP: &str = "smtprelay.io";
/// API version of every kind in this crate.
pub const VERSION: &str = "v1alpha1";

// Pieces of the HOST pattern (RFC 3986's IPv4address and IPv6address grammar), as
// macros so the pattern stays one string literal.
macro_rules! h16 {
    () => {
        "[0-9A-Fa-f]{1,4}"
    };
}
macro_rules! dec_octet {
    () => {
        "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
    };
}
macro_rules! ipv4 {
    () => {
        concat!(
            dec_octet!(),
            r"\.",
            dec_octet!(),
            r"\.",
            dec_octet!(),
            r"\.",
            dec_octet!()
        )
    };
}
macro_rules! ls32 {
    () => {
        concat!("(", h16!(), ":", h16!(), "|", ipv4!(), ")")
    };
}
macro_rules! ipv6 {
    () => {
        concat!(
            "((",
            h16!(),
            ":){6}",
            ls32!(),
            "|::(",
            h16!(),
            ":){5}",
            ls32!(),
            "|(",
            h16!(),
            ")?::(",
            h16!(),
            ":){4}",
            ls32!(),
            "|((",
            h16!(),
            ":){0,1}",
            h16!(),
            ")?::(",
            h16!(),
            ":){3}",
            ls32!(),
            "|((",
            h16!(),
            ":){0,2}",
            h16!(),
            ")?::(",
            h16!(),
            ":){2}",
            ls32!(),
            "|((",
            h16!(),
            ":){0,3}",
            h16!(),
            ")?::",
            h16!(),
            ":",
            ls32!(),
            "|((",
            h16!(),
            ":){0,4}",
            h16!(),
            ")?::",
            ls32!(),
            "|((",
            h16!(),
            ":){0,5}",
            h16!(),
            ")?::",
            h16!(),
            "|((",
            h16!(),
            ":){0,6}",
            h16!(),
            ")?::)"
        )
    };
}
macro_rules! dns_label {
    () => {
        "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    };
}

/// Patterns shared by several fields. Each is valid, with the same meaning, for
/// Go's RE2 (the API server) and Rust's regex crate (`verify`); tests/real_api.rs
/// proves the API server compiles them.
pub mod patterns {
    /// A DNS name whose last label starts with a letter, an IPv4 address (four
    /// decimal octets, no leading zeros) or an IPv6 address, the addresses optionally
    /// in brackets. No scheme, no port, no path, no space, no zone.
    pub const HOST: &str = concat!(
        r"^(\[(",
        ipv6!(),
        "|",
        ipv4!(),
        r")\]|",
        ipv6!(),
        "|",
        ipv4!(),
        r"|(",
        dns_label!(),
        r"\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)$"
    );
    /// An RFC 5321 mailbox: dot-atom local part @ domain.
    pub const ADDRESS: &str = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$";
    /// An RFC 5322 field name: printable ASCII except colon.
    pub const HEADER_NAME: &str = r"^[!-9;-~]+$";
    /// Any text on one line without control characters: no C0 (NUL, TAB, CR, LF,
    /// ESC, ...), no DEL, no C1 (NEL, ...), no Unicode line or paragraph separator.
    pub const ONE_LINE: &str = r"^[^\x00-\x1f\x7f-\x9f\x{2028}\x{2029}]*$";
    /// A Go duration, as `kubectl` and every Kubernetes API writes them: 90s, 5m,
    /// 1h30m. At most nine fractional digits (nanoseconds): finer fractions are
    /// rounded by the API server in floating point, sometimes up.
    pub const DURATION: &str = r"^([0-9]+(\.[0-9]{1,9})?(ns|us|ms|s|m|h))+$";
    /// A DNS label (usage names).
    pub const LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
    /// A Kubernetes object name (DNS subdomain).
    pub const OBJECT_NAME: &str =
        r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
    /// A Secret or ConfigMap data key.
    pub const DATA_KEY: &str = r"^[-._a-zA-Z0-9]+$";
    /// An IPv4 or IPv6 address, optionally with a prefix length (CIDR): 192.0.2.10,
    /// 198.51.100.0/28, 2001:db8::/64.
    pub const IP_OR_CIDR: &str = concat!(
        "^((",
        ipv4!(),
        ")(/(3[0-2]|[12]?[0-9]))?|(",
        ipv6!(),
        ")(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$"
    );
    /// A DKIM selector: one or more DNS labels (RFC 6376 §3.1).
    pub const DKIM_SELECTOR: &str = concat!("^", dns_label!(), r"(\.", dns_label!(), ")*$");
}

/// Why `host` is not a relay host (the same rule as [`patterns::HOST`], for objects
/// that did not go through the CRD, with a reason in words).
pub fn check_host(host: &str) -> Result<(), String> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    if host.is_empty() {
        return Err("is empty".into());
    }
    if host.len() > 253 {
        return Err("is longer than 253 characters".into());
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or("has an opening bracket without a closing one")?;
        return inner
            .parse::<IpAddr>()
            .map(|_| ())
            .map_err(|_| "is not an IP address in brackets".into());
    }
    if host.contains(':') {
        return host
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| "is not a valid IPv6 address".into());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let labels: Vec<&str> = name.split('.').collect();
    let last = labels.last().copied().unwrap_or("");
    if last.starts_with(|c: char| c.is_ascii_digit()) {
        return host
            .parse::<Ipv4Addr>()
            .map(|_| ())
            .map_err(|_| "is neither an IPv4 address (four numbers 0-255) nor a DNS name (whose last label starts with a letter)".into());
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "is not a DNS name: label {:?} must be 1-63 letters, digits or hyphens, not starting or ending with a hyphen",
                crate::table::clip(label, 64)
            ));
        }
    }
    if !last.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err("is not a DNS name: its last label must start with a letter".into());
    }
    Ok(())
}

/// Headers the operator sets itself; `customHeaders` may not override them.
pub const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "message-id",
    "date",
    "reply-to",
    "sender",
    "return-path",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "x-smtprelay-verification",
    "x-smtp-relay-probe",
];

/// Every CRD of the API with the file name it is written to under `crds/`.
pub fn crds() -> Vec<(
    &'static str,
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
)> {
    use kube::CustomResourceExt;
    vec![
        ("smtprelay.io_smtprelays.yaml", SmtpRelay::crd()),
        (
            "smtprelay.io_clustersmtprelays.yaml",
            ClusterSmtpRelay::crd(),
        ),
        ("smtprelay.io_senderidentities.yaml", SenderIdentity::crd()),
    ]
}

/// The CRDs as YAML documents, exactly as written to `crds/`.
pub fn crds_yaml() -> Result<Vec<(&'static str, String)>, serde_yaml::Error> {
    crds()
        .into_iter()
        .map(|(name, crd)| {
            Ok((
                name,
                format!(
                    "# Generated by `smtp-relay-operator crd` from src/api. Do not edit.\n{}",
                    serde_yaml::to_string(&crd)?
                ),
            ))
        })
        .collect()
}
