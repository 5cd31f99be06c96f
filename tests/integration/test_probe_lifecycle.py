"""A real probe daemon's life: real signals, a real namespace, real shaping, a controller that
never acknowledges (a ROUTER the test holds, as the controller binds one).

- One SIGTERM: the probe clears its shaping and ends, after waiting ``DRAIN_S`` for the
  acknowledgements of its events (none come).
- A second signal while it stops forces the exit: no wait for acknowledgements, and still nothing
  left in the kernel (a 3 s delay must never stay on someone's wifi).
- The sync barrier: the capture's fresh counters, then the probe's counters event, then the result.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml
import zmq

from probe.daemon import DRAIN_S
from tcplab import pidfile, wire
from tests.integration.test_doctor_readiness import log_events
from tests.netns import Host, NetnsPair, require_root

pytestmark = pytest.mark.integration

PROBE = str(Path(sys.executable).parent / "tcplab-probe")


class SilentController:
    """A ROUTER that hears the probe and answers only what the test sends: no welcome, no ack."""

    def __init__(self, endpoint: str):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.bind(endpoint)
        self.session = wire.Session("controller")
        self.frames: list[dict] = []

    def recv(self, timeout: float = 20.0) -> dict:
        assert self.sock.poll(int(timeout * 1000)), "nothing from the probe"
        ident, frame = self.sock.recv_multipart()
        env = self.session.decode(frame, peer=ident)
        self.frames.append(env)
        return env

    def until(self, type_: str, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            env = self.recv(max(0.1, deadline - time.monotonic()))
            if env["type"] == type_:
                return env

    def command(self, cid: int, action: str, **args) -> dict:
        self.session.send_blocking(self.sock, "command", {"id": cid, "action": action, "args": args}, to=b"thinkpad")
        result = self.until("result")
        assert result["body"]["id"] == cid and result["body"]["ok"], result
        return result

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


def shaped(host: Host) -> bool:
    return "NFQUEUE" in host.run("iptables-save").stdout or \
        "netem" in host.run("tc", "qdisc", "show", "dev", host.ifname).stdout


def wait_gone(pid: int, timeout: float) -> float:
    """Seconds until process ``pid`` ended."""
    t0 = time.monotonic()
    while pidfile.running(pid):
        assert time.monotonic() - t0 < timeout, f"probe {pid} still running after {timeout} s"
        time.sleep(0.01)
    return time.monotonic() - t0


@pytest.fixture
def probe(tmp_path):
    """A real probe in a fresh namespace, shaping its lab port, its events never acknowledged."""
    require_root()
    with NetnsPair() as pair:
        controller = SilentController(f"ipc://{tmp_path}/probes.sock")
        home = tmp_path / "hosts" / "thinkpad"
        cfg = tmp_path / "thinkpad.yml"
        cfg.write_text(yaml.safe_dump({"host": "thinkpad", "controller": f"ipc://{tmp_path}/probes.sock",
                                       "lab_ip": pair.a.ip, "lab_iface": pair.a.ifname, "home": str(home)}))
        pair.a.run(PROBE, "start", "--config", str(cfg), timeout=30)
        pid = pidfile.alive(home / "probe.pid", str(cfg))
        try:
            assert pid, (home / "probe.log").read_text()
            controller.until("hello")
            controller.command(1, "shape", delay_ms=300)
            assert shaped(pair.a)
            yield {"pid": pid, "home": home, "host": pair.a, "controller": controller}
        finally:
            pair.a.run(PROBE, "stop", "--config", str(cfg), check=False, timeout=30)
            controller.close()


def test_the_barrier_sends_capture_stats_then_counters_then_its_result(probe):
    controller = probe["controller"]
    start = len(controller.frames)
    controller.command(2, "sync")
    after = [x for f in controller.frames[start:]  # each batch's events in their place
             for x in ([{"type": "event", "body": e} for e in f["body"]["events"]] if f["type"] == "events" else [f])]
    kinds = [f["body"].get("kind") if f["type"] == "event" else f["type"] for f in after]
    assert "capture_stats" in kinds and kinds[-2:] == ["counters", "result"], kinds
    assert kinds.index("capture_stats") < kinds.index("counters")
    counters = after[-2]["body"]["counters"]
    assert {"statemerge_dropped_foreign", "statemerge_dropped_unresolved", "kstates_missed_pages",
            "transport_dropped"} <= set(counters)
    assert all(type(v) is int for v in counters.values()) and counters["transport_dropped"] == 0


def test_one_signal_clears_shaping_and_waits_for_the_acks(probe):
    t0 = time.monotonic()
    os.kill(probe["pid"], signal.SIGTERM)
    took = wait_gone(probe["pid"], DRAIN_S + 15)
    assert took >= DRAIN_S, took  # the drain waited for acknowledgements that never came
    assert not shaped(probe["host"])
    assert not (probe["home"] / "probe.status").exists()
    stopped = [e for e in log_events(probe["home"] / "probe.log") if e["event"] == "probe_stopped"]
    assert len(stopped) == 1 and stopped[0]["forced"] is False and stopped[0]["unacked"] > 0, stopped
    assert time.monotonic() - t0 < DRAIN_S + 5


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_forces_the_exit_and_nothing_is_left(probe, second):
    log = probe["home"] / "probe.log"
    t0 = time.monotonic()
    os.kill(probe["pid"], signal.SIGTERM)
    while not any(e["event"] == "probe_stopping" for e in log_events(log)):
        assert time.monotonic() - t0 < 5, "the probe did not start stopping"
        time.sleep(0.01)
    os.kill(probe["pid"], second)
    took = wait_gone(probe["pid"], DRAIN_S + 15)
    assert took < 1.5, took
    assert time.monotonic() - t0 < DRAIN_S  # sooner than a drain would have let it
    assert not shaped(probe["host"])  # the cleanups ran all the same
    assert not (probe["home"] / "probe.status").exists()
    stopped = [e for e in log_events(log) if e["event"] == "probe_stopped"]
    assert len(stopped) == 1 and stopped[0]["forced"] is True and stopped[0]["unacked"] > 0, stopped
