"""A connect goes to a lab address of a known host: the controller's configuration (written from the
inventory) names each host's address, never what a probe says of itself."""

from __future__ import annotations

import asyncio

import pytest
import yaml
import zmq
import zmq.asyncio
from structlog.testing import capture_logs

from controller import config as controller_config
from controller.bus import ProbeBus
from controller.fleet import Fleet
from tcplab import wire


def _load(tmp_path, hosts):
    path = tmp_path / "controller.yml"
    path.write_text(yaml.safe_dump({"bind": "tcp://127.0.0.1:5555", "home": str(tmp_path), "runs_dir": str(tmp_path),
                                    "hosts": hosts}, sort_keys=False))
    return controller_config.load(path)


def test_the_configuration_maps_each_host_to_its_lab_address(tmp_path):
    cfg = _load(tmp_path, {"thinkpad": "10.90.0.1", "raspberrypi": "10.90.0.2"})
    assert cfg.hosts == ("thinkpad", "raspberrypi")
    assert dict(cfg.addresses) == {"thinkpad": "10.90.0.1", "raspberrypi": "10.90.0.2"}
    names_only = _load(tmp_path, ["thinkpad"])  # admitted, but no address: a connect to it is refused
    assert names_only.hosts == ("thinkpad",) and dict(names_only.addresses) == {}


@pytest.mark.parametrize("hosts, reason", [
    ({"thinkpad": "-lk"}, r"thinkpad's lab address is not a unicast IPv4 address: '-lk'"),
    ({"thinkpad": "10.90.0.01"}, "not a unicast IPv4 address"),
    ({"thinkpad": "10.90.0.1 "}, "not a unicast IPv4 address"),
    ({"thinkpad": "0.0.0.0"}, "not a unicast IPv4 address"), ({"thinkpad": "-lk"}, "not a unicast"),
    ({"thinkpad": "224.0.0.1"}, "not a unicast IPv4 address"),
    ({"thinkpad": "255.255.255.255"}, "not a unicast IPv4 address"),
    ({"thinkpad": 167377409}, "not a unicast IPv4 address"),
    ({"thinkpad": "10.90.0.1", "raspberrypi": "10.90.0.1"}, "raspberrypi has the lab address of another host"),
    ({"Bad name": "10.90.0.1"}, "hosts must map host names to lab addresses"),
    ("thinkpad", "hosts must map host names to lab addresses"),
])
def test_a_bad_lab_address_is_refused_with_one_line(tmp_path, hosts, reason):
    with pytest.raises(controller_config.ConfigError, match=reason) as err:
        _load(tmp_path, hosts)
    assert "\n" not in str(err.value)


# --- the bus: a connect's address is the configured one; a hello that says otherwise is refused ---

def test_the_bus_gives_the_configured_address_and_refuses_a_hello_that_disagrees(tmp_path):
    async def scenario():
        ctx = zmq.asyncio.Context()
        bus = ProbeBus(ctx, Fleet(admit=("thinkpad", "raspberrypi")))
        bus.addresses = {"thinkpad": "10.90.0.1", "raspberrypi": "10.90.0.2"}
        bus.bind(f"ipc://{tmp_path}/probes.sock")
        serving = asyncio.create_task(bus.serve())
        socks = []

        async def hello(host: str, lab_ip: str) -> dict | None:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.ROUTING_ID, host.encode())
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"ipc://{tmp_path}/probes.sock")
            socks.append(sock)
            session = wire.Session(host)
            await session.send(sock, "hello", {"pid": 1, "lab_ip": lab_ip, "port": 9090})
            if not await sock.poll(1000):
                return None
            return session.decode(await sock.recv())

        try:
            with capture_logs() as logs:
                assert await hello("raspberrypi", "8.8.8.8") is None          # no welcome
            assert not bus.connected("raspberrypi") and "raspberrypi" not in bus.fleet.probes
            assert bus.fleet.counters("raspberrypi")["link_frames_refused"] == 1
            assert {"event": "probe_lab_ip_refused", "probe": "raspberrypi", "said": "8.8.8.8",
                    "configured": "10.90.0.2", "log_level": "warning"} in logs
            assert bus.lab_ip("raspberrypi") == "10.90.0.2"                    # the config's, whoever says what
            assert (await hello("thinkpad", "10.90.0.1"))["type"] == "welcome"
            assert bus.connected("thinkpad") and bus.lab_ip("thinkpad") == "10.90.0.1"
            assert bus.lab_ip("ghost") is None
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            for s in socks:
                s.close()
            bus.close(0)
            ctx.term()
    asyncio.run(scenario())


def test_the_controller_hands_the_bus_its_configured_addresses(tmp_path):
    from controller.daemon import Controller
    cfg = _load(tmp_path, {"thinkpad": "10.90.0.1", "raspberrypi": "10.90.0.2"})
    controller = Controller(cfg)
    try:
        assert controller.bus.addresses == {"thinkpad": "10.90.0.1", "raspberrypi": "10.90.0.2"}
    finally:
        controller.bus.close(0)
        controller.control.close(0)
        controller.ctx.term()
