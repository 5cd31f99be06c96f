"""controller/film/model.py on a real trace: tests/data/seed-0.3s.trace.jsonl, the seed at 0.3 s (make film)."""

from pathlib import Path

import pytest

from controller.film import model
from controller.trace import load

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
