"""One clock across hosts, proved with an offset known exactly.

The raspberrypi probe runs in a time namespace (``unshare --time --monotonic 5000``): its
CLOCK_MONOTONIC reads exactly 5000 s more than the controller's and thinkpad's. The controller
must find that offset from its ping exchanges alone, within 1 ms, bound its own error, and lay
both hosts' packets on one timeline where every segment arrives after it left, within 1 ms.
"""

import json

import pytest

from controller.trace import load
from controller.report import segment_pairs
from tests.daemons import Lab, storyline

pytestmark = pytest.mark.integration

OFFSET_S = 5000
MS = 1_000_000

SCENARIO = storyline("clock", delay=0.0, shape=False)


@pytest.fixture
def offset_lab(netns_pair, tmp_path):
    lab = Lab(netns_pair, tmp_path, clock_offsets={"raspberrypi": OFFSET_S})
    try:
        yield lab.start()
    finally:
        lab.close()


def test_the_probe_really_runs_on_a_clock_5000_s_ahead(offset_lab):
    pid = offset_lab.probe_pid("raspberrypi")
    assert pid is not None
    def monotonic_offset(pid):
        line = next(ln for ln in open(f"/proc/{pid}/timens_offsets") if ln.startswith("monotonic"))
        return line.split()[1:]
    assert monotonic_offset(pid) == [str(OFFSET_S), "0"]
    assert monotonic_offset(offset_lab.probe_pid("thinkpad")) == ["0", "0"]


def test_a_known_offset_is_found_within_1_ms_and_the_trace_is_aligned(offset_lab, tmp_path):
    res, run_dir = offset_lab.run_scenario(SCENARIO)
    assert res.returncode == 0, res.stderr + res.stdout
    info = json.loads((run_dir / "run.json").read_text())

    pi, tp = info["hosts"]["raspberrypi"]["clock"], info["hosts"]["thinkpad"]["clock"]
    for clock in (pi, tp):
        assert {"offset_ns", "drift_ppm", "uncertainty_ns", "samples", "rtt_min_ns"} <= set(clock)
        assert clock["samples"] >= 8 and 0 < clock["uncertainty_ns"] < MS
    error = pi["offset_ns"] - OFFSET_S * 1_000_000_000
    assert abs(error) < MS, pi
    assert abs(error) <= pi["uncertainty_ns"], pi      # the bound holds the truth
    assert abs(tp["offset_ns"]) <= tp["uncertainty_ns"], tp

    causal = pi["causal"]
    assert causal["pairs"] > 5 and abs(causal["shift_s"]) < 1e-3
    lo, hi = causal["interval_s"]
    assert lo <= causal["shift_s"] <= hi and causal["uncertainty_s"] < 1e-3
    assert info["causality"]["violations"] == []

    recs = load(run_dir / "trace.jsonl")
    pairs = list(segment_pairs(recs))
    assert len(pairs) >= 10
    for out, inn in pairs:  # no delay on the link: each segment arrives within 1 ms of leaving
        assert 0 <= inn["t"] - out["t"] < 1e-3, (out, inn)
    lines = (run_dir / "clock.jsonl").read_text().splitlines()
    assert {json.loads(ln)["host"] for ln in lines} == {"thinkpad", "raspberrypi"}
