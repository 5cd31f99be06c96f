"""run.json for a finished run, from its trace index (plus the run's facts), and the words shared by
the text views: what each state change means (WHY) and a segment in one line (packet_info).

summary.txt, the run told in these words, is a renderer (controller/film/summary.py): it reads
run.json and the trace, so ``tcplab render`` rebuilds it like the film's other files.
"""

from __future__ import annotations

import json
from pathlib import Path

from controller.trace.index import TraceIndex, segment_pairs
from tcplab.files import atomic_write

__all__ = ["WHY", "causality", "packet_info", "segment_pairs", "write"]

WHY = {
    ("CLOSED", "LISTEN"): "the server application listens: the listening socket is open",
    ("CLOSED", "SYN_SENT"): "the client sent a SYN: the three-way handshake has begun",
    ("LISTEN", "SYN_RECEIVED"): "a SYN arrived; the server answers with SYN+ACK",
    ("CLOSED", "SYN_RECEIVED"): "a SYN arrived; the server answers with SYN+ACK",
    ("SYN_SENT", "SYN_RECEIVED"): "the peer's SYN arrived while ours was on its way: a simultaneous open; "
                                  "this side answers with SYN+ACK",
    ("SYN_RECEIVED", "LISTEN"): "a RST arrived: the half-open connection is dropped, the server listens on",
    ("SYN_RECEIVED", "FIN_WAIT1"): "the application closed before the handshake ended; a FIN goes out",
    ("SYN_SENT", "ESTABLISHED"): "the SYN+ACK arrived; the client acknowledges it: connected on this side",
    ("SYN_RECEIVED", "ESTABLISHED"): "the client's ACK arrived: the three-way handshake is complete",
    ("ESTABLISHED", "FIN_WAIT1"): "the application closed, or shut its sending side; a FIN goes out: the four-way "
                                  "close has begun",
    ("ESTABLISHED", "CLOSE_WAIT"): "the peer's FIN arrived and is acknowledged; waiting for this application to close",
    ("FIN_WAIT1", "FIN_WAIT2"): "the peer acknowledged our FIN; now waiting for the peer's FIN",
    ("FIN_WAIT1", "CLOSING"): "both sides sent a FIN at once; waiting for the ACK of ours",
    ("FIN_WAIT1", "TIME_WAIT"): "the peer's FIN and the ACK of ours arrived together",
    ("CLOSING", "TIME_WAIT"): "our FIN is acknowledged",
    ("CLOSE_WAIT", "LAST_ACK"): "the application closed, or shut its sending side; the last FIN goes out, "
                               "waiting for its ACK",
    ("FIN_WAIT2", "TIME_WAIT"): "the peer's FIN arrived and the last ACK goes out; TIME_WAIT keeps the "
                                "connection's address for 60 s so that delayed packets are discarded",
    ("LAST_ACK", "CLOSED"): "the last ACK arrived: the connection is closed on this side",
    ("TIME_WAIT", "CLOSED"): "the TIME_WAIT timer ran out: the connection is gone",
    ("LISTEN", "CLOSED"): "the listening socket was closed",
}


def packet_info(p: dict) -> str:
    flags = ",".join(p.get("flags", []))
    text = f"[{flags}] Seq={p.get('seq')} Ack={p.get('ack')} Len={p.get('len')}"
    if p.get("payload"):
        text += f" {p['payload']!r}"
    return text


def causality(trace: TraceIndex | list[dict]) -> dict:
    """Counts of paired segments and the violations (a segment that arrived before it left)."""
    pairs = TraceIndex.of(trace).pairs
    bad = [{"segment": packet_info(o), "left": o["t"], "arrived": i["t"]} for o, i in pairs if i["t"] < o["t"]]
    return {"pairs": len(pairs), "violations": bad}


def write(run_dir: Path, info: dict, trace: TraceIndex | list[dict]) -> dict:
    """Write run.json: ``info`` with the trace's causality check and the run directory's files
    (summary.txt included: the renderers write it next). Returns what was written."""
    run_dir = Path(run_dir)
    info = dict(info, causality=causality(trace))
    info["files"] = sorted(p.name for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".")) \
        + ["run.json", "summary.txt"]
    atomic_write(run_dir / "run.json", json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info
