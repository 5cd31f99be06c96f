"""A run's TCP knobs on a real kernel: set in a host's namespace, restored, and restored by the
next probe when one was killed with them changed (probe/sysctls.py). The namespace's knobs are its
own: the machine's stay as they were."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
KNOB = Path("/proc/sys/net/ipv4/tcp_syn_retries")


def py(host, code: str, *args: str, check: bool = True):
    return host.run(sys.executable, "-c", code, *args, cwd=ROOT, check=check)


SET = """
import json, sys
from pathlib import Path
from probe.sysctls import Sysctls
s = Sysctls(Path(sys.argv[1]))
print(json.dumps(s.set(json.loads(sys.argv[2]))))
if sys.argv[3] == "restore":
    print(json.dumps(s.restore()))
"""
READ = "import sys; print(open('/proc/sys/net/ipv4/' + sys.argv[1]).read().split())"
SWEEP = "import sys; from pathlib import Path; from probe.sysctls import sweep; print(sweep(Path(sys.argv[1])))"


def test_a_knob_is_set_in_the_hosts_namespace_and_restored(netns_pair, tmp_path):
    a = netns_pair.a
    machine = KNOB.read_text()
    before = eval(py(a, READ, "tcp_syn_retries").stdout)
    rmem = eval(py(a, READ, "tcp_rmem").stdout)
    knobs = json.dumps({"tcp_syn_retries": 2, "tcp_rmem": [4096, 8192, 16384]})
    out = [line for line in py(a, SET, str(tmp_path), knobs, "restore").stdout.splitlines()
           if line.startswith("{")]  # not the log lines
    changed, restored = json.loads(out[0]), json.loads(out[1])
    assert changed["tcp_syn_retries"] == {"was": [int(before[0])], "now": [2]}
    assert changed["tcp_rmem"] == {"was": [int(x) for x in rmem], "now": [4096, 8192, 16384]}
    assert restored["tcp_syn_retries"] == {"was": [2], "now": [int(before[0])]}
    assert eval(py(a, READ, "tcp_rmem").stdout) == rmem
    assert not (tmp_path / "sysctls.saved.json").exists()
    assert KNOB.read_text() == machine  # the namespace's own knob, not the machine's


def test_a_killed_probes_knobs_are_put_back_by_the_next_ones_sweep(netns_pair, tmp_path):
    a = netns_pair.a
    before = eval(py(a, READ, "tcp_syn_retries").stdout)
    py(a, SET, str(tmp_path), json.dumps({"tcp_syn_retries": 3}), "exit")  # the process ends without restoring
    assert eval(py(a, READ, "tcp_syn_retries").stdout) == ["3"]
    assert json.loads((tmp_path / "sysctls.saved.json").read_text()) == {"tcp_syn_retries": [int(before[0])]}
    assert eval(py(a, SWEEP, str(tmp_path)).stdout) == [f"net.ipv4.tcp_syn_retries back to {before[0]}"]
    assert eval(py(a, READ, "tcp_syn_retries").stdout) == before
    assert eval(py(a, SWEEP, str(tmp_path)).stdout) == []  # nothing left to do


@pytest.mark.parametrize("values, message", [
    ({"tcp_congestion_control": 1}, "sysctl 'tcp_congestion_control' is not one a run may change"),
    ({"tcp_syn_retries": 0}, "sysctl tcp_syn_retries must be a whole number from 1 to 127, got 0"),
    ({"tcp_rmem": 4096}, "sysctl tcp_rmem must be three whole numbers"),
    ({"tcp_syn_linear_timeouts": 200}, "the kernel refused net.ipv4.tcp_syn_linear_timeouts = 200"),
])
def test_what_a_run_may_not_change_is_refused_naming_it(netns_pair, tmp_path, values, message):
    a = netns_pair.a
    before = eval(py(a, READ, "tcp_rmem").stdout)
    res = py(a, SET, str(tmp_path), json.dumps(values), "restore", check=False)
    assert res.returncode != 0 and message in res.stderr, res.stderr
    assert eval(py(a, READ, "tcp_rmem").stdout) == before
    assert not (tmp_path / "sysctls.saved.json").exists()  # nothing was changed, nothing to put back
