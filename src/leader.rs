//! Leader election on a coordination.k8s.io Lease, so that `replicas: 2` is safe:
//! only the holder reconciles and sends mail. The decision is a pure function of
//! the lease and the clock; the API traffic is optimistic (resourceVersion).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

/// What to do with the lease as it is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No lease yet: create it, holding it.
    Create,
    /// Free or expired: take it over.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds a live lease: look again after this long.
    Wait(Duration),
}

/// Decide from the lease, our identity, and how long the lease record has been
/// unchanged as *we* observed it (as client-go does: the holder's clock is never
/// compared with ours, so clock skew cannot shorten a live lease).
pub fn decide(spec: Option<&LeaseSpec>, me: &str, unchanged_for: Duration) -> Decision {
    let Some(spec) = spec else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = Duration::from_secs(
        u64::try_from(spec.lease_duration_seconds.unwrap_or(15).max(1)).unwrap_or(15),
    );
    if unchanged_for >= duration {
        Decision::Acquire
    } else {
        Decision::Wait(duration - unchanged_for)
    }
}

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a lease lasts without renewal (followers wait this long).
    pub duration: Duration,
    /// The leader steps down if it could not renew for this long; shorter than
    /// `duration`, so it stops acting before any follower may start.
    pub renew_deadline: Duration,
    pub renew_every: Duration,
}

/// Takes, keeps and releases the lease.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The lease record (holder, renewTime) last seen, and when we first saw it.
    observed: std::sync::Mutex<Option<((String, String), tokio::time::Instant)>>,
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl Elector {
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: std::sync::Mutex::new(None),
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>, renew: bool) -> LeaseSpec {
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.cfg.duration.as_secs()).unwrap_or(15)),
            acquire_time: if renew {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(now_micro())
            },
            renew_time: Some(now_micro()),
            lease_transitions: Some(if renew { transitions } else { transitions + 1 }),
            ..Default::default()
        }
    }

    /// One attempt: Ok(true) when we hold the lease afterwards.
    pub async fn try_once(&self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.cfg.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let record = spec.map(|s| {
            (
                s.holder_identity.clone().unwrap_or_default(),
                s.renew_time
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default(),
            )
        });
        let unchanged_for = {
            let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
            let now = tokio::time::Instant::now();
            match (&*observed, record) {
                (Some((seen, since)), Some(r)) if *seen == r => now.duration_since(*since),
                (_, Some(r)) => {
                    *observed = Some((r, now));
                    Duration::ZERO
                }
                (_, None) => Duration::ZERO,
            }
        };
        let decision = decide(spec, &self.cfg.identity, unchanged_for);
        let result = match decision {
            Decision::Wait(_) => return Ok(false),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(None, false)),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            Decision::Acquire | Decision::Renew => {
                let Some(mut lease) = current.clone() else {
                    return Ok(false);
                };
                lease.spec = Some(self.spec(spec, decision == Decision::Renew));
                // resourceVersion from the GET makes this a compare-and-swap.
                self.api
                    .replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One attempt, bounded in time: a hung API call never keeps a leader acting.
    async fn try_within(&self, limit: Duration) -> Result<bool, String> {
        match tokio::time::timeout(limit, self.try_once()).await {
            Ok(Ok(held)) => Ok(held),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {limit:?}")),
        }
    }

    /// Wait until we hold the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_within(self.cfg.renew_deadline).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot read or write the lease")
                }
            }
            tokio::time::sleep(self.cfg.renew_every).await;
        }
    }

    /// Keep renewing; returns (step down) as soon as another replica holds the lease
    /// or renewal has failed for `renew_deadline`, which is shorter than the lease.
    pub async fn hold(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.cfg.renew_every).await;
            let left = self.cfg.renew_deadline.saturating_sub(last_ok.elapsed());
            if left.is_zero() {
                return;
            }
            match self.try_within(left).await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("leader election: another replica holds the lease");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "leader election: renewal failed"),
            }
            if last_ok.elapsed() >= self.cfg.renew_deadline {
                return;
            }
        }
    }

    /// Give the lease up so a follower takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.cfg.identity.as_str());
        if !ours {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
            spec.acquire_time = None;
        }
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("leader election: lease released"),
            Err(e) => tracing::warn!(error = %e, "leader election: cannot release the lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let live = |holder: Option<&str>| LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime("2026-01-01T00:00:00Z".parse().expect("ts"))),
            ..Default::default()
        };
        let s = Duration::from_secs;
        assert_eq!(decide(None, "a", s(0)), Decision::Create);
        assert_eq!(decide(Some(&live(Some("a"))), "a", s(100)), Decision::Renew);
        assert_eq!(
            decide(Some(&live(Some("b"))), "a", s(5)),
            Decision::Wait(s(10))
        );
        assert_eq!(
            decide(Some(&live(Some("b"))), "a", s(15)),
            Decision::Acquire,
            "expired"
        );
        assert_eq!(
            decide(Some(&live(None)), "a", s(0)),
            Decision::Acquire,
            "released"
        );
        // Only local observation counts: a renewTime far in the past (a skewed clock)
        // does not make a just-observed lease look expired.
        assert_eq!(
            decide(Some(&live(Some("b"))), "a", s(0)),
            Decision::Wait(s(15))
        );
    }
}
