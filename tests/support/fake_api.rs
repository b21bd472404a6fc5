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
    version: u64,
    writes: Vec<(String, String)>,
}

/// The fake API server. Clone it freely: clones share state.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": reason, "message": message, "code": code})
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

    /// (method, path) of every write so far.
    pub fn writes(&self) -> Vec<(String, String)> {
        self.state.lock().expect("lock").writes.clone()
    }

    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let (code, value) = self.answer(&method, &path, &content_type, body);
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&value).unwrap_or_default()))
            .expect("response")
    }

    fn answer(
        &self,
        method: &Method,
        path: &str,
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
                s.objects.insert(item, obj.clone());
                (StatusCode::OK, obj)
            }
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                status(405, "MethodNotAllowed", "unsupported"),
            ),
        }
    }
}
