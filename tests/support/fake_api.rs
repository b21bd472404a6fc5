//! A small in-memory Kubernetes API server behind kube's `Client`, for flows that
//! take several requests (read, apply status with a resourceVersion precondition,
//! merge-patch annotations, apply Secrets). It keeps objects as JSON, bumps
//! resourceVersion on every write and answers 404 / 409 like the real one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    /// Paths whose next status write finds someone else's change (a label) made just
    /// before it, as during a confirmation mail's send: the write conflicts.
    meddle: Vec<String>,
    /// Paths whose next status write fails with 500 (a write lost to a crash).
    fail: Vec<String>,
    version: u64,
    writes: Vec<(String, String)>,
    requests: Vec<Call>,
}

/// One request as RBAC sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
}

/// An API path taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiPath {
    /// "" for the core group, else e.g. "smtprelay.io".
    pub group: String,
    prefix: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl ApiPath {
    pub fn parse(path: &str) -> Option<ApiPath> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, prefix_len) = match *segs.first()? {
            "api" => (String::new(), 2),
            "apis" => (segs.get(1)?.to_string(), 3),
            _ => return None,
        };
        let prefix = segs.get(..prefix_len)?.join("/");
        let rest = &segs[prefix_len..];
        let (namespace, rest) = match rest {
            ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns.to_string()), tail),
            other => (None, other),
        };
        let resource = rest.first()?.to_string();
        Some(ApiPath {
            group,
            prefix,
            namespace,
            resource,
            name: rest.get(1).map(|s| s.to_string()),
            subresource: rest.get(2).map(|s| s.to_string()),
        })
    }

    /// The RBAC verb of a request on this path.
    pub fn verb(&self, method: &str, query: &str) -> &'static str {
        match (method, self.name.is_some()) {
            ("GET", true) => "get",
            ("GET", false) if query.contains("watch=true") || query.contains("watch=1") => "watch",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", _) => "delete",
            _ => "unknown",
        }
    }
}

type FakeBody = http_body_util::Either<
    http_body_util::Full<bytes::Bytes>,
    http_body_util::StreamBody<
        futures::stream::Pending<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>>,
    >,
>;

/// The fake API server. Clone it freely: clones share state.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": reason, "message": message, "code": code})
}

/// What a real API server returns for metadata-only requests.
fn metadata_only(value: Value) -> Value {
    let strip = |o: &Value| json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": o["metadata"].clone()});
    match value.get("items").and_then(Value::as_array) {
        Some(items) => json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
            "metadata": value["metadata"].clone(), "items": items.iter().map(strip).collect::<Vec<_>>()}),
        None => strip(&value),
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl FakeApi {
    pub fn client(&self) -> kube::Client {
        let me = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let me = me.clone();
            async move { Ok::<_, std::convert::Infallible>(me.handle(req).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Store an object at its API path (e.g. `/api/v1/namespaces/ns/secrets/name`).
    pub fn put(&self, path: &str, mut obj: Value) {
        let mut s = self.state.lock().expect("lock");
        s.version += 1;
        obj["metadata"]["resourceVersion"] = json!(s.version.to_string());
        if obj["metadata"].get("uid").is_none() {
            obj["metadata"]["uid"] = json!(format!("uid-{}", s.version));
        }
        if obj["metadata"].get("generation").is_none() {
            obj["metadata"]["generation"] = json!(1);
        }
        s.objects.insert(path.to_string(), obj);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().expect("lock").objects.get(path).cloned()
    }

    /// Every stored object, as "path: json" lines (to search for what must not be there).
    pub fn dump(&self) -> String {
        self.state
            .lock()
            .expect("lock")
            .objects
            .iter()
            .map(|(p, v)| format!("{p}: {v}\n"))
            .collect()
    }

    /// (method, path) of every write so far.
    pub fn writes(&self) -> Vec<(String, String)> {
        self.state.lock().expect("lock").writes.clone()
    }

    /// Fail the next status write to `path` with 500, as if the process had died
    /// before it.
    pub fn fail_next_status_write(&self, path: &str) {
        self.state.lock().expect("lock").fail.push(path.to_string());
    }

    /// Just before the next status write to `path`, change the object (as another
    /// client would), so that the write, based on the previous version, conflicts.
    pub fn meddle_before_status_write(&self, path: &str) {
        self.state
            .lock()
            .expect("lock")
            .meddle
            .push(path.to_string());
    }

    /// Every request so far, reads included.
    pub fn requests(&self) -> Vec<Call> {
        self.state.lock().expect("lock").requests.clone()
    }

    async fn handle(&self, req: Request<Body>) -> Response<FakeBody> {
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        self.respond(&parts, &bytes)
    }

    /// Answer one request (shared by the in-process client and the HTTP server).
    pub fn respond(&self, parts: &http::request::Parts, bytes: &[u8]) -> Response<FakeBody> {
        let method = parts.method.clone();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        self.state.lock().expect("lock").requests.push(Call {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
        });
        if path == "/version" {
            let v = json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0-fake", "platform": "linux/amd64"});
            return Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(http_body_util::Either::Left(http_body_util::Full::new(
                    bytes::Bytes::from(v.to_string()),
                )))
                .expect("response");
        }
        if method == Method::GET
            && ApiPath::parse(&path).is_some_and(|p| p.name.is_none())
            && query.contains("watch=")
        {
            // A watch that stays open and quiet.
            return Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(http_body_util::Either::Right(
                    http_body_util::StreamBody::new(futures::stream::pending()),
                ))
                .expect("response");
        }
        let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        let (code, mut value) = self.answer(&method, &path, &query, &header("content-type"), body);
        if header("accept").contains("as=PartialObjectMetadata") && code.is_success() {
            value = metadata_only(value);
        }
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(http_body_util::Either::Left(http_body_util::Full::new(
                bytes::Bytes::from(serde_json::to_vec(&value).unwrap_or_default()),
            )))
            .expect("response")
    }

    /// Serve the fake over HTTP on 127.0.0.1 (for processes with a kubeconfig).
    pub async fn serve(self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let me = self.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = http_body_util::BodyExt::collect(body)
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                me.respond(&parts, &bytes).map(axum::body::Body::new)
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }

    fn list(&self, s: &State, at: &ApiPath, query: &str) -> Value {
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse::<usize>().ok())
        };
        let all = s.objects.iter().filter(|(p, _)| {
            ApiPath::parse(p).is_some_and(|o| {
                o.prefix == at.prefix
                    && o.resource == at.resource
                    && o.subresource.is_none()
                    && (at.namespace.is_none() || o.namespace == at.namespace)
            })
        });
        let offset = param("continue").unwrap_or(0);
        let limit = param("limit").filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut page: Vec<Value> = all
            .skip(offset)
            .take(limit.saturating_add(1))
            .map(|(_, v)| v.clone())
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        let mut metadata = json!({"resourceVersion": s.version.to_string()});
        if more {
            metadata["continue"] = json!((offset + limit).to_string());
        }
        json!({"kind": "List", "apiVersion": "v1", "metadata": metadata, "items": page})
    }

    fn answer(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut s = self.state.lock().expect("lock");
        if *method != Method::GET {
            s.writes.push((method.to_string(), path.to_string()));
        }
        let (item, sub) = match path.strip_suffix("/status") {
            Some(p) => (p.to_string(), true),
            None => (path.to_string(), false),
        };
        match *method {
            Method::GET if ApiPath::parse(path).is_some_and(|p| p.name.is_none()) => {
                let at = ApiPath::parse(path).expect("parsed");
                (StatusCode::OK, self.list(&s, &at, query))
            }
            Method::GET => match s.objects.get(&item) {
                Some(o) => (StatusCode::OK, o.clone()),
                None => (
                    StatusCode::NOT_FOUND,
                    status(404, "NotFound", &format!("{item} not found")),
                ),
            },
            Method::POST => {
                // Create in a collection: events and the like.
                s.version += 1;
                let mut obj = body;
                let name = obj["metadata"]["name"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("gen-{}", s.version));
                obj["metadata"]["name"] = json!(name);
                obj["metadata"]["resourceVersion"] = json!(s.version.to_string());
                let at = format!("{path}/{name}");
                if s.objects.contains_key(&at) {
                    return (StatusCode::CONFLICT, status(409, "AlreadyExists", "exists"));
                }
                s.objects.insert(at, obj.clone());
                (StatusCode::CREATED, obj)
            }
            Method::PATCH => {
                if sub && let Some(i) = s.fail.iter().position(|p| *p == item) {
                    s.fail.remove(i);
                    return (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        status(500, "InternalError", "the write was lost"),
                    );
                }
                if sub && let Some(i) = s.meddle.iter().position(|p| *p == item) {
                    s.meddle.remove(i);
                    s.version += 1;
                    let version = s.version.to_string();
                    if let Some(o) = s.objects.get_mut(&item) {
                        o["metadata"]["labels"]["meddled"] = json!("yes");
                        o["metadata"]["resourceVersion"] = json!(version);
                    }
                }
                let existing = s.objects.get(&item).cloned();
                let apply = content_type.starts_with("application/apply-patch");
                if let (Some(cur), Some(want)) =
                    (&existing, body["metadata"]["resourceVersion"].as_str())
                    && cur["metadata"]["resourceVersion"].as_str() != Some(want)
                {
                    return (
                        StatusCode::CONFLICT,
                        status(409, "Conflict", "the object has been modified"),
                    );
                }
                let mut obj = match existing {
                    Some(o) => o,
                    None if apply && !sub => json!({"metadata": {}}),
                    None => return (StatusCode::NOT_FOUND, status(404, "NotFound", "not found")),
                };
                if sub {
                    obj["status"] = body["status"].clone();
                } else if apply {
                    let mut b = body.clone();
                    if let Some(m) = b.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                    for key in ["data", "type", "spec"] {
                        if let Some(v) = b.get(key) {
                            obj[key] = v.clone();
                        }
                    }
                    merge(
                        &mut obj,
                        &json!({"apiVersion": b["apiVersion"], "kind": b["kind"], "metadata": b["metadata"]}),
                    );
                } else {
                    merge(&mut obj, &body);
                }
                s.version += 1;
                obj["metadata"]["resourceVersion"] = json!(s.version.to_string());
                if obj["metadata"].get("uid").is_none() {
                    obj["metadata"]["uid"] = json!(format!("uid-{}", s.version));
                }
                s.objects.insert(item.clone(), obj.clone());
                (StatusCode::OK, obj)
            }
            Method::PUT => {
                let Some(cur) = s.objects.get(&item).cloned() else {
                    return (StatusCode::NOT_FOUND, status(404, "NotFound", "not found"));
                };
                if body["metadata"]["resourceVersion"] != cur["metadata"]["resourceVersion"] {
                    return (
                        StatusCode::CONFLICT,
                        status(409, "Conflict", "the object has been modified"),
                    );
                }
                s.version += 1;
                let mut obj = body;
                obj["metadata"]["resourceVersion"] = json!(s.version.to_string());
                s.objects.insert(item, obj.clone());
                (StatusCode::OK, obj)
            }
            Method::DELETE => match s.objects.remove(&item) {
                Some(o) => (StatusCode::OK, o),
                None => (StatusCode::NOT_FOUND, status(404, "NotFound", "not found")),
            },
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                status(405, "MethodNotAllowed", "unsupported"),
            ),
        }
    }
}
