//! How the operator's watches retry after an error: quickly, because an operator has
//! a handful of watches (not thousands of clients to spread out) and every second a
//! watch is down is a second in which no change is seen. kube's default (client-go's:
//! 0.8 s doubling to 30 s, reset only after two quiet minutes) left the operator
//! blind for up to half a minute after the API server came back from a restart. The
//! controllers use it for their trigger streams too: kube pauses all of a controller's
//! triggers while it backs off after an error in any of them.

use std::time::Duration;

/// The first wait after an error.
pub const FIRST: Duration = Duration::from_millis(500);
/// The longest wait between attempts, while the API server stays away.
pub const MOST: Duration = Duration::from_secs(2);

/// 0.5 s, doubling to 2 s, each wait shortened by up to a quarter at random (replicas
/// do not retry in step); back to 0.5 s once the watch yields anything.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff { next: FIRST }
    }
}

/// A fraction in [0, 1) that differs from call to call and from process to process.
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next.mul_f64(1.0 - 0.25 * unit_random());
        self.next = (self.next * 2).min(MOST);
        Some(wait)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff as _;

    #[test]
    fn doubles_to_two_seconds_never_gives_up_and_resets() {
        let mut b = WatchBackoff::default();
        let waits: Vec<Duration> = b.by_ref().take(8).collect();
        let bounds = [0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0];
        for (wait, most) in waits.iter().zip(bounds) {
            let most = Duration::from_secs_f64(most);
            assert!(*wait <= most && *wait >= most.mul_f64(0.75), "{waits:?}");
        }
        b.reset();
        assert!(b.next().is_some_and(|w| w <= FIRST));
    }
}
