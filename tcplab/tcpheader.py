"""The one TCP header decoder: an Ethernet frame's IP addresses and TCP header, no scapy per packet.

Both ends read frames through it: the probe's capture (every packet of the lab port, in the reader
thread, so it must stay cheap: bench/tcpheader.py times it, bench/capture.py the whole capture) and
the controller's sequence analysis (controller.analysis). It reads Ethernet with any number of
802.1Q / 802.1ad (QinQ) tags, IPv4 (the first fragment only) or IPv6 (TCP as the first next header),
and the fixed 20 bytes of TCP; a frame that is not that, or is cut short, gives None.

Offsets, not copies: the header tells where the TCP options and the payload start and where the IP
packet ends (Ethernet padding is not payload). IP's length 0 (a segmentation-offloaded frame past
64 KiB) means "to the end of the frame".
"""

from __future__ import annotations

import struct
from typing import NamedTuple

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8

_ETHERTYPE = struct.Struct("!H")
_IPV4 = struct.Struct("!BxHxxHxBxx4s4s")  # version/ihl, total length, fragment, protocol, src, dst
_IPV6 = struct.Struct("!4xHBx16s16s")  # payload length, next header, src, dst
_TCP = struct.Struct("!HHIIHH4x")  # ports, seq, ack, data offset + flags, window (checksum, urgent)


class TcpHeader(NamedTuple):
    src: bytes  # the source address: 4 bytes (IPv4) or 16 (IPv6)
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int  # the 12 bits after the data offset: FIN 0x01 ... CWR 0x80 (Wireshark's order)
    window: int  # as on the wire (unscaled)
    options_at: int  # offset in the frame of the TCP options (the header's 21st byte)
    data_at: int  # offset of the TCP payload
    end: int  # offset where the IP packet ends (the payload is frame[data_at:end])


_new = tuple.__new__  # builds a TcpHeader without NamedTuple's Python-level __new__ (the hot path)


def decode(frame: bytes) -> TcpHeader | None:
    """The TCP header of an Ethernet frame, or None when the frame holds no (whole) TCP header."""
    try:
        ethertype, off = _ETHERTYPE.unpack_from(frame, 12)[0], 14
        while ethertype == ETH_VLAN or ethertype == ETH_QINQ:
            ethertype = _ETHERTYPE.unpack_from(frame, off + 2)[0]
            off += 4
        if ethertype == ETH_IPV4:
            vihl, total, frag, proto, src, dst = _IPV4.unpack_from(frame, off)
            if vihl >> 4 != 4 or proto != 6 or frag & 0x1FFF:  # not IPv4, not TCP, not the first fragment
                return None
            tcp_at = off + (vihl & 0x0F) * 4
            end = off + total if total else len(frame)
        elif ethertype == ETH_IPV6:
            plen, nxt, src, dst = _IPV6.unpack_from(frame, off)
            if nxt != 6:
                return None
            tcp_at = off + 40
            end = tcp_at + plen if plen else len(frame)
        else:
            return None
        sport, dport, seq, ack, offflags, window = _TCP.unpack_from(frame, tcp_at)
    except struct.error:  # cut short
        return None
    return _new(TcpHeader, (src, dst, sport, dport, seq, ack, offflags & 0x0FFF, window, tcp_at + 20,
                            tcp_at + (offflags >> 12) * 4, end))


def window_scale(frame: bytes, h: TcpHeader) -> int | None:
    """The window scale option's shift (at most 14, RFC 7323) in ``h``'s options, or None."""
    opts = frame[h.options_at:h.data_at]
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:  # end of options
            break
        if kind == 1:  # no-operation
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        if kind == 3 and opts[i + 1] == 3 and i + 2 < len(opts):
            return min(opts[i + 2], 14)
        i += opts[i + 1]
    return None
