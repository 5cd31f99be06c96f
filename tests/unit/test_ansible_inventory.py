"""inventory/physical.yml keeps every value a user edits in one block at the top (``all: vars:``):
the hosts only refer to it, so pointing the file at other machines (or, in
tests/integration/test_ansible_physical.py, at the namespaces) is a matter of that block or ``-e``."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PHYSICAL = REPO / "inventory" / "physical.yml"
EDITED = {"tcplab_laptop_address", "tcplab_laptop_iface", "tcplab_laptop_user", "tcplab_pi_address",
          "tcplab_pi_iface", "tcplab_pi_user", "tcplab_become", "tcplab_controller_ip", "tcplab_pi_offline"}


def test_the_edit_block_holds_every_address_interface_user_and_become() -> None:
    inv = yaml.safe_load(PHYSICAL.read_text())
    top = inv["all"]["vars"]
    assert set(top) == EDITED
    assert (top["tcplab_laptop_iface"], top["tcplab_pi_iface"]) == ("wlp5s0", "wlan0")
    # and it is the first thing in the file after the comments
    first_key = next(ln for ln in PHYSICAL.read_text().splitlines() if ln and not ln.lstrip().startswith("#"))
    assert first_key == "all:"


def test_the_hosts_only_refer_to_the_edit_block() -> None:
    inv = yaml.safe_load(PHYSICAL.read_text())
    lab = inv["all"]["children"]["lab"]
    per_host = {"thinkpad": "laptop", "raspberrypi": "pi"}
    for host, who in per_host.items():
        h = lab["hosts"][host]
        assert h["ansible_host"] == f"{{{{ tcplab_{who}_address }}}}"
        assert h["ansible_user"] == f"{{{{ tcplab_{who}_user }}}}"
        assert h["tcplab_probe_lab_iface"] == f"{{{{ tcplab_{who}_iface }}}}"
    assert lab["vars"]["ansible_become"] == "{{ tcplab_become }}"
    # no address, interface name or user is written anywhere but in the block
    below = PHYSICAL.read_text().split("children:", 1)[1]
    values = "\n".join(ln.split("#")[0] for ln in below.splitlines())  # comments may name them
    assert not re.search(r"\b\d+\.\d+\.\d+\.\d+\b|wlp5s0|wlan0|: pi\b", values), values


def test_the_pi_is_offline_as_the_edit_block_says() -> None:
    inv = yaml.safe_load(PHYSICAL.read_text())["all"]
    pi = inv["children"]["lab"]["hosts"]["raspberrypi"]
    assert inv["vars"]["tcplab_pi_offline"] is True
    assert pi["tcplab_probe_offline"] == "{{ tcplab_pi_offline }}"
    assert "tcplab_probe_offline" not in inv["children"]["lab"]["hosts"]["thinkpad"]
