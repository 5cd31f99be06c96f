import msgpack
import pytest

from tcplab import actions, wire


def test_round_trip_keeps_every_field():
    env = wire.make("events", "thinkpad", 7, {"events": [{"kind": "packet", "raw": b"\x45\x00"}]}, at=123)
    assert wire.decode(wire.encode(env)) == env


@pytest.mark.parametrize("frame, reason", [
    (b"\xc1", "not valid msgpack"),
    (msgpack.packb([1, 2]), "must be a map"),
    (msgpack.packb({"v": 1}), "lacks field"),
    (msgpack.packb({"v": 9, "type": "events", "host": "h", "seq": 0, "time": 0, "body": {}}), "version"),
    (msgpack.packb({"v": 1, "type": "exec", "host": "h", "seq": 0, "time": 0, "body": {}}), "unknown message type"),
    (msgpack.packb({"v": 1, "type": "events", "host": "a b", "seq": 0, "time": 0, "body": {}}), "bad host"),
    (msgpack.packb({"v": 1, "type": "events", "host": "h", "seq": -1, "time": 0, "body": {}}), "'seq'"),
    (msgpack.packb({"v": 1, "type": "events", "host": "h", "seq": 0, "time": 0, "body": []}), "body must be a map"),
])
def test_bad_frames_are_refused_with_a_reason(frame, reason):
    with pytest.raises(wire.ProtocolError, match=reason):
        wire.decode(frame)


def test_oversized_frame_is_refused():
    with pytest.raises(wire.ProtocolError, match="exceeds"):
        wire.decode(b"\x00" * (wire.MAX_FRAME + 1))


def test_command_check_accepts_the_fixed_actions():
    assert actions.check_command({"id": 1, "action": "connect", "args": {"ip": "10.90.0.1", "port": 9090}}) == (
        "connect", {"ip": "10.90.0.1", "port": 9090})
    assert actions.check_command({"id": 2, "action": "shape", "args": {"delay_ms": 300}})[0] == "shape"


@pytest.mark.parametrize("body, reason", [
    ({"id": 1, "action": "sh", "args": {}}, "unknown action"),
    ({"id": "1", "action": "listen"}, "id must be an integer"),
    ({"id": 1, "action": "send", "args": {}}, "send takes 'text' or 'bytes', one of them"),
    ({"id": 1, "action": "send", "args": {"text": "a\nb"}}, "one line"),
    ({"id": 1, "action": "listen", "args": {"cmd": "rm -rf /"}}, "no argument 'cmd'"),
    ({"id": 1, "action": "shape", "args": {"delay_ms": "3s"}}, "wrong type"),
    ({"id": 1, "action": "shape", "args": {"delay_ms": 10**6}}, "outside"),
    ({"id": 1, "action": "connect", "args": {"ip": "10.90.0.1", "port": 0}}, "outside"),
])
def test_command_check_refuses_anything_else(body, reason):
    with pytest.raises(wire.ProtocolError, match=reason):
        actions.check_command(body)


# --- Session: one sender's identity, numbering and counters ------------------------------------

def test_session_numbers_events_apart_from_other_frames():
    s = wire.Session("thinkpad")
    seqs = [(e["type"], e["seq"]) for e in (s.envelope("hello"), s.batch([{"kind": "state"}])[0],
                                            s.envelope("heartbeat"), s.batch([{"kind": "state"}])[0])]
    assert seqs == [("hello", 1), ("events", 1), ("heartbeat", 2), ("events", 2)]
    assert (s.seq, s.event_seq) == (2, 2)


def test_session_frames_round_trip_and_are_counted():
    a, b = wire.Session("controller"), wire.Session("thinkpad")
    env = b.decode(a.frame("ping", {"id": 1}, at=5))
    assert env == {"v": 1, "type": "ping", "host": "controller", "seq": 1, "time": 5, "body": {"id": 1}}
    assert b.counters == {"sent": 0, "received": 1, "refused": 0}


def test_a_refused_body_takes_no_number():
    s = wire.Session("thinkpad")
    with pytest.raises(wire.ProtocolError, match="body must be a map"):
        s.envelope("heartbeat", [1])  # type: ignore[arg-type]
    with pytest.raises(wire.ProtocolError, match="unknown message type"):
        s.envelope("exec", {})
    with pytest.raises(wire.ProtocolError, match="1..256 events"):
        s.batch([])
    assert s.batch([{}])[0]["seq"] == 1 and s.envelope("pong")["seq"] == 1  # no gap for the receiver


def test_session_refusals_are_counted_and_name_the_reason():
    s = wire.Session("controller")
    with pytest.raises(wire.ProtocolError, match="not valid msgpack"):
        s.decode(b"\xc1")
    with pytest.raises(wire.ProtocolError, match="does not match routing id"):
        s.decode(wire.Session("ghost").frame("hello"), peer=b"thinkpad")
    assert s.decode(wire.Session("thinkpad").frame("hello"), peer=b"thinkpad")["host"] == "thinkpad"
    assert s.counters == {"sent": 0, "received": 1, "refused": 2}
    with pytest.raises(wire.ProtocolError, match="bad host name"):
        wire.Session("a b")


def test_the_envelope_is_checked_once_when_sending(monkeypatch):
    calls = []
    real = wire.envelope.check_envelope
    monkeypatch.setattr(wire.envelope, "check_envelope", lambda env: calls.append(env["type"]) or real(env))
    wire.Session("thinkpad").frame("hello", {"pid": 1})
    assert calls == ["hello"]


def test_session_over_real_dealer_and_router_sockets(tmp_path):
    """ROUTER (the controller's side, routing ids = host names) <-> DEALER (a probe's), over ipc."""
    import asyncio

    import zmq
    import zmq.asyncio

    async def main():
        ctx = zmq.asyncio.Context()
        router, dealer, ghost = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.ROUTING_ID, b"thinkpad")
        ghost.setsockopt(zmq.ROUTING_ID, b"ghost")
        for sock in (router, dealer, ghost):
            sock.setsockopt(zmq.LINGER, 0)
        router.bind(f"ipc://{tmp_path}/r.sock")
        dealer.connect(f"ipc://{tmp_path}/r.sock")
        ghost.connect(f"ipc://{tmp_path}/r.sock")
        ctl, probe = wire.Session("controller"), wire.Session("thinkpad")
        try:
            sent = await probe.send(dealer, "hello", {"pid": 1})
            ident, frame = await asyncio.wait_for(router.recv_multipart(), 5)
            assert (ident, ctl.decode(frame, peer=ident)) == (b"thinkpad", sent)
            await ctl.send(router, "welcome", {"ack": 0}, to=ident)
            got = await asyncio.wait_for(probe.recv(dealer), 5)
            assert (got["type"], got["host"], got["body"]) == ("welcome", "controller", {"ack": 0})
            await ghost.send(wire.Session("thinkpad").frame("hello"))  # another peer's name
            ident, frame = await asyncio.wait_for(router.recv_multipart(), 5)
            with pytest.raises(wire.ProtocolError, match="'thinkpad' does not match routing id b'ghost'"):
                ctl.decode(frame, peer=ident)
            assert ctl.counters == {"sent": 1, "received": 1, "refused": 1}
            assert probe.counters == {"sent": 1, "received": 1, "refused": 0}
        finally:
            for sock in (router, dealer, ghost):
                sock.close()
            ctx.term()

    asyncio.run(main())


def test_send_blocking_on_a_plain_socket(tmp_path):
    import zmq

    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind(f"ipc://{tmp_path}/p.sock")
        b.connect(f"ipc://{tmp_path}/p.sock")
        cli = wire.Session("cli")
        cli.send_blocking(b, "status", {})
        assert a.poll(5000)
        assert wire.Session("controller").decode(a.recv())["type"] == "status"
        assert cli.counters["sent"] == 1
    finally:
        a.close(linger=0)
        b.close(linger=0)
        ctx.term()


def test_an_event_over_the_size_limit_is_refused_and_takes_no_number():
    s = wire.Session("thinkpad")
    with pytest.raises(wire.ProtocolError, match="exceeds"):
        s.batch([{"kind": "console", "text": "x" * (wire.MAX_FRAME + 1)}])
    assert s.event_seq == 0 and s.batch([{"kind": "state"}])[0]["seq"] == 1  # no gap for the receiver


@pytest.mark.parametrize("field, value", [("type", ["events"]), ("type", {"a": 1}), ("type", 7), ("host", ["x"])])
def test_an_envelope_field_of_the_wrong_type_is_a_protocol_error_not_a_crash(field, value):
    import msgpack
    env = {"v": 1, "type": "events", "host": "thinkpad", "seq": 1, "time": 1, "body": {}, field: value}
    with pytest.raises(wire.ProtocolError):
        wire.decode(msgpack.packb(env))


def test_every_socket_limit_is_the_frame_limit():
    import zmq
    ctx = zmq.Context()
    try:
        sock = wire.limit(ctx.socket(zmq.DEALER))
        assert sock.getsockopt(zmq.MAXMSGSIZE) == wire.MAX_FRAME
        sock.close(0)
    finally:
        ctx.term()


def test_a_batch_takes_a_range_of_event_numbers_and_packs_as_msgpack_would():
    from tcplab.wire.envelope import pack_event
    s, t = wire.Session("thinkpad"), wire.Session("thinkpad")
    events = [{"kind": "console", "t_ns": i, "text": str(i), "stream": "stdout"} for i in range(3)]
    env, frame = s.batch(events, at=9)
    assert env["seq"] == 1 and s.event_seq == 3 and env["body"] == {"events": events}
    first, packed = t.batch_packed([pack_event(e) for e in events], at=9)
    assert (first, packed) == (1, frame) and t.event_seq == 3  # the same bytes, each event packed once
    assert s.batch(events[:1])[0]["seq"] == 4 and t.batch_packed([pack_event(events[0])])[0] == 4
    assert wire.decode(frame)["body"]["events"] == events
    with pytest.raises(wire.ProtocolError, match="1..256 events"):
        t.batch_packed([pack_event(events[0])] * (wire.MAX_BATCH + 1))
    assert t.event_seq == 4

