"""probe/deadman.py's timing, on a real asyncio loop with real sleeps (short silences, no root).

The host side is a small stand-in with the probe's two facts (shaped, nc running) and a disarm
that undoes them as the probe's does; the transport's ``last_heard`` is a loop time the test sets,
as the transport sets it on every frame it reads.
"""

from __future__ import annotations

import asyncio
import os
import functools

import pytest

from probe.deadman import DEADMAN_S, DeadMan
from tcplab.wire.bodies import check_event

SILENCE = 0.25
EVERY = 0.01
SLACK = 0.4  # how late a firing may be on a loaded machine (six test runs on two cores)


def looped(test):
    """Run an async test on a fresh real event loop."""
    @functools.wraps(test)
    def run():
        asyncio.run(test())
    return run


class Host:
    def __init__(self, shaped: bool = True, nc: bool = True, fail: bool = False):
        self.shaped, self.nc, self.fail = shaped, nc, fail
        self.heard = 0.0
        self.events: list[dict] = []
        self.disarmed_at: list[float] = []

    def armed(self) -> bool:
        return self.shaped or self.nc

    async def disarm(self) -> list[str]:
        self.disarmed_at.append(asyncio.get_running_loop().time())
        if self.fail:
            raise OSError("iptables: resource busy")
        cleared = (["shaping nfqueue on eth0 port 9090"] if self.shaped else []) + (["nc pid 42"] if self.nc else [])
        self.shaped = self.nc = False
        return cleared

    def deadman(self, silence: float = SILENCE) -> DeadMan:
        return DeadMan(lambda: self.heard, self.armed, self.disarm, self.events.append,
                       deadman_s=silence, every_s=EVERY)


async def run_for(dm: DeadMan, seconds: float, hear: "Host | None" = None, hear_every: float | None = None) -> None:
    """Run the watcher for ``seconds``; ``hear`` the controller every ``hear_every`` s meanwhile."""
    task = asyncio.create_task(dm.watch())
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    try:
        while loop.time() < end:
            if hear is not None and hear_every is not None:
                hear.heard = loop.time()
                await asyncio.sleep(hear_every)
            else:
                await asyncio.sleep(end - loop.time())
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(cond, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond() and loop.time() < end:
        await asyncio.sleep(EVERY)


def test_the_switch_is_five_seconds():
    assert DEADMAN_S == 5.0


@looped
async def test_a_silent_controller_fires_it_once_after_the_silence():
    host = Host()
    loop = asyncio.get_running_loop()
    host.heard = loop.time()
    await run_for(host.deadman(), SILENCE * 4)
    assert len(host.disarmed_at) == 1  # once: nothing is armed after it
    waited = host.disarmed_at[0] - host.heard
    assert SILENCE <= waited <= SILENCE + SLACK, waited
    [ev] = host.events
    assert ev["kind"] == "deadman" and ev["cleared"] == ["shaping nfqueue on eth0 port 9090", "nc pid 42"]
    assert SILENCE <= ev["silent_s"] <= SILENCE + SLACK and isinstance(ev["t_ns"], int) and ev["t_ns"] > 0
    assert not host.armed()
    check_event(ev)  # what the controller's bus will take


@looped
async def test_a_controller_heard_more_often_than_the_silence_never_fires_it():
    host = Host()
    await run_for(host.deadman(silence=0.6), 1.5, hear=host, hear_every=0.05)  # 12 frames a silence
    assert host.disarmed_at == [] and host.events == [] and host.armed()


@looped
async def test_an_idle_probe_waits_for_its_controller_as_long_as_it_likes():
    host = Host(shaped=False, nc=False)
    await run_for(host.deadman(), SILENCE * 4)
    assert host.disarmed_at == [] and host.events == []


@looped
async def test_nc_alone_arms_it():
    host = Host(shaped=False, nc=True)
    await run_for(host.deadman(), SILENCE * 2)
    assert [e["cleared"] for e in host.events] == [["nc pid 42"]]


@looped
async def test_a_probe_that_never_heard_its_controller_counts_from_the_start():
    host = Host()  # heard stays 0.0: long ago on the loop's clock
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await run_for(host.deadman(), SILENCE * 2)
    assert len(host.disarmed_at) == 1 and host.disarmed_at[0] - t0 >= SILENCE


@looped
async def test_armed_after_a_silence_began_still_waits_the_whole_silence_from_the_last_frame():
    host = Host(shaped=False, nc=False)
    loop = asyncio.get_running_loop()
    dm = host.deadman()
    task = asyncio.create_task(dm.watch())
    try:
        host.heard = loop.time()
        await asyncio.sleep(SILENCE / 2)
        host.shaped = True  # a command shaped the port; then the controller fell silent
        await asyncio.sleep(SILENCE)
        assert len(host.disarmed_at) == 1
        assert host.disarmed_at[0] - host.heard >= SILENCE
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@looped
async def test_a_failed_disarm_is_said_and_tried_again_one_silence_later():
    host = Host(fail=True)
    dm = host.deadman()
    task = asyncio.create_task(dm.watch())
    try:
        await until(lambda: len(host.disarmed_at) >= 2, SILENCE * 2 + 2 * SLACK)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(host.disarmed_at) == 2
    gap = host.disarmed_at[1] - host.disarmed_at[0]
    assert SILENCE <= gap <= SILENCE + SLACK, gap  # one silence later, not at every check
    assert [e["cleared"] for e in host.events] == [[], []] and host.armed()


@looped
async def test_hearing_the_controller_again_starts_a_new_silence():
    host = Host()
    loop = asyncio.get_running_loop()
    dm = host.deadman()
    task = asyncio.create_task(dm.watch())
    try:
        host.heard = loop.time()
        await until(lambda: len(host.events) == 1, SILENCE + SLACK)
        assert len(host.events) == 1
        host.heard = heard_again = loop.time()  # the controller is back and shapes again
        host.shaped = True
        await until(lambda: len(host.events) == 2, SILENCE + SLACK)
        assert len(host.events) == 2 and host.events[1]["cleared"] == ["shaping nfqueue on eth0 port 9090"]
        assert host.disarmed_at[1] - heard_again >= SILENCE  # a whole new silence, from the frame heard
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_check_interval_longer_than_the_silence_is_refused():
    with pytest.raises(ValueError, match="check interval"):
        DeadMan(lambda: 0.0, lambda: True, Host().disarm, print, deadman_s=1.0, every_s=2.0)



class BrokenBackend:
    """A shaping backend whose removal fails (a failure a test cannot cause without root and a
    broken kernel: the one stand-in here)."""

    name = "netem"

    def counters(self) -> dict:
        return {}

    def clear(self) -> bool:
        raise OSError("RTNETLINK answers: Device or resource busy")


def loopback_probe(tmp_path):
    """A probe configuration on 127.0.0.1 (no root) with a free port of its own, and that port."""
    import socket

    from probe.config import ProbeConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return ProbeConfig(path=tmp_path / "probe.yml", host="thinkpad", controller=f"ipc://{tmp_path}/c.sock",
                       lab_ip="127.0.0.1", lab_iface="lo", port=port, home=tmp_path), port


def test_the_probes_disarm_still_ends_nc_when_clearing_the_shaping_fails(tmp_path):
    """A real Probe and a real nc listening on 127.0.0.1 (no root): the shaping's failure is logged,
    nc is ended all the same, and only what was undone is said."""
    from probe.daemon import Probe

    cfg, port = loopback_probe(tmp_path)

    async def scenario():
        probe = Probe(cfg)
        try:
            await probe.endpoint.listen(port)
            pid = probe.endpoint.pid
            probe.shaper._impl = BrokenBackend()
            assert probe.armed()
            cleared = await probe.disarm()
            return pid, cleared, probe.endpoint.running
        finally:
            await probe.endpoint.abort()
            probe.transport.close()
            probe._netlink.shutdown()

    pid, cleared, running = asyncio.run(scenario())
    assert cleared == [f"nc pid {pid}"] and not running


def test_the_probes_disarm_ends_its_own_application_of_many_connections(tmp_path):
    """count > 1: the probe's own application (a listener and two connections to it on 127.0.0.1),
    ended by the disarm (as a killed nc is: FINs, no resets nobody asked for) and named in what it says."""
    from probe.daemon import Probe

    cfg, port = loopback_probe(tmp_path)

    async def scenario():
        probe = Probe(cfg)
        peers = []
        try:
            await probe.endpoint.listen(port, count=2)
            for _ in range(2):
                peers.append(await asyncio.open_connection("127.0.0.1", port))
            for _ in range(100):
                if len(probe.endpoint.app.conns) == 2:
                    break
                await asyncio.sleep(0.01)
            assert probe.armed() and probe.endpoint.pid == os.getpid()
            cleared = await probe.disarm()
            eofs = [await asyncio.wait_for(r.read(), 2) for r, _ in peers]  # each peer got its FIN
            return cleared, eofs, probe.endpoint.running
        finally:
            for _, w in peers:
                w.close()
            await probe.endpoint.abort()
            probe.transport.close()
            probe._netlink.shutdown()

    cleared, eofs, running = asyncio.run(scenario())
    assert cleared == ["the probe's application: a listener and 2 connection(s)"]
    assert eofs == [b"", b""] and not running
