//! DMARC: the policy record at _dmarc.DOMAIN or, failing that, at the organisational
//! domain's (walking up the labels, as receivers do). Parsed by mail-auth; `pct` is
//! read from the text (DMARCbis dropped it, receivers still honour it).

use hickory_resolver::TokioResolver;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::{Alignment, Dmarc, Policy};

use super::dns::{self, Miss};
use crate::api::DmarcCheck;

fn policy(p: &Policy) -> &'static str {
    match p {
        Policy::None | Policy::Unspecified => "none",
        Policy::Quarantine => "quarantine",
        Policy::Reject => "reject",
    }
}

fn alignment(a: &Alignment) -> &'static str {
    match a {
        Alignment::Relaxed => "relaxed",
        Alignment::Strict => "strict",
    }
}

pub fn is_dmarc(txt: &str) -> bool {
    let t = txt.trim_start();
    t.get(..8)
        .is_some_and(|v| v.eq_ignore_ascii_case("v=DMARC1"))
}

fn pct(record: &str) -> Option<i32> {
    record.split(';').find_map(|t| {
        let (k, v) = t.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("pct") {
            v.trim()
                .parse::<i32>()
                .ok()
                .filter(|n| (0..=100).contains(n))
        } else {
            None
        }
    })
}

/// The names asked, most specific first: the domain, then its parents down to two
/// labels (at most 8 in all).
pub fn candidates(domain: &str) -> Vec<String> {
    let labels: Vec<&str> = domain.trim_end_matches('.').split('.').collect();
    let n = labels.len();
    // The name itself, then (DMARCbis tree walk) at most its rightmost 7 labels, one
    // label fewer each time, down to two labels: never the TLD.
    let mut out = vec![labels.join(".")];
    for keep in (2..n.min(8)).rev() {
        let name = labels[n - keep..].join(".");
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

fn outcome(result: &str, message: String) -> DmarcCheck {
    DmarcCheck {
        result: result.into(),
        message,
        ..Default::default()
    }
}

/// Judge a record found at `name` (pure).
pub fn judge(domain: &str, name: &str, records: &[&String]) -> DmarcCheck {
    let mut out = outcome("Invalid", String::new());
    out.found_at = Some(name.to_string());
    let record = match records {
        [one] => (*one).clone(),
        many => {
            out.record = Some(
                many.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
            out.message = format!(
                "{name} holds {} DMARC records; receivers ignore them all (RFC 7489 §6.6.3): keep one",
                many.len()
            );
            return out;
        }
    };
    out.record = Some(record.clone());
    let parsed = match Dmarc::parse(record.as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            out.message = format!("the DMARC record at {name} does not parse: {e}");
            return out;
        }
    };
    out.result = "Found".into();
    out.policy = Some(policy(&parsed.p).into());
    // sp= absent: subdomains follow p= (RFC 7489 §6.3).
    let has_sp = record.split(';').any(|t| {
        t.split_once('=')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("sp"))
    });
    out.subdomain_policy = Some(policy(if has_sp { &parsed.sp } else { &parsed.p }).into());
    out.pct = Some(pct(&record).unwrap_or(100));
    out.adkim = Some(alignment(&parsed.adkim).into());
    out.aspf = Some(alignment(&parsed.aspf).into());
    let inherited = if name == format!("_dmarc.{domain}") {
        String::new()
    } else {
        format!(" (inherited from {name})")
    };
    out.message = format!(
        "DMARC p={}{} for {domain}{inherited}",
        policy(&parsed.p),
        match out.pct {
            Some(100) | None => String::new(),
            Some(n) => format!(" pct={n}"),
        }
    );
    out
}

/// Find and judge the record that applies to `domain`.
pub async fn check(r: &TokioResolver, domain: &str) -> DmarcCheck {
    for candidate in candidates(domain) {
        let name = format!("_dmarc.{candidate}");
        match dns::txt(r, &name).await {
            Err(Miss::NotFound) => continue,
            Err(Miss::Temporary(e)) => return outcome("TempError", format!("{name}: {e}")),
            Ok(txt) => {
                let records: Vec<&String> = txt.iter().filter(|t| is_dmarc(t)).collect();
                if records.is_empty() {
                    continue;
                }
                return judge(domain, &name, &records);
            }
        }
    }
    outcome(
        "Missing",
        format!(
            "no DMARC record at _dmarc.{domain} nor at a parent domain: publish \"v=DMARC1; p=none; rua=mailto:...\" and tighten to quarantine/reject once reports are clean"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_asks_the_name_then_at_most_seven_labels_down_to_two() {
        assert_eq!(
            candidates("a.example.com"),
            ["a.example.com", "example.com"]
        );
        assert_eq!(candidates("example.com"), ["example.com"]);
        let deep = "a.b.c.d.e.f.g.h.i.example.com";
        let c = candidates(deep);
        assert_eq!(c.first().map(String::as_str), Some(deep));
        assert_eq!(c.get(1).map(String::as_str), Some("e.f.g.h.i.example.com"));
        assert_eq!(c.last().map(String::as_str), Some("example.com"));
        assert!(c.iter().all(|n| n.contains('.')), "never the TLD: {c:?}");
    }

    #[test]
    fn an_inherited_record_applies_its_subdomain_policy() {
        use crate::deliverability::verdict::domain_condition;
        let rec = "v=DMARC1; p=reject; sp=none".to_string();
        let mut d = crate::api::DomainDeliverability {
            domain: "mail.example.test".into(),
            ..Default::default()
        };
        d.spf.result = "pass".into();
        d.mx.result = "Found".into();
        d.dmarc = judge("mail.example.test", "_dmarc.example.test", &[&rec]);
        assert_eq!(d.dmarc.subdomain_policy.as_deref(), Some("none"));
        assert_eq!(domain_condition(&d).reason, "DmarcPolicyNone");
        // Without sp=, subdomains follow p=.
        let rec = "v=DMARC1; p=reject".to_string();
        d.dmarc = judge("mail.example.test", "_dmarc.example.test", &[&rec]);
        assert_eq!(d.dmarc.subdomain_policy.as_deref(), Some("reject"));
        assert_eq!(domain_condition(&d).reason, "Authenticated");
    }
}
