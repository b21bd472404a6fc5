//! SPF (RFC 7208) of a sender domain for the relay's sending addresses. The
//! evaluation is mail-auth's `check_host`; this module reads the record as published,
//! counts its DNS-querying terms and void lookups (which mail-auth does not report),
//! and words the result.

use std::net::IpAddr;

use futures::future::BoxFuture;
use hickory_resolver::TokioResolver;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::spf::{Macro, Mechanism, Spf};
use mail_auth::{MessageAuthenticator, Parameters, SpfResult, spf::verify::SpfParameters};

use super::dns::{self, Miss};
use crate::api::{AddressResult, SpfCheck};

/// Receivers stop after this many DNS-querying terms (§4.6.4).
pub const MAX_LOOKUPS: i32 = 10;
/// ... and after this many lookups that return nothing (§4.6.4).
pub const MAX_VOID_LOOKUPS: i32 = 2;

/// The v=spf1 records among a name's TXT records.
pub fn spf_records(txt: &[String]) -> Vec<&String> {
    txt.iter()
        .filter(|t| {
            let l = t.trim_start().to_ascii_lowercase();
            l == "v=spf1" || l.starts_with("v=spf1 ")
        })
        .collect()
}

#[derive(Default)]
struct Walk {
    lookups: i32,
    voids: i32,
}

fn literal(m: &Macro, current: &str) -> Option<String> {
    match m {
        Macro::None => Some(current.to_string()),
        Macro::Literal(bytes) => Some(String::from_utf8_lossy(bytes).trim_end_matches('.').into()),
        _ => None,
    }
}

/// Count the DNS-querying terms of `record` and of every include/redirect target
/// named literally (macro targets count once, unexpanded).
fn walk<'a>(
    r: &'a TokioResolver,
    domain: String,
    record: Spf,
    depth: u8,
    w: &'a mut Walk,
) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        // Receivers count a domain included twice twice; the depth bounds loops.
        if depth > 12 {
            return;
        }
        let mut follow = Vec::new();
        for d in record.directives.iter() {
            match &d.mechanism {
                Mechanism::Include { macro_string } => {
                    w.lookups += 1;
                    if let Some(t) = literal(macro_string, &domain) {
                        follow.push(t);
                    }
                }
                Mechanism::A { macro_string, .. } => {
                    w.lookups += 1;
                    if let Some(t) = literal(macro_string, &domain)
                        && dns::addresses(r, &t).await == Err(Miss::NotFound)
                    {
                        w.voids += 1;
                    }
                }
                Mechanism::Mx { macro_string, .. } => {
                    w.lookups += 1;
                    if let Some(t) = literal(macro_string, &domain)
                        && dns::mx(r, &t).await == Err(Miss::NotFound)
                    {
                        w.voids += 1;
                    }
                }
                Mechanism::Exists { macro_string } => {
                    w.lookups += 1;
                    if let Some(t) = literal(macro_string, &domain)
                        && dns::a(r, &t).await == Err(Miss::NotFound)
                    {
                        w.voids += 1;
                    }
                }
                Mechanism::Ptr { .. } => w.lookups += 1,
                Mechanism::All | Mechanism::Ip4 { .. } | Mechanism::Ip6 { .. } => {}
            }
        }
        if let Some(m) = &record.redirect {
            w.lookups += 1;
            if let Some(t) = literal(m, &domain) {
                follow.push(t);
            }
        }
        for target in follow {
            match dns::txt(r, &target).await {
                Ok(txt) => {
                    if let Some(text) = spf_records(&txt).first()
                        && let Ok(next) = Spf::parse(text.as_bytes())
                    {
                        walk(r, target, next, depth + 1, w).await;
                    }
                }
                Err(Miss::NotFound) => w.voids += 1,
                Err(Miss::Temporary(_)) => {}
            }
        }
    })
}

fn name(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

/// How bad a result is for the relay, worst last.
/// A definite refusal outranks a temporary error: one address failing is news even
/// when another could not be evaluated.
fn rank(result: &str) -> u8 {
    match result {
        "pass" => 0,
        "none" => 1,
        "temperror" => 2,
        "neutral" => 3,
        "softfail" => 4,
        "fail" => 5,
        _ => 6,
    }
}

fn check(result: &str, record: Option<String>, message: String) -> SpfCheck {
    SpfCheck {
        result: result.into(),
        record,
        message,
        ..Default::default()
    }
}

/// Evaluate the domain's SPF for every sending address.
pub async fn evaluate(
    auth: &MessageAuthenticator,
    domain: &str,
    sender: &str,
    helo: &str,
    addresses: &[IpAddr],
) -> SpfCheck {
    let r = &auth.0;
    let txt = match dns::txt(r, domain).await {
        Ok(t) => t,
        Err(Miss::NotFound) => Vec::new(),
        Err(Miss::Temporary(e)) => {
            return check(
                "temperror",
                None,
                format!("could not read the TXT records of {domain}: {e}"),
            );
        }
    };
    let records = spf_records(&txt);
    let text = match records.as_slice() {
        [] => {
            return check(
                "none",
                None,
                format!("{domain} publishes no SPF record (TXT \"v=spf1 ...\")"),
            );
        }
        [one] => (*one).clone(),
        many => {
            return check(
                "permerror",
                Some(
                    many.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" | "),
                ),
                format!(
                    "{domain} publishes {} SPF records; receivers treat that as permerror (RFC 7208 §4.5): merge them into one",
                    many.len()
                ),
            );
        }
    };
    let parsed = match Spf::parse(text.as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            return check(
                "permerror",
                Some(text),
                format!("the SPF record of {domain} does not parse: {e}"),
            );
        }
    };
    let mut w = Walk::default();
    walk(r, domain.to_string(), parsed, 0, &mut w).await;
    let mut results = Vec::new();
    for ip in addresses {
        let params = SpfParameters::new(*ip, domain, helo, helo, sender);
        let out = auth.check_host(Parameters::new(params)).await;
        results.push(AddressResult {
            address: ip.to_string(),
            result: name(out.result()).into(),
        });
    }
    let mut worst = results
        .iter()
        .map(|a| a.result.as_str())
        .max_by_key(|r| rank(r))
        .unwrap_or("none")
        .to_string();
    // The counts overrule the evaluation only where receivers meet them: past 10
    // terms check_host itself gives permerror; void lookups count when no term
    // matched before the end (fail, softfail, neutral: every term was evaluated).
    let evaluated_all = matches!(worst.as_str(), "fail" | "softfail" | "neutral");
    let message = if w.lookups > MAX_LOOKUPS && worst == "permerror" {
        worst = "permerror".into();
        format!(
            "the SPF record of {domain} needs {} DNS-querying terms through its includes (receivers stop at {MAX_LOOKUPS}, RFC 7208 §4.6.4): flatten includes or replace them with ip4/ip6",
            w.lookups
        )
    } else if w.voids > MAX_VOID_LOOKUPS && evaluated_all {
        worst = "permerror".into();
        format!(
            "the SPF record of {domain} has {} lookups that return nothing (receivers stop at {MAX_VOID_LOOKUPS}, RFC 7208 §4.6.4): remove the terms naming missing hosts",
            w.voids
        )
    } else {
        let per: Vec<String> = results
            .iter()
            .map(|a| format!("{} {}", a.address, a.result))
            .collect();
        match worst.as_str() {
            "pass" => format!("SPF of {domain} authorizes the relay ({})", per.join(", ")),
            "permerror" => format!(
                "SPF of {domain} is broken: {} (an include or redirect names a domain without SPF, or a term is invalid)",
                per.join(", ")
            ),
            "temperror" => format!("SPF of {domain} could not be evaluated: {}", per.join(", ")),
            _ => format!(
                "SPF of {domain} does not authorize the relay: {}; add ip4:/ip6: terms (or an include of the provider's record) for the relay's sending addresses",
                per.join(", ")
            ),
        }
    };
    SpfCheck {
        result: worst,
        record: Some(text),
        lookups: w.lookups,
        void_lookups: w.voids,
        addresses: results,
        message,
    }
}
