"""The terminal film in plain words, one line per moment, for output that is not a terminal.

``tcplab replay`` and ``tcplab watch`` print these when stdout is a pipe or a file (CI, ``| less``):
no escape codes, one line per moment of the film, e.g.::

      2.841 s  [7/9] close on raspberrypi  thinkpad TIME_WAIT · raspberrypi LAST_ACK  thinkpad FIN_WAIT2 ->
      TIME_WAIT: No. 20: FIN, ACK arrived (53458 → 9090 [FIN, ACK] Seq=5 Ack=8 Win=63 Len=0)

(one line, folded here).
"""

from __future__ import annotations

from controller.film.model import Film
from controller.film.term import step_label, step_progress
from controller.trace import Direction, Kind, StepStatus, Stream
from tcplab.impairment import of_record


def describe(film: Film, i: int) -> str:
    """What trace record ``i`` (a moment) shows, in words."""
    r = film.records[i]
    kind, host = r["kind"], r["host"]  # a moment's words, by its kind
    if kind == Kind.STEP:
        verb = {StepStatus.START: "begins", StepStatus.OK: "done"}.get(r["status"], "FAILED")
        return f"step {r['index']} {verb}" + (f": {r['error']}" if r.get("error") else "")
    if kind == Kind.SHAPER:
        if not r.get("backend"):
            return f"{host}: shaping cleared"
        return f"{host}: shaping on ({r['backend']}, {of_record(r).words()})"
    if kind == Kind.PACKET:
        row = film.packets[film.packet_no[i] - 1]
        verb = "sends" if r["dir"] == Direction.OUT else "receives"
        again = " (retransmission)" if row["retransmission"] else ""
        return f"No. {row['no']} {host} {verb} {row['info']}{again}"
    if kind == Kind.KERNEL:
        return f"{host} kernel: {r.get('event')} on {r.get('local')} ({r.get('state') or 'state unknown'})"
    if kind == Kind.STATE:
        tr = next((tr for tr in film.transitions if tr.record == i), None)
        if tr is not None:
            why = tr.because if tr.packet is None else f"No. {tr.packet}: {tr.because}"
            return f"{host} {tr.frm} -> {tr.to}: {why}"
        return f"{host} socket {r['local']} {r['from']} -> {r['to']}"
    if kind == Kind.CONSOLE:
        verb = "types" if r.get("stream") == Stream.STDIN else "prints"
        return f"{host} {verb} {r['text']!r}"
    return f"{host} {kind}"


def line(film: Film, i: int, total_steps: int | None = None) -> str:
    """The plain line of moment ``i``: time, current step, both hosts' states, what happened."""
    step, _done, total = step_progress(film, i, total_steps)
    states = " · ".join(f"{h} {film.state_at(h, i)}" for h in film.hosts)
    return f"{film.records[i]['t']:9.3f} s  {step_label(step, total)}  {states}  {describe(film, i)}"
