"""A bad or hostile scenario file through a real ``tcplab run`` against a real controller and two
real probes: exit 2 and one line naming the file and the line, and nothing reaches a host (no run
directory, no run in the controller's log, no command in a probe's, nothing shaped, no nc)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_controller_liveness import nc_running
from tests.integration.test_daemons import lab  # noqa: F401  (the fixture: a started Lab)
from tests.integration.test_doctor_readiness import log_events
from tests.integration.test_probe_lifecycle import shaped

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "bad-scenarios"
HOSTILE = ("38-alias-bomb", "40-deep-nesting", "41-invalid-utf8", "21-send-before-connect", "24-unknown-state",
           "30-loss-above-100", "36-duplicate-top-key")


def test_bad_files_are_refused_before_anything_reaches_a_host(lab):
    for name in HOSTILE:
        path = next(DATA.glob(f"{name}.yml"))
        res = lab.tcplab("run", str(path), timeout=60)
        assert res.returncode == 2, (name, res.stdout, res.stderr)
        assert res.stdout == "" and res.stderr.count("\n") == 1, (name, res.stderr)
        assert res.stderr.startswith(f"tcplab: {path}:"), res.stderr
    assert not lab.runs.exists() or not any(lab.runs.iterdir())
    events = [e["event"] for e in log_events(lab.controller_home / "controller.log")]
    assert "run_started" not in events and "run_refused" not in events
    for name, host in lab.hosts.items():
        probe = [e for e in log_events(lab.root / "hosts" / name / "probe.log")]
        assert not [e for e in probe if "command" in e or e["event"] in ("nc_started", "shaper_set")], name
        assert not shaped(host) and not nc_running(host)
    # and the lab still runs a good one
    res, run_dir = lab.run_scenario({"name": "good", "port": 9090, "delay": 0.0, "steps": [
        {"action": "listen", "host": "thinkpad", "expect": ["thinkpad LISTEN"]}]})
    assert res.returncode == 0, res.stdout + res.stderr
    probe = log_events(lab.root / "hosts" / "thinkpad" / "probe.log")
    assert [e for e in probe if "command" in e] and "nc_started" in [e["event"] for e in probe]  # what was looked for


def test_an_expectation_wrong_on_purpose_fails_with_expected_against_observed(lab):
    res, run_dir = lab.run_scenario({"name": "wrong", "port": 9090, "delay": 0.1, "steps": [
        {"action": "shape", "host": ["thinkpad", "raspberrypi"]},
        {"action": "listen", "host": "thinkpad", "expect": ["thinkpad LISTEN"]},
        {"action": "connect", "host": "raspberrypi", "to": "thinkpad", "timeout": 3,
         "expect": ["raspberrypi ESTABLISHED", "thinkpad ESTABLISHED at 2±0.1", "raspberrypi sends RST",
                    "thinkpad prints Hello"]}]})
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr.splitlines()
    # the time missed fails the step at once, naming it, and what was still awaited then
    assert err[0].startswith("tcplab: run failed: step 3 (connect on raspberrypi): thinkpad ESTABLISHED at 2±0.1 "
                             "came at 0."), err[0]
    assert "; still waiting for raspberrypi sends RST, thinkpad prints Hello; observed " in err[0]
    # every failed expectation against what was observed, with the records it looked at
    timed = next(i for i, line in enumerate(err) if line.startswith("step 3: expected thinkpad ESTABLISHED at 2±0.1;"))
    assert "observed 1 of 1 reached ESTABLISHED; the first at 0." in err[timed]
    assert "expected at 2 ± 0.1 s" in err[timed]
    assert err[timed + 1].startswith("      t=") and "LISTEN -> SYN_RECEIVED" in err[timed + 1]
    assert err[timed + 2].startswith("    * t=") and "SYN_RECEIVED -> ESTABLISHED" in err[timed + 2]
    rst = next(line for line in err if line.startswith("step 3: expected raspberrypi sends RST;"))
    assert "observed 0 of 1 among 2 segments sent" in rst  # the SYN and the ACK
    assert any(line.startswith("step 3: expected thinkpad prints Hello; observed 0 of 1 lines printed")
               for line in err)
    assert not any("expected raspberrypi ESTABLISHED" in line for line in err)  # that one was met
    import json
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and [u["expected"] for u in info["unmet"]] == [
        "thinkpad ESTABLISHED at 2±0.1", "raspberrypi sends RST", "thinkpad prints Hello"]
    assert "step 3: expected raspberrypi sends RST" in (run_dir / "summary.txt").read_text()
