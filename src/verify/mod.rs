//! `smtp-relay-operator verify`: the controller's verification, offline, on manifests.
//!
//! Reads SmtpRelay / ClusterSmtpRelay manifests and the Secrets and ConfigMaps they
//! reference from YAML or JSON files, then runs [`evaluate`] — the very function the
//! controller runs — with a file-backed [`Source`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::api::{ClusterSmtpRelay, SmtpRelay, SmtpRelaySpec, SmtpRelayStatus};
use crate::k8s::source::KubeSource;
use crate::relay::{Fetched, RelayRef, Source, SourceError, evaluate, types};
use crate::smtp::HostLimiter;

mod domains;
pub use domains::*;

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
    #[error("no SmtpRelay, ClusterSmtpRelay or SenderIdentity found in the given files")]
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
    /// A ClusterSmtpRelay claiming to be the default (spec.default).
    pub cluster_default: bool,
}

/// Everything read from the files.
#[derive(Debug, Default)]
pub struct Manifests {
    pub relays: Vec<FileRelay>,
    pub identities: Vec<FileIdentity>,
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
    if m.relays.is_empty() && m.identities.is_empty() {
        return Err(InputError::NoRelays);
    }
    Ok(m)
}

/// What a valid document is, once validated.
#[derive(Debug)]
pub enum Checked {
    /// A SmtpRelay or ClusterSmtpRelay, ready to verify.
    Relay(Box<FileRelay>),
    /// A SenderIdentity: its domain is checked (DNS) when checks are on.
    Identity(Box<FileIdentity>),
    /// A Secret or ConfigMap, as the API server would store it.
    Data {
        secret: bool,
        namespace: String,
        name: String,
        fetched: Fetched,
    },
    /// A kind `verify` does not read.
    Other,
}

/// A manifest's kind, name and namespace, for messages (clipped: they may be anything).
fn describe(value: &Value) -> (String, String) {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
    let kind = text(value.get("kind"));
    let name = text(value.get("metadata").and_then(|m| m.get("name")));
    (crate::table::clip(&kind, 64), crate::table::clip(&name, 64))
}

/// Validate one document as the API server would (metadata, schema, CEL rules;
/// Secrets and ConfigMaps as their own validation does) and read it: the function
/// `verify` refuses a document with. `origin` names it in what it returns.
pub fn check_document(value: &Value, origin: &str) -> Result<Checked, Vec<String>> {
    let Some(obj) = value.as_object() else {
        return Err(vec![format!(
            "a manifest must be a mapping with apiVersion and kind, not {}",
            match value {
                Value::Array(_) => "a list",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "something else",
            }
        )]);
    };
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let meta = obj.get("metadata");
    let text = |key: &str| {
        meta.and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if let Some(version) = api_version.strip_prefix(&format!("{}/", crate::api::GROUP)) {
        let validator = crate::schema::validator(kind)
            .filter(|_| version == crate::api::VERSION)
            .ok_or_else(|| {
                vec![format!(
                    "no kind {:?} is served in version {:?}",
                    crate::table::clip(kind, 64),
                    crate::table::clip(api_version, 64)
                )]
            })?;
        let mut errors = crate::schema::validate_metadata(value, validator.namespaced());
        let normalized = match validator.validate(value) {
            Ok(n) => Some(n),
            Err(e) => {
                errors.extend(e);
                None
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let normalized = normalized.unwrap_or(Value::Null);
        let namespace = Some(text("namespace"))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let name = text("name");
        let generation = meta
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .or(Some(1));
        let read = |e: serde_path_to_error::Error<serde_json::Error>| {
            vec![format!("{}: {}", e.path(), e.inner())]
        };
        return Ok(match kind {
            "SmtpRelay" => {
                let r: SmtpRelay = serde_path_to_error::deserialize(&normalized).map_err(read)?;
                // The CRD's CEL rule for this uses nested has(), which the offline
                // CEL evaluator does not handle; check it directly.
                if let Some(field) = r.spec.cross_namespace_refs().first() {
                    return Err(vec![format!(
                        "{field} {}",
                        crate::api::NAMESPACED_REF_MESSAGE
                    )]);
                }
                Checked::Relay(Box::new(FileRelay {
                    kind: "SmtpRelay",
                    namespace: Some(namespace),
                    name,
                    generation,
                    spec: r.spec,
                    origin: origin.to_string(),
                    cluster_default: false,
                }))
            }
            "ClusterSmtpRelay" => {
                let r: ClusterSmtpRelay =
                    serde_path_to_error::deserialize(&normalized).map_err(read)?;
                Checked::Relay(Box::new(FileRelay {
                    kind: "ClusterSmtpRelay",
                    namespace: None,
                    name,
                    generation,
                    cluster_default: r.spec.default,
                    spec: r.spec.relay,
                    origin: origin.to_string(),
                }))
            }
            _ => {
                let i: crate::api::SenderIdentity =
                    serde_path_to_error::deserialize(&normalized).map_err(read)?;
                Checked::Identity(Box::new(FileIdentity {
                    namespace,
                    name,
                    spec: i.spec,
                    origin: origin.to_string(),
                }))
            }
        });
    }
    if api_version == "v1" && matches!(kind, "Secret" | "ConfigMap") {
        let data = crate::schema::validate_data_object(value)?;
        let labels = meta
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        return Ok(Checked::Data {
            secret: kind == "Secret",
            namespace: Some(text("namespace"))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".to_string()),
            name: text("name"),
            fetched: Fetched {
                data,
                version: String::new(),
                labels,
            },
        });
    }
    Ok(Checked::Other)
}

/// Read and check one document: `None` for an empty one.
fn read_document(
    chunk: &crate::manifest::Chunk<'_>,
    path: &str,
) -> Result<Option<Checked>, InputError> {
    let refuse = |message: String| InputError::Document {
        path: path.to_string(),
        doc: chunk.number,
        message,
    };
    let value = crate::manifest::parse(chunk).map_err(|e| refuse(e.message))?;
    if value.is_null() {
        return Ok(None);
    }
    let origin = format!("{path}#{}", chunk.number);
    check_document(&value, &origin).map(Some).map_err(|errors| {
        let (kind, name) = describe(&value);
        let what = match (kind.is_empty(), name.is_empty()) {
            (false, false) => format!("{kind} {name:?} is invalid: "),
            (false, true) => format!("{kind} is invalid: "),
            _ => String::new(),
        };
        refuse(format!("{what}{}", errors.join("; ")))
    })
}

/// Parse one (multi-document) YAML or JSON text into `m`, refusing the first document
/// the API server would refuse. Documents are read and checked on every core (each
/// is independent, as kubectl cuts them); the verdict is the same as in file order.
pub fn load_text(text: &str, path: &str, m: &mut Manifests) -> Result<(), InputError> {
    let chunks = crate::manifest::split(text).map_err(|e| InputError::Document {
        path: path.to_string(),
        doc: e.document,
        message: e.message,
    })?;
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .min(chunks.len().div_ceil(64))
        .max(1);
    let results: Vec<Result<Option<Checked>, InputError>> = if threads == 1 {
        chunks.iter().map(|c| read_document(c, path)).collect()
    } else {
        let per = chunks.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = chunks
                .chunks(per)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|c| read_document(c, path))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| {
                    w.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    };
    for result in results {
        match result? {
            Some(Checked::Relay(relay)) => m.relays.push(*relay),
            Some(Checked::Data {
                secret,
                namespace,
                name,
                fetched,
            }) => {
                let key = (namespace, name);
                if secret {
                    m.secrets.insert(key, fetched);
                } else {
                    m.config_maps.insert(key, fetched);
                }
            }
            Some(Checked::Identity(i)) => m.identities.push(*i),
            Some(Checked::Other) | None => {}
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

/// How `verify` runs the relays' sessions.
#[derive(Clone, Debug)]
pub struct Options {
    /// Namespace for ClusterSmtpRelay references that name none.
    pub operator_namespace: String,
    /// Concurrent SMTP sessions per relay host.
    pub sessions_per_host: usize,
    /// Where the relays may send the sessions (the same rules as the operator's).
    pub destinations: Arc<crate::smtp::DestinationPolicy>,
    /// Sender domain and blocklist checks (None: off).
    pub deliverability: Option<crate::deliverability::Checker>,
}

/// Verify every relay concurrently (per-host cap applies), reporting progress on `progress`.
pub async fn run(
    manifests: Manifests,
    cluster: Option<KubeSource>,
    options: &Options,
    progress: impl Fn(&str) + Send + Sync,
) -> Vec<Verdict> {
    let operator_namespace = options.operator_namespace.as_str();
    let sessions_per_host = options.sessions_per_host;
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
                crate::table::clip(&r.spec.host, 64),
                crate::relay::effective_port(&r.spec)
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
                destinations: &options.destinations,
                blocklists: options.deliverability.as_ref(),
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
            let took = verdict
                .status
                .last_verification
                .as_ref()
                .and_then(|l| l.duration_micros.get("total").copied())
                .unwrap_or(0);
            progress(&format!(
                "  {label}: Ready={ready} ({})",
                crate::relay::human_micros(took)
            ));
            if let Some(d) = verdict.condition(types::DELIVERED) {
                progress(&format!(
                    "  {label}: Delivered={:?} {}: {}",
                    d.status, d.reason, d.message
                ));
            }
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
