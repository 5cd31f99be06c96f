"""The embedded testbed's lifecycle: ``up``, ``down`` and ``status``.

``up`` is idempotent: every piece is read back first and only a missing, dead or different
piece is (re)made, so a second ``up`` reports ``changed: false`` and restarts nothing.
``down`` works from whatever is left, also after a crash: it stops processes recorded in pid
files (checking ``/proc/<pid>/cmdline`` first), then anything still running inside our
namespaces, deletes the namespaces and links by their exact names, and removes
``$TCPLAB_HOME/testbed`` and ``$TCPLAB_HOME/hosts``. It keeps the probes' cache
(``spec.probe_cache``, /var/cache/tcplab/probes: each lab host's install set and virtualenv, no
process, no network object), which the next film reuses when the install set did not change.
``purge`` is ``down`` and the cache. Calls are serialised by the lock (controller/testbed/lock.py:
root's own file, waited for ``wait`` seconds, then refused naming its holder).

The home is checked before anything is built or removed (controller/testbed/safepath.py): ``up``
refuses a home another local user could change (world-writable, theirs, a symlink they planted),
with one line and nothing made. ``down`` with such a home still removes the namespaces, the links
and what runs in them (found by their fixed names, not from files), but neither reads a pid file
there nor removes anything below it, and says so.
"""

from __future__ import annotations

import contextlib
import shutil
from typing import Any, Iterator

import structlog

from controller.testbed import lock, processes
from controller.testbed.network import LabNetwork, namespace_inode
from controller.testbed.safepath import UnsafePath, check_dir, ensure_dir
from controller.testbed.spec import TestbedError, TestbedSpec
from controller.testbed.sshd import HostSshd, config_text, ensure_client_files, write_if_changed

log = structlog.get_logger(__name__)

# pid file stem -> what its process's command line must contain before we signal it
PID_FILE_NEEDLES = {"sshd": "sshd", "probe": "probe", "controller": "controller"}
NC_PROGRAMS = {"nc", "nc.openbsd", "netcat"}  # for pid files named nc*


def up(spec: TestbedSpec | None = None, wait: float = lock.WAIT_S) -> dict[str, Any]:
    spec = spec or TestbedSpec()
    with _locked("lab up", wait):
        ensure_dir(spec.home, 0o755)  # before anything is built: an unsafe home is refused here
        try:
            changed = LabNetwork(spec).ensure()
            changed |= ensure_client_files(spec)
            for host in spec.host_specs():
                cfg_changed = write_if_changed(host.sshd_config, config_text(spec, host), 0o600)
                changed |= cfg_changed
                changed |= HostSshd(spec, host).ensure(cfg_changed)
        except BaseException:  # e.g. another home's testbed is up: no sshd of ours reads sshd_dir then
            if not any(HostSshd(spec, h).pid() for h in spec.host_specs()):
                shutil.rmtree(spec.sshd_dir, ignore_errors=True)
            raise
        result = {"changed": changed, **_describe(spec)}
    log.info("testbed_up", changed=changed, home=str(spec.home))
    return result


def down(spec: TestbedSpec | None = None, wait: float = lock.WAIT_S) -> dict[str, Any]:
    spec = spec or TestbedSpec()
    with _locked("lab down", wait):
        unsafe = _unsafe_home(spec)
        if unsafe is not None:  # what the fixed names find goes; nothing of the home is read or removed
            _stop_namespace_residents(spec)
            LabNetwork(spec).remove()
            raise UnsafePath(f"{unsafe}: removed the namespaces and links, left {spec.home} alone")
        changed = False
        for host in spec.host_specs():
            changed |= HostSshd(spec, host).stop()
        changed |= _stop_pid_files(spec)
        changed |= _stop_namespace_residents(spec)
        changed |= LabNetwork(spec).remove()
        # The controller's home goes too: its daemon was stopped above with the other pid files.
        for d in (spec.dir, spec.home / "hosts", spec.home / "controller", spec.sshd_dir):
            if d.exists():
                shutil.rmtree(d)
                log.info("testbed_dir_removed", path=str(d))
                changed = True
        with contextlib.suppress(OSError):  # only if nothing else lives there
            spec.home.rmdir()
            changed = True
    log.info("testbed_down", changed=changed, home=str(spec.home))
    return {"changed": changed}


def purge(spec: TestbedSpec | None = None, wait: float = lock.WAIT_S) -> dict[str, Any]:
    """``down``, then the probes' cache: nothing of the lab is left on the machine."""
    spec = spec or TestbedSpec()
    changed = down(spec, wait)["changed"]
    with _locked("lab purge", wait):
        if spec.probe_cache.exists():
            check_dir(spec.probe_cache)  # never removed through a stranger's directory or link
            shutil.rmtree(spec.probe_cache)
            log.info("testbed_probe_cache_removed", path=str(spec.probe_cache))
            changed = True
        with contextlib.suppress(OSError):  # /var/cache/tcplab, only if nothing else lives there
            spec.probe_cache.parent.rmdir()
    return {"changed": changed}


def status(spec: TestbedSpec | None = None) -> dict[str, Any]:
    spec = spec or TestbedSpec()
    net = LabNetwork(spec).state()
    desc = _describe(spec)
    for host in spec.host_specs():
        h = desc["hosts"][host.name]
        h.update(net["hosts"][host.name])
        h["sshd_running"] = h["sshd_pid"] is not None
    hosts_ok = all(h["netns_exists"] and h["eth0_up"] and h["veth_on_bridge"] and h["sshd_running"]
                   and not h["default_route"] for h in desc["hosts"].values())
    desc["bridge"] = net["bridge"]
    desc["up"] = bool(net["bridge"]["up"] and hosts_ok)
    return desc


def _describe(spec: TestbedSpec) -> dict[str, Any]:
    return {
        "home": str(spec.home),
        "bridge": spec.bridge,
        "controller_ip": spec.controller_ip,
        "identity_file": str(spec.client_key),
        "known_hosts": str(spec.known_hosts),
        "ssh_args": spec.ssh_args(),
        "hosts": {h.name: {"ip": h.ip, "netns": h.netns, "user": "root",
                           "sshd_pid": HostSshd(spec, h).pid()} for h in spec.host_specs()},
    }


def _stop_pid_files(spec: TestbedSpec) -> bool:
    """Probes, nc endpoints and the controller, from their pid files under TCPLAB_HOME."""
    changed = False
    pid_files = sorted((spec.home / "hosts").glob("*/*.pid")) + sorted(
        (spec.home / "controller").glob("*.pid"))
    for pid_file in pid_files:
        pid = processes.read_pid(pid_file)
        needle = next((v for k, v in PID_FILE_NEEDLES.items() if pid_file.stem.startswith(k)),
                      "tcplab")
        ours = (processes.argv0(pid) in NC_PROGRAMS if pid and pid_file.stem.startswith("nc")
                else processes.alive_as(pid, needle))
        if ours:
            processes.terminate([pid], why=str(pid_file))
            changed = True
        else:
            log.info("testbed_pid_file_stale", path=str(pid_file), pid=pid)
        pid_file.unlink(missing_ok=True)
    return changed


def _stop_namespace_residents(spec: TestbedSpec) -> bool:
    """Whatever still runs inside our namespaces (e.g. an sshd whose pid file was lost)."""
    pids = []
    for host in spec.host_specs():
        ino = namespace_inode(host.netns)
        if ino is not None:
            pids += processes.pids_in_netns(ino)
    return bool(processes.terminate(pids, why="resident of a testbed namespace")) if pids else False


def _unsafe_home(spec: TestbedSpec) -> str | None:
    """Why the home cannot be trusted (None: it can, or it is gone)."""
    if not spec.home.exists() and not spec.home.is_symlink():
        return None
    try:
        check_dir(spec.home)
    except UnsafePath as e:
        return str(e)
    return None


@contextlib.contextmanager
def _locked(what: str, wait: float) -> Iterator[None]:
    try:
        with lock.held(what, wait):
            yield
    except OSError as e:
        raise TestbedError(f"{type(e).__name__}: {e}") from e
