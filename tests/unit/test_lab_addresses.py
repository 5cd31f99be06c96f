"""A connect goes to a lab address of a known host: the controller's configuration (written from the
inventory) names each host's address, never what a probe says of itself."""

from __future__ import annotations

import pytest
import yaml

from controller import config as controller_config


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
