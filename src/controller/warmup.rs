//! Start-up order: relays are verified first, then confirmation mails go.
//!
//! At a cold start with thousands of relays and identities, both controllers compete
//! for the API server; a relay's first verification is what everything else waits
//! for, so confirmation mails hold back until every relay has a verification result
//! for its current spec — or for at most [`WARMUP_LIMIT`], so that a relay whose
//! reconcile keeps failing cannot hold mails back for long. The gate opens once and
//! stays open: later relays are verified as they come, mails never wait again.

use std::time::Duration;

use kube::runtime::reflector::Store;

use crate::api::{ClusterSmtpRelay, SmtpRelay, SmtpRelayStatus};
use crate::relay::types;

/// The longest confirmation mails wait for relays at start-up.
pub const WARMUP_LIMIT: Duration = Duration::from_secs(60);
/// How often the gate looks at the caches while closed.
const WARMUP_POLL: Duration = Duration::from_millis(250);

/// Has this relay a verification result for its current spec?
pub fn verified(generation: Option<i64>, status: Option<&SmtpRelayStatus>) -> bool {
    status.is_some_and(|s| {
        s.observed_generation == generation && s.conditions.iter().any(|c| c.type_ == types::READY)
    })
}

/// Relays (of both kinds) still waiting for their first verification.
pub fn unverified(relays: &Store<SmtpRelay>, cluster: &Store<ClusterSmtpRelay>) -> usize {
    let namespaced = relays
        .state()
        .iter()
        .filter(|r| !verified(r.metadata.generation, r.status.as_ref()))
        .count();
    let clustered = cluster
        .state()
        .iter()
        .filter(|r| !verified(r.metadata.generation, r.status.as_ref()))
        .count();
    namespaced + clustered
}

/// Open once the caches are filled and every relay is verified, or after `limit`.
#[derive(Clone, Debug)]
pub struct Warmup(tokio::sync::watch::Receiver<bool>);

impl Warmup {
    /// A gate that is open from the start (tests, relays-only runs).
    pub fn open() -> Self {
        let (_, rx) = tokio::sync::watch::channel(true);
        Warmup(rx)
    }

    /// Watch the caches until every relay is verified, or `limit` has passed.
    pub fn start(
        relays: Store<SmtpRelay>,
        cluster: Store<ClusterSmtpRelay>,
        limit: Duration,
    ) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + limit;
            let filled = async {
                let _ = relays.wait_until_ready().await;
                let _ = cluster.wait_until_ready().await;
                while unverified(&relays, &cluster) > 0 {
                    tokio::time::sleep(WARMUP_POLL).await;
                }
            };
            let _ = tokio::time::timeout_at(deadline, filled).await;
            let _ = tx.send(true);
        });
        Warmup(rx)
    }

    pub fn is_open(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when the gate is open.
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|open| *open).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;

    fn relay(name: &str, generation: i64, verified_generation: Option<i64>) -> SmtpRelay {
        let mut v = serde_json::json!({
            "apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
            "metadata": {"name": name, "namespace": "ns", "generation": generation},
            "spec": {"host": "relay.example.test", "defaultSender": {"address": "a@example.test"}},
        });
        if let Some(g) = verified_generation {
            v["status"] = serde_json::json!({"observedGeneration": g, "conditions": [{
                "type": "Ready", "status": "False", "reason": "AuthRejected", "message": "m",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        }
        serde_json::from_value(v).expect("relay")
    }

    #[tokio::test]
    async fn mails_wait_until_every_relay_has_a_result_for_its_spec() {
        let mut relays = Writer::<SmtpRelay>::new(());
        let mut cluster = Writer::<ClusterSmtpRelay>::new(());
        let gate = Warmup::start(relays.as_reader(), cluster.as_reader(), WARMUP_LIMIT);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!gate.is_open(), "caches not filled yet");
        relays.apply_watcher_event(&watcher::Event::Init);
        relays.apply_watcher_event(&watcher::Event::InitApply(relay("a", 1, None)));
        relays.apply_watcher_event(&watcher::Event::InitApply(relay("b", 2, Some(1))));
        relays.apply_watcher_event(&watcher::Event::InitDone);
        cluster.apply_watcher_event(&watcher::Event::Init);
        cluster.apply_watcher_event(&watcher::Event::InitDone);
        tokio::time::sleep(WARMUP_POLL * 2).await;
        assert_eq!(
            unverified(&relays.as_reader(), &cluster.as_reader()),
            2,
            "never verified, and verified for an older spec"
        );
        assert!(!gate.is_open());
        relays.apply_watcher_event(&watcher::Event::Apply(relay("a", 1, Some(1))));
        // A failed verification is a result too.
        relays.apply_watcher_event(&watcher::Event::Apply(relay("b", 2, Some(2))));
        tokio::time::timeout(Duration::from_secs(5), gate.wait())
            .await
            .expect("open once every relay has a result");
        // Open for good.
        relays.apply_watcher_event(&watcher::Event::Apply(relay("c", 1, None)));
        tokio::time::sleep(WARMUP_POLL * 2).await;
        assert!(gate.is_open());
    }

    #[tokio::test]
    async fn a_relay_that_never_gets_a_result_holds_mails_only_until_the_limit() {
        let mut relays = Writer::<SmtpRelay>::new(());
        let mut cluster = Writer::<ClusterSmtpRelay>::new(());
        relays.apply_watcher_event(&watcher::Event::Init);
        relays.apply_watcher_event(&watcher::Event::InitApply(relay("stuck", 1, None)));
        relays.apply_watcher_event(&watcher::Event::InitDone);
        cluster.apply_watcher_event(&watcher::Event::Init);
        cluster.apply_watcher_event(&watcher::Event::InitDone);
        let gate = Warmup::start(
            relays.as_reader(),
            cluster.as_reader(),
            Duration::from_millis(300),
        );
        assert!(!gate.is_open());
        tokio::time::timeout(Duration::from_secs(5), gate.wait())
            .await
            .expect("opens at the limit");
        assert!(Warmup::open().is_open());
    }
}
