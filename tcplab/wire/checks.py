"""The value checks :mod:`tcplab.wire.bodies` declares every body with: one small :class:`Check` per
type and bound, composed into maps (``Fields``) and lists.

A check has two faces: ``ok(value) -> bool``, the fast one that runs on every frame (plain type
tests: ``type(v) is int`` refuses a bool, a float and a subclass at once, as msgpack only ever gives
plain types), and ``why(value) -> str``, which runs only once ``ok`` said no and names what was
wrong, down to the nested field (``field 'clock' field 'offset_ns' must be ...``). Nothing here
raises: the caller raises :class:`~tcplab.wire.ProtocolError` with ``why``'s words.

Why not a schema library (jsonschema, pydantic, msgspec): the event path runs this on every event
(``bench.event_path`` must stay >= 0.5x bare pyzmq), and a table of predicates over what msgpack
already decoded costs ~1 µs per event; a library would add a dependency to the probe (installed
alone on a Pi) for no bound we cannot write here in a line.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping

I64 = (1 << 63) - 1  # the largest value an int field may take (msgpack's signed 64-bit)


def show(v: Any) -> str:
    """A value in an error message: its type and a short repr (a field may hold a megabyte)."""
    text = repr(v)
    return f"{type(v).__name__} {text[:60] + '...' if len(text) > 60 else text}"


class Check:
    """One declared type and bound: ``ok`` (fast) and ``want`` (the words for an error)."""

    __slots__ = ("ok", "want", "why", "spec")

    def __init__(self, ok: Callable[[Any], bool], want: str, why: Callable[[Any], str] | None = None,
                 spec: tuple = ()):
        self.ok = ok
        self.want = want
        self.why = why or self._why
        self.spec = spec  # what it was declared as, e.g. ("int", 0, 65535): the property tests read it

    def _why(self, v: Any) -> str:
        return f"must be {self.want}, got {show(v)}"


def Int(lo: int = 0, hi: int = I64) -> Check:
    return Check(lambda v: type(v) is int and lo <= v <= hi, f"an integer {lo}..{hi}", spec=("int", lo, hi))


def Num(lo: float, hi: float) -> Check:
    """An int or a float, finite (NaN fails every comparison), not a bool."""
    return Check(lambda v: (type(v) is float or type(v) is int) and lo <= v <= hi, f"a number {lo:g}..{hi:g}",
                 spec=("num", lo, hi))


def Str(max_len: int, pattern: str | None = None, choices: Iterable[str] | None = None) -> Check:
    if choices is not None:
        allowed = frozenset(choices)
        return Check(lambda v: type(v) is str and v in allowed, f"one of {', '.join(sorted(allowed))}",
                     spec=("choice", tuple(sorted(allowed))))
    if pattern is not None:
        match = re.compile(pattern).fullmatch
        return Check(lambda v: type(v) is str and len(v) <= max_len and match(v) is not None,
                     f"a string matching {pattern}", spec=("pattern", max_len, pattern))
    return Check(lambda v: type(v) is str and len(v) <= max_len, f"a string of at most {max_len} characters",
                 spec=("str", max_len))


def Bytes(max_len: int) -> Check:
    return Check(lambda v: type(v) is bytes and len(v) <= max_len, f"bytes, at most {max_len}", spec=("bytes", max_len))


BOOL = Check(lambda v: v is True or v is False, "true or false", spec=("bool",))


def Opt(c: Check) -> Check:
    """``c`` or nil."""
    ok = c.ok
    return Check(lambda v: v is None or ok(v), f"nil or {c.want}", c.why, spec=("opt", c))


def List(item: Check, max_items: int, min_items: int = 0) -> Check:
    ok = item.ok

    def why(v: Any) -> str:
        if type(v) is not list or not min_items <= len(v) <= max_items:
            return f"must be a list of {min_items}..{max_items} items, got {show(v)}"
        i = next(i for i, x in enumerate(v) if not ok(x))
        return f"item {i} {item.why(v[i])}"
    return Check(lambda v: type(v) is list and min_items <= len(v) <= max_items and all(map(ok, v)),
                 f"a list of at most {max_items} items", why, spec=("list", item, min_items, max_items))


def MapOf(key: Check, value: Check, max_items: int) -> Check:
    """A map of any keys that pass ``key`` to values that pass ``value`` (counters: name -> count)."""
    kok, vok = key.ok, value.ok

    def why(v: Any) -> str:
        if type(v) is not dict or len(v) > max_items:
            return f"must be a map of at most {max_items} entries, got {show(v)}"
        k = next(k for k, x in v.items() if not (kok(k) and vok(x)))
        return f"key {show(k)} {key.why(k)}" if not kok(k) else f"entry {k!r} {value.why(v[k])}"
    return Check(lambda v: type(v) is dict and len(v) <= max_items and all(kok(k) and vok(x) for k, x in v.items()),
                 f"a map of at most {max_items} entries", why, spec=("mapof", key, value, max_items))


class Fields:
    """A map with declared fields: each field's check, which are required, and nothing else
    (an unknown field is refused: both sides of the wire ship together, so a field nobody declared
    is junk or an attack, not a newer peer)."""

    __slots__ = ("checks", "required", "oks")

    def __init__(self, checks: Mapping[str, Check], required: Iterable[str] = ()):
        self.checks = dict(checks)
        self.oks = {k: c.ok for k, c in self.checks.items()}
        self.required = frozenset(required)
        unknown = self.required - self.checks.keys()
        if unknown:
            raise ValueError(f"required field(s) without a check: {sorted(unknown)}")

    def ok(self, v: Any) -> bool:
        if type(v) is not dict or not self.required <= v.keys():
            return False
        oks = self.oks
        for k, x in v.items():
            c = oks.get(k)
            if c is None or not c(x):
                return False
        return True

    def why(self, v: Any) -> str:
        """What is wrong with ``v`` (one line, naming the field), once :meth:`ok` said no."""
        if type(v) is not dict:
            return f"must be a map, got {show(v)}"
        missing = sorted(self.required - v.keys())
        if missing:
            return f"lacks field(s) {', '.join(map(repr, missing))}"
        for k, x in v.items():
            c = self.checks.get(k) if type(k) is str else None
            if c is None:
                return f"has no field {k!r}" if type(k) is str and len(k) <= 64 else f"has no field {show(k)}"
            if not c.ok(x):
                return f"field {k!r} {c.why(x)}"
        return "is fine"  # not reached when ok() said no

    def as_check(self) -> Check:
        """This map as a field of another."""
        return Check(self.ok, "a map", self.why, spec=("fields", self))


def Tree(depth: int, max_items: int, max_len: int) -> Check:
    """Plain data of at most ``depth`` levels (maps with string keys, lists, strings, numbers, bools,
    nil): what a scenario is on the wire before :func:`controller.scenario.parse` checks its meaning."""
    def ok(v: Any, left: int = depth) -> bool:
        t = type(v)
        if t is str:
            return len(v) <= max_len
        if v is None or t is bool or t is int or t is float:
            return True
        if t is not list and t is not dict or left == 0 or len(v) > max_items:
            return False
        if t is list:
            return all(ok(x, left - 1) for x in v)
        return all(type(k) is str and len(k) <= max_len and ok(x, left - 1) for k, x in v.items())
    return Check(ok, f"plain data of at most {depth} levels, {max_items} items a level, strings of {max_len}",
                 spec=("tree", depth, max_items, max_len))
