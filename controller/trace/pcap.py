"""The run's classic pcaps: one per host (nanosecond timestamps, Ethernet), written as packets arrive.

They sit beside the trace (``runs/<run-id>/<host>.pcap``) for Wireshark; the trace's packet
records are the same segments, decoded by the probe. Written by hand (the 24-byte file header with
the nanosecond magic ``0xa1b23c4d``, then a 16-byte record header per packet), buffered, and
flushed by :meth:`PcapFiles.flush` once per batch of events rather than once per packet: scapy's
writer with a flush per packet was a fifth of the controller's time on the event path
(bench.event_path's profile), for a file nobody reads before the run ends.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

MAGIC_NS = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
_HEADER = struct.pack("<IHHiIII", MAGIC_NS, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)
_RECORD = struct.Struct("<IIII")  # seconds, nanoseconds, captured length, original length


class PcapFiles:
    """One classic pcap (nanosecond timestamps, Ethernet) per host, written as packets arrive."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._files: dict[str, BinaryIO] = {}

    def _file(self, host: str) -> BinaryIO:
        f = self._files.get(host)
        if f is None:
            f = self._files[host] = open(self.run_dir / f"{host}.pcap", "wb")
            f.write(_HEADER)
            f.flush()
        return f

    def write(self, host: str, raw: bytes, wall_ns: int) -> None:
        sec, nsec = divmod(max(0, wall_ns), 1_000_000_000)
        self._file(host).write(_RECORD.pack(sec & 0xFFFFFFFF, nsec, len(raw), len(raw)) + raw)

    def ensure(self, hosts) -> None:
        """Every host gets a file, also one that captured nothing (an empty capture is a result)."""
        for h in hosts:
            self._file(h)

    def flush(self) -> None:
        for f in self._files.values():
            f.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
