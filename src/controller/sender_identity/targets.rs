//! The relays' resolved session targets (credentials, TLS set-up), shared by the
//! confirmation mails sent through the same relay for a few seconds: a burst of
//! mails on one relay reads its Secret and CA once, not once per mail. (Credentials
//! published into connection Secrets are always read fresh.)
//! Keyed by the relay's resourceVersion: a relay re-verified after a Secret or CA
//! change is a new key.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::ResourceExt;

use super::{Context, RelayObject, RelayTarget, relay_target};

/// How long a resolved target is reused.
pub const TARGET_TTL: Duration = Duration::from_secs(30);
/// Entries kept at most (one per relay in use).
const MAX_TARGETS: usize = 4096;

/// Values by relay (and its resourceVersion), each kept for [`TARGET_TTL`].
#[derive(Debug)]
pub struct ByRelay<T>(Mutex<HashMap<String, (Instant, T)>>);

impl<T> Default for ByRelay<T> {
    fn default() -> Self {
        ByRelay(Mutex::new(HashMap::new()))
    }
}

/// The resolved targets.
pub type TargetCache = ByRelay<RelayTarget>;

fn key(relay: &RelayObject) -> Option<String> {
    let (kind, ns, name, version) = match relay {
        RelayObject::Namespaced(r) => (
            "SmtpRelay",
            r.namespace(),
            r.name_any(),
            r.resource_version(),
        ),
        RelayObject::Cluster(c) => ("ClusterSmtpRelay", None, c.name_any(), c.resource_version()),
    };
    // Without a resourceVersion a change could not be told apart: no reuse.
    Some(format!(
        "{kind}/{}/{name}@{}",
        ns.unwrap_or_default(),
        version?
    ))
}

impl<T: Clone> ByRelay<T> {
    pub fn get(&self, relay: &RelayObject, now: Instant) -> Option<T> {
        let k = key(relay)?;
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&k)
            .filter(|(at, _)| now.duration_since(*at) < TARGET_TTL)
            .map(|(_, t)| t.clone())
    }

    pub fn put(&self, relay: &RelayObject, target: &T, now: Instant) {
        let Some(k) = key(relay) else {
            return;
        };
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TARGETS {
            map.retain(|_, (at, _)| now.duration_since(*at) < TARGET_TTL);
            if map.len() >= MAX_TARGETS {
                map.clear();
            }
        }
        map.insert(k, (now, target.clone()));
    }
}

/// The relay's session target, from the cache when a fresh one is there; only
/// successful resolutions are kept (a missing Secret is asked again next time).
pub async fn shared_relay_target(
    ctx: &Context,
    relay: &RelayObject,
) -> Result<RelayTarget, String> {
    let now = Instant::now();
    if let Some(t) = ctx.targets.get(relay, now) {
        return Ok(t);
    }
    let resolved = relay_target(ctx, relay).await?;
    ctx.targets.put(relay, &resolved, now);
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SmtpRelay;
    use std::sync::Arc;

    fn relay(version: &str) -> RelayObject {
        let r: SmtpRelay = serde_json::from_value(serde_json::json!({
            "apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
            "metadata": {"name": "corp", "namespace": "team", "resourceVersion": version},
            "spec": {"host": "127.0.0.1", "defaultSender": {"address": "a@example.test"}}
        }))
        .expect("relay");
        RelayObject::Namespaced(Arc::new(r))
    }

    #[test]
    fn a_target_is_reused_for_its_relay_version_within_the_ttl_only() {
        let cache: ByRelay<String> = ByRelay::default();
        let t0 = Instant::now();
        cache.put(&relay("7"), &"resolved".to_string(), t0);
        assert_eq!(
            cache
                .get(&relay("7"), t0 + Duration::from_secs(5))
                .as_deref(),
            Some("resolved")
        );
        // The relay changed (re-verified after a Secret or CA change): read again.
        assert_eq!(cache.get(&relay("8"), t0), None);
        // Too old: read again.
        assert_eq!(cache.get(&relay("7"), t0 + TARGET_TTL), None);
    }
}
