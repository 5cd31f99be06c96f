"""controller.analysis against tshark, frame by frame, on crafted captures (scapy builds the frames).

Each scenario is written to a pcapng with controller.pcapng, read back by tshark (Wireshark 4.0)
and by ``analysis.analyze``: both must give the same flags on the same frames, and the scenario
must show the flags it was made for (so it tests what its name says).
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from controller import analysis
from controller.pcapng import PcapngWriter
from tests import tshark

SERVER, CLIENT = ("10.90.0.1", 9090), ("10.90.0.2", 40000)
ISN = {"c": 1_000_000, "s": 3_000_000_000}  # the server's crosses 2**32 within the test's data
T0 = 1_700_000_000_000_000_000
MS = 1_000_000


class Capture:
    """Frames of one connection, numbers relative to each side's ISN as Wireshark shows them."""

    def __init__(self, wscale: int | None = 7):
        self.frames: list[tuple[bytes, int]] = []
        self.t = T0
        self.wscale = wscale

    def seg(self, side: str, flags: str, seq: int, ack: int = 0, data: int | bytes = b"", win: int = 502,
            dt_ms: float = 10.0, options: list | None = None, ip_src=None) -> "Capture":
        src, dst = (CLIENT, SERVER) if side == "c" else (SERVER, CLIENT)
        other = "s" if side == "c" else "c"
        payload = b"x" * data if isinstance(data, int) else data
        tcp = TCP(sport=src[1], dport=dst[1], flags=flags, window=win,
                  seq=(ISN[side] + seq) & 0xFFFFFFFF, ack=(ISN[other] + ack) & 0xFFFFFFFF if "A" in flags else 0)
        if options:
            tcp.options = options
        frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=src[0], dst=dst[0]) / tcp
        if payload:
            frame = frame / Raw(payload)
        self.t += int(dt_ms * MS)
        self.frames.append((bytes(frame), self.t))
        return self

    def handshake(self, syn_win: int = 64240, synack_win: int = 65160, rtt_ms: float = 10.0) -> "Capture":
        opts = [("MSS", 1460), ("WScale", self.wscale)] if self.wscale is not None else [("MSS", 1460)]
        self.seg("c", "S", 0, win=syn_win, options=opts)
        self.seg("s", "SA", 0, 1, win=synack_win, options=opts, dt_ms=rtt_ms / 2)
        return self.seg("c", "A", 1, 1, dt_ms=rtt_ms / 2)


def compare(cap: Capture, tmp_path, expect: dict[int, set]) -> list[list[str]]:
    """Ours == tshark's on every frame; ``expect`` (frame number from 1 -> flags) must hold too."""
    path = tmp_path / "crafted.pcapng"
    with PcapngWriter(path, ["lab"]) as w:
        for frame, t in cap.frames:
            w.write(0, frame, t)
    ours = analysis.analyze(cap.frames)
    theirs = tshark.analysis_flags(path)
    assert len(theirs) == len(cap.frames)
    diff = [(i + 1, o, t) for i, (o, t) in enumerate(zip(ours, theirs)) if o != t]
    assert not diff, f"frames where ours != tshark (frame, ours, tshark): {diff}"
    for n, flags in expect.items():
        assert flags <= set(ours[n - 1]), (n, ours[n - 1])
    return ours


def test_retransmission_after_a_timeout(tmp_path):
    cap = Capture().handshake().seg("c", "PA", 1, 1, b"Hello\n").seg("c", "PA", 1, 1, b"Hello\n", dt_ms=200)
    cap.seg("s", "A", 1, 7, dt_ms=1)
    ours = compare(cap, tmp_path, {5: {"retransmission"}})
    assert ours[4] == ["retransmission"] and ours[3] == []


def test_syn_and_fin_retransmissions_the_labs_delay_causes(tmp_path):
    cap = Capture().seg("c", "S", 0, options=[("MSS", 1460), ("WScale", 7)])
    cap.seg("c", "S", 0, options=[("MSS", 1460), ("WScale", 7)], dt_ms=1000)
    cap.seg("s", "SA", 0, 1, options=[("MSS", 1460), ("WScale", 7)], dt_ms=200)
    cap.seg("s", "SA", 0, 1, options=[("MSS", 1460), ("WScale", 7)], dt_ms=100)  # for the second SYN
    cap.seg("c", "A", 1, 1).seg("c", "A", 1, 1, dt_ms=1)  # the second is a duplicate ACK
    cap.seg("c", "FA", 1, 1).seg("c", "FA", 1, 1, dt_ms=400)
    compare(cap, tmp_path, {2: {"retransmission"}, 4: {"retransmission"}, 6: {"duplicate_ack"},
                            8: {"retransmission"}})


def test_fast_retransmission_after_three_duplicate_acks(tmp_path):
    cap = Capture().handshake()
    for i in range(4):
        cap.seg("c", "A", 1 + 1000 * i, 1, 1000, dt_ms=0.1)
    for _ in range(4):  # the first segment was lost: the server acks 1 again and again
        cap.seg("s", "A", 1, 1, dt_ms=1)
    cap.seg("c", "A", 1, 1, 1000, dt_ms=1)
    ours = compare(cap, tmp_path, {8: {"window_update"}, 9: {"duplicate_ack"}, 11: {"duplicate_ack"},
                                 12: {"fast_retransmission"}})
    assert ours[11] == ["retransmission", "fast_retransmission"]


def test_spurious_retransmission_of_data_already_acknowledged(tmp_path):
    cap = Capture().handshake().seg("c", "PA", 1, 1, 100).seg("s", "A", 1, 101).seg("c", "PA", 1, 1, 100, dt_ms=300)
    ours = compare(cap, tmp_path, {6: {"spurious_retransmission"}})
    assert ours[5] == ["retransmission", "spurious_retransmission"]


def test_out_of_order_and_previous_segment_not_captured(tmp_path):
    cap = Capture().handshake(rtt_ms=50)
    cap.seg("c", "A", 101, 1, 100).seg("c", "A", 1, 1, 100, dt_ms=2)  # reordered within the RTT
    cap.seg("c", "A", 301, 1, 100, dt_ms=5)  # 201..300 never seen
    compare(cap, tmp_path, {4: {"previous_segment_not_captured"}, 5: {"out_of_order"},
                            6: {"previous_segment_not_captured"}})


def test_out_of_order_without_a_handshake_uses_3_ms(tmp_path):
    cap = Capture().seg("c", "A", 1, 1, 100).seg("c", "A", 201, 1, 100, dt_ms=1).seg("c", "A", 101, 1, 100, dt_ms=1)
    cap.seg("c", "A", 401, 1, 100, dt_ms=1).seg("c", "A", 301, 1, 100, dt_ms=10)
    compare(cap, tmp_path, {3: {"out_of_order"}, 5: {"retransmission"}})


def test_ack_of_unseen_segment(tmp_path):
    cap = Capture().handshake().seg("c", "A", 1, 1, 100)  # 101..200 not captured
    cap.seg("s", "A", 1, 201).seg("s", "A", 1, 201, dt_ms=1).seg("c", "A", 201, 1, 100).seg("s", "A", 1, 301)
    compare(cap, tmp_path, {5: {"ack_of_unseen_segment"}, 7: {"previous_segment_not_captured"}})


def test_keep_alive_and_its_ack(tmp_path):
    cap = Capture().handshake().seg("c", "PA", 1, 1, 10).seg("s", "A", 1, 11)
    cap.seg("c", "A", 10, 1, dt_ms=7200).seg("s", "A", 1, 11, dt_ms=1)  # zero-length keep-alive
    cap.seg("c", "A", 10, 1, b"\0", dt_ms=75).seg("s", "A", 1, 11, dt_ms=1)  # with one garbage byte
    ours = compare(cap, tmp_path, {6: {"keep_alive"}, 7: {"keep_alive_ack"}, 8: {"keep_alive"}, 9: {"keep_alive_ack"}})
    assert ours[5] == ["keep_alive"] and ours[6] == ["keep_alive_ack"]


def test_zero_window_probe_and_window_update(tmp_path):
    cap = Capture().handshake().seg("c", "A", 1, 1, 1000).seg("s", "A", 1, 1001, win=0)
    cap.seg("c", "A", 1001, 1, 1, dt_ms=200).seg("s", "A", 1, 1001, win=0, dt_ms=1)  # probe, its ACK
    cap.seg("c", "A", 1001, 1, 1, dt_ms=400).seg("s", "A", 1, 1001, win=0, dt_ms=1)
    cap.seg("s", "A", 1, 1001, win=300, dt_ms=50).seg("c", "A", 1001, 1, 1000, dt_ms=1)
    compare(cap, tmp_path, {5: {"zero_window"}, 6: {"zero_window_probe"}, 8: {"zero_window_probe"},
                            10: {"window_update"}})


def test_window_full_with_the_scale_from_the_syn(tmp_path):
    cap = Capture(wscale=7).handshake().seg("s", "A", 1, 1, win=4)  # 4 << 7 = 512 bytes
    cap.seg("c", "A", 1, 1, 512).seg("s", "A", 1, 513, win=4, dt_ms=20).seg("c", "A", 513, 1, 200)
    cap.seg("c", "A", 713, 1, 312)
    compare(cap, tmp_path, {4: {"window_update"}, 5: {"window_full"}, 8: {"window_full"}})


def test_window_full_against_the_unscaled_syn_ack_window(tmp_path):
    """Until a side's first plain ACK its window is the SYN's, which is never scaled."""
    cap = Capture(wscale=7).handshake(synack_win=300).seg("c", "A", 1, 1, 300)
    compare(cap, tmp_path, {4: {"window_full"}})


def test_window_full_without_scaling(tmp_path):
    cap = Capture(wscale=None).handshake(synack_win=600).seg("c", "A", 1, 1, 600).seg("s", "A", 1, 601, win=100)
    cap.seg("c", "A", 601, 1, 100)
    compare(cap, tmp_path, {4: {"window_full"}, 6: {"window_full"}})


def test_a_new_syn_on_the_same_ports_is_a_new_conversation(tmp_path):
    cap = Capture().handshake().seg("c", "FA", 1, 1).seg("s", "FA", 1, 2).seg("c", "A", 2, 2)
    ISN["c"] += 777_777
    try:
        cap.handshake().seg("c", "PA", 1, 1, 5)
    finally:
        ISN["c"] -= 777_777
    ours = compare(cap, tmp_path, {})
    assert all(not flags for flags in ours)


def test_a_storm_of_everything_agrees_frame_by_frame(tmp_path):
    """Loss, reordering, duplicate and retransmitted segments in both directions, pseudo-randomly."""
    import random

    rnd = random.Random(3)
    cap = Capture().handshake()
    nxt = {"c": 1, "s": 1}
    for _ in range(300):
        side = rnd.choice("cs")
        other = "s" if side == "c" else "c"
        ack = max(1, nxt[other] - rnd.choice((0, 0, 0, 100, 300)))
        length = rnd.choice((0, 0, 1, 100, 100, 100))
        seq = nxt[side] - rnd.choice((0, 0, 0, 0, 1, 100, 200)) + rnd.choice((0, 0, 0, 0, 100))
        win = rnd.choice((502, 502, 502, 0, 4, 300))
        flags = rnd.choice(("A", "A", "A", "PA", "FA", "RA")) if length else "A"
        cap.seg(side, flags, max(1, seq), ack, length, win=win, dt_ms=rnd.choice((0.5, 1, 2, 30, 400)))
        nxt[side] = max(nxt[side], max(1, seq) + length)
    compare(cap, tmp_path, {})


def test_ack_of_unseen_segment_is_told_once_until_the_other_side_acks_again(tmp_path):
    cap = Capture().handshake().seg("c", "A", 1, 1, 100).seg("s", "A", 1, 201).seg("c", "A", 101, 1)
    cap.seg("s", "A", 1, 201).seg("c", "A", 101, 1).seg("s", "A", 1, 201)
    ours = compare(cap, tmp_path, {5: {"ack_of_unseen_segment"}, 6: {"duplicate_ack"}})
    assert ["ack_of_unseen_segment" in f for f in ours[4:]] == [True, False, False, False, False]


def test_not_tcp_and_truncated_frames_get_no_flags():
    assert analysis.analyze([(b"\x00" * 10, 1), (bytes(Ether() / IP() / Raw(b"x" * 20)), 2)]) == [[], []]


@pytest.mark.parametrize("name", analysis.FLAGS)
def test_every_flag_is_named_as_in_tsharks_fields(name):
    assert name in tshark.FIELDS.values()
