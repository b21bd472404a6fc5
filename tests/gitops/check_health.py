#!/usr/bin/env python3
"""Check the GitOps health rules against objects shaped as the API server returns them.

    python3 tests/gitops/check_health.py                 # tests/gitops/fixtures/*.json
    python3 tests/gitops/check_health.py --dir DIR       # objects captured in DIR/*.json
    python3 tests/gitops/check_health.py --require-cel   # fail if the CEL checks cannot run

Each file is {"object": {...}, "expect": {"status": "Healthy|Progressing|Degraded",
"messageContains": "..."}}; messageContains is optional. To capture one from a cluster:

    kubectl get senderidentity -n mail purchasing -o json \\
      | jq '{object: ., expect: {status: "Progressing"}}' > DIR/purchasing.json

Per file:
  * Argo CD: runs `lua5.4 gitops/argocd/run_health.lua <script for the kind> <object>`
    (and the same with lua5.1 when it is installed: Argo CD's gopher-lua is a Lua 5.1)
    and compares the status and message;
  * Flux: when cel-python (module celpy) and PyYAML are installed, evaluates the
    healthCheckExprs of gitops/flux/kustomization.yaml the way kustomize-controller
    does (status.observedGeneration != metadata.generation -> InProgress, then
    inProgress, failed, current, else InProgress; an evaluation error -> Unknown) and
    expects Current for Healthy, InProgress for Progressing, Failed for Degraded
    (Unknown is accepted for an object without status: the expressions cannot read a
    missing status, and Flux keeps waiting). Without cel-python these checks are
    skipped, unless --require-cel. `pip install -r tests/gitops/requirements.txt`.
    What plain kstatus (no healthCheckExprs) says is printed for information.
Then `python3 gitops/argocd/render_cm.py --check`.

Exits 1 on any failure; the last line is 'N passed, N failed'.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ARGOCD = REPO / "gitops" / "argocd"
DRIVER = ARGOCD / "run_health.lua"
FLUX_KUSTOMIZATION = REPO / "gitops" / "flux" / "kustomization.yaml"
FIXTURES = HERE / "fixtures"

GROUP = "smtprelay.io"
SCRIPT_BY_KIND = {
    "SmtpRelay": ARGOCD / "health-smtprelay.lua",
    "ClusterSmtpRelay": ARGOCD / "health-smtprelay.lua",
    "SenderIdentity": ARGOCD / "health-senderidentity.lua",
}
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded"}
FLUX_FOR_ARGO = {"Healthy": "Current", "Progressing": "InProgress", "Degraded": "Failed"}


class Counter:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def record(self, ok: bool, label: str, detail: str) -> None:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'ok  ' if ok else 'FAIL'} {label}: {detail}")


def unescape(message: str) -> str:
    out, i = [], 0
    while i < len(message):
        c = message[i]
        if c == "\\" and i + 1 < len(message):
            out.append({"n": "\n", "t": "\t", "\\": "\\"}.get(message[i + 1], message[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def run_lua(lua: str, script: Path, obj: dict[str, Any]) -> tuple[str, str] | str:
    """(status, message), or an error text."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8", delete=False) as f:
        json.dump(obj, f)
        path = f.name
    try:
        proc = subprocess.run([lua, str(DRIVER), str(script), path],
                              capture_output=True, text=True, timeout=30)
    finally:
        Path(path).unlink(missing_ok=True)
    if proc.returncode != 0:
        return f"{lua} exited {proc.returncode}: {proc.stderr.strip()}"
    line = proc.stdout.rstrip("\n")
    if "\n" in line or "\t" not in line:
        return f"{lua}: unexpected output {proc.stdout!r}"
    status, message = line.split("\t", 1)
    return status, unescape(message)


# ------------------------------------------------------------------------- kstatus

def kstatus(obj: dict[str, Any]) -> str:
    """What kstatus (cli-utils status.Compute) says for a custom resource of an unknown
    type: deletionTimestamp -> Terminating; status.observedGeneration present and !=
    metadata.generation -> InProgress; Reconciling=True -> InProgress; Stalled=True ->
    Failed; then the Ready condition: True -> Current, False/Unknown -> InProgress;
    no Ready condition -> Current. Per-condition observedGeneration is not read."""
    meta = obj.get("metadata", {})
    status = obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    if "generation" in meta and "observedGeneration" in status \
            and status["observedGeneration"] != meta["generation"]:
        return "InProgress"
    conditions = status.get("conditions") or []
    for c in conditions:
        if c.get("type") == "Reconciling" and c.get("status") == "True":
            return "InProgress"
        if c.get("type") == "Stalled" and c.get("status") == "True":
            return "Failed"
    for c in conditions:
        if c.get("type") == "Ready":
            if c.get("status") == "True":
                return "Current"
            if c.get("status") in ("False", "Unknown"):
                return "InProgress"
    return "Current"


# --------------------------------------------------------------------------- CEL

class CelChecks:
    """Flux healthCheckExprs from gitops/flux/kustomization.yaml, evaluated with cel-python."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.exprs: dict[str, dict[str, Any]] = {}
        try:
            import celpy  # noqa: F401
            import yaml
        except ImportError as e:
            self.error = f"{e.name} is not installed (pip install -r tests/gitops/requirements.txt)"
            return
        import celpy
        self.celpy = celpy
        self.env = celpy.Environment()
        for doc in yaml.safe_load_all(FLUX_KUSTOMIZATION.read_text(encoding="utf-8")):
            for entry in (doc or {}).get("spec", {}).get("healthCheckExprs", []) or []:
                kind = entry["kind"]
                if entry["apiVersion"] != f"{GROUP}/v1alpha1":
                    raise SystemExit(f"{FLUX_KUSTOMIZATION}: unexpected apiVersion {entry['apiVersion']}")
                compiled = {}
                for field in ("inProgress", "failed", "current"):
                    if entry.get(field):
                        compiled[field] = self.env.program(self.env.compile(entry[field]))
                # A kind listed in several Kustomizations must carry the same expressions.
                if kind in self.exprs and self.exprs[kind]["source"] != entry:
                    raise SystemExit(f"{FLUX_KUSTOMIZATION}: different healthCheckExprs for {kind}")
                self.exprs[kind] = {"source": entry, "programs": compiled}

    def evaluate(self, obj: dict[str, Any]) -> str:
        meta = obj.get("metadata", {})
        status = obj.get("status") or {}
        if "observedGeneration" in status and "generation" in meta \
                and status["observedGeneration"] != meta["generation"]:
            return "InProgress"
        programs = self.exprs[obj["kind"]]["programs"]
        activation = {k: self.celpy.json_to_cel(v) for k, v in obj.items()}
        for field, result in (("inProgress", "InProgress"), ("failed", "Failed"), ("current", "Current")):
            if field not in programs:
                continue
            try:
                value = programs[field].evaluate(activation)
            except Exception:  # CELEvalError and friends: kstatus reports Unknown
                return "Unknown"
            if isinstance(value, Exception) or not isinstance(value, self.celpy.celtypes.BoolType):
                return "Unknown"
            if bool(value):
                return result
        return "InProgress"


# -------------------------------------------------------------------------- main

def check_file(path: Path, luas: list[str], cel: CelChecks | None, counter: Counter) -> None:
    label = path.name
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        obj, expect = doc["object"], doc["expect"]
        want_status = expect["status"]
        want_text = expect.get("messageContains", "")
    except (OSError, ValueError, KeyError, TypeError) as e:
        counter.record(False, label, f"not a fixture ({{\"object\": ..., \"expect\": {{\"status\": ...}}}}): {e}")
        return
    kind = obj.get("kind")
    group = str(obj.get("apiVersion", "")).split("/")[0]
    if group != GROUP or kind not in SCRIPT_BY_KIND:
        counter.record(False, label, f"no health script for {obj.get('apiVersion')} {kind}")
        return
    if want_status not in ARGO_STATUSES:
        counter.record(False, label, f"expect.status {want_status!r} is not one of {sorted(ARGO_STATUSES)}")
        return

    results = {lua: run_lua(lua, SCRIPT_BY_KIND[kind], obj) for lua in luas}
    problems = []
    for lua, result in results.items():
        if isinstance(result, str):
            problems.append(result)
            continue
        status, message = result
        if status != want_status:
            problems.append(f"[{lua}] status {status}, want {want_status} ({message})")
        elif want_text not in message:
            problems.append(f"[{lua}] message {message!r} lacks {want_text!r}")
    first = next(iter(results.values()))
    shown = f"{first[0]}: {first[1]}" if isinstance(first, tuple) else ""
    info = f"  [kstatus without exprs: {kstatus(obj)}]"
    counter.record(not problems, f"argocd {label}",
                   "; ".join(problems) if problems else f"{shown} ({', '.join(luas)}){info}")

    if cel is not None and cel.error is None:
        if kind not in cel.exprs:
            counter.record(False, f"flux   {label}", f"no healthCheckExprs for {kind} in {FLUX_KUSTOMIZATION.name}")
            return
        got = cel.evaluate(obj)
        want = FLUX_FOR_ARGO[want_status]
        ok = got == want or (got == "Unknown" and want == "InProgress" and "status" not in obj)
        note = " (no status yet: the expressions cannot read it; Flux keeps waiting)" if got == "Unknown" and ok else ""
        counter.record(ok, f"flux   {label}", f"{got}{note}" if ok else f"{got}, want {want}")


def main() -> int:
    parser = argparse.ArgumentParser(description="Check the Argo CD / Flux health rules on fixtures.")
    parser.add_argument("--dir", action="append", type=Path, default=[],
                        help="check DIR/*.json instead of tests/gitops/fixtures (repeatable)")
    parser.add_argument("--require-cel", action="store_true",
                        help="fail when cel-python or PyYAML is missing instead of skipping the Flux checks")
    args = parser.parse_args()

    counter = Counter()
    luas = ["lua5.4"] + (["lua5.1"] if shutil.which("lua5.1") else [])
    if shutil.which("lua5.4") is None:
        counter.record(False, "lua5.4", "not installed (apt-get install lua5.4)")
        print(f"{counter.passed} passed, {counter.failed} failed")
        return 1
    if "lua5.1" not in luas:
        print("note: lua5.1 is not installed; the scripts run under lua5.4 only "
              "(apt-get install lua5.1 to also check Argo CD's Lua 5.1 dialect)")

    cel = CelChecks()
    if cel.error:
        if args.require_cel:
            counter.record(False, "flux", f"CEL checks cannot run: {cel.error}")
        else:
            print(f"note: Flux CEL checks skipped: {cel.error}")

    dirs = args.dir or [FIXTURES]
    files = []
    for d in dirs:
        found = sorted(d.glob("*.json"))
        if not found:
            counter.record(False, str(d), "no *.json files")
        files.extend(found)
    for path in files:
        check_file(path, luas, cel, counter)

    proc = subprocess.run([sys.executable, str(ARGOCD / "render_cm.py"), "--check"],
                          capture_output=True, text=True)
    counter.record(proc.returncode == 0, "render_cm.py --check",
                   (proc.stdout + proc.stderr).strip())

    print(f"{counter.passed} passed, {counter.failed} failed")
    return 0 if counter.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
