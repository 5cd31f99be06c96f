"""A run's packets beyond the trace records: per-host pcapng, Wireshark's analysis, merged.pcapng.

``Captures(run_dir, hosts)`` writes ``<host>.pcapng`` as packets arrive (the host's own wall-clock
timestamps, nanoseconds) and keeps each host's frames with their trace records, in capture order.
Each packet record gets its ``analysis`` as it is added (controller.analysis, per host over that
host's frames so far, as Wireshark would analyse ``<host>.pcapng``). When the run is over,
:meth:`Captures.finish` (after the clocks are aligned, before the trace is written) writes ``merged.pcapng``: both hosts'
packets, one interface per host, stamped with the record's ``t`` on the controller's timebase
(run start as wall-clock time + ``t``) and in the film's order, so a segment never arrives before it
left there either.
"""

from __future__ import annotations

from pathlib import Path

from controller import analysis
from controller.pcapng import PcapngFiles, write_merged
from controller.trace import sort_key


class Captures:
    def __init__(self, run_dir: Path, hosts: tuple[str, ...]):
        self.run_dir = Path(run_dir)
        self.hosts = tuple(hosts)
        self.files = PcapngFiles(self.run_dir)
        self.files.ensure(self.hosts)
        self.frames: dict[str, list[tuple[dict, bytes, int]]] = {h: [] for h in self.hosts}
        self.analyzers: dict[str, analysis.Analyzer] = {}  # per host: its capture so far

    def add(self, host: str, rec: dict, raw: bytes, wall_ns: int) -> None:
        """One packet record and its frame, in the order the host's capture saw them: the record
        gets its ``analysis`` now (controller.analysis.Analyzer, the host's capture so far)."""
        self.files.write(host, raw, wall_ns, rec.get("dir"))
        self.frames.setdefault(host, []).append((rec, raw, wall_ns))
        rec["analysis"] = self.analyzers.setdefault(host, analysis.Analyzer()).add(raw, wall_ns)

    def finish(self, start_wall_ns: int) -> int:
        """merged.pcapng; returns the number of packets merged."""
        order = sorted(((rec, host, raw) for host, frames in self.frames.items() for rec, raw, _ in frames),
                       key=lambda x: sort_key(x[0]))  # the trace's own order: the film's
        hosts = list(self.hosts) + [h for h in self.frames if h not in self.hosts]
        return write_merged(self.run_dir / "merged.pcapng", hosts,
                            ((host, raw, start_wall_ns + round(rec["t"] * 1e9), rec.get("dir"))
                             for rec, host, raw in order))

    def flush(self) -> None:
        self.files.flush()

    def close(self) -> None:
        self.files.close()
