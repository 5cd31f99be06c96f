import msgpack
import pytest

from tcplab import wire


def test_round_trip_keeps_every_field():
    env = wire.make("event", "thinkpad", 7, {"kind": "packet", "raw": b"\x45\x00"}, at=123)
    assert wire.decode(wire.encode(env)) == env


@pytest.mark.parametrize("frame, reason", [
    (b"\xc1", "not valid msgpack"),
    (msgpack.packb([1, 2]), "must be a map"),
    (msgpack.packb({"v": 1}), "lacks field"),
    (msgpack.packb({"v": 9, "type": "event", "host": "h", "seq": 0, "time": 0, "body": {}}), "version"),
    (msgpack.packb({"v": 1, "type": "exec", "host": "h", "seq": 0, "time": 0, "body": {}}), "unknown message type"),
    (msgpack.packb({"v": 1, "type": "event", "host": "a b", "seq": 0, "time": 0, "body": {}}), "bad host"),
    (msgpack.packb({"v": 1, "type": "event", "host": "h", "seq": -1, "time": 0, "body": {}}), "'seq'"),
    (msgpack.packb({"v": 1, "type": "event", "host": "h", "seq": 0, "time": 0, "body": []}), "body must be a map"),
])
def test_bad_frames_are_refused_with_a_reason(frame, reason):
    with pytest.raises(wire.ProtocolError, match=reason):
        wire.decode(frame)


def test_oversized_frame_is_refused():
    with pytest.raises(wire.ProtocolError, match="exceeds"):
        wire.decode(b"\x00" * (wire.MAX_FRAME + 1))


def test_command_check_accepts_the_fixed_actions():
    assert wire.check_command({"id": 1, "action": "connect", "args": {"ip": "10.90.0.1", "port": 9090}}) == (
        "connect", {"ip": "10.90.0.1", "port": 9090})
    assert wire.check_command({"id": 2, "action": "shape", "args": {"delay_ms": 300}})[0] == "shape"


@pytest.mark.parametrize("body, reason", [
    ({"id": 1, "action": "sh", "args": {}}, "unknown action"),
    ({"id": "1", "action": "listen"}, "id must be an integer"),
    ({"id": 1, "action": "send", "args": {}}, "needs argument 'text'"),
    ({"id": 1, "action": "send", "args": {"text": "a\nb"}}, "one line"),
    ({"id": 1, "action": "listen", "args": {"cmd": "rm -rf /"}}, "no argument 'cmd'"),
    ({"id": 1, "action": "shape", "args": {"delay_ms": "3s"}}, "wrong type"),
    ({"id": 1, "action": "shape", "args": {"delay_ms": 10**6}}, "outside"),
    ({"id": 1, "action": "connect", "args": {"ip": "10.90.0.1", "port": 0}}, "outside"),
])
def test_command_check_refuses_anything_else(body, reason):
    with pytest.raises(wire.ProtocolError, match=reason):
        wire.check_command(body)
