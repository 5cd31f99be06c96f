"""Seventy malformed and hostile scenario files (tests/data/bad-scenarios, each saying on its first
line the message it must get): each is refused with one line naming the file, the line and the
field, and what is allowed; together, through a real ``tcplab check``, in bounded memory and CPU
time (an address-space and a CPU limit on the process: an alias bomb or a 20,000-deep list used to
take 1.1 GB or a traceback). That nothing reaches a host: tests/integration/test_bad_scenario_run.py.
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from controller import scenario
from controller.check import against
from tcplab import strictyaml

DATA = Path(__file__).resolve().parents[1] / "data" / "bad-scenarios"
FILES = sorted(DATA.glob("*.yml"))
REPO = Path(__file__).resolve().parents[2]


def expected(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), path
    return first[len("# expect: "):]


def test_there_are_at_least_forty():
    assert len(FILES) >= 40


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_each_gets_its_one_line(path):
    with pytest.raises(scenario.ScenarioError) as err:
        scenario.load(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}"), message
    assert re.search(expected(path), message), message
    assert re.match(rf"^{re.escape(str(path))}(:\d+)?: ", message), message


def test_all_of_them_in_one_real_tcplab_check_within_a_memory_and_cpu_limit(tmp_path):
    huge = tmp_path / "huge.yml"  # past the size limit: refused before it is read whole
    huge.write_text("name: x\nsteps:\n" + "  - {action: wait, expect: [thinkpad LISTEN]}\n" * 30_000)
    limit = 600 << 20

    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CPU, (60, 60))

    res = subprocess.run([str(Path(sys.executable).parent / "tcplab"), "check", *map(str, FILES), str(huge)],
                         capture_output=True, text=True, timeout=300, preexec_fn=limits, cwd=REPO)
    lines = res.stdout.splitlines()
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr == ""  # no traceback, no warning
    assert len(lines) == len(FILES) + 1
    for path, line in zip([*FILES, huge], lines):
        assert line.startswith(f"{path}"), (path, line)
    assert lines[-1] == f"{huge}: the file is {huge.stat().st_size:,} bytes; at most {strictyaml.MAX_BYTES:,}"


def test_against_an_inventory_a_host_it_lacks_and_a_port_it_does_not_use(tmp_path):
    ports = {"thinkpad": 9090, "raspberrypi": 9090}
    ghost = tmp_path / "ghost.yml"
    ghost.write_text("name: x\nsteps:\n  - {action: listen, host: thinkpad}\n  - action: connect\n"
                     "    host: ghost\n    to: thinkpad\n")
    with pytest.raises(scenario.ScenarioError, match=rf"^{re.escape(str(ghost))}:4: step 2 \(connect\): ghost is "
                                                     r"not a host of inv\.yml's group lab \(it has raspberrypi, thinkpad\)$"):
        against(scenario.load(ghost), str(ghost), ports, "inv.yml")
    port = tmp_path / "port.yml"
    port.write_text("name: x\nport: 9191\nsteps:\n  - {action: listen, host: thinkpad}\n")
    with pytest.raises(scenario.ScenarioError, match="has port 9191 but thinkpad listens, shapes and captures on "
                                                     "port 9090"):
        against(scenario.load(port), str(port), ports, "inv.yml")
    against(scenario.load(REPO / "scenarios" / "seed.yml"), "seed.yml", ports, "inv.yml")  # the seed fits


def test_the_library_checks_clean_against_the_embedded_labs_inventory():
    res = subprocess.run([str(Path(sys.executable).parent / "tcplab"), "check", "-i", "inventory/netns.yml",
                          *sorted(str(p) for p in (REPO / "scenarios").glob("*.yml"))],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert all(": ok (" in line for line in res.stdout.splitlines()), res.stdout


def test_lines_point_at_the_field():
    data = strictyaml.load(b"name: x\nsteps:\n  - action: listen\n    host: thinkpad\n  - action: wait\n"
                           b"    expect:\n      - thinkpad LISTEN\n      - thinkpad ESTABLISHD\n")
    assert strictyaml.line_of(data, "steps") == 2 and strictyaml.line_of(data["steps"], 1) == 5
    assert strictyaml.line_of(data["steps"][1]["expect"], 1) == 8
    with pytest.raises(scenario.ScenarioError, match=r"^f\.yml:8: step 2 \(wait\): unknown TCP state 'ESTABLISHD'"):
        scenario.parse(data, source="f.yml")
