"""summary.txt: a finished run in a page of text, from its trace and run.json.

The verdict and the scenario (run.json), the steps, each host's state sequence with what each
change means in the terms of the seed's storyline (controller.report.WHY), what was typed and
printed, what a probe did on its own (its dead-man switch, its start-up sweep, records that came
after the controller was lost), every packet as each host's capture saw it, the causality check, and any counter of a
drop, a miss or a refusal that is not zero (run.json ``hosts.<h>.counters``, the capture's kernel
drops): a film whose evidence may be incomplete says so on its first lines.

Like the film's other files it depends on what the run directory holds alone, so ``tcplab
render`` rebuilds it byte for byte; a trace without run.json (a bare trace.jsonl) has no summary.
"""

from __future__ import annotations

import json
from pathlib import Path

from controller import rfc9293, scenario
from controller.report import WHY, causality, packet_info
from controller.trace.index import TraceIndex
from controller.film.words import knobs
from controller.trace.schema import Direction, Kind, StepStatus, Stream, is_listener
from tcplab.files import atomic_write

NAME = "summary.txt"
CAPTURE_DROPS = ("kernel_drops", "kernel_freezes")  # the capture's own counters of a loss
# A counter whose name holds one of these counts a drop, a miss or a refusal (the others count
# work done: frames sent, events resent, restarts): e.g. statemerge_dropped_foreign,
# kstates_missed_pages, transport_refused, link_given_up, link_duplicates, link_frames_before_hello.
LOSS_WORDS = ("drop", "miss", "refus", "reject", "given_up", "lost", "unresolved", "duplicate", "before_hello",
              "error", "freeze")


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
    again = r["dir"] == Direction.OUT and key in sent and (r.get("len") or {"SYN", "FIN"} & set(r.get("flags", [])))
    if r["dir"] == Direction.OUT:
        sent.add(key)
    return "  (retransmission)" if again else ""


def run_hosts(info: dict) -> list[str]:
    """run.json's hosts in the scenario's order (run.json itself is written with sorted keys)."""
    have = list(info.get("hosts", {}))
    try:
        order = list(scenario.parse(info.get("scenario"), source="run.json").hosts)
    except (scenario.ScenarioError, TypeError, ValueError):
        order = []
    return [h for h in order if h in have] + [h for h in have if h not in order]


def losses(info: dict) -> dict[str, dict[str, int]]:
    """Per host, every counter of a drop, miss or refusal in run.json that is not zero
    (``hosts.<h>.counters`` by LOSS_WORDS, and the capture's kernel drops)."""
    out: dict[str, dict[str, int]] = {}
    for host in run_hosts(info):
        facts = info["hosts"][host]
        counted = {k: v for k, v in (facts.get("counters") or {}).items() if any(w in k for w in LOSS_WORDS)}
        counted.update({k: (facts.get("capture") or {}).get(k) for k in CAPTURE_DROPS})
        found = {k: v for k, v in sorted(counted.items()) if isinstance(v, int) and v}
        if found:
            out[host] = found
    return out


def unmet_lines(info: dict) -> list[str]:
    """The failed step's expectations against what was observed (run.json ``unmet``), with the
    records each looked at: for summary.txt and for ``tcplab run``'s failure."""
    out = []
    for u in info.get("unmet") or ():
        if not isinstance(u, dict):
            continue
        out.append(f"step {u.get('step')}: expected {u.get('expected')}; observed {u.get('observed')}")
        out += [f"    {line}" for line in u.get("records") or ()]
    return out


def _header(info: dict) -> list[str]:
    verdict = "OK" if info.get("ok") else "FAILED"
    lines = [f"tcplab run {info.get('run_id')}: {verdict} — scenario {info['scenario']['name']}, "
             f"{info.get('delay_s', 0):g} s egress delay on the lab port"]
    if info.get("error"):
        lines.append(f"error: {info['error']}")
    lines += unmet_lines(info)
    backends = ", ".join(f"{h}: {info['hosts'][h].get('shaper_backend') or 'none'}" for h in run_hosts(info))
    lines.append(f"shaping backend: {backends}")
    for host, found in losses(info).items():
        lines.append(f"dropped, missed or refused on {host}: " + ", ".join(f"{k} {v}" for k, v in found.items()))
    return lines


def _host(ix: TraceIndex, host: str) -> list[str]:
    lines = ["", f"{host}: states"]
    for r in ix.states(host):
        where = r["local"] if is_listener(r) else f"{r['local']} <-> {r['remote']}"
        why = WHY.get((r["from"], r["to"]), "")
        lines.append(f"  {r['t']:9.3f} s  {r['from']:>12} -> {r['to']:<12} {where}" + (f"  ({why})" if why else ""))
    console = ix.console(host)
    if console:
        lines.append(f"{host}: console")
        for r in console:
            arrow = "typed " if r.get("stream") == Stream.STDIN else "prints"
            lines.append(f"  {r['t']:9.3f} s  {arrow} {r['text']!r}")
    return lines


def _knobs(ix: TraceIndex) -> list[str]:
    """The TCP knobs the run changed (a sysctl step) and their restoring."""
    lines = [f"  {r['t']:9.3f} s  {r['host']}: {'restored ' if r.get('restored') else ''}"
             + ", ".join(knobs(r.get("values"))) for r in ix.kind(Kind.SYSCTL)]
    return ["", "TCP knobs (sysctl)"] + lines if lines else []


def _alone(ix: TraceIndex, info: dict) -> list[str]:
    """What a probe did by itself (its dead-man switch, its start-up sweep), and what reached the
    trace only after the controller was lost (controller.aftermath)."""
    lines = []
    for r in ix.records:
        if r["kind"] == Kind.DEADMAN:
            lines.append(f"  {r['t']:9.3f} s  {r['host']}: its controller silent {r.get('silent_s', 0):g} s, it "
                         f"undid by itself: {', '.join(r.get('cleared') or ['nothing'])}")
        elif r["kind"] == Kind.SWEEP:
            lines.append(f"  {r['t']:9.3f} s  {r['host']}: at its start it removed what a killed probe left: "
                         f"{', '.join(r.get('removed') or ['nothing'])}")
    for host in run_hosts(info):
        late = info["hosts"][host].get("after_controller_lost")
        if late:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(late.get("kinds", {}).items()))
            lines.append(f"  {host}: {late.get('records', 0)} record(s) came after the controller was lost "
                         f"and were added when it was back ({kinds})")
    return ["", "Probes on their own"] + lines if lines else []


def render(trace: TraceIndex | list[dict], info: dict) -> str:
    """summary.txt's text for the trace and run.json's ``info``."""
    ix = TraceIndex.of(trace)
    lines = _header(info) + ["", "Steps"]
    for r in ix.kind(Kind.STEP):
        if r["status"] != StepStatus.START:
            lines.append(f"  {r['t']:9.3f} s  step {r['index']} {r['action']} on {r['target']}: {r['status']}"
                         + (f" — {r['error']}" if r.get("error") else ""))
    lines += _knobs(ix)
    lines += _alone(ix, info)
    for host in run_hosts(info):
        lines += _host(ix, host)
    lines += ["", "Packets (as each host's capture saw them; out = sent by that host)"]
    sent: set[tuple] = set()
    for r in ix.kind(Kind.PACKET):
        lines.append(f"  {r['t']:9.3f} s  {r['host']:<12} {r['dir']:<3} {r['src']:>21} -> {r['dst']:<21} "
                     f"{packet_info(r)}" + analysis_note(r, sent))
    check = causality(ix)
    lines += ["", f"Causality: {check['pairs']} segments seen on both hosts, "
                  f"{len(check['violations'])} arrived before they left"]
    if isinstance(info.get("rfc9293"), dict):
        lines.append(rfc9293.verdict(info["rfc9293"]))
    return "\n".join(lines) + "\n"


def write(run_dir: Path, trace: TraceIndex | list[dict]) -> Path | None:
    """Write summary.txt from ``trace`` and the run directory's run.json; None when there is no run.json."""
    meta = Path(run_dir) / "run.json"
    if not meta.is_file():
        return None
    info = json.loads(meta.read_text(encoding="utf-8"))
    return atomic_write(Path(run_dir) / NAME, render(trace, info))
