//! Which identities use which relay: an index kept beside the identity cache, so that
//! a relay event maps to its users without walking every identity (2,000 relay
//! events × 10,000 identities at a cold start were 20 million checks and as many
//! reference-count changes).
//!
//! The index is fed by the identity watcher's events before the cache applies them,
//! so it never lacks an identity the cache holds; a name it returns that the cache
//! does not hold (yet) is skipped by the controller, and that identity's own event
//! wakes it once it is there.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

use crate::api::{RelayKindRef, SenderIdentity};

/// The relay an identity sends through, as its spec names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Uses {
    /// An SmtpRelay in the identity's own namespace.
    Namespaced {
        namespace: String,
        name: String,
    },
    Cluster {
        name: String,
    },
    /// No reference: the cluster's default relay (any ClusterSmtpRelay may be it).
    Default,
}

fn uses(identity: &SenderIdentity) -> Uses {
    match &identity.spec.relay_ref {
        Some(r) if r.kind == RelayKindRef::SmtpRelay => Uses::Namespaced {
            namespace: identity.namespace().unwrap_or_default(),
            name: r.name.clone(),
        },
        Some(r) => Uses::Cluster {
            name: r.name.clone(),
        },
        None => Uses::Default,
    }
}

/// An identity, by namespace and name; one allocation shared by both maps.
type Id = Arc<(String, String)>;

#[derive(Debug, Default)]
struct Index {
    /// Each relay once, shared by the identities that use it.
    by_relay: HashMap<Arc<Uses>, HashSet<Id>>,
    of: HashMap<Id, Arc<Uses>>,
    /// Identities listed since a re-list began: those not listed again are gone.
    relisted: Option<HashSet<Id>>,
}

impl Index {
    fn insert(&mut self, id: Id, relay: Uses) {
        if let Some(old) = self.of.get(&id) {
            if **old == relay {
                return;
            }
            let old = Arc::clone(old);
            self.unlink(&id, &old);
        }
        // The relay's shared key if another identity uses it already.
        let relay = match self.by_relay.get_key_value(&relay) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::new(relay),
        };
        // The identity's shared name if it is indexed already.
        let id = match self.of.get_key_value(&id) {
            Some((key, _)) => Arc::clone(key),
            None => id,
        };
        self.of.insert(Arc::clone(&id), Arc::clone(&relay));
        self.by_relay.entry(relay).or_default().insert(id);
    }

    fn remove(&mut self, id: &Id) {
        if let Some(old) = self.of.remove(id) {
            self.unlink(id, &old);
        }
    }

    fn unlink(&mut self, id: &Id, relay: &Uses) {
        if let Some(users) = self.by_relay.get_mut(relay) {
            users.remove(id);
            if users.is_empty() {
                self.by_relay.remove(relay);
            }
        }
    }
}

/// The index. Cheap to clone; clones share it.
#[derive(Debug, Default, Clone)]
pub struct RelayUsers(Arc<Mutex<Index>>);

impl RelayUsers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follow one event of the identity watcher.
    pub fn observe(&self, event: &Event<SenderIdentity>) {
        let id = |i: &SenderIdentity| Arc::new((i.namespace().unwrap_or_default(), i.name_any()));
        let mut index = self.lock();
        match event {
            Event::Apply(i) => index.insert(id(i), uses(i)),
            Event::Delete(i) => index.remove(&id(i)),
            Event::Init => index.relisted = Some(HashSet::new()),
            Event::InitApply(i) => {
                let id = id(i);
                if let Some(seen) = index.relisted.as_mut() {
                    seen.insert(id.clone());
                }
                index.insert(id, uses(i));
            }
            Event::InitDone => {
                if let Some(seen) = index.relisted.take() {
                    let gone: Vec<Id> = index
                        .of
                        .keys()
                        .filter(|id| !seen.contains(*id))
                        .cloned()
                        .collect();
                    for id in gone {
                        index.remove(&id);
                    }
                }
            }
        }
    }

    /// The identities that use the relay of this kind, namespace and name (for a
    /// ClusterSmtpRelay, also those that name no relay and take the default).
    pub fn of(
        &self,
        kind: RelayKindRef,
        namespace: Option<&str>,
        name: &str,
    ) -> Vec<ObjectRef<SenderIdentity>> {
        let index = self.lock();
        let refs = |key: &Uses| {
            index
                .by_relay
                .get(key)
                .into_iter()
                .flatten()
                .map(|id| ObjectRef::new(&id.1).within(&id.0))
                .collect::<Vec<_>>()
        };
        match kind {
            RelayKindRef::SmtpRelay => refs(&Uses::Namespaced {
                namespace: namespace.unwrap_or_default().to_string(),
                name: name.to_string(),
            }),
            RelayKindRef::ClusterSmtpRelay => {
                let mut all = refs(&Uses::Cluster {
                    name: name.to_string(),
                });
                all.extend(refs(&Uses::Default));
                all
            }
        }
    }

    /// Identities indexed (for tests and gauges).
    pub fn len(&self) -> usize {
        self.lock().of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Does this identity use the relay of this kind and name (and, for cluster
    /// relays, the default)? Walked over every identity, the answer the index must give.
    fn uses_relay(
        identity: &SenderIdentity,
        kind: RelayKindRef,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        match &identity.spec.relay_ref {
            Some(r) => {
                r.kind == kind
                    && r.name == name
                    && (kind == RelayKindRef::ClusterSmtpRelay
                        || identity.namespace().as_deref() == namespace)
            }
            None => kind == RelayKindRef::ClusterSmtpRelay,
        }
    }

    fn identity(namespace: &str, name: &str, relay: Option<(&str, &str)>) -> SenderIdentity {
        let relay_ref = relay.map(|(kind, name)| serde_json::json!({"kind": kind, "name": name}));
        let mut spec = serde_json::json!({"address": format!("{name}@example.test")});
        if let Some(r) = relay_ref {
            spec["relayRef"] = r;
        }
        let mut i = SenderIdentity::new(name, serde_json::from_value(spec).expect("spec"));
        i.metadata.namespace = Some(namespace.into());
        i
    }

    /// The index answers exactly what walking every identity would.
    fn agrees(users: &RelayUsers, model: &[SenderIdentity]) {
        let relays = [
            (RelayKindRef::SmtpRelay, Some("team-a"), "corp"),
            (RelayKindRef::SmtpRelay, Some("team-b"), "corp"),
            (RelayKindRef::SmtpRelay, Some("team-a"), "other"),
            (RelayKindRef::ClusterSmtpRelay, None, "shared"),
            (RelayKindRef::ClusterSmtpRelay, None, "unused"),
        ];
        for (kind, ns, name) in relays {
            let mut got: Vec<String> = users
                .of(kind, ns, name)
                .iter()
                .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or(""), r.name))
                .collect();
            got.sort();
            let mut want: Vec<String> = model
                .iter()
                .filter(|i| uses_relay(i, kind, ns, name))
                .map(|i| format!("{}/{}", i.namespace().unwrap_or_default(), i.name_any()))
                .collect();
            want.sort();
            assert_eq!(got, want, "{kind:?} {ns:?}/{name}");
        }
        assert_eq!(users.len(), model.len());
    }

    #[test]
    fn follows_lists_changes_deletions_and_relists() {
        let mut model = vec![
            identity("team-a", "sales", Some(("SmtpRelay", "corp"))),
            identity("team-b", "sales", Some(("SmtpRelay", "corp"))),
            identity("team-a", "billing", Some(("SmtpRelay", "other"))),
            identity("team-a", "ops", Some(("ClusterSmtpRelay", "shared"))),
            identity("team-c", "alerts", None),
        ];
        let users = RelayUsers::default();
        users.observe(&Event::Init);
        for i in &model {
            users.observe(&Event::InitApply(i.clone()));
        }
        users.observe(&Event::InitDone);
        agrees(&users, &model);

        // billing moves from team-a/other to team-a/corp.
        model[2] = identity("team-a", "billing", Some(("SmtpRelay", "corp")));
        users.observe(&Event::Apply(model[2].clone()));
        agrees(&users, &model);
        // An update that keeps the relay changes nothing.
        users.observe(&Event::Apply(model[2].clone()));
        agrees(&users, &model);

        // Deleted: forgotten.
        let gone = model.remove(0);
        users.observe(&Event::Delete(gone));
        agrees(&users, &model);

        // A re-list after a lost watch: team-a/ops was deleted meanwhile (no Delete
        // event), a new identity appeared.
        model.retain(|i| i.name_any() != "ops");
        model.push(identity("team-b", "new", None));
        users.observe(&Event::Init);
        for i in &model {
            users.observe(&Event::InitApply(i.clone()));
        }
        users.observe(&Event::InitDone);
        agrees(&users, &model);
    }
}
