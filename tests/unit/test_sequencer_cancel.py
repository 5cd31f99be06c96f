"""The sequencer cancelled mid-step, a host of the run falling silent, and the cleanup on every host at
once: through its Bus seam (test_sequencer's fake probes) with a real Run, no root."""

from __future__ import annotations

import asyncio
import time

from controller import scenario
from controller.liveness import ProbeSilent, silence
from controller.run import Run
from controller.sequencer import Sequencer
from tests.unit.test_sequencer import CLEANED, SEED, FakeBus, steps_of

SLOW_S = 0.3


class SlowBus(FakeBus):
    """Every command takes SLOW_S to be answered (the cleanup's abort, clear and sync included)."""

    async def command(self, host: str, action: str, args: dict, timeout: float) -> dict:
        await asyncio.sleep(SLOW_S)
        return await super().command(host, action, args, timeout)


def _scn(steps) -> scenario.Scenario:
    return scenario.parse({"name": "t", "delay": 0.2, "steps": steps})


def _play(tmp_path, s: scenario.Scenario, during, bus_cls=FakeBus):
    """Execute ``s``; ``during(seq, run)`` runs beside it. (seq, bus, run, ok, seconds taken by the cleanup)."""
    async def main():
        run = Run(tmp_path / "run", s.hosts)
        bus = bus_cls(run)
        seq = Sequencer(s, run, bus)
        cleanup = seq._cleanup
        took = {}

        async def timed():
            t0 = time.monotonic()
            await cleanup()
            took["cleanup"] = time.monotonic() - t0

        seq._cleanup = timed
        beside = asyncio.create_task(during(seq, run))
        try:
            ok = await seq.execute()
        finally:
            beside.cancel()
            run.close()
        return seq, bus, run, ok, took["cleanup"]

    (tmp_path / "run").mkdir(parents=True)
    return asyncio.run(main())


WAIT_LONG = {"action": "wait", "expect": ["thinkpad CLOSED"], "timeout": 60}


def test_a_cancel_stops_the_step_in_progress_and_the_cleanup_still_runs(tmp_path):
    async def cancel_soon(seq, run):
        await asyncio.sleep(0.5)
        assert seq.cancel("run cancelled from the CLI (Ctrl-C)")

    t0 = time.monotonic()
    seq, bus, run, ok, _ = _play(tmp_path, _scn([SEED[0], SEED[1], WAIT_LONG]), cancel_soon)
    assert time.monotonic() - t0 < 5  # not the wait's 60 s
    assert ok is False and seq.error == "run cancelled from the CLI (Ctrl-C)" and seq.failed_step is None
    assert steps_of(run) == [(1, "shape", "start"), (1, "shape", "ok"), (2, "listen", "start"), (2, "listen", "ok"),
                             (3, "wait", "start"), (3, "wait", "failed")]
    assert [r.get("error") for r in run.trace.records if r.get("status") == "failed"] == [seq.error]
    assert bus.cleanup() == CLEANED
    assert seq.cancel("again") is False  # the steps ended


def test_the_cleanup_clears_every_host_at_once(tmp_path):
    async def nothing(seq, run):
        pass

    seq, bus, run, ok, took = _play(tmp_path, _scn([SEED[0]]), nothing, bus_cls=SlowBus)
    assert ok is True and sorted(bus.cleanup()) == sorted(CLEANED)
    assert took < 4.5 * SLOW_S, took  # three commands one after the other per host, both hosts at once (not 6)


def test_a_host_that_falls_silent_fails_the_step_waiting_naming_it(tmp_path):
    why = silence("thinkpad", 3.04)

    async def goes_silent(seq, run):
        await asyncio.sleep(0.5)
        await run.note_silent("thinkpad", why, 3.04)

    t0 = time.monotonic()
    seq, bus, run, ok, _ = _play(tmp_path, _scn([SEED[1], WAIT_LONG]), goes_silent)
    assert time.monotonic() - t0 < 5
    assert ok is False and seq.failed_step == 2
    assert seq.error == "step 2 (wait on -): thinkpad stopped answering (nothing heard from it for 3.0 s)"
    assert run.silences["thinkpad"][0]["silent_s"] == 3.04


class FallsSilent(FakeBus):
    """raspberrypi stops answering while its connect waits for a result (what liveness does then)."""

    async def command(self, host: str, action: str, args: dict, timeout: float) -> dict:
        if (host, action) == ("raspberrypi", "connect"):
            self.commands.append((host, action, args))
            why = silence(host, 3.02)
            await self.run.note_silent(host, why, 3.02)
            raise ProbeSilent(why)
        return await super().command(host, action, args, timeout)


def test_a_host_that_falls_silent_during_its_command_fails_the_step_naming_it(tmp_path):
    async def nothing(seq, run):
        pass

    seq, bus, run, ok, _ = _play(tmp_path, _scn([SEED[0], SEED[1], SEED[2]]), nothing, bus_cls=FallsSilent)
    assert ok is False and seq.failed_step == 3
    assert seq.error == "step 3 (connect on raspberrypi): raspberrypi stopped answering (nothing heard from it for 3.0 s)"


def test_a_cancel_before_the_steps_begin_is_kept_and_no_step_runs(tmp_path):
    s = _scn([SEED[0], SEED[1]])
    (tmp_path / "run").mkdir(parents=True)

    async def main():
        run = Run(tmp_path / "run", s.hosts)
        seq = Sequencer(s, run, FakeBus(run))
        try:  # between the sequencer's making and its steps (the runner's marker, its first progress)
            assert seq.cancel("run cancelled from the CLI (Ctrl-C)")
            return seq, run, await seq.execute()
        finally:
            run.close()

    seq, run, ok = asyncio.run(main())
    assert ok is False and seq.error == "run cancelled from the CLI (Ctrl-C)"
    assert steps_of(run) == []
