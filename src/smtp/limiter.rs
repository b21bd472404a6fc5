//! At most N concurrent SMTP sessions per relay host, across all relays that
//! point at it, so the operator never hammers one server. Verifications go first:
//! bulk work (confirmation mails) takes a slot only once no verification has waited
//! for one or run on that host for [`QUIET`] (or after [`BULK_PATIENCE`]), and hands
//! it back when a verification queues, so a storm of confirmation mails (and the
//! status writes and deliveries that follow them) never delays a relay's readiness:
//! at start-up, relays get verified first, then their identities' mails go.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
struct HostSlot {
    semaphore: Arc<Semaphore>,
    in_flight: AtomicUsize,
    max_observed: AtomicUsize,
    /// Verifications waiting for a slot or in a session; bulk work waits for them.
    urgent_waiting: AtomicUsize,
    /// Verifications waiting for a slot (not in a session yet).
    queued: AtomicUsize,
    /// Raised when the last of those ended.
    urgent_served: tokio::sync::Notify,
    /// When the last verification ended (or stopped waiting).
    urgent_ended: Mutex<Option<tokio::time::Instant>>,
}

/// How long a host must have seen no verification before bulk work takes a slot.
/// While relays are being verified one after the other (a cold start, thousands of
/// relays on one host), the short gaps between their sessions are not handed to
/// mail: a mail session opened in such a gap costs a TLS handshake and AUTH, sends
/// a message or two, and slows the next verifications.
pub const QUIET: std::time::Duration = std::time::Duration::from_millis(250);

/// The longest bulk work waits behind verifications: then it takes the next free slot
/// for a whole session, whatever runs (a host verified without pause — thousands of
/// relays at short intervals — must not starve confirmation mails).
pub const BULK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

/// Per-host session cap.
#[derive(Debug)]
pub struct HostLimiter {
    per_host: usize,
    quiet: std::time::Duration,
    patience: std::time::Duration,
    hosts: Mutex<HashMap<String, Arc<HostSlot>>>,
}

/// Held for the duration of one session.
#[derive(Debug)]
pub struct HostPermit {
    slot: Arc<HostSlot>,
    _permit: OwnedSemaphorePermit,
    urgent: bool,
    /// Bulk work that hands its slot back to a queued verification (not once it
    /// waited [`BULK_PATIENCE`]).
    yields: bool,
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        self.slot.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.urgent {
            self.slot.urgent_done();
        }
    }
}

impl HostPermit {
    /// Bulk work holding this slot should hand it back: a verification is waiting
    /// for a slot on this host. Always false for a verification, and for bulk work
    /// that had waited [`BULK_PATIENCE`].
    pub fn verification_waiting(&self) -> bool {
        self.yields && self.slot.queued.load(Ordering::SeqCst) > 0
    }
}

impl HostLimiter {
    pub fn new(per_host: usize) -> Self {
        Self::with_timing(per_host, QUIET, BULK_PATIENCE)
    }

    /// [`HostLimiter::new`], bulk work waiting `quiet` after the last verification
    /// and at most `patience` in all.
    pub fn with_timing(
        per_host: usize,
        quiet: std::time::Duration,
        patience: std::time::Duration,
    ) -> Self {
        HostLimiter {
            per_host: per_host.max(1),
            quiet,
            patience,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Concurrent sessions allowed per host.
    pub fn per_host(&self) -> usize {
        self.per_host
    }

    fn slot(&self, host: &str) -> Arc<HostSlot> {
        let key = host.trim_end_matches('.').to_ascii_lowercase();
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(hosts.entry(key).or_insert_with(|| {
            Arc::new(HostSlot {
                semaphore: Arc::new(Semaphore::new(self.per_host)),
                in_flight: AtomicUsize::new(0),
                max_observed: AtomicUsize::new(0),
                urgent_waiting: AtomicUsize::new(0),
                queued: AtomicUsize::new(0),
                urgent_served: tokio::sync::Notify::new(),
                urgent_ended: Mutex::new(None),
            })
        }))
    }

    /// Wait for a session slot on `host` (a verification: served first).
    pub async fn acquire(&self, host: &str) -> HostPermit {
        let slot = self.slot(host);
        // Counted until the permit is dropped (also if this future is dropped first:
        // then `pending` stops the count).
        slot.urgent_waiting.fetch_add(1, Ordering::SeqCst);
        slot.queued.fetch_add(1, Ordering::SeqCst);
        let mut pending = Pending(Some(Arc::clone(&slot)));
        let permit = Self::take(&slot).await;
        // From here the permit stops the count when it is dropped.
        pending.0 = None;
        slot.queued.fetch_sub(1, Ordering::SeqCst);
        Self::granted(slot, permit, true, false)
    }

    /// Wait for a session slot on `host` for bulk work: only while no verification
    /// is waiting for one or in a session there, and none has for [`QUIET`]; or,
    /// after [`BULK_PATIENCE`], the next free slot.
    pub async fn acquire_bulk(&self, host: &str) -> HostPermit {
        let slot = self.slot(host);
        let overdue = tokio::time::Instant::now() + self.patience;
        let (permit, yields) = loop {
            if tokio::time::Instant::now() >= overdue {
                break (Self::take(&slot).await, false);
            }
            let served = slot.urgent_served.notified();
            tokio::pin!(served);
            served.as_mut().enable();
            if slot.urgent_waiting.load(Ordering::SeqCst) > 0 {
                tokio::select! {
                    _ = served => {}
                    _ = tokio::time::sleep_until(overdue) => {}
                }
                continue;
            }
            if let Some(left) = slot.quiet_left(self.quiet) {
                let until_overdue = overdue.saturating_duration_since(tokio::time::Instant::now());
                tokio::time::sleep(left.min(until_overdue)).await;
                continue;
            }
            let permit = Self::take(&slot).await;
            if slot.urgent_waiting.load(Ordering::SeqCst) > 0
                || slot.quiet_left(self.quiet).is_some()
            {
                // A verification arrived while we queued: it goes first.
                drop(permit);
                continue;
            }
            break (permit, true);
        };
        Self::granted(slot, permit, false, yields)
    }

    async fn take(slot: &HostSlot) -> OwnedSemaphorePermit {
        match Arc::clone(&slot.semaphore).acquire_owned().await {
            Ok(p) => p,
            // The semaphore is never closed; keep the type honest anyway.
            Err(_) => unreachable!("host semaphore closed"),
        }
    }

    fn granted(
        slot: Arc<HostSlot>,
        permit: OwnedSemaphorePermit,
        urgent: bool,
        yields: bool,
    ) -> HostPermit {
        let now = slot.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        slot.max_observed.fetch_max(now, Ordering::SeqCst);
        HostPermit {
            slot,
            _permit: permit,
            urgent,
            yields,
        }
    }

    /// The highest number of simultaneous sessions ever seen on `host`.
    pub fn max_observed(&self, host: &str) -> usize {
        self.slot(host).max_observed.load(Ordering::SeqCst)
    }
}

/// A verification waiting for its slot; dropped while waiting, it stops counting.
struct Pending(Option<Arc<HostSlot>>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.queued.fetch_sub(1, Ordering::SeqCst);
            slot.urgent_done();
        }
    }
}

impl HostSlot {
    /// How much of the quiet period after the last verification is left, if any.
    fn quiet_left(&self, quiet: std::time::Duration) -> Option<std::time::Duration> {
        let ended = (*self.urgent_ended.lock().unwrap_or_else(|e| e.into_inner()))?;
        quiet
            .checked_sub(ended.elapsed())
            .filter(|left| !left.is_zero())
    }

    /// A verification stopped waiting or ended its session: the last one wakes bulk work.
    fn urgent_done(&self) {
        *self.urgent_ended.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(tokio::time::Instant::now());
        if self.urgent_waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.urgent_served.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn never_exceeds_the_cap_and_hosts_are_independent() {
        let limiter = Arc::new(HostLimiter::new(2));
        let mut tasks = Vec::new();
        for i in 0..20u32 {
            let limiter = Arc::clone(&limiter);
            let host = if i.is_multiple_of(2) {
                "Relay.Example."
            } else {
                "other"
            };
            tasks.push(tokio::spawn(async move {
                let _p = limiter.acquire(host).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(limiter.max_observed("relay.example"), 2);
        assert_eq!(limiter.max_observed("other"), 2);
        assert_eq!(limiter.max_observed("unused"), 0);
    }

    #[tokio::test]
    async fn verifications_go_before_bulk_work() {
        let limiter = Arc::new(HostLimiter::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        // One session holds the slot; bulk work queues, then a verification.
        let held = limiter.acquire("relay").await;
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (limiter, order) = (Arc::clone(&limiter), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _p = limiter.acquire_bulk("relay").await;
                order.lock().expect("lock").push(format!("bulk-{i}"));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        {
            let (limiter, order) = (Arc::clone(&limiter), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _p = limiter.acquire("relay").await;
                order.lock().expect("lock").push("verification".to_string());
            }));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(held);
        for t in tasks {
            t.await.expect("task");
        }
        let order = order.lock().expect("lock").clone();
        assert_eq!(
            order.first().map(String::as_str),
            Some("verification"),
            "{order:?}"
        );
        assert_eq!(order.len(), 4, "bulk work still gets through: {order:?}");
        assert_eq!(limiter.max_observed("relay"), 1);
    }

    #[tokio::test]
    async fn bulk_work_waits_while_a_verification_runs_even_with_a_free_slot() {
        let limiter = Arc::new(HostLimiter::new(2));
        let verification = limiter.acquire("relay").await;
        let bulk = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                let _p = limiter.acquire_bulk("relay").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !bulk.is_finished(),
            "a slot is free, but a verification runs"
        );
        drop(verification);
        tokio::time::timeout(Duration::from_secs(5), bulk)
            .await
            .expect("bulk goes once the verification ended")
            .expect("task");
        // A verification given up while waiting stops counting.
        let held = limiter.acquire("relay").await;
        let held2 = limiter.acquire("relay").await;
        let waiting = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                let _p = limiter.acquire("relay").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        waiting.abort();
        let _ = waiting.await;
        drop((held, held2));
        tokio::time::timeout(Duration::from_secs(5), limiter.acquire_bulk("relay"))
            .await
            .expect("no verification left");
    }

    #[tokio::test]
    async fn bulk_work_waits_for_a_quiet_host_after_verifications() {
        let quiet = Duration::from_secs(30);
        let limiter = Arc::new(HostLimiter::with_timing(2, quiet, quiet));
        // Never verified: bulk work goes at once.
        drop(limiter.acquire_bulk("relay").await);
        drop(limiter.acquire("relay").await);
        // A verification just ended: bulk work waits although both slots are free.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), limiter.acquire_bulk("relay"))
                .await
                .is_err(),
            "bulk work took a slot right after a verification"
        );
        // Other hosts are not concerned.
        drop(limiter.acquire_bulk("other").await);
        // Without a quiet period, it goes as soon as the verification ended.
        let eager = HostLimiter::with_timing(2, Duration::ZERO, quiet);
        drop(eager.acquire("relay").await);
        tokio::time::timeout(Duration::from_secs(5), eager.acquire_bulk("relay"))
            .await
            .expect("no quiet period");
    }

    #[tokio::test]
    async fn bulk_work_is_not_starved_by_verifications_that_never_pause() {
        let patience = Duration::from_millis(200);
        let limiter = Arc::new(HostLimiter::with_timing(
            2,
            Duration::from_secs(30),
            patience,
        ));
        // A verification runs the whole time.
        let running = limiter.acquire("relay").await;
        let bulk = tokio::time::timeout(Duration::from_secs(5), limiter.acquire_bulk("relay"))
            .await
            .expect("bulk work gets a slot once its patience is over");
        // Having waited, it keeps the slot for its session even if a verification
        // queues behind it.
        let queued = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                let _p = limiter.acquire("relay").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!queued.is_finished());
        assert!(!bulk.verification_waiting());
        drop(bulk);
        tokio::time::timeout(Duration::from_secs(5), queued)
            .await
            .expect("the verification goes next")
            .expect("task");
        drop(running);
        assert_eq!(limiter.max_observed("relay"), 2);
    }

    #[tokio::test]
    async fn a_bulk_session_learns_that_a_verification_waits() {
        let limiter = Arc::new(HostLimiter::new(1));
        let bulk = limiter.acquire_bulk("relay").await;
        assert!(!bulk.verification_waiting());
        let verification = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                let p = limiter.acquire("relay").await;
                assert!(!p.verification_waiting(), "a verification never yields");
            })
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            while !bulk.verification_waiting() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the waiting verification is seen");
        drop(bulk);
        tokio::time::timeout(Duration::from_secs(5), verification)
            .await
            .expect("the verification gets the slot")
            .expect("task");
        let again = limiter.acquire_bulk("relay").await;
        assert!(!again.verification_waiting(), "it ended");
    }
}
