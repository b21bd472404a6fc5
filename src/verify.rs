//! `smtp-relay-operator verify`: the controller's verification, offline, on manifests.
//!
//! Reads SmtpRelay / ClusterSmtpRelay manifests and the Secrets and ConfigMaps they
//! reference from YAML or JSON files, then runs [`evaluate`] — the very function the
//! controller runs — with a file-backed [`Source`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use kube::CustomResourceExt;
use serde::Serialize;
use serde_json::Value;

use crate::api::{ClusterSmtpRelay, SmtpRelay, SmtpRelaySpec, SmtpRelayStatus};
use crate::controller::relay::{Fetched, RelayRef, Source, SourceError, evaluate, types};
use crate::controller::source::KubeSource;
use crate::smtp::HostLimiter;

/// Unusable input: which file, which document, what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{path} (document {doc}): {message}")]
    Document {
        path: String,
        doc: usize,
        message: String,
    },
    #[error("no SmtpRelay or ClusterSmtpRelay found in the given files")]
    NoRelays,
}

/// A relay read from a file.
#[derive(Clone, Debug)]
pub struct FileRelay {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub generation: Option<i64>,
    pub spec: SmtpRelaySpec,
    pub origin: String,
}

/// Everything read from the files.
#[derive(Debug, Default)]
pub struct Manifests {
    pub relays: Vec<FileRelay>,
    pub secrets: BTreeMap<(String, String), Fetched>,
    pub config_maps: BTreeMap<(String, String), Fetched>,
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let err = |m: String| InputError::File {
        path: path.display().to_string(),
        message: m,
    };
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| err(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            let is_manifest = p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            if p.is_dir() || is_manifest {
                collect_files(&p, out)?;
            }
        }
        Ok(())
    } else if path.exists() {
        out.push(path.to_path_buf());
        Ok(())
    } else {
        Err(err("no such file or directory".into()))
    }
}

/// Read every manifest under `paths`.
pub fn load(paths: &[PathBuf]) -> Result<Manifests, InputError> {
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files)?;
    }
    let mut m = Manifests::default();
    for file in files {
        let path = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|e| InputError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        load_text(&text, &path, &mut m)?;
    }
    if m.relays.is_empty() {
        return Err(InputError::NoRelays);
    }
    Ok(m)
}

/// Parse one (multi-document) YAML text into `m`.
pub fn load_text(text: &str, path: &str, m: &mut Manifests) -> Result<(), InputError> {
    use serde::Deserialize as _;
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc_no = i + 1;
        let bad = |message: String| InputError::Document {
            path: path.to_string(),
            doc: doc_no,
            message,
        };
        let value = Value::deserialize(doc).map_err(|e| bad(format!("not valid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        let meta = value.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let namespace = meta
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        match (api_version, kind) {
            ("smtprelay.io/v1alpha1", "SmtpRelay" | "ClusterSmtpRelay") => {
                let name = name.ok_or_else(|| bad("metadata.name: Required value".into()))?;
                let crd = if kind == "SmtpRelay" {
                    SmtpRelay::crd()
                } else {
                    ClusterSmtpRelay::crd()
                };
                let errors = crate::schema::validate_against_crd(&crd, &value);
                if !errors.is_empty() {
                    return Err(bad(format!(
                        "{kind} {name} is invalid: {}",
                        errors.join("; ")
                    )));
                }
                let generation = meta
                    .and_then(|m| m.get("generation"))
                    .and_then(Value::as_i64)
                    .or(Some(1));
                let origin = format!("{path}#{doc_no}");
                let relay = if kind == "SmtpRelay" {
                    let r: SmtpRelay = serde_path_to_error::deserialize(&value)
                        .map_err(|e| bad(format!("{}: {}", e.path(), e.inner())))?;
                    // The CRD's CEL rule for this uses nested has(), which the offline
                    // CEL evaluator does not handle; check it directly.
                    if let Some(field) = r.spec.cross_namespace_refs().first() {
                        return Err(bad(format!(
                            "{kind} {name} is invalid: {field} {}",
                            crate::api::NAMESPACED_REF_MESSAGE
                        )));
                    }
                    FileRelay {
                        kind: "SmtpRelay",
                        namespace: Some(namespace),
                        name,
                        generation,
                        spec: r.spec,
                        origin,
                    }
                } else {
                    let r: ClusterSmtpRelay = serde_path_to_error::deserialize(&value)
                        .map_err(|e| bad(format!("{}: {}", e.path(), e.inner())))?;
                    FileRelay {
                        kind: "ClusterSmtpRelay",
                        namespace: None,
                        name,
                        generation,
                        spec: r.spec.relay,
                        origin,
                    }
                };
                m.relays.push(relay);
            }
            ("v1", "Secret" | "ConfigMap") => {
                let name = name.ok_or_else(|| bad("metadata.name: Required value".into()))?;
                let mut data = BTreeMap::new();
                let binary_key = if kind == "Secret" {
                    "data"
                } else {
                    "binaryData"
                };
                for (k, v) in value
                    .get(binary_key)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let text = v.as_str().unwrap_or("");
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(text.trim())
                        .map_err(|_| bad(format!("{binary_key}.{k}: not valid base64")))?;
                    data.insert(k.clone(), bytes);
                }
                let text_key = if kind == "Secret" {
                    "stringData"
                } else {
                    "data"
                };
                for (k, v) in value
                    .get(text_key)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let s = v
                        .as_str()
                        .ok_or_else(|| bad(format!("{text_key}.{k}: must be a string")))?;
                    data.insert(k.clone(), s.as_bytes().to_vec());
                }
                let labels = meta
                    .and_then(|m| m.get("labels"))
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect();
                let fetched = Fetched {
                    data,
                    version: String::new(),
                    labels,
                };
                let key = (namespace, name);
                if kind == "Secret" {
                    m.secrets.insert(key, fetched);
                } else {
                    m.config_maps.insert(key, fetched);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Secrets from files, then (optionally) from the cluster.
pub struct FileSource {
    pub secrets: BTreeMap<(String, String), Fetched>,
    pub config_maps: BTreeMap<(String, String), Fetched>,
    pub cluster: Option<KubeSource>,
}

impl Source for FileSource {
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Fetched>, SourceError> {
        if let Some(s) = self.secrets.get(&(namespace.to_string(), name.to_string())) {
            return Ok(Some(s.clone()));
        }
        match &self.cluster {
            Some(c) => c.secret(namespace, name).await,
            None => Ok(None),
        }
    }
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Fetched>, SourceError> {
        if let Some(s) = self
            .config_maps
            .get(&(namespace.to_string(), name.to_string()))
        {
            return Ok(Some(s.clone()));
        }
        match &self.cluster {
            Some(c) => c.config_map(namespace, name).await,
            None => Ok(None),
        }
    }
}

/// One relay's verdict.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub source: String,
    #[serde(skip)]
    pub spec: SmtpRelaySpec,
    pub status: SmtpRelayStatus,
}

impl Verdict {
    pub fn ready(&self) -> bool {
        self.condition(types::READY)
            .is_some_and(|c| c.status == crate::api::ConditionStatus::True)
    }
    pub fn condition(&self, t: &str) -> Option<&crate::api::Condition> {
        self.status.conditions.iter().find(|c| c.type_ == t)
    }
}

/// Verify every relay concurrently (per-host cap applies), reporting progress on `progress`.
pub async fn run(
    manifests: Manifests,
    cluster: Option<KubeSource>,
    operator_namespace: &str,
    sessions_per_host: usize,
    progress: impl Fn(&str) + Send + Sync,
) -> Vec<Verdict> {
    let source = Arc::new(FileSource {
        secrets: manifests.secrets,
        config_maps: manifests.config_maps,
        cluster,
    });
    let limiter = Arc::new(HostLimiter::new(sessions_per_host));
    let progress = &progress;
    let jobs = manifests.relays.into_iter().map(|r| {
        let source = Arc::clone(&source);
        let limiter = Arc::clone(&limiter);
        async move {
            let label = match &r.namespace {
                Some(ns) => format!("{} {ns}/{}", r.kind, r.name),
                None => format!("{} {}", r.kind, r.name),
            };
            progress(&format!(
                "verifying {label} ({}:{}, {:?})...",
                r.spec.host,
                crate::controller::relay::effective_port(&r.spec)
                    .map(|p| p.to_string())
                    .unwrap_or_else(|_| "?".into()),
                r.spec.tls.mode
            ));
            let relay_ref = RelayRef {
                kind: r.kind,
                namespace: r.namespace.as_deref(),
                name: &r.name,
                generation: r.generation,
                spec: &r.spec,
                status: None,
                default_namespace: operator_namespace,
            };
            let eval = evaluate(&relay_ref, source.as_ref(), &limiter, true).await;
            let status = eval.status.unwrap_or_default();
            let verdict = Verdict {
                kind: r.kind,
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                source: r.origin.clone(),
                spec: r.spec.clone(),
                status,
            };
            let ready = verdict
                .condition(types::READY)
                .map(|c| format!("{:?} {}", c.status, c.reason))
                .unwrap_or_default();
            let ms = verdict
                .status
                .last_verification
                .as_ref()
                .and_then(|l| l.duration_ms.get("total").copied())
                .unwrap_or(0);
            progress(&format!("  {label}: Ready={ready} ({ms} ms)"));
            verdict
        }
    });
    futures::future::join_all(jobs).await
}

/// The table: `kubectl get` columns plus the failing step and reason, then details.
pub fn render_table(verdicts: &[Verdict]) -> String {
    let header = [
        "KIND", "NAME", "HOST", "PORT", "SECURITY", "AUTH", "SENDER", "USAGE", "READY", "STEP",
        "REASON",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for v in verdicts {
        let ready = v.condition(types::READY);
        rows.push(vec![
            v.kind.to_string(),
            match &v.namespace {
                Some(ns) => format!("{ns}/{}", v.name),
                None => v.name.clone(),
            },
            v.spec.host.clone(),
            v.status.port.map(|p| p.to_string()).unwrap_or_default(),
            format!("{:?}", v.spec.tls.mode),
            v.spec
                .auth
                .as_ref()
                .map(|a| format!("{:?}", a.mechanism))
                .unwrap_or_else(|| "-".into()),
            v.spec.default_sender.address.clone(),
            if v.spec.usage.is_empty() {
                "all".into()
            } else {
                v.spec.usage.join(",")
            },
            ready.map(|c| format!("{:?}", c.status)).unwrap_or_default(),
            v.status
                .last_verification
                .as_ref()
                .and_then(|l| l.failed_step.clone())
                .unwrap_or_else(|| "-".into()),
            ready.map(|c| c.reason.clone()).unwrap_or_default(),
        ]);
    }
    let mut out = crate::table::aligned(&rows, "");
    let failures: Vec<&Verdict> = verdicts.iter().filter(|v| !v.ready()).collect();
    if !failures.is_empty() {
        out.push('\n');
        for v in failures {
            if let Some(c) = v.condition(types::READY) {
                let name = match &v.namespace {
                    Some(ns) => format!("{ns}/{}", v.name),
                    None => v.name.clone(),
                };
                out.push_str(&format!("{} {name}: {}\n", v.kind, c.message));
            }
        }
    }
    out
}
