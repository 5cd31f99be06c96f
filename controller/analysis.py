"""Wireshark's TCP sequence analysis (``tcp.analysis.*``) for one host's capture, without Wireshark.

``analyze(frames)`` (or :class:`Analyzer`, a frame at a time) takes the frames of one capture in capture order, each ``(ethernet_bytes,
timestamp_ns)``, and returns per frame the list of flags Wireshark would set, by Wireshark's names
(the display filter ``tcp.analysis.<name>``; two are renamed for plain reading):

=================================  ==========================================================
ours                               Wireshark (filter, expert message)
=================================  ==========================================================
``retransmission``                 ``tcp.analysis.retransmission``: also on every fast and spurious
                                   retransmission, as in Wireshark's filter
``fast_retransmission``            ``tcp.analysis.fast_retransmission``
``spurious_retransmission``        ``tcp.analysis.spurious_retransmission``
``out_of_order``                   ``tcp.analysis.out_of_order``
``duplicate_ack``                  ``tcp.analysis.duplicate_ack``
``keep_alive`` / ``keep_alive_ack``  ``tcp.analysis.keep_alive`` / ``tcp.analysis.keep_alive_ack``
``zero_window``                    ``tcp.analysis.zero_window``
``zero_window_probe``              ``tcp.analysis.zero_window_probe``
``window_update``                  ``tcp.analysis.window_update``
``window_full``                    ``tcp.analysis.window_full``
``previous_segment_not_captured``  ``tcp.analysis.lost_segment``
``ack_of_unseen_segment``          ``tcp.analysis.ack_lost_segment`` ("ACKed unseen segment")
=================================  ==========================================================

The rules are those of ``tcp_analyze_sequence_number()`` in Wireshark 4.0's
epan/dissectors/packet-tcp.c (the tshark Debian 12 ships), with its default preferences
(sequence analysis on, fast retransmission takes precedence over out-of-order, no default window
scaling), written down in the Wireshark User's Guide, section "TCP Analysis". They work on absolute
sequence numbers, unscaled windows and the frames' own timestamps; state is kept per conversation
(address/port pair, both directions), and a SYN with a new sequence number on a known pair starts a
new conversation (Wireshark's "port numbers reused"). ``zero_window_probe_ack`` is computed (it stops
the duplicate-ACK rule, as in Wireshark) but not reported. A pure function: no I/O. The headers are
read by tcplab.tcpheader, the decoder the probe's capture uses too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

from tcplab import tcpheader
from tcplab.tcpheader import ACK, FIN, RST, SYN

FLAGS = ("retransmission", "fast_retransmission", "spurious_retransmission", "out_of_order",
         "duplicate_ack", "keep_alive", "keep_alive_ack", "zero_window", "zero_window_probe",
         "window_update", "window_full", "previous_segment_not_captured", "ack_of_unseen_segment")
ZERO_WINDOW_PROBE_ACK = "zero_window_probe_ack"  # Wireshark has it; the trace does not report it

_M = 0xFFFFFFFF
_MAX_UNACKED = 10000  # TCP_MAX_UNACKED_SEGMENTS
_FAST_RT_NS = 20_000_000  # a fast retransmission comes within 20 ms of the last duplicate ACK
_OOO_DEFAULT_NS = 3_000_000  # out-of-order window when the handshake's RTT is unknown
_new = tuple.__new__  # builds a Segment without NamedTuple's Python-level __new__ (once per frame)


class Segment(NamedTuple):
    src: tuple  # (address bytes, port)
    dst: tuple
    seq: int
    ack: int
    flags: int  # the 12 bits after the data offset
    window: int  # as on the wire (unscaled)
    seglen: int  # TCP payload length (from the IP length: Ethernet padding excluded)
    wscale: int | None  # the window scale option's shift, on a SYN that has one


def decode(frame: bytes) -> Segment | None:
    """The TCP header fields of an Ethernet frame (IPv4 or IPv6), or None when it holds no TCP."""
    h = tcpheader.decode(frame)
    if h is None:
        return None
    src, dst, sport, dport, seq, ack, flags, window, _, data_at, end = h
    wscale = tcpheader.window_scale(frame, h) if flags & SYN else None
    return _new(Segment, ((src, sport), (dst, dport), seq, ack, flags, window, max(0, end - data_at), wscale))


def _sd(a: int, b: int) -> int:
    """a - b as a signed 32-bit difference (GT_SEQ/LT_SEQ/LE_SEQ)."""
    d = (a - b) & _M
    return d - (1 << 32) if d & 0x80000000 else d


@dataclass
class _Flow:
    """One direction of a conversation (Wireshark's tcp_flow_t + tcp_analyze_seq_flow_info_t)."""
    base_seq: int | None = None
    win_scale: int = -1  # -1 unknown, -2 no scaling, else the shift
    window: int = _M  # last window seen (G_MAXUINT32 before any)
    is_first_ack: bool = True
    nextseq: int = 0  # 0: none yet
    nextseq_ns: int = 0
    maxseqtobeacked: int = 0
    lastack: int = 0
    lastack_ns: int = 0
    dupacknum: int = 0
    lastsegmentflags: frozenset = frozenset()
    segments: list = field(default_factory=list)  # unacked (seq, nextseq)


@dataclass
class _Conversation:
    flows: dict = field(default_factory=dict)
    mru_syn_ns: int | None = None
    first_rtt_ns: int = 0

    def flow(self, end: tuple) -> _Flow:
        return self.flows.setdefault(end, _Flow())


class Analyzer:
    """The analysis one frame at a time, as the capture goes (Wireshark's first pass looks only at
    what came before a frame, so a frame's flags are final when it is added): the run knows a
    packet's flags as it arrives, and a step can wait for a retransmission or a zero window."""

    def __init__(self) -> None:
        self.convs: dict[frozenset, _Conversation] = {}

    def add(self, raw: bytes, t_ns: int) -> list[str]:
        """The flags Wireshark sets on this frame, the next of the capture."""
        seg = decode(raw)
        if seg is None:
            return []
        key = frozenset((seg.src, seg.dst))
        conv = self.convs.get(key)
        if conv is None:
            conv = self.convs[key] = _Conversation()
        elif (seg.flags & (SYN | ACK)) == SYN:
            base = conv.flow(seg.src).base_seq
            if base is not None and seg.seq != base:  # port numbers reused: a new conversation
                conv = self.convs[key] = _Conversation()
        ta = _analyze_segment(conv, conv.flow(seg.src), conv.flow(seg.dst), seg, t_ns)
        _after(conv, conv.flow(seg.src), conv.flow(seg.dst), seg, t_ns)
        return [f for f in FLAGS if f in ta]


def analyze(frames: Iterable[tuple[bytes, int]]) -> list[list[str]]:
    """For each ``(frame, timestamp_ns)`` in capture order, the flags Wireshark sets on it."""
    one = Analyzer()
    return [one.add(raw, t_ns) for raw, t_ns in frames]


def _after(conv: _Conversation, fwd: _Flow, rev: _Flow, seg: Segment, t_ns: int) -> None:
    """What dissect_tcp learns from a segment besides the sequence analysis: RTT, window scaling."""
    if seg.flags & SYN and not seg.flags & ACK:
        conv.mru_syn_ns = t_ns
    elif (seg.flags & (SYN | ACK)) == ACK and not conv.first_rtt_ns and conv.mru_syn_ns is not None:
        conv.first_rtt_ns = t_ns - conv.mru_syn_ns
    if seg.flags & ACK and not seg.flags & SYN:
        fwd.is_first_ack = False
    if seg.flags & SYN:
        if seg.wscale is not None:
            fwd.win_scale = seg.wscale
            if seg.flags & ACK and rev.win_scale == -2:
                fwd.win_scale = -2  # the SYN had none: the peers do not scale
        elif fwd.win_scale == -1:
            fwd.win_scale = rev.win_scale = -2  # no option: the peers do not scale


def _analyze_segment(conv: _Conversation, fwd: _Flow, rev: _Flow, s: Segment, now: int) -> set:
    seq, ack, seglen, flags, window = s.seq, s.ack, s.seglen, s.flags, s.window
    ta: set = set()
    if fwd.base_seq is None:
        fwd.base_seq = seq if flags & SYN else (seq - 1) & _M
    if rev.base_seq is None and flags & ACK:
        rev.base_seq = (ack - 1) & _M

    if seglen == 1 and seq == fwd.nextseq and rev.window == 0:
        ta.add("zero_window_probe")
    else:
        _forward_checks(fwd, rev, s, ta)

    # finished_fwd:
    if ack != fwd.lastack:  # the ACK moved: the duplicate ACK count starts again
        fwd.dupacknum = 0
    if rev.maxseqtobeacked and _sd(ack, rev.maxseqtobeacked) > 0 and flags & ACK:
        # Wireshark 4.0 (checked against tshark 4.0.17): unsigned comparison; the -1 marks "already
        # told" until the other side's ACK moves, and counts as 2**32-1 duplicate ACKs (unsigned)
        if rev.maxseqtobeacked < rev.nextseq:
            rev.maxseqtobeacked = rev.nextseq
            ta.add("ack_of_unseen_segment")
        else:
            if rev.dupacknum == 0:
                ta.add("ack_of_unseen_segment")
            rev.dupacknum = -1

    if seglen > 0 or flags & (SYN | FIN):
        _retransmission_checks(conv, fwd, rev, s, now, ta)

    nextseq = (seq + seglen) & _M
    if (seglen or flags & (SYN | FIN)) and len(fwd.segments) < _MAX_UNACKED:
        if flags & (SYN | FIN):
            nextseq = (nextseq + 1) & _M
        fwd.segments.append([seq, nextseq])
    zwp = "zero_window_probe" in ta
    if (_sd(nextseq, fwd.nextseq) > 0 or not fwd.nextseq) and not zwp:
        fwd.nextseq, fwd.nextseq_ns = nextseq, now
    if (seq == fwd.maxseqtobeacked or not fwd.maxseqtobeacked) and not zwp:
        fwd.maxseqtobeacked = fwd.nextseq
    fwd.window, fwd.lastack, fwd.lastack_ns = window, ack, now
    fwd.lastsegmentflags = frozenset(ta)
    _remove_acked(rev, ack)
    return ta


def _forward_checks(fwd: _Flow, rev: _Flow, s: Segment, ta: set) -> None:
    """Zero window, lost segment, keep-alive, window update/full, keep-alive ACK, duplicate ACK."""
    seq, ack, seglen, flags, window = s.seq, s.ack, s.seglen, s.flags, s.window
    plain = not flags & (SYN | FIN | RST)
    if window == 0 and plain:
        ta.add("zero_window")
    if fwd.nextseq and _sd(seq, fwd.nextseq) > 0 and not flags & RST:
        ta.add("previous_segment_not_captured")
    if seglen in (0, 1) and seq == (fwd.nextseq - 1) & _M and plain:
        ta.add("keep_alive")
    same = seglen == 0 and seq == fwd.nextseq and ack == fwd.lastack and plain
    if same and window and window != fwd.window:
        ta.add("window_update")
    if seglen > 0 and rev.win_scale != -1 and plain:
        shift = 0 if rev.is_first_ack or rev.win_scale == -2 else rev.win_scale
        if (seq + seglen) & _M == (rev.lastack + (rev.window << shift)) & _M:
            ta.add("window_full")
    if same and window and window == fwd.window and "keep_alive" in rev.lastsegmentflags:
        ta.add("keep_alive_ack")
        return
    if same and window == 0 and fwd.window == 0 and "zero_window_probe" in rev.lastsegmentflags:
        ta.add(ZERO_WINDOW_PROBE_ACK)
        return
    if same and window and window == fwd.window:
        fwd.dupacknum = 1 if fwd.dupacknum == -1 else fwd.dupacknum + 1
        ta.add("duplicate_ack")


def _retransmission_checks(conv: _Conversation, fwd: _Flow, rev: _Flow, s: Segment, now: int, ta: set) -> None:
    seq, seglen, flags = s.seq, s.seglen, s.flags
    if "keep_alive" in ta:
        return
    not_advanced = bool(fwd.nextseq) and _sd(seq, fwd.nextseq) < 0
    if seglen > 1 and (fwd.nextseq - 1) & _M == seq:
        not_advanced = False  # follows a possible zero window probe: new data
    if seglen > 0 and rev.lastack and _sd((seq + seglen) & _M, rev.lastack) <= 0:
        ta.update(("spurious_retransmission", "retransmission"))
        return
    since_ack = now - rev.lastack_ns
    if not_advanced and (rev.dupacknum & _M) >= 2 and rev.lastack == seq and 0 <= since_ack < _FAST_RT_NS:
        ta.update(("fast_retransmission", "retransmission"))
        return
    since_next = now - fwd.nextseq_ns
    thres = conv.first_rtt_ns or _OOO_DEFAULT_NS
    end = (seq + seglen + (1 if flags & (SYN | FIN) else 0)) & _M
    if not_advanced and 0 <= since_next < thres and fwd.nextseq != end:
        ta.add("out_of_order")
        return
    if not_advanced:
        ta.add("retransmission")


def _remove_acked(rev: _Flow, ack: int) -> None:
    keep = []
    for seg in rev.segments:
        if ack != seg[1] and _sd(ack, seg[0]) > 0 and _sd(ack, seg[1]) <= 0:
            seg[0] = ack  # part of it acknowledged
        if ack == seg[1] or _sd(seg[1], ack) <= 0:
            continue  # acknowledged (or older): dropped
        keep.append(seg)
    rev.segments = keep
