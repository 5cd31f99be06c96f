"""film.html: the seed's screen rebuilt from a trace, one self-contained file that works offline.

Wireshark's packet list top left, the RFC 9293 state diagram top right (server blue, client red,
green where both are), each host's console and netstat pane below, and the controls at the bottom.
The page's script and style (controller/film/assets/) and the film's data are written into the file;
nothing is fetched. The data is what :mod:`controller.film.model` makes of the trace, so the page
never re-derives causes or states itself, only shows them at the viewer's position.

The output depends on the trace alone (sorted keys, no time of rendering): rendering twice gives
byte-identical files. :func:`data`, :func:`render` and :func:`write` take the trace's index
(:class:`~controller.trace.TraceIndex`) or its records in trace order (indexed first).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from html import escape
from pathlib import Path

from controller import rfc9293
from controller.film import diagram, gaps
from controller.film.model import Film, build, is_listener
from controller.film.visible import visible
from controller.trace import Direction, Kind, StepStatus, Stream, TraceIndex
from tcplab.files import atomic_write
from tcplab.impairment import of_record

ASSETS = Path(__file__).resolve().parent / "assets"


def _delay_ms(ix: TraceIndex) -> int:
    return max((r.get("delay_ms") or 0 for r in ix.kind(Kind.SHAPER) if r.get("backend")), default=0)


def _commands(film: Film) -> dict[str, list[dict]]:
    """The command line each host's console shows when its step starts: nc -l PORT or nc ADDR PORT, or
    for the probe's own application (many or named connections), a comment saying what it does."""
    ix, port = film.records, film.port or "?"
    server_ip = next((r["remote"].rsplit(":", 1)[0] for r in ix.states(film.client()) if r["to"] == "SYN_SENT"),
                     None)
    if server_ip is None:
        server_ip = next((r["local"].rsplit(":", 1)[0] for r in ix.states(film.server(), listener=False)), "?")
    out: dict[str, list[dict]] = {h: [] for h in film.hosts}
    for r in ix.steps(StepStatus.START):
        if r["action"] in ("listen", "connect"):
            text = f"nc -l {port}" if r["action"] == "listen" else f"nc {server_ip} {port}"
            if r.get("app"):
                what = f"listens on port {port}" if r["action"] == "listen" else f"connects to {server_ip} {port}"
                text = f"# the probe's application {what}" + (f" ({r['detail']})" if r.get("detail") else "")
            for h in r["target"].split(","):
                if h in out:
                    out[h].append({"t": r["t"], "record": ix.position(r), "text": text})
    return out


def _moment(film: Film, i: int, transition_of: dict[int, int]) -> dict:
    r = film.records[i]
    m = {"t": r["t"], "record": i, "kind": r["kind"], "host": r["host"]}
    kind = m["kind"]  # a moment's label, by its kind
    if kind == Kind.PACKET:
        row = film.packets[film.packet_no[i] - 1]
        m["packet"] = row["no"]
        m["label"] = f"{r['host']} {'sent' if r['dir'] == Direction.OUT else 'received'} #{row['no']}: {row['info']}"
    elif kind == Kind.STATE:
        m["transition"] = transition_of.get(i)
        what = "listener" if is_listener(r) else "socket"
        m["label"] = f"{r['host']} {what}: {r['from']} → {r['to']}"
    elif kind == Kind.STEP:
        m["step"] = r["index"]
        m["label"] = f"step {r['index']}: {r['action']} on {r['target']}" + (
            f" failed: {r.get('error') or 'no reason given'}" if r["status"] == StepStatus.FAILED else "")
    elif kind == Kind.CONSOLE:
        m["label"] = f"{r['host']} {'typed' if r.get('stream') == Stream.STDIN else 'printed'} {r['text']!r}"
    elif kind == Kind.SHAPER:
        imp = of_record(r)
        m["label"] = (f"{r['host']} egress: {imp.words()} ({r['backend']})" if imp else f"{r['host']}: shaping cleared")
    elif kind == Kind.KERNEL:
        m["label"] = f"{r['host']} kernel: {r['event']} ({r.get('state') or '?'})"
    return m


def data(trace: TraceIndex | Iterable[dict]) -> dict:
    """Everything the page shows, as one JSON-able dict."""
    film = build(trace)
    ix = film.records
    transition_of = {tr.record: n for n, tr in enumerate(film.transitions)}
    steps = {}
    for r in ix.steps():
        s = steps.setdefault(r["index"], {"index": r["index"], "action": r["action"], "target": r["target"],
                                          "t": r["t"], "status": StepStatus.START})
        s["status"] = r["status"]
        if r.get("error"):
            s["error"] = r["error"]
    return {
        "hosts": film.hosts,
        "roles": film.roles,
        "port": film.port,
        "delay_ms": _delay_ms(ix),
        "t_end": max((r["t"] for r in ix), default=0.0),
        "long_gap_s": gaps.LONG_GAP_S,
        "slow_min_s": gaps.SLOW_MIN_S,
        "packets": [{k: v for k, v in p.items() if k not in ("flags", "payload")} for p in film.packets],
        "transitions": [tr.as_dict() for tr in film.transitions],
        "moments": [_moment(film, i, transition_of) for i in film.moments],
        "steps": [steps[k] for k in sorted(steps)],
        "console": [{"t": r["t"], "record": ix.position(r), "host": r["host"], "stream": r.get("stream"),
                     "text": visible(r["text"])} for r in ix.kind(Kind.CONSOLE)],
        "commands": _commands(film),
        "netstat": {h: [{"t": r["t"], "rows": r["rows"]} for r in ix.kind(Kind.NETSTAT, h)] for h in film.hosts},
    }


def _json_for_script(obj: dict) -> str:
    # inside <script> nothing may read as "</script>" or open a comment
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(trace: TraceIndex | Iterable[dict], title: str = "") -> str:
    """film.html's text for the trace: its index, or its records in trace order."""
    trace = TraceIndex.of(trace)
    d = data(trace)
    server, client = d["hosts"]
    heading = title or (f"{server} (server) ⇄ {client} (client), port {d['port']}, "
                        f"{d['delay_ms'] / 1000:g} s egress delay")
    parts = {"TITLE": escape(heading), "RFC": escape(rfc9293.verdict(rfc9293.check(trace.records))),
             "STYLE": (ASSETS / "film.css").read_text(encoding="utf-8"),
             "DIAGRAM": diagram.render(), "DATA": _json_for_script(d),
             "SCRIPT": (ASSETS / "film.js").read_text(encoding="utf-8")}
    page = (ASSETS / "film.html.in").read_text(encoding="utf-8")
    # one pass: text from the trace that happens to read "@SCRIPT@" is not a placeholder
    return re.sub(r"@(TITLE|RFC|STYLE|DIAGRAM|DATA|SCRIPT)@", lambda m: parts[m.group(1)], page)


def write(run_dir: Path, trace: TraceIndex | Iterable[dict]) -> Path:
    """film.html in ``run_dir``, from the trace's index (or its records)."""
    return atomic_write(Path(run_dir) / "film.html", render(trace))
