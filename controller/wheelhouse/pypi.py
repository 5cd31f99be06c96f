"""The dependencies' wheels for a target, from PyPI, binary only (no compiler on the host).

``pip download --platform`` picks wheels for another CPU and python, but evaluates environment
markers against the machine it runs on: given ``fnfqueue; platform_machine == 'x86_64'`` on this x86
machine it would fetch fnfqueue for a Pi too, and fail. So the project's own requirements are
evaluated here with the target's marker environment and handed to pip without markers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from controller.wheelhouse import run
from controller.wheelhouse.targets import Target


def for_target(requires: list[str], target: Target) -> list[Requirement]:
    """The requirements (Requires-Dist lines) that apply on ``target``, extras excluded."""
    env = {**target.marker_environment(), "extra": ""}
    out = []
    for line in requires:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            out.append(req)
    return out


def split(reqs: list[Requirement], target: Target) -> tuple[list[Requirement], dict[str, Requirement]]:
    """(requirements PyPI serves as wheels, {Debian package: requirement} Debian serves instead)."""
    instead = {canonicalize_name(k): v for k, v in target.debian_instead.items()}
    wheels, debs = [], {}
    for req in reqs:
        deb = instead.get(canonicalize_name(req.name))
        if deb:
            debs[deb] = req
        else:
            wheels.append(req)
    return wheels, debs


def download(reqs: list[str], target: Target, dest: Path) -> list[Path]:
    """Download binary wheels of ``reqs`` and their dependencies for ``target`` into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    if not reqs:
        return []
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
           "--only-binary=:all:", "--dest", str(dest), "--implementation", "cp",
           "--python-version", target.python, "--abi", target.abi, "--abi", "abi3", "--abi", "none"]
    for tag in target.pip_platforms():
        cmd += ["--platform", tag]
    run(cmd + reqs, f"pip download of {target.machine} wheels for python {target.python} from PyPI")
    return sorted(dest.glob("*.whl"))
