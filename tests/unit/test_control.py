"""The control server of a real Controller on real ZeroMQ ipc sockets (no root): status, a second run
while one is in progress, a run the probes cannot shape, and frames that do not follow the wire."""

import asyncio
import contextlib

import zmq
import zmq.asyncio
from structlog.testing import capture_logs

from controller import scenario
from controller.config import ControllerConfig
from controller.daemon import Controller
from tcplab import wire
from tests.unit.test_controller_lifecycle import SCENARIO, FakeProbe

SHAPED = scenario.parse({"name": "shaped", "steps": [{"action": "shape", "host": "thinkpad"}]}).to_dict()


@contextlib.asynccontextmanager
async def _controller(tmp_path, **probe):
    """A Controller serving in this loop, a FakeProbe (``probe``: its arguments) and a CLI's DEALER."""
    cfg = ControllerConfig(path=tmp_path / "c.yml", bind=f"ipc://{tmp_path}/probes.sock",
                           home=tmp_path / "home", runs_dir=tmp_path / "runs")
    ctl = Controller(cfg)
    serving = asyncio.create_task(ctl.serve())
    ctx = zmq.asyncio.Context()
    fake = FakeProbe(ctx, cfg.bind, **probe)
    probing = asyncio.create_task(fake.serve())
    cli = ctx.socket(zmq.DEALER)
    cli.setsockopt(zmq.LINGER, 0)
    try:
        cli.connect(f"ipc://{cfg.control_path}")
        ready = wire.Session("cli")  # until the controller holds the probe's hello (a fixed 0.3 s was
        for _ in range(100):         # not always enough on a loaded machine)
            if "thinkpad" in (await _ask(cli, ready, "status", {}))["body"]["probes"]:
                break
            await asyncio.sleep(0.05)
        yield fake, cli
    finally:
        ctl.stopping.set()
        code = await serving
        probing.cancel()
        await asyncio.gather(probing, return_exceptions=True)
        fake.sock.close()
        cli.close()
        ctx.term()
    assert code == 0


async def _ask(cli, session, type_: str, body: dict) -> dict:
    await session.send(cli, type_, body)
    while True:
        env = session.decode(await asyncio.wait_for(cli.recv(), 5))
        if env["type"] in ("state", "done"):
            return env


def test_status_and_a_second_run_while_one_is_in_progress(tmp_path):
    async def scenario_():
        async with _controller(tmp_path, answers={"abort", "shape", "sysctl", "sync"}) as (probe, cli):  # no listen
            session = wire.Session("cli")
            with capture_logs() as logs:
                await cli.send(b"\xc1not msgpack")
                state = await _ask(cli, session, "status", {})
            assert [e["event"] for e in logs].count("control_frame_refused") == 1
            assert state["body"]["running"] is None and state["body"]["probes"]["thinkpad"]["lab_ip"] == "10.90.0.1"

            await session.send(cli, "run", {"scenario": SCENARIO, "delay": 0})
            while probe.actions() != ["listen"]:
                await asyncio.sleep(0.05)
            busy = await _ask(cli, session, "run", {"scenario": SCENARIO, "delay": 0})
            running = (await _ask(cli, session, "status", {}))["body"]["running"]
            assert running and busy["body"] == {"ok": False, "error": f"busy with run {running}"}
    asyncio.run(scenario_())


def test_a_run_that_shapes_a_host_that_cannot_is_refused_by_what_its_hello_said(tmp_path):
    async def scenario_():
        cannot = {"backend": None, "reason": "nfqueue: iptables not installed"}
        async with _controller(tmp_path, answers=set(), shaping=cannot) as (probe, cli):
            done = await _ask(cli, wire.Session("cli"), "run", {"scenario": SHAPED, "delay": 0.1})
            assert done["body"] == {"ok": False, "error": "scenario shaped shapes a host that cannot: thinkpad "
                                                          "cannot shape (nfqueue: iptables not installed)"}
            assert probe.commands == [] and not (tmp_path / "runs").exists()  # nothing started
    asyncio.run(scenario_())


def test_a_run_whose_directory_cannot_be_written_ends_with_a_done_and_leaves_nothing_running(tmp_path, monkeypatch):
    import errno

    from controller import recovery

    def full_disk(run_dir, facts):  # a failure the test cannot cause for real: a full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(recovery, "mark_started", full_disk)

    async def scenario_():
        async with _controller(tmp_path, answers={"abort", "shape", "sysctl", "sync", "listen"}) as (probe, cli):
            session = wire.Session("cli")
            done = await _ask(cli, session, "run", {"scenario": SCENARIO, "delay": 0})
            assert done["type"] == "done" and done["body"]["ok"] is False
            assert "No space left on device" in done["body"]["error"]
            assert (await _ask(cli, session, "status", {}))["body"]["running"] is None
    asyncio.run(scenario_())
