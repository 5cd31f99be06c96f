"""Named connections (tcplab.actions.conn): the scenario's ``connection`` and `` on NAME``, the
commands it makes, the wire's check of a pair, and a run's expectations counting one connection's
records only. On real kernel TCP: tests/integration/test_sockapp.py (the application),
tests/integration/test_library.py (two-connections.yml through tcplab run)."""

from __future__ import annotations

import asyncio

import pytest

from controller import scenario
from controller.scenario import Expectation, ScenarioError
from tcplab import actions, wire
from tcplab.actions import StepContext
from tests.unit.test_run import Probe, run  # noqa: F401 (run: the fixture)

A = ("10.90.0.2:40001", "10.90.0.1:9090")  # connection a as the client sees it
B = ("10.90.0.2:40002", "10.90.0.1:9090")


def two(*more: dict, listen: dict | None = None) -> scenario.Scenario:
    return scenario.parse({"name": "t", "steps": [
        {"action": "listen", "host": "server", **(listen or {})},
        {"action": "connect", "host": "client", "to": "server", "connection": "a",
         "expect": ["client ESTABLISHED on a", "server ESTABLISHED on a"]},
        {"action": "connect", "host": "client", "to": "server", "connection": "b"},
        *more]})


def test_a_listen_that_named_connections_connect_to_runs_the_application_and_accepts_them_all():
    s = two()
    listen, a, b = s.steps
    assert listen.app and listen.own_app and listen.count == 2 and listen.detail == "2 connections"
    assert a.app and a.own_app and a.connection == "a" and a.detail == "connection a"
    assert [str(e) for e in a.expect] == ["client ESTABLISHED on a", "server ESTABLISHED on a"]
    assert two(listen={"count": 5}).steps[0].count == 5  # more than connect: as written
    plain = scenario.parse({"name": "t", "steps": [{"action": "listen", "host": "server"},
                                                   {"action": "connect", "host": "client", "to": "server"}]})
    assert not plain.steps[0].app and plain.steps[0].count == 1  # no name: nc, as before


def test_steps_on_one_connection_and_their_round_trip():
    s = two({"action": "send", "host": "server", "connection": "b", "text": "Hi",
             "expect": ["client prints Hi on b", "client prints Hi on the way"]},
            {"action": "abort", "host": "client", "connection": "b", "expect": ["client sends RST+ACK on b x1"]},
            {"action": "close", "host": "client", "connection": "a"},
            {"action": "close", "host": "server"})
    send = s.steps[3]
    assert send.connection == "b" and send.detail == "on connection b"
    on_b, text = send.expect
    assert on_b.conn == "b" and on_b.text == "Hi"
    assert text.conn is None and text.text == "Hi on the way"  # "on the" names no connection: the text's
    assert s.steps[4].expect[0].conn == "b" and s.steps[4].expect[0].packet.flags == {"RST", "ACK"}
    assert scenario.parse(s.to_dict()) == s
    bound = s.bound()
    assert bound.steps[3].hosts == ("thinkpad",) and bound.steps[3].expect[0] == Expectation(
        "raspberrypi", text="Hi", conn="b")


def test_an_expectation_on_a_connection_in_any_order_of_its_words():
    names = frozenset({"a"})
    e = scenario._expectation("client sends SYN retransmission x2 on a at 1±0.2", "w", names)
    assert (e.conn, e.count, e.at, e.tol, e.packet.analysis) == ("a", 2, 1.0, 0.2, ("retransmission",))
    assert scenario._expectation("client sends SYN retransmission on a x2", "w", names) == Expectation(
        "client", count=2, packet=e.packet, conn="a")
    with pytest.raises(ScenarioError, match="one connection reaches a state once"):
        scenario._expectation("client ESTABLISHED on a x2", "w", names)


@pytest.mark.parametrize("more, message", [
    ({"action": "send", "host": "client", "connection": "c", "text": "x"}, "no connection is named c yet"),
    ({"action": "keepalive", "host": "nuc", "connection": "a", "idle": 1, "interval": 1, "probes": 1},
     "connection a is between client and server, not on nuc"),
    ({"action": "connect", "host": "client", "to": "server"}, "client's application already runs"),
    ({"action": "listen", "host": "client"}, "client's application already runs"),
    ({"action": "shutdown", "host": "server", "connection": "a", "expect": ["server FIN_WAIT1 on c"]},
     "names connection 'c', which no connect names"),
])
def test_what_cannot_run_on_a_connection_is_refused_naming_it(more, message):
    with pytest.raises(ScenarioError, match=message):
        two(more)


def test_a_client_whose_named_connections_all_ended_may_start_again():
    two({"action": "abort", "host": "client", "connection": "a"}, {"action": "close", "host": "client", "connection": "b"},
        {"action": "connect", "host": "client", "to": "server"})
    with pytest.raises(ScenarioError, match="server's end of connection a is not open"):
        two({"action": "close", "host": "server"}, {"action": "send", "host": "server", "connection": "a", "text": "x"})


def test_a_step_on_a_connection_sends_its_pair_as_its_host_sees_it():
    s = two({"action": "read", "host": "server", "connection": "a", "reading": False}).bound()
    pairs = {("a", "raspberrypi"): A, ("a", "thinkpad"): A[::-1]}
    ctx = StepContext(lab_ip={"thinkpad": "10.90.0.1"}.get, port=9090, delay=1.0,
                      pair=lambda name, host: pairs.get((name, host)))
    connect, read = s.steps[1], s.steps[3]
    assert actions.ACTIONS["connect"].from_step(connect, ctx) == {"ip": "10.90.0.1", "port": 9090, "app": True}
    assert actions.ACTIONS["listen"].from_step(s.steps[0], ctx) == {"count": 2, "app": True}
    args = actions.ACTIONS["read"].from_step(read, ctx)
    assert args == {"on": False, "conn": ["10.90.0.1:9090", "10.90.0.2:40001"]}
    assert actions.check_command({"id": 1, "action": "read", "args": args}) == ("read", args)
    no_pair = StepContext(lab_ip=ctx.lab_ip, port=9090, delay=1.0)
    with pytest.raises(actions.ActionError, match="connection a has no address pair on thinkpad"):
        actions.ACTIONS["read"].from_step(read, no_pair)


@pytest.mark.parametrize("conn", [["10.90.0.1:9090"], ["10.90.0.1:9090", "10.90.0.2:70000"],
                                  ["10.90.0.1", "10.90.0.2:1"], ["a:1", "b:2"], [1, 2], ["10.90.0.1:0", "10.90.0.2:5"]])
def test_the_wire_refuses_a_pair_that_is_not_one(conn):
    for name, more in (("close", {}), ("abort", {}), ("send", {"text": "x"}), ("shutdown", {}),
                       ("read", {"on": True}), ("keepalive", {"idle_s": 1, "interval_s": 1, "probes": 1})):
        with pytest.raises(wire.ProtocolError, match="conn must be"):
            actions.check_command({"id": 1, "action": name, "args": {**more, "conn": conn}})
    with pytest.raises(wire.ProtocolError, match="not a count"):
        actions.check_command({"id": 1, "action": "connect", "args": {"ip": "10.90.0.1", "app": True, "count": 2}})


async def three(probe: Probe, t: float, established: tuple, rst: tuple, line: tuple) -> None:
    """A client's ESTABLISHED on ``established``, its RST on ``rst`` and the server's line on ``line``."""
    run = probe.run
    await run.add_event("raspberrypi", {"kind": "state", "t_ns": probe.ns(t), "local": established[0],
                                        "remote": established[1], "from": "SYN_SENT", "to": "ESTABLISHED"}, probe.clock)
    await run.add_event("raspberrypi", {"kind": "packet", "t_ns": probe.ns(t + 0.1), "dir": "out", "src": rst[0],
                                        "dst": rst[1], "flags": ["RST"], "seq": 1, "ack": 0, "len": 0}, probe.clock)
    await run.add_event("thinkpad", {"kind": "console", "t_ns": probe.ns(t + 0.2), "text": "Hi\n", "stream": "stdout",
                                     "local": line[1], "remote": line[0]}, probe.clock)


def test_an_expectation_on_a_connection_counts_that_connections_records_only(run):
    on_a = Expectation("raspberrypi", state="ESTABLISHED", conn="a")
    rst_b = scenario._expectation("raspberrypi sends RST on b", "w", frozenset({"a", "b"}))
    line_a = Expectation("thinkpad", text="Hi", conn="a")

    async def go():
        probe = Probe(run)
        assert run.hits(on_a, 0.0) == []  # its pair not known yet: nothing counts
        run.note_pair("a", "raspberrypi", "thinkpad", *A)
        run.note_pair("b", "raspberrypi", "thinkpad", *B)
        await three(probe, 0.1, B, A, B)  # each on the other connection
        before = [run.hits(e, 0.0) for e in (on_a, rst_b, line_a)]
        await three(probe, 0.4, A, B, A)
        return before, [run.hits(e, 0.0) for e in (on_a, rst_b, line_a)]
    before, after = asyncio.run(go())
    assert before == [[], [], []]
    assert [[round(t, 3) for t in h] for h in after] == [[0.4], [0.5], [0.6]]
    assert run.pair("a", "thinkpad") == A[::-1] and run.pair("c", "thinkpad") is None
    explained = run.explain(on_a, 0.0)
    assert explained["observed"] == "1 of 1 reached ESTABLISHED" and len(explained["records"]) == 1
