"""The CLI's ``cancel`` on a real Controller's control socket (real ZeroMQ ipc, a fake probe, no root):
only the CLI that asked for the run (or one naming it) cancels it; the cleanup still reaches the
probe and run.json says ``cancelled``."""

import asyncio
import json
import time
from pathlib import Path

import zmq
from structlog.testing import capture_logs

from controller.control import CANCELLED_BY_CLI
from tcplab import wire
from tests.unit.test_control import _controller
from tests.unit.test_controller_lifecycle import SCENARIO


async def _done(cli, session, timeout: float) -> dict:
    while True:
        env = session.decode(await asyncio.wait_for(cli.recv(), timeout))
        if env["type"] == "done":
            return env["body"]


def test_only_the_asking_cli_cancels_and_the_cleanup_still_runs(tmp_path):
    async def scenario_():
        async with _controller(tmp_path, answers={"abort", "shape", "sysctl", "sync"}) as (probe, cli):  # no listen
            session = wire.Session("cli")
            await session.send(cli, "run", {"scenario": SCENARIO, "delay": 0})
            while probe.actions() != ["listen"]:
                await asyncio.sleep(0.02)
            other = cli.context.socket(zmq.DEALER)
            other.setsockopt(zmq.LINGER, 0)
            other.connect(cli.getsockopt(zmq.LAST_ENDPOINT).decode())
            try:
                with capture_logs() as logs:
                    await wire.Session("cli").send(other, "cancel", {})  # not its run, not named
                    await asyncio.sleep(0.2)
                assert [e["event"] for e in logs if e["event"].startswith("run_cancel")] == ["run_cancel_ignored"]
                assert probe.actions() == ["listen"]
            finally:
                other.close()
            t0 = time.monotonic()
            await session.send(cli, "cancel", {})
            done = await _done(cli, session, 5)
            assert time.monotonic() - t0 < 2  # not the listen's 15 s, nor the probe's silence at 3 s
            assert done["ok"] is False and done["error"] == CANCELLED_BY_CLI
            assert probe.actions() == ["listen", "abort", "shape", "sysctl", "sync"]
            info = json.loads((Path(done["dir"]) / "run.json").read_text())
            assert info["status"] == "cancelled" and info["error"] == CANCELLED_BY_CLI
    asyncio.run(scenario_())
