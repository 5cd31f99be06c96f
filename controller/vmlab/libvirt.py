"""What the Vagrant lab needs from libvirt on this machine, and putting it back afterwards.

- the daemons: started by hand (``virtlogd -d``, ``libvirtd -d``) where nothing runs them (this
  machine's PID 1 is not systemd), and stopped again by pid when we started them;
- a storage pool of the project's own (``tcplab``, under the box cache), so the VMs' disks never
  land in someone's ``default`` pool;
- the box, added to Vagrant under ``tcplab/bookworm64`` when the built one is new (its recipe is
  recorded beside Vagrant's boxes), with the pool's copy of an older box's image removed (Vagrant
  names that copy by box name and version, and a rebuilt local box keeps version 0);
- libvirtd adds empty ``LIBVIRT_*`` chains to iptables and leaves them behind: the ones it added
  during our run are removed.

Every function is idempotent; each failure is a :class:`VmLabError` with a one-line reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from tcplab.errors import TcplabError

log = structlog.get_logger(__name__)

URI = "qemu:///system"
POOL = "tcplab"
BOX = "tcplab/bookworm64"
DAEMONS = (("virtlogd", "/run/virtlogd.pid"), ("libvirtd", "/run/libvirtd.pid"))


class VmLabError(TcplabError):
    """The Vagrant lab's host side could not be prepared or removed."""


@dataclass
class HostState:
    """What we changed on the host, so that :func:`restore` undoes exactly that."""
    started_pids: list[int] = field(default_factory=list)
    chains_before: set[tuple[str, str]] | None = None  # None: not looked at yet


def vagrant_env(cache: Path) -> dict[str, str]:
    """Vagrant's environment for tcplab: its own home (boxes), no update checks."""
    return {"VAGRANT_HOME": str(cache / "vagrant.d"), "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_DEFAULT_PROVIDER": "libvirt", "LIBVIRT_DEFAULT_URI": URI}


def _virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise VmLabError(f"virsh {' '.join(args)} failed: {(r.stderr or r.stdout).strip()}")
    return r


def libvirt_chains() -> set[tuple[str, str]]:
    """(table, chain) of every LIBVIRT_* chain in iptables."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    table, found = "", set()
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":LIBVIRT_"):
            found.add((table, line[1:].split()[0]))
    return found


def prepare(state: HostState) -> None:
    """Start the daemons when none answer (recording their pids in ``state``)."""
    if state.chains_before is None:  # an earlier up's view is the one that counts
        state.chains_before = libvirt_chains()
    state.started_pids = [pid for pid in state.started_pids if _alive(pid)]
    if _virsh("version", check=False).returncode == 0:
        log.info("libvirt_running")
        return
    for name, pidfile in DAEMONS:
        r = subprocess.run([name, "-d"], capture_output=True, text=True)
        if r.returncode != 0:
            raise VmLabError(f"{name} -d failed: {(r.stderr or r.stdout).strip()}")
        pid = _read_pid(Path(pidfile))
        if pid:
            state.started_pids.append(pid)
        log.info("libvirt_daemon_started", daemon=name, pid=pid)
    deadline = time.monotonic() + 30
    while _virsh("version", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise VmLabError("libvirtd started but did not answer on qemu:///system within 30 s")
        time.sleep(0.5)


def ensure_pool(path: Path) -> None:
    if _virsh("pool-info", POOL, check=False).returncode != 0:
        path.mkdir(parents=True, exist_ok=True)
        _virsh("pool-define-as", POOL, "dir", "--target", str(path))
    if "running" not in _virsh("pool-info", POOL).stdout:
        _virsh("pool-start", POOL)


def ensure_box(box_file: Path, recipe: str, env: dict[str, str]) -> bool:
    """Add the box to Vagrant when it is not the current one; True when it was (re)added."""
    marker = Path(env["VAGRANT_HOME"]) / "tcplab-box-recipe"
    listed = subprocess.run(["vagrant", "box", "list"], capture_output=True, text=True,
                            env={**os.environ, **env}).stdout
    if BOX in listed and marker.is_file() and marker.read_text().strip() == recipe:
        return False
    r = subprocess.run(["vagrant", "box", "add", "--force", "--name", BOX, str(box_file)],
                       capture_output=True, text=True, env={**os.environ, **env})
    if r.returncode != 0:
        raise VmLabError(f"vagrant box add {box_file} failed: {(r.stderr or r.stdout).strip()[-300:]}")
    # the pool's copy of the previous box's image would be reused under the same name: drop it
    vols = _virsh("vol-list", POOL, check=False).stdout.split()
    for vol in vols:
        if vol.startswith(BOX.replace("/", "-VAGRANTSLASH-")):
            _virsh("vol-delete", "--pool", POOL, vol, check=False)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(recipe + "\n")
    log.info("box_added", box=BOX, file=str(box_file))
    return True


def remove_networks(names: tuple[str, ...] = ("tcplab-lab", "tcplab-mgmt")) -> list[str]:
    """The libvirt networks the Vagrantfile made (vagrant destroy normally removes them)."""
    removed = []
    for name in names:
        if _virsh("net-info", name, check=False).returncode == 0:
            _virsh("net-destroy", name, check=False)
            _virsh("net-undefine", name, check=False)
            removed.append(name)
    return removed


def restore(state: HostState) -> list[str]:
    """Undo :func:`prepare`: libvirt's new iptables chains, then the daemons we started."""
    undone = [f"network {n}" for n in remove_networks()]
    for table, chain in sorted(libvirt_chains() - (state.chains_before or set())):
        # the built-in chains jump to it: drop those rules first, then the chain
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        for rule in rules.splitlines():
            parts = rule.split()
            if parts[:1] == ["-A"] and f"-j {chain}" in rule:
                subprocess.run(["iptables", "-t", table, "-D", *parts[1:]], capture_output=True)
        subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True)
        if subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True).returncode == 0:
            undone.append(f"iptables {table} {chain}")
    for pid in reversed(state.started_pids):
        try:
            os.kill(pid, signal.SIGTERM)
            undone.append(f"pid {pid}")
        except ProcessLookupError:
            pass
    log.info("vmlab_host_restored", undone=undone)
    return undone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _read_pid(path: Path, timeout: float = 10.0) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            time.sleep(0.1)
    return None
