"""The controller against bad and vanishing peers on its real ZeroMQ sockets."""

import asyncio
import time

import msgpack
import pytest
import zmq
import zmq.asyncio
from structlog.testing import capture_logs

from controller.config import ControllerConfig
from controller.daemon import Controller
from tcplab import wire

pytestmark = pytest.mark.integration


async def _serving(tmp_path):
    cfg = ControllerConfig(path=tmp_path / "c.yml", bind=f"ipc://{tmp_path}/probes.sock", home=tmp_path / "home",
                           runs_dir=tmp_path / "runs")
    ctl = Controller(cfg)
    task = asyncio.create_task(ctl.serve())
    await asyncio.sleep(0.2)
    return ctl, task


def _dealer(ctx, endpoint, name):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.ROUTING_ID, name.encode())
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    return s


def test_bad_frames_are_refused_and_the_controller_goes_on(tmp_path):
    async def scenario():
        ctl, task = await _serving(tmp_path)
        ctx = zmq.asyncio.Context()
        try:
            with capture_logs() as logs:
                s = _dealer(ctx, ctl.cfg.bind, "thinkpad")
                await s.send(b"\xc1not msgpack")
                await s.send(msgpack.packb({"v": 1, "type": "exec", "host": "thinkpad", "seq": 1, "time": 0, "body": {}}))
                # a frame claiming another host than its routing id
                await s.send(wire.encode(wire.make("hello", "raspberrypi", 1, {"pid": 1})))
                await s.send(wire.encode(wire.make("hello", "thinkpad", 2, {"pid": 1, "lab_ip": "10.90.0.1"})))
                reply = wire.decode(await asyncio.wait_for(s.recv(), 5))
                s.close()
            reasons = [e["reason"] for e in logs if e["event"] == "frame_refused"]
            assert len(reasons) == 3
            assert "not valid msgpack" in reasons[0] and "unknown message type" in reasons[1]
            assert "does not match routing id" in reasons[2]
            assert reply["type"] == "welcome" and not task.done()
            assert list(ctl.fleet.probes) == ["thinkpad"]
        finally:
            ctl.stopping.set()
            await task
            ctx.term()
    asyncio.run(scenario())


def test_probes_that_vanish_mid_conversation_do_not_stop_the_controller(tmp_path):
    async def scenario():
        ctl, task = await _serving(tmp_path)
        ctx = zmq.asyncio.Context()
        try:
            # Each one says hello, sends an event and is gone before the welcome and the ack can reach it.
            for i in range(30):
                s = _dealer(ctx, ctl.cfg.bind, f"ghost{i}")
                await s.send(wire.encode(wire.make("hello", f"ghost{i}", 1, {"pid": i})))
                await s.send(wire.encode(wire.make("events", f"ghost{i}", 1, {"events": [{"kind": "state", "t_ns": time.monotonic_ns()}]})))
                s.close()
            await asyncio.sleep(1.0)
            assert not task.done(), task.exception() if task.done() else None
            s = _dealer(ctx, ctl.cfg.bind, "thinkpad")  # and a real probe still gets in
            await s.send(wire.encode(wire.make("hello", "thinkpad", 1, {"pid": 7})))
            assert wire.decode(await asyncio.wait_for(s.recv(), 5))["type"] == "welcome"
            s.close()
        finally:
            ctl.stopping.set()
            code = await task
            ctx.term()
        assert code == 0
    asyncio.run(scenario())


def test_a_stranger_without_a_lab_key_cannot_inject_into_a_real_run(netns_pair, tmp_path):
    """The real daemons with CurveZMQ (tests/daemons makes the keys). From before the controller binds
    until the run ends, peers with no key, and with keys of their own made the same way (they know the
    controller's public key), say hello as the lab hosts, send events with console text and forge
    results and pongs. Without Curve they would take the lab hosts' routing ids first (the real probes'
    connections then refused by the ROUTER). With it: the real probes connect, the run is ok, nothing
    of theirs is in the trace, the controller refused their keys."""
    import threading

    from controller.keys import make_keys
    from tests.daemons import Lab, storyline
    from tcplab.wire import curve

    lab = Lab(netns_pair, tmp_path)
    make_keys(lab.keys, ["controller", "thinkpad", "raspberrypi"])  # the lab's (Lab.start keeps them)
    make_keys(tmp_path / "stranger", ["thinkpad", "raspberrypi"])
    server_key = curve.load_controller_keys(lab.keys, []).public
    endpoint = f"ipc://{lab.root}/probes.sock"
    stop = threading.Event()
    sent = [0]

    def attack():
        ctx = zmq.Context()
        peers = []
        for host in ("thinkpad", "raspberrypi"):
            for keyed in (False, True):
                s = ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.ROUTING_ID, host.encode())
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.SNDHWM, 1000)
                if keyed:
                    own = curve.load_keys(tmp_path / "stranger", host, [])
                    curve.client(s, curve.Keys(host, own.public, own.secret, {"controller": server_key}))
                s.connect(endpoint)
                peers.append((host, s))
        seq = 0
        while not stop.is_set():
            seq += 1
            for host, s in peers:
                frames = [wire.make("hello", host, seq, {"pid": 9, "lab_ip": lab.hosts[host].ip, "port": 9090}),
                          wire.make("events", host, seq, {"events": [
                              {"kind": "console", "t_ns": 1, "text": "INJECTED", "stream": "stdout"}]}),
                          wire.make("result", host, seq, {"id": seq % 50 + 1, "ok": True}),
                          wire.make("pong", host, seq, {"id": seq % 50 + 1})]
                for env in frames:
                    try:
                        s.send(wire.encode(env), zmq.NOBLOCK)
                        sent[0] += 1
                    except zmq.Again:  # nobody takes them: the handshake never completes
                        pass
            stop.wait(0.02)
        for _, s in peers:
            s.close()
        ctx.term()

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        time.sleep(0.5)  # the strangers are connecting before the controller binds
        lab.start()
        res, run_dir = lab.run_scenario(storyline("strangers", delay=0.1, shape=False))
    finally:
        stop.set()
        attacker.join(10)
        lab.close()
    assert res.returncode == 0, res.stderr + res.stdout
    assert sent[0] > 0
    trace = (run_dir / "trace.jsonl").read_text()
    assert "INJECTED" not in trace
    log = (lab.controller_home / "controller.log").read_text()
    assert "curve_refused" in log and "handshake_refused" in log  # the strangers' keys; the peers without Curve
    assert "INJECTED" not in log
