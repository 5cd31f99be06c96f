"""The testbed's lock: one ``lab up``/``down``/``purge`` at a time on this machine (the namespaces,
bridge and sshds have fixed names).

The lock file is ``/run/tcplab/testbed.lock``, in root's own directory (checked and made by
:mod:`controller.testbed.safepath`), opened with ``O_NOFOLLOW`` and mode 0600 and checked after
opening (a regular file of ours, no one else may read it): another local user can neither plant
a symlink there nor open the file to hold its ``flock`` (in the sticky, world-writable /run/lock
both were possible: ``lab up`` blocked forever, or root's open followed a link). The lock is
waited for ``wait`` seconds, then refused naming its holder: the kernel's (``/proc/locks``) and
what the holder wrote into the file after taking it (``<pid> <what>``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from pathlib import Path
from typing import Iterator

import structlog

from controller.testbed import processes
from controller.testbed.safepath import RUNTIME, UnsafePath, ensure_dir
from controller.testbed.spec import TestbedError

log = structlog.get_logger(__name__)

LOCK_FILE = RUNTIME / "testbed.lock"
WAIT_S = 120.0   # a lab up builds in seconds; anything longer is stuck or another film running
POLL_S = 0.1


class LockBusy(TestbedError):
    """The lock stayed taken for the whole wait; the message names its holder."""


def _open(path: Path) -> int:
    ensure_dir(path.parent, 0o755)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:  # ELOOP: a symlink in its place
        raise UnsafePath(f"cannot open the lock {path}: {e.strerror}") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid()):
        os.close(fd)
        raise UnsafePath(f"the lock {path} is not a regular file of root's (uid {st.st_uid})")
    if stat.S_IMODE(st.st_mode) != 0o600:
        os.fchmod(fd, 0o600)
    return fd


def holder(fd: int, path: Path) -> str:
    """Who holds the lock on ``fd``'s file: the kernel's pid(s) and the holder's own note."""
    st = os.fstat(fd)
    pids = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            f = line.split()
            if len(f) >= 6 and f[1] == "FLOCK" and f[5].rsplit(":", 1)[-1] == str(st.st_ino):
                pids.append(int(f[4]))
    note = os.pread(fd, 200, 0).decode(errors="replace").strip()
    who = [f"pid {p} ({(processes.cmdline(p) or 'gone')[:80]})" for p in sorted(set(pids))]
    if note and not any(note.split(" ", 1)[0] == str(p) for p in pids):
        who.append(f"pid {note} by its note")
    return ", ".join(who) or "an unknown process"


@contextlib.contextmanager
def held(what: str, wait: float = WAIT_S, path: Path = LOCK_FILE) -> Iterator[None]:
    """The lock for ``what`` (e.g. ``lab up``) within ``wait`` seconds, or :class:`LockBusy`."""
    fd = _open(path)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(f"the testbed is locked by {holder(fd, path)}; waited {wait:g} s for {path}") \
                        from None
                time.sleep(POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
        log.debug("testbed_locked", path=str(path), what=what)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
