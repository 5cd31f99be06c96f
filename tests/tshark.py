"""What tshark (Wireshark 4.0, Debian's package) says about a capture, for comparing with ours."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

# tshark's field (display filter) -> our flag name (controller.analysis.FLAGS)
FIELDS = {
    "tcp.analysis.retransmission": "retransmission",
    "tcp.analysis.fast_retransmission": "fast_retransmission",
    "tcp.analysis.spurious_retransmission": "spurious_retransmission",
    "tcp.analysis.out_of_order": "out_of_order",
    "tcp.analysis.duplicate_ack": "duplicate_ack",
    "tcp.analysis.keep_alive": "keep_alive",
    "tcp.analysis.keep_alive_ack": "keep_alive_ack",
    "tcp.analysis.zero_window": "zero_window",
    "tcp.analysis.zero_window_probe": "zero_window_probe",
    "tcp.analysis.window_update": "window_update",
    "tcp.analysis.window_full": "window_full",
    "tcp.analysis.lost_segment": "previous_segment_not_captured",
    "tcp.analysis.ack_lost_segment": "ack_of_unseen_segment",
}


def require_tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        pytest.skip("tshark is not installed")
    return path


def run(path: Path, *fields: str) -> list[list[str]]:
    """One row per frame: the values of ``fields`` (empty string when absent)."""
    cmd = [require_tshark(), "-n", "-r", str(path), "-o", "tcp.relative_sequence_numbers:TRUE",
           "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a"]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return [line.split("\t") for line in res.stdout.splitlines()]


def analysis_flags(path: Path) -> list[list[str]]:
    """Per frame, in file order, tshark's tcp.analysis flags by our names (sorted as FLAGS)."""
    from controller.analysis import FLAGS

    names = list(FIELDS)
    out = []
    for row in run(path, "frame.number", *names):
        have = {FIELDS[n] for n, v in zip(names, row[1:]) if v}
        out.append([f for f in FLAGS if f in have])
    return out
