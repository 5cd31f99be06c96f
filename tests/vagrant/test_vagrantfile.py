"""The Vagrantfile on its own, without booting anything: it validates for both providers, and its
settings come from where the issue says they do (the inventory's addresses, the environment)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from controller.vmlab import libvirt

pytestmark = pytest.mark.vagrant
REPO = Path(__file__).resolve().parents[2]


def validate(tmp_path: Path, provider: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, **libvirt.vagrant_env(tmp_path), "VAGRANT_DEFAULT_PROVIDER": provider, **env}
    return subprocess.run(["vagrant", "validate"], cwd=REPO, capture_output=True, text=True, env=full, timeout=120)


def test_validates_for_libvirt(tmp_path):
    r = validate(tmp_path, "libvirt", TCPLAB_VAGRANT_DRIVER="qemu", TCPLAB_VAGRANT_BOX=libvirt.BOX)
    assert r.returncode == 0 and "validated successfully" in r.stdout, r.stdout + r.stderr


def test_validates_for_virtualbox(tmp_path):
    """VirtualBox is not packaged for Debian 12, so it cannot be installed here. Vagrant's virtualbox
    provider asks `VBoxManage --version` before it validates: a stand-in answers that one question
    (and records that nothing else was asked), so the provider's own config checks run for real."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    fake = bindir / "VBoxManage"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n[ "$1" = --version ] && echo 7.0.14r161095\n')
    fake.chmod(0o755)
    r = validate(tmp_path, "virtualbox", PATH=f"{bindir}:{os.environ['PATH']}")
    assert r.returncode == 0 and "validated successfully" in r.stdout, r.stdout + r.stderr
    assert calls.read_text().split() == ["--version"]


def test_a_bad_setting_is_named(tmp_path):
    r = validate(tmp_path, "libvirt", TCPLAB_VAGRANT_MEMORY="lots")
    assert r.returncode != 0 and "lots" in (r.stdout + r.stderr)


def test_addresses_come_from_the_inventory_only():
    vagrantfile = (REPO / "Vagrantfile").read_text()
    code = "\n".join(line for line in vagrantfile.splitlines() if not line.lstrip().startswith("#"))
    assert "192.168.56.1" not in code  # not the VMs' nor the controller's: read from inventory/vagrant.yml
    assert 'File.join(__dir__, "inventory", "vagrant.yml")' in code
