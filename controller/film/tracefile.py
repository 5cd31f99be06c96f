"""A run's trace as the terminal film reads it: finished, or still being written.

A finished run has ``trace.jsonl`` (ordered by ``t``). A running one, or one whose controller
crashed, has ``trace.partial.jsonl``: records in the order they arrived, which is nearly but not
quite ``t`` order (each probe's events come in batches), so they are sorted the way the final
trace is (controller/trace/schema.py ``sort_key``). The partial file's packets have no Wireshark
analysis yet (``analysis: []``), so a live view cannot grey retransmissions; the finished trace can.
The checked reads themselves are the trace package's (controller/trace/reader.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from controller.trace.reader import NotATrace, check, read_lines
from controller.trace.schema import sort_key

__all__ = ["NotATrace", "PartialTrace", "check", "open_run", "ordered", "read_lines"]


def ordered(records: list[dict]) -> list[dict]:
    """Records in arrival order, sorted as the finished trace is (ties keep arrival order)."""
    for n, r in enumerate(records):
        r.setdefault("_n", n)
    return sorted(records, key=sort_key)


def open_run(path: Path) -> tuple[list[dict], str, bool]:
    """(records in trace order, run id, finished?) of a run directory or a trace file."""
    path = Path(path)
    if path.is_dir():
        trace, partial = path / "trace.jsonl", path / "trace.partial.jsonl"
        if trace.is_file():
            return read_lines(trace), path.name, True
        if partial.is_file():
            return ordered(read_lines(partial, partial=True)), path.name, False
        raise NotATrace(f"{path} has no trace.jsonl (is it a run directory?)")
    if path.is_file():
        finished = path.name != "trace.partial.jsonl"
        records = read_lines(path, partial=not finished)
        return (records if finished else ordered(records)), path.parent.name, finished
    raise NotATrace(f"{path} does not exist")


class PartialTrace:
    """Follows a growing ``trace.partial.jsonl``: :meth:`read` returns the records added since.

    The file stays open once found, so the records written last can still be read after the
    controller has renamed ``trace.jsonl`` into place and removed the partial file.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.count = 0
        self.skipped = 0
        self._f = None
        self._rest = b""

    def read(self) -> list[dict]:
        if self._f is None:
            try:
                self._f = open(self.path, "rb")
            except FileNotFoundError:
                return []
        data = self._rest + self._f.read()
        end = data.rfind(b"\n") + 1          # a line still being written waits for the next read
        self._rest = data[end:]
        out = []
        for text in data[:end].decode("utf-8", errors="replace").splitlines():
            if not text.strip():
                continue
            try:
                rec = check(json.loads(text), str(self.path))
            except (json.JSONDecodeError, NotATrace):
                self.skipped += 1             # the live view goes on without what it cannot read
                continue
            rec["_n"] = self.count
            self.count += 1
            out.append(rec)
        return out

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
