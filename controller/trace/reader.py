"""Reading a trace back: a finished run's trace.jsonl, or the partial file of one still running.

:func:`load` is what ``tcplab render`` and the tests read: every line a JSON object, in the
file's order (trace.jsonl is written ordered). :func:`read_lines` also checks each record's
required fields and names the file and line of the first bad one (:class:`NotATrace`); with
``partial`` it leaves out a last line cut short mid-write (a crashed run's partial file).
"""

from __future__ import annotations

import json
from pathlib import Path

from controller.trace.schema import REQUIRED
from tcplab.errors import TcplabError


class NotATrace(TcplabError, ValueError):
    """The path is not a run directory or its trace cannot be read; the message says which and why."""


def load(path: Path) -> list[dict]:
    """The records of a trace file, in its order (raises ``json.JSONDecodeError``, a ValueError)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def check(rec: object, where: str) -> dict:
    """``rec`` if it is a trace record (``t``, ``host``, ``kind``, a numeric ``t``), else NotATrace."""
    if not isinstance(rec, dict) or any(k not in rec for k in REQUIRED) \
            or not isinstance(rec["t"], (int, float)):
        raise NotATrace(f"{where}: not a trace record (needs {', '.join(REQUIRED)})")
    return rec


def read_lines(path: Path, partial: bool = False) -> list[dict]:
    """The checked records of a trace file. ``partial``: a crashed run's trace.partial.jsonl, whose
    last line may have been cut short mid-write; such a line (no newline at its end) is left out."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as e:
                if partial and not text.endswith("\n"):
                    break
                raise NotATrace(f"{path} is not a trace: line {n}: {e.msg}") from e
            out.append(check(rec, f"{path} line {n}"))
    if not out:
        raise NotATrace(f"{path} is empty")
    return out
