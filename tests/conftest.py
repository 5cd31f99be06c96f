import pytest

from tests.netns import NetnsPair, require_root


@pytest.fixture
def netns_pair():
    """A fresh pair of namespaces (a=10.90.0.1, b=10.90.0.2) joined by veth, deleted afterwards."""
    require_root()
    with NetnsPair() as pair:
        yield pair
