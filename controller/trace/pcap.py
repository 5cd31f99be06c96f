"""The run's classic pcaps: one per host (nanosecond timestamps, Ethernet), written as packets arrive.

They sit beside the trace (``runs/<run-id>/<host>.pcap``) for Wireshark; the trace's packet
records are the same segments, decoded by the probe.
"""

from __future__ import annotations

from pathlib import Path

from scapy.utils import RawPcapWriter


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
