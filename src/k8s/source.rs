//! The API server as a [`Source`] of Secrets and ConfigMaps: direct GETs of exactly
//! what a relay references, so nothing unrelated is ever cached.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};

use crate::relay::{Fetched, InputKey, Source, SourceError};

/// Reads referenced objects from the API server.
#[derive(Clone)]
pub struct KubeSource {
    pub client: Client,
    /// With a key, an object's version is a keyed digest of its data, so that a
    /// change of its metadata alone (an annotation from a secrets manager) is not a
    /// change of the relay's inputs; without one, its resourceVersion.
    pub input_key: Option<InputKey>,
}

impl KubeSource {
    fn version(
        &self,
        resource_version: Option<String>,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> String {
        match &self.input_key {
            Some(key) => format!("d{}", key.fingerprint(data)),
            None => resource_version.unwrap_or_default(),
        }
    }
}

fn source_error(what: String, e: kube::Error) -> SourceError {
    match &e {
        kube::Error::Api(status) if status.code == 403 => SourceError::Forbidden(what),
        _ => SourceError::Other {
            what,
            message: e.to_string(),
        },
    }
}

/// Read an object from the API server's watch cache (resourceVersion=0) rather
/// than from etcd: reconciles are triggered by watch events the cache has already
/// seen, so it is fresh enough, and a thousand relays cost the API server no quorum
/// read. None when it does not exist.
async fn cached_get<K>(api: &Api<K>, name: &str) -> Result<Option<K>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_with(name, &kube::api::GetParams::any()).await {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

impl Source for KubeSource {
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Fetched>, SourceError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = cached_get(&api, name)
            .await
            .map_err(|e| source_error(format!("Secret {namespace}/{name}"), e))?;
        Ok(secret.map(|s| {
            let mut data: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            // stringData is write-only on a real API server, but tolerate it.
            for (k, v) in s.string_data.unwrap_or_default() {
                data.entry(k).or_insert_with(|| v.into_bytes());
            }
            Fetched {
                version: self.version(s.metadata.resource_version, &data),
                data,
                labels: s.metadata.labels.unwrap_or_default(),
            }
        }))
    }

    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Fetched>, SourceError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let cm = cached_get(&api, name)
            .await
            .map_err(|e| source_error(format!("ConfigMap {namespace}/{name}"), e))?;
        Ok(cm.map(|c| {
            let data: BTreeMap<String, Vec<u8>> = c
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .chain(
                    c.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                )
                .collect();
            Fetched {
                version: self.version(c.metadata.resource_version, &data),
                data,
                labels: c.metadata.labels.unwrap_or_default(),
            }
        }))
    }
}

/// Secrets and ConfigMaps read for confirmation mails, kept for a few seconds: the
/// identities of one relay, woken together when it turns Ready, read its credentials
/// and CA bundle once instead of once each. Nothing else reads through it (relays
/// and published connection Secrets read fresh); a rotation is seen after at most
/// [`MAIL_INPUTS_TTL`], and a mail sent with the old password meanwhile fails AUTH
/// and is retried. Only what was read in the last seconds is held.
#[derive(Debug, Default)]
pub struct RecentReads(std::sync::Mutex<BTreeMap<(bool, String, String), Recent>>);

#[derive(Debug)]
struct Recent {
    at: std::time::Instant,
    value: Option<Fetched>,
}

/// How long a read serves confirmation mails.
pub const MAIL_INPUTS_TTL: std::time::Duration = std::time::Duration::from_secs(5);

impl RecentReads {
    fn get(&self, key: &(bool, String, String)) -> Option<Option<Fetched>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|r| r.at.elapsed() < MAIL_INPUTS_TTL)
            .map(|r| r.value.clone())
    }

    fn put(&self, key: (bool, String, String), value: Option<Fetched>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, r| r.at.elapsed() < MAIL_INPUTS_TTL);
        map.insert(
            key,
            Recent {
                at: std::time::Instant::now(),
                value,
            },
        );
    }

    /// Objects held now.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A [`KubeSource`] that answers from [`RecentReads`] when it can.
pub struct RecentSource<'a> {
    pub inner: KubeSource,
    pub recent: &'a RecentReads,
}

impl RecentSource<'_> {
    /// A recent read of (`secret`, namespace, name), or `read` kept for the next.
    async fn through(
        &self,
        key: (bool, String, String),
        read: impl Future<Output = Result<Option<Fetched>, SourceError>>,
    ) -> Result<Option<Fetched>, SourceError> {
        if let Some(hit) = self.recent.get(&key) {
            return Ok(hit);
        }
        let value = read.await?;
        self.recent.put(key, value.clone());
        Ok(value)
    }
}

impl Source for RecentSource<'_> {
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Fetched>, SourceError> {
        let key = (true, namespace.to_string(), name.to_string());
        self.through(key, self.inner.secret(namespace, name)).await
    }

    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Fetched>, SourceError> {
        let key = (false, namespace.to_string(), name.to_string());
        self.through(key, self.inner.config_map(namespace, name))
            .await
    }
}
