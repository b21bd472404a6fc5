//! Prometheus metrics. Labels are bounded: kinds, steps, reasons and relay names —
//! never addresses, hosts or message ids.

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RelayLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The folder the round-trip probe found the test message in.
    pub folder: String,
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
    pub confirmation_mails_sent: Counter,
    pub confirmations_completed: Counter,
    pub confirmation_refusals: Family<RefusalLabels, Counter>,
    pub leader: Gauge,
    pub delivery_latency: Family<DeliveryLabels, Histogram>,
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
        Metrics {
            registry: Mutex::new(registry),
            reconciles,
            reconcile_duration,
            verifications,
            step_duration,
            relays,
            last_verification,
            confirmation_mails_sent,
            confirmations_completed,
            confirmation_refusals,
            leader,
            delivery_latency,
        }
    }

    /// A round-trip probe found the test message in `folder` after `seconds`.
    pub fn delivered(&self, kind: &str, namespace: &str, name: &str, folder: &str, seconds: f64) {
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
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
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
}
