"""The words story.md is written with: what each kernel event, phase and end of a connection means,
and how times, delays, payloads and sequence numbers are written (Markdown)."""

from __future__ import annotations

import json
import re

CLOSED_BY = {  # the end of a connection that did not go through the close handshake, by its cause
    "packet": "a RST arrived: the peer reset the connection, which ends at once, without the close handshake",
    "abort": "the application aborted: a RST goes out and the connection ends at once, without the close "
             "handshake",
    "close": "the application closed its socket before a connection was made",
    "unknown": "the connection is gone",
}
KERNEL = {
    # what the kernel reports, not what left the host: with the lab's delay the wire can carry fewer
    # copies than these events (the retransmissions in the packet list are the copies that left)
    "retransmit_skb": "a segment it sent was not acknowledged in time: the kernel retransmits it (the "
                      "copies that left the host are the packet list's retransmissions)",
    "retransmit_synack": "no ACK has come for its SYN+ACK yet: the kernel sends the SYN+ACK again",
    "send_reset": "the kernel sends a RST: the connection is reset",
    "receive_reset": "a RST arrived: the kernel resets the connection",
}
# what Wireshark's other analysis flags say of a segment (a retransmission and a duplicate ACK: story.py)
ANALYSIS = {
    "keep_alive": "Wireshark marks it a keep-alive: one byte behind what was sent and no data, a probe that "
                  "asks the peer whether it is still there (Linux probes a zero window this way too)",
    "keep_alive_ack": "Wireshark marks it the answer to a keep-alive: the peer is still there",
    "zero_window": "Its window is zero: the receiver's buffer is full (its application is not reading), so "
                   "the sender must stop",
    "zero_window_probe": "Wireshark marks it a zero-window probe: the sender asks whether the window has opened",
    "window_update": "Wireshark marks it a window update: it only tells the peer that the window opened again",
    "window_full": "Wireshark marks it window full: it fills the last of the receiver's advertised window",
    "out_of_order": "Wireshark marks it out of order: it came after segments sent later",
    "previous_segment_not_captured": "Wireshark marks that a segment before it was not captured",
}
PHASES = (("handshake", "the three-way handshake"), ("data", "data"), ("close", "closing the connection"),
           ("timewait", "TIME_WAIT runs out"), ("reset", "a reset"))
CLOSING = {"FIN_WAIT1", "FIN_WAIT2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT"}


def knobs(values: object) -> list[str]:
    """A sysctl record's knobs in words: ``net.ipv4.tcp_syn_retries 6 → 2``."""
    out = []
    for name, v in sorted(values.items()) if isinstance(values, dict) else ():
        was, now = (" ".join(map(str, v.get(k) or [])) for k in ("was", "now")) if isinstance(v, dict) else ("?", "?")
        out.append(f"net.ipv4.{name} {was} → {now}")
    return out


def stamp(t: float) -> str:
    return f"**{t:.3f} s**"


def later(dt: float) -> str:
    ms = dt * 1000
    return "less than 0.1 ms later" if ms < 0.05 else f"{ms:.1f} ms later" if ms < 1000 else f"{dt:.3f} s later"


SHOWN = 40  # of a long payload, the characters story.md quotes


def shortened(text: str) -> str:
    """A payload as story.md quotes it: whole when short, else its start and how much there was."""
    return text if len(text) <= SHOWN + 20 else f"{text[:SHOWN]}… ({len(text)} characters)"


def code(text: str) -> str:
    """``text`` as a Markdown code span, quoted as JSON (so a newline shows as \\n)."""
    text = json.dumps(text, ensure_ascii=False)
    if "`" not in text:
        return f"`{text}`"
    fence = "`" * (max(len(run) for run in re.findall(r"`+", text)) + 1)  # longer than any run inside
    return f"{fence} {text} {fence}"


def and_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def seq_end(p: dict) -> int:
    """The sequence number just after the segment (SYN and FIN count one)."""
    return p.get("seq", 0) + p.get("len", 0) + len({"SYN", "FIN"} & set(p.get("flags", [])))
