//! How the operator's watches retry after an error: quickly, because an operator has
//! a handful of watches (not thousands of clients to spread out) and every second a
//! watch is down is a second in which no change is seen. kube's default (client-go's
//! numbers: 0.8 s doubling to 30 s) left the operator blind for up to half a minute
//! after the API server came back from a restart.
//!
//! kube's `StreamBackoff` resets a backoff on every item a watch yields, and a watcher
//! yields one (`Init`) before each relist without asking the server anything; a relist
//! that keeps failing would then be retried every 0.5 s, a full LIST each time. So a
//! reset counts only once the watch has stayed up for [`STEADY`].

use std::time::{Duration, Instant};

/// The first wait after an error.
pub const FIRST: Duration = Duration::from_millis(500);
/// The longest wait between attempts, while the API server stays away or keeps failing.
pub const MOST: Duration = Duration::from_secs(2);
/// How long after its last error a watch must have been yielding before a reset brings
/// the wait back to [`FIRST`].
pub const STEADY: Duration = Duration::from_secs(10);

/// 0.5 s, doubling to 2 s, each wait shortened by up to a quarter at random (replicas
/// do not retry in step); back to 0.5 s once [`STEADY`] has passed without an error.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
    last_error: Option<Instant>,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: FIRST,
            last_error: None,
        }
    }
}

impl WatchBackoff {
    fn reset_at(&mut self, now: Instant) {
        if self
            .last_error
            .is_none_or(|at| now.saturating_duration_since(at) >= STEADY)
        {
            self.next = FIRST;
        }
    }

    fn next_at(&mut self, now: Instant) -> Duration {
        use rand::Rng as _;
        // A quiet watch yields nothing to reset it: a first error after a long calm
        // starts again from FIRST too.
        self.reset_at(now);
        self.last_error = Some(now);
        let wait = self.next.mul_f64(rand::rng().random_range(0.75..=1.0));
        self.next = (self.next * 2).min(MOST);
        wait
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_at(Instant::now()))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.reset_at(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(wait: Duration, most: f64) -> bool {
        let most = Duration::from_secs_f64(most);
        wait <= most && wait >= most.mul_f64(0.75)
    }

    #[test]
    fn doubles_to_two_seconds_and_never_gives_up() {
        let mut b = WatchBackoff::default();
        let waits: Vec<Duration> = b.by_ref().take(8).collect();
        let bounds = [0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0];
        for (wait, most) in waits.iter().zip(bounds) {
            assert!(within(*wait, most), "{waits:?}");
        }
    }

    #[test]
    fn a_reset_right_after_an_error_keeps_the_wait_growing() {
        // What a failing relist looks like: error, Init (a reset), error, Init, ...
        let mut b = WatchBackoff::default();
        let t0 = Instant::now();
        let mut waits = Vec::new();
        for i in 0..4 {
            let now = t0 + Duration::from_secs(i);
            waits.push(b.next_at(now));
            b.reset_at(now + Duration::from_millis(1));
        }
        for (wait, most) in waits.iter().zip([0.5, 1.0, 2.0, 2.0]) {
            assert!(within(*wait, most), "{waits:?}");
        }
        // Up for STEADY since the last error: the next error waits FIRST again.
        b.reset_at(t0 + Duration::from_secs(3) + STEADY);
        assert!(within(b.next_at(t0 + Duration::from_secs(20)), 0.5));
    }
}
