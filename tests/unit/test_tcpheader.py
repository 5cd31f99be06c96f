"""tcplab.tcpheader: the one decoder the capture and the analysis share, on frames scapy builds."""

from __future__ import annotations

import socket

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Padding

from controller import analysis
from probe.capture import RelativeSeq, packet_event
from tcplab import tcpheader
from tcplab.tcpheader import ACK, PSH, SYN, decode

A, B = "10.90.0.1", "10.90.0.2"


def payload_len(h) -> int:
    return h.end - h.data_at


def tcp(**kw):
    return TCP(sport=9090, dport=40000, flags="PA", seq=7, ack=9, window=502, **kw)


def test_ipv4_fields_offsets_and_padding():
    f = bytes(Ether() / IP(src=A, dst=B) / tcp() / b"Hello\n" / Padding(load=b"\0" * 4))
    h = decode(f)
    assert (socket.inet_ntoa(h.src), socket.inet_ntoa(h.dst), h.sport, h.dport, h.seq, h.ack, h.window) == \
        (A, B, 9090, 40000, 7, 9, 502)
    assert h.flags == PSH | ACK and (h.options_at, h.data_at, h.end) == (54, 54, 60)
    assert payload_len(h) == 6 and f[h.data_at:h.end] == b"Hello\n"


def test_ipv6_and_any_number_of_vlan_tags():
    v6 = decode(bytes(Ether() / IPv6(src="fd00::1", dst="fd00::2") / tcp() / b"abc"))
    assert socket.inet_ntop(socket.AF_INET6, v6.src) == "fd00::1" and payload_len(v6) == 3 and v6.data_at == 74
    one = decode(bytes(Ether() / Dot1Q(vlan=5) / IP(src=A, dst=B) / tcp() / b"abc"))
    qinq = decode(bytes(Ether() / Dot1AD(vlan=7) / Dot1Q(vlan=5) / IP(src=A, dst=B) / tcp() / b"abc"))
    assert (one.data_at, qinq.data_at) == (58, 62) and payload_len(one) == payload_len(qinq) == 3


def test_ip_options_tcp_options_and_the_window_scale():
    f = bytes(Ether() / IP(src=A, dst=B, options=[b"\x94\x04\x00\x00"]) /
              TCP(flags="S", options=[("MSS", 1460), ("NOP", None), ("WScale", 15)]))
    h = decode(f)
    assert h.options_at == 14 + 24 + 20 and h.data_at == h.end and h.flags == SYN
    assert tcpheader.window_scale(f, h) == 14  # RFC 7323: at most 14
    assert tcpheader.window_scale(bytes(Ether() / IP() / TCP(options=[("MSS", 1460)])),
                                  decode(bytes(Ether() / IP() / TCP(options=[("MSS", 1460)])))) is None


def test_ip_length_zero_is_to_the_end_of_the_frame():
    f = bytearray(bytes(Ether() / IP(src=A, dst=B) / tcp() / (b"x" * 100)))
    f[16:18] = b"\0\0"  # a segmentation-offloaded frame past 64 KiB
    assert payload_len(decode(bytes(f))) == 100


@pytest.mark.parametrize("frame", [
    b"", b"\0" * 13, bytes(Ether() / IP(src=A, dst=B) / UDP() / (b"x" * 40)),
    bytes(Ether() / IP(src=A, dst=B, frag=3) / tcp()),  # not the first fragment
    bytes(Ether() / IP(src=A, dst=B) / tcp())[:14 + 20 + 19],  # TCP header cut short
    bytes(Ether() / Dot1Q(vlan=5))[:16],  # cut inside the tag
    bytes(Ether() / IPv6() / UDP() / (b"x" * 40)),
    bytes(Ether(type=0x0806) / (b"\0" * 60)),  # ARP
], ids=["empty", "short", "udp", "fragment", "cut-tcp", "cut-vlan", "udp6", "arp"])
def test_no_tcp_header_is_none_for_both_readers(frame):
    assert decode(frame) is None
    assert analysis.decode(frame) is None
    assert packet_event(frame, 0, 0, A, RelativeSeq()) is None


def test_the_capture_and_the_analysis_read_the_same_header():
    f = bytes(Ether() / Dot1Q(vlan=5) / IP(src=A, dst=B) / TCP(sport=9090, dport=40000, flags="SA", seq=5, ack=9,
                                                                 window=300, options=[("WScale", 7)]) / b"hi")
    seg, ev = analysis.decode(f), packet_event(f, 10, 0, A, RelativeSeq())
    assert seg == analysis.Segment((socket.inet_aton(A), 9090), (socket.inet_aton(B), 40000), 5, 9, 0x12, 300, 2, 7)
    assert (ev["src"], ev["dst"], ev["flags"], ev["win"], ev["len"], ev["payload"]) == \
        (f"{A}:9090", f"{B}:40000", ["SYN", "ACK"], 300, 2, "hi")
    # the probe's trace is IPv4 (its addresses are "ip:port"): an IPv6 frame is the analysis's only
    v6 = bytes(Ether() / IPv6(src="fd00::1", dst="fd00::2") / tcp())
    assert analysis.decode(v6) is not None and packet_event(v6, 0, 0, A, RelativeSeq()) is None
