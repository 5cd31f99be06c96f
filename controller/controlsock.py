"""Where the CLI's control socket lives: ``HOME/control/control.sock``, the directory 0700 and the
socket 0600, owned by the controller's user, whatever the umask.

Whoever can connect to the control socket can start a run (shaping, nc on the lab hosts) and read
the fleet's state; whoever can put a socket in its place can feed the CLI what it prints. So:

- the controller (:func:`prepare`, then :func:`secure` after binding) makes the directory, or takes
  the one there if it is a real directory of its own (``lstat``: a symlink or a stranger's is
  refused, never followed or chmod-ed), sets it 0700, removes a socket a killed controller left,
  and sets the new socket 0600 (the directory already keeps everyone else out in between);
- the CLI (:func:`check`) talks to the socket only when both are its own user's or root's and
  neither is open to group or others.

Every refusal is a :class:`ControlSocketError` with one line naming the path, its owner and mode.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from tcplab.errors import TcplabError
from tcplab.files import UnsafeDir, private_dir

DIR, SOCKET = "control", "control.sock"


class ControlSocketError(TcplabError, OSError):
    """The control socket's place is not private; ``strerror`` is the one-line reason."""

    def __init__(self, message: str):
        super().__init__(errno.EPERM, message)

    def __str__(self) -> str:
        return self.strerror


def path(home: Path) -> Path:
    """The control socket of the controller whose home is ``home``."""
    return Path(home) / DIR / SOCKET


def _ours(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def _describe(p: Path, st: os.stat_result) -> str:
    return f"{p} (uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})"


def prepare(sock: Path) -> None:
    """The controller's side, before binding ``sock``: its directory private, no stale socket."""
    try:
        private_dir(sock.parent, "control socket directory")
    except UnsafeDir as e:
        raise ControlSocketError(str(e)) from None
    try:
        old = os.lstat(sock)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(old.st_mode):
        raise ControlSocketError(f"{_describe(sock, old)} is not a socket; not removed")
    sock.unlink()  # a socket a killed controller left


def secure(sock: Path) -> None:
    """The controller's side, once bound: the socket 0600."""
    os.chmod(sock, 0o600)


def check(sock: Path) -> None:
    """The CLI's side: ``sock`` and its directory are root's or ours, open to nobody else."""
    for p, want in ((sock.parent, stat.S_ISDIR), (sock, stat.S_ISSOCK)):
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            raise ControlSocketError(f"no controller control socket at {sock} (is tcplab-controller running?)") \
                from None
        except PermissionError:
            raise ControlSocketError(f"cannot reach the control socket {sock}: permission denied (run as root)") \
                from None
        if not want(st.st_mode) or not _ours(st) or st.st_mode & 0o077:
            raise ControlSocketError(f"{_describe(p, st)} is not private to the controller's user; not talking to it")
