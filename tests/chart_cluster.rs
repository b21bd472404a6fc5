//! The Helm chart on a real API server: rendered by the real Helm engine
//! (tests/chart/render.py), applied, and the operator binary run twice with the
//! Deployment's own arguments under a token of the chart's ServiceAccount, as two
//! replicas would. The chart's RBAC is enough (relays Ready, an identity confirmed and
//! its connection Secret written, no request refused), exactly one replica acts, and
//! when the leader dies the other takes over.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope};
use serde_json::{Value, json};
use smtp_relay_operator::api::{SenderIdentity, SmtpRelay};
use support::cluster::{self, MANAGER, Namespaces, apply, wait_ready};

const RELEASE: &str = "smtp-relay-operator";

fn render(namespace: &str, values: &Value) -> Vec<Value> {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chart/render.py"))
        .args([RELEASE, namespace, &values.to_string()])
        .output()
        .expect("python3 tests/chart/render.py (pip install -r tests/chart/requirements.txt)");
    assert!(
        out.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("rendered JSON")
}

async fn apply_all(client: &Client, docs: &[Value]) {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    for doc in docs {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let kind = doc["kind"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("{api_version} {kind} not served"));
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                doc["metadata"]["namespace"].as_str().expect("namespace"),
                &ar,
            ),
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        let name = doc["metadata"]["name"].as_str().expect("name");
        api.patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(doc),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
    }
}

/// A kubeconfig for the same server that authenticates with `token`.
fn token_kubeconfig(admin: &Path, token: &str, out: &Path) {
    let text = std::fs::read_to_string(admin).expect("kubeconfig");
    let mut kc: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    kc["users"][0]["user"] = serde_yaml::to_value(json!({"token": token})).expect("yaml");
    std::fs::write(out, serde_yaml::to_string(&kc).expect("yaml")).expect("write kubeconfig");
}

struct Replica {
    name: &'static str,
    log: PathBuf,
    process: Option<cluster::Operator>,
}

impl Replica {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn start_replica(
    name: &'static str,
    args: &[String],
    namespace: &str,
    kubeconfig: &Path,
    confirm_port: u16,
    dir: &Path,
) -> Replica {
    // The Deployment's arguments, with the listen addresses moved to loopback ports
    // of their own (two replicas share this machine).
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if a.starts_with("--metrics-addr=") {
                "--metrics-addr=127.0.0.1:0".to_string()
            } else if a.starts_with("--confirmation-addr=") {
                format!("--confirmation-addr=127.0.0.1:{confirm_port}")
            } else {
                a.replace("$(POD_NAMESPACE)", namespace)
            }
        })
        .collect();
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_smtp-relay-operator"))
        // Tests and benches never ask the system resolver.
        .env("SMTP_RELAY_DELIVERABILITY_CHECKS", "false")
        .args(&args)
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAMESPACE", namespace)
        .env("POD_NAME", name)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info,smtp_relay_operator=debug,kube=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start the operator binary");
    Replica {
        name,
        log,
        process: Some(cluster::Operator(child)),
    }
}

async fn lease_holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .expect("get lease")
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

#[tokio::test]
async fn the_chart_rbac_runs_two_replicas_and_one_takes_over() {
    let Some(turn) = cluster::take_turn().await else {
        return;
    };
    let (client, kubeconfig) = (turn.client.clone(), turn.kubeconfig.clone());
    let id = cluster::rand_id();
    let (system, app) = (format!("chart-{id}-system"), format!("chart-{id}-app"));
    let namespaces = Namespaces::create(&client, vec![system.clone(), app.clone()]).await;
    cluster::with_cleanup(&namespaces, async {
        let confirm_ports = [cluster::free_port(), cluster::free_port()];
        // The relays of this test are on loopback, which the chart's default
        // destination policy refuses: the value allows it, as a user would.
        let values = json!({
            "connectionSecrets": {"namespaces": [app]},
            "confirmation": {"baseUrl": format!("http://127.0.0.1:{}", confirm_ports[0])},
            "destinations": {"allowed": ["127.0.0.0/8"]},
        });
        let docs = render(&system, &values);
        apply_all(&client, &docs).await;
        let deployment = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("a Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<String> = serde_json::from_value(container["args"].clone()).expect("args");
        let sa_name = deployment["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .expect("serviceAccountName");
        assert!(
            args.contains(&"--leader-election=true".to_string())
                && args.contains(&"--allowed-destinations=127.0.0.0/8".to_string()),
            "{args:?}"
        );

        // A token of the chart's ServiceAccount, as the kubelet would mount it.
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &system);
        let token = sas
            .create_token_request(
                sa_name,
                &PostParams::default(),
                &TokenRequest {
                    spec: Some(TokenRequestSpec {
                        expiration_seconds: Some(3600),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .expect("token request")
            .status
            .expect("token")
            .token
            .expect("token");
        let dir = tempfile::tempdir().expect("tempdir");
        let sa_kubeconfig = dir.path().join("kubeconfig");
        token_kubeconfig(&kubeconfig, &token, &sa_kubeconfig);

        // What the replicas will work on: a relay, its credentials, an identity.
        let h = support::harness();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &app);
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        apply(
            &secrets,
            "creds",
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "creds", "namespace": app,
                                "labels": {"smtprelay.io/credentials": "true"}},
                   "data": {"username": b64(support::USER), "password": b64(support::PASSWORD)}}),
        )
        .await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &app);
        let ca = String::from_utf8(h.ca_pem()).expect("ca");
        apply(
            &cms,
            "harness-ca",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "harness-ca", "namespace": app}, "data": {"ca.crt": ca}}),
        )
        .await;
        let relays: Api<SmtpRelay> = Api::namespaced(client.clone(), &app);
        let relay = |name: &str| {
            json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
                   "metadata": {"name": name, "namespace": app},
                   "spec": {"host": "localhost", "port": h.submission_port,
                            "tls": {"mode": "StartTls",
                                    "caBundleRef": {"kind": "ConfigMap", "name": "harness-ca"}},
                            "auth": {"credentialsSecretRef": {"name": "creds"}},
                            "defaultSender": {"address": "chart@example.test"},
                            "verification": {"timeout": "5s", "interval": "1h"}}})
        };
        apply(&relays, "first", relay("first")).await;

        let mut replicas = [
            start_replica(
                "replica-a",
                &args,
                &system,
                &sa_kubeconfig,
                confirm_ports[0],
                dir.path(),
            ),
            start_replica(
                "replica-b",
                &args,
                &system,
                &sa_kubeconfig,
                confirm_ports[1],
                dir.path(),
            ),
        ];
        let within = Duration::from_secs(20);
        let wait_relay = |name: &'static str| {
            let relays = relays.clone();
            async move {
                wait_ready(
                    &format!("SmtpRelay {name}"),
                    || async { relays.get(name).await.expect("get") },
                    ("True", "Verified"),
                    within,
                )
                .await
            }
        };
        wait_relay("first").await;

        // An identity, confirmed through its mailed link, with its connection Secret.
        let identities: Api<SenderIdentity> = Api::namespaced(client.clone(), &app);
        apply(
            &identities,
            "sales",
            json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
                   "metadata": {"name": "sales", "namespace": app},
                   "spec": {"address": format!("{app}@example.test"),
                            "relayRef": {"kind": "SmtpRelay", "name": "first"},
                            "writeConnectionSecretToRef": {"name": "sales-smtp"}}}),
        )
        .await;
        let deadline = Instant::now() + within;
        let attempt = loop {
            let i = identities.get("sales").await.expect("get");
            if let Some(a) = i
                .status
                .and_then(|s| s.confirmation)
                .filter(|c| c.sent_at.is_some())
                .and_then(|c| c.attempt_id)
            {
                break a;
            }
            assert!(
                Instant::now() < deadline,
                "no confirmation mail sent; replica logs:\n{}\n{}",
                replicas[0].log_text(),
                replicas[1].log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mail = h.wait_for_message(&format!("X-SmtpRelay-Confirmation: {attempt}"));
        let link = smtp_relay_operator::confirm::mail::parse(&mail)
            .0
            .expect("link");
        let path = link
            .strip_prefix(&format!("http://127.0.0.1:{}", confirm_ports[0]))
            .expect("the chart's base URL");
        // Every replica serves the confirmation page, leader or not.
        assert_eq!(
            cluster::http_status(confirm_ports[1], "GET", path).await,
            200
        );
        assert_eq!(
            cluster::http_status(confirm_ports[0], "POST", path).await,
            200
        );
        wait_ready(
            "SenderIdentity sales",
            || async { identities.get("sales").await.expect("get") },
            ("True", "Ready"),
            within,
        )
        .await;
        assert!(
            secrets.get_opt("sales-smtp").await.expect("get").is_some(),
            "connection Secret written under the chart's RBAC"
        );

        // Exactly one replica holds the lease and acts; the other only waits.
        let leases: Api<Lease> = Api::namespaced(client.clone(), &system);
        let lease_name = args
            .iter()
            .find_map(|a| a.strip_prefix("--lease-name="))
            .expect("--lease-name")
            .to_string();
        let holder = lease_holder(&leases, &lease_name).await.expect("a leader");
        let leader = replicas
            .iter()
            .position(|r| r.name == holder)
            .expect("the holder is one of ours");
        let follower = 1 - leader;
        assert!(replicas[leader].log_text().contains("status written"));
        let waiting = replicas[follower].log_text();
        assert!(
            waiting.contains("waiting for the leader lease") && !waiting.contains("status written"),
            "the follower acted:\n{waiting}"
        );

        // Kill the leader without letting it release the lease: the other takes
        // over once the lease has gone unrenewed for its duration (15 s).
        let killed = Instant::now();
        replicas[leader].process.take();
        let deadline = killed + Duration::from_secs(25);
        loop {
            if lease_holder(&leases, &lease_name).await.as_deref() == Some(replicas[follower].name)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no takeover within 25 s of the leader's death"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let takeover = killed.elapsed();
        eprintln!("takeover {takeover:?} after the leader was killed (lease duration 15 s)");
        // The lease (15 s) runs from when the follower saw the last renewal: up to
        // one renewal period (2 s) before the kill, seen up to one follower poll (2 s)
        // later, taken at the follower's next poll; plus request latency.
        assert!(
            takeover
                <= Duration::from_secs(15) + 2 * Duration::from_secs(2) + Duration::from_secs(2),
            "{takeover:?}"
        );
        apply(&relays, "second", relay("second")).await;
        wait_relay("second").await;

        // No request of either replica was refused by RBAC.
        for r in &replicas {
            let log = r.log_text();
            let lower = log.to_lowercase();
            assert!(
                !lower.contains("forbidden") && !log.contains(" 403"),
                "{} was refused something:\n{log}",
                r.name
            );
        }
        drop(replicas);
        // Cluster-scoped objects of the chart go with the test.
        let dp = kube::api::DeleteParams::default();
        for doc in docs.iter().filter(|d| d["metadata"]["namespace"].is_null()) {
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            match doc["kind"].as_str() {
                Some("ClusterRole") => {
                    let _ = Api::<ClusterRole>::all(client.clone())
                        .delete(name, &dp)
                        .await;
                }
                Some("ClusterRoleBinding") => {
                    let _ = Api::<ClusterRoleBinding>::all(client.clone())
                        .delete(name, &dp)
                        .await;
                }
                _ => {}
            }
        }
    })
    .await;
}
