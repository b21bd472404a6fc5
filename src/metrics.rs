//! Prometheus metrics. Labels are bounded: kinds, steps, reasons and relay names —
//! never addresses, hosts or message ids.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: String,
    /// ok or error
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub kind: String,
    /// Ready reason (Verified, AuthRejected, ...): a fixed set.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    pub kind: String,
    pub ready: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// link (the endpoint) or code (the annotation).
    pub channel: String,
    /// A fixed set: Mismatch, Expired, NoAttempt, AlreadyConfirmed, RateLimited,
    /// CrossSite, Malformed, TooManyConnections.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct RelayLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl RelayLabels {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        RelayLabels {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// One relay and one step of its verification (dns ... quit, or total).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RelayStepLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdentityLabels {
    pub namespace: String,
    /// Pending, Confirmed, Expired, NotRequired, or Unknown (no status yet).
    pub state: String,
}

/// Buckets of the per-relay step histograms: fewer than the fleet-wide ones, since
/// there is one histogram per relay and step (0.5 ms to 30 s).
const RELAY_STEP_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The folder the round-trip probe found the test message in.
    pub folder: String,
}

/// A relay's sending addresses in one DNS blocklist zone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsblLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// One of the operator's --dnsbl-zones.
    pub zone: String,
}

/// Sender domains by check and result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DomainCheckLabels {
    pub domain: String,
    /// mx, spf, dkim, dmarc or authenticated (the DomainAuthenticated reason).
    pub check: String,
    /// The check's result (a fixed set per check: pass, fail, ... / Found, NoMx, ...).
    pub result: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub verifications: Family<OutcomeLabels, Counter>,
    pub step_duration: Family<StepLabels, Histogram>,
    pub relays: Family<ReadyLabels, Gauge>,
    pub last_verification: Family<RelayLabels, Gauge>,
    pub relay_step_duration: Family<RelayStepLabels, Histogram>,
    /// The steps recorded per relay, to remove a deleted relay's histograms.
    relay_steps: Mutex<BTreeMap<RelayLabels, BTreeSet<String>>>,
    pub relay_ready: Family<RelayLabels, Gauge>,
    pub certificate_expiry: Family<RelayLabels, Gauge>,
    pub identities: Family<IdentityLabels, Gauge>,
    pub confirmation_mails_sent: Counter,
    pub confirmations_completed: Counter,
    pub confirmation_refusals: Family<RefusalLabels, Counter>,
    pub leader: Gauge,
    pub delivery_latency: Family<DeliveryLabels, Histogram>,
    /// The folders recorded per relay, to remove a deleted relay's delivery series.
    delivery_folders: Mutex<BTreeMap<RelayLabels, BTreeSet<String>>>,
    pub dnsbl_listed: Family<DnsblLabels, Gauge>,
    pub domain_checks: Family<DomainCheckLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("smtp_relay");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by kind and result",
            reconciles.clone(),
        );
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by kind",
            reconcile_duration.clone(),
        );
        let verifications = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "verifications",
            "Verification sessions by kind and Ready reason",
            verifications.clone(),
        );
        let step_duration = Family::<StepLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0002, 2.0, 18))
        });
        registry.register(
            "verification_step_duration_seconds",
            "Duration of each SMTP verification step",
            step_duration.clone(),
        );
        let relays = Family::<ReadyLabels, Gauge>::default();
        registry.register("relays", "Relays by kind and readiness", relays.clone());
        let last_verification = Family::<RelayLabels, Gauge>::default();
        registry.register(
            "last_verification_timestamp_seconds",
            "Unix time of each relay's last verification",
            last_verification.clone(),
        );
        let relay_step_duration =
            Family::<RelayStepLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(RELAY_STEP_BUCKETS)
            });
        registry.register(
            "verification_duration_seconds",
            "Duration of each verification step per relay (step total: the whole session)",
            relay_step_duration.clone(),
        );
        let relay_ready = Family::<RelayLabels, Gauge>::default();
        registry.register(
            "relay_ready",
            "1 when the relay's Ready condition is True, else 0",
            relay_ready.clone(),
        );
        let certificate_expiry = Family::<RelayLabels, Gauge>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "Unix time at which the relay's TLS certificate expires (notAfter)",
            certificate_expiry.clone(),
        );
        let identities = Family::<IdentityLabels, Gauge>::default();
        registry.register(
            "identities",
            "SenderIdentities by namespace and confirmation state",
            identities.clone(),
        );
        let confirmation_mails_sent = Counter::default();
        registry.register(
            "confirmation_mails_sent",
            "Confirmation mails sent to sender addresses",
            confirmation_mails_sent.clone(),
        );
        let confirmations_completed = Counter::default();
        registry.register(
            "confirmations_completed",
            "Sender addresses confirmed by their owner",
            confirmations_completed.clone(),
        );
        let confirmation_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "confirmation_refusals",
            "Confirmation links and codes refused, by channel and reason",
            confirmation_refusals.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 when this replica holds the leader lease",
            leader.clone(),
        );
        let delivery_latency = Family::<DeliveryLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.1, 2.0, 14))
        });
        registry.register(
            "delivery_latency_seconds",
            "Round-trip probe: from the relay accepting DATA to the test message in the mailbox",
            delivery_latency.clone(),
        );
        let dnsbl_listed = Family::<DnsblLabels, Gauge>::default();
        registry.register(
            "dnsbl_listed",
            "1 when one of the relay's sending addresses is listed in the zone, else 0",
            dnsbl_listed.clone(),
        );
        let domain_checks = Family::<DomainCheckLabels, Gauge>::default();
        registry.register(
            "domain_check",
            "SenderIdentities whose domain check gave this result",
            domain_checks.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            reconciles,
            reconcile_duration,
            verifications,
            step_duration,
            relays,
            last_verification,
            relay_step_duration,
            relay_steps: Mutex::new(BTreeMap::new()),
            relay_ready,
            certificate_expiry,
            identities,
            confirmation_mails_sent,
            confirmations_completed,
            confirmation_refusals,
            leader,
            delivery_latency,
            delivery_folders: Mutex::new(BTreeMap::new()),
            dnsbl_listed,
            domain_checks,
        }
    }

    /// A round-trip probe found the test message in `folder` after `seconds`.
    pub fn delivered(&self, kind: &str, namespace: &str, name: &str, folder: &str, seconds: f64) {
        self.delivery_folders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(RelayLabels::new(kind, namespace, name))
            .or_default()
            .insert(folder.to_string());
        self.delivery_latency
            .get_or_create(&DeliveryLabels {
                kind: kind.into(),
                namespace: namespace.into(),
                name: name.into(),
                folder: folder.into(),
            })
            .observe(seconds);
    }

    /// Count a refused confirmation attempt.
    pub fn refused(&self, channel: &str, reason: &str) {
        self.confirmation_refusals
            .get_or_create(&RefusalLabels {
                channel: channel.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Record one reconcile.
    pub fn reconciled(&self, kind: &str, ok: bool, took: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(took.as_secs_f64());
    }

    /// Record one verification session and its steps.
    pub fn verified(&self, kind: &str, reason: &str, outcome: Option<&crate::smtp::Outcome>) {
        self.verifications
            .get_or_create(&OutcomeLabels {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
        if let Some(o) = outcome {
            for (step, d) in &o.steps {
                self.step_duration
                    .get_or_create(&StepLabels {
                        step: step.as_str().into(),
                    })
                    .observe(d.as_secs_f64());
            }
        }
    }

    /// Record one relay's verification steps (a step done twice counts once, with
    /// both durations added, as in status) and the whole session as step `total`.
    pub fn verified_relay(
        &self,
        relay: &RelayLabels,
        steps: &BTreeMap<String, Duration>,
        total: Duration,
    ) {
        let mut known = self.relay_steps.lock().unwrap_or_else(|e| e.into_inner());
        let recorded = known.entry(relay.clone()).or_default();
        for (step, d) in steps.iter().chain([(&"total".to_string(), &total)]) {
            self.relay_step_duration
                .get_or_create(&RelayStepLabels {
                    kind: relay.kind.clone(),
                    namespace: relay.namespace.clone(),
                    name: relay.name.clone(),
                    step: step.clone(),
                })
                .observe(d.as_secs_f64());
            recorded.insert(step.clone());
        }
    }

    /// Remove the step histograms of relays that no longer exist.
    pub fn retain_relays(&self, live: &BTreeSet<RelayLabels>) {
        let mut known = self.relay_steps.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|relay, steps| {
            if live.contains(relay) {
                return true;
            }
            for step in steps.iter() {
                self.relay_step_duration.remove(&RelayStepLabels {
                    kind: relay.kind.clone(),
                    namespace: relay.namespace.clone(),
                    name: relay.name.clone(),
                    step: step.clone(),
                });
            }
            false
        });
        let mut delivered = self
            .delivery_folders
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        delivered.retain(|relay, folders| {
            if live.contains(relay) {
                return true;
            }
            for folder in folders.iter() {
                self.delivery_latency.remove(&DeliveryLabels {
                    kind: relay.kind.clone(),
                    namespace: relay.namespace.clone(),
                    name: relay.name.clone(),
                    folder: folder.clone(),
                });
            }
            false
        });
    }

    /// Forget the per-relay and per-identity gauges (before setting them again from
    /// the caches, so deleted objects disappear).
    pub fn clear_object_gauges(&self) {
        self.relay_ready.clear();
        self.certificate_expiry.clear();
        self.identities.clear();
        self.dnsbl_listed.clear();
        self.domain_checks.clear();
    }

    /// Whether a relay's addresses are listed in a zone.
    pub fn set_dnsbl(&self, relay: &RelayLabels, zone: &str, listed: bool) {
        self.dnsbl_listed
            .get_or_create(&DnsblLabels {
                kind: relay.kind.clone(),
                namespace: relay.namespace.clone(),
                name: relay.name.clone(),
                zone: zone.into(),
            })
            .set(i64::from(listed));
    }

    /// Count one identity's domain check result.
    pub fn add_domain_check(&self, domain: &str, check: &str, result: &str) {
        self.domain_checks
            .get_or_create(&DomainCheckLabels {
                domain: domain.into(),
                check: check.into(),
                result: result.into(),
            })
            .inc();
    }

    /// A relay's readiness and, when known, its certificate's expiry (Unix seconds).
    pub fn set_relay(&self, relay: &RelayLabels, ready: bool, certificate_expiry: Option<i64>) {
        self.relay_ready.get_or_create(relay).set(i64::from(ready));
        if let Some(t) = certificate_expiry {
            self.certificate_expiry.get_or_create(relay).set(t);
        }
    }

    /// How many identities of a namespace are in a confirmation state.
    pub fn set_identities(&self, namespace: &str, state: &str, n: i64) {
        self.identities
            .get_or_create(&IdentityLabels {
                namespace: namespace.into(),
                state: state.into(),
            })
            .set(n);
    }

    /// Forget the per-relay series (before setting them again from the caches, so
    /// deleted relays disappear).
    pub fn clear_last_verifications(&self) {
        self.last_verification.clear();
    }

    /// A relay's last verification time (Unix seconds).
    pub fn set_last_verification(&self, kind: &str, namespace: &str, name: &str, unix: i64) {
        self.last_verification
            .get_or_create(&RelayLabels {
                kind: kind.into(),
                namespace: namespace.into(),
                name: name.into(),
            })
            .set(unix);
    }

    /// Set the readiness gauges from the current set of relays.
    pub fn set_relay_counts(&self, kind: &str, ready: i64, not_ready: i64) {
        for (label, n) in [("true", ready), ("false", not_ready)] {
            self.relays
                .get_or_create(&ReadyLabels {
                    kind: kind.into(),
                    ready: label.into(),
                })
                .set(n);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.render_into(&mut out).is_err() {
            out.clear();
        }
        out
    }

    /// The OpenMetrics text exposition, written piece by piece into `out` (with
    /// thousands of relays it is tens of megabytes: /metrics streams it).
    pub fn render_into(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        encode(out, &registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_bounded_labels() {
        let m = Metrics::new();
        m.reconciled("SmtpRelay", true, Duration::from_millis(3));
        m.verified("SmtpRelay", "Verified", None);
        m.set_last_verification("SmtpRelay", "team", "corporate", 1_700_000_000);
        m.set_relay_counts("SmtpRelay", 3, 1);
        m.confirmation_mails_sent.inc();
        let text = m.render();
        assert!(
            text.contains("smtp_relay_reconciles_total{kind=\"SmtpRelay\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("smtp_relay_relays{kind=\"SmtpRelay\",ready=\"true\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "smtp_relay_verifications_total{kind=\"SmtpRelay\",reason=\"Verified\"} 1"
            )
        );
        assert!(text.contains("smtp_relay_confirmation_mails_sent_total 1"));
        assert!(text.contains("# EOF"));
        m.delivered("SmtpRelay", "team", "probed", "INBOX", 1.5);
        let text = m.render();
        assert!(
            text.contains("smtp_relay_delivery_latency_seconds_count{kind=\"SmtpRelay\",namespace=\"team\",name=\"probed\",folder=\"INBOX\"} 1"),
            "{text}"
        );
        assert!(text.contains("name=\"corporate\""), "{text}");
        m.clear_last_verifications();
        assert!(
            !m.render().contains("name=\"corporate\""),
            "deleted relays disappear"
        );
    }

    #[test]
    fn per_relay_histograms_go_with_their_relay() {
        let m = Metrics::new();
        let corporate = RelayLabels::new("SmtpRelay", "team", "corporate");
        let other = RelayLabels::new("ClusterSmtpRelay", "", "shared");
        let steps = BTreeMap::from([
            ("connect".to_string(), Duration::from_micros(300)),
            ("ehlo".to_string(), Duration::from_millis(2)),
        ]);
        m.verified_relay(&corporate, &steps, Duration::from_millis(3));
        m.verified_relay(&other, &steps, Duration::from_millis(3));
        m.delivered("SmtpRelay", "team", "corporate", "INBOX", 0.5);
        m.delivered("ClusterSmtpRelay", "", "shared", "Junk", 0.5);
        let text = m.render();
        assert!(
            text.contains("smtp_relay_delivery_latency_seconds_count{kind=\"SmtpRelay\",namespace=\"team\",name=\"corporate\",folder=\"INBOX\"} 1"),
            "{text}"
        );
        let bucket = "smtp_relay_verification_duration_seconds_bucket{le=\"0.0005\",kind=\"SmtpRelay\",namespace=\"team\",name=\"corporate\",step=\"connect\"} 1";
        assert!(text.contains(bucket), "{text}");
        assert!(
            text.contains("smtp_relay_verification_duration_seconds_count{kind=\"SmtpRelay\",namespace=\"team\",name=\"corporate\",step=\"total\"} 1"),
            "{text}"
        );
        m.retain_relays(&BTreeSet::from([other.clone()]));
        let text = m.render();
        assert!(!text.contains("name=\"corporate\""), "{text}");
        assert!(text.contains("name=\"shared\",step=\"ehlo\""), "{text}");
        assert!(text.contains("name=\"shared\",folder=\"Junk\""), "{text}");
    }

    #[test]
    fn readiness_certificates_and_identities_are_gauges_of_the_caches() {
        let m = Metrics::new();
        let relay = RelayLabels::new("SmtpRelay", "team", "corporate");
        m.set_relay(&relay, false, Some(1_800_000_000));
        m.set_identities("team", "Expired", 2);
        let text = m.render();
        for line in [
            "smtp_relay_relay_ready{kind=\"SmtpRelay\",namespace=\"team\",name=\"corporate\"} 0",
            "smtp_relay_certificate_expiry_timestamp_seconds{kind=\"SmtpRelay\",namespace=\"team\",name=\"corporate\"} 1800000000",
            "smtp_relay_identities{namespace=\"team\",state=\"Expired\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        m.clear_object_gauges();
        let text = m.render();
        assert!(
            !text.contains("corporate") && !text.contains("Expired"),
            "{text}"
        );
    }
}
