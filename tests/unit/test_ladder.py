import xml.etree.ElementTree as ET

from pathlib import Path

import pytest

from controller.film import gaps, html, ladder, playback
from controller.trace import load

SEED = Path(__file__).resolve().parent.parent / "data" / "seed-0.3s.trace.jsonl"

A, B = "10.90.0.1:9090", "10.90.0.2:40000"


def pkt(t, host, d, src, dst, flags, seq=0, ack=0, length=0, analysis=()):
    return {"t": t, "host": host, "kind": "packet", "dir": d, "src": src, "dst": dst, "flags": flags,
            "seq": seq, "ack": ack, "len": length, "payload": "", "analysis": list(analysis)}


def state(t, host, frm, to, local=A, remote=B):
    return {"t": t, "host": host, "kind": "state", "local": local, "remote": remote, "from": frm, "to": to}


TRACE = [
    {"t": 0.0, "host": "thinkpad", "kind": "shaper", "backend": "nfqueue", "delay_ms": 1000, "loss_pct": 0},
    {"t": 0.0, "host": "raspberrypi", "kind": "shaper", "backend": "nfqueue", "delay_ms": 1000, "loss_pct": 0},
    state(0.1, "thinkpad", "CLOSED", "LISTEN", "0.0.0.0:9090", "0.0.0.0:*"),
    state(0.2, "raspberrypi", "CLOSED", "SYN_SENT", B, A),
    pkt(1.2, "raspberrypi", "out", B, A, ["SYN"]), pkt(1.2, "thinkpad", "in", B, A, ["SYN"]),
    state(1.2, "thinkpad", "LISTEN", "SYN_RECEIVED"),
    pkt(2.2, "raspberrypi", "out", B, A, ["SYN"], analysis=["retransmission"]),   # its copy never arrived
    pkt(2.3, "thinkpad", "out", A, B, ["SYN", "ACK"], 0, 1), pkt(2.3, "raspberrypi", "in", A, B, ["SYN", "ACK"], 0, 1),
    state(2.3, "raspberrypi", "SYN_SENT", "ESTABLISHED", B, A),
    state(70.0, "thinkpad", "TIME_WAIT", "CLOSED"),
]


def segments(svg):
    root = ET.fromstring(svg)
    return [e for e in root.iter("{http://www.w3.org/2000/svg}line") if e.get("class", "").startswith("segment")]


def test_one_arrow_per_segment_slanted_by_the_senders_delay_and_retransmissions_dashed():
    svg = ladder.render(TRACE)
    segs = segments(svg)
    assert len(segs) == 3  # two SYNs (one a retransmission) and the SYN+ACK; arrivals are not drawn twice
    first = segs[0]
    assert float(first.get("y2")) > float(first.get("y1"))  # sent at 0.2 (1.2 less 1 s of delay), arrived 1.2
    assert [s.get("stroke-dasharray") for s in segs] == [None, "6,4", None]
    texts = "".join(ET.fromstring(svg).itertext())
    for name in ("LISTEN (listener)", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "[SYN,ACK] Seq=0 Ack=1 Len=0"):
        assert name in texts
    assert "~ 67.7 s ~" in texts  # the quiet stretch before TIME_WAIT's end is cut, and says so


def test_rendering_twice_gives_the_same_bytes(tmp_path):
    a, b = ladder.write(tmp_path, TRACE).read_bytes(), ladder.render(TRACE).encode()
    assert a == b


def test_a_trace_without_two_hosts_is_refused():
    with pytest.raises(ValueError, match="fewer than two hosts"):
        ladder.render([state(0.1, "thinkpad", "CLOSED", "LISTEN")])


def test_one_long_gap_rule_for_every_view():
    assert gaps.shown(61.3) == gaps.LONG_GAP_S == playback.MAX_GAP_S == 3.0
    assert gaps.shown(2.5) == 2.5 and not gaps.is_cut(100.0, 0)  # 0: every gap kept (--max-gap 0)
    # a 2.5 s quiet stretch is drawn as it was (the ladder cut those at 1.5 s); TIME_WAIT's is still cut
    texts = "".join(ET.fromstring(ladder.render(TRACE + [state(72.5, "raspberrypi", "ESTABLISHED", "CLOSE_WAIT",
                                                                B, A)])).itertext())
    assert "~ 67.7 s ~" in texts and "~ 2.5 s ~" not in texts
    data = html.data(load(SEED))  # film.js reads the scrubber's limit and slow motion's gap from the page's data
    assert (data["long_gap_s"], data["slow_min_s"]) == (gaps.LONG_GAP_S, gaps.SLOW_MIN_S)
    assert playback.SLOW_MIN_S == gaps.SLOW_MIN_S == 1.0
