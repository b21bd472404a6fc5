//! Start-up order: relays first, then confirmation mails.
//!
//! At a cold start with thousands of relays and identities, both controllers compete
//! for the same CPU and API server; every identity waits for its relay anyway, and a
//! relay's first verification is what users watch (`kubectl wait`, health checks). So
//! confirmation mails hold back until this process has reconciled every relay once —
//! whatever the outcome: a relay whose Secret is missing or whose host is down has
//! been reconciled too — or for at most [`WARMUP_LIMIT`]. The gate opens once and stays
//! open: relays created later are verified as they come, mails never wait again.
//!
//! An identity that would mail while the gate is closed is deferred, not failed: it is
//! remembered and reconciled again when the gate opens (the timer it returns is only a
//! backstop).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{ClusterSmtpRelay, SenderIdentity, SmtpRelay};

/// The longest confirmation mails wait for relays at start-up.
pub const WARMUP_LIMIT: Duration = Duration::from_secs(30);
/// How often the gate looks at the caches while closed.
const WARMUP_POLL: Duration = Duration::from_millis(100);
/// The gate also opens when no relay reconcile has ended for this long: relays first,
/// but mails never wait for stragglers (a tarpit, an unreachable host, a relay this
/// process cannot reconcile).
pub const WARMUP_STALL: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct State {
    open: bool,
    /// Relays (by uid) reconciled by this process since it started.
    reconciled: HashSet<String>,
    /// When the last relay reconcile ended.
    progress: Option<tokio::time::Instant>,
    /// Identities that wanted to mail while the gate was closed.
    deferred: Vec<ObjectRef<SenderIdentity>>,
    /// Where deferred identities go when the gate opens (the identity controller's
    /// `reconcile_on`); kept open for the life of the process.
    wake: Option<mpsc::UnboundedSender<ObjectRef<SenderIdentity>>>,
}

/// The start-up gate. Cheap to clone; all clones are one gate.
#[derive(Clone, Debug, Default)]
pub struct Warmup(Arc<Mutex<State>>);

impl Warmup {
    /// A gate that is open from the start (tests, relays-only runs).
    pub fn open() -> Self {
        let gate = Warmup::default();
        gate.lock().open = true;
        gate
    }

    /// A closed gate that opens once both caches are filled and every relay in them
    /// has been reconciled ([`Warmup::reconciled`]), or after `limit`; and the stream
    /// of identities deferred until then.
    pub fn start(
        relays: Store<SmtpRelay>,
        cluster: Store<ClusterSmtpRelay>,
        limit: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<ObjectRef<SenderIdentity>>) {
        let (tx, rx) = mpsc::unbounded();
        let gate = Warmup::default();
        gate.lock().wake = Some(tx);
        let watcher = gate.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let done = async {
                let _ = relays.wait_until_ready().await;
                let _ = cluster.wait_until_ready().await;
                let since = tokio::time::Instant::now();
                while watcher.pending(&relays, &cluster) > 0 && !watcher.stalled(since) {
                    tokio::time::sleep(WARMUP_POLL).await;
                }
            };
            let in_time = tokio::time::timeout(limit, done).await.is_ok();
            let deferred = watcher.release();
            let secs = started.elapsed().as_secs_f64();
            if in_time {
                tracing::info!(
                    secs,
                    deferred,
                    "every relay reconciled; confirmation mails go"
                );
            } else {
                tracing::info!(
                    secs,
                    deferred,
                    "relays still being reconciled after the start-up limit; confirmation mails go"
                );
            }
        });
        (gate, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_open(&self) -> bool {
        self.lock().open
    }

    /// A relay's reconcile has ended (with any outcome).
    pub fn reconciled<K: Resource>(&self, relay: &K) {
        let mut state = self.lock();
        if state.open {
            return;
        }
        if let Some(uid) = relay.meta().uid.as_ref() {
            state.reconciled.insert(uid.clone());
        }
        state.progress = Some(tokio::time::Instant::now());
    }

    /// No relay reconcile has ended for [`WARMUP_STALL`] (counted from `since` before
    /// the first).
    fn stalled(&self, since: tokio::time::Instant) -> bool {
        self.lock().progress.unwrap_or(since).elapsed() >= WARMUP_STALL
    }

    /// May this identity mail now? If not, it is reconciled again when the gate opens.
    pub fn admit(&self, identity: &SenderIdentity) -> bool {
        let mut state = self.lock();
        if state.open {
            return true;
        }
        state.deferred.push(ObjectRef::from_obj(identity));
        false
    }

    /// Relays in the caches not reconciled yet.
    fn pending(&self, relays: &Store<SmtpRelay>, cluster: &Store<ClusterSmtpRelay>) -> usize {
        let state = self.lock();
        let missing = |uid: Option<&String>| uid.is_none_or(|u| !state.reconciled.contains(u));
        let namespaced = relays
            .state()
            .iter()
            .filter(|r| missing(r.metadata.uid.as_ref()))
            .count();
        let clustered = cluster
            .state()
            .iter()
            .filter(|r| missing(r.metadata.uid.as_ref()))
            .count();
        namespaced + clustered
    }

    /// Open for good; the deferred identities are woken. Returns how many.
    fn release(&self) -> usize {
        let mut state = self.lock();
        state.open = true;
        state.reconciled = HashSet::new();
        let deferred = std::mem::take(&mut state.deferred);
        let n = deferred.len();
        if let Some(wake) = &state.wake {
            for r in deferred {
                let _ = wake.unbounded_send(r);
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;

    fn relay(name: &str) -> SmtpRelay {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"host": "relay.example.test", "defaultSender": {"address": "a@example.test"}},
        }))
        .expect("relay")
    }

    fn identity(name: &str) -> SenderIdentity {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"address": "a@example.test"},
        }))
        .expect("identity")
    }

    #[tokio::test]
    async fn mails_wait_until_every_relay_was_reconciled_then_the_deferred_are_woken() {
        let mut relays = Writer::<SmtpRelay>::new(());
        let mut cluster = Writer::<ClusterSmtpRelay>::new(());
        let (gate, mut woken) =
            Warmup::start(relays.as_reader(), cluster.as_reader(), WARMUP_LIMIT);
        tokio::time::sleep(WARMUP_POLL * 2).await;
        assert!(!gate.is_open(), "caches not filled yet");
        assert!(!gate.admit(&identity("early")));
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(relay("a")),
            watcher::Event::InitApply(relay("b")),
            watcher::Event::InitDone,
        ] {
            relays.apply_watcher_event(&event);
        }
        cluster.apply_watcher_event(&watcher::Event::Init);
        cluster.apply_watcher_event(&watcher::Event::InitDone);
        gate.reconciled(&relay("a"));
        tokio::time::sleep(WARMUP_POLL * 3).await;
        assert!(!gate.is_open(), "relay b was never reconciled");
        assert!(!gate.admit(&identity("late")));
        // Any outcome counts: the reconcile has ended.
        gate.reconciled(&relay("b"));
        let first = tokio::time::timeout(Duration::from_secs(5), woken.next())
            .await
            .expect("woken when the gate opens")
            .expect("an identity");
        let second = woken.next().await.expect("an identity");
        assert_eq!(
            [first.name, second.name],
            ["early".to_string(), "late".to_string()]
        );
        assert!(gate.is_open());
        // Open for good: a new relay does not close it, identities mail at once.
        relays.apply_watcher_event(&watcher::Event::Apply(relay("c")));
        tokio::time::sleep(WARMUP_POLL * 2).await;
        assert!(gate.admit(&identity("after")));
    }

    #[tokio::test]
    async fn an_empty_cluster_opens_at_once() {
        let mut relays = Writer::<SmtpRelay>::new(());
        let mut cluster = Writer::<ClusterSmtpRelay>::new(());
        let (gate, _woken) = Warmup::start(relays.as_reader(), cluster.as_reader(), WARMUP_LIMIT);
        for w in [watcher::Event::Init, watcher::Event::InitDone] {
            relays.apply_watcher_event(&w);
        }
        for w in [watcher::Event::Init, watcher::Event::InitDone] {
            cluster.apply_watcher_event(&w);
        }
        tokio::time::sleep(WARMUP_POLL * 3).await;
        assert!(gate.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_never_reconciled_holds_mails_only_while_others_make_progress() {
        let mut relays = Writer::<SmtpRelay>::new(());
        let mut cluster = Writer::<ClusterSmtpRelay>::new(());
        let (gate, mut woken) =
            Warmup::start(relays.as_reader(), cluster.as_reader(), WARMUP_LIMIT);
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(relay("stuck")),
            watcher::Event::InitDone,
        ] {
            relays.apply_watcher_event(&event);
        }
        cluster.apply_watcher_event(&watcher::Event::Init);
        cluster.apply_watcher_event(&watcher::Event::InitDone);
        assert!(!gate.admit(&identity("waiting")));
        // Other relays keep finishing: the gate stays closed.
        for i in 0..10 {
            tokio::time::sleep(WARMUP_STALL / 2).await;
            gate.reconciled(&relay(&format!("other-{i}")));
            assert!(!gate.is_open());
        }
        // Nothing ends any more: the straggler does not hold mails back.
        tokio::time::sleep(WARMUP_STALL + WARMUP_POLL * 2).await;
        assert!(gate.is_open());
        assert_eq!(woken.next().await.map(|r| r.name), Some("waiting".into()));
    }
}
