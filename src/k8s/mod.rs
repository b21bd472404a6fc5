//! The thin Kubernetes layer: the operator's field manager, the one status writer
//! (server-side apply with a resourceVersion precondition), the one 409 → conflict
//! mapping, ownership checks, and the API server as a [`crate::relay::Source`].
//!
//! Controllers and the confirmation endpoint use it; it uses only `api` and the
//! domain, never a controller.

pub mod source;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Field manager for every write the operator makes.
pub const MANAGER: &str = "smtp-relay-operator";

/// A status write that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The object is no longer at the version the decision was made from (409).
    #[error("the object changed since it was read")]
    Conflict,
    #[error("{0}")]
    Api(#[source] kube::Error),
}

/// The one mapping of a write's error: 409 is a conflict, anything else an API error.
pub fn write_error(e: kube::Error) -> WriteError {
    match e {
        kube::Error::Api(s) if s.code == 409 => WriteError::Conflict,
        e => WriteError::Api(e),
    }
}

/// Write `.status` with server-side apply (the operator owns it), only if the object
/// is still at the version `obj` was read at: a writer that read a stale copy gets
/// [`WriteError::Conflict`] and looks again instead of overwriting. Returns the object
/// as written.
pub async fn apply_status<K, S>(api: &Api<K>, obj: &K, status: &S) -> Result<K, WriteError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + std::fmt::Debug,
{
    #[derive(Serialize, Debug)]
    struct Meta {
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        #[serde(rename = "resourceVersion", skip_serializing_if = "Option::is_none")]
        resource_version: Option<String>,
    }
    #[derive(Serialize, Debug)]
    struct StatusPatch<'a, S> {
        #[serde(rename = "apiVersion")]
        api_version: String,
        kind: String,
        metadata: Meta,
        status: &'a S,
    }
    let name = obj.name_any();
    let namespace = obj.namespace();
    let patch = StatusPatch {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        metadata: Meta {
            name: name.clone(),
            namespace,
            resource_version: obj.resource_version(),
        },
        status,
    };
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(write_error)
}

/// Is `uid` the controller owner among these owner references?
pub fn controlled_by(owners: Option<&Vec<OwnerReference>>, uid: &str) -> bool {
    owners
        .into_iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}
