"""One sshd per lab host, inside its namespace, answering ``hostname`` with the host's name.

The files live under ``$TCPLAB_HOME/testbed`` (0700, in a home checked and made by
:mod:`controller.testbed.safepath`: no directory on its way another user can write to, no planted
symlink followed): the controller's client key pair (``id_ed25519``), ``known_hosts`` (each host
key under the host's IP and name, so ssh runs with ``StrictHostKeyChecking=yes``) and per host
``<host>/sshd_config``, ``ssh_host_ed25519_key``, ``sshd.pid`` and ``sshd.log``. ``authorized_keys``
(the client key's public half) is in ``spec.sshd_dir`` under /run/tcplab, root's own, so sshd always
runs with ``StrictModes yes`` (which refuses any group/world-writable directory on the file's way,
a sticky /tmp included), wherever the home is.

sshd is started as ``ip netns exec tcplab-<host> unshare --uts -- sh -c 'hostname "$1" &&
exec sshd -f "$2" -E "$3"' sh <host> <cfg> <log>``: the names travel as positional
arguments, never spliced into the shell string. sshd daemonizes and writes its pid file
after it listens; a running sshd counts as ours only if its command line names our config
and it lives in the namespace that exists now (a namespace rebuilt under it means restart).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import structlog

from controller.testbed import processes
from controller.testbed.network import namespace_inode
from controller.testbed.safepath import ensure_dir
from controller.testbed.spec import HostSpec, TestbedError, TestbedSpec
from tcplab.files import atomic_write

log = structlog.get_logger(__name__)

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
START_TIMEOUT = 10.0


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    """``text`` in ``path`` (temp file and rename: a link planted at the name is replaced, never followed)."""
    ensure_dir(path.parent, 0o700)
    try:
        if path.read_text() == text:
            if path.stat().st_mode & 0o777 != mode:
                path.chmod(mode)
            return False
    except OSError:
        pass
    atomic_write(path, text, mode=mode)
    return True


def ensure_key(path: Path, comment: str) -> bool:
    """An ed25519 key pair at ``path`` (and ``path.pub``); made only if missing."""
    if path.exists() and path.with_name(path.name + ".pub").exists():
        return False
    ensure_dir(path.parent, 0o700)
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    log.info("testbed_key_created", path=str(path))
    return True


def public_key(path: Path) -> str:
    return path.with_name(path.name + ".pub").read_text().strip()


def ensure_client_files(spec: TestbedSpec) -> bool:
    """Client key, authorized_keys and every host key plus known_hosts."""
    ensure_dir(spec.home, 0o755)
    ensure_dir(spec.dir, 0o700)
    ensure_dir(spec.sshd_dir, 0o700)
    changed = ensure_key(spec.client_key, "tcplab-controller")
    changed |= write_if_changed(spec.authorized_keys, public_key(spec.client_key) + "\n", 0o600)
    lines = []
    for host in spec.host_specs():
        changed |= ensure_key(host.host_key, f"tcplab-{host.name}")
        keytype, blob = public_key(host.host_key).split()[:2]
        lines.append(f"{host.ip},{host.name} {keytype} {blob}\n")
    changed |= write_if_changed(spec.known_hosts, "".join(lines), 0o644)
    return changed


def config_text(spec: TestbedSpec, host: HostSpec) -> str:
    return "\n".join([
        f"# tcplab embedded testbed: sshd of {host.name} in netns {host.netns}; written by tcplab lab up",
        f"ListenAddress {host.ip}:22",
        f"PidFile {host.pid_file}",
        f"HostKey {host.host_key}",
        f"AuthorizedKeysFile {spec.authorized_keys}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "UseDNS no",
        # sshd checks the modes of authorized_keys and of every directory on its way (sshd_dir)
        "StrictModes yes",
        "PrintMotd no",
        "X11Forwarding no",
        "AcceptEnv LANG LC_*",
        # bash sources ~/.bashrc for a command sent over ssh when it is the first shell (SHLVL unset):
        # this machine's root's .bashrc (pyenv init, cargo) costs 0.1 s per command, and Ansible sends
        # several per task. With SHLVL=1 the login shell counts as nested and skips it, as a fresh Pi's
        # root would (its .bashrc does nothing for a non-interactive shell); PATH is sshd's default.
        "SetEnv SHLVL=1",
        f"Subsystem sftp {SFTP_SERVER}",
        "",
    ])


class HostSshd:
    """The sshd of one lab host."""

    def __init__(self, spec: TestbedSpec, host: HostSpec):
        self.spec, self.host = spec, host

    def pid(self) -> Optional[int]:
        """Pid of our sshd if it runs with our config in the current namespace."""
        pid = processes.read_pid(self.host.pid_file)
        if not processes.alive_as(pid, "sshd", str(self.host.sshd_config)):
            return None
        ns = namespace_inode(self.host.netns)
        return pid if ns is not None and processes.netns_inode(pid) == ns else None

    def ensure(self, config_changed: bool) -> bool:
        running = self.pid()
        if running and not config_changed:
            return False
        self.stop()
        self.start()
        return True

    def start(self) -> int:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self.host.pid_file.unlink(missing_ok=True)
        if _port_open(self.host.ip, 22):
            raise TestbedError(f"{self.host.ip}:22 is already served by another sshd "
                               f"({self._other_listener()}); a testbed with another TCPLAB_HOME? "
                               "run `tcplab lab down --home <that home>` first")
        _run([SSHD, "-t", "-f", str(self.host.sshd_config)])
        _run(["ip", "netns", "exec", self.host.netns, "unshare", "--uts", "--",
              "sh", "-c", 'hostname "$1" && exec "$2" -f "$3" -E "$4"', "sh",
              self.host.name, SSHD, str(self.host.sshd_config), str(self.host.log_file)])
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid and _port_open(self.host.ip, 22):
                log.info("testbed_sshd_started", host=self.host.name, pid=pid, ip=self.host.ip)
                return pid
            time.sleep(0.05)
        raise TestbedError(f"sshd for {self.host.name} did not come up on {self.host.ip}:22 "
                           f"within {START_TIMEOUT:.0f}s (see {self.host.log_file})")

    def _other_listener(self) -> str:
        ns = namespace_inode(self.host.netns)
        for pid in processes.pids_in_netns(ns) if ns is not None else []:
            cmd = processes.cmdline(pid) or ""
            if "sshd" in cmd and "listener" in cmd:
                return f"pid {pid}: {cmd.split(' [')[0]}"
        return "unknown process"

    def stop(self) -> bool:
        """Stop our sshd and its session processes, whichever namespace they are in."""
        pid = processes.read_pid(self.host.pid_file)
        if not processes.alive_as(pid, "sshd", str(self.host.sshd_config)):
            self.host.pid_file.unlink(missing_ok=True)
            return False
        sessions = processes.descendants(pid)
        processes.terminate([pid, *sessions], why=f"sshd of {self.host.name}")
        self.host.pid_file.unlink(missing_ok=True)
        log.info("testbed_sshd_stopped", host=self.host.name, pid=pid, sessions=len(sessions))
        return True


def _port_open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise TestbedError(f"{argv[0]} failed: {err[-1] if err else f'exit {proc.returncode}'}")
