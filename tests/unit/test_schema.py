"""scenarios/scenario.schema.json: what controller.schema makes from the format's registry and
bounds, a valid JSON Schema that every library scenario passes and every field-level malformed file
of tests/data/bad-scenarios fails (the order of steps and the YAML itself are tcplab check's)."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from controller import schema
from tcplab import strictyaml
from tests.unit.test_bad_scenarios import FILES

REPO = Path(__file__).resolve().parents[2]
ORDER = {"21-send-before-connect", "22-close-before-listen", "23-listen-twice", "56-shutdown-before-a-connection",
         # a named connection's steps against its connect's, before and after
         "57-send-on-an-unknown-connection", "58-connection-named-twice", "62-connection-on-a-third-host",
         "63-a-closed-end-acted-on", "64-named-beside-nc", "67-expectation-before-its-connect",
         "68-more-named-than-a-listen-accepts", "70-a-refused-connections-other-end"}  # not a schema's to say
# nor one field against another's value (a jitter larger than the delay, a reorder at delay 0, a count with a
# connection, an expectation on a connection no connect names or on the listener's LISTEN)
ACROSS = {"46-jitter-above-delay", "48-reorder-without-delay", "52-jitter-above-the-scenarios-delay",
          "60-connection-with-a-count", "61-expectation-on-an-unknown-connection", "65-listen-on-a-connection"}


def validator():
    return jsonschema.Draft202012Validator(json.loads((REPO / "scenarios" / "scenario.schema.json").read_text()))


def test_the_file_is_what_the_registry_makes_and_a_valid_schema():
    assert (REPO / "scenarios" / "scenario.schema.json").read_text() == schema.text(), \
        "run: python -m controller.schema > scenarios/scenario.schema.json"
    jsonschema.Draft202012Validator.check_schema(schema.schema())


@pytest.mark.parametrize("path", sorted((REPO / "scenarios").glob("*.yml")), ids=lambda p: p.stem)
def test_every_library_scenario_passes(path):
    assert [e.message for e in validator().iter_errors(yaml.safe_load(path.read_text()))] == []


def test_every_field_level_malformed_file_fails_and_only_the_order_ones_pass():
    v, passed, refused = validator(), set(), 0
    for path in FILES:
        try:
            data = strictyaml.load(path.read_bytes())
        except strictyaml.YAMLRefused:  # the file's YAML itself: the loader's, before any schema
            continue
        if v.is_valid(data):
            passed.add(path.stem)
        else:
            refused += 1
    assert passed == ORDER | ACROSS and refused >= 30


def test_the_expectation_grammar_is_the_formats():
    pattern = schema.expectation_pattern()
    import re
    for good in ("thinkpad LISTEN", "a syn_recv", "b TCP_CLOSE", "thinkpad ESTABLISHED x200", "b prints Hello world",
                 "b prints Bye x3"):
        assert re.match(pattern, good), good
    for bad in ("thinkpad", "thinkpad ESTABLISHD", "thinkpad ESTABLISHED x0", "a b LISTEN"):
        assert not re.match(pattern, bad), bad
