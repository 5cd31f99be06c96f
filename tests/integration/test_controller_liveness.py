"""The controller's side of a lost peer (issue 10 items 4 and 5), with a real controller and two real
probes in fresh namespaces, real shaping, real nc, real signals (all by pid):

- A probe stopped with SIGSTOP mid-run: the step waiting fails within ~3 s naming it (not its 60 s
  timeout), the controller logs ``probe_silent``, run.json keeps the silence; the other host is
  cleaned up. The probe heard the controller's heartbeats and refused none of them.
- The controller killed with -9 mid-run (both hosts shaped, nc listening) and started again: the
  probes reconnect, the interrupted run is marked failed naming the killed pid, nothing is left
  shaped and no nc runs, the CLI waiting for that run's done asks the new controller and gives up,
  and the next run succeeds.
- The same, with the controller away past the probes' dead-man switch: what each probe did by
  itself (its deadman record, its shaper clear, nc's last states) reaches the interrupted run's trace
  when the controller is back, each once, at its own time.
- Ctrl-C (a real SIGINT; or SIGTERM) to a real ``tcplab run`` in its wait step: the CLI asks for the
  cancel and exits 130 (143) once the controller has ended every nc and cleared every host's shaping;
  run.json says ``cancelled``. The same through ansible-playbook running playbooks/film.yml.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from controller.fleet import ALIVE_S
from controller.trace import load
from tcplab import pidfile
from tests.daemons import VENV_BIN, Lab
from tests.integration.test_daemons import lab  # noqa: F401  (the fixture: a started Lab)
from tests.integration.test_doctor_readiness import log_events
from tests.integration.test_probe_lifecycle import shaped
from tests.netns import Host

pytestmark = pytest.mark.integration

PORT = 9090
SHAPE = {"action": "shape", "host": ["thinkpad", "raspberrypi"]}
LISTEN = {"action": "listen", "host": "thinkpad", "expect": ["thinkpad LISTEN"]}
CONNECT = {"action": "connect", "host": "raspberrypi", "to": "thinkpad",
           "expect": ["raspberrypi ESTABLISHED", "thinkpad ESTABLISHED"]}
WAIT = {"action": "wait", "expect": ["thinkpad CLOSE_WAIT"], "timeout": 60}  # never met: nobody closes


class Cli:
    """A real ``tcplab run`` in the background; its output lines, each with when it came."""

    def __init__(self, lab: Lab, scenario: dict):
        path = lab.root / f"{scenario['name']}.yml"
        path.write_text(yaml.safe_dump(scenario))
        self.proc = subprocess.Popen([str(VENV_BIN / "tcplab"), "run", str(path), "--controller-home",
                                      str(lab.controller_home), "--timeout", "120"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def until(self, prefix: str, timeout: float = 60) -> float:
        """When a line starting with ``prefix`` came (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, line in list(self.lines):
                if line.startswith(prefix):
                    return t
            assert self.proc.poll() is None or self._reader.is_alive(), self.output()
            time.sleep(0.02)
        raise AssertionError(f"no line {prefix!r} within {timeout} s: {self.output()}")

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def nc_running(host: Host) -> list[str]:
    """The nc processes in ``host``'s namespace (by their command lines)."""
    pids = host.run("ip", "netns", "pids", host.ns).stdout.split()
    lines = [pidfile.cmdline(int(p)) for p in pids]
    return [c for c in lines if Path(c.split(" ", 1)[0]).name.startswith("nc")]


def newest_run(lab: Lab) -> Path:
    return max(lab.runs.iterdir(), key=lambda d: d.stat().st_mtime)


def kill_controller(lab: Lab) -> tuple[int, float]:
    """kill -9 of the lab's controller; its pid and when (monotonic), once it is gone."""
    killed = controller_pid(lab)
    os.kill(killed, signal.SIGKILL)
    t_kill = time.monotonic()
    while pidfile.running(killed):
        time.sleep(0.01)
    return killed, t_kill


def start_controller(lab: Lab) -> None:
    subprocess.run([VENV_BIN / "tcplab-controller", "start", "--config", lab.controller_cfg], check=True,
                   capture_output=True, timeout=30)


def controller_pid(lab: Lab) -> int:
    pid = pidfile.alive(lab.controller_home / "controller.pid", str(lab.controller_cfg))
    assert pid, "the controller is not running"
    return pid


def test_a_stopped_probe_fails_the_step_waiting_within_3_s_naming_it(lab):
    cli = Cli(lab, {"name": "stopped", "port": PORT, "delay": 0.1, "steps": [LISTEN, CONNECT, WAIT]})
    stopped = None
    try:
        cli.until("[3/3] wait on -: start")
        stopped = lab.probe_pid("raspberrypi")
        os.kill(stopped, signal.SIGSTOP)
        t_stop = time.monotonic()
        failed_at = cli.until("[3/3] wait on -: failed", timeout=20)
        took = failed_at - t_stop
        assert took <= ALIVE_S + 0.5, took  # its last frame came at most 1 s before the stop: 3 s after that
        assert cli.wait(30) == 1
        assert "raspberrypi stopped answering (nothing heard from it for 3." in cli.output()
        info = json.loads((newest_run(lab) / "run.json").read_text())
        assert info["status"] == "failed" and info["failed_step"] == 3
        (silence,) = info["hosts"]["raspberrypi"]["silences"]
        assert ALIVE_S <= silence["silent_s"] < ALIVE_S + 0.5 and info["hosts"]["thinkpad"]["silences"] == []
        events = log_events(lab.controller_home / "controller.log")
        assert [e["probe"] for e in events if e["event"] == "probe_silent"] == ["raspberrypi"]
        assert not nc_running(lab.hosts["thinkpad"])  # the host that answers was cleaned up
        assert nc_running(lab.hosts["raspberrypi"])  # a stopped probe could end nothing
        os.kill(stopped, signal.SIGCONT)
        stopped = None
        deadline = time.monotonic() + 10
        while not any(e["event"] == "probe_back" for e in log_events(lab.controller_home / "controller.log")):
            assert time.monotonic() < deadline, "the probe did not come back"
            time.sleep(0.1)
        deadline = time.monotonic() + 10  # back, still running its nc: the controller ends it
        while nc_running(lab.hosts["raspberrypi"]):
            assert time.monotonic() < deadline, "the probe that came back still runs its nc"
            time.sleep(0.1)
        assert "raspberrypi" in {e["probe"] for e in log_events(lab.controller_home / "controller.log")
                                 if e["event"] == "leftover_cleanup_done"}
        for name in lab.hosts:  # every heartbeat of the controller was a frame the probe took
            refused = [e for e in log_events(lab.root / "hosts" / name / "probe.log") if e["event"] == "frame_refused"]
            assert refused == [], refused
        print(f"\nSIGSTOP -> step failed: {took:.2f} s")
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        cli.kill()


def test_a_controller_killed_with_9_mid_run_is_recovered_when_it_starts_again(lab):
    cli = Cli(lab, {"name": "killed", "port": PORT, "delay": 0.3, "steps": [SHAPE, LISTEN, WAIT]})
    try:
        cli.until("[3/3] wait on -: start")
        assert all(shaped(h) for h in lab.hosts.values()) and nc_running(lab.hosts["thinkpad"])
        run_dir = newest_run(lab)
        killed, t_kill = kill_controller(lab)
        start_controller(lab)
        info = json.loads((run_dir / "run.json").read_text())  # marked at the start, before any probe is back
        assert info["status"] == "failed" and info["ok"] is False
        assert info["error"] == f"the controller ended during the run (pid {killed})" and info["failed_step"] == 3
        assert (run_dir / "trace.jsonl").exists() and not (run_dir / "trace.partial.jsonl").exists()
        steps = [(r["index"], r["status"]) for r in load(run_dir / "trace.jsonl") if r["kind"] == "step"]
        assert steps == [(1, "start"), (1, "ok"), (2, "start"), (2, "ok"), (3, "start")]
        assert "the controller ended during the run" in (run_dir / "summary.txt").read_text()

        deadline = time.monotonic() + 20  # the probes say hello after 5 s of silence; then they are cleaned
        while True:
            events = log_events(lab.controller_home / "controller.log")
            cleaned = {e["probe"] for e in events if e["event"] == "leftover_cleanup_done"}
            if cleaned == set(lab.hosts):
                break
            assert time.monotonic() < deadline, [e for e in events if "probe" in e]
            time.sleep(0.1)
        took = time.monotonic() - t_kill
        assert not any(shaped(h) for h in lab.hosts.values())
        assert not nc_running(lab.hosts["thinkpad"])
        status = lab.tcplab("status")
        assert status.returncode == 0 and "thinkpad: alive" in status.stdout and "raspberrypi: alive" in status.stdout
        print(f"\nkill -9 -> both probes back and cleaned: {took:.2f} s")
        assert cli.wait(30) == 1  # it asked the new controller, which runs nothing
        assert f"the controller no longer runs {run_dir.name}" in cli.output(), cli.output()
        print(f"kill -9 -> the CLI gave up: {time.monotonic() - t_kill:.2f} s")

        res, after = lab.run_scenario({"name": "after", "port": PORT, "delay": 0.0, "steps": [LISTEN, CONNECT]})
        assert res.returncode == 0, res.stdout + res.stderr
        assert json.loads((after / "run.json").read_text())["status"] == "ok"
    finally:
        cli.kill()


def test_what_the_probes_did_while_their_controller_was_gone_reaches_the_interrupted_runs_trace(lab):
    """kill -9 of the controller, then it stays away past the probes' dead-man switch (5 s): each probe
    clears its shaping and ends nc by itself. Started again, the controller gets those events after
    the probes' hello, outside any run; they go into the interrupted run's trace, once each, at their
    own times, and run.json and summary.txt say so."""
    cli = Cli(lab, {"name": "alone", "port": PORT, "delay": 0.3, "steps": [SHAPE, LISTEN, WAIT]})
    try:
        cli.until("[3/3] wait on -: start")
        run_dir = newest_run(lab)
        _, t_kill = kill_controller(lab)
        deadline = time.monotonic() + 20
        while not all("deadman_fired" in (lab.root / "hosts" / h / "probe.log").read_text() for h in lab.hosts):
            assert time.monotonic() < deadline, "the probes' dead-man switches did not fire"
            time.sleep(0.1)
        alone_s = time.monotonic() - t_kill
        assert not any(shaped(h) for h in lab.hosts.values()) and not nc_running(lab.hosts["thinkpad"])
        start_controller(lab)
        deadline = time.monotonic() + 30
        while {e["probe"] for e in log_events(lab.controller_home / "controller.log")
               if e["event"] == "aftermath_added"} != set(lab.hosts):
            assert time.monotonic() < deadline, "the late events were not added"
            time.sleep(0.1)
        recs = load(run_dir / "trace.jsonl")
        wait_start = next(r["t"] for r in recs if r["kind"] == "step" and r["index"] == 3)
        for host in lab.hosts:
            dead = [r for r in recs if r["kind"] == "deadman" and r["host"] == host]
            assert len(dead) == 1 and dead[0]["silent_s"] >= 5.0, dead
            # at its own time: after the wait began, about DEADMAN_S after the kill, not at the restart
            assert wait_start + 4.5 < dead[0]["t"] < wait_start + alone_s + 1.0, (dead[0]["t"], wait_start, alone_s)
            clears = [r for r in recs if r["kind"] == "shaper" and r["host"] == host and r.get("cleared")]
            assert clears and all(r["t"] > wait_start for r in clears)
        listener = [r["to"] for r in recs if r["kind"] == "state" and r["host"] == "thinkpad"
                    and r["remote"] == "0.0.0.0:*"]
        assert listener == ["LISTEN", "CLOSED"]  # nc's end is there, and the run's LISTEN only once
        assert [r["t"] for r in recs] == sorted(r["t"] for r in recs)
        info = json.loads((run_dir / "run.json").read_text())
        assert info["status"] == "failed"
        for host in lab.hosts:
            assert info["hosts"][host]["after_controller_lost"]["kinds"]["deadman"] == 1
        summary = (run_dir / "summary.txt").read_text()
        assert summary.count("its controller silent") == 2, summary
        assert cli.wait(30) == 1
    finally:
        cli.kill()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_on_the_cli_cancels_the_run_clears_every_host_and_exits_130(lab, sig):
    """Ctrl-C (SIGINT: exit 130), or a SIGTERM (exit 143) from whatever runs the CLI."""
    cli = Cli(lab, {"name": "interrupted", "port": PORT, "delay": 0.3, "steps": [SHAPE, LISTEN, CONNECT, WAIT]})
    try:
        cli.until("[4/4] wait on -: start")
        assert all(shaped(h) for h in lab.hosts.values()) and nc_running(lab.hosts["thinkpad"])
        assert nc_running(lab.hosts["raspberrypi"])
        t_int = time.monotonic()
        cli.proc.send_signal(sig)
        assert cli.wait(30) == 128 + sig, cli.output()
        took = time.monotonic() - t_int
        assert took < 10, took
        out = cli.output()
        assert "tcplab: interrupted: cancelling run" in out and "run cancelled from the CLI (Ctrl-C)" in out
        for name, host in lab.hosts.items():  # when the CLI has exited, every host is clean already
            assert not shaped(host), name
            assert not nc_running(host), name
        run_dir = newest_run(lab)
        info = json.loads((run_dir / "run.json").read_text())
        assert info["status"] == "cancelled" and info["error"] == "run cancelled from the CLI (Ctrl-C)"
        recs = load(run_dir / "trace.jsonl")
        assert [(r["index"], r["status"]) for r in recs if r["kind"] == "step"][-2:] == [(4, "start"), (4, "failed")]
        assert any(r["kind"] == "shaper" and r.get("cleared") for r in recs)
        print(f"\n{signal.Signals(sig).name} -> CLI exit {128 + sig}, every host clean: {took:.2f} s")
    finally:
        cli.kill()


def test_ctrl_c_on_the_film_playbook_reaches_the_cli_and_the_run_is_cancelled(lab, tmp_path):
    """``make film``'s last play (playbooks/film.yml, ansible's command module running ``tcplab run``),
    Ctrl-C as a terminal sends it: SIGINT to ansible-playbook's process group. ansible passes it on to
    its worker's session, where the CLI is (twice: one Ctrl-C, one cancel)."""
    scenario = tmp_path / "film.yml"
    scenario.write_text(yaml.safe_dump({"name": "filmed", "port": PORT, "delay": 0.3,
                                        "steps": [SHAPE, LISTEN, CONNECT, WAIT]}))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"control": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": str(VENV_BIN / "python")}}}}}}))
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "playbooks/film.yml",
                             "-e", f"tcplab_home={lab.root}", "-e", f"tcplab_scenario={scenario}"],
                            cwd=repo, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 90
        while True:  # until the run is in its wait step, shaped and listening
            runs = list(lab.runs.iterdir()) if lab.runs.is_dir() else []
            partial = runs[0] / "trace.partial.jsonl" if runs else None
            if partial and partial.exists() and '"index":4,"action":"wait","target":"-","status":"start"' \
                    in partial.read_text():
                break
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
            time.sleep(0.1)
        assert all(shaped(h) for h in lab.hosts.values()) and nc_running(lab.hosts["thinkpad"])
        t_int = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does with Ctrl-C
        info_path = runs[0] / "run.json"
        while not info_path.exists():
            assert time.monotonic() - t_int < 15, "the run was not cancelled"
            time.sleep(0.05)
        took = time.monotonic() - t_int
        info = json.loads(info_path.read_text())
        assert info["status"] == "cancelled" and info["error"] == "run cancelled from the CLI (Ctrl-C)"
        for name, host in lab.hosts.items():
            assert not shaped(host), name
            assert not nc_running(host), name
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode != 0, out
        deadline = time.monotonic() + 10  # and the CLI ended too (it waited for the done, then exit 130)
        while [p for p in os.listdir("/proc") if p.isdigit() and str(scenario) in pidfile.cmdline(int(p))]:
            assert time.monotonic() < deadline, "tcplab run is still running"
            time.sleep(0.1)
        print(f"\nSIGINT to ansible-playbook's group -> run cancelled, every host clean: {took:.2f} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
