"""Packet events from frames (pure parts of probe.capture): flags, relative seq/ack, payload, times."""

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Padding

from probe.capture import RelativeSeq, packet_event

A, B = "10.90.0.1", "10.90.0.2"


def frame(src, dst, sport, dport, flags, seq, ack=0, load=b"", pad=b""):
    pkt = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack,
                                                window=502) / load
    if pad:
        pkt = pkt / Padding(load=pad)
    return bytes(pkt)


def flag_names(bits: int) -> list[str]:
    return packet_event(frame(A, B, 9090, 40000, bits, 1), 0, 0, A, RelativeSeq())["flags"]


def test_flag_names_in_wiresharks_order():
    assert flag_names(0x12) == ["SYN", "ACK"]
    assert flag_names(0x18) == ["PSH", "ACK"]
    assert flag_names(0x11) == ["FIN", "ACK"]
    assert flag_names(0xFF) == ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"]


def test_handshake_data_and_close_are_relative_like_wireshark():
    rel = RelativeSeq()
    isn_b, isn_a = 4_000_000_000, 123  # b's ISN wraps past 2**32
    seen = []
    for f in (frame(B, A, 40000, 9090, "S", isn_b),
              frame(A, B, 9090, 40000, "SA", isn_a, isn_b + 1),
              frame(B, A, 40000, 9090, "A", isn_b + 1, isn_a + 1),
              frame(A, B, 9090, 40000, "PA", isn_a + 1, isn_b + 1, b"Hello\n"),
              frame(B, A, 40000, 9090, "PA", (isn_b + 1) % 2**32, isn_a + 7, b"Bye\n"),
              frame(A, B, 9090, 40000, "FA", isn_a + 7, (isn_b + 5) % 2**32)):
        e = packet_event(f, 2_000_000_500, 1_000_000_000, A, rel)
        seen.append((e["dir"], e["flags"], e["seq"], e["ack"], e["len"], e["payload"]))
    assert seen == [("in", ["SYN"], 0, 0, 0, ""), ("out", ["SYN", "ACK"], 0, 1, 0, ""),
                    ("in", ["ACK"], 1, 1, 0, ""), ("out", ["PSH", "ACK"], 1, 1, 6, "Hello\n"),
                    ("in", ["PSH", "ACK"], 1, 7, 4, "Bye\n"), ("out", ["FIN", "ACK"], 7, 5, 0, "")]


def test_event_fields_padding_and_time():
    f = frame(A, B, 9090, 40000, "A", 10, 20, pad=b"\0" * 6)
    e = packet_event(f, 5_000_000_123, 3_000_000_000, A, RelativeSeq())
    assert e["kind"] == "packet" and e["len"] == 0 and e["payload"] == ""
    assert (e["t_ns"], e["wall_ns"]) == (2_000_000_123, 5_000_000_123)
    assert e["frame_len"] == len(f) == 14 + 20 + 20 + 6  # Wireshark's Length: the frame, padding included
    assert (e["src"], e["dst"], e["win"], e["linktype"], e["raw"]) == ("10.90.0.1:9090", "10.90.0.2:40000",
                                                                      502, 1, f)
    assert packet_event(bytes(Ether() / IP(src=A, dst=B) / b"x"), 0, 0, A, RelativeSeq()) is None


def test_invalid_utf8_is_replaced_and_a_new_syn_restarts_numbering():
    rel = RelativeSeq()
    e = packet_event(frame(A, B, 9090, 40000, "PA", 5, 9, b"\xffok\n"), 0, 0, A, rel)
    assert e["payload"] == "\ufffdok\n" and e["len"] == 4
    assert packet_event(frame(B, A, 40000, 9090, "S", 777), 0, 0, A, rel)["seq"] == 0
    assert packet_event(frame(A, B, 9090, 40000, "SA", 999, 778), 0, 0, A, rel)[("ack")] == 1
