"""Writing a file so that a reader never sees half of it: a temporary file, then a rename.

Every file tcplab writes whole (the trace, run.json, the film's files, pid and status files,
install records, pcapng, archives) goes through here. The temporary file lives in the target's
directory (a rename is atomic only within one filesystem), has a name no other writer uses
(``.<name>.<random>.tmp``, so two writers never share it), is flushed to disk with ``fsync``
before the rename, and is removed if anything fails. A reader sees the old file or the new one.

- :func:`atomic_write` writes ``str`` (UTF-8) or ``bytes`` held in memory;
- :func:`replacing` yields the temporary path for a writer that streams (pcapng, tar) or a tool
  that writes to a path itself (rsvg-convert), and puts the file in place when the block ends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from tcplab.errors import TcplabError


@contextlib.contextmanager
def replacing(path: Path | str, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit fsync it and rename it onto ``path``.

    ``mode``: the file's permission bits (else what the writer created, under the umask). If the
    block raises, or leaves no file at the temporary path, ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class UnsafeDir(TcplabError, OSError):
    """A directory that should be ours alone is not: a symlink, not a directory, or another user's."""

    def __init__(self, message: str):
        super().__init__(errno.EPERM, message)

    def __str__(self) -> str:
        return self.strerror


def private_dir(path: Path | str, what: str = "directory") -> Path:
    """``path`` as a directory of ours (root's or this user's) with mode 0700, made if missing
    (parents too). An existing one is checked with ``lstat``: a symlink, a non-directory or a
    stranger's is refused (:class:`UnsafeDir`, one line naming it, its owner and its mode), never
    followed or chmod-ed; ours, it is set 0700 whatever the umask or an earlier process left."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, os.geteuid()):
        raise UnsafeDir(f"{what} {path} (uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}) "
                        "is not a directory of ours")
    os.chmod(path, 0o700)
    return path


def atomic_write(path: Path | str, data: str | bytes, mode: int | None = None) -> Path:
    """Write ``data`` (``str`` as UTF-8, or ``bytes``) to ``path`` whole; return ``path``.

    ``mode``: the file's permission bits (default 0o666 under the umask, as ``open`` makes it).
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with replacing(path, mode) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with open(fd, "wb") as f:
            f.write(raw)
    return path
