"""Writing a run's trace: ``trace.partial.jsonl`` as records arrive, ``trace.jsonl`` at the end.

Records are appended to ``trace.partial.jsonl`` as they arrive (flushed, so a crash loses
nothing that reached the controller; the live view follows that file), and :meth:`Trace.finish`
writes the ordered ``trace.jsonl`` atomically (temporary file + rename) and removes the partial
file. The records stay in memory (:attr:`Trace.records`, arrival order, each with its arrival
number ``_n``): the run aligns them there and builds its one index from them, so nothing reads
the trace back from disk during a run.
"""

from __future__ import annotations

import json
from pathlib import Path

from controller.trace.schema import REQUIRED, public, sort_key
from tcplab.errors import TcplabError
from tcplab.files import atomic_write


class TraceRecordError(TcplabError, ValueError):
    """A record without ``t``, ``host`` or ``kind``: a bug in the code that made it."""


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # what json.dumps would make


def line(rec: dict) -> str:
    """One record as a trace.jsonl line (its public keys, compact, UTF-8 as is)."""
    return _ENCODE(public(rec)) + "\n"


class Trace:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.partial_path = self.run_dir / "trace.partial.jsonl"
        self.path = self.run_dir / "trace.jsonl"
        self._f = open(self.partial_path, "a", encoding="utf-8")
        self.records: list[dict] = []

    def add(self, record: dict) -> dict:
        """Keep ``record`` (numbered ``_n`` in arrival order) and append it to the partial file."""
        self.add_many([record])
        return record

    def add_many(self, records: list[dict]) -> None:
        """:meth:`add` for several records, in order, with one write and one flush. A record comes
        without private keys (``_n`` is given here), so its line is the record as it is."""
        if not records:
            return
        lines = []
        for record in records:
            if "t" not in record or "host" not in record or "kind" not in record:
                missing = next(k for k in REQUIRED if k not in record)
                raise TraceRecordError(f"trace record lacks {missing!r}: {record!r}")
            lines.append(_ENCODE(record))
            record["_n"] = len(self.records)
            self.records.append(record)
        self._f.write("\n".join(lines) + "\n")
        self._f.flush()

    def ordered(self) -> list[dict]:
        """The records in the trace's order, as trace.jsonl holds them (copies without ``_n``)."""
        return [public(r) for r in sorted(self.records, key=sort_key)]

    def finish(self, records: list[dict] | None = None) -> Path:
        """Write trace.jsonl (``records`` as given, already in order; default :meth:`ordered`)
        atomically and remove the partial file."""
        records = self.ordered() if records is None else records
        atomic_write(self.path, "".join(line(r) for r in records))
        self.close()
        self.partial_path.unlink(missing_ok=True)
        return self.path

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
