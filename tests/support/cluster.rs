//! A real Kubernetes API server for tests: `SMTP_RELAY_E2E_KUBECONFIG` names its
//! kubeconfig (`make test` starts ../shared/envtest and sets it). Without it the
//! real-API tests print why they are skipped, unless `SMTP_RELAY_E2E_REQUIRED=1`
//! (set by `make test` when it started a control plane), where they fail instead.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};
use smtp_relay_operator::api::{ClusterSmtpRelay, SenderIdentity, SmtpRelay};

/// Field manager of the tests' own writes.
pub const MANAGER: &str = "smtp-relay-e2e";

/// The kubeconfig of the real API server, or None (with the reason printed) to skip.
pub fn kubeconfig_path() -> Option<PathBuf> {
    match std::env::var_os("SMTP_RELAY_E2E_KUBECONFIG") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            assert!(
                std::env::var("SMTP_RELAY_E2E_REQUIRED").as_deref() != Ok("1"),
                "SMTP_RELAY_E2E_REQUIRED=1 but SMTP_RELAY_E2E_KUBECONFIG is not set"
            );
            eprintln!(
                "SKIPPED: needs a real API server; `make test` starts ../shared/envtest, or set SMTP_RELAY_E2E_KUBECONFIG"
            );
            None
        }
    }
}

/// The operator watches the whole cluster, so tests that run one take turns.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A test's turn on the real API server: the lock held (the operator watches the
/// whole cluster), a client, the kubeconfig, the CRDs applied. None to skip.
pub struct Turn {
    pub client: Client,
    pub kubeconfig: PathBuf,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

pub async fn take_turn() -> Option<Turn> {
    let kubeconfig = kubeconfig_path()?;
    let turn = exclusive().await;
    let client = client(&kubeconfig).await;
    apply_crds(&client).await;
    Some(Turn {
        client,
        kubeconfig,
        _turn: turn,
    })
}

pub async fn client(path: &PathBuf) -> Client {
    let kc = Kubeconfig::read_from(path).expect("read SMTP_RELAY_E2E_KUBECONFIG");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// Server-side apply, forced, as the tests' field manager.
pub async fn apply<K>(api: &Api<K>, name: &str, obj: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"))
}

/// The CRDs of crds/, applied and Established.
pub async fn apply_crds(client: &Client) -> Vec<String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("crds/")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut names = Vec::new();
    for file in files {
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(&file).expect("read crd"))
                .expect("crd yaml");
        let name = crd.name_any();
        let mut value = serde_json::to_value(&crd).expect("json");
        value["apiVersion"] = json!("apiextensions.k8s.io/v1");
        value["kind"] = json!("CustomResourceDefinition");
        let before = api
            .get_opt(&name)
            .await
            .expect("get crd")
            .and_then(|c| c.metadata.resource_version);
        let after = apply(&api, &name, value).await.metadata.resource_version;
        if before.is_some() && before != after {
            // An existing CRD changed: Established is already True, but the API server
            // swaps in the new schema asynchronously. Give it a moment.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established within 30s"))
        .expect("watch CRD");
        names.push(name);
    }
    names
}

/// A path segment with everything but unreserved characters percent-encoded.
pub fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The URL path of an object (name and namespace percent-encoded, as kubectl sends them).
pub fn object_path(ar: &kube::api::ApiResource, namespace: Option<&str>, name: &str) -> String {
    let base = if ar.group.is_empty() {
        format!("/api/{}", ar.version)
    } else {
        format!("/apis/{}/{}", ar.group, ar.version)
    };
    match namespace {
        Some(ns) => format!(
            "{base}/namespaces/{}/{}/{}",
            path_segment(ns),
            ar.plural,
            path_segment(name)
        ),
        None => format!("{base}/{}/{}", ar.plural, path_segment(name)),
    }
}

/// JSON text with every character outside printable ASCII escaped (\uXXXX).
pub fn escaped_json(value: &Value) -> String {
    let text = serde_json::to_string(value).expect("json");
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Server-side apply of `text` at `path`: a dry run with strict field validation, as
/// `kubectl apply --server-side --dry-run=server` sends it. The refusal, if any.
pub async fn dry_run_apply_text(client: &Client, path: &str, text: &str) -> Result<(), String> {
    let request = http::Request::patch(format!(
        "{path}?dryRun=All&fieldManager={MANAGER}&fieldValidation=Strict&force=true"
    ))
    .header("Content-Type", "application/apply-patch+yaml")
    .body(text.as_bytes().to_vec())
    .expect("request");
    match client.request_text(request).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(format!("{} {}", status.code, status.message)),
        Err(e) => Err(format!("not an API refusal: {e}")),
    }
}

/// Kills the operator when the test ends, however it ends.
pub struct Operator(pub Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port for an endpoint of the operator (a child process) to listen on.
///
/// The port is released before the operator binds it, so it is taken from below the
/// kernel's ephemeral range (32768..61000 on Linux): a port the kernel hands out for
/// `bind(0)` or an outgoing connection meanwhile cannot land on it. Within 20000..25000
/// (under the Postfix and Dovecot harness ports), starting from a per-process offset and
/// never returning one port twice in a process. Where the ephemeral range reaches
/// down there (net.ipv4.ip_local_port_range widened), any free port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const LOW: u16 = 20_000;
    const SPAN: u16 = 5_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low < LOW + SPAN {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        return l.local_addr().expect("addr").port();
    }
    let start = (std::process::id() % u32::from(SPAN)) as u16;
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = LOW + (start + step) % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

/// The operator binary as a child process against `kubeconfig`.
pub fn start_operator(kubeconfig: &PathBuf, operator_ns: &str, confirm_port: u16) -> Operator {
    start_operator_with_dns(kubeconfig, operator_ns, confirm_port, None)
}

/// The operator with its deliverability checks asking `dns` (a loopback test server);
/// None turns the checks off (tests never ask the system's resolver).
pub fn start_operator_with_dns(
    kubeconfig: &PathBuf,
    operator_ns: &str,
    confirm_port: u16,
    dns: Option<std::net::SocketAddr>,
) -> Operator {
    let confirm_addr = format!("127.0.0.1:{confirm_port}");
    let base_url = format!("http://{confirm_addr}");
    let child = Command::new(env!("CARGO_BIN_EXE_smtp-relay-operator"))
        .args(["run", "--namespace", operator_ns])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .args(["--confirmation-addr", &confirm_addr])
        .args(["--confirmation-base-url", &base_url])
        // The test relays are on loopback, which the default policy refuses.
        .arg("--allowed-destinations=127.0.0.0/8")
        .args(match dns {
            Some(addr) => vec![
                format!("--dns-server={addr}"),
                "--dnsbl-zones=bl.test".into(),
            ],
            None => vec!["--deliverability-checks=false".into()],
        })
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info,smtp_relay_operator=debug")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the operator binary");
    Operator(child)
}

pub fn rand_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:08x}", nanos ^ std::process::id().rotate_left(16))
}

/// Namespaces a test works in, created up front and emptied and deleted when it
/// ends (the control plane has no namespace controller, so their objects are
/// deleted one by one: no later operator sees them).
pub struct Namespaces {
    pub client: Client,
    pub names: Vec<String>,
    pub cluster_relays: Vec<String>,
}

impl Namespaces {
    pub async fn create(client: &Client, names: Vec<String>) -> Self {
        let api: Api<Namespace> = Api::all(client.clone());
        for ns in &names {
            apply(
                &api,
                ns,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .await;
        }
        Namespaces {
            client: client.clone(),
            names,
            cluster_relays: Vec::new(),
        }
    }

    pub async fn cleanup(&self) {
        let dp = DeleteParams::background();
        let lp = ListParams::default();
        for ns in &self.names {
            let c = &self.client;
            let _ = Api::<SenderIdentity>::namespaced(c.clone(), ns)
                .delete_collection(&dp, &lp)
                .await;
            let _ = Api::<SmtpRelay>::namespaced(c.clone(), ns)
                .delete_collection(&dp, &lp)
                .await;
            let _ = Api::<Secret>::namespaced(c.clone(), ns)
                .delete_collection(&dp, &lp)
                .await;
            let _ = Api::<ConfigMap>::namespaced(c.clone(), ns)
                .delete_collection(&dp, &lp)
                .await;
            let _ = Api::<Namespace>::all(c.clone()).delete(ns, &dp).await;
        }
        let cluster: Api<ClusterSmtpRelay> = Api::all(self.client.clone());
        for name in &self.cluster_relays {
            let _ = cluster.delete(name, &DeleteParams::default()).await;
        }
    }
}

/// Run `body`, then clean up whatever happened, then re-raise a failure.
pub async fn with_cleanup<F: std::future::Future<Output = ()>>(ns: &Namespaces, body: F) {
    use futures::FutureExt as _;
    let outcome = std::panic::AssertUnwindSafe(body).catch_unwind().await;
    ns.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The Ready condition as (status, reason), when the status is for the current generation.
pub fn ready_now(obj: &Value) -> Option<(String, String)> {
    let generation = obj.pointer("/metadata/generation")?;
    let status = obj.get("status")?;
    if status.get("observedGeneration") != Some(generation) {
        return None;
    }
    let ready = status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    Some((
        ready["status"].as_str()?.to_string(),
        ready["reason"].as_str()?.to_string(),
    ))
}

/// Poll `get` until the object's current Ready is `want`; the object as JSON.
pub async fn wait_ready<K, F, Fut>(
    what: &str,
    get: F,
    want: (&str, &str),
    within: Duration,
) -> Value
where
    K: serde::Serialize,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = K>,
{
    let deadline = Instant::now() + within;
    loop {
        let obj = serde_json::to_value(get().await).expect("json");
        let got = ready_now(&obj);
        if got.as_ref().map(|(s, r)| (s.as_str(), r.as_str())) == Some(want) {
            return obj;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: expected Ready={want:?} within {within:?}, have {got:?} (status {})",
            obj.get("status").unwrap_or(&Value::Null)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A bare HTTP/1.1 request to a local endpoint; the status code (0 when unreadable).
pub async fn http_status(port: u16, method: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the endpoint");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
