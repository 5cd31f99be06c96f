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
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


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
