"""run.json and summary.txt for a finished run, made from its trace alone (plus the run's facts).

summary.txt tells each host's state sequence and the packets in the terms of the seed's
storyline: which handshake begins or ends, what the side is waiting for.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from controller.trace import load

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
    ("ESTABLISHED", "FIN_WAIT1"): "the application closed; a FIN goes out: the four-way close has begun",
    ("ESTABLISHED", "CLOSE_WAIT"): "the peer's FIN arrived and is acknowledged; waiting for this application to close",
    ("FIN_WAIT1", "FIN_WAIT2"): "the peer acknowledged our FIN; now waiting for the peer's FIN",
    ("FIN_WAIT1", "CLOSING"): "both sides sent a FIN at once; waiting for the ACK of ours",
    ("FIN_WAIT1", "TIME_WAIT"): "the peer's FIN and the ACK of ours arrived together",
    ("CLOSING", "TIME_WAIT"): "our FIN is acknowledged",
    ("CLOSE_WAIT", "LAST_ACK"): "the application closed; the last FIN goes out, waiting for its ACK",
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


def analysis_note(r: dict, sent: set) -> str:
    """The packet's Wireshark analysis, e.g. ``  (retransmission, duplicate ack)``, or ''.

    A trace from before the analysis existed has no ``analysis``: then a segment its host already
    sent once is marked as a copy sent again, a retransmission (the seed's grey rows).
    """
    if "analysis" in r:
        names = list(r["analysis"])
        if {"fast_retransmission", "spurious_retransmission"} & set(names):
            names.remove("retransmission")  # said by the kind of retransmission
        return f"  ({', '.join(n.replace('_', ' ') for n in names)})" if names else ""
    key = (r["host"], r["src"], r["dst"], tuple(r.get("flags", [])), r.get("seq"), r.get("ack"), r.get("len"))
    again = r["dir"] == "out" and key in sent and (r.get("len") or {"SYN", "FIN"} & set(r.get("flags", [])))
    if r["dir"] == "out":
        sent.add(key)
    return "  (retransmission)" if again else ""


def segment_pairs(records: list[dict]):
    """Each segment seen leaving one host paired with the same segment arriving at another.

    The n-th identical segment out pairs with the n-th identical segment in (retransmissions are
    identical), in time order. Yields ``(out_record, in_record)``.
    """
    out, inn = defaultdict(list), defaultdict(list)
    for r in sorted((r for r in records if r["kind"] == "packet"), key=lambda r: r["t"]):
        key = (r["src"], r["dst"], tuple(r.get("flags", [])), r.get("seq"), r.get("ack"), r.get("len"))
        (out if r["dir"] == "out" else inn)[key].append(r)
    for key, sent in out.items():
        for o, i in zip(sent, inn.get(key, [])):
            if o["host"] != i["host"]:
                yield o, i


def causality(records: list[dict]) -> dict:
    """Counts of paired segments and the violations (a segment that arrived before it left)."""
    pairs, bad = 0, []
    for o, i in segment_pairs(records):
        pairs += 1
        if i["t"] < o["t"]:
            bad.append({"segment": packet_info(o), "left": o["t"], "arrived": i["t"]})
    return {"pairs": pairs, "violations": bad}


def summary(records: list[dict], info: dict) -> str:
    verdict = "OK" if info.get("ok") else "FAILED"
    lines = [f"tcplab run {info.get('run_id')}: {verdict} — scenario {info['scenario']['name']}, "
             f"{info.get('delay_s', 0):g} s egress delay on the lab port"]
    if info.get("error"):
        lines.append(f"error: {info['error']}")
    hosts = list(info.get("hosts", {}))
    backends = ", ".join(f"{h}: {v.get('shaper_backend') or 'none'}" for h, v in info.get("hosts", {}).items())
    lines += [f"shaping backend: {backends}", "", "Steps"]
    for r in records:
        if r["kind"] == "step" and r["status"] != "start":
            lines.append(f"  {r['t']:9.3f} s  step {r['index']} {r['action']} on {r['target']}: {r['status']}"
                         + (f" — {r['error']}" if r.get("error") else ""))
    for host in hosts:
        lines += ["", f"{host}: states"]
        for r in records:
            if r["kind"] == "state" and r["host"] == host:
                where = r["local"] if r["remote"] == "0.0.0.0:*" else f"{r['local']} <-> {r['remote']}"
                why = WHY.get((r["from"], r["to"]), "")
                lines.append(f"  {r['t']:9.3f} s  {r['from']:>12} -> {r['to']:<12} {where}"
                             + (f"  ({why})" if why else ""))
        console = [r for r in records if r["kind"] == "console" and r["host"] == host]
        if console:
            lines.append(f"{host}: console")
            for r in console:
                arrow = "typed " if r.get("stream") == "stdin" else "prints"
                lines.append(f"  {r['t']:9.3f} s  {arrow} {r['text']!r}")
    lines += ["", "Packets (as each host's capture saw them; out = sent by that host)"]
    sent: set[tuple] = set()
    for r in records:
        if r["kind"] == "packet":
            lines.append(f"  {r['t']:9.3f} s  {r['host']:<12} {r['dir']:<3} {r['src']:>21} -> {r['dst']:<21} "
                         f"{packet_info(r)}" + analysis_note(r, sent))
    check = info.get("causality", {})
    lines += ["", f"Causality: {check.get('pairs', 0)} segments seen on both hosts, "
                  f"{len(check.get('violations', []))} arrived before they left"]
    return "\n".join(lines) + "\n"


def write(run_dir: Path, info: dict) -> None:
    records = load(run_dir / "trace.jsonl")
    info = dict(info, causality=causality(records))
    info["files"] = sorted(p.name for p in run_dir.iterdir() if p.is_file()) + ["run.json", "summary.txt"]
    (run_dir / "summary.txt").write_text(summary(records, info), encoding="utf-8")
    tmp = run_dir / "run.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(run_dir / "run.json")
