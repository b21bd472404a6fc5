//! What wakes whom: a Secret or ConfigMap event maps to the relays that reference it,
//! a relay event to the identities that use the relay.

use std::sync::Arc;

use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use crate::api::{
    ClusterSmtpRelay, RelayKindRef, SenderIdentity, SmtpRelay, SmtpRelaySpec, SmtpRelayStatus,
};

/// Does this relay spec reference the Secret (or ConfigMap) `namespace/name`?
pub fn references(
    spec: &SmtpRelaySpec,
    own_namespace: Option<&str>,
    default_namespace: &str,
    kind: crate::api::CaBundleKind,
    namespace: &str,
    name: &str,
) -> bool {
    fn ns_of<'a>(own: Option<&'a str>, explicit: Option<&'a String>, default: &'a str) -> &'a str {
        own.or(explicit.map(String::as_str)).unwrap_or(default)
    }
    let ns_of = |explicit| ns_of(own_namespace, explicit, default_namespace);
    let creds = kind == crate::api::CaBundleKind::Secret
        && spec.auth.as_ref().is_some_and(|a| {
            a.credentials_secret_ref.name == name
                && ns_of(a.credentials_secret_ref.namespace.as_ref()) == namespace
        });
    let ca = spec.tls.ca_bundle_ref.as_ref().is_some_and(|c| {
        c.kind == kind && c.name == name && ns_of(c.namespace.as_ref()) == namespace
    });
    // The round trip's mailbox credentials and CA bundle.
    let mailbox = spec.verification.round_trip.as_ref().is_some_and(|rt| {
        rt.refs_to(kind, name)
            .into_iter()
            .any(|ns| ns_of(ns) == namespace)
    });
    creds || ca || mailbox
}

/// Both relay kinds, as the Secret mapper sees them.
pub trait RelayKind: Resource<DynamicType = ()> + Clone + Send + Sync + 'static {
    fn relay_spec(&self) -> &SmtpRelaySpec;
    fn relay_status(&self) -> Option<&SmtpRelayStatus>;
}

impl RelayKind for SmtpRelay {
    fn relay_spec(&self) -> &SmtpRelaySpec {
        &self.spec
    }
    fn relay_status(&self) -> Option<&SmtpRelayStatus> {
        self.status.as_ref()
    }
}

impl RelayKind for ClusterSmtpRelay {
    fn relay_spec(&self) -> &SmtpRelaySpec {
        &self.spec.relay
    }
    fn relay_status(&self) -> Option<&SmtpRelayStatus> {
        self.status.as_ref()
    }
}

/// Map a Secret/ConfigMap event to the relays (of one kind) that reference it.
pub(super) fn referencing<R: RelayKind, M: Resource>(
    store: Store<R>,
    kind: crate::api::CaBundleKind,
    default_ns: String,
) -> impl Fn(PartialObjectMeta<M>) -> Vec<ObjectRef<R>> + Send + Sync + 'static {
    move |obj| {
        let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
        store
            .state()
            .into_iter()
            .filter(|r| {
                references(
                    r.relay_spec(),
                    r.namespace().as_deref(),
                    &default_ns,
                    kind,
                    &ns,
                    &name,
                )
            })
            .map(|r| ObjectRef::from_obj(&*r))
            .collect()
    }
}

/// Map a relay event (of one kind) to the identities that use that relay.
pub(super) fn identities_using<R: RelayKind>(
    users: super::users::RelayUsers,
    kind: RelayKindRef,
) -> impl Fn(Arc<R>) -> Vec<ObjectRef<SenderIdentity>> + Send + Sync + 'static {
    // A cluster relay has no namespace; identities in any namespace may use it.
    move |r| users.of(kind, r.namespace().as_deref(), &r.name_any())
}
