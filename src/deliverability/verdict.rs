//! What deliverability results mean (pure): the DomainAuthenticated and NotListed
//! conditions, when to check again, and keeping the last results through a
//! temporary DNS failure.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::deliverability_reasons as r;
use crate::api::{BlocklistStatus, ConditionStatus, DomainDeliverability, TemporaryFailure};

/// A condition to write: status, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub status: ConditionStatus,
    pub reason: &'static str,
    pub message: String,
}

fn judgement(status: ConditionStatus, reason: &'static str, message: String) -> Judgement {
    Judgement {
        status,
        reason,
        message,
    }
}

/// Whether the results hold a temporary failure somewhere.
pub fn has_temporary_failure(d: &DomainDeliverability) -> Option<String> {
    let mut parts = Vec::new();
    if d.mx.result == "TempError" {
        parts.push(d.mx.message.clone());
    }
    if d.spf.result == "temperror" {
        parts.push(d.spf.message.clone());
    }
    if d.dmarc.result == "TempError" {
        parts.push(d.dmarc.message.clone());
    }
    for k in &d.dkim {
        if k.result == "TempError" {
            parts.push(k.message.clone());
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// DomainAuthenticated: True when SPF passes for the relay and DMARC exists (with
/// warnings as the reason when DMARC is p=none or a DKIM key is weak); False with the
/// first problem as the reason and every problem in the message.
pub fn domain_condition(d: &DomainDeliverability) -> Judgement {
    let mut failures: Vec<(&'static str, String)> = Vec::new();
    let mut warnings: Vec<(&'static str, String)> = Vec::new();
    match d.spf.result.as_str() {
        "pass" => {}
        "none" => failures.push((r::SPF_MISSING, d.spf.message.clone())),
        "permerror"
            if d.spf.lookups > super::spf::MAX_LOOKUPS
                || d.spf.void_lookups > super::spf::MAX_VOID_LOOKUPS =>
        {
            failures.push((r::SPF_TOO_MANY_LOOKUPS, d.spf.message.clone()))
        }
        "permerror" => failures.push((r::SPF_PERM_ERROR, d.spf.message.clone())),
        "temperror" => {}
        _ => failures.push((r::SPF_NOT_AUTHORIZING_RELAY, d.spf.message.clone())),
    }
    // Inherited from a parent domain, the subdomain policy (sp, else p) applies.
    let inherited = d
        .dmarc
        .found_at
        .as_deref()
        .is_some_and(|at| at != format!("_dmarc.{}", d.domain));
    let effective = if inherited {
        d.dmarc
            .subdomain_policy
            .as_deref()
            .or(d.dmarc.policy.as_deref())
    } else {
        d.dmarc.policy.as_deref()
    };
    match d.dmarc.result.as_str() {
        "Found" if effective == Some("none") => warnings.push((
            r::DMARC_POLICY_NONE,
            format!(
                "{}: receivers only monitor; move to quarantine or reject once reports are clean",
                d.dmarc.message
            ),
        )),
        "Found" | "TempError" => {}
        "Missing" => failures.push((r::DMARC_MISSING, d.dmarc.message.clone())),
        _ => failures.push((r::DMARC_INVALID, d.dmarc.message.clone())),
    }
    match d.mx.result.as_str() {
        "NoMx" => failures.push((r::NO_MX, d.mx.message.clone())),
        "NullMx" => failures.push((r::NULL_MX, d.mx.message.clone())),
        _ => {}
    }
    // Missing keys first, then unusable ones, then keys too short to count.
    for (results, reason) in [
        (&["Missing"][..], r::DKIM_KEY_MISSING),
        (&["Invalid", "Revoked"][..], r::DKIM_KEY_INVALID),
        (&["TooWeak"][..], r::DKIM_KEY_WEAK),
    ] {
        for k in d
            .dkim
            .iter()
            .filter(|k| results.contains(&k.result.as_str()))
        {
            failures.push((reason, k.message.clone()));
        }
    }
    for k in d.dkim.iter().filter(|k| k.result == "Weak") {
        warnings.push((r::DKIM_KEY_WEAK, k.message.clone()));
    }
    let temporary = has_temporary_failure(d);
    if let Some((reason, _)) = failures.first() {
        let all: Vec<String> = failures.iter().map(|(_, m)| m.clone()).collect();
        return judgement(ConditionStatus::False, reason, all.join("; "));
    }
    if let Some(t) = temporary {
        return judgement(
            ConditionStatus::Unknown,
            r::DNS_TEMPORARY_FAILURE,
            format!("DNS failed temporarily, checking again soon: {t}"),
        );
    }
    if let Some((reason, _)) = warnings.first() {
        let all: Vec<String> = warnings.iter().map(|(_, m)| m.clone()).collect();
        return judgement(
            ConditionStatus::True,
            reason,
            format!("{}; {}", d.spf.message, all.join("; ")),
        );
    }
    judgement(
        ConditionStatus::True,
        r::AUTHENTICATED,
        format!("{}; {}", d.spf.message, d.dmarc.message),
    )
}

/// The results to keep: the fresh ones, unless they hold a temporary failure and
/// earlier results for the same inputs exist — then those, marked as kept.
pub fn keep_last(
    previous: Option<&DomainDeliverability>,
    fresh: DomainDeliverability,
    now: Timestamp,
) -> DomainDeliverability {
    match (has_temporary_failure(&fresh), previous) {
        (Some(why), Some(prev))
            if prev.inputs == fresh.inputs && has_temporary_failure(prev).is_none() =>
        {
            let mut kept = prev.clone();
            kept.temporary_failure = Some(TemporaryFailure {
                time: now.to_string(),
                message: why,
            });
            kept
        }
        _ => fresh,
    }
}

/// The condition for results that may have been kept through a failure.
pub fn domain_condition_kept(d: &DomainDeliverability) -> Judgement {
    let mut j = domain_condition(d);
    if let Some(t) = &d.temporary_failure {
        j.message = format!(
            "kept from {}: DNS failed temporarily at {} ({}). {}",
            d.checked_at, t.time, t.message, j.message
        );
    }
    j
}

/// Retry a temporary failure after this long (or the interval, if shorter).
pub const TEMPORARY_RETRY: Duration = Duration::from_secs(300);

/// When the domain is due for a check: None now, Some(wait) later.
pub fn domain_due(
    previous: Option<&DomainDeliverability>,
    inputs: &str,
    interval: Duration,
    now: Timestamp,
) -> Option<Duration> {
    let prev = previous?;
    if prev.inputs != inputs {
        return None;
    }
    let (since, wait) = match &prev.temporary_failure {
        Some(t) => (t.time.as_str(), interval.min(TEMPORARY_RETRY)),
        None if has_temporary_failure(prev).is_some() => {
            (prev.checked_at.as_str(), interval.min(TEMPORARY_RETRY))
        }
        None => (prev.checked_at.as_str(), interval),
    };
    let Ok(at) = since.parse::<Timestamp>() else {
        return None;
    };
    let elapsed = now.duration_since(at);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    wait.checked_sub(elapsed).filter(|w| !w.is_zero())
}

/// NotListed for a relay.
pub fn blocklist_condition(b: &BlocklistStatus) -> Judgement {
    if !b.listings.is_empty() {
        let all: Vec<String> = b
            .listings
            .iter()
            .map(|l| {
                format!(
                    "{} is listed in {} ({}{})",
                    l.address,
                    l.zone,
                    l.code.as_deref().unwrap_or("?"),
                    if l.reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", l.reason)
                    }
                )
            })
            .collect();
        return judgement(
            ConditionStatus::False,
            r::LISTED,
            format!(
                "{}. Receivers using these lists refuse or junk the relay's mail: ask the provider (or the list's delisting page) to remove it",
                all.join("; ")
            ),
        );
    }
    if b.addresses.is_empty() && b.unanswered.is_empty() {
        return judgement(
            ConditionStatus::Unknown,
            r::NO_SENDING_ADDRESSES,
            "the relay's sending addresses are unknown: set spec.deliverability.sendingAddresses or make spec.host resolve".into(),
        );
    }
    if !b.unanswered.is_empty() {
        let refused = b.unanswered.iter().any(|u| u.code.is_some());
        let all: Vec<String> = b
            .unanswered
            .iter()
            .map(|u| format!("{} for {}: {}", u.zone, u.address, u.reason))
            .collect();
        let reason = if refused {
            r::BLOCKLIST_QUERY_REFUSED
        } else {
            r::DNS_TEMPORARY_FAILURE
        };
        return judgement(
            ConditionStatus::Unknown,
            reason,
            format!("no usable answer from {} (not a listing)", all.join("; ")),
        );
    }
    judgement(
        ConditionStatus::True,
        r::NOT_LISTED,
        format!(
            "{} on none of {}",
            b.addresses.join(", "),
            b.zones.join(", ")
        ),
    )
}

/// The blocklist results to keep: when no zone answered at all this time (the DNS
/// server is down), the previous results for the same addresses, marked as kept.
pub fn keep_last_blocklist(
    previous: Option<&BlocklistStatus>,
    fresh: BlocklistStatus,
    now: Timestamp,
) -> BlocklistStatus {
    // No zone answered, or the relay's own addresses could not be resolved.
    let host_unresolved = fresh.addresses.is_empty();
    let nothing_answered = !fresh.unanswered.is_empty()
        && fresh.listings.is_empty()
        && fresh.unanswered.iter().all(|u| u.code.is_none())
        && (host_unresolved || fresh.unanswered.len() == fresh.addresses.len() * fresh.zones.len());
    match previous {
        Some(prev)
            if nothing_answered
                && (host_unresolved || prev.addresses == fresh.addresses)
                && prev.unanswered.is_empty() =>
        {
            let mut kept = prev.clone();
            kept.temporary_failure = Some(TemporaryFailure {
                time: now.to_string(),
                message: fresh
                    .unanswered
                    .first()
                    .map(|u| u.reason.clone())
                    .unwrap_or_default(),
            });
            kept
        }
        _ => fresh,
    }
}
