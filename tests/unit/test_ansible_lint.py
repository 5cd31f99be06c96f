"""ansible-lint's production profile over lab.yml and playbooks/ finds nothing (settings: .ansible-lint).

The one rule .ansible-lint skips, var-naming[no-role-prefix], is replaced here by the house's own
convention (shared STYLE.md item 9): every variable a role defines (defaults, register, set_fact)
starts with the project's name and then the role's, ``tcplab_probe_*``, ``tcplab_controller_*``,
``tcplab_testbed_*``; the shared role ``tcplab`` holds ``tcplab_*``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLES = REPO / "playbooks" / "roles"
PREFIX = {"tcplab": "tcplab_", "probe": "tcplab_probe_", "controller": "tcplab_controller_",
          "testbed_netns": "tcplab_testbed_"}


def test_ansible_lint_production_profile_finds_nothing() -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
    r = subprocess.run([str(BIN / "ansible-lint"), "--profile", "production", "--nocolor", "lab.yml", "playbooks"],
                       cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Profile 'production' was required, and it passed" in out, out
    assert re.search(r"Passed: 0 failure\(s\), 0 warning\(s\)", out), out


def test_ansible_lint_settings_are_offline_and_skip_only_the_role_prefix_rule() -> None:
    cfg = yaml.safe_load((REPO / ".ansible-lint").read_text())
    assert cfg["offline"] is True and cfg["profile"] == "production"
    assert cfg.get("skip_list") == ["var-naming[no-role-prefix]"]
    assert not cfg.get("warn_list")


def _role_variables(role: Path) -> list[tuple[str, str]]:
    """(file, name) of every variable the role defines: its defaults, its registers and set_facts."""
    found = []
    defaults = role / "defaults" / "main.yml"
    if defaults.exists():
        found += [(str(defaults), k) for k in (yaml.safe_load(defaults.read_text()) or {})]
    for path in sorted((role / "tasks").glob("*.yml")) + sorted((role / "handlers").glob("*.yml")):
        for task in yaml.safe_load(path.read_text()) or []:
            if "register" in task:
                found.append((str(path), task["register"]))
            for key in ("ansible.builtin.set_fact", "set_fact"):
                found += [(str(path), k) for k in (task.get(key) or {}) if k != "cacheable"]
    return found


@pytest.mark.parametrize("role", sorted(PREFIX))
def test_every_role_variable_carries_the_project_and_role_prefix(role: str) -> None:
    variables = _role_variables(ROLES / role)
    assert variables, f"no variables found in role {role}: the test reads the wrong place"
    wrong = [(f, name) for f, name in variables if not name.startswith(PREFIX[role])]
    assert not wrong, f"role {role}: variables without {PREFIX[role]}: {wrong}"


def test_every_role_is_covered_by_the_prefix_convention() -> None:
    assert sorted(p.name for p in ROLES.iterdir() if p.is_dir()) == sorted(PREFIX)
