//! Metrics read from the shared caches at scrape time (readiness, certificate
//! expiry, identities by confirmation state) and recorded per verification (the
//! per-relay step histograms). Deleted objects take their series with them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::Store;

use super::RelayKind;
use crate::api::{ConditionStatus, SenderIdentity};
use crate::metrics::{Metrics, RelayLabels};
use crate::relay;

/// Ready counts, last verification times, readiness and certificate expiry of one
/// relay kind, from its cache; returns the relays seen.
pub(super) fn observe_relays<K: RelayKind>(
    kind: &str,
    store: &Store<K>,
    metrics: &Metrics,
) -> BTreeSet<RelayLabels> {
    let (mut ready, mut not_ready) = (0i64, 0i64);
    let mut live = BTreeSet::new();
    for relay in store.state() {
        let status = relay.relay_status();
        let is_ready = status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == relay::types::READY && c.status == ConditionStatus::True)
        });
        if is_ready {
            ready += 1;
        } else {
            not_ready += 1;
        }
        let ns = relay.namespace().unwrap_or_default();
        let name = relay.name_any();
        if let Some(t) = status
            .and_then(|s| s.last_verification.as_ref())
            .and_then(|l| l.time.parse::<jiff::Timestamp>().ok())
        {
            metrics.set_last_verification(kind, &ns, &name, t.as_second());
        }
        let expiry = status
            .and_then(|s| s.server.as_ref())
            .and_then(|s| s.certificate_not_after.as_deref())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second());
        let labels = RelayLabels::new(kind, &ns, &name);
        metrics.set_relay(&labels, is_ready, expiry);
        if let Some(b) = status.and_then(|s| s.blocklist.as_ref()) {
            for zone in &b.zones {
                let listed = b.listings.iter().any(|l| &l.zone == zone);
                metrics.set_dnsbl(&labels, zone, listed);
            }
        }
        live.insert(labels);
    }
    metrics.set_relay_counts(kind, ready, not_ready);
    live
}

/// Identities per namespace and confirmation state, from the cache.
pub(super) fn observe_identities(store: &Store<SenderIdentity>, metrics: &Metrics) {
    let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
    for identity in store.state() {
        let state = identity
            .status
            .as_ref()
            .and_then(|s| s.confirmation.as_ref())
            .map(|c| format!("{:?}", c.state))
            .unwrap_or_else(|| "Unknown".into());
        *counts
            .entry((identity.namespace().unwrap_or_default(), state))
            .or_insert(0) += 1;
        if let Some(d) = identity
            .status
            .as_ref()
            .and_then(|s| s.deliverability.as_ref())
        {
            record_domain(metrics, d);
        }
    }
    for ((namespace, state), n) in counts {
        metrics.set_identities(&namespace, &state, n);
    }
}

/// One identity's domain results, counted by domain, check and result.
fn record_domain(metrics: &Metrics, d: &crate::api::DomainDeliverability) {
    let domain = d.domain.as_str();
    metrics.add_domain_check(domain, "mx", &d.mx.result);
    metrics.add_domain_check(domain, "spf", &d.spf.result);
    metrics.add_domain_check(domain, "dmarc", &d.dmarc.result);
    for k in &d.dkim {
        metrics.add_domain_check(domain, "dkim", &k.result);
    }
    let j = crate::deliverability::verdict::domain_condition_kept(d);
    metrics.add_domain_check(domain, "authenticated", j.reason);
}

/// The phases a relay is judged by, per relay: connect (DNS and TCP), tls (STARTTLS
/// or the implicit handshake), ehlo (greeting and EHLO), auth, and transaction (MAIL,
/// RCPT, DATA). QUIT is not the relay's answer time. The fleet-wide histogram keeps
/// every step; per relay, five phases keep the series per relay low.
pub fn phase(step: crate::smtp::Step) -> Option<&'static str> {
    use crate::smtp::Step;
    match step {
        Step::Dns | Step::Connect => Some("connect"),
        Step::StartTls | Step::Tls => Some("tls"),
        Step::Greeting | Step::Ehlo => Some("ehlo"),
        Step::Auth => Some("auth"),
        Step::Mail | Step::Rcpt | Step::Data => Some("transaction"),
        Step::Quit => None,
    }
}

/// Per-relay phase histograms of one verification session.
pub(super) fn record_steps(
    metrics: &Metrics,
    relay: &relay::RelayRef<'_>,
    outcome: &crate::smtp::Outcome,
) {
    let mut steps: BTreeMap<String, Duration> = BTreeMap::new();
    for (step, d) in &outcome.steps {
        if let Some(p) = phase(*step) {
            *steps.entry(p.to_string()).or_default() += *d;
        }
    }
    let labels = RelayLabels::new(relay.kind, relay.namespace.unwrap_or(""), relay.name);
    metrics.verified_relay(&labels, &steps, outcome.total);
}

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector, watcher};
    use serde_json::json;

    use super::super::Stores;
    use super::*;
    use crate::api::{ClusterSmtpRelay, SmtpRelay};

    fn relay(name: &str, ready: &str) -> SmtpRelay {
        serde_json::from_value(json!({
            "apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"host": "127.0.0.1", "defaultSender": {"address": "a@example.test"}},
            "status": {
                "conditions": [{"type": "Ready", "status": ready, "reason": "Verified",
                                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "server": {"certificateNotAfter": "2027-01-15T08:00:00Z"}}}))
        .expect("relay")
    }

    fn identity(name: &str, state: Option<&str>) -> SenderIdentity {
        let status =
            state.map(|s| json!({"confirmation": {"state": s, "address": "a@example.test"}}));
        serde_json::from_value(json!({
            "apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"address": "a@example.test"}, "status": status}))
        .expect("identity")
    }

    #[test]
    fn gauges_follow_the_caches_and_deleted_relays_lose_their_histograms() {
        let (relays, mut relay_writer) = reflector::store::<SmtpRelay>();
        let (cluster_relays, _) = reflector::store::<ClusterSmtpRelay>();
        let (identities, mut identity_writer) = reflector::store::<SenderIdentity>();
        let (up, down) = (relay("up", "True"), relay("down", "False"));
        relay_writer.apply_watcher_event(&watcher::Event::Apply(up));
        relay_writer.apply_watcher_event(&watcher::Event::Apply(down.clone()));
        for (name, state) in [
            ("a", Some("Pending")),
            ("b", Some("Pending")),
            ("c", Some("Expired")),
            ("d", None),
        ] {
            identity_writer.apply_watcher_event(&watcher::Event::Apply(identity(name, state)));
        }
        let stores = Stores {
            relays,
            cluster_relays,
            identities,
        };
        let metrics = Metrics::new();
        let steps = BTreeMap::from([("connect".to_string(), Duration::from_millis(1))]);
        for name in ["up", "down"] {
            let labels = RelayLabels::new("SmtpRelay", "team", name);
            metrics.verified_relay(&labels, &steps, Duration::from_millis(2));
        }
        stores.refresh(&metrics);
        let text = metrics.render();
        for line in [
            "smtp_relay_relay_ready{kind=\"SmtpRelay\",namespace=\"team\",name=\"up\"} 1",
            "smtp_relay_relay_ready{kind=\"SmtpRelay\",namespace=\"team\",name=\"down\"} 0",
            "smtp_relay_certificate_expiry_timestamp_seconds{kind=\"SmtpRelay\",namespace=\"team\",name=\"up\"} 1800000000",
            "smtp_relay_identities{namespace=\"team\",state=\"Pending\"} 2",
            "smtp_relay_identities{namespace=\"team\",state=\"Expired\"} 1",
            "smtp_relay_identities{namespace=\"team\",state=\"Unknown\"} 1",
            "smtp_relay_verification_duration_seconds_count{kind=\"SmtpRelay\",namespace=\"team\",name=\"down\",step=\"total\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        relay_writer.apply_watcher_event(&watcher::Event::Delete(down));
        stores.refresh(&metrics);
        let text = metrics.render();
        assert!(!text.contains("name=\"down\""), "{text}");
        assert!(
            text.contains("smtp_relay_verification_duration_seconds_count{kind=\"SmtpRelay\",namespace=\"team\",name=\"up\",step=\"connect\"} 1"),
            "{text}"
        );
    }
}

#[cfg(test)]
mod deliverability_tests {
    use super::*;
    use crate::api::{BlocklistEntry, BlocklistStatus, SmtpRelay, SmtpRelayStatus};
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;

    fn object<K: serde::de::DeserializeOwned>(v: serde_json::Value) -> K {
        serde_json::from_value(v).expect("object")
    }

    #[test]
    fn blocklists_and_domain_checks_come_from_the_caches_and_leave_with_their_objects() {
        let mut relay: SmtpRelay = object(serde_json::json!({
            "apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
            "metadata": {"name": "corp", "namespace": "team"},
            "spec": {"host": "127.0.0.1", "defaultSender": {"address": "a@good.test"}}
        }));
        relay.status = Some(SmtpRelayStatus {
            blocklist: Some(BlocklistStatus {
                zones: vec!["bl.test".into(), "other.test".into()],
                listings: vec![BlocklistEntry {
                    address: "127.0.0.2".into(),
                    zone: "bl.test".into(),
                    code: Some("127.0.0.2".into()),
                    reason: String::new(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut identity: SenderIdentity = object(serde_json::json!({
            "apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
            "metadata": {"name": "sales", "namespace": "team"},
            "spec": {"address": "sales@good.test"}
        }));
        let mut d = crate::api::DomainDeliverability {
            domain: "good.test".into(),
            ..Default::default()
        };
        d.mx.result = "Found".into();
        d.spf.result = "softfail".into();
        d.dmarc.result = "Found".into();
        d.dmarc.policy = Some("reject".into());
        identity.status = Some(crate::api::SenderIdentityStatus {
            deliverability: Some(Box::new(d)),
            ..Default::default()
        });
        let mut relays: Writer<SmtpRelay> = Default::default();
        relays.apply_watcher_event(&watcher::Event::Apply(relay.clone()));
        let mut identities: Writer<SenderIdentity> = Default::default();
        identities.apply_watcher_event(&watcher::Event::Apply(identity.clone()));
        let metrics = Metrics::new();
        observe_relays("SmtpRelay", &relays.as_reader(), &metrics);
        observe_identities(&identities.as_reader(), &metrics);
        let text = metrics.render();
        for line in [
            "smtp_relay_dnsbl_listed{kind=\"SmtpRelay\",namespace=\"team\",name=\"corp\",zone=\"bl.test\"} 1",
            "smtp_relay_dnsbl_listed{kind=\"SmtpRelay\",namespace=\"team\",name=\"corp\",zone=\"other.test\"} 0",
            "smtp_relay_domain_check{domain=\"good.test\",check=\"spf\",result=\"softfail\"} 1",
            "smtp_relay_domain_check{domain=\"good.test\",check=\"authenticated\",result=\"SpfNotAuthorizingRelay\"} 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // Deleted objects take their series with them at the next scrape.
        relays.apply_watcher_event(&watcher::Event::Delete(relay));
        identities.apply_watcher_event(&watcher::Event::Delete(identity));
        metrics.clear_object_gauges();
        observe_relays("SmtpRelay", &relays.as_reader(), &metrics);
        observe_identities(&identities.as_reader(), &metrics);
        let text = metrics.render();
        assert!(!text.contains("smtp_relay_dnsbl_listed{"), "{text}");
        assert!(!text.contains("smtp_relay_domain_check{"), "{text}");
    }
}

#[cfg(test)]
mod phase_tests {
    use super::phase;
    use crate::smtp::Step;

    #[test]
    fn every_step_but_quit_belongs_to_one_of_five_phases() {
        let phases: std::collections::BTreeSet<&str> =
            Step::ALL.iter().filter_map(|s| phase(*s)).collect();
        assert_eq!(
            phases.into_iter().collect::<Vec<_>>(),
            ["auth", "connect", "ehlo", "tls", "transaction"]
        );
        assert_eq!(phase(Step::Quit), None);
        assert_eq!(phase(Step::Rcpt), Some("transaction"));
    }
}
