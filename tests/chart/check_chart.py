#!/usr/bin/env python3
"""Offline checks of the Helm chart charts/smtp-relay-operator.

No cluster, no helm binary: helm-python-sdk (Helm's Go SDK through a C ABI) lints
and renders the chart, kubernetes-validate checks every rendered object against the
OpenAPI schemas of the newest Kubernetes version it ships (strict: unknown fields
are errors).

    pip install -r tests/chart/requirements.txt
    python3 tests/chart/check_chart.py

Prints one line per check and closes with 'N passed, N failed'; exits 1 on any
failure.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CHART_DIR = REPO / "charts" / "smtp-relay-operator"
FULL_VALUES_FILE = CHART_DIR / "ci" / "full-values.yaml"
ROOT_CRDS = REPO / "crds"
EXPECTED_RBAC = HERE / "expected_rbac.json"

RELEASE = "smtp-relay-operator"
NAMESPACE = "smtp-relay-system"
K8S_VERSION = kubernetes_validate.utils.latest_version()

# Verbs that change an object (or grant more rights through RBAC).
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate"}
# Kinds that are CRDs of other projects, absent from Kubernetes' own schemas.
NOT_IN_K8S_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}


class CheckFailed(AssertionError):
    pass


def check(cond: Any, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


# --------------------------------------------------------------------------- helpers

_chart: helm.Chart | None = None


def chart() -> helm.Chart:
    global _chart
    if _chart is None:
        _chart = helm.Chart.load(CHART_DIR)
    return _chart


def full_values() -> dict[str, Any]:
    return yaml.safe_load(FULL_VALUES_FILE.read_text())


_render_cache: dict[str, list[dict[str, Any]]] = {}


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Render the chart; returns the Kubernetes objects, each tagged with its template."""
    key = json.dumps(values, sort_keys=True)
    if key not in _render_cache:
        manifests = chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        docs: list[dict[str, Any]] = []
        for template, text in sorted(manifests.items()):
            if template.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    doc["__template__"] = template
                    docs.append(doc)
        _render_cache[key] = docs
    return [dict(d) for d in _render_cache[key]]


def strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "__template__"}


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    check(len(found) == 1, f"expected exactly one {kind}, found {len(found)}")
    return found[0]


def lint_errors(values: dict[str, Any] | None) -> list[str]:
    report = helm.lint(CHART_DIR, values, strict=True, namespace=NAMESPACE)
    check(report.get("total_charts_linted") == 1, f"lint linted {report.get('total_charts_linted')} charts")
    # Severity 3 = error, 2 = warning (strict lint counts warnings too).
    problems = [f"{m['path']}: {m['error']}" for m in report.get("messages", []) if m["severity"] >= 2]
    return problems + list(report.get("errors") or [])


def normalize_rules(rules: list[dict[str, Any]]) -> list[tuple]:
    """Rules as a sorted list of hashable tuples: order-insensitive comparison."""
    out = []
    for rule in rules:
        out.append(tuple(sorted((k, tuple(sorted(v))) for k, v in rule.items() if k in (
            "apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"))))
    return sorted(out)


def rule_grants(rule: dict[str, Any], group: str, resource: str) -> bool:
    return group in rule.get("apiGroups", []) and resource in rule.get("resources", [])


def container(deploy: dict[str, Any]) -> dict[str, Any]:
    containers = deploy["spec"]["template"]["spec"]["containers"]
    check(len(containers) == 1, f"expected one container, found {len(containers)}")
    return containers[0]


# --------------------------------------------------------------------------- checks

CHECKS: list[tuple[str, Callable[[], str | None]]] = []


def checker(name: str) -> Callable[[Callable[[], str | None]], Callable[[], str | None]]:
    def register(fn: Callable[[], str | None]) -> Callable[[], str | None]:
        CHECKS.append((name, fn))
        return fn
    return register


@checker("a. helm lint --strict, default values")
def lint_default() -> str:
    errors = lint_errors(None)
    check(not errors, "lint: " + "; ".join(errors))
    return "no errors or warnings"


@checker("a. helm lint --strict, ci/full-values.yaml")
def lint_full() -> str:
    errors = lint_errors(full_values())
    check(not errors, "lint: " + "; ".join(errors))
    return "no errors or warnings"


def validate_all(docs: list[dict[str, Any]]) -> str:
    validated, failures = Counter(), []
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in NOT_IN_K8S_SCHEMAS:
            validated[f"{doc['kind']} (apiVersion checked only)"] += 1
            continue
        try:
            kubernetes_validate.validate(strip(doc), K8S_VERSION, strict=True)
            validated[doc["kind"]] += 1
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            failures.append(f"{doc['__template__']} {doc['kind']}/{doc['metadata']['name']}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            failures.append(f"{doc['__template__']}: {e.message}")
    check(not failures, "; ".join(failures))
    return f"k8s {K8S_VERSION} strict: " + ", ".join(f"{n} {k}" for k, n in sorted(validated.items()))


@checker("b. render default values, validate every object")
def render_default() -> str:
    docs = render(None)
    kinds = {d["kind"] for d in docs}
    for kind in ("Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                 "Service", "PodDisruptionBudget"):
        check(kind in kinds, f"default render lacks a {kind}")
    for kind in ("Ingress", "ServiceMonitor", "NetworkPolicy"):
        check(kind not in kinds, f"default render has a {kind}, which should be off by default")
    return validate_all(docs)


@checker("b. render full values, validate every object")
def render_full() -> str:
    docs = render(full_values())
    kinds = {d["kind"] for d in docs}
    for kind in ("Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                 "Service", "PodDisruptionBudget", "Ingress", "ServiceMonitor", "NetworkPolicy"):
        check(kind in kinds, f"full render lacks a {kind}")
    sm = one(docs, "ServiceMonitor")
    check(sm["apiVersion"] == "monitoring.coreos.com/v1", f"ServiceMonitor apiVersion {sm['apiVersion']}")
    endpoints = sm["spec"]["endpoints"]
    check(any(e.get("port") == "http-metrics" and e.get("path") == "/metrics" for e in endpoints),
          f"ServiceMonitor does not scrape http-metrics /metrics: {endpoints}")
    check(sm["metadata"]["labels"].get("release") == "kube-prometheus-stack", "serviceMonitor.labels not applied")
    return validate_all(docs)


@checker("b. CRDs shipped in the chart validate")
def crds_validate() -> str:
    names = []
    for crd in chart().crds:
        doc = yaml.safe_load(crd["data"])
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise CheckFailed(f"{crd['name']}: {'.'.join(str(p) for p in e.path)}: {e.message}") from None
        names.append(doc["metadata"]["name"])
    on_disk = sorted(ROOT_CRDS.glob("*.yaml"))
    check(len(names) == len(on_disk), f"expected {len(on_disk)} CRDs in the chart (as in crds/), Helm loaded {names}")
    return ", ".join(sorted(names))


BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("replicas: 0", {"replicas": 0}, "/replicas"),
    ("logFormat: xml", {"logFormat": "xml"}, "/logFormat"),
    ("unknown top-level key", {"replicaCount": 3}, "replicaCount"),
    ("sessionsPerHost: 1000", {"sessionsPerHost": 1000}, "/sessionsPerHost"),
    ("image.pullPolicy: Sometimes", {"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ("unknown nested key", {"ingress": {"enabled": False, "host": "x"}}, "host"),
    ("confirmation.baseUrl: ftp://x", {"confirmation": {"baseUrl": "ftp://x"}}, "/confirmation/baseUrl"),
    ("sessionsPerHost: \"2\" (string)", {"sessionsPerHost": "2"}, "/sessionsPerHost"),
    ("connectionSecrets.namespaces: [Team_A]", {"connectionSecrets": {"namespaces": ["Team_A"]}},
     "/connectionSecrets/namespaces/0"),
    ("destinations.allowed: [localhost]", {"destinations": {"allowed": ["localhost"]}},
     "/destinations/allowed/0"),
]


@checker("c. values schema refuses bad values")
def schema_refuses() -> str:
    refused = []
    for label, values, where in BAD_VALUES:
        for how, call in (
            ("validate_schema", lambda v=values: chart().validate_schema(v)),
            ("render", lambda v=values: chart().render(v, name=RELEASE, namespace=NAMESPACE)),
        ):
            try:
                call()
            except helm.HelmValuesError as e:
                check(where in str(e), f"{label}: {how} refused, but the message does not name {where!r}: {e}")
                continue
            raise CheckFailed(f"{label}: {how} accepted it")
        refused.append(label)
    # And the good ones pass.
    chart().validate_schema(None)
    chart().validate_schema(full_values())
    chart().validate_schema({"confirmation": {"baseUrl": "http://localhost:8081"}, "logFormat": "json",
                             "sessionsPerHost": 64, "replicas": 1, "pdb": {"enabled": True, "maxUnavailable": "50%"}})
    return f"refused {len(refused)}: " + "; ".join(refused) + "; defaults and full values accepted"


@checker("c. every value in values.yaml is described by the schema")
def schema_covers_values() -> str:
    schema = chart().schema
    check(schema is not None, "chart has no values.schema.json")
    check(schema.get("$schema") == "http://json-schema.org/draft-07/schema#", "schema is not draft-07")
    objects = 0

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        nonlocal objects
        if isinstance(value, dict) and "properties" in node:
            objects += 1
            check(node.get("additionalProperties") is False, f"{path or '/'}: additionalProperties is not false")
            for key, sub in value.items():
                check(key in node["properties"], f"{path}/{key}: not in the schema")
                walk(sub, node["properties"][key], f"{path}/{key}")
        elif isinstance(value, dict):
            check("additionalProperties" in node or node.get("description", "").startswith("Passed through"),
                  f"{path}: map without a schema for its entries")
        elif isinstance(value, list) and value:
            check("items" in node, f"{path}: list without items schema")
            for i, item in enumerate(value):
                walk(item, node["items"], f"{path}/{i}")

    walk(chart().values, schema, "")
    walk(full_values(), schema, "")
    return f"{objects} object levels with additionalProperties: false"


@checker("d. chart CRDs are byte-identical to crds/")
def crds_identical() -> str:
    ours = {p.name: p.read_bytes() for p in sorted((CHART_DIR / "crds").iterdir()) if p.is_file()}
    root = {p.name: p.read_bytes() for p in sorted(ROOT_CRDS.iterdir()) if p.is_file()}
    check(set(ours) == set(root), f"file names differ: chart {sorted(ours)} vs crds/ {sorted(root)}")
    differ = [name for name in ours if ours[name] != root[name]]
    check(not differ, f"differ from crds/: {differ} (copy crds/* into {CHART_DIR / 'crds'})")
    return ", ".join(sorted(ours))


def rbac_invariants(docs: list[dict[str, Any]]) -> None:
    roles = of_kind(docs, "ClusterRole") + of_kind(docs, "Role")
    for role in roles:
        where = f"{role['kind']} {role['metadata'].get('namespace', '')}/{role['metadata']['name']}"
        for rule in role.get("rules", []):
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                check("*" not in rule.get(field, []), f"{where}: wildcard in {field}: {rule}")
            if role["kind"] == "ClusterRole":
                check(not (rule_grants(rule, "", "secrets") and WRITE_VERBS & set(rule["verbs"])),
                      f"{where}: writes Secrets cluster-wide: {rule}")
            if rule_grants(rule, "coordination.k8s.io", "leases"):
                check(role["kind"] == "Role" and role["metadata"].get("namespace") == NAMESPACE,
                      f"{where}: leases outside a Role in {NAMESPACE}")
    for cr in of_kind(docs, "ClusterRole"):
        for rule in cr["rules"]:
            check(not rule_grants(rule, "coordination.k8s.io", "leases"), "ClusterRole grants leases")
    # Bindings point at roles of this render, for this release's ServiceAccount.
    sa_name = one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    role_names = {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]) for r in roles}
    for b in of_kind(docs, "ClusterRoleBinding") + of_kind(docs, "RoleBinding"):
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace") if ref["kind"] == "Role" else None
        check((ref["kind"], ns, ref["name"]) in role_names, f"{b['kind']} {b['metadata']['name']}: dangling {ref}")
        check(b["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}],
              f"{b['kind']} {b['metadata']['name']}: subjects {b['subjects']}")


def secret_writer_namespaces(docs: list[dict[str, Any]]) -> list[str]:
    out = []
    for role in of_kind(docs, "Role"):
        if any(rule_grants(r, "", "secrets") and WRITE_VERBS & set(r["verbs"]) for r in role["rules"]):
            out.append(role["metadata"]["namespace"])
    return sorted(out)


@checker("e. ClusterRole equals tests/chart/expected_rbac.json")
def rbac_expected() -> str:
    expected = json.loads(EXPECTED_RBAC.read_text())
    for label, values in (("default", None), ("full", full_values())):
        docs = render(values)
        cr = one(docs, "ClusterRole")
        check(normalize_rules(cr["rules"]) == normalize_rules(expected["clusterRole"]),
              f"{label}: ClusterRole rules differ from expected_rbac.json:\n"
              f"  rendered {json.dumps(cr['rules'])}\n  expected {json.dumps(expected['clusterRole'])}")
        lease_roles = [r for r in of_kind(docs, "Role") if any(rule_grants(x, "coordination.k8s.io", "leases")
                                                                for x in r["rules"])]
        check(len(lease_roles) == 1, f"{label}: {len(lease_roles)} lease Roles")
        check(normalize_rules(lease_roles[0]["rules"]) == normalize_rules(expected["leaderElectionRole"]["rules"]),
              f"{label}: leader-election Role differs from expected_rbac.json")
        for role in of_kind(docs, "Role"):
            if role in lease_roles:
                continue
            check(normalize_rules(role["rules"]) == normalize_rules(expected["connectionSecretsRole"]["rules"]),
                  f"{label}: Role {role['metadata']['namespace']}/{role['metadata']['name']} differs from "
                  "connectionSecretsRole in expected_rbac.json")
    return f"{len(expected['clusterRole'])} ClusterRole rules, lease Role, connection-secret Roles match"


@checker("e. RBAC least privilege, default values")
def rbac_default() -> str:
    docs = render(None)
    rbac_invariants(docs)
    check(secret_writer_namespaces(docs) == [], f"Secret writes granted in {secret_writer_namespaces(docs)}")
    return "no wildcards, no Secret write anywhere, leases only in a Role in " + NAMESPACE


@checker("e. RBAC least privilege, full values")
def rbac_full() -> str:
    docs = render(full_values())
    rbac_invariants(docs)
    namespaces = secret_writer_namespaces(docs)
    check(namespaces == ["team-a", "team-b"], f"Secret writes granted in {namespaces}, want team-a, team-b")
    return "no wildcards, Secret writes exactly in team-a and team-b"


@checker("e. leaderElection.enabled=false drops the lease Role")
def rbac_no_leader_election() -> str:
    docs = render({"leaderElection": {"enabled": False}})
    rbac_invariants(docs)
    for role in of_kind(docs, "Role"):
        for rule in role["rules"]:
            check(not rule_grants(rule, "coordination.k8s.io", "leases"), "lease Role still rendered")
    args = container(one(docs, "Deployment"))["args"]
    check("--leader-election=false" in args, f"args {args}")
    return "no Role grants leases; --leader-election=false"


def hardening(deploy: dict[str, Any]) -> None:
    pod = deploy["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, "pod runAsNonRoot")
    check(psc.get("runAsUser") == 65532 and psc.get("runAsGroup") == 65532 and psc.get("fsGroup") == 65532,
          f"pod uid/gid/fsGroup {psc}")
    check(psc.get("seccompProfile") == {"type": "RuntimeDefault"}, "pod seccompProfile RuntimeDefault")
    check(pod.get("automountServiceAccountToken") is True, "automountServiceAccountToken")
    for c in pod["containers"]:
        csc = c.get("securityContext", {})
        check(csc.get("runAsNonRoot") is True, f"{c['name']}: runAsNonRoot")
        check(csc.get("readOnlyRootFilesystem") is True, f"{c['name']}: readOnlyRootFilesystem")
        check(csc.get("allowPrivilegeEscalation") is False, f"{c['name']}: allowPrivilegeEscalation")
        check(csc.get("capabilities", {}).get("drop") == ["ALL"], f"{c['name']}: capabilities.drop ALL")
        check(not csc.get("capabilities", {}).get("add"), f"{c['name']}: adds capabilities")
        check(csc.get("privileged") in (None, False), f"{c['name']}: privileged")
        check(csc.get("seccompProfile", psc.get("seccompProfile")) == {"type": "RuntimeDefault"},
              f"{c['name']}: seccompProfile")


@checker("f. Deployment: hardening, args, probes, defaults")
def deployment_default() -> str:
    docs = render(None)
    deploy = one(docs, "Deployment")
    hardening(deploy)
    spec = deploy["spec"]
    pod = spec["template"]["spec"]
    c = container(deploy)
    check(spec["replicas"] == 2, f"replicas {spec['replicas']}")
    check(pod["terminationGracePeriodSeconds"] == 45, "terminationGracePeriodSeconds")
    check(c["image"] == "ghcr.io/smtp-relay-operator/smtp-relay-operator:0.1.0", f"image {c['image']}")
    check(c["imagePullPolicy"] == "IfNotPresent", "pullPolicy")
    check(c["args"] == ["run", "--namespace=$(POD_NAMESPACE)", "--metrics-addr=0.0.0.0:8080",
                        "--confirmation-addr=0.0.0.0:8081", "--confirmation-from-name=Sender address confirmation", "--leader-election=true",
                        f"--lease-name={RELEASE}", f"--confirmation-key-secret={RELEASE}-confirmation-key",
                        "--sessions-per-host=2",
                        "--dnsbl-zones=zen.spamhaus.org,bl.spamcop.net"], f"args {c['args']}")
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    check(env == {"POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}, f"env {env}")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports == {"http-metrics": 8080, "http-confirm": 8081}, f"ports {ports}")
    check(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}, "liveness probe")
    check(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}, "readiness probe")
    check(c["resources"] == {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "192Mi"}},
          f"resources {c['resources']}")
    svc = one(docs, "Service")
    check(svc["spec"]["type"] == "ClusterIP", "Service type")
    check({p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"http-metrics": 8080, "http-confirm": 8081},
          f"Service ports {svc['spec']['ports']}")
    check(svc["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"], "Service selector")
    pdb = one(docs, "PodDisruptionBudget")
    check(pdb["spec"]["maxUnavailable"] == 1, "PDB maxUnavailable")
    return "non-root 65532, read-only root, drop ALL, RuntimeDefault, no privilege escalation; args/probes/ports"


@checker("f. Deployment with full values")
def deployment_full() -> str:
    values = full_values()
    docs = render(values)
    deploy = one(docs, "Deployment")
    hardening(deploy)
    pod = deploy["spec"]["template"]["spec"]
    c = container(deploy)
    args = c["args"]
    check("--log-json" in args, "--log-json missing with logFormat json")
    check("--confirmation-base-url=https://confirm.example.com" in args, f"base URL arg missing: {args}")
    check("--trusted-proxies=10.0.0.0/8,fd00::/8" in args, f"trusted proxies arg missing: {args}")
    for arg in ("--confirmation-from=mail-confirm@platform.example.com",
                "--confirmation-from-name=ACME platform team",
                "--confirmation-reply-to=platform-team@example.com"):
        check(arg in args, f"{arg} missing: {args}")
    check("--sessions-per-host=4" in args, f"sessions-per-host: {args}")
    check("--allowed-destinations=192.168.10.25/32" in args, f"allowed destinations: {args}")
    check("--denied-destinations=10.0.0.0/8,fd00:ec2::/32" in args, f"denied destinations: {args}")
    check("--cluster-cidrs=10.96.0.0/12,10.244.0.0/16" in args, f"cluster CIDRs: {args}")
    check(deploy["spec"]["replicas"] == 3, "replicas")
    check(c["image"] == "registry.example.com/mirror/smtp-relay-operator:0.1.0", f"image {c['image']}")
    check(pod["serviceAccountName"] == "smtp-relay-operator-sa", "serviceAccountName")
    sa = one(docs, "ServiceAccount")
    check(sa["metadata"]["name"] == "smtp-relay-operator-sa" and sa["metadata"].get("annotations"),
          "ServiceAccount name/annotations")
    for key in ("nodeSelector", "affinity", "tolerations", "topologySpreadConstraints", "imagePullSecrets"):
        check(pod.get(key) == values[key], f"pod {key}")
    check(pod["priorityClassName"] == values["priorityClassName"], "priorityClassName")
    check(pod["terminationGracePeriodSeconds"] == 60, "terminationGracePeriodSeconds")
    meta = deploy["spec"]["template"]["metadata"]
    check(meta.get("annotations") == values["podAnnotations"], "podAnnotations")
    check(meta["labels"].get("team") == "platform", "podLabels")
    ing = one(docs, "Ingress")
    check(ing["spec"]["ingressClassName"] == "nginx", "ingressClassName")
    check(ing["spec"]["tls"] == values["ingress"]["tls"], f"ingress tls {ing['spec']['tls']}")
    backends = [p["backend"]["service"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]]
    check(backends and all(b == {"name": RELEASE, "port": {"name": "http-confirm"}} for b in backends),
          f"ingress backends {backends}")
    np = one(docs, "NetworkPolicy")
    ingress_ports = sorted(p["port"] for r in np["spec"]["ingress"] for p in r["ports"])
    check(ingress_ports == [8080, 8081], f"NetworkPolicy ingress ports {ingress_ports}")
    metrics_rule = next(r for r in np["spec"]["ingress"] if r["ports"][0]["port"] == 8080)
    check(metrics_rule["from"] == [{"namespaceSelector": values["networkPolicy"]["metricsNamespaceSelector"]}],
          "metrics namespace selector")
    confirm_rule = next(r for r in np["spec"]["ingress"] if r["ports"][0]["port"] == 8081)
    check("from" not in confirm_rule, "confirmation port should be open to anyone")
    egress_ports = {(p["protocol"], p["port"]) for r in np["spec"]["egress"] for p in r["ports"]}
    want = {("TCP", 443), ("TCP", 6443), ("UDP", 53), ("TCP", 53), ("TCP", 25), ("TCP", 465), ("TCP", 587),
            ("TCP", 2525)}
    check(egress_ports == want, f"NetworkPolicy egress ports {sorted(egress_ports)}")
    api_rule = next(r for r in np["spec"]["egress"] if any(p["port"] == 6443 for p in r["ports"]))
    check([t["ipBlock"]["cidr"] for t in api_rule["to"]] == values["networkPolicy"]["apiServerCIDRs"],
          "apiServerCIDRs")
    return "json logs, base URL, scheduling values, Ingress -> http-confirm, NetworkPolicy ports"


@checker("f. NOTES.txt names the checks")
def notes() -> str:
    text = chart().render(None, name=RELEASE, namespace=NAMESPACE)[f"{RELEASE}/templates/NOTES.txt"]
    for needle in ("kubectl get smtprelays -A", "kubectl wait --for=condition=Ready smtprelay/NAME"):
        check(needle in text, f"NOTES.txt lacks {needle!r}")
    return "kubectl get smtprelays -A, kubectl wait --for=condition=Ready"


# The Grafana dashboard and the PrometheusRule (tests/chart/monitoring.py).
sys.path.insert(0, str(HERE))
import monitoring  # noqa: E402

monitoring.add_checks(sys.modules[__name__])


def main() -> int:
    start = time.monotonic()
    print(f"chart {CHART_DIR.relative_to(REPO)}; helm SDK {helm.helm_sdk_version()} "
          f"(helm-python-sdk {helm.__version__}); kubernetes-validate "
          f"{kubernetes_validate.version.__version__}, Kubernetes {K8S_VERSION}; "
          f"release {RELEASE} in {NAMESPACE}")
    passed = failed = 0
    for name, fn in CHECKS:
        t0 = time.monotonic()
        try:
            detail = fn()
        except CheckFailed as e:
            failed += 1
            print(f"FAIL {name}: {e}")
            continue
        except Exception:  # noqa: BLE001 - report and go on with the other checks
            failed += 1
            print(f"FAIL {name}: unexpected error\n{traceback.format_exc()}")
            continue
        passed += 1
        print(f"ok   {name}: {detail} ({time.monotonic() - t0:.2f}s)")
    print(f"took {time.monotonic() - start:.1f}s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
