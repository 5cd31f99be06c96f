"""One archive per install set: the dependencies' wheels, Debian's packages if needed, a manifest.

``sets/<name>/bundle.tar`` (uncompressed: wheels and .debs are compressed already) holds
``wheels/*.whl``, ``debs/*.deb`` + ``debs/Packages`` (a flat apt repository), ``requirements.txt``
(the project's requirements as they apply on that host) and ``manifest.json``. The archive is built
deterministically (sorted members, fixed mtimes and owners), so the same content gives the same bytes
and Ansible's ``copy`` sends it only when it changed. ``sets/<name>/manifest.json`` beside it records
the fingerprint of what was asked (target, requirements, packages): asked again for the same, nothing
is downloaded. The project's own wheel is not in the archive (it changes with every edit, the archive
rarely); it travels as its own file.
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
from controller.wheelhouse.targets import Target

log = structlog.get_logger("tcplab.wheelhouse")

FORMAT = 1


@dataclass(frozen=True)
class Bundle:
    target: Target
    path: Path
    manifest: dict

    @property
    def sha256(self) -> str:
        return self.manifest["sha256"]


def plan(target: Target, requires: list[str], apt: list[str], extra: list[str]) -> dict:
    """What the archive for ``target`` must hold (no I/O): the manifest less the files."""
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
        "apt": packages,
        "system_site_packages": bool(debs_instead),
    }


def fingerprint_of(planned: dict) -> str:
    return hashlib.sha256(json.dumps(planned, sort_keys=True).encode()).hexdigest()


def ensure(target: Target, requires: list[str], apt: list[str], extra: list[str], wheelhouse: Path,
           check: bool = False) -> tuple[Bundle | None, bool]:
    """The archive for ``target``, built only when what it must hold changed; (bundle, built?).
    ``check``: build nothing, return (the current bundle or None, whether it would be built)."""
    planned = plan(target, requires, apt, extra)
    fp = fingerprint_of(planned)
    setdir = wheelhouse / "sets" / target.name
    path = setdir / "bundle.tar"
    try:
        have = json.loads((setdir / "manifest.json").read_text())
        if have.get("fingerprint") == fp and path.is_file():
            return Bundle(target, path, have), False
    except (OSError, ValueError):
        pass
    if check:
        return None, True
    setdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"tcplab-set-{target.name}-", dir=wheelhouse) as tmp:
        stage = Path(tmp) / "stage"
        wheels = pypi.download(planned["pypi"], target, stage / "wheels")
        debs: list[Path] = []
        if planned["apt"]:
            debs = debian.fetch_repo(target.release, target.debian_arch, planned["apt"], stage / "debs", Path(tmp))
        manifest = {**planned, "fingerprint": fp,
                    "wheels": [w.name for w in wheels], "debs": [d.name for d in debs]}
        (stage / "requirements.txt").write_text("".join(r + "\n" for r in planned["requirements"]))
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        partial = setdir / "bundle.tar.partial"
        _write_tar(stage, partial)
        manifest["sha256"] = _sha256(partial)
        partial.replace(path)
    (setdir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    for stray in setdir.iterdir():
        if stray.name not in ("bundle.tar", "manifest.json"):
            shutil.rmtree(stray) if stray.is_dir() else stray.unlink()
    log.info("install_set_built", set=target.name, wheels=len(wheels), debs=len(debs),
             mbytes=round(path.stat().st_size / 1e6, 1))
    return Bundle(target, path, manifest), True


def _write_tar(stage: Path, dest: Path) -> None:
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for p in sorted(stage.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(stage)), recursive=False, filter=clean)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
