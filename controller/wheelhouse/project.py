"""The project's own wheel: built from exactly the files its fingerprint covers, one kept.

The fingerprint hashes the path and content of every file that can go into the wheel: pyproject.toml,
the README (the wheel's METADATA carries it) and every file under the packages (``probe``,
``controller``), not only ``*.py``: package data such as ``controller/film/assets/*.js`` counts too.
The wheel is built from a copy of those files alone, so what is hashed is what is shipped (an in-tree
build would also pick up a stale ``build/lib`` left by an earlier build). ``SOURCE_DATE_EPOCH`` is
fixed, so the same sources give the same bytes.

The wheelhouse keeps one project wheel, the one just built, with its fingerprint beside it in
``project.json``: whoever installs names that file, never "the first tcplab-*.whl found".
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import structlog

from controller.wheelhouse import WheelhouseError, run
# the host's installer is stdlib only and runs on the host alone: its checksum is the one both sides use
from controller.wheelhouse.hostinstall import sha256_of
from tcplab.files import atomic_write

log = structlog.get_logger("tcplab.wheelhouse")

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("probe", "controller", "tcplab")
TOP_FILES = ("pyproject.toml", "README.md")
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class ProjectWheel:
    path: Path
    fingerprint: str
    sha256: str

    def requires(self) -> list[str]:
        """The wheel's Requires-Dist lines: what the probe needs, with their markers."""
        with zipfile.ZipFile(self.path) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            msg = Parser().parsestr(z.read(meta).decode())
        return list(msg.get_all("Requires-Dist") or [])


def source_files(repo: Path) -> list[Path]:
    """Every file that may go into the wheel, relative to ``repo``, sorted."""
    files = [Path(f) for f in TOP_FILES if (repo / f).is_file()]
    for pkg in PACKAGES:
        for p in (repo / pkg).rglob("*"):
            rel = p.relative_to(repo)
            if p.is_file() and not _SKIP_DIRS.intersection(rel.parts) and not p.name.endswith(_SKIP_SUFFIXES):
                files.append(rel)
    return sorted(files)


def fingerprint(repo: Path, files: list[Path] | None = None) -> str:
    h = hashlib.sha256()
    for rel in files if files is not None else source_files(repo):
        h.update(str(rel).encode() + b"\0")
        h.update(hashlib.sha256((repo / rel).read_bytes()).digest())
    return h.hexdigest()




def current(wheelhouse: Path) -> ProjectWheel | None:
    """The wheel the last build left, if it is still there."""
    try:
        rec = json.loads((wheelhouse / "project" / "project.json").read_text())
        path = wheelhouse / "project" / rec["wheel"]
        if path.is_file():
            return ProjectWheel(path, rec["fingerprint"], rec["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    return None


def ensure_wheel(repo: Path, wheelhouse: Path, check: bool = False) -> tuple[ProjectWheel | None, bool]:
    """The project's wheel for the sources as they are now, and whether it had to be built.
    ``check``: build nothing, return (the current wheel or None, whether it would be built)."""
    files = source_files(repo)
    fp = fingerprint(repo, files)
    have = current(wheelhouse)
    if have and have.fingerprint == fp:
        return have, False
    if check:
        return None, True
    outdir = wheelhouse / "project"
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tcplab-wheel-", dir=wheelhouse) as tmp:
        src, dist = Path(tmp) / "src", Path(tmp) / "dist"
        for rel in files:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / rel, src / rel)
        _pip_wheel(src, dist)
        built = sorted(dist.glob("*.whl"))
        if len(built) != 1:
            raise WheelhouseError(f"pip wheel made {len(built)} wheels of the project, expected 1")
        for old in outdir.glob("*.whl"):
            old.unlink()
        wheel = outdir / built[0].name
        shutil.move(str(built[0]), wheel)
    pw = ProjectWheel(wheel, fp, sha256_of(wheel))
    atomic_write(outdir / "project.json", json.dumps({"wheel": wheel.name, "fingerprint": fp, "sha256": pw.sha256}) + "\n")
    log.info("project_wheel_built", wheel=wheel.name, files=len(files), fingerprint=fp[:12])
    return pw, True


def _pip_wheel(src: Path, dist: Path) -> None:
    # no PYTHON* variable of ours reaches pip or its build backend (``env -u``: run adds to our environment)
    unset = [a for k in os.environ if k.startswith("PYTHON") for a in ("-u", k)]  # -u: GNU and BSD env
    run(["env", *unset, sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(src)],
        "pip wheel of the project", {"SOURCE_DATE_EPOCH": "315532800"})
