"""Checks of the chart's Grafana dashboard and PrometheusRule (issue #13, part 3).

Registered into tests/chart/check_chart.py's list (see `add_checks`), so they run
with `python3 tests/chart/check_chart.py`:

- the dashboard ConfigMap is off by default, carries the sidecar label, and holds
  dashboards/smtp-relay-operator.json byte for byte; the JSON loads, every panel has
  a datasource and targets, every metric it queries is one the operator registers
  (src/**/*.rs), and every query parses as PromQL (promtool);
- the PrometheusRule is off by default, passes `promtool check rules`, queries only
  exported metrics, takes its thresholds from values, and its alerts fire (and stay
  quiet) as `promtool test rules` expects.

promtool comes from Debian's prometheus package (scripts/install-deps.sh unpacks it
into target/tools/promtool); without it these checks fail and say so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

DASHBOARD_FILE = "dashboards/smtp-relay-operator.json"

# Metrics produced by work on other branches, accepted while not registered in
# src/ yet. All are registered now: every name is checked against src/.
PENDING_METRICS: dict[str, str] = {}

# What the dashboard must show (the list): a metric per subject.
DASHBOARD_SUBJECTS = {
    "relay readiness": "smtp_relay_relay_ready",
    "verification latency per step": "smtp_relay_verification_duration_seconds_bucket",
    "delivery latency": "smtp_relay_delivery_latency_seconds_bucket",
    "DNSBL status": "smtp_relay_dnsbl_listed",
    "deliverability status": "smtp_relay_domain_check",
    "confirmations pending": "smtp_relay_identities",
}

ALERTS = {
    "SmtpRelayNotReady",
    "SmtpRelayCertificateExpiringSoon",
    "SmtpRelayDeliveryLatencyHigh",
    "SmtpRelayIdentityConfirmationExpired",
}

SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created", "_info")

# check_chart's failure type, set by add_checks (a plain AssertionError otherwise).
Failed: type[AssertionError] = AssertionError


def promtool(repo: Path) -> str:
    for candidate in (shutil.which("promtool"), repo / "target" / "tools" / "promtool"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise Failed("promtool not found: run scripts/install-deps.sh (unpacks it into target/tools)")


def exported_metrics(repo: Path) -> set[str]:
    """Names the operator registers (prometheus-client, registry prefix smtp_relay)."""
    names = set()
    for path in (repo / "src").rglob("*.rs"):
        text = path.read_text()
        for base in re.findall(r'\.register(?:_with_unit)?\(\s*"([a-z0-9_]+)"', text):
            names.update(f"smtp_relay_{base}{suffix}" for suffix in SUFFIXES)
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(smtp_relay_[a-z0-9_]+)\b", expr))


def unknown_metrics(exprs: list[str], exported: set[str]) -> tuple[list[str], set[str]]:
    """Names that are neither exported nor pending; and the pending ones in use."""
    unknown, pending = [], set()
    for expr in exprs:
        for name in sorted(metric_names(expr)):
            if name in exported:
                continue
            base = next((p for p in PENDING_METRICS if name in {p + s for s in SUFFIXES}), None)
            if base is not None and not any(base + s in exported for s in SUFFIXES):
                pending.add(base)
                continue
            unknown.append(f"{name} (in {expr!r})")
    return unknown, pending


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as plain PromQL: Grafana's variables replaced by values."""
    return (expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
            .replace("$namespace", ".*").replace("$relay", ".*"))


def promtool_check_rules(tool: str, groups: dict[str, Any]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(yaml.safe_dump(groups, sort_keys=False))
        run = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True)
        if run.returncode != 0:
            raise Failed(f"promtool check rules: {run.stdout}{run.stderr}")
        return run.stdout.strip().splitlines()[-1] if run.stdout.strip() else "ok"


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep theirs inside
    return out


# promtool unit tests of the alerts, against the rules rendered from ci/full-values
# (threshold 120 s, team: platform on every alert). Series start at time 0.
ALERT_LABELS = {"severity": "warning", "team": "platform"}
RULE_TESTS = [
    {
        "interval": "1m",
        "input_series": [
            {"series": 'smtp_relay_relay_ready{kind="SmtpRelay",namespace="team",name="broken"}',
             "values": "0x30"},
            {"series": 'smtp_relay_relay_ready{kind="SmtpRelay",namespace="team",name="fine"}',
             "values": "1x30"},
            {"series": 'smtp_relay_relay_ready{kind="SmtpRelay",namespace="team",name="flapping"}',
             "values": "0x10 1 0x19"},
        ],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "SmtpRelayNotReady", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "SmtpRelayNotReady", "exp_alerts": [{
                "exp_labels": {**ALERT_LABELS, "kind": "SmtpRelay", "namespace": "team", "name": "broken"},
                "exp_annotations": {
                    "summary": "SmtpRelay team/broken is not Ready",
                    "description": "The relay has not been Ready for 15m: kubectl describe shows the failing "
                                   "step and the server's reply."}}]},
        ],
    },
    {
        "interval": "1m",
        # notAfter 10 days and 60 days after the epoch; evaluated 2 h in.
        "input_series": [
            {"series": 'smtp_relay_certificate_expiry_timestamp_seconds{kind="ClusterSmtpRelay",namespace="",'
                       'name="soon"}', "values": "864000x150"},
            {"series": 'smtp_relay_certificate_expiry_timestamp_seconds{kind="SmtpRelay",namespace="team",'
                       'name="later"}', "values": "5184000x150"},
        ],
        "alert_rule_test": [
            {"eval_time": "2h", "alertname": "SmtpRelayCertificateExpiringSoon", "exp_alerts": [{
                "exp_labels": {**ALERT_LABELS, "kind": "ClusterSmtpRelay", "name": "soon"},
                "exp_annotations": {
                    "summary": "The TLS certificate of ClusterSmtpRelay /soon expires in 9d 22h 0m 0s",
                    "description": "The relay's certificate expires in less than 14 days; once expired, "
                                   "verification fails and the relay is not Ready."}}]},
        ],
    },
    {
        "interval": "1m",
        # slow: every delivery between 60 s and 300 s (p95 288 s > 120 s); fast: all under 60 s.
        "input_series": [
            *({"series": f'smtp_relay_delivery_latency_seconds_bucket{{kind="SmtpRelay",namespace="team",'
                         f'name="slow",folder="INBOX",le="{le}"}}', "values": v}
              for le, v in (("60", "0x120"), ("300", "0+1x120"), ("+Inf", "0+1x120"))),
            *({"series": f'smtp_relay_delivery_latency_seconds_bucket{{kind="SmtpRelay",namespace="team",'
                         f'name="fast",folder="INBOX",le="{le}"}}', "values": "0+1x120"}
              for le in ("60", "300", "+Inf")),
        ],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "SmtpRelayDeliveryLatencyHigh", "exp_alerts": []},
            {"eval_time": "40m", "alertname": "SmtpRelayDeliveryLatencyHigh", "exp_alerts": [{
                "exp_labels": {**ALERT_LABELS, "kind": "SmtpRelay", "namespace": "team", "name": "slow"},
                "exp_annotations": {
                    "summary": "Mail through SmtpRelay team/slow takes 4m 48s to arrive (p95)",
                    "description": "The 95th percentile of the round-trip probe's delivery latency over 1h "
                                   "is above 120s."}}]},
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {"series": 'smtp_relay_identities{namespace="team",state="Expired"}', "values": "2x10"},
            {"series": 'smtp_relay_identities{namespace="team",state="Pending"}', "values": "5x10"},
            {"series": 'smtp_relay_identities{namespace="other",state="Confirmed"}', "values": "3x10"},
        ],
        "alert_rule_test": [
            {"eval_time": "8m", "alertname": "SmtpRelayIdentityConfirmationExpired", "exp_alerts": [{
                "exp_labels": {**ALERT_LABELS, "namespace": "team"},
                "exp_annotations": {
                    "summary": "2 sender address(es) in team were not confirmed in time",
                    "description": "Their confirmation link and code expired: annotate the SenderIdentity "
                                   "with smtprelay.io/resend (kubectl smtprelay resend NAME) to mail new ones."}}]},
        ],
    },
]


def add_checks(cc: ModuleType) -> None:
    """Register this file's checks with check_chart (`cc`: that module)."""
    global Failed
    Failed = cc.CheckFailed
    check, checker, render, of_kind, one = cc.check, cc.checker, cc.render, cc.of_kind, cc.one
    repo, chart_dir = cc.REPO, cc.CHART_DIR

    def dashboard_configmaps(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [d for d in of_kind(docs, "ConfigMap") if d["__template__"].endswith("grafana-dashboard.yaml")]

    @checker("g. Grafana dashboard: off by default, a ConfigMap for the sidecar when enabled")
    def dashboard_configmap() -> str:
        check(not dashboard_configmaps(render(None)), "dashboard ConfigMap rendered with default values")
        docs = render(cc.full_values())
        maps = dashboard_configmaps(docs)
        check(len(maps) == 1, f"full values: {len(maps)} dashboard ConfigMaps")
        cm = maps[0]
        check(cm["metadata"]["labels"].get("grafana_dashboard") == "1", f"labels {cm['metadata']['labels']}")
        check(cm["metadata"]["namespace"] == "monitoring", "grafana.dashboard.namespace not applied")
        check(cm["metadata"].get("annotations") == {"grafana_folder": "SMTP"}, "annotations not applied")
        on_disk = (chart_dir / DASHBOARD_FILE).read_text()
        check(cm["data"] == {"smtp-relay-operator.json": on_disk.rstrip("\n")},
              f"ConfigMap data is not {DASHBOARD_FILE} as is: keys {sorted(cm['data'])}")
        # Another sidecar label instead of the default one (null removes a default in Helm).
        custom = dashboard_configmaps(render({"grafana": {"dashboard": {
            "enabled": True, "labels": {"dashboards": "smtp", "grafana_dashboard": None}}}}))
        check(len(custom) == 1 and custom[0]["metadata"]["labels"].get("dashboards") == "smtp"
              and "grafana_dashboard" not in custom[0]["metadata"]["labels"],
              f"sidecar label is not configurable: {custom and custom[0]['metadata']['labels']}")
        check(custom[0]["metadata"]["namespace"] == cc.NAMESPACE, "default namespace is not the release's")
        return f"{len(on_disk)} bytes of JSON, label grafana_dashboard=1 (configurable), namespace override"

    @checker("g. Grafana dashboard: panels, datasources, exported metrics, PromQL")
    def dashboard_panels() -> str:
        cm = dashboard_configmaps(render(cc.full_values()))[0]
        dashboard = json.loads(cm["data"]["smtp-relay-operator.json"])
        for key in ("title", "uid", "panels", "templating", "schemaVersion"):
            check(key in dashboard, f"dashboard lacks {key}")
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        check({"datasource", "namespace", "relay"} <= variables, f"variables {variables}")
        panels = panels_of(dashboard)
        ids = [p["id"] for p in panels]
        check(len(ids) == len(set(ids)), f"duplicate panel ids {ids}")
        exprs = []
        for p in panels:
            where = f"panel {p.get('id')} {p.get('title')!r}"
            check(p.get("title"), f"{where}: no title")
            check({"h", "w", "x", "y"} <= set(p.get("gridPos", {})), f"{where}: no gridPos")
            if p["type"] == "row":
                continue
            check(p.get("datasource") == {"type": "prometheus", "uid": "${datasource}"},
                  f"{where}: datasource {p.get('datasource')}")
            targets = p.get("targets") or []
            check(targets, f"{where}: no targets")
            for t in targets:
                check(t.get("refId") and t.get("expr"), f"{where}: target without refId or expr: {t}")
                exprs.append(t["expr"])
        exprs += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
        unknown, pending = unknown_metrics(exprs, exported_metrics(repo))
        check(not unknown, "metrics the operator does not export: " + "; ".join(unknown))
        queried = set().union(*(metric_names(e) for e in exprs))
        missing = [s for s, m in DASHBOARD_SUBJECTS.items() if m not in queried]
        check(not missing, f"dashboard shows nothing for: {missing}")
        queries = [e for e in exprs if not e.startswith("label_values(")]
        groups = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(e)} for i, e in enumerate(queries)]}]}
        promtool_check_rules(promtool(repo), groups)
        return (f"{len(panels)} panels, {len(queries)} queries parse (promtool); metrics exported"
                + (f"; pending on other branches: {', '.join(sorted(pending))}" if pending else ""))

    def rule_groups(values: dict[str, Any] | None) -> dict[str, Any]:
        return {"groups": one(render(values), "PrometheusRule")["spec"]["groups"]}

    @checker("g. PrometheusRule: off by default, promtool check rules, exported metrics, thresholds")
    def prometheus_rule() -> str:
        check(not of_kind(render(None), "PrometheusRule"), "PrometheusRule rendered with default values")
        rule = one(render(cc.full_values()), "PrometheusRule")
        check(rule["apiVersion"] == "monitoring.coreos.com/v1", f"apiVersion {rule['apiVersion']}")
        check(rule["metadata"]["labels"].get("release") == "kube-prometheus-stack", "prometheusRule.labels")
        rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
        check({r.get("alert") for r in rules} == ALERTS, f"alerts {[r.get('alert') for r in rules]}")
        for r in rules:
            check(r["labels"] == ALERT_LABELS, f"{r['alert']}: labels {r['labels']}")
            check(r["annotations"].get("summary") and r["annotations"].get("description"),
                  f"{r['alert']}: summary and description")
        not_ready = next(r for r in rules if r["alert"] == "SmtpRelayNotReady")
        check(not_ready["for"] == "15m", f"SmtpRelayNotReady for {not_ready['for']}")
        unknown, pending = unknown_metrics([r["expr"] for r in rules], exported_metrics(repo))
        check(not unknown, "metrics the operator does not export: " + "; ".join(unknown))
        detail = promtool_check_rules(promtool(repo), {"groups": rule["spec"]["groups"]})
        tuned = rule_groups({"prometheusRule": {"enabled": True, "deliveryLatencyP95Seconds": 42.5,
                                                "certificateExpiryDays": 30, "notReadyFor": "1h"}})
        tuned_rules = {r["alert"]: r for g in tuned["groups"] for r in g["rules"]}
        check(tuned_rules["SmtpRelayDeliveryLatencyHigh"]["expr"].endswith("> 42.5"),
              f"threshold: {tuned_rules['SmtpRelayDeliveryLatencyHigh']['expr']}")
        check(tuned_rules["SmtpRelayCertificateExpiringSoon"]["expr"].endswith("< 2592000"),
              f"expiry days: {tuned_rules['SmtpRelayCertificateExpiringSoon']['expr']}")
        check(tuned_rules["SmtpRelayNotReady"]["for"] == "1h", "notReadyFor")
        return (f"{len(rules)} alerts; {detail}; thresholds from values"
                + (f"; pending on other branches: {', '.join(sorted(pending))}" if pending else ""))

    @checker("g. PrometheusRule: promtool test rules (each alert fires, and only when it should)")
    def prometheus_rule_tests() -> str:
        tool = promtool(repo)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "rules.yaml").write_text(yaml.safe_dump(rule_groups(cc.full_values()), sort_keys=False))
            (Path(tmp) / "test.yaml").write_text(yaml.safe_dump(
                {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": RULE_TESTS}, sort_keys=False))
            run = subprocess.run([tool, "test", "rules", "test.yaml"], cwd=tmp, capture_output=True, text=True)
            check(run.returncode == 0, f"promtool test rules:\n{run.stdout}{run.stderr}")
        fired = sum(len(t["exp_alerts"]) for case in RULE_TESTS for t in case["alert_rule_test"])
        return f"{len(RULE_TESTS)} scenarios, {fired} expected alerts, quiet where none expected"
