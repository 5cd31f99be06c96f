"""The whole road, as a user runs it: ``ansible-playbook lab.yml`` on the embedded lab.

Testbed, provisioning (controller, wheelhouse, a venv and a probe daemon per namespace host),
the seed scenario at 0.3 s of delay including TIME_WAIT's 60 s, and teardown. Then the trace
must tell the seed's storyline, and nothing the lab made may be left on the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.trace import load
from tests.netns import require_root
from tests.seedcheck import assert_every_lab_packet_was_shaped, assert_seed_storyline

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def leftovers(home: Path) -> list[str]:
    """Everything of the lab still on the machine (namespaces, links, processes, tracefs, qdiscs)."""
    found = []
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    found += [f"netns {n.split()[0]}" for n in ns if n.startswith(("tcplab-thinkpad", "tcplab-raspberrypi"))]
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout.splitlines()
    found += [f"link {ln.split()[0]}" for ln in links if ln.split()[0].split("@")[0] in ("tcplab0", "tcplab1", "tcplab2")]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(home) in cmd:
            found.append(f"process {pid}: {cmd.strip()}")
    tracing = Path("/sys/kernel/tracing/instances")
    if tracing.is_dir():
        found += [f"tracefs {i}" for i in os.listdir(tracing) if "tcplab" in i]
    qdisc = subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True).stdout
    found += [f"qdisc {ln}" for ln in qdisc.splitlines() if "netem" in ln or "tcplab" in ln]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    found += [f"iptables {ln}" for ln in rules.splitlines() if "TCPLAB" in ln.upper()]
    return found


def test_lab_playbook_films_the_seed_and_leaves_nothing(tmp_path):
    require_root()
    home, runs = tmp_path / "home", tmp_path / "runs"
    extra = json.dumps({"tcplab_delay": 0.3, "tcplab_home": str(home), "tcplab_runs_dir": str(runs)})
    try:
        res = subprocess.run([str(BIN / "ansible-playbook"), "lab.yml", "-e", extra], cwd=REPO,
                             capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    finally:
        # whatever happened, nothing may stay: down is idempotent and also cleans after a failure
        subprocess.run([str(BIN / "tcplab"), "lab", "down", "--home", str(home)], capture_output=True, timeout=120)

    (run_dir,) = runs.iterdir()
    assert str(run_dir) in res.stdout
    recs = load(run_dir / "trace.jsonl")
    assert_seed_storyline(recs, delay=0.3)

    info = json.loads((run_dir / "run.json").read_text())
    assert info["ok"] and info["causality"]["violations"] == []
    assert {h["shaper_backend"] for h in info["hosts"].values()} == {"nfqueue"}  # this kernel has no netem
    # every lab-port packet a host sent went through its delay line, and nothing else did
    assert_every_lab_packet_was_shaped(recs, info)
    for host in ("thinkpad", "raspberrypi"):
        assert (run_dir / f"{host}.pcap").stat().st_size > 24 * 10
    # the film, made by the controller the playbook provisioned (film.html's content: test_film_html)
    for name in ("film.html", "story.md", "ladder.svg", "ladder.png"):
        assert (run_dir / name).stat().st_size > 1000, name
    assert leftovers(home) == []
