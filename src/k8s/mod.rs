//! The thin Kubernetes layer: the operator's field manager, the one status writer
//! (server-side apply with a resourceVersion precondition), the one 409 → conflict
//! mapping, ownership checks, and the API server as a [`crate::relay::Source`].
//!
//! Controllers and the confirmation endpoint use it; it uses only `api` and the
//! domain, never a controller.

pub mod backoff;
pub mod source;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// What a status write produced. The API server answers with the whole object
/// (managedFields and all); only its version is read from it, the rest is skipped
/// unparsed (a burst of ten thousand writes must not parse and drop ten thousand
/// objects).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Written {
    #[serde(default)]
    metadata: WrittenMeta,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
struct WrittenMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
}

impl Written {
    /// The object's version after the write.
    pub fn resource_version(&self) -> Option<&str> {
        self.metadata.resource_version.as_deref()
    }
}

/// Write `.status` with server-side apply (the operator owns it), only if the object
/// is still at the version `obj` was read at: a writer that read a stale copy gets
/// [`WriteError::Conflict`] and looks again instead of overwriting. Returns the
/// version written.
pub async fn apply_status<K, S>(api: &Api<K>, obj: &K, status: &S) -> Result<Written, WriteError>
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
    let mut request = kube::core::Request::new(api.resource_url())
        .patch_subresource(
            "status",
            &name,
            // fieldValidation=Ignore: the patch is serialised from the operator's own
            // types (crds/ is generated from them), so it has no duplicate or unknown
            // field to report, and the API server skips a second, strict YAML parse
            // of every status write.
            &PatchParams::apply(MANAGER).force().validation_ignore(),
            &Patch::Apply(&patch),
        )
        .map_err(|e| WriteError::Api(kube::Error::BuildRequest(e)))?;
    request.extensions_mut().insert("patch_status");
    api.clone()
        .into_client()
        .request::<Written>(request)
        .await
        .map_err(write_error)
}

/// The versions of objects this process has replaced by its own status writes, until
/// the caches show a newer one. A reconcile can start from a cached copy that its own
/// last reconcile already replaced (woken by the watch event of an intermediate write,
/// or by anything else before the cache has the last write): a decision made from it
/// would be undone by the conflict of its write, after it had read Secrets and perhaps
/// minted a new confirmation attempt. [`OwnWrites::is_superseded`] says so first.
#[derive(Debug, Default)]
pub struct OwnWrites(Mutex<OwnWritesState>);

#[derive(Debug, Default)]
struct OwnWritesState {
    by_uid: HashMap<String, Replaced>,
    /// When entries were last swept: at most once per [`ECHO_GRACE`], not on every
    /// call (a write per reconcile must not walk every entry).
    swept: Option<Instant>,
}

#[derive(Debug)]
struct Replaced {
    /// resourceVersions this process wrote over (precondition of each write).
    versions: Vec<String>,
    /// The resourceVersion its last write produced: the watch event carrying it is
    /// this process's own write coming back ([`OwnWrites::is_echo`]).
    produced: Option<String>,
    at: Instant,
    /// When the write came back through the watch (the cache holds it since).
    echoed: Option<Instant>,
    /// A reconcile found a copy this entry supersedes and waits for the cache: the
    /// echo must wake it, not be filtered.
    waiting: bool,
}

/// Entries are dropped once the cache shows anything else, or after this long (a watch
/// that never delivers the write; the object was deleted).
const OWN_WRITES_TTL: Duration = Duration::from_secs(60);
/// An entry stays this long after its write came back: a reconcile that read the
/// cache just before the echo landed must still learn that its copy is superseded.
/// Entries are swept at most this often (a stale entry is never used meanwhile:
/// [`OwnWrites::is_superseded`] checks its age).
const ECHO_GRACE: Duration = Duration::from_secs(5);

impl OwnWritesState {
    /// Drop entries past [`OWN_WRITES_TTL`] or echoed more than [`ECHO_GRACE`] ago,
    /// at most once per [`ECHO_GRACE`] (a burst of ten thousand writes must not
    /// leave ten thousand entries until the next write long after).
    fn sweep(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|t| now.duration_since(t) < ECHO_GRACE)
        {
            return;
        }
        self.by_uid.retain(|_, r| {
            now.duration_since(r.at) < OWN_WRITES_TTL
                && r.echoed.is_none_or(|e| now.duration_since(e) < ECHO_GRACE)
        });
        self.swept = Some(now);
    }
}

impl OwnWrites {
    /// A status write of the object `uid` replaced version `before` with `after`.
    pub fn replaced(&self, uid: Option<&str>, before: Option<&str>, after: Option<&str>) {
        let (Some(uid), Some(before)) = (uid, before) else {
            return;
        };
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        state.sweep(now);
        let entry = state
            .by_uid
            .entry(uid.to_string())
            .or_insert_with(|| Replaced {
                versions: Vec::new(),
                produced: None,
                at: now,
                echoed: None,
                waiting: false,
            });
        entry.at = now;
        entry.echoed = None;
        entry.waiting = false;
        entry.produced = after.map(str::to_string);
        if !entry.versions.iter().any(|v| v == before) {
            entry.versions.push(before.to_string());
        }
    }

    /// [`apply_status`], remembering on success that `obj`'s version was written over.
    pub async fn apply_status<K, S>(
        &self,
        api: &Api<K>,
        obj: &K,
        status: &S,
    ) -> Result<Written, WriteError>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
        S: Serialize + std::fmt::Debug,
    {
        let written = apply_status(api, obj, status).await?;
        self.replaced(
            obj.meta().uid.as_deref(),
            obj.meta().resource_version.as_deref(),
            written.resource_version(),
        );
        Ok(written)
    }

    /// Is this copy exactly what this process's last status write produced? Its
    /// watch event then brings nothing to decide: the write was the decision, and the
    /// reconcile that made it has already scheduled the next one. Controllers drop
    /// such events from their own kind's triggers (other kinds still see them: an
    /// identity is woken by its relay turning Ready).
    ///
    /// Not an echo, though, when a reconcile waits for exactly this: it found a
    /// superseded copy ([`OwnWrites::is_superseded`]) and this event wakes it. The
    /// entry ends [`ECHO_GRACE`] after its echo: the cache holds the write since, and
    /// a reconcile that read the cache just before still learns its copy is stale.
    pub fn is_echo(&self, uid: Option<&str>, version: Option<&str>) -> bool {
        let (Some(uid), Some(version)) = (uid, version) else {
            return false;
        };
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        state.sweep(now);
        let Some(entry) = state.by_uid.get_mut(uid) else {
            return false;
        };
        if entry.produced.as_deref() != Some(version) {
            return false;
        }
        entry.echoed.get_or_insert(now);
        !entry.waiting
    }

    /// Is `version` of `uid` one this process has already written over? Any other
    /// version means the cache has caught up: the entry is forgotten.
    pub fn is_superseded(&self, uid: Option<&str>, version: Option<&str>) -> bool {
        let (Some(uid), Some(version)) = (uid, version) else {
            return false;
        };
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = state.by_uid.get_mut(uid) else {
            return false;
        };
        if entry.versions.iter().any(|v| v == version) && entry.at.elapsed() < OWN_WRITES_TTL {
            entry.waiting = true;
            return true;
        }
        state.by_uid.remove(uid);
        false
    }

    /// Objects with versions remembered (for tests and metrics).
    pub fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_uid
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Is `uid` the controller owner among these owner references?
pub fn controlled_by(owners: Option<&Vec<OwnerReference>>, uid: &str) -> bool {
    owners
        .into_iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_written_over_are_superseded_until_the_cache_moves_on() {
        let own = OwnWrites::default();
        assert!(!own.is_superseded(Some("u"), Some("1")));
        // Reconcile read 1, wrote the attempt (2), then the result (3).
        own.replaced(Some("u"), Some("1"), Some("2"));
        own.replaced(Some("u"), Some("2"), Some("3"));
        assert!(own.is_superseded(Some("u"), Some("1")));
        assert!(own.is_superseded(Some("u"), Some("2")));
        assert!(!own.is_superseded(Some("other"), Some("2")));
        // The cache shows the last write (or anything newer): forgotten.
        assert!(!own.is_superseded(Some("u"), Some("3")));
        assert!(own.is_empty());
        assert!(!own.is_superseded(Some("u"), Some("2")));
    }

    #[test]
    fn objects_without_uid_or_version_are_never_superseded() {
        let own = OwnWrites::default();
        own.replaced(None, Some("1"), Some("2"));
        own.replaced(Some("u"), None, Some("2"));
        assert!(own.is_empty());
        assert!(!own.is_superseded(Some("u"), None));
    }

    #[test]
    fn old_and_echoed_entries_are_swept() {
        let own = OwnWrites::default();
        for i in 0..100 {
            own.replaced(Some(&i.to_string()), Some("1"), Some("2"));
        }
        // Half came back through the watch.
        for i in 0..50 {
            assert!(own.is_echo(Some(&i.to_string()), Some("2")));
        }
        let age = |d: Duration| {
            let mut state = own.0.lock().unwrap_or_else(|e| e.into_inner());
            for r in state.by_uid.values_mut() {
                r.at = r.at.checked_sub(d).expect("uptime over a minute");
                r.echoed = r.echoed.map(|e| e.checked_sub(d).expect("uptime"));
            }
            state.swept = state.swept.map(|s| s.checked_sub(d).expect("uptime"));
        };
        // Within the grace, echoed entries still say their old version is stale.
        own.replaced(Some("new"), Some("1"), Some("2"));
        assert_eq!(own.len(), 101);
        assert!(own.is_superseded(Some("0"), Some("1")));
        // Past it, they go; the others stay until their TTL.
        age(ECHO_GRACE);
        own.replaced(Some("newer"), Some("1"), Some("2"));
        assert_eq!(own.len(), 52);
        age(OWN_WRITES_TTL);
        assert!(!own.is_echo(Some("x"), Some("2")));
        assert_eq!(own.len(), 0);
    }

    #[test]
    fn an_echo_wakes_a_reconcile_that_waits_for_it() {
        let own = OwnWrites::default();
        own.replaced(Some("u"), Some("1"), Some("2"));
        // A reconcile started from 1 (read just before the write came back): it
        // waits, and the echo of 2 is then the event that wakes it.
        assert!(own.is_superseded(Some("u"), Some("1")));
        assert!(!own.is_echo(Some("u"), Some("2")));
        // It runs on 2 and the entry ends.
        assert!(!own.is_superseded(Some("u"), Some("2")));
        assert!(own.is_empty());
    }

    #[test]
    fn only_the_version_a_write_produced_is_its_echo() {
        let own = OwnWrites::default();
        assert!(!own.is_echo(Some("u"), Some("2")));
        own.replaced(Some("u"), Some("1"), Some("2"));
        // The version written over, a later one (someone else's change), another
        // object, no version: not echoes.
        assert!(!own.is_echo(Some("u"), Some("1")));
        assert!(!own.is_echo(Some("u"), Some("3")));
        assert!(own.is_echo(Some("u"), Some("2")));
        // The entry outlives its echo a little: a reconcile that read 1 just
        // before the echo landed still learns that 1 is stale.
        assert!(own.is_echo(Some("u"), Some("2")));
        assert_eq!(own.len(), 1);
        assert!(own.is_superseded(Some("u"), Some("1")));
        assert!(!own.is_echo(Some("u"), Some("3")));
        assert!(!own.is_echo(Some("v"), Some("2")));
        assert!(!own.is_echo(Some("u"), None));
        // A second write: only its version is the echo now.
        own.replaced(Some("u"), Some("2"), Some("4"));
        assert!(!own.is_echo(Some("u"), Some("2")));
        assert!(own.is_echo(Some("u"), Some("4")));
    }
}
