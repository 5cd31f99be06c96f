"""The project's wheel: what it holds is what the fingerprint covers; one is kept; rebuilt on change."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from structlog.testing import capture_logs

from controller.wheelhouse import project

REPO = Path(__file__).resolve().parents[2]


def copy_repo(dest: Path) -> Path:
    for rel in project.source_files(REPO):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    return dest


def test_the_wheel_holds_what_the_fingerprint_covers_and_one_wheel_is_kept(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    wh = tmp_path / "wh"
    with capture_logs() as logs:
        first, built = project.ensure_wheel(repo, wh)
    assert built
    assert [e["event"] for e in logs] == ["project_wheel_built"] and logs[0]["wheel"] == first.path.name
    covered = {str(p) for p in project.source_files(repo)}
    with zipfile.ZipFile(first.path) as z:
        shipped = [n for n in z.namelist() if ".dist-info/" not in n]
    assert shipped and set(shipped) <= covered, set(shipped) - covered
    assert any(n.startswith("controller/film/assets/") and n.endswith(".js") for n in shipped)
    assert 'fnfqueue>=1.1; platform_machine == "x86_64"' in first.requires()
    assert project.ensure_wheel(repo, wh) == (first, False)

    asset = next((repo / "controller/film/assets").glob("*.js"))
    asset.write_text(asset.read_text() + "\n// changed\n")
    assert project.ensure_wheel(repo, wh, check=True) == (None, True)
    assert project.current(wh) == first  # --check built nothing
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.1.1"', 1))
    with capture_logs():
        second, built = project.ensure_wheel(repo, wh)
    assert built and second.fingerprint != first.fingerprint
    assert second.path.name == "tcplab-0.1.1-py3-none-any.whl"
    assert [p.name for p in (wh / "project").glob("*.whl")] == [second.path.name]
    with zipfile.ZipFile(second.path) as z:
        assert z.read(f"controller/film/assets/{asset.name}").endswith(b"// changed\n")


def test_stale_files_never_reach_the_wheel(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    (repo / "probe/__pycache__").mkdir(exist_ok=True)
    (repo / "probe/__pycache__/stale.cpython-311.pyc").write_bytes(b"\0")
    before = project.fingerprint(repo)
    (repo / "probe/__pycache__/other.pyc").write_bytes(b"\1")
    assert project.fingerprint(repo) == before
    (repo / "probe/new_module.py").write_text("X = 1\n")
    assert project.fingerprint(repo) != before
