"""A Raspberry Pi's install set resolves completely offline: arm64 and armhf bookworm under qemu.

The control node prepares the sets exactly as the probe role asks for them (its tcplab_probe_packages,
``-offline``), plus pytest; in a minbase chroot of the Pi's architecture with no network, the role's
installer (controller/wheelhouse/hostinstall.py) installs them, the probe imports, a second install
changes nothing, and the probe's unit tests pass there. On armhf the wire runs on Debian's
python3-zmq 24 / python3-msgpack / python3-yaml (PyPI has no armv7l wheels of them).

First run: about 3 minutes of debootstrap per architecture (cached under /var/cache/tcplab), then
about 2 minutes of emulated installs and tests; later runs reuse the chroots and the wheelhouse.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.archroot import CACHE, Overlay, ensure_chroot

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = CACHE / "tcplab-wheelhouse-archtest"
ARCHES = {"arm64": "aarch64", "armhf": "armv7l"}


def role_packages() -> list[str]:
    return yaml.safe_load((REPO / "playbooks/roles/probe/defaults/main.yml").read_text())["tcplab_probe_packages"]


def probe_unit_tests() -> list[Path]:
    """The unit tests of the probe alone (they import probe and nothing of the controller)."""
    out = []
    for p in sorted((REPO / "tests/unit").glob("test_*.py")):
        text = p.read_text()
        if re.search(r"^(from|import) (probe|tcplab)\b", text, re.M) and "controller" not in text:
            out.append(p)
    return out


@pytest.fixture(scope="module")
def prepared() -> dict:
    """The two offline sets and the project's wheel, prepared by the command the role runs."""
    argv = [sys.executable, "-m", "controller.wheelhouse", "prepare", "--repo", str(REPO),
            "--wheelhouse", str(WHEELHOUSE), "--extra", "pytest"]
    argv += [f"--set={m}-py3.11-bookworm-offline" for m in ARCHES.values()]
    argv += [f"--apt={p}" for p in role_packages()]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("arch", list(ARCHES))
def test_install_set_installs_offline_and_the_probe_runs_its_tests(arch, prepared):
    machine = ARCHES[arch]
    root = ensure_chroot(arch)
    with Overlay(root) as ov:
        bundle = ov.put(Path(prepared["sets"][f"{machine}-py3.11-bookworm-offline"]), "home/install-set.tar")
        installer = ov.put(REPO / "controller/wheelhouse/hostinstall.py")
        tests = ov.inside / "t/tests"
        (tests / "unit").mkdir(parents=True)
        for f in ("__init__.py", "conftest.py", "netns.py"):
            ov.put(REPO / "tests" / f, f"t/tests/{f}")
        ov.put(REPO / "tests/unit/__init__.py", "t/tests/unit/__init__.py")
        for d in (REPO / "tests/data").iterdir():  # what the tests read (traces, tracefs formats)
            if d.name != "wheelhouse-tools":
                ov.put(d, f"t/tests/data/{d.name}")
        unit = probe_unit_tests()
        for p in unit:
            ov.put(p, f"t/tests/unit/{p.name}")
        install = (f"/usr/bin/python3 {installer} --bundle {bundle} "
                   f"--home /tmp/tcplab/home --venv /tmp/tcplab/home/venv --python /usr/bin/python3")
        venv_py = "/tmp/tcplab/home/venv/bin/python"
        r = ov.run(
            "set -e; echo \"interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | xargs)\";"
            f" {install}; {install};"
            f" {venv_py} -c 'import json, platform, probe.daemon, zmq, msgpack, yaml;"
            " print(json.dumps({\"machine\": platform.machine(), \"zmq\": zmq.__version__, \"zmq_file\": zmq.__file__}))';"
            f" cd /tmp/tcplab/t && {venv_py} -m pytest -q -p no:cacheprovider tests/unit"
        )
    out = r.stdout.splitlines()
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-2000:])
    first, second = (json.loads(ln) for ln in out if ln.startswith('{"changed"'))
    assert first["changed"] and first["set"] == f"{machine}-py3.11-bookworm-offline"
    assert first["steps"][0] == "unpack" and first["steps"][-1] == "venv"
    # minbase lacks tcpdump (and its libpcap, which the probe's BPF compiler loads): apt installed them
    # from the archive's own repository, with no network
    assert any(s.startswith("apt:") and "tcpdump" in s for s in first["steps"]), first
    assert second == {"changed": False, "steps": [], "set": first["set"]}
    info = json.loads(next(ln for ln in out if ln.startswith('{"machine"')))
    assert info["machine"] == machine
    if arch == "armhf":  # Debian's pyzmq 24, seen through --system-site-packages
        assert info["zmq"].startswith("24.") and info["zmq_file"].startswith("/usr/lib/python3/dist-packages/")
    else:
        assert "/tmp/tcplab/home/venv/" in info["zmq_file"]
    assert out[0] == "interfaces: lo", out[0]  # the install had no network to reach
    assert re.fullmatch(r"\d+ passed in [\d.]+s", out[-1]), out[-5:]  # no failure, no skip
