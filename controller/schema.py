"""The scenario format as a JSON Schema (draft 2020-12), for editors and other tools:
``scenarios/scenario.schema.json``, made from the same registry and bounds :mod:`controller.scenario`
checks with (``python -m controller.schema > scenarios/scenario.schema.json``; a test keeps the file
equal to what this makes).

It says what a schema can: the fields, their types and bounds, which fields each action takes and
needs, the expectation grammar. What it cannot, ``tcplab check`` still does: the order of the steps
(a send after a connect), a line number in every message, and a file's YAML itself (no anchors or
aliases, no key twice, nesting and size bounds: tcplab.strictyaml).
"""

from __future__ import annotations

import json
import re
import sys

from controller import analysis, scenario
from tcplab import actions, tcpknobs, tcpstates, wire
from tcplab.actions import keepalive, shape
from tcplab.actions.listen import MAX_CONNECTIONS
from tcplab.impairment import PARAMS, RATE_RE
from tcplab.actions.send import MAX_BYTES, MAX_TEXT

ID = "https://tcplab.invalid/scenario.schema.json"


def _anycase(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


def state_pattern() -> str:
    """Every spelling tcplab.tcpstates.name takes (any case, an optional ``TCP_``)."""
    spellings = sorted({*tcpstates.NAMES, *tcpstates._ALIASES}, key=lambda s: (-len(s), s))
    return f"(?:{_anycase('TCP_')})?(?:{'|'.join(_anycase(s) for s in spellings)})"


def expectation_pattern() -> str:
    host = wire.HOST_RE.pattern.strip("^$")
    flag = f"(?:{'|'.join(scenario.TCP_FLAGS)})"
    word = rf'(?:"[^"]*"|{flag}(?:\+{flag})*|{"|".join(analysis.FLAGS)}|data|segment)'
    segment = rf"(?:sends|receives)(?:\s+{word})+"
    kernel = rf"kernel\s+(?:{'|'.join(scenario.KERNEL_EVENTS)})"
    on = rf"(?:\s+on\s+{host})?"
    time = re.sub(r"\(\?P<[a-z]+>", "(?:", scenario.TIME)  # the format's, its groups unnamed  # a named connection's (after ``prints``, the text may end so too)
    return (rf"^\s*{host}\s+(?:prints\s+.*?\S|{segment}|{kernel}|{state_pattern()}){on}"
            rf"(?:\s+x[1-9][0-9]{{0,5}})?{on}(?:\s+at\s+{time}(?:\s*(?:±|\+-)\s*{scenario.NUM})?)?\s*$")


def _shaping() -> dict:
    """A shape step's impairment fields, in the scenario's units (tcplab.actions.shape)."""
    props = {}
    for key, (param, scale) in shape.STEP_PARAMS.items():
        _, _, lo, hi, _ = PARAMS[param]
        props[key] = {"type": "number", "minimum": lo / scale, "maximum": hi / scale}
    props["rate"] = {"oneOf": [props["rate"], {"type": "string", "pattern": RATE_RE.pattern}]}
    return props


def _knobs() -> dict:
    """A sysctl step's ``set``: the knobs of tcplab.tcpknobs, each a whole number (or three)."""
    props = {}
    for name, (lo, hi) in tcpknobs.ALLOWED.items():
        number = {"type": "integer", "minimum": lo, "maximum": hi}
        props[name] = ({"type": "array", "items": number, "minItems": 3, "maxItems": 3}
                       if name in tcpknobs.TRIPLES else number)
    return {"type": "object", "minProperties": 1, "additionalProperties": False, "properties": props}


def _step() -> dict:
    host_name = {"type": "string", "pattern": wire.HOST_RE.pattern}
    props = {
        "action": {"enum": list(scenario.ACTIONS)},
        "host": {"oneOf": [host_name, {"type": "array", "items": host_name, "minItems": 1}]},
        "to": host_name,
        "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT, "pattern": r"^[^\n]*$"},
        "bytes": {"type": "integer", "minimum": 1, "maximum": MAX_BYTES},
        "reading": {"type": "boolean"},
        "count": {"type": "integer", "minimum": 1, "maximum": MAX_CONNECTIONS},
        "connection": {"type": "string", "pattern": "^(?!x[0-9]+$)" + wire.HOST_RE.pattern[1:]},  # not a count
        "expect": {"oneOf": [{"type": "string", "pattern": expectation_pattern()},
                             {"type": "array", "items": {"type": "string", "pattern": expectation_pattern()}}]},
        "timeout": {"type": "number", "minimum": 0.1, "maximum": 3600},
        **_shaping(),
        "clear": {"type": "boolean"},
        "note": {"type": "string"},
        "duration": {"type": "number", "minimum": 0, "maximum": scenario.MAX_DURATION_S},
        "set": _knobs(),
        **{key: {"type": "integer", "minimum": lo, "maximum": hi} for key, (_, lo, hi) in keepalive.FIELDS.items()},
    }
    assert set(props) == scenario.STEP_KEYS, "the schema's step fields are the format's"
    rules = []
    for name in scenario.ACTIONS:
        act = actions.ACTIONS.get(name)
        own = set(act.step_fields) if act is not None else set(scenario.WAIT_KEYS)
        needs = ["host"] if act is not None else []
        needs += sorted(f for f in own if f in ("to", "set", "idle", "interval", "probes", "reading"))
        then: dict = {"required": needs}
        if name == "send":  # a line, or a number of bytes
            then["oneOf"] = [{"required": ["text"]}, {"required": ["bytes"]}]
        if act is None:  # a wait: for a while, or for its expectations
            then["anyOf"] = [{"required": ["expect"]}, {"required": ["duration"]}]
        foreign = sorted((scenario.ACTION_FIELDS | scenario.WAIT_KEYS) - own)
        if foreign:
            then["not"] = {"anyOf": [{"required": [f]} for f in foreign]}
        if act is not None and act.one_host:
            then["properties"] = {"host": host_name}
        if name == "shape":  # a clear removes all shaping: no impairment field with it
            then["if"] = {"properties": {"clear": {"const": True}}, "required": ["clear"]}
            then["then"] = {"not": {"anyOf": [{"required": [f]} for f in shape.STEP_PARAMS]}}
        rules.append({"if": {"properties": {"action": {"const": name}}, "required": ["action"]}, "then": then})
    return {"type": "object", "additionalProperties": False, "required": ["action"], "properties": props,
            "allOf": rules}


def schema() -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": ID,
        "title": "tcplab scenario",
        "description": "A tcplab scenario file (controller/scenario.py). Made by python -m controller.schema.",
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "steps"],
        "properties": {
            "name": {"type": "string", "pattern": wire.HOST_RE.pattern},
            "description": {"type": "string"},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "delay": {"type": "number", "minimum": 0, "maximum": scenario.MAX_DELAY_S},
            "steps": {"type": "array", "minItems": 1, "maxItems": scenario.MAX_STEPS, "items": {"$ref": "#/$defs/step"}},
        },
        "$defs": {"step": _step()},
    }


def text() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(text())
