"""The ``tcplab`` command line itself: --version, and subcommands handed to their own modules."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

from controller import cli


def test_version_is_the_installed_distributions(capsys) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"tcplab {version('tcplab')}\n"


def test_version_from_the_installed_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "controller.cli", "-V"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"tcplab {version('tcplab')}"


def test_every_delegated_subcommand_has_a_main() -> None:
    import importlib
    for name, module in cli.DELEGATED.items():
        assert callable(importlib.import_module(module).main), name
