"""controller.wheelhouse.run: the one way the wheelhouse runs a tool (apt-get, pip) and says why it failed."""

from __future__ import annotations

import pytest

from controller.wheelhouse import WheelhouseError, run
from tcplab.errors import TcplabError


@pytest.mark.parametrize("script, said", [
    ('echo "Reading lists"; echo "E: Failed to fetch http://deb/x" >&2; echo "E: later" >&2; exit 100',
     "exit 100): E: Failed to fetch http://deb/x"),                  # apt-get: its first E: line
    ('echo "Collecting x" >&2; echo "ERROR: No matching distribution for x" >&2; exit 1',
     "exit 1): ERROR: No matching distribution for x"),              # pip: its first ERROR line
    ('echo "building" >&2; echo "  backend said no" >&2; exit 2', "exit 2):   backend said no"),  # else the last
    ("exit 4", "exit 4): no output"),
])
def test_a_failed_tool_is_one_line_naming_what_and_why(script, said):
    with pytest.raises(WheelhouseError) as e:
        run(["sh", "-c", script], "the tool")
    assert str(e.value) == f"the tool failed ({said}" and isinstance(e.value, TcplabError)


def test_env_is_added_to_ours_and_success_is_silent(monkeypatch):
    monkeypatch.setenv("TCPLAB_TEST_OURS", "kept")
    run(["sh", "-c", 'test "$TCPLAB_TEST_OURS/$EXTRA" = kept/added'], "env check", {"EXTRA": "added"})
