"""Install-set names, the markers a target sees, and which requirements Debian serves instead."""

from __future__ import annotations

import pytest

from controller.wheelhouse import WheelhouseError, bundle, pypi, targets

# the project's Requires-Dist lines, as the wheel's METADATA has them
REQUIRES = [
    "pyzmq>=24", "msgpack>=1.0", "pyroute2>=0.7", "scapy>=2.5", "structlog>=23", "pyyaml>=6",
    'fnfqueue>=1.1; platform_machine == "x86_64"',
    'ansible-core>=2.14; extra == "control"',
]


def test_a_set_name_says_cpu_python_release_and_offline():
    t = targets.parse("armv7l-py3.11-bookworm-offline")
    assert (t.machine, t.python, t.release, t.offline, t.debian_arch) == ("armv7l", "3.11", "bookworm", True, "armhf")
    assert t.name == "armv7l-py3.11-bookworm-offline"
    assert not targets.parse("aarch64-py3.11-bookworm").offline


@pytest.mark.parametrize("name, words", [
    ("armv6l-py3.11-bookworm", "no probe install for CPU 'armv6l'"),
    ("aarch64-3.11-bookworm", "is not <machine>-py<X.Y>-<release>"),
    ("armv7l-py3.11-other", "PyPI has no armv7l wheel of pyzmq"),
    ("x86_64-py3.12-other-offline", "it has no internet"),
    ("armv7l-py3.13-bookworm", "for python 3.11, not 3.13"),
])
def test_a_set_tcplab_cannot_serve_is_one_clear_line(name, words):
    with pytest.raises(WheelhouseError, match=words) as e:
        targets.parse(name)
    assert "\n" not in str(e.value)


def test_platform_tags_run_down_from_the_release_glibc():
    tags = targets.parse("aarch64-py3.11-bookworm").pip_platforms()
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_17_aarch64" in tags
    assert "manylinux_2_37_aarch64" not in tags and tags[-2:] == ["manylinux2014_aarch64", "linux_aarch64"]
    other = targets.parse("x86_64-py3.12-other").pip_platforms()  # e.g. an Ubuntu laptop
    assert other[0] == "manylinux_2_28_x86_64"  # pyzmq 27 ships manylinux_2_28 wheels only


def test_markers_are_the_targets_not_this_machines():
    on_x86 = [r.name for r in pypi.for_target(REQUIRES, targets.parse("x86_64-py3.11-bookworm"))]
    on_pi = [r.name for r in pypi.for_target(REQUIRES, targets.parse("aarch64-py3.11-bookworm"))]
    assert "fnfqueue" in on_x86 and "fnfqueue" not in on_pi
    assert "ansible-core" not in on_x86  # an extra's requirement is not the probe's


def test_armv7l_takes_zmq_msgpack_yaml_from_debian_and_sees_system_packages():
    t = targets.parse("armv7l-py3.11-bookworm")
    wheels, debs = pypi.split(pypi.for_target(REQUIRES, t), t)
    assert sorted(debs) == ["python3-msgpack", "python3-yaml", "python3-zmq"]
    assert [r.name for r in wheels] == ["pyroute2", "scapy", "structlog"]
    plan = bundle.plan(t, REQUIRES, apt=["tcpdump"], extra=[])
    assert plan["system_site_packages"] is True
    assert plan["apt"] == ["python3-msgpack", "python3-yaml", "python3-zmq"]  # online: not tcpdump
    assert "pyzmq>=24" in plan["requirements"]  # still required: Debian's must satisfy it


def test_an_offline_set_carries_the_system_packages_and_changes_its_fingerprint():
    online = bundle.plan(targets.parse("aarch64-py3.11-bookworm"), REQUIRES, ["tcpdump"], [])
    offline = bundle.plan(targets.parse("aarch64-py3.11-bookworm-offline"), REQUIRES, ["tcpdump"], [])
    assert online["apt"] == [] and offline["apt"] == ["tcpdump"]
    assert online["system_site_packages"] is False
    assert bundle.fingerprint_of(online) != bundle.fingerprint_of(offline)
    assert bundle.fingerprint_of(online) == bundle.fingerprint_of(dict(online))


def test_the_command_refuses_a_bad_set_before_building_anything(tmp_path, capsys):
    from controller.wheelhouse.__main__ import main

    wh = tmp_path / "wh"
    assert main(["prepare", "--wheelhouse", str(wh), "--set", "armv6l-py3.11-bookworm"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tcplab-wheelhouse: error: install set 'armv6l-py3.11-bookworm'") and err.count("\n") == 1
    assert not (wh / "project").exists()


def test_check_mode_on_a_fresh_control_node_writes_nothing_and_names_nothing(tmp_path, capsys):
    import json

    from controller.wheelhouse.__main__ import main

    wh = tmp_path / "wh"
    assert main(["prepare", "--check", "--wheelhouse", str(wh), "--set", "aarch64-py3.11-bookworm"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "changed": True, "wheel": None, "sets": {"aarch64-py3.11-bookworm": None}}
    assert not wh.exists()
