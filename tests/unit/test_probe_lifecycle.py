"""probe/lifecycle.py: ``startup -> main_loop -> shutdown``, signals that only set flags, and a
second signal that forces the exit. Real signals to a real process (as uvicorn's tests send SIGTERM
to a real server), without root; then the phases in-process.

The daemon in the child has a shutdown like the probe's: a cleanup step (writes a file), then a
drain that would wait ``DRAIN_S`` for acknowledgements that never come.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probe.lifecycle import FORCED_S, Lifecycle, LifecycleError

REPO = Path(__file__).resolve().parents[2]
DRAIN_S = 2.0
CHILD = f"""
import asyncio, sys
from pathlib import Path
from probe.lifecycle import Lifecycle

out = Path(sys.argv[1])

class Daemon(Lifecycle):
    async def startup(self):
        self.spawn(asyncio.sleep(3600), "work")
        out.joinpath("started").write_text("")

    async def shutdown(self):
        await self.stop_tasks()
        out.joinpath("stopping").write_text("")
        await self.bounded(asyncio.sleep(0.05), 5, "cleanup")  # a cleanup: still runs when forced
        out.joinpath("cleaned").write_text("")
        drained = await self.bounded(asyncio.sleep({DRAIN_S}), {DRAIN_S} + 1, "drain", forced_s=0)
        out.joinpath("drained").write_text(str(drained))

sys.exit(asyncio.run(Daemon().serve()))
"""


def _start(tmp_path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(tmp_path / "started", proc)
    return proc


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, f"{path.name} not reached"
        time.sleep(0.01)


def _exit_after(proc: subprocess.Popen, since: float) -> tuple[int, float]:
    code = proc.wait(timeout=DRAIN_S + 10)
    return code, time.monotonic() - since


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_one_signal_shuts_down_in_full(tmp_path, sig):
    proc = _start(tmp_path)
    t0 = time.monotonic()
    os.kill(proc.pid, sig)
    code, took = _exit_after(proc, t0)
    assert code == 0, proc.stdout.read()
    assert (tmp_path / "cleaned").exists() and (tmp_path / "drained").read_text() == "True"
    assert took >= DRAIN_S  # the drain was waited for


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_forces_the_exit_and_the_cleanup_still_runs(tmp_path, second):
    proc = _start(tmp_path)
    os.kill(proc.pid, signal.SIGTERM)
    _wait_for(tmp_path / "stopping", proc)
    time.sleep(0.2)  # in the drain now
    t0 = time.monotonic()
    os.kill(proc.pid, second)
    code, took = _exit_after(proc, t0)
    output = proc.stdout.read()
    assert code == 0, output
    assert (tmp_path / "cleaned").exists()
    assert (tmp_path / "drained").read_text() == "False"  # abandoned, not waited out
    assert took < 1.0, took
    assert "step_cut_short" in output and "drain" in output


def test_a_crashed_task_ends_the_main_loop_with_code_1():
    class Crashing(Lifecycle):
        async def startup(self):
            self.spawn(asyncio.sleep(3600), "work")
            self.spawn(self.boom(), "boom")

        async def boom(self):
            raise RuntimeError("boom")

    daemon = Crashing()
    assert asyncio.run(daemon.serve()) == 1
    assert daemon.tasks == []  # the shutdown stopped the others


def test_a_failed_startup_is_cleaned_up_and_raised_typed():
    shut: list[bool] = []

    class Failing(Lifecycle):
        async def startup(self):
            raise OSError("no such interface")

        async def shutdown(self):
            shut.append(True)

    with pytest.raises(LifecycleError, match="no such interface") as info:
        asyncio.run(Failing().serve())
    assert isinstance(info.value.__cause__, OSError)
    assert shut == [True]


def test_bounded_cuts_a_step_at_its_timeout_and_at_the_forced_budget():
    async def scenario() -> tuple[bool, bool, float]:
        life = Lifecycle()
        cut = await life.bounded(asyncio.sleep(5), 0.05, "slow")
        life.force_exit.set()
        t0 = asyncio.get_running_loop().time()
        forced = await life.bounded(asyncio.sleep(5), 5, "slow")
        return cut, forced, asyncio.get_running_loop().time() - t0

    cut, forced, took = asyncio.run(scenario())
    assert cut is False and forced is False
    assert FORCED_S - 0.05 <= took < FORCED_S + 0.3
