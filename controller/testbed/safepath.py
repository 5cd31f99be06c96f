"""Directories root can trust: no other local user can change what is in them or where they lead.

The testbed keeps sshd's configuration, host keys and the controller's SSH key under its home, and
``tcplab lab`` runs as root: a home another user can write to (or a symlink they planted where the
home should be) would let them choose what root writes, reads or removes there. So before anything
is made, the path is walked from ``/`` with ``lstat`` (never following a link on trust):

- every directory on the way is owned by root (or the user running tcplab) and writable by no one
  else, except a sticky one (``/tmp``: mode 1777), whose entries only their owner can rename or
  remove; the entry below it must then be ours too;
- a symlink on the way must be ours (owned by root or us, in a directory checked as above); the
  directory it leads to is checked the same way;
- a missing directory is made one at a time (``mkdir``, then ``lstat``: a name someone took first
  in a sticky directory is refused, not used), with the mode asked for.

An existing directory that fails is refused with one line naming it, its owner and its mode; it is
never chmod-ed into shape (what a stranger could write there may already be inside). sshd's
``StrictModes yes`` is stricter still (no sticky directory on the way to ``authorized_keys``), so
the testbed keeps that file under :data:`RUNTIME` (/run/tcplab), which is root's alone.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from controller.testbed.spec import RUNTIME, TestbedError

__all__ = ["RUNTIME", "UnsafePath", "check_dir", "ensure_dir"]


class UnsafePath(TestbedError):
    """A path another local user could change: refused (one line: the path, its owner, its mode)."""


def _ours(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def _why_not(path: Path, st: os.stat_result, last: bool) -> str | None:
    """Why ``path`` (lstat ``st``) cannot be trusted, or None."""
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return None if _ours(st) else f"{path} is a symlink owned by uid {st.st_uid}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if not _ours(st):
        return f"{path} is owned by uid {st.st_uid}, not root (mode {mode:04o})"
    if mode & 0o022 and (last or not mode & stat.S_ISVTX):
        return f"{path} is writable by others (mode {mode:04o})"
    return None


def _walk(path: Path, final: bool = True) -> Path | None:
    """Check every existing prefix of absolute ``path`` (``final``: the last one is the directory
    asked for, not a step on the way); the first missing one (None: all exist)."""
    prefix = Path("/")
    parts = path.parts[1:]
    for i, name in enumerate(parts):
        prefix = prefix / name
        try:
            st = os.lstat(prefix)
        except FileNotFoundError:
            return prefix
        last = final and i == len(parts) - 1
        why = _why_not(prefix, st, last)
        if why:
            raise UnsafePath(why)
        if stat.S_ISLNK(st.st_mode):
            target = Path(os.path.realpath(prefix))
            if _walk(target, last) is not None:
                raise UnsafePath(f"{prefix} is a symlink to {target}, which does not exist")
    return None


def check_dir(path: Path) -> None:
    """``path`` exists and it and every directory above it are trustworthy (:class:`UnsafePath` if not)."""
    path = Path(os.path.abspath(path))
    missing = _walk(path)
    if missing is not None:
        raise UnsafePath(f"{missing} does not exist")


def ensure_dir(path: Path, mode: int = 0o755) -> Path:
    """``path`` as a trustworthy directory, made (``mode``, whatever the umask) where missing."""
    path = Path(os.path.abspath(path))
    while (missing := _walk(path)) is not None:
        try:
            os.mkdir(missing, 0o700)
        except FileExistsError:
            continue  # someone made it first: the next walk judges it
        st = os.lstat(missing)  # ours, a directory, not a link (the parent lets no one else in)
        if not stat.S_ISDIR(st.st_mode) or not _ours(st):
            raise UnsafePath(f"{missing} was taken by uid {st.st_uid} while tcplab made it")
        os.chmod(missing, mode if missing == path else 0o755)
    return path
