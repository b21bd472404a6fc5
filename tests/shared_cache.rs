//! No missed wake-up: a SenderIdentity is woken by a change of its relay only after
//! the cache it reads the relay from holds that change (one shared reflector per
//! kind, as `controller::run` builds them). The interleaving that lost wake-ups —
//! the relay turning Ready while the identity reads an older copy — is driven here
//! deterministically, event by event, with the cache the controllers use.

use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use smtp_relay_operator::api::{RelayKindRef, SmtpRelay};
use smtp_relay_operator::controller::sender_identity::relay_view;

fn relay(ready: bool, version: u32) -> SmtpRelay {
    serde_json::from_value(json!({
        "apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
        "metadata": {"name": "corporate", "namespace": "team", "resourceVersion": version.to_string(),
                     "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                                        "fieldsV1": {"f:spec": {}}}],
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}",
                                     "smtprelay.io/test-request": "kept"}},
        "spec": {"host": "smtp.example.test", "defaultSender": {"address": "a@example.test"}},
        "status": {"observedGeneration": 1, "conditions": if ready {
            json!([{"type": "Ready", "status": "True", "reason": "Verified", "message": "ok",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}])
        } else { json!([]) }},
    }))
    .expect("relay")
}

fn version(r: &SmtpRelay) -> u32 {
    r.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn ready(r: &SmtpRelay) -> bool {
    relay_view(
        RelayKindRef::SmtpRelay,
        "corporate",
        &r.spec,
        r.status.as_ref(),
        true,
        true,
        String::new(),
    )
    .not_ready
    .is_none()
}

#[tokio::test]
async fn a_relay_wake_up_never_precedes_the_cache_the_identity_reads() {
    let (store, writer) = reflector::store_shared::<SmtpRelay>(16);
    let mut wake_ups = writer.subscribe().expect("shared");
    // The API server's events, delivered one at a time.
    let (events, feed) = futures::channel::mpsc::unbounded();
    tokio::spawn(
        feed.map(Ok)
            .modify(smtp_relay_operator::controller::slim)
            .reflect_shared(writer)
            .for_each(|_| futures::future::ready(())),
    );
    let key = ObjectRef::<SmtpRelay>::new("corporate").within("team");
    let send = |e: watcher::Event<SmtpRelay>| events.unbounded_send(e).expect("feed");
    send(watcher::Event::Init);
    send(watcher::Event::InitApply(relay(false, 1)));
    send(watcher::Event::InitDone);
    // The relay before verification, verified, changed again, verified again: each
    // wake-up, handled as the identity controller does (read the relay from the
    // shared cache, decide), sees at least the change that woke it.
    let mut seen = Vec::new();
    for (is_ready, v) in [(false, 1), (true, 2), (false, 3), (true, 4)] {
        if v > 1 {
            send(watcher::Event::Apply(relay(is_ready, v)));
        }
        let woken_by = wake_ups.next().await.expect("a wake-up");
        let cached = store.get(&key).expect("the relay is in the cache");
        assert!(
            version(&cached) >= v,
            "woken for {v}, cache at {}",
            version(&cached)
        );
        assert_eq!(version(&woken_by), version(&cached));
        assert_eq!(ready(&cached), is_ready, "decided from version {v}");
        // Nothing the operator does not read is kept.
        assert!(cached.metadata.managed_fields.is_none());
        let annotations = cached.metadata.annotations.clone().unwrap_or_default();
        assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert_eq!(
            annotations
                .get("smtprelay.io/test-request")
                .map(String::as_str),
            Some("kept")
        );
        seen.push((v, ready(&cached)));
    }
    // The last wake-up saw the relay Ready: the identity sends its mail.
    assert_eq!(seen.last(), Some(&(4, true)), "{seen:?}");
}
