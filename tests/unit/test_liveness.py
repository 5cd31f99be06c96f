"""The controller's liveness on a real ProbeBus and a probe's DEALER over a real ipc socket (no root):
its heartbeat every second ({} or the run's id), a probe that falls silent reported once within
ALIVE_S of its last frame, what waits on it failing at once, and its return."""

import asyncio
import time

from structlog.testing import capture_logs

from controller.fleet import ALIVE_S
from controller.liveness import HEARTBEAT_S, TICK_S, Liveness, ProbeSilent
from controller.run import Run
from tests.unit.test_fleet import _bus_and_probe


async def _heartbeats(probe, seconds: float) -> list[dict]:
    """The heartbeats the probe's DEALER receives within ``seconds``."""
    got, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            env = probe.session.decode(await asyncio.wait_for(probe.sock.recv(), left))
        except asyncio.TimeoutError:
            break
        if env["type"] == "heartbeat":
            got.append(env["body"])
    return got


def test_every_probe_gets_a_heartbeat_each_second_naming_the_run(tmp_path):
    async def scenario():
        async with _bus_and_probe(tmp_path) as (bus, probe):
            live = Liveness(bus)
            beating = asyncio.create_task(live.serve())
            try:
                await probe.session.send(probe.sock, "hello", {"pid": 1, "lab_ip": "10.90.0.1", "port": 9090})
                await probe.until("welcome")
                beats = await _heartbeats(probe, 2.5 * HEARTBEAT_S)
                assert beats and all(b == {} for b in beats) and 2 <= len(beats) <= 4, beats
                bus.run = Run(tmp_path / "run-1", ("thinkpad",))
                await probe.session.send(probe.sock, "heartbeat", {"oldest": 1})  # still alive
                beats = await _heartbeats(probe, 1.5 * HEARTBEAT_S)
                assert {"run": "run-1"} in beats, beats
            finally:
                beating.cancel()
                await asyncio.gather(beating, return_exceptions=True)
                if bus.run is not None:
                    bus.run.close()
    asyncio.run(scenario())


def test_a_silent_probe_is_reported_once_and_what_waits_on_it_fails_at_once(tmp_path):
    async def scenario():
        async with _bus_and_probe(tmp_path) as (bus, probe):
            live = Liveness(bus)
            told: list[tuple[str, str]] = []
            live.on_silent = lambda host: told.append(("silent", host))
            live.on_back = lambda host: told.append(("back", host))
            run = bus.run = Run(tmp_path / "run-2", ("thinkpad",))
            beating = asyncio.create_task(live.serve())
            try:
                with capture_logs() as logs:
                    await probe.session.send(probe.sock, "hello", {"pid": 1, "lab_ip": "10.90.0.1", "port": 9090})
                    await probe.until("welcome")
                    last = bus.fleet.probes["thinkpad"].last_seen  # and then the probe says nothing more
                    t0 = time.monotonic()
                    asking = asyncio.create_task(bus.command("thinkpad", "listen", {}, 30))
                    waiting = asyncio.create_task(run.wait_for((), 0.0, 30))  # an expectation wait
                    try:
                        await asking
                        raise AssertionError("the command to a silent probe was answered")
                    except ProbeSilent as e:
                        failed_after = time.monotonic() - last
                        assert "thinkpad stopped answering" in str(e)
                    assert ALIVE_S <= failed_after <= ALIVE_S + 3 * TICK_S, failed_after
                    assert await asyncio.wait_for(waiting, 1) == [] and "thinkpad" in run.silent
                    assert not bus.connected("thinkpad")
                    while await probe.sock.poll(0):  # what was sent before it fell silent
                        await probe.sock.recv()
                    quiet = await _heartbeats(probe, 1.5 * HEARTBEAT_S)  # a silent probe is sent none
                    assert quiet == []
                    await probe.session.send(probe.sock, "heartbeat", {"oldest": 1})
                    await asyncio.sleep(3 * TICK_S)
                silent = [e for e in logs if e["event"] == "probe_silent"]
                assert len(silent) == 1 and silent[0]["probe"] == "thinkpad" and silent[0]["run"] == "run-2"
                assert ALIVE_S <= silent[0]["silent_s"] < ALIVE_S + 2 * TICK_S
                assert [e["probe"] for e in logs if e["event"] == "probe_back"] == ["thinkpad"]
                assert time.monotonic() - t0 < ALIVE_S + 4
                (fact,) = run.silences["thinkpad"]
                assert fact["silent_s"] >= ALIVE_S and fact["back_t"] > fact["t"]
                assert bus.connected("thinkpad") and "thinkpad" not in live.silent
                assert told == [("silent", "thinkpad"), ("back", "thinkpad")]  # the controller's clean-up hooks
            finally:
                beating.cancel()
                await asyncio.gather(beating, return_exceptions=True)
                run.close()
    asyncio.run(scenario())
