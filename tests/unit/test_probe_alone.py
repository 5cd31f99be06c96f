"""The probe is installed alone on a lab host: tcplab/ and probe/ never import controller/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECK = """
import importlib, json, pkgutil, sys
for root in ("tcplab", "probe"):
    pkg = importlib.import_module(root)
    for m in pkgutil.walk_packages(pkg.__path__, prefix=root + "."):
        importlib.import_module(m.name)
print(json.dumps({"modules": len([n for n in sys.modules if n.split(".")[0] in ("tcplab", "probe")]),
                  "controller": sorted(n for n in sys.modules if n.split(".")[0] == "controller")}))
"""


def test_every_tcplab_and_probe_module_imports_without_the_controller():
    res = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["controller"] == [] and out["modules"] > 20
