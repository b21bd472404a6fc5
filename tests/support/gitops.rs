//! What GitOps tools make of the statuses the operator writes on a real API server:
//! Argo CD through our Lua health checks (gitops/argocd, run by Debian's lua5.4), and
//! Flux / `kubectl wait` through kstatus' rules. Each checked object is also kept in
//! target/gitops-captures/ with the health expected of it, for tests/gitops.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// kstatus' verdict on an object of a kind it has no special rules for
/// (sigs.k8s.io/cli-utils/pkg/kstatus: deletion, generation, Reconciling, Stalled,
/// then the Ready condition: True is Current, False or Unknown InProgress; an
/// object without conditions is Current).
pub fn kstatus(obj: &Value) -> &'static str {
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating";
    }
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = obj
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    if let (Some(g), Some(o)) = (generation, observed)
        && o != g
    {
        return "InProgress";
    }
    let conditions: Vec<&Value> = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    for c in &conditions {
        match (c["type"].as_str(), c["status"].as_str()) {
            (Some("Reconciling"), Some("True")) => return "InProgress",
            (Some("Stalled"), Some("True")) => return "Failed",
            _ => {}
        }
    }
    match conditions
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
    {
        Some("True") | None => "Current",
        Some(_) => "InProgress",
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Argo CD health script for the object's kind.
fn script(kind: &str) -> PathBuf {
    root().join("gitops/argocd").join(match kind {
        // One script serves both relay kinds.
        "ClusterSmtpRelay" => "health-smtprelay.lua".to_string(),
        other => format!("health-{}.lua", other.to_lowercase()),
    })
}

/// Argo CD's (status, message) for `obj`, from our Lua health check.
pub fn argocd_health(obj: &Value, file: &Path) -> (String, String) {
    let kind = obj["kind"].as_str().unwrap_or_default();
    let out = Command::new("lua5.4")
        .arg(root().join("gitops/argocd/run_health.lua"))
        .arg(script(kind))
        .arg(file)
        .output()
        .expect("run lua5.4 (apt-get install lua5.4; scripts/install-deps.sh does)");
    assert!(
        out.status.success(),
        "health check of {kind} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
    let (status, message) = text.split_once('\t').unwrap_or((&text, ""));
    (status.to_string(), message.to_string())
}

/// Check `obj` (as the API server returned it): Argo CD shows `health`, and kstatus
/// agrees (Healthy is Current; an object whose status is older than its spec is
/// InProgress). Keeps the object in target/gitops-captures/NAME.json.
pub fn check(name: &str, obj: &Value, health: &str) {
    let dir = root().join("target/gitops-captures");
    std::fs::create_dir_all(&dir).expect("captures dir");
    let file = dir.join(format!("{name}.json"));
    let capture = json!({"object": obj, "expect": {"status": health}});
    std::fs::write(&file, serde_json::to_vec_pretty(&capture).expect("json")).expect("write");
    let object_file = dir.join(format!("{name}.object.json"));
    std::fs::write(&object_file, serde_json::to_vec(obj).expect("json")).expect("write");
    let (status, message) = argocd_health(obj, &object_file);
    let _ = std::fs::remove_file(&object_file);
    assert_eq!(
        status, health,
        "{name}: Argo CD health {status} ({message}) for {obj}"
    );
    // kstatus (Flux without healthCheckExprs, `kubectl wait`-style tools) agrees:
    // Current only when Healthy; a written status always lets it judge (an
    // observedGeneration and a Ready condition with a reason).
    let k = kstatus(obj);
    if let Some(status) = obj.get("status") {
        assert!(
            status.get("observedGeneration").is_some(),
            "{name}: a written status always carries observedGeneration"
        );
        let ready = status
            .get("conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
        assert!(
            ready.is_some_and(|c| c["reason"].as_str().is_some_and(|r| !r.is_empty())),
            "{name}: a written status always has a Ready condition with a reason"
        );
        let expected = if health == "Healthy" {
            "Current"
        } else {
            "InProgress"
        };
        assert_eq!(
            k, expected,
            "{name}: kstatus says {k} while Argo CD says {health}"
        );
    }
}
