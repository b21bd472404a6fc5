//! `verify` on SenderIdentities and on relays' blocklist answers: the same DNS checks
//! and the same conditions the operator writes, printed check by check.

use serde::Serialize;

use super::{FileRelay, Verdict};
use crate::api::{
    Condition, ConditionStatus, DomainDeliverability, RelayKindRef, SenderIdentitySpec,
    identity_conditions,
};
use crate::deliverability::{Checker, DomainQuery, verdict};

/// A SenderIdentity read from a file.
#[derive(Clone, Debug)]
pub struct FileIdentity {
    pub namespace: String,
    pub name: String,
    pub spec: SenderIdentitySpec,
    pub origin: String,
}

/// One identity's domain, as the operator would report it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityVerdict {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub source: String,
    pub address: String,
    /// The relay the identity uses, as found in the files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// DomainAuthenticated (absent when the domain was not checked).
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliverability: Option<DomainDeliverability>,
    /// spec.deliverability.enforce: a failure fails `verify`.
    #[serde(skip)]
    pub enforce: bool,
}

impl IdentityVerdict {
    /// False only when enforce is set and the domain is not authenticated.
    pub fn acceptable(&self) -> bool {
        // Not checked (checks off, relay not in the files): nothing to hold against it.
        !self.enforce
            || self.conditions.is_empty()
            || self.conditions.iter().any(|c| {
                c.type_ == identity_conditions::DOMAIN_AUTHENTICATED
                    && c.status == ConditionStatus::True
            })
    }
}

/// The relay an identity names, among the files' relays.
fn relay_of<'a>(i: &FileIdentity, relays: &'a [FileRelay]) -> Option<&'a FileRelay> {
    match &i.spec.relay_ref {
        Some(r) if r.kind == RelayKindRef::SmtpRelay => relays.iter().find(|f| {
            f.kind == "SmtpRelay"
                && f.name == r.name
                && f.namespace.as_deref() == Some(&i.namespace)
        }),
        Some(r) => relays
            .iter()
            .find(|f| f.kind == "ClusterSmtpRelay" && f.name == r.name),
        None => relays
            .iter()
            .find(|f| f.kind == "ClusterSmtpRelay" && f.cluster_default),
    }
}

fn label(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Check every identity's domain (concurrently; the checker shares lookups).
pub async fn check_identities(
    identities: Vec<FileIdentity>,
    relays: &[FileRelay],
    checker: Option<&Checker>,
) -> Vec<IdentityVerdict> {
    let now = jiff::Timestamp::now();
    let jobs = identities.into_iter().map(|i| async move {
        let relay = relay_of(&i, relays);
        let mut v = IdentityVerdict {
            kind: "SenderIdentity",
            namespace: i.namespace.clone(),
            name: i.name.clone(),
            source: i.origin.clone(),
            address: i.spec.address.clone(),
            relay: relay.map(|r| label(r.kind, r.namespace.as_deref(), &r.name)),
            conditions: Vec::new(),
            deliverability: None,
            enforce: i.spec.deliverability.enforce,
        };
        let (Some(checker), Some(relay)) = (checker, relay) else {
            return v;
        };
        let condition = |j: verdict::Judgement| Condition {
            type_: identity_conditions::DOMAIN_AUTHENTICATED.into(),
            status: j.status,
            last_transition_time: now.round(jiff::Unit::Second).unwrap_or(now).to_string(),
            reason: j.reason.into(),
            message: j.message,
            observed_generation: None,
        };
        let sending = match checker
            .sending_addresses(&relay.spec.deliverability, &relay.spec.host, false)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                v.conditions.push(condition(verdict::Judgement {
                    status: ConditionStatus::Unknown,
                    reason: crate::api::deliverability_reasons::RELAY_UNKNOWN,
                    message: format!(
                        "the relay's sending addresses are unknown ({}): set spec.deliverability.sendingAddresses on the relay",
                        match e {
                            crate::deliverability::Miss::NotFound => "its host does not resolve".into(),
                            crate::deliverability::Miss::Temporary(t) => t,
                        }
                    ),
                }));
                return v;
            }
        };
        let query = DomainQuery::for_identity(&i.spec, &relay.spec, sending);
        let d = (*checker.check_domain(&query).await).clone();
        v.conditions.push(condition(verdict::domain_condition(&d)));
        v.deliverability = Some(d);
        v
    });
    futures::future::join_all(jobs).await
}

fn line(out: &mut String, what: &str, result: &str, detail: &str) {
    out.push_str(&format!("  {what:<6} {result:<10} {detail}\n"));
}

/// The identities' checks, one block per identity, each check with the RFC result
/// and the record read.
pub fn render_identities(identities: &[IdentityVerdict]) -> String {
    let mut out = String::new();
    for v in identities {
        out.push_str(&format!(
            "\nSenderIdentity {}/{} <{}> via {}\n",
            v.namespace,
            v.name,
            v.address,
            v.relay
                .as_deref()
                .unwrap_or("(relay not in the files: domain not checked)")
        ));
        if let Some(d) = &v.deliverability {
            line(&mut out, "MX", &d.mx.result, &d.mx.records.join(", "));
            let spf = match &d.spf.record {
                Some(r) => format!(
                    "{r}  ({} lookups, {} void)",
                    d.spf.lookups, d.spf.void_lookups
                ),
                None => d.spf.message.clone(),
            };
            line(&mut out, "SPF", &d.spf.result, &spf);
            for a in &d.spf.addresses {
                line(&mut out, "", "", &format!("{} {}", a.address, a.result));
            }
            for k in &d.dkim {
                line(
                    &mut out,
                    "DKIM",
                    &k.result,
                    &format!(
                        "{}: {}{}",
                        k.selector,
                        k.message,
                        k.record
                            .as_deref()
                            .map(|r| format!("  ({r})"))
                            .unwrap_or_default()
                    ),
                );
            }
            let dmarc = match &d.dmarc.record {
                Some(r) => format!("{r}  (at {})", d.dmarc.found_at.as_deref().unwrap_or("?")),
                None => d.dmarc.message.clone(),
            };
            line(&mut out, "DMARC", &d.dmarc.result, &dmarc);
        }
        for c in &v.conditions {
            out.push_str(&format!(
                "  {}={:?} {}: {}\n",
                c.type_, c.status, c.reason, c.message
            ));
        }
    }
    out
}

/// The relays' blocklist answers, one line per relay that was looked up.
pub fn render_blocklists(verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    for v in verdicts {
        if let Some(c) = v.condition(crate::api::relay_conditions::NOT_LISTED) {
            out.push_str(&format!(
                "{}: NotListed={:?} {}: {}\n",
                label(v.kind, v.namespace.as_deref(), &v.name),
                c.status,
                c.reason,
                c.message
            ));
        }
    }
    out
}
