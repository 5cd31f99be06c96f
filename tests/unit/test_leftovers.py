"""probe/leftovers.py's sweep event (the sweep itself is tested for real: test_probe_deadman, test_endpoint,
test_shaper)."""

from __future__ import annotations

from probe import leftovers


def test_the_sweep_event_keeps_within_the_wires_bounds():
    ev = leftovers.event([f"tracefs instance tcplab-thinkpad-{pid}" for pid in range(1000)])
    assert ev["kind"] == "sweep" and isinstance(ev["t_ns"], int)
    assert len(ev["removed"]) == leftovers.MAX_ITEMS and ev["removed"][-1] == "and 745 more"
    assert leftovers.event(["x" * 300])["removed"] == ["x" * leftovers.MAX_LINE]


def test_the_sweep_event_passes_the_wires_check():
    from tcplab.wire.bodies import check_event

    check_event(leftovers.event(["iptables mangle chain TCPLAB-SHAPE-9090", "nc pid 31009",
                                 "tracefs instance tcplab-thinkpad-30980"]))
    check_event(leftovers.event([f"nc pid {pid}" for pid in range(1000)]))
