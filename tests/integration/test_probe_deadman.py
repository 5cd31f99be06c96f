"""A real probe daemon that loses its controller, and one that is killed with -9 (issue 10 item 5).

Real probe in a fresh namespace, shaping its lab port for real and running the real nc, its
controller a ROUTER the test holds (as the controller binds one; it answers only what the test
sends):

- A real controller killed with -9 mid-run (both probes shaped, one nc listening): within
  ``DEADMAN_S + 2`` s neither host is shaped and nc has ended.
- The controller's socket goes away: within ``DEADMAN_S + 2`` s the probe has removed its
  shaping (``tc qdisc show``, ``iptables -t mangle -S``) and ended nc (its pid), by itself, and
  logged it. A controller bound again at the same address welcomes it and receives the
  ``deadman`` event, kept until then.
- The probe is killed with -9 while shaped and listening: the shaping and nc stay behind. Started
  again, it has removed them (and its tracefs instance) before its hello, and its first events
  include the ``sweep`` saying what it removed. With a real controller, mid-run: the sweep is a
  record of the run's trace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import yaml

from controller.trace import load

from probe.deadman import DEADMAN_S
from tcplab import pidfile
from tests.integration.test_doctor_readiness import log_events
from tests.daemons import VENV_BIN, Lab
from tests.integration.test_probe_lifecycle import PROBE, SilentController, wait_gone
from tests.netns import Host, NetnsPair, require_root

pytestmark = pytest.mark.integration

PORT = 9090
CHAIN = f"TCPLAB-SHAPE-{PORT}"


def leftovers(host: Host) -> list[str]:
    """What of a probe's shaping the kernel holds: tc layout, iptables chain or jump."""
    found = []
    qdiscs = host.run("tc", "qdisc", "show", "dev", host.ifname).stdout
    if "netem" in qdiscs or "prio 1:" in qdiscs:
        found.append("qdisc")
    rules = host.run("iptables", "-w", "5", "-t", "mangle", "-S").stdout
    if CHAIN in rules or "NFQUEUE" in rules:
        found.append("iptables")
    return found


def event_bodies(env: dict) -> list[dict]:
    """The event bodies a frame carries (one ``event``, or an ``events`` batch)."""
    if env["type"] == "event":
        return [env["body"]]
    if env["type"] == "events":
        return list(env["body"]["events"])
    return []


def events_until(controller: SilentController, kind: str, timeout: float = 20.0) -> list[dict]:
    """Event bodies received until one of ``kind`` (included)."""
    deadline, seen = time.monotonic() + timeout, []
    while True:
        env = controller.recv(max(0.1, deadline - time.monotonic()))
        seen += event_bodies(env)
        if any(b.get("kind") == kind for b in seen):
            return seen


def logged(path, event: str, timeout: float = 3.0) -> list[dict]:
    """The log's ``event`` entries, waiting up to ``timeout`` s for the first (the kernel state the
    test watches changes a few ms before the probe writes its line)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in log_events(path) if e["event"] == event]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def nc_pid(home) -> int:
    pid, identity = (home / "nc.pid").read_text().split()  # the pid and the process's boot id:start time
    pid = int(pid)
    assert identity.count(":") == 1
    assert pidfile.running(pid)
    return pid


@pytest.fixture
def lab(tmp_path):
    """One namespace, a probe config, the test's controller; the probe started by the test."""
    require_root()
    with NetnsPair() as pair:
        endpoint = f"ipc://{tmp_path}/probes.sock"
        home = tmp_path / "hosts" / "thinkpad"
        cfg = tmp_path / "thinkpad.yml"
        cfg.write_text(yaml.safe_dump({"host": "thinkpad", "controller": endpoint, "lab_ip": pair.a.ip,
                                       "lab_iface": pair.a.ifname, "port": PORT, "home": str(home)}))
        state = {"host": pair.a, "home": home, "cfg": cfg, "endpoint": endpoint,
                 "controller": SilentController(endpoint), "nc": []}
        try:
            yield state
        finally:
            pair.a.run(PROBE, "stop", "--config", str(cfg), check=False, timeout=30)
            state["controller"].close()
            for pid in state["nc"]:  # were a test to fail half-way: nothing of ours stays
                if pidfile.running(pid):
                    os.kill(pid, signal.SIGKILL)


def start_shaped_and_listening(lab) -> int:
    """Start the probe, shape its port and let nc listen; the probe's pid."""
    lab["host"].run(PROBE, "start", "--config", str(lab["cfg"]), timeout=30)
    pid = pidfile.alive(lab["home"] / "probe.pid", str(lab["cfg"]))
    assert pid, (lab["home"] / "probe.log").read_text()
    controller = lab["controller"]
    controller.until("hello")
    controller.command(1, "shape", delay_ms=300)
    controller.command(2, "listen")
    lab["nc"].append(nc_pid(lab["home"]))
    assert leftovers(lab["host"]), "the probe did not shape"
    return pid


def test_a_probe_whose_controller_went_away_clears_its_shaping_and_ends_nc(lab):
    start_shaped_and_listening(lab)
    nc = lab["nc"][-1]
    lab["controller"].close()  # the controller's socket is gone: nothing more reaches the probe
    t0 = time.monotonic()
    while leftovers(lab["host"]) or pidfile.running(nc):
        assert time.monotonic() - t0 < DEADMAN_S + 2, \
            f"after {DEADMAN_S + 2} s: {leftovers(lab['host'])}, nc running {pidfile.running(nc)}"
        time.sleep(0.05)
    took = time.monotonic() - t0
    assert took >= DEADMAN_S - 1, took  # not before the silence: the last frame came just before the close
    fired = logged(lab["home"] / "probe.log", "deadman_fired")
    assert len(fired) == 1 and fired[0]["silent_s"] >= DEADMAN_S, fired
    assert fired[0]["cleared"] == [f"shaping nfqueue on {lab['host'].ifname} port {PORT}", f"nc pid {nc}"] or \
        fired[0]["cleared"] == [f"shaping netem on {lab['host'].ifname} port {PORT}", f"nc pid {nc}"]

    # a controller at the same address again: the probe says hello, is welcomed, and the event comes
    lab["controller"] = controller = SilentController(lab["endpoint"])
    controller.until("hello", timeout=15)
    controller.session.send_blocking(controller.sock, "welcome", {"ack": 0}, to=b"thinkpad")
    seen = events_until(controller, "deadman")
    [deadman] = [b for b in seen if b["kind"] == "deadman"]
    assert deadman["cleared"] == fired[0]["cleared"] and deadman["silent_s"] >= DEADMAN_S
    assert isinstance(deadman["t_ns"], int)
    # the shaping's end is in the trace as a `shape clear` would put it, before the dead-man's word
    cleared = [b for b in seen if b["kind"] == "shaper" and b.get("cleared")]
    assert cleared and cleared[0]["t_ns"] <= deadman["t_ns"]


def test_a_probe_killed_with_9_is_swept_by_the_next_before_its_hello(lab):
    old = start_shaped_and_listening(lab)
    nc = lab["nc"][-1]
    os.kill(old, signal.SIGKILL)
    wait_gone(old, 5)
    time.sleep(0.5)
    assert leftovers(lab["host"]) and pidfile.running(nc), "a killed probe left nothing to sweep"

    lab["host"].run(PROBE, "start", "--config", str(lab["cfg"]), timeout=30)
    new = pidfile.alive(lab["home"] / "probe.pid", str(lab["cfg"]))
    assert new and new != old
    controller = lab["controller"]
    controller.until("hello")
    # the hello came after the sweep: nothing of the killed probe is left at this moment
    assert leftovers(lab["host"]) == [] and not pidfile.running(nc)
    seen = events_until(controller, "sweep")
    [sweep] = [b for b in seen if b["kind"] == "sweep"]
    removed = sweep["removed"]
    assert f"nc pid {nc}" in removed
    assert f"iptables mangle chain {CHAIN}" in removed or any(r.startswith("qdisc prio 1:") for r in removed)
    log = log_events(lab["home"] / "probe.log")
    made = [e["instance"] for e in log if e["event"] == "tracefs_instance_created"]
    assert made[0] == f"tcplab-thinkpad-{old}"  # the killed probe's own, left behind
    assert f"tracefs instance tcplab-thinkpad-{old}" in removed
    events = [e["event"] for e in log]
    last = {name: len(events) - 1 - events[::-1].index(name) for name in ("leftovers_swept", "transport_connecting")}
    assert last["leftovers_swept"] < last["transport_connecting"]  # swept before it connected


@pytest.fixture
def real_lab(netns_pair, tmp_path):
    """A real controller and two real probes; ``runs_started``: the ``tcplab run`` processes the test starts."""
    lab = Lab(netns_pair, tmp_path)
    lab.runs_started = []
    try:
        yield lab.start()
    finally:
        for cli in lab.runs_started:
            if cli.poll() is None:
                cli.kill()
                cli.wait(10)
        lab.close()


def run_until_its_wait(lab: Lab, name: str, shaped: list[str], timeout: float) -> subprocess.Popen:
    """``tcplab run`` of: shape ``shaped``, listen on thinkpad, then wait ``timeout`` s for a
    connection that never comes; returns once the CLI said the wait step started."""
    path = lab.root / f"{name}.yml"
    path.write_text(yaml.safe_dump({"name": name, "port": PORT, "delay": 0.3, "steps": [
        {"action": "shape", "host": shaped},
        {"action": "listen", "host": "thinkpad", "expect": ["thinkpad LISTEN"]},
        {"action": "wait", "expect": ["raspberrypi ESTABLISHED"], "timeout": timeout}]}))
    cli = subprocess.Popen([str(VENV_BIN / "tcplab"), "run", str(path), "--controller-home", str(lab.controller_home)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lab.runs_started.append(cli)
    said = []
    for line in cli.stdout:  # the CLI's progress
        said.append(line)
        if line.startswith("[3/3] wait on -: start"):
            break
    assert said and said[-1].startswith("[3/3]"), "".join(said)
    return cli


def test_a_controller_killed_with_9_mid_run_leaves_no_host_shaped_and_no_nc(real_lab, tmp_path):
    lab = real_lab
    run_until_its_wait(lab, "long", ["thinkpad", "raspberrypi"], timeout=120)
    assert all(leftovers(h) for h in lab.hosts.values()), "the run did not shape"
    nc = nc_pid(tmp_path / "hosts" / "thinkpad")
    controller = pidfile.alive(lab.controller_home / "controller.pid", str(lab.controller_cfg))
    assert controller
    os.kill(controller, signal.SIGKILL)
    t0 = time.monotonic()
    while any(leftovers(h) for h in lab.hosts.values()) or pidfile.running(nc):
        assert time.monotonic() - t0 < DEADMAN_S + 2, \
            {n: leftovers(h) for n, h in lab.hosts.items()} | {"nc running": pidfile.running(nc)}
        time.sleep(0.05)
    assert time.monotonic() - t0 >= DEADMAN_S - 1.5  # the probes waited out the silence (heard <= 1 s before)
    for name in lab.hosts:
        fired = logged(tmp_path / "hosts" / name / "probe.log", "deadman_fired")
        assert len(fired) == 1 and any(c.startswith("shaping ") for c in fired[0]["cleared"]), (name, fired)
    assert lab.probe_pid("thinkpad") and lab.probe_pid("raspberrypi")  # the probes live on, waiting


def test_a_probe_killed_with_9_mid_run_and_started_again_puts_its_sweep_in_the_runs_trace(real_lab, tmp_path):
    lab = real_lab
    cli = run_until_its_wait(lab, "killed", ["thinkpad"], timeout=10)
    assert leftovers(lab.hosts["thinkpad"]), "the run did not shape"
    nc = nc_pid(tmp_path / "hosts" / "thinkpad")
    old = lab.probe_pid("thinkpad")
    os.kill(old, signal.SIGKILL)
    wait_gone(old, 5)
    lab.hosts["thinkpad"].run(PROBE, "start", "--config", str(lab.probe_cfgs["thinkpad"]), timeout=30)
    out, _ = cli.communicate(timeout=60)
    assert cli.returncode == 1 and "[3/3] wait on -: failed" in out, out  # its expectation never came
    assert leftovers(lab.hosts["thinkpad"]) == [] and not pidfile.running(nc)
    run_dir = max(lab.runs.iterdir(), key=lambda d: d.stat().st_mtime)
    recs = load(run_dir / "trace.jsonl")
    sweeps = [r for r in recs if r["kind"] == "sweep"]
    assert len(sweeps) == 1 and sweeps[0]["host"] == "thinkpad", sweeps
    wait_start = next(r["t"] for r in recs if r["kind"] == "step" and r["index"] == 3 and r["status"] == "start")
    assert sweeps[0]["t"] > wait_start  # made by the probe started again, during the wait
    assert f"nc pid {nc}" in sweeps[0]["removed"] and f"iptables mangle chain {CHAIN}" in sweeps[0]["removed"]
    assert f"tracefs instance tcplab-thinkpad-{old}" in sweeps[0]["removed"]
