"""controller/film/model.py on a real trace: tests/data/seed-0.3s.trace.jsonl, the seed at 0.3 s (make film)."""

from pathlib import Path

import pytest

from controller.film import model
from controller.trace import Kind, TraceIndex, load

SEED = Path(__file__).resolve().parent.parent / "data" / "seed-0.3s.trace.jsonl"


@pytest.fixture(scope="module")
def film():
    return model.build(load(SEED))


def test_roles_server_listened_client_connected(film):
    assert film.hosts == ["thinkpad", "raspberrypi"]
    assert film.roles == {"thinkpad": "server", "raspberrypi": "client"}


def test_connection_states_follow_the_seed_storyline(film):
    seq = {h: [t.to for t in film.transitions if t.host == h] for h in film.hosts}
    assert seq["thinkpad"] == ["LISTEN", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
                               "CLOSED"]
    assert seq["raspberrypi"] == ["SYN_SENT", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    # every one of them is an edge of the RFC 9293 diagram
    assert all(t.rfc for t in film.transitions)


def test_causes_name_the_packet_the_call_or_the_timer(film):
    by = {(t.host, t.frm, t.to): t for t in film.transitions}
    syn_rcvd = by["thinkpad", "LISTEN", "SYN_RECEIVED"]
    assert syn_rcvd.cause == "packet" and film.packets[syn_rcvd.packet - 1]["flags"] == ["SYN"]
    assert film.packets[syn_rcvd.packet - 1]["host"] == "thinkpad"
    assert film.packets[syn_rcvd.packet - 1]["dir"] == "in"
    est = by["raspberrypi", "SYN_SENT", "ESTABLISHED"]
    assert est.cause == "packet" and film.packets[est.packet - 1]["flags"] == ["SYN", "ACK"]
    fin1 = by["thinkpad", "ESTABLISHED", "FIN_WAIT1"]
    assert (fin1.cause, fin1.step) == ("call", 6)
    tw = by["thinkpad", "FIN_WAIT2", "TIME_WAIT"]
    assert tw.cause == "packet" and "FIN" in film.packets[tw.packet - 1]["flags"]
    end = by["thinkpad", "TIME_WAIT", "CLOSED"]
    assert end.cause == "timer" and "TIME_WAIT timer" in end.because
    # a packet that caused a state change arrived before it, on the same host
    for t in film.transitions:
        if t.packet:
            assert film.packets[t.packet - 1]["t"] <= t.t


def test_packet_rows_are_wireshark_columns(film):
    first = film.packets[0]
    assert (first["no"], first["host"], first["dir"], first["source"], first["destination"], first["protocol"]) == \
        (1, "raspberrypi", "out", "10.90.0.2", "10.90.0.1", "TCP")
    assert first["info"] == "53458 → 9090 [SYN] Seq=0 Win=64240 Len=0"
    fin = next(p for p in film.packets if "FIN" in p["flags"])
    assert "[FIN, ACK]" in fin["info"] and " Ack=" in fin["info"]


def test_wireshark_info_marks_retransmissions_and_orders_flags():
    p = {"src": "10.90.0.1:9090", "dst": "10.90.0.2:40000", "flags": ["ACK", "SYN"], "seq": 0, "ack": 1,
         "win": 65160, "len": 0, "analysis": ["retransmission"]}
    assert model.wireshark_info(p) == "[TCP Retransmission] 9090 → 40000 [SYN, ACK] Seq=0 Ack=1 Win=65160 Len=0"
    assert model.is_retransmission(p)


def test_moments_skip_netstat_and_step_ok(film):
    kinds = {film.records[i]["kind"] for i in film.moments}
    assert "netstat" not in kinds and "packet" in kinds and "state" in kinds
    assert all(film.records[i].get("status") != "ok" for i in film.moments)


def test_fewer_than_two_hosts_is_an_error():
    with pytest.raises(ValueError, match="fewer than two hosts"):
        model.build([{"t": 0.0, "host": "thinkpad", "kind": "state", "local": "0.0.0.0:9090",
                      "remote": "0.0.0.0:*", "from": "CLOSED", "to": "LISTEN"}])


def state(t, host, local, remote, frm, to):
    return {"t": t, "host": host, "kind": "state", "local": local, "remote": remote, "from": frm, "to": to,
            "source": "tracepoint"}


def test_a_new_connection_takes_over_from_one_in_time_wait():
    records = [r for r in load(SEED) if not (r["kind"] == "state" and r["host"] == "thinkpad" and r["t"] > 60)]
    # the listener stays open; the client reconnects from another port while thinkpad is in TIME_WAIT
    records = [r for r in records if not (r["kind"] == "state" and r["to"] == "CLOSED" and r["remote"] == "0.0.0.0:*")]
    c, s = "10.90.0.2:53460", "10.90.0.1:9090"
    records += [state(10.0, "raspberrypi", c, s, "CLOSED", "SYN_SENT"),
                state(10.3, "thinkpad", s, c, "LISTEN", "SYN_RECEIVED"),
                state(10.6, "raspberrypi", c, s, "SYN_SENT", "ESTABLISHED"),
                state(10.9, "thinkpad", s, c, "SYN_RECEIVED", "ESTABLISHED"),
                state(64.6, "thinkpad", s, "10.90.0.2:53458", "TIME_WAIT", "CLOSED")]
    records.sort(key=lambda r: r["t"])
    film = model.build(records)
    server = [(t.frm, t.to) for t in film.transitions if t.host == "thinkpad"]
    assert server[-2:] == [("LISTEN", "SYN_RECEIVED"), ("SYN_RECEIVED", "ESTABLISHED")]  # the old TIME_WAIT's end is not shown
    client = [(t.frm, t.to) for t in film.transitions if t.host == "raspberrypi"]
    assert client[-2:] == [("CLOSED", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED")]
    assert film.state_at("thinkpad", len(records) - 1) == "ESTABLISHED"
    new = next(t for t in film.transitions if t.host == "thinkpad" and t.t == 10.3)  # shown: TIME_WAIT until then
    assert new.because.startswith("a new connection (10.90.0.1:9090 ↔ 10.90.0.2:53460)") and new.rfc


def test_roles_come_from_the_steps_even_when_the_client_speaks_first():
    records = [{"t": 0.0, "host": "raspberrypi", "kind": "netstat", "rows": []},
               {"t": 0.1, "host": "controller", "kind": "step", "index": 1, "action": "connect",
                "target": "raspberrypi", "status": "start"},
               state(0.2, "raspberrypi", "10.90.0.2:40000", "10.90.0.1:9090", "CLOSED", "SYN_SENT"),
               {"t": 0.3, "host": "thinkpad", "kind": "netstat", "rows": []},
               state(0.5, "raspberrypi", "10.90.0.2:40000", "10.90.0.1:9090", "SYN_SENT", "CLOSED")]
    film = model.build(records)
    assert film.roles == {"thinkpad": "server", "raspberrypi": "client"}
    refused = film.transitions[-1]
    assert (refused.frm, refused.to, refused.cause) == ("SYN_SENT", "CLOSED", "unknown")  # no RST was captured


def test_a_lost_capture_is_not_blamed_on_the_application():
    records = [r for r in load(SEED) if not (r["kind"] == "packet" and r["host"] == "raspberrypi")]
    film = model.build(records)
    last = next(t for t in film.transitions if t.host == "raspberrypi" and t.to == "CLOSED")
    assert (last.frm, last.cause) == ("LAST_ACK", "unknown")


def test_a_reset_in_syn_received_goes_back_to_listen():
    s, c = "10.90.0.1:9090", "10.90.0.2:40000"
    records = [{"t": 0.0, "host": "controller", "kind": "step", "index": 1, "action": "listen",
                "target": "thinkpad", "status": "start"},
               state(0.1, "thinkpad", "0.0.0.0:9090", "0.0.0.0:*", "CLOSED", "LISTEN"),
               state(0.2, "raspberrypi", c, s, "CLOSED", "SYN_SENT"),
               state(0.3, "thinkpad", s, c, "LISTEN", "SYN_RECEIVED"),
               {"t": 0.4, "host": "thinkpad", "kind": "packet", "dir": "in", "src": c, "dst": s, "flags": ["RST"],
                "seq": 1, "ack": 0, "len": 0, "payload": "", "win": 0},
               state(0.5, "thinkpad", s, c, "SYN_RECEIVED", "CLOSED")]
    back = model.build(records).transitions[-1]
    assert (back.frm, back.to, back.cause, back.rfc) == ("SYN_RECEIVED", "LISTEN", "packet", "rcv RST")


def test_build_takes_the_trace_index_or_its_records(film):
    ix = TraceIndex(load(SEED))
    again = model.build(ix)
    assert again.records is ix and model.build(again.records).records is ix  # indexed once, never again
    assert [t.as_dict() for t in again.transitions] == [t.as_dict() for t in film.transitions]
    assert (again.moments, again.packets, again.port) == (film.moments, film.packets, "9090")


def test_span_is_the_records_of_a_kind_between_two_positions():
    ix = TraceIndex(load(SEED))
    for kind in Kind:
        for lo, hi in ((0, len(ix)), (0, 40), (17, 18), (40, 40), (60, None)):
            want = [r for r in ix[lo:hi] if r["kind"] == kind]
            assert ix.span(kind, lo, hi) == want
            assert ix.span(kind, lo, hi, "thinkpad") == [r for r in want if r["host"] == "thinkpad"]


def test_the_lab_port_without_a_listener_is_the_one_the_client_connected_to():
    records = [{"t": 0.1, "host": "controller", "kind": "step", "index": 1, "action": "connect",
                "target": "raspberrypi", "status": "start"},
               state(0.2, "raspberrypi", "10.90.0.2:40000", "10.90.0.1:9090", "CLOSED", "SYN_SENT"),
               {"t": 0.3, "host": "thinkpad", "kind": "netstat", "rows": []}]
    assert model.build(records).port == "9090"
