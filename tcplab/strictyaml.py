"""YAML for the files a user writes (scenarios): bounded, strict, and with a line for every value.

PyYAML's ``safe_load`` builds no objects, but it still takes a 420-byte file of nested aliases into
a 1.1 GB value, raises RecursionError on 20,000 nested brackets, a UnicodeDecodeError on a stray
byte, and keeps the last of two equal keys without a word. :func:`load` refuses each of these with
:class:`YAMLRefused` (a line number and one sentence), before anything is built where it can:

- more than :data:`MAX_BYTES`;
- bytes that are not UTF-8 (the line they are on);
- an anchor or an alias (``&name``, ``*name``): a scenario needs none;
- nesting deeper than :data:`MAX_DEPTH`, found on the parser's event stream (iterative), so the
  recursive composer never sees it;
- a key twice in one mapping.

Every mapping it builds is a :class:`Lined` dict and every list a :class:`LinedList`: ``.line``
(1-based, where it starts) and ``.lines`` (a key's or an item's line), so a checker can say where a
wrong value is. Everything else is PyYAML's safe loader (no tags beyond the standard ones).
"""

from __future__ import annotations

import yaml

from tcplab.errors import TcplabError

MAX_BYTES = 1 << 20
MAX_DEPTH = 32


class YAMLRefused(TcplabError, ValueError):
    """A document :func:`load` will not read: ``line`` (1-based, or None) and why, in one sentence."""

    def __init__(self, line: int | None, why: str):
        super().__init__(why)
        self.line, self.why = line, why


class Lined(dict):
    line: int = 0
    lines: dict


class LinedList(list):
    line: int = 0
    lines: list


def line_of(value: object, key: object = None) -> int | None:
    """Where ``value`` (a Lined dict or list) starts, or where its ``key`` (item) is; None if unknown."""
    lines = getattr(value, "lines", None)
    if key is not None and lines is not None:
        try:
            return lines[key]
        except (KeyError, IndexError, TypeError):
            pass
    return getattr(value, "line", None) or None


class _Loader(yaml.SafeLoader):
    def compose_node(self, parent, index):  # noqa: ANN001 (PyYAML's signature)
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise YAMLRefused(event.start_mark.line + 1, f"the alias *{event.anchor} is not allowed here "
                                                         "(no anchors or aliases in this file)")
        if getattr(event, "anchor", None):
            raise YAMLRefused(event.start_mark.line + 1, f"the anchor &{event.anchor} is not allowed here "
                                                         "(no anchors or aliases in this file)")
        return super().compose_node(parent, index)


def _mapping(loader: _Loader, node: yaml.MappingNode):
    data = Lined()
    data.line, data.lines = node.start_mark.line + 1, {}
    yield data
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise YAMLRefused(key_node.start_mark.line + 1, "a key must be a plain value, not a list or a mapping") \
                from None
        if key in data.lines:
            raise YAMLRefused(key_node.start_mark.line + 1,
                              f"the key {key!r} is given twice (first at line {data.lines[key]})")
        data.lines[key] = key_node.start_mark.line + 1
        data[key] = loader.construct_object(value_node, deep=True)


def _sequence(loader: _Loader, node: yaml.SequenceNode):
    data = LinedList()
    data.line, data.lines = node.start_mark.line + 1, [n.start_mark.line + 1 for n in node.value]
    yield data
    data.extend(loader.construct_object(n, deep=True) for n in node.value)


_Loader.add_constructor("tag:yaml.org,2002:map", _mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _sequence)


def _text(raw: bytes) -> str:
    if len(raw) > MAX_BYTES:
        raise YAMLRefused(None, f"the file is {len(raw):,} bytes; at most {MAX_BYTES:,}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YAMLRefused(raw.count(b"\n", 0, e.start) + 1, f"byte {e.start} (0x{raw[e.start]:02x}) is not UTF-8") \
            from None


def _depth(text: str) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise YAMLRefused(event.start_mark.line + 1, f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def load(raw: bytes) -> object:
    """The one document in ``raw``; :class:`YAMLRefused` for what this module refuses, and for YAML
    that does not parse (the line PyYAML names)."""
    text = _text(raw)
    try:
        _depth(text)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark, context = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
        why = getattr(e, "problem", None) or "syntax"
        if context is not None and getattr(e, "context", None):
            why += f", {e.context} from line {context.line + 1}"
        mark = mark or context
        raise YAMLRefused(mark.line + 1 if mark else None, f"not valid YAML ({why})") from None
