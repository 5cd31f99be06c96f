"""CurveZMQ between the hosts, over real ZeroMQ sockets (ipc:// in a temp dir, no root): the real
ProbeBus with the controller's keys, the real Transport with a probe's, and DEALERs that try to get
in without a key, with a stranger's key, or with the other lab host's key. Then the key files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time

import pytest
import yaml
import zmq
import zmq.asyncio

from controller.bus import ProbeBus
from controller.fleet import Fleet
from controller.keys import main as keys_main
from controller.keys import install_keys, make_keys
from probe.transport import Transport
from tcplab import wire
from tcplab.configfile import ConfigError
from tcplab.wire import curve

HOSTS = ("thinkpad", "raspberrypi")
HELLO = {"pid": 1, "lab_ip": "10.90.0.1", "port": 9090}


@pytest.fixture
def keys(tmp_path):
    """A key store with the controller's, both lab hosts' and a stranger's pairs."""
    make_keys(tmp_path / "keys", ["controller", *HOSTS, "stranger"])
    return tmp_path / "keys"


class Peer:
    """A DEALER that speaks the wire, keyed with ``key`` (a probe's name in the key store) or not."""

    def __init__(self, ctx, endpoint: str, routing_id: str, keys_dir=None, key: str | None = None):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, routing_id.encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        if key is not None:
            curve.client(self.sock, curve.load_probe_keys(keys_dir, key))
        self.sock.connect(endpoint)

    async def send(self, type_: str, host: str, body: dict, seq: int = 1) -> None:
        await self.sock.send(wire.encode(wire.make(type_, host, seq, body)))

    async def heard(self, timeout: float = 0.5) -> list[dict]:
        """Every frame the controller sent this peer within ``timeout``."""
        got = []
        while await self.sock.poll(int(timeout * 1000)):
            got.append(wire.decode(await self.sock.recv()))
        return got

    async def until(self, type_: str, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for env in await self.heard(0.05):
                if env["type"] == type_:
                    return env
        raise AssertionError(f"no {type_} within {timeout} s")


@contextlib.asynccontextmanager
async def keyed_bus(tmp_path, keys_dir):
    """A serving ProbeBus with the controller's keys (admitting the two lab hosts), and its endpoint."""
    ctx = zmq.asyncio.Context()
    bus = ProbeBus(ctx, Fleet(admit=HOSTS), curve=curve.load_controller_keys(keys_dir, HOSTS))
    endpoint = f"ipc://{tmp_path}/probes.sock"
    bus.bind(endpoint)
    task = asyncio.create_task(bus.serve())
    peers: list[Peer] = []
    bus.peer = lambda *a, **kw: peers.append(Peer(ctx, endpoint, *a, keys_dir=keys_dir, **kw)) or peers[-1]
    try:
        yield bus, endpoint, ctx
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for p in peers:
            p.sock.close()
        bus.close(0)
        ctx.term()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_a_keyed_probe_is_heard_through_the_real_transport(tmp_path, keys):
    async def scenario():
        async with keyed_bus(tmp_path, keys) as (bus, endpoint, ctx):
            t = Transport(endpoint, "thinkpad", hello=HELLO, ctx=ctx, curve=curve.load_probe_keys(keys, "thinkpad"))
            t.connect()
            await t.hello()
            try:
                env = await asyncio.wait_for(t.recv(), 5)
                assert env["type"] == "welcome" and t.welcomed.is_set()
                assert bus.connected("thinkpad") and set(bus.fleet.probes) == {"thinkpad"}
                answer = asyncio.create_task(bus.command("thinkpad", "listen", {}, 5))
                env = await asyncio.wait_for(t.recv(), 5)                # the command, decrypted
                await t.send("result", {"id": env["body"]["id"], "ok": True})
                assert (await answer)["ok"] is True
            finally:
                t.close()
    run(scenario())


def test_no_key_or_a_strangers_key_gets_nothing_and_leaves_nothing(tmp_path, keys):
    async def scenario():
        async with keyed_bus(tmp_path, keys) as (bus, endpoint, ctx):
            plain = bus.peer("thinkpad")                     # no Curve at all
            stranger = bus.peer("raspberrypi", key="stranger")  # Curve, a key the controller does not know
            for peer, host in ((plain, "thinkpad"), (stranger, "raspberrypi")):
                await peer.send("hello", host, HELLO)
                await peer.send("result", host, {"id": 1, "ok": True, "error": "INJECTED"}, seq=2)
            assert await plain.heard() == [] and await stranger.heard() == []
            assert bus.fleet.probes == {} and bus.session.counters["received"] == 0
            assert bus.auth.refused >= 1                      # the stranger's key, at its handshake
            assert bus.auth.failed >= 1                       # the peer without Curve, from the monitor
            assert all(bus.fleet.counters(h)["link_frames_refused"] == 0 for h in HOSTS)
            # the lab host with its own key is heard at once on the same bus
            real = bus.peer("thinkpad", key="thinkpad")
            await real.send("hello", "thinkpad", HELLO)
            assert (await real.until("welcome"))["body"] == {"ack": 0}
            assert set(bus.fleet.probes) == {"thinkpad"}
    run(scenario())


def test_a_second_keyed_bus_in_the_same_event_loop_admits_its_probes(tmp_path, keys):
    """pyzmq's AsyncioAuthenticator, started a second time in one loop, never answered."""
    async def scenario():
        for attempt in range(3):
            async with keyed_bus(tmp_path / str(attempt), keys) as (bus, endpoint, ctx):
                peer = bus.peer("thinkpad", key="thinkpad")
                await peer.send("hello", "thinkpad", HELLO)
                await peer.until("welcome")
    for attempt in range(3):
        (tmp_path / str(attempt)).mkdir()
    run(scenario())


@pytest.mark.parametrize("routing_id", ["raspberrypi", "thinkpad"])
def test_a_keyed_host_that_says_it_is_the_other_is_refused_and_counted(tmp_path, keys, routing_id):
    """raspberrypi's key, hello as thinkpad: with its own routing id (the envelope's host is not the
    routing id) or with thinkpad's (the routing id is not the key's host)."""
    async def scenario():
        async with keyed_bus(tmp_path, keys) as (bus, endpoint, ctx):
            liar = bus.peer(routing_id, key="raspberrypi")
            await liar.send("hello", "thinkpad", HELLO)
            await liar.send("result", "thinkpad", {"id": 1, "ok": True, "error": "INJECTED"}, seq=2)
            assert await liar.heard() == []
            assert "thinkpad" not in bus.fleet.probes
            assert bus.fleet.counters("raspberrypi")["link_frames_refused"] == 2
            assert bus.fleet.counters("thinkpad")["link_frames_refused"] == 0
            assert bus.session.counters["refused"] == 2
            # the bus goes on: the same connection speaking as itself is heard
            if routing_id == "raspberrypi":
                await liar.send("hello", "raspberrypi", HELLO, seq=3)
                await liar.until("welcome")
                assert set(bus.fleet.probes) == {"raspberrypi"}
    run(scenario())


def test_a_result_or_pong_forged_by_the_other_keyed_host_resolves_nothing(tmp_path, keys):
    async def scenario():
        async with keyed_bus(tmp_path, keys) as (bus, endpoint, ctx):
            pongs: list[tuple[str, int]] = []
            bus.on_pong = lambda host, env, received_ns: pongs.append((host, env["body"]["id"]))
            thinkpad, pi = bus.peer("thinkpad", key="thinkpad"), bus.peer("raspberrypi", key="raspberrypi")
            for peer, host in ((thinkpad, "thinkpad"), (pi, "raspberrypi")):
                await peer.send("hello", host, HELLO)
                await peer.until("welcome")
            asked = asyncio.create_task(bus.command("thinkpad", "listen", {}, 5))
            cid = (await thinkpad.until("command"))["body"]["id"]
            # raspberrypi forges thinkpad's result and pong: as itself, as thinkpad in the envelope
            for host in ("raspberrypi", "thinkpad"):
                await pi.send("result", host, {"id": cid, "ok": False, "error": "forged"}, seq=5)
                await pi.send("pong", host, {"id": cid}, seq=6)
            await asyncio.sleep(0.3)
            assert not asked.done()
            assert ("thinkpad", cid) not in pongs
            # a second connection with thinkpad's routing id and raspberrypi's key gets nowhere either
            twin = bus.peer("thinkpad", key="raspberrypi")
            await twin.send("result", "thinkpad", {"id": cid, "ok": False, "error": "forged"}, seq=7)
            await asyncio.sleep(0.3)
            assert not asked.done()
            await thinkpad.send("result", "thinkpad", {"id": cid, "ok": True}, seq=8)
            await thinkpad.send("pong", "thinkpad", {"id": cid}, seq=9)
            assert await asyncio.wait_for(asked, 5) == {"id": cid, "ok": True}
            await asyncio.sleep(0.1)
            assert ("thinkpad", cid) in pongs
    run(scenario())


def test_keys_are_made_once_0600_in_a_0700_directory(tmp_path, capsys):
    store = tmp_path / "store"
    assert keys_main(["--check", "--dir", str(store), "controller", "thinkpad"]) == 0   # --check makes nothing
    assert '"made": ["controller", "thinkpad"]' in capsys.readouterr().out and not store.exists()
    old = os.umask(0o022)
    try:
        assert keys_main(["--dir", str(store), "controller", "thinkpad"]) == 0
    finally:
        os.umask(old)
    assert '"changed": true' in capsys.readouterr().out
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    files = sorted(p.name for p in store.iterdir())
    assert files == ["controller.key", "controller.key_secret", "thinkpad.key", "thinkpad.key_secret"]
    assert {stat.S_IMODE((store / f).stat().st_mode) for f in files} == {0o600}
    before = {f: (store / f).read_bytes() for f in files}
    assert keys_main(["--dir", str(store), "controller", "thinkpad"]) == 0   # nothing remade
    assert '"changed": false' in capsys.readouterr().out
    assert {f: (store / f).read_bytes() for f in files} == before
    k = curve.load_probe_keys(install_keys(store, tmp_path / "probe" / "keys", "thinkpad", ["controller"]), "thinkpad")
    assert k.peers["controller"] == curve.load_controller_keys(store, ["thinkpad"]).public
    assert sorted(p.name for p in (tmp_path / "probe" / "keys").iterdir()) == ["controller.key", "thinkpad.key_secret"]
    assert stat.S_IMODE((tmp_path / "probe" / "keys").stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "probe" / "keys").iterdir()} == {0o600}
    assert zmq.curve_public(k.secret) == k.public
    (store / "thinkpad.key").unlink()                                         # half a pair: refused
    assert keys_main(["--dir", str(store), "thinkpad"]) == 2
    assert "half a key pair" in capsys.readouterr().err


def _one_line_naming(excinfo, path) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_a_missing_garbled_or_open_key_file_is_one_line_naming_it(tmp_path, keys):
    secret = keys / "thinkpad.key_secret"
    (keys / "controller.key").rename(keys / "gone")
    with pytest.raises(ConfigError) as e:
        curve.load_probe_keys(keys, "thinkpad")
    assert "missing" in _one_line_naming(e, keys / "controller.key")
    (keys / "gone").rename(keys / "controller.key")
    good = secret.read_bytes()
    for garbled in (b"not a certificate\n", good.replace(b"secret-key = \"", b"secret-key = \"xx"),
                    b"\xff\xfe\x00binary", good.replace(b"public-key", b"publik-key")):
        secret.write_bytes(garbled)
        with pytest.raises(ConfigError) as e:
            curve.load_probe_keys(keys, "thinkpad")
        _one_line_naming(e, secret)
    other = (keys / "raspberrypi.key_secret").read_bytes().split(b"secret-key")[1]
    secret.write_bytes(good.split(b"secret-key")[0] + b"secret-key" + other)   # someone else's secret
    with pytest.raises(ConfigError) as e:
        curve.load_probe_keys(keys, "thinkpad")
    assert "does not match" in _one_line_naming(e, secret)
    secret.write_bytes(good)
    secret.chmod(0o644)
    with pytest.raises(ConfigError) as e:
        curve.load_probe_keys(keys, "thinkpad")
    assert "readable by others" in _one_line_naming(e, secret)
    secret.chmod(0o600)
    assert curve.load_probe_keys(keys, "thinkpad").name == "thinkpad"
    if os.getuid() == 0:  # a secret another user owns (and so could read or replace) is refused
        os.chown(secret, 4242, 4242)
        with pytest.raises(ConfigError) as e:
            curve.load_probe_keys(keys, "thinkpad")
        assert "owned by uid 4242" in _one_line_naming(e, secret)


def _write(path, data: dict):
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_daemons_configs_load_their_keys_and_refuse_the_network_without_them(tmp_path, keys, capsys):
    from controller import config as controller_config
    from probe import config as probe_config
    from probe.daemon import main as probe_main

    ctl = {"bind": "tcp://10.90.0.254:5555", "home": str(tmp_path / "c"), "runs_dir": str(tmp_path / "r"),
           "hosts": {"thinkpad": "10.90.0.1", "raspberrypi": "10.90.0.2"}}
    path = _write(tmp_path / "controller.yml", ctl)
    with pytest.raises(ConfigError, match="reachable from the network: keys_dir"):
        controller_config.load(path)
    for local in ("ipc:///tmp/x.sock", "tcp://127.0.0.1:5555", "tcp://localhost:5555"):
        assert controller_config.load(_write(path, {**ctl, "bind": local})).curve is None
    cfg = controller_config.load(_write(path, {**ctl, "keys_dir": "keys"}))  # relative to the file
    assert cfg.curve.name == "controller" and set(cfg.curve.peers) == {"thinkpad", "raspberrypi"}
    with pytest.raises(ConfigError, match="keys_dir needs hosts"):
        controller_config.load(_write(path, {**ctl, "keys_dir": str(keys), "hosts": []}))
    with pytest.raises(ConfigError) as e:                                  # a host without a key
        controller_config.load(_write(path, {**ctl, "keys_dir": str(keys), "hosts": {"ghost": "10.90.0.3"}}))
    _one_line_naming(e, keys / "ghost.key")

    probe = {"host": "thinkpad", "controller": "tcp://10.90.0.254:5555", "lab_ip": "10.90.0.1",
             "home": str(tmp_path / "h")}
    path = _write(tmp_path / "probe.yml", probe)
    with pytest.raises(ConfigError, match="controller tcp://10.90.0.254:5555 is reachable from the network"):
        probe_config.load(path)
    cfg = probe_config.load(_write(path, {**probe, "keys_dir": str(keys)}))
    assert cfg.curve.name == "thinkpad" and set(cfg.curve.peers) == {"controller"}
    (keys / "thinkpad.key_secret").write_text("garbage\n")
    assert probe_main(["start", "--config", str(path)]) == 2               # before anything is started
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(keys / "thinkpad.key_secret") in err and "no valid Curve" in err


def test_the_zap_handler_admits_only_a_known_curve_key_in_its_domain(keys):
    ctl = curve.load_controller_keys(keys, HOSTS)
    auth = curve.Authenticator(zmq.asyncio.Context.instance(), ctl)
    known = zmq.utils.z85.decode(curve.load_probe_keys(keys, "raspberrypi").public)
    stranger = zmq.utils.z85.decode(curve.load_keys(keys, "stranger", []).public)
    ask = [b"1.0", b"7", b"tcplab", b"10.90.0.9", b"", b"CURVE"]
    assert auth.reply([*ask, known]) == [b"1.0", b"7", b"200", b"OK", b"raspberrypi", b""]
    for bad in ([*ask, stranger], [*ask, known[:31]], [*ask], [*ask, known, known],
                [b"1.0", b"7", b"other", b"", b"", b"CURVE", known], [b"1.0", b"7", b"tcplab", b"", b"", b"NULL"],
                [b"2.0", b"7", b"tcplab", b"", b"", b"CURVE", known], [b"1.0", b"7"], [b"1.0"]):
        reply = auth.reply(bad)
        assert reply[2] == b"400" and reply[4] == b"", bad
    assert auth.refused == 9


def test_a_curve_server_without_its_zap_handler_admits_nobody(tmp_path, keys):
    """ZAP_DOMAIN and ZAP_ENFORCE_DOMAIN: a bus whose authenticator is not running fails closed."""
    async def scenario():
        ctx = zmq.asyncio.Context()
        router = curve.server(ctx.socket(zmq.ROUTER), curve.load_controller_keys(keys, HOSTS))
        router.bind(f"ipc://{tmp_path}/bare.sock")
        dealer = Peer(ctx, f"ipc://{tmp_path}/bare.sock", "thinkpad", keys_dir=keys, key="thinkpad")
        await dealer.send("hello", "thinkpad", HELLO)
        assert await router.poll(1000) == 0
        dealer.sock.close()
        router.close(0)
        ctx.term()
    run(scenario())


@pytest.mark.parametrize("endpoint, needs", [
    ("ipc:///run/tcplab/probes.sock", False), ("tcp://127.0.0.1:5555", False), ("tcp://127.0.0.2:5555", False),
    ("tcp://localhost:5555", False), ("tcp://[::1]:5555", False), ("tcp://10.90.0.254:5555", True),
    ("tcp://0.0.0.0:5555", True), ("tcp://*:5555", True), ("tcp://wlp5s0:5555", True), ("tcp://[::]:5555", True)])
def test_only_an_endpoint_no_other_machine_reaches_may_go_without_keys(endpoint, needs):
    assert curve.needs_keys(endpoint) is needs
