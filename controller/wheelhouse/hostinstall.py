"""Install the probe on a lab host from what the control node sent: no index, no internet, no compiler.

Run by the host's own python (standard library only; Ansible's ``script`` module sends it):

    python3 hostinstall.py --bundle install-set.tar --home DIR --venv DIR [--python /usr/bin/python3]

Steps, each only when needed, so a second run with the same files changes nothing:
1. unpack the bundle into ``DIR/install`` (when its sha256 differs from the last install's);
2. apt-get the manifest's packages the host lacks from the bundle's flat repository, through a
   ``file:`` source and lists of our own (the host's sources and lists are not touched or needed);
3. build a new virtualenv beside the old one (``--system-site-packages`` where Debian's python3-*
   packages stand in for wheels PyPI lacks), install every wheel of the archive and the project's
   wheel into it, check that every requirement is satisfied, then swap it in: a failed install
   leaves the old virtualenv in place, and no half-updated one is ever run.
It records what it installed in ``VENV/tcplab-install.json`` and prints one JSON line:
``{"changed": bool, "steps": [...]}``; exit 1 with one line on stderr when a step fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

STAMP = "tcplab-install.json"


class InstallError(Exception):
    pass


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(cmd: list[str], what: str, env: dict | None = None) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("E:", "ERROR"))] or lines[-1:] or ["no output"]
        raise InstallError(f"{what} failed (exit {r.returncode}): {errors[0]}")


def unpack(bundle: Path, dest: Path) -> dict:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(bundle) as tar:
        for m in tar.getmembers():
            if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
                raise InstallError(f"{bundle.name}: unexpected member {m.name!r}")
        tar.extractall(dest)
    return json.loads((dest / "manifest.json").read_text())


def missing_packages(names: list[str]) -> list[str]:
    out = []
    for name in names:
        r = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", name], capture_output=True, text=True)
        if r.stdout.strip() != "installed":
            out.append(name)
    return out


def apt_install(repo: Path, names: list[str]) -> None:
    state = repo.parent / "apt-lists"
    (state / "partial").mkdir(parents=True, exist_ok=True)
    sources = repo.parent / "tcplab-local.list"
    sources.write_text(f"deb [trusted=yes] file:{repo} ./\n")
    opts = ["-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State::Lists={state}", "-o", "Dir::Cache::pkgcache=",
            "-o", "Dir::Cache::srcpkgcache=", "-o", "APT::Install-Recommends=false",
            "-o", "Acquire::Languages=none",
            # a fresh Pi may be running its first unattended-upgrades: wait for dpkg's lock
            "-o", "DPkg::Lock::Timeout=120"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "-qq", *opts, "update"], "apt-get update from the local repository", env)
    run(["apt-get", "-qq", "-y", *opts, "install", *names], f"apt-get install {' '.join(names)}", env)


def venv_matches(venv: Path, system_site: bool) -> bool:
    cfg = venv / "pyvenv.cfg"
    if not (venv / "bin" / "python").exists() or not cfg.is_file():
        return False
    want = "true" if system_site else "false"
    return any(ln.replace(" ", "") == f"include-system-site-packages={want}" for ln in cfg.read_text().splitlines())


def build_venv(workdir: Path, manifest: dict, venv: Path, python: str, stamp: dict) -> None:
    """A complete new virtualenv next to ``venv``, checked, then swapped in with two renames.

    The wheels go in with pypa's ``installer`` (run from its wheel in the archive's tools/): the
    control node has resolved the set already, so no resolver and no pip (whose start and ensurepip
    take seconds, minutes on a Pi) are needed. Scripts get the final path in their #! line."""
    new, old = venv.with_name(venv.name + ".tcplab-new"), venv.with_name(venv.name + ".tcplab-old")
    for d in (new, old):
        if d.exists():
            shutil.rmtree(d)
    system_site = bool(manifest.get("system_site_packages"))
    run([python, "-m", "venv", "--without-pip", *(["--system-site-packages"] if system_site else []), str(new)],
        "python3 -m venv")
    tools = sorted(str(p) for p in (workdir / "tools").glob("*.whl"))
    wheels = sorted((workdir / "wheels").glob("*.whl")) + [workdir / "project" / manifest["wheel"]]
    code = (
        "import sys, sysconfig\n"
        "from installer import install\n"
        "from installer.destinations import SchemeDictionaryDestination\n"
        "from installer.sources import WheelFile\n"
        "paths = sysconfig.get_paths()\n"
        "scheme = {k: paths[k] for k in ('purelib', 'platlib', 'scripts', 'data')}\n"
        "scheme['headers'] = paths['include']\n"
        "dest = SchemeDictionaryDestination(scheme, interpreter=sys.argv[1], script_kind='posix',\n"
        "                                   bytecode_optimization_levels=[])\n"
        "for w in sys.argv[2:]:\n"
        "    with WheelFile.open(w) as src:\n"
        "        install(src, dest, {'INSTALLER': b'tcplab\\n'})\n"
    )
    env = {"PYTHONPATH": os.pathsep.join(tools)}
    run([str(new / "bin" / "python"), "-c", code, str(venv / "bin" / "python"), *map(str, wheels)],
        "installing the wheels", env)
    run([str(new / "bin" / "python"), "-c", CHECK, str(workdir / "requirements.txt")],
        "checking the requirements", env)
    (new / STAMP).write_text(json.dumps(stamp) + "\n")
    if venv.exists():
        venv.rename(old)
    new.rename(venv)
    shutil.rmtree(old, ignore_errors=True)


# Every requirement satisfied in the new venv (a wheel, or Debian's package through system site-packages).
CHECK = """\
import sys
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement
bad = []
for line in filter(None, map(str.strip, open(sys.argv[1]))):
    req = Requirement(line)
    try:
        have = version(req.name)
    except PackageNotFoundError:
        bad.append(f"{req.name} is missing")
        continue
    if not req.specifier.contains(have, prereleases=True):
        bad.append(f"{req.name} {have} does not satisfy {req}")
if bad:
    sys.exit("ERROR: " + "; ".join(bad))
"""


def install(bundle: Path, home: Path, venv: Path, python: str) -> dict:
    stamp_path = venv / STAMP
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamp = {}
    archive_sha = sha256_of(bundle)
    workdir = home / "install"
    steps: list[str] = []
    manifest_path = workdir / "manifest.json"
    if stamp.get("archive") != archive_sha or not manifest_path.is_file():
        manifest = unpack(bundle, workdir)
        steps.append("unpack")
    else:
        manifest = json.loads(manifest_path.read_text())
    missing = missing_packages(manifest.get("apt", []))
    if missing:
        apt_install(workdir / "debs", missing)
        steps.append("apt:" + ",".join(missing))
    if stamp.get("archive") != archive_sha or not venv_matches(venv, bool(manifest.get("system_site_packages"))):
        new_stamp = {"archive": archive_sha, "set": manifest.get("set"), "wheel": manifest.get("wheel")}
        build_venv(workdir, manifest, venv, python, new_stamp)
        steps.append("venv")
    return {"changed": bool(steps), "steps": steps, "set": manifest.get("set")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hostinstall.py", description="install the tcplab probe offline")
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--home", type=Path, required=True, help="the probe's home (holds install/)")
    ap.add_argument("--venv", type=Path, required=True)
    ap.add_argument("--python", default=sys.executable, help="the python the virtualenv is made with")
    args = ap.parse_args(argv)
    try:
        out = install(args.bundle, args.home, args.venv, args.python)
    except (InstallError, OSError, tarfile.TarError) as e:
        print(f"tcplab-hostinstall: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
