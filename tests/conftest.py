import shutil
from pathlib import Path

import pytest
import structlog

from tests.netns import NetnsPair, require_root


@pytest.fixture
def netns_pair():
    """A fresh pair of namespaces (a=10.90.0.1, b=10.90.0.2) joined by veth, deleted afterwards."""
    require_root()
    with NetnsPair() as pair:
        yield pair


DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def seed_data_run(tmp_path) -> Path:
    """A run directory holding only the trace of a real seed run (tests/data/seed-0.3s.trace.jsonl)."""
    d = tmp_path / "20261123-224913-seed"
    d.mkdir()
    shutil.copy(DATA / "seed-0.3s.trace.jsonl", d / "trace.jsonl")
    return d


@pytest.fixture(autouse=True)
def _structlog_defaults():
    """Code under test may configure structlog to print to the sys.stderr of that moment (pytest's
    capture, closed after the test): put structlog back after every test, so later tests do not log
    into a closed stream."""
    yield
    structlog.reset_defaults()
