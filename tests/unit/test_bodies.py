"""Every body type and event kind as tcplab.wire.bodies declares it, by property (hypothesis): a body
generated from its declaration passes; the same body with any one field given a wrong type or an
out-of-bound value, a required field missing or an unknown field added is refused with a
ProtocolError naming the field; any bytes decode to an envelope or a ProtocolError, nothing else."""

from __future__ import annotations

import functools
import math

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz_frames import FIELDS, nested
from tcplab import wire
from tcplab.wire import bodies
from tcplab.wire.checks import Check, Fields

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SMALL = 8  # generated strings and lists stay short; the "too long" mutations are built exactly

# valid commands come from the actions' own checks (tcplab.actions), so a few real ones
COMMANDS = st.sampled_from([{"action": "listen"}, {"action": "close", "args": {}}, {"action": "sync"},
                            {"action": "send", "args": {"text": "hello"}},
                            {"action": "shape", "args": {"delay_ms": 300, "loss_pct": 1.5}},
                            {"action": "shape", "args": {"clear": True}},
                            {"action": "connect", "args": {"ip": "10.90.0.2", "port": 9090}}])


# --- valid values, from a declaration -------------------------------------------------------------
def valid(c: Check) -> st.SearchStrategy:
    kind, *a = c.spec
    if kind == "int":
        return st.integers(a[0], a[1])
    if kind == "num":
        return st.floats(a[0], a[1], allow_nan=False) | st.integers(int(math.ceil(a[0])), int(a[1]))
    if kind == "choice":
        return st.sampled_from(a[0])
    if kind == "pattern":
        return st.from_regex(a[1], fullmatch=True).filter(lambda s: len(s) <= a[0])
    if kind == "str":
        return st.text(max_size=min(a[0], SMALL))
    if kind == "bytes":
        return st.binary(max_size=min(a[0], SMALL))
    if kind == "bool":
        return st.booleans()
    if kind == "opt":
        return st.none() | valid(a[0])
    if kind == "list":
        return st.lists(valid(a[0]), min_size=a[1], max_size=max(a[1], min(a[2], 4)))
    if kind == "mapof":
        return st.dictionaries(valid(a[0]), valid(a[1]), max_size=min(a[2], 4))
    if kind == "fields":
        return valid_map(a[0])
    if kind == "tree":
        leaf = st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 63) - 1) | st.text(max_size=SMALL)
        return st.recursive(leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
            st.text(max_size=SMALL), inner, max_size=3), max_leaves=10).filter(c.ok)
    if kind == "map":
        return st.sampled_from(EVENT_KINDS).flatmap(lambda k: valid_map(bodies.EVENTS[k]))
    raise AssertionError(f"no strategy for {c.spec}")


def valid_map(f: Fields) -> st.SearchStrategy:
    required = {k: valid(c) for k, c in f.checks.items() if k in f.required}
    optional = {k: valid(c) for k, c in f.checks.items() if k not in f.required}
    return st.fixed_dictionaries(required, optional=optional)


# --- wrong values: each must be refused where the declaration stands -----------------------------
def wrong(c: Check, good: object = None) -> list:
    kind, *a = c.spec
    if kind == "int":
        return [a[0] - 1, a[1] + 1, True, float(a[0]), str(a[0]), None, [a[0]]]
    if kind == "num":
        return [a[0] - 1, a[1] + 1, math.nan, math.inf, True, "1", None]
    if kind == "choice":
        return ["not-one-of-them", 1, b"x", None]
    if kind == "pattern":
        return ["a b\n", "x" * (a[0] + 1), b"1", 1, None]
    if kind == "str":
        return ["x" * (a[0] + 1), b"x", 1, None, ["x"]]
    if kind == "bytes":
        return [b"x" * (a[0] + 1), "x", None]
    if kind == "bool":
        return [0, 1, None, "true"]
    if kind == "opt":
        return [w for w in wrong(a[0]) if w is not None]
    if kind == "list":
        item, lo, hi = a
        return ["x", {}] + [[w] for w in wrong(item)[:3]] + [[example(item)] * (hi + 1)] + ([[]] if lo > 0 else [])
    if kind == "mapof":
        k, v, hi = a
        bad_keys = [1, "a b"] if k.spec[0] == "pattern" else [1]
        return [[], {example(k): wrong(v)[0]}, {f"h{i}": example(v) for i in range(hi + 1)}] + [
            {key: example(v)} for key in bad_keys]
    if kind == "fields":
        f = a[0]
        ok = example_map(f)
        out: list = [[], "x", {**ok, "junk": 1}]
        out += [{x: y for x, y in ok.items() if x != r} for r in f.required]
        return out
    if kind == "tree":
        deep: object = 1
        for _ in range(a[0] + 2):
            deep = [deep]
        return [deep, "x" * (a[2] + 1), b"x", {1: 1}, list(range(a[1] + 1))]
    if kind == "map":
        return [[], "x", None]
    raise AssertionError(f"no wrong values for {c.spec}")


PATTERNS = {bodies.ADDR.spec[2]: "10.90.0.1:9090", bodies.IP.spec[2]: "10.90.0.1", bodies.HOST.spec[2]: "thinkpad",
            bodies.BODIES["hello"].checks["session"].spec[2]: "0" * 32,
            bodies.BODIES["hello"].checks["iface"].spec[2]: "eth0", bodies.COUNTS.spec[1].spec[2]: "kernel_drops"}


def example(c: Check) -> object:
    """One valid value, the same every time (hypothesis' .example() is not for use inside a test)."""
    kind, *a = c.spec
    simple = {"int": lambda: max(a[0], 0) if a[0] <= 0 <= a[1] or a[0] > 0 else a[0], "num": lambda: max(a[0], 0),
              "choice": lambda: a[0][0], "pattern": lambda: PATTERNS[a[1]], "str": lambda: "x", "bytes": lambda: b"x",
              "bool": lambda: True, "opt": lambda: None, "mapof": dict, "tree": dict, "map": lambda: dict(STATE),
              "list": lambda: [example(a[0])] * a[1], "fields": lambda: example_map(a[0])}
    return simple[kind]()


def example_map(f: Fields) -> dict:
    return {k: example(c) for k, c in f.checks.items() if k in f.required}


EVENT_KINDS = sorted(bodies.EVENTS)
TYPES = sorted(t for t in bodies.BODIES if t in wire.TYPES)


def body_of(type_: str) -> st.SearchStrategy:
    if type_ == "command":
        return st.builds(lambda cid, c: {"id": cid, **c}, st.integers(0, (1 << 63) - 1), COMMANDS)
    return valid_map(bodies.BODIES[type_])


# --- the properties ------------------------------------------------------------------------------
def test_every_envelope_type_has_a_declared_body():
    assert set(wire.TYPES) <= set(bodies.BODIES)


@pytest.mark.parametrize("where, name", [("event", k) for k in EVENT_KINDS] + [("body", t) for t in TYPES])
@SETTINGS
@given(data=st.data())
def test_a_valid_body_passes_and_any_one_wrong_field_is_refused_by_name(where, name, data):
    """Each event kind (check_event) and each message body (check_body)."""
    event = where == "event"
    spec = bodies.EVENTS[name] if event else bodies.BODIES[name]
    check = bodies.check_event if event else functools.partial(bodies.check_body, name)
    said = f"event '{name}'" if event else f"{name} body"
    body = data.draw(valid_map(spec) if event else body_of(name), label="body")
    check(body)
    if event:
        bodies.check_body("events", {"events": [body]})
    fields = sorted(set(spec.checks) - {"kind"})
    if not fields:
        with pytest.raises(wire.ProtocolError, match=f"{said} has no field 'x'"):
            check({"x": 1})
        return
    field = data.draw(st.sampled_from(fields), label="field")
    bad = data.draw(st.sampled_from(wrong(spec.checks[field])), label="wrong value")
    with pytest.raises(wire.ProtocolError, match=f"{said}.*'{field}'"):
        check({**body, field: bad})


@pytest.mark.parametrize("type_", TYPES)
def test_an_unknown_field_or_a_missing_required_one_is_refused(type_):
    spec = bodies.BODIES[type_]
    body = {"id": 1, "action": "listen"} if type_ == "command" else example_map(spec)
    with pytest.raises(wire.ProtocolError, match=f"{type_} body has no field 'exec'"):
        bodies.check_body(type_, {**body, "exec": "rm -rf /"})
    for name in spec.required:
        with pytest.raises(wire.ProtocolError, match=f"{type_} body lacks field.*'{name}'"):
            bodies.check_body(type_, {k: v for k, v in body.items() if k != name})
    with pytest.raises(wire.ProtocolError):
        bodies.check_body(type_, [body])


@SETTINGS
@given(type_=st.sampled_from(TYPES), data=st.data())
def test_a_valid_body_round_trips_through_a_session(type_, data):
    body = data.draw(body_of(type_))
    frame = wire.Session("thinkpad").frame(type_, body)
    env = wire.Session("controller").decode(frame, peer=b"thinkpad")
    assert env["type"] == type_ and env["body"] == body


MSGPACK = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.floats() | st.text(max_size=SMALL)
    | st.binary(max_size=SMALL),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=SMALL) | st.integers(-9, 9), inner,
                                                                 max_size=4), max_leaves=20)


def _decode_or_refuse(frame: bytes) -> None:
    try:
        env = wire.Session("controller").decode(frame)
    except wire.ProtocolError:
        return
    assert isinstance(env, dict) and env["type"] in wire.TYPES


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=256))
def test_any_bytes_decode_to_an_envelope_or_a_protocol_error(frame):
    _decode_or_refuse(frame)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(type_=st.sampled_from(sorted(wire.TYPES)), body=MSGPACK, host=st.sampled_from(["thinkpad", "x y", 1]),
       seq=st.sampled_from([0, 1, -1, True, 2**64 - 1]))
def test_any_msgpack_envelope_decodes_or_is_refused(type_, body, host, seq):
    env = {"v": 1, "type": type_, "host": host, "seq": seq, "time": 1, "body": body}
    _decode_or_refuse(msgpack.packb(env, use_bin_type=True))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(EVENT_KINDS + ["tracepoint", "exec"]), body=st.dictionaries(
    st.sampled_from(sorted({k for f in bodies.EVENTS.values() for k in f.checks}) + ["x"]), MSGPACK, max_size=8))
def test_any_event_shaped_map_passes_or_is_refused(kind, body):
    try:
        bodies.check_event({**body, "kind": kind})
    except wire.ProtocolError:
        return
    assert kind in bodies.EVENTS


# --- the issue's attacks, one by one --------------------------------------------------------------
STATE = {"kind": "state", "t_ns": 1, "local": "10.90.0.1:9090", "remote": "0.0.0.0:*", "from": "CLOSED",
         "to": "LISTEN", "source": "inet_diag"}


@pytest.mark.parametrize("type_, body, reason", [
    ("result", {"id": [1], "ok": True}, "result body field 'id' must be an integer"),
    ("events", {"events": []}, "events body field 'events' must be a list of 1..256 items"),
    ("events", {"events": [1]}, "item 0 must be a map"),
    ("hello", {"pid": 1, "lab_ip": "-lk"}, "hello body field 'lab_ip' must be a string matching"),
    ("hello", {"pid": True}, "field 'pid' must be an integer"),
    ("heartbeat", {"oldest": -1}, "heartbeat body field 'oldest'"),
    ("state", {"probes": {"thinkpad": {"alive": True, "lab_ip": "x" * 100, "clock": {
        "offset_ns": 0, "uncertainty_ns": None}}}}, "entry 'thinkpad' field 'lab_ip'"),
    ("state", {"probes": {"thinkpad": {"alive": True, "lab_ip": ""}}}, "entry 'thinkpad' lacks field.*'clock'"),
    ("command", {"id": 1, "action": "listen", "args": {"cmd": "sh"}}, "listen takes no argument 'cmd'"),
    ("command", {"id": 1, "action": "listen", "shell": "sh"}, "command body has no field 'shell'"),
])
def test_the_issues_bodies_are_refused_naming_the_field(type_, body, reason):
    with pytest.raises(wire.ProtocolError, match=reason):
        bodies.check_body(type_, body)


@pytest.mark.parametrize("event, reason", [
    ({"kind": "console", "t_ns": 1, "text": b"INJECTED", "stream": "stdout"}, "event 'console' field 'text'"),
    ({"kind": "packet", "t_ns": 1, "wall_ns": -1, "dir": "in", "src": "10.90.0.1:1", "dst": "10.90.0.2:2",
      "flags": ["SYN"]}, "event 'packet' field 'wall_ns'"),
    ({k: v for k, v in STATE.items() if k != "local"}, "event 'state' lacks field.*'local'"),
    ({**STATE, "to": "HACKED"}, "event 'state' field 'to' must be one of"),
    ({"kind": "exec", "t_ns": 1}, "known kind, got kind 'exec'"),
    ({"t_ns": 1}, "known kind, got no kind"),
])
def test_the_issues_events_are_refused_naming_kind_and_field(event, reason):
    with pytest.raises(wire.ProtocolError, match=reason):
        bodies.check_event(event)


def test_every_field_a_trace_record_takes_from_an_event_is_declared():
    from controller.trace.schema import FIELDS
    for kind, fields in FIELDS.items():
        assert set(fields) <= set(bodies.EVENTS[str(kind)].checks), kind


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(FIELDS), depth=st.integers(1, 1100))
def test_lists_nested_to_any_depth_decode_or_are_refused(field, depth):
    _decode_or_refuse(nested("thinkpad", field, depth))
