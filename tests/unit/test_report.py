import json

from controller import report
from controller.film import summary
from controller.trace import Trace, TraceIndex, load


def pkt(t, host, d, flags, seq=0, ack=0, length=0):
    return {"t": t, "host": host, "kind": "packet", "dir": d, "src": "10.90.0.2:40000", "dst": "10.90.0.1:9090",
            "flags": flags, "seq": seq, "ack": ack, "len": length, "payload": ""}


def test_causality_pairs_nth_copies_in_time_order_and_flags_arrivals_before_departure():
    recs = [pkt(1.5, "raspberrypi", "out", ["SYN"]), pkt(1.0, "raspberrypi", "out", ["SYN"]),
            pkt(4.0, "thinkpad", "in", ["SYN"]), pkt(1.2, "thinkpad", "in", ["SYN"]),
            pkt(0.9, "thinkpad", "in", ["ACK"], 1, 1),
            pkt(2.0, "raspberrypi", "out", ["FIN", "ACK"], 1, 1), pkt(1.99, "thinkpad", "in", ["FIN", "ACK"], 1, 1)]
    check = report.causality(recs)
    # SYN copies pair first-with-first (1.0->1.2, 1.5->4.0); the lone ACK pairs with nothing
    assert check["pairs"] == 3
    assert [(v["left"], v["arrived"]) for v in check["violations"]] == [(2.0, 1.99)]


def test_trace_is_ordered_atomic_and_report_is_written(tmp_path):
    tr = Trace(tmp_path)
    tr.add({"t": 2.0, "host": "thinkpad", "kind": "state", "local": "10.90.0.1:9090", "remote": "10.90.0.2:4",
            "from": "FIN_WAIT2", "to": "TIME_WAIT", "source": "inet_diag"})
    tr.add({"t": 0.5, "host": "controller", "kind": "step", "index": 1, "action": "listen", "target": "thinkpad",
            "status": "ok"})
    assert (tmp_path / "trace.partial.jsonl").read_text().count("\n") == 2
    tr.finish()
    assert not (tmp_path / "trace.partial.jsonl").exists()
    recs = load(tmp_path / "trace.jsonl")
    assert [r["t"] for r in recs] == [0.5, 2.0] and all("_n" not in r for r in recs)
    index = TraceIndex(recs)
    report.write(tmp_path, {"run_id": "r1", "ok": True, "scenario": {"name": "seed"}, "delay_s": 3.0,
                            "hosts": {"thinkpad": {"shaper_backend": "nfqueue"}}}, index)
    summary.write(tmp_path, index)
    text = (tmp_path / "summary.txt").read_text()
    assert "FIN_WAIT2 -> TIME_WAIT" in text and "delayed packets are discarded" in text
    assert "thinkpad: nfqueue" in text
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["causality"] == {"pairs": 0, "violations": []} and "trace.jsonl" in info["files"]


def test_summary_marks_a_segment_sent_again_as_a_retransmission():
    recs = [pkt(1.0, "raspberrypi", "out", ["SYN"]), pkt(2.0, "raspberrypi", "out", ["SYN"]),
            pkt(2.1, "raspberrypi", "out", ["ACK"], 1, 1), pkt(2.2, "raspberrypi", "out", ["ACK"], 1, 1)]
    text = summary.render(recs, {"run_id": "r", "ok": True, "scenario": {"name": "s"}, "hosts": {}})
    rows = [ln for ln in text.splitlines() if "10.90.0.2:40000 ->" in ln]
    # the second SYN is a retransmission; a repeated pure ACK is a duplicate ACK, not one
    assert ["retransmission" in ln for ln in rows] == [False, True, False, False]


def test_at_equal_times_the_departure_comes_before_the_arrival(tmp_path):
    tr = Trace(tmp_path)
    tr.add(pkt(1.0, "thinkpad", "in", ["SYN"]))       # reached the controller first
    tr.add(pkt(1.0, "raspberrypi", "out", ["SYN"]))
    assert [r["dir"] for r in tr.ordered()] == ["out", "in"]
    tr.close()
