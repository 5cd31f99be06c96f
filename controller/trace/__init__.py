"""The trace: runs/<run-id>/trace.jsonl, one JSON object per line, ordered by ``t``.

The package owns the record format and everything that handles it whole:

- :mod:`~controller.trace.schema` — the kinds, each kind's fields, the statuses (enums), the
  listener's remote address, the trace's order (``sort_key``);
- :mod:`~controller.trace.writer` — :class:`Trace`: the partial file as records arrive, the ordered
  trace.jsonl written atomically at the end;
- :mod:`~controller.trace.reader` — :func:`load` and the checked reads of a finished or partial file;
- :mod:`~controller.trace.index` — :class:`TraceIndex`, built once per run and handed to the report,
  the clock's causal check and every renderer;
- :mod:`~controller.trace.pcap` — the per-host classic pcaps written beside the trace.

The format is documented in docs/trace.md.
"""

from __future__ import annotations

from controller.trace.index import TraceIndex, segment_pairs
from controller.trace.reader import NotATrace, load
from controller.trace.schema import (KIND_ORDER, LISTENER_REMOTE, Direction, Kind, RunStatus, StepStatus,
                                     Stream, sort_key)
from controller.trace.writer import Trace

__all__ = ["KIND_ORDER", "LISTENER_REMOTE", "Direction", "Kind", "NotATrace", "PcapFiles", "RunStatus",
           "StepStatus", "Stream", "Trace", "TraceIndex", "load", "segment_pairs", "sort_key"]


def __getattr__(name: str):
    if name == "PcapFiles":  # scapy is slow to import: only the run needs it
        from controller.trace.pcap import PcapFiles
        return PcapFiles
    raise AttributeError(f"module 'controller.trace' has no attribute {name!r}")
