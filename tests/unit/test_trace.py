"""The trace package: schema and order, the writer's partial and final files, the reader, the index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.film.tracefile import PartialTrace
from controller.trace import Kind, StepStatus, Trace, TraceIndex, load, sort_key
from controller.trace.reader import NotATrace, read_lines
from controller.trace.schema import FIELDS, LISTENER_REMOTE, is_listener
from controller.trace.writer import TraceRecordError
from tcplab.errors import TcplabError

DATA = Path(__file__).resolve().parent.parent / "data"
A, B = "10.90.0.1:9090", "10.90.0.2:40000"


def pkt(t, host, d, flags, src=B, dst=A, seq=0, ack=0, length=0):
    return {"t": t, "host": host, "kind": "packet", "dir": d, "src": src, "dst": dst, "flags": flags,
            "seq": seq, "ack": ack, "len": length}


def state(t, host, frm, to, local, remote):
    return {"t": t, "host": host, "kind": "state", "local": local, "remote": remote, "from": frm, "to": to}


def shaper(t, host, delay_ms, backend="netem"):
    return {"t": t, "host": host, "kind": "shaper", "backend": backend, "delay_ms": delay_ms}


def step(t, index, action, target, status="start"):
    return {"t": t, "host": "controller", "kind": "step", "index": index, "action": action, "target": target,
            "status": status}


def test_kinds_and_statuses_are_their_strings_and_the_listener_is_named_once():
    assert Kind.PACKET == "packet" and json.dumps({"kind": Kind.STATE}) == '{"kind": "state"}'
    assert [s.value for s in StepStatus] == ["start", "ok", "failed"]
    assert set(FIELDS) == set(Kind) - {Kind.STEP, Kind.LOSS}  # the controller writes steps and losses
    assert LISTENER_REMOTE == "0.0.0.0:*" and is_listener(state(0, "h", "CLOSED", "LISTEN", A, "0.0.0.0:*"))


def test_sort_key_orders_by_time_then_kind_then_departure_then_arrival():
    recs = [dict(state(1.0, "thinkpad", "LISTEN", "SYN_RECEIVED", A, B), _n=0),
            dict(pkt(1.0, "thinkpad", "in", ["SYN"]), _n=1), dict(pkt(1.0, "raspberrypi", "out", ["SYN"]), _n=2),
            dict(step(1.0, 1, "connect", "raspberrypi"), _n=3), dict(pkt(0.5, "thinkpad", "in", ["ACK"]), _n=4)]
    assert [r["_n"] for r in sorted(recs, key=sort_key)] == [4, 3, 2, 1, 0]


def test_the_writer_keeps_a_partial_file_as_records_arrive_and_finishes_ordered(tmp_path):
    tr = Trace(tmp_path)
    tr.add(pkt(2.0, "thinkpad", "in", ["SYN"]))
    follower = PartialTrace(tmp_path / "trace.partial.jsonl")
    assert [r["t"] for r in follower.read()] == [2.0]     # flushed: the live view reads it at once
    tr.add(step(1.0, 1, "connect", "raspberrypi"))
    assert [r["t"] for r in follower.read()] == [1.0]
    with pytest.raises(TraceRecordError) as e:
        tr.add({"t": 1.0, "kind": "state"})
    assert isinstance(e.value, TcplabError) and "'host'" in str(e.value)
    path = tr.finish()
    follower.close()
    assert not (tmp_path / "trace.partial.jsonl").exists() and not list(tmp_path.glob("*tmp*"))
    assert [r["t"] for r in load(path)] == [1.0, 2.0] and all("_n" not in r for r in load(path))


def test_finish_writes_the_records_it_is_given_in_their_order(tmp_path):
    tr = Trace(tmp_path)
    for r in (pkt(2.0, "thinkpad", "in", ["SYN"]), pkt(1.0, "raspberrypi", "out", ["SYN"])):
        tr.add(r)
    index = TraceIndex(tr.records, ordered=False)
    index.shift("thinkpad", -1.5)                       # now the arrival is first
    tr.finish(index.records)
    assert [(r["host"], r["t"]) for r in load(tmp_path / "trace.jsonl")] == [("thinkpad", 0.5), ("raspberrypi", 1.0)]


def test_the_reader_names_the_bad_line_and_forgives_a_cut_last_line_of_a_partial_file(tmp_path):
    path = tmp_path / "trace.partial.jsonl"
    path.write_text(json.dumps(pkt(1.0, "thinkpad", "in", ["SYN"])) + "\n" + '{"t": 2.0, "ho')
    assert len(read_lines(path, partial=True)) == 1
    with pytest.raises(NotATrace, match="line 2"):
        read_lines(path)
    path.write_text('{"t": 1.0}\n')
    with pytest.raises(NotATrace, match="line 1: not a trace record"):
        read_lines(path)


def test_segment_pairs_nth_copy_with_nth_copy_and_pair_of_both_ways():
    syn1, syn2 = pkt(1.0, "raspberrypi", "out", ["SYN"]), pkt(2.0, "raspberrypi", "out", ["SYN"])
    in1, in2 = pkt(1.1, "thinkpad", "in", ["SYN"]), pkt(2.1, "thinkpad", "in", ["SYN"])
    lone = pkt(3.0, "thinkpad", "out", ["ACK"], src=A, dst=B)
    ix = TraceIndex([syn1, in1, syn2, in2, lone])
    assert [(o["t"], i["t"]) for o, i in ix.pairs] == [(1.0, 1.1), (2.0, 2.1)]
    assert ix.pair_of(syn2) is in2 and ix.pair_of(in1) is syn1 and ix.pair_of(lone) is None


def test_roles_by_the_steps_else_by_the_sockets_and_fewer_than_two_hosts_is_an_error():
    recs = [state(0.1, "thinkpad", "CLOSED", "SYN_SENT", A, B), state(0.2, "raspberrypi", "CLOSED", "LISTEN", B, "0.0.0.0:*")]
    ix = TraceIndex(recs)
    assert ix.hosts == ["thinkpad", "raspberrypi"]
    assert ix.roles == {"raspberrypi": "server", "thinkpad": "client"} and ix.server == "raspberrypi"
    by_steps = TraceIndex([step(0.0, 1, "listen", "thinkpad"), step(0.0, 2, "connect", "raspberrypi")] + recs)
    assert (by_steps.server, by_steps.client) == ("thinkpad", "raspberrypi")
    with pytest.raises(ValueError, match="fewer than two hosts"):
        TraceIndex(recs[:1]).roles


def test_delay_at_follows_each_hosts_shaper_records():
    ix = TraceIndex([shaper(1.0, "thinkpad", 3000), shaper(2.0, "raspberrypi", 300),
                     {"t": 5.0, "host": "thinkpad", "kind": "shaper", "backend": None, "cleared": True}])
    assert [ix.delay_at("thinkpad", t) for t in (0.5, 1.0, 4.9, 5.0)] == [0.0, 3.0, 3.0, 0.0]
    assert ix.delay_at("raspberrypi", 9.0) == 0.3 and ix.delay_at("nobody", 9.0) == 0.0


def test_each_sockets_states_and_hosts_by_address():
    listen = state(0.1, "thinkpad", "CLOSED", "LISTEN", "0.0.0.0:9090", "0.0.0.0:*")
    conn = [state(0.5, "thinkpad", "LISTEN", "SYN_RECEIVED", A, B), state(0.6, "thinkpad", "SYN_RECEIVED", "ESTABLISHED", A, B)]
    ix = TraceIndex([listen, *conn, pkt(0.4, "raspberrypi", "out", ["SYN"])])
    assert ix.sockets[("thinkpad", A, B)] == conn and ix.sockets[("thinkpad", "0.0.0.0:9090", "0.0.0.0:*")] == [listen]
    assert ix.states("thinkpad", listener=False, since=0.55) == conn[1:]
    assert ix.states("thinkpad", listener=True) == [listen]
    assert ix.host_of(A) == "thinkpad" and ix.host_of("10.90.0.2") == "raspberrypi"
    assert ix.host_of("10.90.0.9:1", "?") == "?"


def test_the_index_is_a_sequence_of_the_records_and_of_leaves_an_index_as_it_is():
    recs = load(DATA / "seed-0.3s.trace.jsonl")
    ix = TraceIndex(recs)
    assert len(ix) == len(recs) and ix[0] is recs[0] and ix[-3:] == recs[-3:] and list(ix) == recs
    assert TraceIndex.of(ix) is ix and ix.position(recs[7]) == 7
    assert ix.kind(Kind.PACKET) == [r for r in recs if r["kind"] == "packet"]
    assert ix.kind("console", "raspberrypi") == [r for r in recs if r["kind"] == "console" and r["host"] == "raspberrypi"]
    assert [r["status"] for r in ix.steps(StepStatus.FAILED)] == []
    assert len(ix.pairs) > 10 and all(i["t"] >= o["t"] for o, i in ix.pairs)


def test_shift_moves_one_host_resorts_and_rebuilds_the_views():
    out, inn = pkt(1.0, "raspberrypi", "out", ["SYN"]), pkt(1.2, "thinkpad", "in", ["SYN"])
    ix = TraceIndex([out, shaper(1.1, "thinkpad", 3000), inn])
    assert ix.delay_at("thinkpad", 1.15) == 3.0
    ix.shift("thinkpad", -0.5)
    assert [r["t"] for r in ix] == [0.6, 0.7, 1.0] and ix.position(out) == 2
    assert ix.pairs == [(out, inn)] and ix.delay_at("thinkpad", 1.15) == 3.0 and ix.delay_at("thinkpad", 0.5) == 0.0
