"""The control server's replies are bounded: a real Controller's control socket (ipc, no root) asked
for the status of a fleet too big for one reply, and sent frames that do not fit the wire, answers
what fits (saying how much it left out) and goes on serving; a reply with a text over its bound is
shortened, never an exception out of the server (a 1.2 MB status reply used to end the controller)."""

from __future__ import annotations

import asyncio
import contextlib

import msgpack
import zmq
import zmq.asyncio

from controller.config import ControllerConfig
from controller.control import CUT_TEXT, fitted
from controller.daemon import Controller
from controller.fleet import ProbeLink
from tcplab import wire
from tcplab.wire import bodies


@contextlib.asynccontextmanager
async def _control(tmp_path):
    """A Controller serving in this loop and a CLI's DEALER (routing id ``cli1``) on its control socket."""
    cfg = ControllerConfig(path=tmp_path / "c.yml", bind=f"ipc://{tmp_path}/probes.sock",
                           home=tmp_path / "home", runs_dir=tmp_path / "runs")
    ctl = Controller(cfg)
    serving = asyncio.create_task(ctl.serve())
    ctx = zmq.asyncio.Context()
    cli = ctx.socket(zmq.DEALER)
    cli.setsockopt(zmq.LINGER, 0)
    cli.setsockopt(zmq.ROUTING_ID, b"cli1")
    try:
        await asyncio.sleep(0.3)  # bound
        cli.connect(f"ipc://{cfg.control_path}")
        yield ctl, cli
    finally:
        ctl.stopping.set()
        code = await serving
        cli.close()
        ctx.term()
    assert code == 0


async def _next(cli, session: wire.Session) -> dict:
    return session.decode(await asyncio.wait_for(cli.recv(), 5))


def test_a_status_of_more_probes_than_a_reply_holds_lists_what_fits_and_counts_the_rest(tmp_path):
    async def scenario():
        async with _control(tmp_path) as (ctl, cli):
            for i in range(3000):  # more hosts than a state body holds (the fleet keeps only the inventory's)
                ctl.fleet.probes[f"h{i:04d}"] = ProbeLink(f"h{i:04d}", {"lab_ip": "10.90.0.1"})
            session = wire.Session("cli")
            await session.send(cli, "status", {})
            state = await _next(cli, session)
            assert state["type"] == "state"
            assert len(state["body"]["probes"]) == bodies.MAX_PROBES
            assert state["body"]["omitted"] == 3000 - bodies.MAX_PROBES
            assert sorted(state["body"]["probes"])[0] == "h0000"
            # frames that do not fit are refused and counted; the next status is answered
            refused = ctl.control.session.counters["refused"]
            for frame in (b"\xc1", msgpack.packb({"v": 1, "type": "run", "host": "cli", "seq": 1, "time": 1,
                                                  "body": {"scenario": [[[[[[[[1]]]]]]]]}}),
                          msgpack.packb({"v": 1, "type": "status", "host": "cli", "seq": 1, "time": 1,
                                         "body": {"probes": "all"}})):
                await cli.send(frame)
            ctl.fleet.probes.clear()
            await session.send(cli, "status", {})
            state = await _next(cli, session)
            assert state["body"] == {"probes": {}, "running": None}
            assert ctl.control.session.counters["refused"] == refused + 3
    asyncio.run(scenario())


def test_a_reply_with_a_text_over_its_bound_is_shortened_and_sent(tmp_path):
    async def scenario():
        async with _control(tmp_path) as (ctl, cli):
            session = wire.Session("cli")
            await session.send(cli, "status", {})  # the CLI is known to the ROUTER from here on
            await _next(cli, session)
            await ctl.control.reply(b"cli1", "done", {"ok": False, "error": "x" * 2_000_000, "run": "r"})
            done = await _next(cli, session)
            assert done["type"] == "done" and done["body"]["ok"] is False and done["body"]["run"] == "r"
            assert done["body"]["error"] == "x" * CUT_TEXT + f" ... ({2_000_000 - CUT_TEXT} characters cut)"
            await ctl.control.reply(b"cli1", "ack", {"seq": -1})  # a required field that cannot fit: dropped
            await session.send(cli, "status", {})
            assert (await _next(cli, session))["type"] == "state"  # still serving
    asyncio.run(scenario())


def test_fitted_keeps_well_formed_probes_and_the_fields_that_fit():
    fits = lambda type_, body: bodies.BODIES[type_].ok(body)  # noqa: E731
    good = {"alive": True, "lab_ip": "10.90.0.1", "events": 3, "clock": {"offset_ns": 0, "uncertainty_ns": None}}
    state = fitted("state", {"probes": {"a": good, "b": {**good, "lab_ip": "x" * 100}, "bad name": good},
                             "running": None}, fits)
    assert state == {"probes": {"a": good}, "running": None, "omitted": 2}
    assert fitted("progress", {"event": "step", "error": "e" * 70_000, "junk": 1}, fits) == {
        "event": "step", "error": "e" * CUT_TEXT + f" ... ({70_000 - CUT_TEXT} characters cut)"}
