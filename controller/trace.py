"""The trace: runs/<run-id>/trace.jsonl, one JSON object per line, ordered by ``t``.

Records are appended to ``trace.partial.jsonl`` as they arrive (flushed, so a crash loses
nothing that reached the controller), and :meth:`Trace.finish` writes the ordered
``trace.jsonl`` atomically (temporary file + rename) and removes the partial file.
The format is documented in docs/trace.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from scapy.utils import RawPcapWriter

KIND_ORDER = {"step": 0, "shaper": 1, "packet": 2, "kernel": 3, "state": 4, "console": 5, "netstat": 6}


def sort_key(rec: dict) -> tuple:
    # Equal times: a step's start before what it caused; a packet before the state it caused.
    # At equal times a segment leaves before it arrives (a causal shift can make the two equal).
    return (rec["t"], KIND_ORDER.get(rec["kind"], 9), rec.get("dir") == "in", rec.get("_n", 0))


class Trace:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.partial_path = self.run_dir / "trace.partial.jsonl"
        self.path = self.run_dir / "trace.jsonl"
        self._f = open(self.partial_path, "a", encoding="utf-8")
        self.records: list[dict] = []

    def add(self, record: dict) -> None:
        for key in ("t", "host", "kind"):
            if key not in record:
                raise ValueError(f"trace record lacks {key!r}: {record!r}")
        record["_n"] = len(self.records)
        self.records.append(record)
        self._f.write(json.dumps(_public(record), ensure_ascii=False, separators=(",", ":")) + "\n")
        self._f.flush()

    def ordered(self) -> list[dict]:
        return [_public(r) for r in sorted(self.records, key=sort_key)]

    def finish(self) -> Path:
        records = self.ordered()
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        self._f.close()
        self.partial_path.unlink(missing_ok=True)
        return self.path

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def _public(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def load(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class PcapFiles:
    """One classic pcap (nanosecond timestamps, Ethernet) per host, written as packets arrive."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._writers: dict[str, RawPcapWriter] = {}

    def _writer(self, host: str) -> RawPcapWriter:
        w = self._writers.get(host)
        if w is None:
            w = RawPcapWriter(str(self.run_dir / f"{host}.pcap"), linktype=1, nano=True, sync=True)
            w.write_header(None)
            self._writers[host] = w
        return w

    def write(self, host: str, raw: bytes, wall_ns: int) -> None:
        self._writer(host).write_packet(raw, sec=wall_ns // 1_000_000_000, usec=wall_ns % 1_000_000_000)

    def ensure(self, hosts) -> None:
        """Every host gets a file, also one that captured nothing (an empty capture is a result)."""
        for h in hosts:
            self._writer(h)

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
