"""probe/leftovers.py's sweep event (the sweep itself is tested for real: test_probe_deadman, test_endpoint,
test_shaper)."""

from __future__ import annotations

import structlog.testing

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



def test_a_part_of_the_sweep_that_fails_leaves_the_others_and_the_start(tmp_path, monkeypatch):
    """The shaping's part fails (the netlink worker refuses: a stand-in, the host is left alone);
    the nc part still runs and finds a pid file whose process is not nc; tracefs is pointed at a
    directory without it."""
    import asyncio

    from probe import kstates
    from probe.endpoint import PID_FILE

    async def netlink(fn, *args, **kwargs):
        raise OSError("netlink: no buffer space")

    monkeypatch.setenv(kstates.ROOT_ENV, str(tmp_path / "no-tracefs"))
    (tmp_path / PID_FILE).write_text("1\n")  # init: never nc, never killed
    with structlog.testing.capture_logs() as logs:
        removed = asyncio.run(leftovers.sweep(netlink, "thinkpad", "eth0", 9090, tmp_path))
    assert removed == [] and not (tmp_path / PID_FILE).exists()
    [failed] = [e for e in logs if e["event"] == "leftovers_sweep_failed"]
    assert failed["part"] == "shaping" and "no buffer space" in failed["error"]
