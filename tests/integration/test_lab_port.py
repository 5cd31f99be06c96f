"""The lab port has one source: the probes' hello. A real controller on real ZeroMQ sockets, with
DEALERs that speak the probe's side of the wire (no namespaces: nothing here opens a lab socket)."""

import asyncio
import json
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from controller import scenario
from controller.config import ControllerConfig
from controller.daemon import Controller
from tcplab import wire

pytestmark = pytest.mark.integration

STEPS = [{"action": "listen", "host": "thinkpad"},
         {"action": "connect", "host": "raspberrypi", "to": "thinkpad"}]
IPS = {"thinkpad": "10.90.0.1", "raspberrypi": "10.90.0.2"}


class FakeProbe:
    """A probe's wire side: hello with its configured port, pongs, and ok to every command (kept)."""

    def __init__(self, ctx, endpoint: str, host: str, port: int):
        self.host, self.port, self.commands = host, port, []
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, host.encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.session = wire.Session(host)

    async def send(self, type_: str, body: dict) -> None:
        await self.session.send(self.sock, type_, body)

    async def serve(self) -> None:
        await self.send("hello", {"pid": 1, "lab_ip": IPS[self.host], "port": self.port})
        while True:
            env = await self.session.recv(self.sock)
            if env["type"] == "ping":
                await self.send("pong", {"id": env["body"]["id"], "t0": env["time"], "rx_ns": wire.now_ns()})
            elif env["type"] == "command":
                self.commands.append(env["body"])
                await self.send("result", {"id": env["body"]["id"], "ok": True, "data": {}})


async def _run(tmp_path, ports: dict[str, int], scenario_port: int | None) -> tuple[dict, dict[str, FakeProbe]]:
    cfg = ControllerConfig(path=tmp_path / "c.yml", bind=f"ipc://{tmp_path}/probes.sock", home=tmp_path / "home",
                           runs_dir=tmp_path / "runs", hosts=tuple(IPS), addresses=IPS)  # a connect goes there
    ctl = Controller(cfg)
    serving = asyncio.create_task(ctl.serve())
    await asyncio.sleep(0.2)
    ctx = zmq.asyncio.Context()
    probes = {h: FakeProbe(ctx, cfg.bind, h, p) for h, p in ports.items()}
    tasks = [asyncio.create_task(p.serve()) for p in probes.values()]
    cli = ctx.socket(zmq.DEALER)
    cli.setsockopt(zmq.LINGER, 0)
    cli.connect(f"ipc://{cfg.control_path}")
    try:
        await asyncio.sleep(0.5)  # hellos in, clocks pinged
        doc = {"name": "porttest", "delay": 0, "steps": STEPS}
        if scenario_port is not None:
            doc["port"] = scenario_port
        scn = scenario.parse(doc)
        session = wire.Session("cli")
        await session.send(cli, "run", {"scenario": scn.to_dict(), "delay": 0})
        while True:
            env = await asyncio.wait_for(session.recv(cli), 30)
            if env["type"] == "done":
                return env["body"], probes
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in (cli, *(p.sock for p in probes.values())):
            s.close()
        ctl.stopping.set()
        await serving
        ctx.term()


def test_a_scenario_port_that_differs_from_a_probes_is_refused_before_any_step(tmp_path):
    done, probes = asyncio.run(_run(tmp_path, {"thinkpad": 9091, "raspberrypi": 9091}, 9090))
    assert done["ok"] is False
    assert done["error"].splitlines() == [done["error"]]
    assert done["error"].startswith("scenario porttest has port 9090 but thinkpad listens, shapes and captures "
                                    "on port 9091 (tcplab_lab_port in the inventory)")
    assert all(p.commands == [] for p in probes.values())  # nothing started: no listen, no shaping
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run directory


def test_probes_that_disagree_on_the_port_are_refused(tmp_path):
    done, probes = asyncio.run(_run(tmp_path, {"thinkpad": 9090, "raspberrypi": 9091}, None))
    assert done["ok"] is False and "disagree" in done["error"]
    assert "raspberrypi 9091" in done["error"] and "thinkpad 9090" in done["error"]
    assert all(p.commands == [] for p in probes.values())


def test_a_scenario_without_port_connects_to_the_probes_port(tmp_path):
    done, probes = asyncio.run(_run(tmp_path, {"thinkpad": 9191, "raspberrypi": 9191}, None))
    assert done["ok"] is True, done
    connect = [c for c in probes["raspberrypi"].commands if c["action"] == "connect"]
    assert connect == [{"id": connect[0]["id"], "action": "connect", "args": {"ip": "10.90.0.1", "port": 9191}}]
    assert json.loads((Path(done["dir"]) / "run.json").read_text())["port"] == 9191


def test_a_scenario_port_equal_to_the_probes_runs(tmp_path):
    done, probes = asyncio.run(_run(tmp_path, {"thinkpad": 9090, "raspberrypi": 9090}, 9090))
    assert done["ok"] is True, done
    assert [c["action"] for c in probes["thinkpad"].commands][:1] == ["listen"]
