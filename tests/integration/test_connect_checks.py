"""The probe checks a connect's address itself before nc dials it: only a plain IPv4 address inside
its own lab network, and nc's argv ends its options with ``--`` (real netcat-openbsd in namespaces)."""

import asyncio
import os
import subprocess
from dataclasses import dataclass

import pytest
import yaml
import zmq
import zmq.asyncio

from controller.bus import ProbeBus
from controller.fleet import Fleet
from controller.keys import make_keys
from controller.testbed import processes
from controller.testbed.network import namespace_inode
from probe.commands import Commands
from probe.endpoint import PID_FILE, Endpoint
from probe.endpoints import Endpoints
from probe.sockapp import SocketApp
from probe.labnet import LabAddressError
from tcplab.wire import curve
from tests.daemons import HOSTS, VENV_BIN, Lab
from tests.nsthread import NetnsThread
from tests.seedrun import PORT

pytestmark = pytest.mark.integration


@dataclass
class Cfg:
    lab_iface: str
    lab_ip: str
    port: int = PORT


class Host:
    """The probe side the connect handler acts through, with the real endpoints (nc for one connection)."""

    def __init__(self, cfg: Cfg, endpoint: Endpoint):
        self.cfg, self.endpoint, self.remembered = cfg, Endpoints(endpoint, SocketApp(lambda *a: None)), 0

    def emit(self, body: dict) -> None:
        pass

    def remember_nc(self) -> None:
        self.remembered += 1


def _nc_children() -> list[int]:
    """The nc processes this test process started (children of its pid), by their cmdline."""
    me, found = os.getpid(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
            argv0 = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0]
        except OSError:
            continue
        if int(stat.rsplit(") ", 1)[1].split()[1]) == me and os.path.basename(argv0) == b"nc":
            found.append(int(pid))
    return found


def test_a_connect_outside_the_lab_or_not_an_address_starts_no_nc(netns_pair, tmp_path):
    a = netns_pair.a
    replies: list[dict] = []

    async def reply(type_: str, body: dict) -> None:
        replies.append(body)

    async def ask(commands: Commands, args: dict) -> dict:
        return await commands.answer({"id": len(replies) + 1, "action": "connect", "args": args})

    with NetnsThread(a.ns) as ta:
        ep = Endpoint(lambda t, s: None, pid_dir=tmp_path)
        host = Host(Cfg(a.ifname, a.ip), ep)
        commands = Commands(host, reply)
        answers = [ta.run(ask(commands, args)) for args in (
            {"ip": "-lk"}, {"ip": "8.8.8.8"}, {"ip": "10.90.0.255"}, {"ip": "10.90.0.0"}, {"ip": "10.90.1.2"},
            {"ip": "10.90.0.2", "port": 0})]
        started = _nc_children()
        assert not ep.running and ep.pid is None and not (tmp_path / PID_FILE).exists() and host.remembered == 0
        # the endpoint refuses on its own too (not only through the action's wire check)
        for ip in ("-lk", "10.90.0.2 9090", "localhost", "8.8.8.8"):
            with pytest.raises(LabAddressError):
                ta.run(ep.connect(ip, PORT, lab=(a.ifname, a.ip)))
        assert not ep.running and _nc_children() == []
    assert started == []
    errors = [r["error"] for r in answers]
    assert all(r["ok"] is False for r in answers) and all("\n" not in e for e in errors)
    assert errors[0] == "connect ip '-lk' is not a plain unicast IPv4 address"
    assert errors[1] == "LabAddressError: 8.8.8.8 is outside this host's lab network 10.90.0.0/24 (eth0)"
    assert errors[2] == "LabAddressError: 10.90.0.255 is the lab network 10.90.0.0/24's own address, not a host's"
    assert errors[3].startswith("LabAddressError: 10.90.0.0 is the lab network")
    assert errors[4] == "LabAddressError: 10.90.1.2 is outside this host's lab network 10.90.0.0/24 (eth0)"
    assert errors[5] == "connect port 0 is outside 1..65535"


def _argv(pid: int) -> list[str]:
    return open(f"/proc/{pid}/cmdline", "rb").read().decode().split("\0")[:-1]


def test_a_lab_connect_works_and_every_nc_argv_ends_its_options_with_dashdash(netns_pair, tmp_path):
    a, b = netns_pair.a, netns_pair.b
    got_a, got_b = [], []
    with NetnsThread(a.ns) as ta, NetnsThread(b.ns) as tb:
        server = Endpoint(lambda t, s: got_a.append((s, t)), pid_dir=tmp_path / "a")
        client = Endpoint(lambda t, s: got_b.append((s, t)), pid_dir=tmp_path / "b")
        ta.run(server.listen(PORT))
        try:
            assert _argv(server.pid) == ["/usr/bin/nc", "-l", "--", str(PORT)]
            commands = Commands(Host(Cfg(b.ifname, b.ip), client), lambda *_: asyncio.sleep(0))
            answer = tb.run(commands.answer({"id": 1, "action": "connect", "args": {"ip": a.ip, "port": PORT}}))
            assert answer == {"id": 1, "ok": True, "data": {}}
            assert _argv(client.pid) == ["/usr/bin/nc", "--", a.ip, str(PORT)]
            tb.run(client.send("Hello"))

            async def heard():
                while ("stdout", "Hello") not in got_a:
                    await asyncio.sleep(0.01)
            ta.run(asyncio.wait_for(heard(), 5))
        finally:
            tb.run(client.abort())
            ta.run(server.abort())
    assert ("stdout", "Hello") in got_a


def test_a_real_probe_refuses_a_bad_connect_its_controller_sends(netns_pair, tmp_path):
    """The whole probe daemon in its namespace, keyed, behind a real ProbeBus that sends what a broken or
    hostile controller would: each refused with one line, no nc in the namespace; a lab address runs."""
    lab = Lab(netns_pair, tmp_path)
    make_keys(lab.keys, [curve.CONTROLLER, *HOSTS])
    keys = curve.load_controller_keys(lab.key_dir("controller", curve.CONTROLLER, list(HOSTS)), HOSTS)
    a = lab.hosts["thinkpad"]
    cfg = tmp_path / "thinkpad.yml"
    cfg.write_text(yaml.safe_dump({"host": "thinkpad", "controller": f"ipc://{tmp_path}/probes.sock", "lab_ip": a.ip,
                                   "lab_iface": a.ifname, "port": PORT, "home": str(tmp_path / "hosts" / "thinkpad"),
                                   "keys_dir": lab.key_dir("hosts/thinkpad", "thinkpad", [curve.CONTROLLER])}))
    ns = namespace_inode(a.ns)

    def nc_in_namespace() -> list[int]:
        return [p for p in processes.pids_in_netns(ns) if processes.argv0(p) in ("nc", "nc.openbsd")]

    async def main() -> list[dict]:
        ctx = zmq.asyncio.Context()
        bus = ProbeBus(ctx, Fleet(admit=HOSTS), curve=keys)
        bus.bind(f"ipc://{tmp_path}/probes.sock")
        serving = asyncio.create_task(bus.serve())
        try:
            await asyncio.to_thread(a.run, str(VENV_BIN / "tcplab-probe"), "start", "--config",
                                    str(cfg), timeout=30)
            for _ in range(200):
                if bus.connected("thinkpad"):
                    break
                await asyncio.sleep(0.1)
            answers = [await bus.command("thinkpad", "connect", args, 10) for args in (
                {"ip": "-lk"}, {"ip": "8.8.8.8"}, {"ip": "10.90.0.2 -e/bin/sh"}, {"ip": "10.90.0.2", "port": 65536})]
            answers.append({"nc": nc_in_namespace()})
            server = netns_pair.b.popen("nc", "-l", "--", str(PORT), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
            try:
                await asyncio.sleep(0.3)  # b listens
                answers.append(await bus.command("thinkpad", "connect", {"ip": netns_pair.b.ip, "port": PORT}, 10))
                await asyncio.sleep(0.2)
                answers.append({"nc": [processes.cmdline(p) for p in nc_in_namespace()]})
                await bus.command("thinkpad", "abort", {}, 10)
            finally:
                server.kill()
                server.wait()
            return answers
        finally:
            await asyncio.to_thread(a.run, str(VENV_BIN / "tcplab-probe"), "stop", "--config", str(cfg), check=False,
                                    timeout=30)
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            bus.close(0)
            ctx.term()

    answers = asyncio.run(main())
    errors = [r.get("error") for r in answers[:4]]
    assert [r["ok"] for r in answers[:4]] == [False] * 4 and all("\n" not in e for e in errors)
    assert errors == ["connect ip '-lk' is not a plain unicast IPv4 address",
                      "LabAddressError: 8.8.8.8 is outside this host's lab network 10.90.0.0/24 (eth0)",
                      "connect ip '10.90.0.2 -e/bin/sh' is not a plain unicast IPv4 address",
                      "connect port 65536 is outside 1..65535"]
    assert answers[4] == {"nc": []}
    assert answers[5]["ok"] is True and answers[6] == {"nc": [f"/usr/bin/nc -- {netns_pair.b.ip} {PORT}"]}
    assert nc_in_namespace() == []
