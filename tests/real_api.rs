//! The CRDs on a real API server (kube-apiserver + etcd, see tests/support/cluster.rs):
//! they install and become Established, the server refuses every manifest the offline
//! schema tests refuse (with the same words), and accepts every bundled example.
//! Writes are server-side dry runs with strict field validation, as
//! `kubectl apply --server-side --dry-run=server` does.

mod support;

use kube::api::{Api, ApiResource};
use kube::discovery::Discovery;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::cluster::{self, Namespaces};
use support::schema_cases;

/// Dry-run server-side apply with strict field validation; the refusal, if any. The
/// manifest is sent as JSON text with every non-ASCII character escaped, so the API
/// server judges exactly these characters (a raw NEL, say, is a line break to its
/// YAML reader).
async fn dry_run(client: &Client, discovery: &Discovery, obj: &Value) -> Result<(), String> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let (ar, caps): (ApiResource, _) = discovery
        .resolve_gvk(&gvk)
        .unwrap_or_else(|| panic!("the API server does not serve {api_version} {kind}"));
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = match caps.scope {
        kube::discovery::Scope::Namespaced => {
            Some(obj["metadata"]["namespace"].as_str().unwrap_or("default"))
        }
        kube::discovery::Scope::Cluster => None,
    };
    let path = cluster::object_path(&ar, namespace, name);
    cluster::dry_run_apply_text(client, &path, &cluster::escaped_json(obj)).await
}

async fn setup(tag: &str) -> Option<(Client, Discovery, Namespaces)> {
    let path = cluster::kubeconfig_path()?;
    let client = cluster::client(&path).await;
    cluster::apply_crds(&client).await;
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let ns = Namespaces::create(&client, vec![format!("{tag}-{}", cluster::rand_id())]).await;
    Some((client, discovery, ns))
}

#[tokio::test]
async fn crds_install_and_become_established() {
    let Some(path) = cluster::kubeconfig_path() else {
        return;
    };
    let client = cluster::client(&path).await;
    let names = cluster::apply_crds(&client).await;
    assert_eq!(
        names,
        [
            "clustersmtprelays.smtprelay.io",
            "senderidentities.smtprelay.io",
            "smtprelays.smtprelay.io"
        ]
    );
    // Every CEL rule compiled (a rule that does not compile refuses the whole CRD,
    // which apply_crds would have reported), and the stored schema keeps them.
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client);
    let relay = crds.get("smtprelays.smtprelay.io").await.expect("get");
    let text = serde_json::to_string(&relay.spec).expect("json");
    assert!(text.contains("credentialsSecretRef.__namespace__"));
}

#[tokio::test]
async fn the_api_server_refuses_what_the_schema_tests_refuse() {
    let Some((client, discovery, ns)) = setup("smtp-schema").await else {
        return;
    };
    let namespace = ns.names[0].clone();
    cluster::with_cleanup(&ns, async {
        let cases = schema_cases::invalid();
        let mut disagreements = Vec::new();
        for (i, case) in cases.iter().enumerate() {
            let mut obj = case.manifest.clone();
            if obj["metadata"].is_object() {
                obj["metadata"]["namespace"] = json!(namespace);
                if !case.metadata {
                    obj["metadata"]["name"] = json!(format!("case-{i}"));
                }
            }
            match dry_run(&client, &discovery, &obj).await {
                Ok(()) => disagreements.push(format!("{}: accepted", case.what)),
                Err(message) if !message.contains(case.expected) => disagreements.push(format!(
                    "{}: refused without {:?}: {message}",
                    case.what, case.expected
                )),
                Err(message) => eprintln!("refused as expected: {}: {message}", case.what),
            }
        }
        assert!(
            disagreements.is_empty(),
            "the API server and the schema tests disagree:\n{}",
            disagreements.join("\n")
        );
        // And it accepts the base manifests those cases vary.
        for obj in [
            schema_cases::relay(schema_cases::base_spec()),
            schema_cases::identity(schema_cases::identity_spec()),
        ] {
            let mut obj = obj;
            obj["metadata"]["namespace"] = json!(namespace);
            dry_run(&client, &discovery, &obj)
                .await
                .unwrap_or_else(|e| panic!("base manifest refused: {e}"));
        }
    })
    .await;
}

#[tokio::test]
async fn every_bundled_example_is_accepted() {
    let Some((client, discovery, ns)) = setup("smtp-examples").await else {
        return;
    };
    cluster::with_cleanup(&ns, async {
        let files = support::examples::example_files();
        let mut docs = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).expect("read");
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value: Value = serde::Deserialize::deserialize(doc).expect("yaml");
                if !value.is_null() {
                    docs.push((file.display().to_string(), value));
                }
            }
        }
        // The examples' namespaces must exist for a dry run to be judged on content.
        let mut namespaces: Vec<String> = docs
            .iter()
            .filter_map(|(_, d)| d["metadata"]["namespace"].as_str().map(str::to_string))
            .collect();
        namespaces.sort();
        namespaces.dedup();
        // Kept afterwards: nothing is created in them, and a deleted namespace stays
        // Terminating on a control plane without a namespace controller.
        Namespaces::create(&client, namespaces).await;
        let mut kinds = std::collections::BTreeSet::new();
        for (file, doc) in &docs {
            dry_run(&client, &discovery, doc).await.unwrap_or_else(|e| {
                panic!(
                    "{file}: {} {} refused: {e}",
                    doc["kind"], doc["metadata"]["name"]
                )
            });
            kinds.insert(doc["kind"].as_str().unwrap_or_default().to_string());
        }
        for kind in ["SmtpRelay", "ClusterSmtpRelay", "SenderIdentity"] {
            assert!(kinds.contains(kind), "no {kind} among the examples");
        }
        eprintln!(
            "{} documents in {} files accepted: {kinds:?}",
            docs.len(),
            files.len()
        );
    })
    .await;
}

/// Server-side apply of a manifest as text (dry run, strict field validation), as
/// `kubectl apply --server-side --dry-run=server` sends a YAML file.
async fn dry_run_text(client: &Client, namespace: &str, text: &str) -> Result<(), String> {
    let path = if text.contains("kind: Secret") {
        format!("/api/v1/namespaces/{namespace}/secrets/s")
    } else {
        format!("/apis/smtprelay.io/v1alpha1/namespaces/{namespace}/smtprelays/r")
    };
    cluster::dry_run_apply_text(client, &path, text).await
}

/// What only text can carry (duplicate keys, YAML 1.1 scalars, .nan, a byte order
/// mark): the API server refuses and accepts the same texts as `verify`
/// (tests/api.rs runs them offline).
#[tokio::test]
async fn the_api_server_reads_manifests_as_text_as_verify_does() {
    let Some((client, _discovery, ns)) = setup("smtp-raw").await else {
        return;
    };
    let namespace = ns.names[0].clone();
    cluster::with_cleanup(&ns, async {
        let mut disagreements = Vec::new();
        for case in schema_cases::raw_invalid(&namespace) {
            match dry_run_text(&client, &namespace, &case.text).await {
                Ok(()) => disagreements.push(format!("{}: accepted", case.what)),
                Err(m) if !m.contains(case.expected) => disagreements.push(format!(
                    "{}: refused without {:?}: {m}",
                    case.what, case.expected
                )),
                Err(m) => eprintln!("refused as expected: {}: {m}", case.what),
            }
        }
        for case in schema_cases::raw_valid(&namespace) {
            if let Err(m) = dry_run_text(&client, &namespace, &case.text).await {
                disagreements.push(format!("{}: refused: {m}", case.what));
            }
        }
        assert!(
            disagreements.is_empty(),
            "the API server and verify disagree:\n{}",
            disagreements.join("\n")
        );
    })
    .await;
}

/// The server stores what it accepted: a relay read back has the defaults the
/// operator relies on and no field the schema would have pruned.
#[tokio::test]
async fn an_applied_relay_round_trips() {
    let Some((client, _discovery, ns)) = setup("smtp-roundtrip").await else {
        return;
    };
    let namespace = ns.names[0].clone();
    cluster::with_cleanup(&ns, async {
        let relays: Api<smtp_relay_operator::api::SmtpRelay> =
            Api::namespaced(client.clone(), &namespace);
        let mut obj = schema_cases::relay(schema_cases::with(&["port"], json!(2525)));
        obj["metadata"]["namespace"] = json!(namespace);
        let stored = cluster::apply(&relays, "r", obj).await;
        assert_eq!(stored.spec.port, Some(2525));
        assert_eq!(stored.spec.host, "smtp.example.com");
        assert_eq!(stored.name_any(), "r");
    })
    .await;
}
