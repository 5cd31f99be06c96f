"""The testbed's pure parts: the spec and the sshd config it implies (no namespaces needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller.testbed import TestbedError, TestbedSpec
from controller.testbed.spec import PROBE_CACHE
from controller.testbed.sshd import config_text


def test_defaults_are_the_lab_names(tmp_path, monkeypatch):
    monkeypatch.setenv("TCPLAB_HOME", str(tmp_path))
    spec = TestbedSpec()
    assert spec.home == tmp_path
    assert spec.controller_ip == "10.90.0.254"
    assert [(h.name, h.ip, h.netns, h.veth) for h in spec.host_specs()] == [
        ("thinkpad", "10.90.0.1", "tcplab-thinkpad", "tcplab1"),
        ("raspberrypi", "10.90.0.2", "tcplab-raspberrypi", "tcplab2")]
    assert spec.link_names() == ["tcplab0", "tcplab1", "tcplab2"]


@pytest.mark.parametrize("kw", [{"hosts": ()}, {"hosts": ("a", "a")}, {"hosts": ("Bad name",)},
                                {"subnet": "10.90.0.0/33"}, {"bridge": "br0"},
                                {"subnet": "10.90.0.0/30", "hosts": ("a", "b", "c")}])
def test_bad_specs_are_refused(tmp_path, kw):
    with pytest.raises(TestbedError):
        TestbedSpec(home=tmp_path, **kw)


def test_sshd_config_pins_address_keys_and_auth(tmp_path):
    spec = TestbedSpec(home=tmp_path)
    host = spec.host_specs()[0]
    cfg = config_text(spec, host).splitlines()
    for line in ("ListenAddress 10.90.0.1:22", f"PidFile {host.pid_file}", f"HostKey {host.host_key}",
                 f"AuthorizedKeysFile {spec.authorized_keys}", "PermitRootLogin prohibit-password",
                 "PasswordAuthentication no", "UsePAM no", "UseDNS no", "SetEnv SHLVL=1"):
        assert line in cfg
    # sshd checks authorized_keys' modes and its whole way up, which is root's own (/run/tcplab),
    # wherever the home is (a home under a sticky /tmp too)
    assert "StrictModes yes" in cfg and spec.authorized_keys.parent.parent == Path("/run/tcplab")


def test_the_netns_inventory_keeps_the_probes_code_where_purge_removes_it():
    """inventory/netns.yml's install directory is the testbed's probe cache: `down` keeps it (the next
    film reuses it), `purge` removes it, and it is named tcplab under /var/cache."""
    inv = yaml.safe_load((Path(__file__).resolve().parents[2] / "inventory" / "netns.yml").read_text())
    lab = inv["all"]["children"]["lab"]["vars"]
    assert lab["tcplab_probe_install_dir"] == PROBE_CACHE + "/{{ inventory_hostname }}"
    assert TestbedSpec().probe_cache == Path(PROBE_CACHE) and PROBE_CACHE.startswith("/var/cache/tcplab/")


def test_a_test_lab_from_the_same_spec_has_names_of_its_own_and_no_root_address(tmp_path):
    from tests.netns import pair_spec
    spec = pair_spec("1a2b")
    assert [(h.name, h.ip, h.netns, h.veth) for h in spec.host_specs()] == [
        ("t1a2ba", "10.90.0.1", "tcplab-t1a2ba", "tcplab1a2b1"),
        ("t1a2bb", "10.90.0.2", "tcplab-t1a2bb", "tcplab1a2b2")]
    assert spec.controller_ip is None and spec.link_names() == ["tcplabt1a2b", "tcplab1a2b1", "tcplab1a2b2"]
    assert not set(spec.link_names()) & set(TestbedSpec(home=tmp_path).link_names())


@pytest.mark.parametrize("kw", [{"link_prefix": "veth"}, {"link_prefix": "tcplab123456789"},
                                {"bridge": "tcplab1"}])
def test_bad_link_names_are_refused(tmp_path, kw):
    with pytest.raises(TestbedError):
        TestbedSpec(home=tmp_path, **kw)
