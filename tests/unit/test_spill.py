"""probe/spill.py on a real directory: batches back in order across segments, each segment removed once
read, a killed probe's segments removed when a spill opens, the bound in bytes, nothing left by clear."""

from probe import spill as spill_mod
from probe.spill import HEADER, Spill


def test_batches_come_back_in_order_across_segments_and_each_segment_goes_once_read(tmp_path, monkeypatch):
    monkeypatch.setattr(spill_mod, "SEGMENT_BYTES", 1000)
    s = Spill(tmp_path / "spill", max_bytes=1 << 20)
    frames = [bytes([i]) * 300 for i in range(10)]
    for i, f in enumerate(frames):
        s.append(10 * i + 1, 10, f)
    segments = sorted(p.name for p in (tmp_path / "spill").iterdir())
    assert len(segments) == 3 and len(s) == 10 and s.events == 100
    assert s.bytes == 10 * (HEADER.size + 300)
    got = [s.pop() for _ in range(4)]
    assert got == [(10 * i + 1, 10, frames[i]) for i in range(4)]
    assert sorted(p.name for p in (tmp_path / "spill").iterdir()) == segments[1:]  # the first, read whole, gone
    s.append(101, 10, b"late")  # appended while reading: still after the others
    rest = [s.pop() for _ in range(7)]
    assert [r[0] for r in rest] == [41, 51, 61, 71, 81, 91, 101] and rest[-1][2] == b"late"
    assert s.pop() is None and s.bytes == 0 and list((tmp_path / "spill").iterdir()) == []


def test_the_bound_is_in_bytes_and_clear_leaves_nothing(tmp_path):
    s = Spill(tmp_path / "spill", max_bytes=2 * (HEADER.size + 100))
    assert s.fits(100)
    s.append(1, 1, b"x" * 100)
    assert s.fits(100) and not s.fits(101)
    s.append(2, 1, b"y" * 100)
    assert not s.fits(0)
    s.clear()
    assert len(s) == 0 and s.bytes == 0 and list((tmp_path / "spill").iterdir()) == []


def test_a_killed_probe_s_segments_are_removed_and_the_directory_is_private(tmp_path):
    d = tmp_path / "spill"
    d.mkdir()
    (d / "spill-000001.bin").write_bytes(b"another session's")
    (d / "keep.txt").write_text("not ours")
    s = Spill(d, max_bytes=1 << 20)
    s.append(1, 1, b"new")
    assert sorted(p.name for p in d.iterdir()) == ["keep.txt", "spill-000001.bin"]
    assert s.pop() == (1, 1, b"new")
    fresh = tmp_path / "fresh"
    Spill(fresh, max_bytes=100).append(1, 1, b"a")
    assert fresh.stat().st_mode & 0o777 == 0o700
    assert (fresh / "spill-000001.bin").stat().st_mode & 0o777 == 0o600


def test_a_spill_directory_that_is_a_symlink_is_refused_and_a_loose_one_made_private(tmp_path):
    import os

    import pytest
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "spill-000001.bin").write_bytes(b"not to be touched")
    (tmp_path / "linked").symlink_to(elsewhere)
    with pytest.raises(OSError, match="is not a directory of ours"):
        Spill(tmp_path / "linked", max_bytes=100).append(1, 1, b"a")
    assert (elsewhere / "spill-000001.bin").read_bytes() == b"not to be touched"  # nothing followed
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    Spill(loose, max_bytes=100).append(1, 1, b"a")
    assert loose.stat().st_mode & 0o777 == 0o700


def test_a_spill_that_cannot_be_written_is_full_and_the_oldest_are_dropped_instead(tmp_path):
    """Its directory cannot be made (a file stands where it would be): no exception reaches the sender,
    the window keeps its bound, the oldest go, every number is either held or dropped."""
    from probe.outbox import Outbox
    from tcplab import wire
    (tmp_path / "file").write_text("not a directory")
    box = Outbox(wire.Session("thinkpad"), tmp_path / "file" / "spill", max_bytes=8000, max_spill=1 << 20,
                 batch_bytes=1000)
    for i in range(50):
        box.add([{"kind": "console", "t_ns": i, "text": "x" * 900, "stream": "stdout"}])
    assert box.spilled == 0 and len(box.spill) == 0 and box.window_bytes <= 8000 + 1000
    assert box.dropped > 0 and box.oldest == box.dropped + 1 and box.dropped + box.held == 50
    assert box.numbers() == list(range(box.dropped + 1, 51))
