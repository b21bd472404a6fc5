#!/usr/bin/env python3
"""Render the Helm chart with the real Helm engine (helm-python-sdk) and print the
objects as one JSON list, for tests that apply them to a real API server
(tests/chart_cluster.rs).

    python3 tests/chart/render.py RELEASE NAMESPACE '{"values": "as JSON"}'
"""

import json
import sys
from pathlib import Path

import helm_python as helm
import yaml

CHART_DIR = Path(__file__).resolve().parent.parent.parent / "charts" / "smtp-relay-operator"


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    release, namespace, values = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    manifests = helm.Chart.load(CHART_DIR).render(values, name=release, namespace=namespace, is_install=True)
    docs = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    json.dump(docs, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
