"""The sequencer through its Bus seam: a fake fleet of probes and a real Run on a temp dir, no root.

The fake probes answer commands the way the real ones do (a result, ok or not, or silence) and send
the state and console events a real probe's observers would, so the expectation waits are real.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from controller import scenario
from controller.clock import ClockEstimate
from controller.run import Run
from controller.sequencer import Sequencer, refusal

IPS = {"thinkpad": "10.90.0.1", "raspberrypi": "10.90.0.2"}


def peer_of(host: str) -> str:
    return "raspberrypi" if host == "thinkpad" else "thinkpad"


class FakeBus:
    """The probes as the sequencer sees them (the controller's probe bus implements the same Bus)."""

    def __init__(self, run: Run | None, ports: dict[str, int | None] | None = None, *,
                 refuse: tuple = (), silent: tuple = (), quiet: tuple = (), unknown_ip: tuple = ()):
        self.run = run
        self.ports = {"thinkpad": 9191, "raspberrypi": 9191} if ports is None else ports
        self.refuse, self.silent, self.quiet, self.unknown_ip = refuse, silent, quiet, unknown_ip
        self.commands: list[tuple[str, str, dict]] = []
        self.ids = itertools.count(1)

    def lab_ip(self, host: str) -> str | None:
        return None if host in self.unknown_ip or host not in self.ports else IPS[host]

    def connected(self, host: str) -> bool:
        return host in self.ports

    def lab_port(self, host: str) -> int | None:
        return self.ports.get(host)

    async def command(self, host: str, action: str, args: dict, timeout: float) -> dict:
        self.commands.append((host, action, args))
        cid = next(self.ids)
        if (host, action) in self.silent:
            raise TimeoutError(f"no result from {host} within {timeout:g} s")
        if (host, action) in self.refuse:
            return {"id": cid, "ok": False, "error": "OSError: nc is not installed"}
        if (host, action) not in self.quiet:
            await self._observe(host, action, args)
        return {"id": cid, "ok": True, "data": {}}

    async def _observe(self, host: str, action: str, args: dict) -> None:
        """The events a real probe's observers report after the action."""
        if action == "listen":
            await self._state(host, f"{IPS[host]}:9191", "0.0.0.0:*", "CLOSED", "LISTEN")
        elif action == "connect":
            peer = next(h for h, ip in IPS.items() if ip == args["ip"])
            await self._state(host, f"{IPS[host]}:40000", f"{args['ip']}:{args['port']}", "SYN_SENT", "ESTABLISHED")
            await self._state(peer, f"{args['ip']}:{args['port']}", f"{IPS[host]}:40000", "SYN_RECEIVED",
                              "ESTABLISHED")
        elif action == "send":
            await self._event(peer_of(host), {"kind": "console", "text": args["text"] + "\n", "stream": "stdout"})
        elif action == "close":  # the peer's socket ends a little later (its own close, the last ACK)
            later = self._state(peer_of(host), f"{IPS[peer_of(host)]}:9191", f"{IPS[host]}:40000", "LAST_ACK",
                                "CLOSED")
            asyncio.get_running_loop().call_later(0.1, asyncio.ensure_future, later)

    async def _state(self, host: str, local: str, remote: str, from_: str, to: str) -> None:
        await self._event(host, {"kind": "state", "local": local, "remote": remote, "from": from_, "to": to,
                                 "source": "inet_diag"})

    async def _event(self, host: str, body: dict) -> None:
        assert self.run is not None
        await self.run.add_event(host, {**body, "t_ns": time.monotonic_ns()}, ClockEstimate())

    def sent(self) -> list[tuple[str, str]]:
        """(host, action) of every command before the cleanup."""
        return [(h, a) for h, a, _ in self.commands[:self.first_cleanup()]]

    def first_cleanup(self) -> int:
        return next((i for i, (_, a, args) in enumerate(self.commands) if a == "abort" and args == {"reset": False}),
                    len(self.commands))

    def cleanup(self) -> list[tuple[str, str, dict]]:
        return self.commands[self.first_cleanup():]


SEED = [
    {"action": "shape", "host": ["thinkpad", "raspberrypi"]},
    {"action": "listen", "host": "thinkpad", "expect": ["thinkpad LISTEN"]},
    {"action": "connect", "host": "raspberrypi", "to": "thinkpad",
     "expect": ["raspberrypi ESTABLISHED", "thinkpad ESTABLISHED"]},
    {"action": "send", "host": "thinkpad", "text": "Hello", "expect": ["raspberrypi prints Hello"]},
    {"action": "close", "host": "raspberrypi"},
    {"action": "wait", "expect": ["thinkpad CLOSED"], "timeout": 2},
]


def scn(steps=SEED, **top) -> scenario.Scenario:
    return scenario.parse({"name": "t", "delay": 0.2, "steps": steps, **top})


def play(tmp_path, s: scenario.Scenario, **bus_kw) -> tuple[Sequencer, FakeBus, Run, list[dict], bool]:
    progress: list[dict] = []

    async def main():
        run = Run(tmp_path / "run", s.hosts)
        bus = FakeBus(run, **bus_kw)

        async def report(body: dict) -> None:
            progress.append(body)

        seq = Sequencer(s, run, bus, progress=report)
        try:
            ok = await seq.execute()
        finally:
            run.close()
        return seq, bus, run, ok

    (tmp_path / "run").mkdir(parents=True)
    seq, bus, run, ok = asyncio.run(main())
    return seq, bus, run, progress, ok


def steps_of(run: Run) -> list[tuple[int, str, str]]:
    return [(r["index"], r["action"], r["status"]) for r in run.trace.records if r["kind"] == "step"]


CLEANED = [(h, a, args) for h in ("thinkpad", "raspberrypi")
           for a, args in (("abort", {"reset": False}), ("shape", {"clear": True}), ("sysctl", {"restore": True}),
                           ("sync", {}))]


def test_steps_run_in_order_and_every_host_is_cleaned_up(tmp_path):
    seq, bus, run, progress, ok = play(tmp_path, scn())
    assert ok is True and seq.error is None and seq.failed_step is None
    assert bus.sent() == [("thinkpad", "shape"), ("raspberrypi", "shape"), ("thinkpad", "listen"),
                          ("raspberrypi", "connect"), ("thinkpad", "send"), ("raspberrypi", "close")]
    assert bus.commands[0][2] == {"delay_ms": 200}  # the scenario's delay
    assert steps_of(run) == [(i, a, st) for i, a in enumerate(["shape", "listen", "connect", "send", "close",
                                                               "wait"], 1) for st in ("start", "ok")]
    assert bus.cleanup() == CLEANED
    assert [(p["index"], p["status"]) for p in progress if p["event"] == "step"][-2:] == [(6, "start"), (6, "ok")]


def test_connect_goes_to_the_probes_port_not_the_scenarios(tmp_path):
    """The port has one source, the probes' hello (issue 8): a scenario without ``port`` runs on it."""
    seq, bus, run, progress, ok = play(tmp_path, scn())
    assert ok is True and seq.port == 9191
    assert [args for h, a, args in bus.commands if a == "connect"] == [{"ip": "10.90.0.1", "port": 9191}]


def test_a_step_whose_expectation_is_not_met_fails_the_run_naming_host_step_and_observed(tmp_path):
    seq, bus, run, progress, ok = play(tmp_path, scn([SEED[1], {**SEED[2], "timeout": 0.3}, SEED[3]]),
                                       quiet=(("raspberrypi", "connect"),))
    assert ok is False and seq.failed_step == 2
    assert seq.error == ("step 2 (connect on raspberrypi): after 0.3 s still waiting for raspberrypi ESTABLISHED, "
                         "thinkpad ESTABLISHED; observed raspberrypi: no connection state change | "
                         "thinkpad: no connection state change")
    assert bus.sent() == [("thinkpad", "listen"), ("raspberrypi", "connect")]  # the send never went
    assert steps_of(run) == [(1, "listen", "start"), (1, "listen", "ok"), (2, "connect", "start"),
                             (2, "connect", "failed")]
    assert [r["error"] for r in run.trace.records if r.get("status") == "failed"] == [seq.error]
    assert progress[-1] == {"event": "step", "index": 2, "total": 3, "action": "connect",
                            "target": "raspberrypi", "status": "failed", "error": seq.error}
    assert bus.cleanup() == CLEANED
    # every unmet expectation against what was seen, for run.json and tcplab run's failure
    assert seq.unmet == [{"step": 2, "expected": "raspberrypi ESTABLISHED", "observed": "0 of 1 reached ESTABLISHED",
                          "records": []},
                         {"step": 2, "expected": "thinkpad ESTABLISHED", "observed": "0 of 1 reached ESTABLISHED",
                          "records": []}]


def test_a_wait_for_a_duration_waits_it_then_its_expectations(tmp_path):
    steps = [SEED[1], {"action": "wait", "duration": 0.4},
             {"action": "wait", "duration": 0.2, "expect": ["thinkpad LISTEN"], "timeout": 0.3}]
    t0 = time.monotonic()
    seq, bus, run, progress, ok = play(tmp_path, scn(steps))
    took = time.monotonic() - t0
    assert ok is False and seq.failed_step == 3  # the LISTEN was before step 3 began
    assert 0.4 + 0.2 + 0.3 <= took
    starts = {r["index"]: r["t"] for r in run.trace.records if r["kind"] == "step" and r["status"] == "start"}
    assert starts[3] - starts[2] >= 0.4
    assert seq.unmet[0]["observed"] == "0 of 1 reached LISTEN"


def test_a_probe_that_refuses_or_does_not_answer_fails_its_step(tmp_path):
    seq, bus, *_, ok = play(tmp_path / "a", scn(), refuse=(("thinkpad", "listen"),))
    assert ok is False and seq.failed_step == 2
    assert seq.error == "step 2 (listen on thinkpad): thinkpad refused: OSError: nc is not installed"
    seq, bus, *_, ok = play(tmp_path / "b", scn(), silent=(("raspberrypi", "shape"),))
    assert ok is False and seq.failed_step == 1
    assert seq.error == ("step 1 (shape on thinkpad,raspberrypi): raspberrypi did not answer "
                         "(no result from raspberrypi within 15 s)")
    assert bus.cleanup() == CLEANED


def test_an_address_nobody_reported_fails_the_connect_step(tmp_path):
    seq, bus, *_, ok = play(tmp_path, scn(), unknown_ip=("thinkpad",))
    assert ok is False and seq.failed_step == 3
    assert seq.error == ("step 3 (connect on raspberrypi): thinkpad has no lab address in the controller's "
                         "configuration (hosts)")
    assert ("raspberrypi", "connect") not in bus.sent()


def test_cleanup_runs_every_command_even_when_one_fails(tmp_path):
    seq, bus, *_, ok = play(tmp_path, scn([SEED[1]]), silent=(("thinkpad", "abort"),),
                            refuse=(("thinkpad", "shape"),))
    assert ok is True
    assert bus.cleanup() == CLEANED[:4]  # the scenario's only host: abort, shape clear, sysctl restore, sync


@pytest.mark.parametrize("ports, top, reason", [
    ({"thinkpad": 9191}, {}, "not connected to the controller: raspberrypi"),
    ({"thinkpad": 9191, "raspberrypi": 9191}, {"port": 9090},
     "scenario t has port 9090 but thinkpad listens, shapes and captures on port 9191"),
    ({"thinkpad": 9090, "raspberrypi": 9191}, {}, "the probes disagree on the lab port"),
])
def test_a_refused_run_sends_nothing_at_all(tmp_path, ports, top, reason):
    s = scn(**top)
    assert refusal(s, FakeBus(None, ports)).startswith(reason)
    seq, bus, run, progress, ok = play(tmp_path, s, ports=ports)
    assert ok is False and seq.error.startswith(reason)
    assert bus.commands == []  # no step, and no cleanup either: nothing was started
    assert steps_of(run) == []
    assert progress == [{"event": "run_failed", "error": seq.error}]


def test_a_cancelled_run_still_cleans_up(tmp_path):
    """The controller cancels a run it is told to stop: the hosts are still cleared and synced."""
    s = scn([SEED[1], {"action": "wait", "expect": ["thinkpad CLOSED"], "timeout": 60}])

    async def main():
        (tmp_path / "run").mkdir()
        run = Run(tmp_path / "run", s.hosts)
        bus = FakeBus(run)
        task = asyncio.create_task(Sequencer(s, run, bus).execute())
        while not any(r.get("index") == 2 for r in run.trace.records if r["kind"] == "step"):
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        run.close()
        return bus

    bus = asyncio.run(main())
    assert bus.sent() == [("thinkpad", "listen")]
    assert bus.cleanup() == CLEANED[:4]
