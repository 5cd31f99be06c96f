"""Processes the testbed started, found only by pid file or by living in our namespace.

Nothing here matches processes by name across the machine (no pkill): a pid is signalled
only after ``/proc/<pid>/cmdline`` still looks like what was started (so a recycled pid is
left alone), or because the process lives in a network namespace this testbed created.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Iterable, Optional

import structlog

log = structlog.get_logger(__name__)


def read_pid(pid_file: Path) -> Optional[int]:
    try:
        text = pid_file.read_text().split()
        pid = int(text[0]) if text else 0
    except (OSError, ValueError):
        return None
    return pid if pid > 1 else None


def cmdline(pid: int) -> Optional[str]:
    """The process's argv joined by spaces, or None if it is gone (zombies count as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return None
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except (OSError, IndexError):
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def alive_as(pid: Optional[int], *needles: str) -> bool:
    """True if ``pid`` runs and its command line contains every needle."""
    if not pid:
        return False
    cmd = cmdline(pid)
    return cmd is not None and all(n in cmd for n in needles)


def argv0(pid: int) -> Optional[str]:
    """Base name of the program the process runs (``nc`` for ``/usr/bin/nc -l ...``)."""
    cmd = cmdline(pid)
    return os.path.basename(cmd.split()[0]) if cmd else None


def netns_inode(pid: int) -> Optional[int]:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def pids_in_netns(ns_inode: int) -> list[int]:
    """Every process whose network namespace is the one with inode ``ns_inode``."""
    me = os.getpid()
    return [pid for pid in _all_pids() if pid != me and netns_inode(pid) == ns_inode]


def descendants(root: int) -> list[int]:
    """Children, grandchildren, ... of ``root`` (e.g. sshd's per-session processes)."""
    parents: dict[int, list[int]] = {}
    for pid in _all_pids():
        ppid = _ppid(pid)
        if ppid is not None:
            parents.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def terminate(pids: Iterable[int], timeout: float = 3.0, why: str = "") -> list[int]:
    """SIGTERM, wait up to ``timeout``, then SIGKILL what is left. Returns the pids signalled."""
    sent = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            sent.append(pid)
            log.info("testbed_process_terminated", pid=pid, reason=why)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    left = list(sent)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if cmdline(p) is not None]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
            log.warning("testbed_process_killed", pid=pid, reason=why)
        except ProcessLookupError:
            pass
    return sent


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _ppid(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
