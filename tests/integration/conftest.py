"""Fixtures shared by the integration tests that need one whole real run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.daemons import run_in_fresh_lab

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def seed_run(tmp_path_factory) -> Path:
    """The directory of one real run of scenarios/seed.yml at 0.3 s, TIME_WAIT's expiry included (~65 s).

    Made once per test session by a real controller and two real probes in fresh namespaces; the
    film's tests (film.html in Chromium, story.md, replay, render) all read it.
    """
    scenario = yaml.safe_load((REPO / "scenarios" / "seed.yml").read_text())
    scenario.update(name="seed", delay=0.3)
    return run_in_fresh_lab(tmp_path_factory.mktemp("seed-run"), scenario)


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, driven by playwright (no browser download).

    Per module, not per session: playwright's sync API keeps an asyncio loop running in the main
    thread while it is open, and pyroute2's synchronous classes (later tests) refuse to run there.
    """
    from playwright import sync_api  # a test dependency (pyproject's test extra): missing is a failure
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (make test installs it: apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()
