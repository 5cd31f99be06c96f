"""One archive per install set: the project's wheel, its dependencies' wheels, Debian's packages.

``sets/<name>/bundle.tar`` (uncompressed: wheels and .debs are compressed already) holds
``project/<the project's wheel>``, ``wheels/*.whl`` (what the host installs), ``tools/*.whl`` (what
its installer runs: pypa's ``installer`` and ``packaging``),
``debs/*.deb`` + ``debs/Packages`` (a flat apt repository), ``requirements.txt`` (the project's
requirements as they apply on that host) and ``manifest.json``. It is written deterministically
(sorted members, fixed mtimes and owners): the same content gives the same bytes, so Ansible's
``copy`` sends one file, and only when it changed.

What is downloaded lives in ``sets/<name>/deps/`` with the fingerprint of what was asked (target,
requirements, packages): asked again for the same, nothing is downloaded, and a new project wheel
only rewrites the archive (a fraction of a second). A new fingerprint replaces ``deps/`` whole, so
the wheelhouse holds one copy of each set and no more.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from controller.wheelhouse import debian, pypi
from controller.wheelhouse.project import ProjectWheel
from controller.wheelhouse.targets import Target
from tcplab.files import atomic_write, replacing

log = structlog.get_logger("tcplab.wheelhouse")

FORMAT = 2
# What the host's installer runs from tools/ (not installed): pypa's wheel installer, and packaging
# to check the requirements.
TOOLS = ("installer>=0.7", "packaging>=22")


@dataclass(frozen=True)
class Bundle:
    target: Target
    path: Path
    manifest: dict


def plan(target: Target, requires: list[str], apt: list[str], extra: list[str]) -> dict:
    """What the set's dependencies are (no I/O): the manifest less the files and the project wheel."""
    reqs = pypi.for_target(requires, target)
    wheels, debs_instead = pypi.split(reqs, target)
    packages = sorted(set(debs_instead) | (set(apt) if target.offline else set()))
    return {
        "format": FORMAT,
        "set": target.name,
        "machine": target.machine,
        "python": target.python,
        "requirements": sorted(str(r) for r in reqs) + sorted(extra),
        "pypi": sorted(str(r) for r in wheels) + sorted(extra),
        "tools": list(TOOLS),
        "apt": packages,
        "system_site_packages": bool(debs_instead),
    }


def fingerprint_of(planned: dict) -> str:
    return hashlib.sha256(json.dumps(planned, sort_keys=True).encode()).hexdigest()


def ensure(target: Target, wheel: ProjectWheel, apt: list[str], extra: list[str], wheelhouse: Path,
           check: bool = False) -> tuple[Bundle | None, bool]:
    """The archive for ``target`` around ``wheel``, rewritten only when its content changed;
    (bundle, rewritten?). ``check``: write nothing, return (the current bundle or None, would it be)."""
    planned = plan(target, wheel.requires(), apt, extra)
    fp = fingerprint_of(planned)
    setdir = wheelhouse / "sets" / target.name
    path = setdir / "bundle.tar"
    have = _read_json(setdir / "manifest.json")
    if have.get("fingerprint") == fp and have.get("wheel_sha256") == wheel.sha256 and path.is_file():
        return Bundle(target, path, have), False
    if check:
        return None, True
    deps = _ensure_deps(target, planned, fp, setdir)
    manifest = {**_read_json(deps / "deps.json"), "wheel": wheel.path.name, "wheel_sha256": wheel.sha256}
    with tempfile.TemporaryDirectory(prefix=f"tcplab-set-{target.name}-", dir=setdir) as tmp:
        manifest_file = Path(tmp) / "manifest.json"
        manifest_file.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        members = [(p, str(p.relative_to(deps))) for p in sorted(deps.rglob("*")) if p.name != "deps.json"]
        members += [(manifest_file, "manifest.json"), (wheel.path, f"project/{wheel.path.name}")]
        with replacing(path) as partial:
            _write_tar(members, partial)
    atomic_write(setdir / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    log.info("install_set_written", set=target.name, wheel=wheel.path.name,
             mbytes=round(path.stat().st_size / 1e6, 1))
    return Bundle(target, path, manifest), True


def _ensure_deps(target: Target, planned: dict, fp: str, setdir: Path) -> Path:
    """``setdir/deps``: the downloaded wheels and packages for ``planned``, fetched when it changed."""
    deps = setdir / "deps"
    if _read_json(deps / "deps.json").get("fingerprint") == fp:
        return deps
    setdir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="deps-", dir=setdir))
    try:
        wheels = pypi.download(planned["pypi"], target, stage / "wheels")
        pypi.download(planned["tools"], target, stage / "tools")
        debs: list[Path] = []
        if planned["apt"]:
            debs = debian.fetch_repo(target.release, target.debian_arch, planned["apt"], stage / "debs", stage)
        (stage / "requirements.txt").write_text("".join(r + "\n" for r in planned["requirements"]))
        record = {**planned, "fingerprint": fp, "wheels": [w.name for w in wheels], "debs": [d.name for d in debs]}
        (stage / "deps.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        shutil.rmtree(deps, ignore_errors=True)
        stage.rename(deps)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for stray in setdir.iterdir():  # earlier layouts, interrupted runs
        if stray.name not in ("deps", "bundle.tar", "manifest.json"):
            shutil.rmtree(stray) if stray.is_dir() else stray.unlink()
    log.info("install_set_fetched", set=target.name, wheels=len(wheels), debs=len(debs))
    return deps


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_tar(members: list[tuple[Path, str]], dest: Path) -> None:
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    dirs = sorted({str(Path(name).parent) for _, name in members} - {"."})
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            info = clean(tarfile.TarInfo(d))
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for src, name in sorted(members, key=lambda m: m[1]):
            if src.is_file():
                tar.add(src, arcname=name, recursive=False, filter=clean)
