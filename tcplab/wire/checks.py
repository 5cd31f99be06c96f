"""The value checks :mod:`tcplab.wire.bodies` declares every body with: one small :class:`Check` per
type and bound, composed into maps (``Fields``) and lists.

A check has two faces: ``ok(value) -> bool``, the fast one that runs on every frame (plain type
tests: ``type(v) is int`` refuses a bool, a float and a subclass at once, as msgpack only ever gives
plain types), and ``why(value) -> str``, which runs only once ``ok`` said no and names what was
wrong, down to the nested field (``field 'clock' field 'offset_ns' must be ...``). Nothing here
raises: the caller raises :class:`~tcplab.wire.ProtocolError` with ``why``'s words.

The maps' and lists' ``ok`` are compiled once from the declarations (each leaf's test inlined as
Python source, :meth:`Fields._compiled`): what runs per event is one function of type tests and
comparisons. Why not a schema library (jsonschema, pydantic, msgspec): the event path runs this on
every event (``bench.event_path`` must stay >= 0.5x bare pyzmq), this costs about 1 µs a packet
event (less than msgpack's unpacking of it), and a library would add a dependency to the probe
(installed alone on a Pi) for no bound we cannot write here in a line.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any, Callable, Iterable, Mapping

I64 = (1 << 63) - 1  # the largest value an int field may take (msgpack's signed 64-bit)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 3, 60, 60, 6, 4


def show(v: Any) -> str:
    """A value in an error message: its type and a short repr, which never descends more than three
    levels (a field may hold a megabyte, or lists nested a thousand deep: repr() of those raised
    RecursionError out of the decoder)."""
    text = _REPR.repr(v)
    return f"{type(v).__name__} {text[:80] + '...' if len(text) > 80 else text}"


_NS: dict[str, Any] = {"_MISSING": object()}  # what the compiled checks name (patterns, choices, nested checks)


def _name(value: Any) -> str:
    """A name the compiled code reaches ``value`` by."""
    name = f"_k{len(_NS)}"
    _NS[name] = value
    return name


def _compile(source: str, name: str) -> Callable:
    exec(source, _NS)  # noqa: S102 - our own declarations' code, never the wire's
    return _NS.pop(name)


class _Matches:
    """A pattern's full matches, remembered (a lab has a handful of addresses: a set lookup instead
    of the regular expression each time; a flood of new ones empties the memory, never grows it)."""

    def __init__(self, pattern: str, keep: int = 4096):
        self.match = re.compile(pattern).fullmatch
        self.seen: set[str] = set()
        self.keep = keep

    def ok(self, v: str) -> bool:
        if v in self.seen:
            return True
        if self.match(v) is None:
            return False
        if len(self.seen) >= self.keep:
            self.seen.clear()
        self.seen.add(v)
        return True


class Check:
    """One declared type and bound: ``ok`` (fast) and ``want`` (the words for an error). A leaf's
    ``expr`` is its test as Python source over ``{v}``, inlined into the maps that hold it."""

    __slots__ = ("ok", "want", "why", "spec", "expr")

    def __init__(self, ok: Callable[[Any], bool] | None, want: str, why: Callable[[Any], str] | None = None,
                 spec: tuple = (), expr: str | None = None):
        self.expr = expr
        self.ok = ok if ok is not None else _compile(f"def _ok(v): return {expr.format(v='v')}", "_ok")  # type: ignore[union-attr]
        self.want = want
        self.why = why or self._why
        self.spec = spec  # what it was declared as, e.g. ("int", 0, 65535): the property tests read it

    def _why(self, v: Any) -> str:
        return f"must be {self.want}, got {show(v)}"

    def inline(self, var: str) -> str:
        """This check of ``var`` as Python source: its expr, or a call of its ``ok``."""
        return self.expr.format(v=var) if self.expr is not None else f"{_name(self.ok)}({var})"


def Int(lo: int = 0, hi: int = I64) -> Check:
    return Check(None, f"an integer {lo}..{hi}", spec=("int", lo, hi), expr=f"(type({{v}}) is int and {lo} <= {{v}} <= {hi})")


def Num(lo: float, hi: float) -> Check:
    """An int or a float, finite (NaN fails every comparison), not a bool."""
    return Check(None, f"a number {lo:g}..{hi:g}", spec=("num", lo, hi),
                 expr=f"((type({{v}}) is float or type({{v}}) is int) and {lo!r} <= {{v}} <= {hi!r})")


def Str(max_len: int, pattern: str | None = None, choices: Iterable[str] | None = None) -> Check:
    if choices is not None:
        allowed = frozenset(choices)
        return Check(None, f"one of {', '.join(sorted(allowed))}", spec=("choice", tuple(sorted(allowed))),
                     expr=f"(type({{v}}) is str and {{v}} in {_name(allowed)})")
    if pattern is not None:
        match = _name(_Matches(pattern).ok)
        return Check(None, f"a string matching {pattern}", spec=("pattern", max_len, pattern),
                     expr=f"(type({{v}}) is str and len({{v}}) <= {max_len} and {match}({{v}}))")
    return Check(None, f"a string of at most {max_len} characters", spec=("str", max_len),
                 expr=f"(type({{v}}) is str and len({{v}}) <= {max_len})")


def Bytes(max_len: int) -> Check:
    return Check(None, f"bytes, at most {max_len}", spec=("bytes", max_len),
                 expr=f"(type({{v}}) is bytes and len({{v}}) <= {max_len})")


BOOL = Check(None, "true or false", spec=("bool",), expr="({v} is True or {v} is False)")


def Opt(c: Check) -> Check:
    """``c`` or nil."""
    return Check(None, f"nil or {c.want}", c.why, spec=("opt", c), expr=f"({{v}} is None or {c.inline('{v}')})")


def List(item: Check, max_items: int, min_items: int = 0) -> Check:
    ok = item.ok

    def why(v: Any) -> str:
        if type(v) is not list or not min_items <= len(v) <= max_items:
            return f"must be a list of {min_items}..{max_items} items, got {show(v)}"
        i = next(i for i, x in enumerate(v) if not ok(x))
        return f"item {i} {item.why(v[i])}"
    return Check(_compile(f"""def _ok(v):
    if type(v) is not list or not {min_items} <= len(v) <= {max_items}: return False
    for x in v:
        if not {item.inline('x')}: return False
    return True""", "_ok"), f"a list of at most {max_items} items", why, spec=("list", item, min_items, max_items))


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

    __slots__ = ("checks", "required", "ok")

    def __init__(self, checks: Mapping[str, Check], required: Iterable[str] = ()):
        self.checks = dict(checks)
        self.required = frozenset(required)
        unknown = self.required - self.checks.keys()
        if unknown:
            raise ValueError(f"required field(s) without a check: {sorted(unknown)}")
        self.ok: Callable[[Any], bool] = self._compiled()

    def _compiled(self) -> Callable[[Any], bool]:
        """``ok(v)``: one function testing every declared field in line (no call per field: this runs
        on every event). Measured on a packet event: 1.2 µs, against 1.9 µs for a loop calling a
        check per field (a state event: 0.6 against 1.1 µs); msgpack takes 1.3 µs to unpack it."""
        lines = ["def _ok(v):", "    if type(v) is not dict: return False", "    keys = v.keys()",
                 f"    if not keys <= {_name(frozenset(self.checks))}: return False"]
        if self.required:
            lines.append(f"    if not {_name(self.required)} <= keys: return False")
        for key, c in self.checks.items():
            if key in self.required:
                lines += [f"    x = v[{key!r}]", f"    if not {c.inline('x')}: return False"]
            else:
                lines += [f"    x = v.get({key!r}, _MISSING)", f"    if x is not _MISSING and not {c.inline('x')}: return False"]
        return _compile("\n".join([*lines, "    return True"]), "_ok")

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
