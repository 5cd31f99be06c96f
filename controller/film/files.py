"""The film's files are written whole by the one atomic writer, :func:`tcplab.files.atomic_write`.

:func:`write_text` is that writer under its old name, for a caller not yet moved to it (summary.py).
"""

from __future__ import annotations

from pathlib import Path

from tcplab.files import atomic_write


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole (:func:`tcplab.files.atomic_write`); return ``path``."""
    return atomic_write(path, text)
