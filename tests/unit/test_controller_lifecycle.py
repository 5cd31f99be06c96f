"""The controller daemon's lifecycle with real signals: a real ``tcplab-controller run`` process, a
fake probe and a CLI on real ZeroMQ ipc sockets (no root, no namespace).

The first SIGTERM cancels the run in progress and waits for its cleanup (abort, clear shaping, sync
on each host) and its finish; a second SIGTERM cuts that wait short (exit 143). A probe that
answers the cleanup lets the first SIGTERM end the daemon cleanly (exit 0).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
import zmq
import zmq.asyncio

from controller import controlsock, scenario
from controller.runner import CANCELLED
from tcplab import wire

BIN = Path(sys.executable).parent
SCENARIO = scenario.parse({"name": "hang", "steps": [{"action": "listen", "host": "thinkpad"}]}).to_dict()


class FakeProbe:
    """Says hello, answers pings, records commands and answers those in ``answers`` (ok). At its
    first command it sends its counters event twice (the second a duplicate the controller counts)."""

    def __init__(self, ctx, endpoint: str, answers: set[str], shaping: dict | None = None):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, b"thinkpad")
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.session = wire.Session("thinkpad")
        self.answers = answers
        self.hello = {"pid": 4242, "lab_ip": "10.90.0.1", "port": 9090, **({"shaping": shaping} if shaping else {})}
        self.commands: list[tuple[str, dict]] = []

    async def serve(self) -> None:
        await self.session.send(self.sock, "hello", self.hello)
        while True:
            env = await self.session.recv(self.sock)
            body = env["body"]
            if env["type"] == "ping":
                await self.session.send(self.sock, "pong", {"id": body["id"], "rx_ns": wire.now_ns()})
            elif env["type"] == "command":
                if not self.commands:
                    counters = {"kind": "counters", "t_ns": wire.now_ns(), "counters": {"transport_dropped": 2}}
                    for _ in range(2):
                        await self.sock.send(wire.encode(wire.make("events", "thinkpad", 1, {"events": [counters]})))
                self.commands.append((body["action"], body["args"]))
                if body["action"] in self.answers:
                    await self.session.send(self.sock, "result", {"id": body["id"], "ok": True, "data": {}})

    def actions(self) -> list[str]:
        return [a for a, _ in self.commands]


async def _until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        await asyncio.sleep(0.05)


async def _signalled_run(tmp_path: Path, answers: set[str], second_signal: bool):
    """Start a daemon, a run that hangs in its first step, SIGTERM it (twice if asked). Returns
    (exit code, the CLI's done body, the probe's commands, seconds from the last signal to the exit,
    whether it was still running 1 s after the first signal)."""
    cfg = tmp_path / "controller.yml"
    home = tmp_path / "home"
    cfg.write_text(yaml.safe_dump({"bind": f"ipc://{tmp_path}/probes.sock", "home": str(home),
                                   "runs_dir": str(tmp_path / "runs")}))
    log = (tmp_path / "controller.log").open("w")
    proc = subprocess.Popen([BIN / "tcplab-controller", "run", "--config", cfg], stdout=log, stderr=log)
    ctx = zmq.asyncio.Context()
    probe = FakeProbe(ctx, f"ipc://{tmp_path}/probes.sock", answers)
    serving = asyncio.create_task(probe.serve())
    cli = ctx.socket(zmq.DEALER)
    cli.setsockopt(zmq.LINGER, 0)
    cli_session = wire.Session("cli")
    try:
        await _until(lambda: controlsock.path(home).exists(), 20, "the control socket did not appear")
        cli.connect(f"ipc://{controlsock.path(home)}")
        await asyncio.sleep(0.3)  # the hello in, its clock pinged
        await cli_session.send(cli, "run", {"scenario": SCENARIO, "delay": 0})
        await _until(lambda: probe.actions() == ["listen"], 10, "the run's first command did not come")
        proc.send_signal(signal.SIGTERM)
        await _until(lambda: "abort" in probe.actions(), 5, "the cleanup did not start")
        await asyncio.sleep(1.0)
        draining = proc.poll() is None
        if second_signal:
            proc.send_signal(signal.SIGTERM)
        last = time.monotonic()
        await _until(lambda: proc.poll() is not None, 10, "the controller did not exit")
        took = time.monotonic() - last
        done = None
        while done is None:
            env = cli_session.decode(await asyncio.wait_for(cli.recv(), 5))
            done = env["body"] if env["type"] == "done" else None
        return proc.returncode, done, list(probe.commands), took, draining
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        probe.sock.close()
        cli.close()
        ctx.term()
        log.close()


def _events(tmp_path: Path) -> list[dict]:
    out = []
    for line in (tmp_path / "controller.log").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_a_second_sigterm_forces_the_exit_while_the_cleanup_waits_for_a_silent_probe(tmp_path):
    code, done, commands, took, draining = asyncio.run(_signalled_run(tmp_path, set(), second_signal=True))
    assert draining                     # the first signal waits for the cleanup (abort: 15 s to answer)
    assert code == 128 + signal.SIGTERM and took < 3.0
    assert [a for a, _ in commands] == ["listen", "abort"]  # cut short: no clear, no sync
    assert done["ok"] is False and done["error"] == CANCELLED
    run_dir = Path(done["dir"])
    assert (run_dir / "trace.jsonl").exists() and (run_dir / "run.json").exists()  # still written
    events = [e["event"] for e in _events(tmp_path)]
    assert events.count("exit_requested") == 1 and events.count("exit_forced") == 1
    cut = next(e for e in _events(tmp_path) if e["event"] == "run_cut_short")
    assert cut["reason"] == "signal"
    assert not controlsock.path(tmp_path / "home").exists() and not (tmp_path / "home" / "controller.pid").exists()


def test_one_sigterm_waits_for_the_cleanup_and_exits_cleanly(tmp_path):
    answers = {"abort", "shape", "sysctl", "sync"}  # the step's listen never answers; the cleanup does
    code, done, commands, took, draining = asyncio.run(_signalled_run(tmp_path, answers, second_signal=False))
    assert code == 0
    assert commands == [("listen", {}), ("abort", {"reset": False}), ("shape", {"clear": True}),
                        ("sysctl", {"restore": True}), ("sync", {})]
    assert done["ok"] is False and done["error"] == CANCELLED
    info = json.loads((Path(done["dir"]) / "run.json").read_text())
    assert info["ok"] is False and info["status"] == "cancelled"
    # the probe's counters, then the controller's for that host: the duplicate event was counted
    counters = info["hosts"]["thinkpad"]["counters"]
    assert counters["transport_dropped"] == 2 and counters["link_duplicates"] == 1
    assert counters["link_given_up"] == counters["link_frames_refused"] == counters["link_restarts"] == 0
    events = [e["event"] for e in _events(tmp_path)]
    assert "exit_forced" not in events and "run_cut_short" not in events and "controller_stopped" in events


def test_a_socket_it_cannot_bind_is_one_logged_line_and_exit_1(tmp_path):
    controlsock.path(tmp_path / "home").parent.mkdir(parents=True)
    controlsock.path(tmp_path / "home").write_text("")  # another controller's: left alone
    cfg = tmp_path / "controller.yml"
    cfg.write_text(yaml.safe_dump({"bind": f"ipc://{tmp_path}/no/such/dir/probes.sock", "home": str(tmp_path / "home"),
                                   "runs_dir": str(tmp_path / "runs")}))
    res = subprocess.run([BIN / "tcplab-controller", "run", "--config", cfg], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    failed = [json.loads(ln) for ln in res.stderr.splitlines() if "controller_start_failed" in ln]
    assert len(failed) == 1 and failed[0]["error"].startswith(f"cannot bind ipc://{tmp_path}/no/such/dir/probes.sock: ")
    assert controlsock.path(tmp_path / "home").exists() and not (tmp_path / "home" / "controller.pid").exists()
