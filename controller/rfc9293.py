"""The RFC 9293 check: every state transition of a trace against what the RFC allows.

Allowed: the twenty transitions of the RFC's state diagram (section 3.3.2, figure 5;
controller.film.model.RFC_TRANSITIONS), and those its text adds:

- a reset received (3.10.7.3, 3.10.7.4): SYN-SENT, SYN-RECEIVED, ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2,
  CLOSE-WAIT, CLOSING, LAST-ACK and TIME-WAIT go to CLOSED;
- the ABORT call (3.10.4): the same states go to CLOSED (a reset sent where the connection was
  synchronized);
- FIN-WAIT-1 to TIME-WAIT: the peer's FIN and the ACK of ours in one segment (3.10.7.4, the FIN bit
  in FIN-WAIT-1);
- a user timeout (3.10.8) or the SYN's retransmissions given up: any of those states to CLOSED.

Linux's known differences are named, not flagged (:data:`LINUX`):

- ``time_wait_60s``: TIME-WAIT lasts 60 s (TCP_TIMEWAIT_LEN), not 2 MSL (the RFC's MSL is 2
  minutes);
- ``orphan_fin_wait2``: FIN-WAIT-2 to CLOSED: an orphaned FIN-WAIT-2 (its application gone) is a
  timewait socket that Linux ends after ``tcp_fin_timeout`` when no FIN comes; the RFC waits for the
  FIN;
- ``child_at_final_ack``: a server's connection socket first seen in ESTABLISHED (CLOSED to
  ESTABLISHED or to SYN-RECEIVED): Linux keeps a half-open connection as a request sock that no
  state dump shows; a trace that saw it has LISTEN to SYN-RECEIVED.

Anything else is not a TCP transition: it is listed (host, socket, time) and fails the run, unless
only the poller saw it (``source`` inet_diag: no tracepoint on that host, or none for that change).
A poller dumps the sockets every few milliseconds and misses a state shorter than that, so its
"ESTABLISHED -> TIME_WAIT" says the states between went unseen, not that TCP skipped them: those
are counted as ``unseen`` and named, not flagged.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from controller.film.model import RFC_TRANSITIONS

_ENDING = ("SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE_WAIT", "CLOSING",
           "LAST_ACK", "TIME_WAIT")
# the RFC's text beyond the figure: transition -> where
TEXT = {**{(s, "CLOSED"): "3.10.7.4 / 3.10.4: a reset received or sent (ABORT), or a user timeout (3.10.8)"
           for s in _ENDING},
        ("SYN_SENT", "CLOSED"): "3.10.7.3: a reset to the SYN, or the SYN's retransmissions given up (3.10.8)",
        ("FIN_WAIT1", "TIME_WAIT"): "3.10.7.4: the peer's FIN with the ACK of ours, in one segment"}
LINUX = {
    "time_wait_60s": "TIME_WAIT lasts 60 s on Linux (TCP_TIMEWAIT_LEN), not 2 MSL (4 minutes in the RFC)",
    "orphan_fin_wait2": "FIN_WAIT2 -> CLOSED: Linux ends an orphaned FIN_WAIT2 after tcp_fin_timeout when no "
                        "FIN comes (the RFC waits for the FIN)",
    "child_at_final_ack": "a server's connection socket first seen at the final ACK of the handshake: Linux "
                          "keeps a half-open connection as a request sock no state dump shows",
}
_LINUX_MOVES = {("FIN_WAIT2", "CLOSED"): "orphan_fin_wait2", ("CLOSED", "ESTABLISHED"): "child_at_final_ack",
                ("CLOSED", "SYN_RECEIVED"): "child_at_final_ack"}


def rule(frm: str, to: str) -> str | None:
    """Where RFC 9293 allows ``frm -> to``: its figure's event/action, its text's section, or None."""
    if (frm, to) in RFC_TRANSITIONS:
        return f"figure 5: {RFC_TRANSITIONS[(frm, to)]}"
    return TEXT.get((frm, to))


def check(records: Iterable[dict]) -> dict:
    """The check of a trace's state records: ``{"ok", "transitions", "illegal": [...], "linux": {name: count}}``;
    each illegal one with its time, host, socket and states."""
    illegal, linux, n, unseen = [], Counter(), 0, 0
    for r in records:
        if r.get("kind") != "state":
            continue
        n += 1
        frm, to = r["from"], r["to"]
        if (frm, to) in _LINUX_MOVES:  # (an RST in FIN_WAIT2 is the RFC's too: named all the same)
            linux[_LINUX_MOVES[(frm, to)]] += 1
        elif (frm, to) == ("TIME_WAIT", "CLOSED"):
            linux["time_wait_60s"] += 1
        elif rule(frm, to) is None and frm != to and r.get("source") == "inet_diag":
            unseen += 1
        elif rule(frm, to) is None and frm != to:
            illegal.append({"t": r["t"], "host": r["host"], "local": r["local"], "remote": r["remote"],
                            "from": frm, "to": to})
    return {"ok": not illegal, "transitions": n, "illegal": illegal, "linux": dict(sorted(linux.items())),
            "unseen": unseen}


def verdict(result: dict) -> str:
    """One line for summary.txt and a failed run's error."""
    if result["illegal"]:
        first = result["illegal"][0]
        more = f" (and {len(result['illegal']) - 1} more)" if len(result["illegal"]) > 1 else ""
        return (f"RFC 9293: {first['host']} went {first['from']} -> {first['to']} at {first['t']:.3f} s "
                f"({first['local']} <-> {first['remote']}), which TCP does not allow{more}")
    named = "; ".join(f"{LINUX[k]} (x{v})" for k, v in result["linux"].items())
    gaps = (f"; {result['unseen']} of them the poller's jumps over states too short for it to see"
            if result.get("unseen") else "")
    return (f"RFC 9293: all {result['transitions']} transitions allowed{gaps}"
            + (f"; Linux's own: {named}" if named else ""))


def lines(result: dict) -> list[str]:
    """story.md's paragraph: the verdict, then each transition TCP does not make and each of Linux's
    own ways the trace shows, one line each."""
    out = [f"{verdict(result)}." if result["illegal"] else
           f"All {result['transitions']} transitions of the trace are ones RFC 9293 allows."]
    out += [f"- **not TCP:** {r['host']} {r['from']} → {r['to']} at {r['t']:.3f} s ({r['local']} ↔ {r['remote']})"
            for r in result["illegal"]]
    out += [f"- Linux's own ({n}×): {LINUX[k]}." for k, n in result["linux"].items()]
    if result.get("unseen"):
        out.append(f"- {result['unseen']} transition(s) only the poller saw jump over states too short for it "
                   "to see between two dumps: a gap in what was seen, not in TCP.")
    return out
