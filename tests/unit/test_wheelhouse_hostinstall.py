"""The host's installer, for real on this machine: a venv, pip with no index, each step only when needed."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import zipfile
from pathlib import Path

from controller.wheelhouse import hostinstall


def make_wheel(d: Path, name: str, version: str, code: str) -> Path:
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}_mod.py": code + "def main():\n    print(X)\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": f"[console_scripts]\n{name}-hello = {name}_mod:main\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{dist}/RECORD,,\n"
    path = d / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for n, text in files.items():
            z.writestr(n, text)
    return path


TOOLS = Path(__file__).resolve().parents[1] / "data" / "wheelhouse-tools"


def make_bundle(d: Path, dep: Path, wheel: Path, requirements: str = "tcplabdep>=1\n") -> Path:
    """An archive laid out as bundle.py writes it (a toy dependency, the real tools)."""
    manifest = {"set": "x86_64-py3.11-bookworm", "apt": ["dpkg"], "system_site_packages": False,
                "wheel": wheel.name}
    members = {"manifest.json": json.dumps(manifest), "requirements.txt": requirements}
    path = d / "install-set.tar"
    with tarfile.open(path, "w") as tar:
        for n, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(dep, arcname=f"wheels/{dep.name}")
        for tool in sorted(TOOLS.glob("*.whl")):
            tar.add(tool, arcname=f"tools/{tool.name}")
        tar.add(wheel, arcname=f"project/{wheel.name}")
    return path


def installed_code(venv: Path) -> str:
    return subprocess.run([venv / "bin/python", "-c", "import tcplab_mod, tcplabdep_mod; print(tcplab_mod.X)"],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_install_then_nothing_then_a_new_venv_swapped_in(tmp_path):
    src, home = tmp_path / "src", tmp_path / "home"
    src.mkdir()
    venv = home / "venv"
    dep = make_wheel(src, "tcplabdep", "1.0", "X = 1\n")
    bundle = make_bundle(src, dep, make_wheel(src, "tcplab", "0.0.1", "X = 'first'\n"))

    first = hostinstall.install(bundle, home, venv, "/usr/bin/python3")
    assert first == {"changed": True, "steps": ["unpack", "venv"], "set": "x86_64-py3.11-bookworm"}
    assert installed_code(venv) == "first"
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg and not (venv / "bin/pip").exists()
    script = venv / "bin/tcplab-hello"  # built in venv.tcplab-new, yet its #! names the final venv
    assert script.read_text().splitlines()[0] == f"#!{venv}/bin/python"
    assert subprocess.run([script], capture_output=True, text=True, check=True).stdout == "first\n"

    assert hostinstall.install(bundle, home, venv, "/usr/bin/python3") == {
        "changed": False, "steps": [], "set": "x86_64-py3.11-bookworm"}

    bundle = make_bundle(src, dep, make_wheel(src, "tcplab", "0.0.1", "X = 'same version, new code'\n"))
    assert hostinstall.install(bundle, home, venv, "/usr/bin/python3")["steps"] == ["unpack", "venv"]
    assert installed_code(venv) == "same version, new code"
    assert sorted(p.name for p in home.iterdir()) == ["install", "venv"]  # no .tcplab-new/-old left


def test_an_unsatisfied_requirement_fails_on_one_line_and_keeps_the_old_venv(tmp_path, capsys):
    src, home = tmp_path / "src", tmp_path / "home"
    src.mkdir()
    venv = home / "venv"
    dep = make_wheel(src, "tcplabdep", "1.0", "X = 1\n")
    hostinstall.install(make_bundle(src, dep, make_wheel(src, "tcplab", "0.0.1", "X = 'old'\n")), home, venv,
                        "/usr/bin/python3")
    bad = make_bundle(src, dep, make_wheel(src, "tcplab", "0.0.2", "X = 'new'\n"), "tcplabdep>=2\n")
    rc = hostinstall.main(["--bundle", str(bad), "--home", str(home), "--venv", str(venv)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert "tcplabdep 1.0 does not satisfy tcplabdep>=2" in err
    assert installed_code(venv) == "old"


def test_a_bundle_with_a_path_outside_is_refused_on_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo("../escape")
        tar.addfile(info, io.BytesIO(b""))
    rc = hostinstall.main(["--bundle", str(bad), "--home", str(tmp_path / "h"), "--venv", str(tmp_path / "h/venv")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "unexpected member '../escape'" in err
