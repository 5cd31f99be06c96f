"""probe/kstates.py on tracefs trees made of real format files: it reads events/header_page and each
tracepoint's format and decodes by field name, so a 6.1 kernel (no ``err``), a 32-bit page header and a
tracepoint without a field it needs all work or fail in the way they should.

The tree is plain files (the kernel's files copied from this machine, see tests/data/tracefs/README.md):
KernelStates writes its settings into them and reads ``trace_pipe_raw`` pages from a file."""

from __future__ import annotations

import os
import shutil
import socket
import struct
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from probe.kstates import KernelStates, KStatesError
from probe.tracefs_raw import TCP_EVENTS, parse_format

DATA = Path(__file__).resolve().parents[1] / "data" / "tracefs"
REAL = DATA / "linux-6.18-x86_64"
HOST, PORT, IP = "thinkpad", 9090, "10.90.0.1"


def tree(root: Path, header_page: Path = REAL / "header_page", replace: dict | None = None) -> Path:
    """A tracefs-like tree under ``root`` with the instance KernelStates will make already there."""
    (root / "events").mkdir(parents=True)
    shutil.copy(header_page, root / "events" / "header_page")
    inst = root / "instances" / f"tcplab-{HOST}-{os.getpid()}"
    for event in TCP_EVENTS:
        d = inst / "events" / event
        d.mkdir(parents=True)
        text = (replace or {}).get(event) or (REAL / (event.split("/")[1] + ".format")).read_text()
        (d / "format").write_text(text)
    (inst / "per_cpu" / "cpu0").mkdir(parents=True)
    (inst / "per_cpu" / "cpu0" / "trace_pipe_raw").write_bytes(b"")
    return inst


def retransmit_record(fmt_text: str) -> bytes:
    ev_id, fmt = parse_format(fmt_text, "tcp/tcp_retransmit_skb")
    size = max(off + size for off, size in fmt.fields.values())
    rec = bytearray(size)
    struct.pack_into("<Hxxi", rec, 0, ev_id, 4242)
    for name, value in (("skaddr", 0xFFFF8880DEAD0000), ("state", 1), ("sport", PORT), ("dport", 40000),
                        ("family", socket.AF_INET)):
        off, n = fmt.fields[name]
        rec[off:off + n] = value.to_bytes(n, "little")
    for name, ip in (("saddr", IP), ("daddr", "10.90.0.2")):
        off, _ = fmt.fields[name]
        rec[off:off + 4] = socket.inet_aton(ip)
    return bytes(rec)


def page(records: list[bytes], header: str) -> bytes:
    data = b""
    for i, rec in enumerate(records):
        rec += b"\0" * (-len(rec) % 4)
        data += struct.pack("<I", ((i + 1) << 5) | 0) + struct.pack("<I", len(rec) + 4) + rec
    head = struct.pack("<QQ", 5_000, len(data)) if header == "64" else struct.pack("<QI", 5_000, len(data))
    return head + data


@pytest.mark.parametrize("kernel,header", [("6.18", "64"), ("6.1", "64"), ("6.1", "32")])
def test_a_retransmission_is_decoded_on_each_kernel_layout(tmp_path, kernel, header):
    fmt_text = (DATA / "linux-6.1-style" / "tcp_retransmit_skb.format" if kernel == "6.1"
                else REAL / "tcp_retransmit_skb.format").read_text()
    hp = REAL / "header_page" if header == "64" else DATA / "linux-armhf-style-header_page"
    inst = tree(tmp_path, hp, {"tcp/tcp_retransmit_skb": fmt_text})
    (inst / "per_cpu" / "cpu0" / "trace_pipe_raw").write_bytes(page([retransmit_record(fmt_text)], header))
    with capture_logs():  # whatever another test configured structlog to print to
        k = KernelStates(HOST, PORT, IP, root=tmp_path).open()
    try:
        assert (inst / "events/tcp/tcp_retransmit_skb/enable").read_text().strip() == "1"
        assert "sport == 9090" in (inst / "events/tcp/tcp_retransmit_skb/filter").read_text()
        events = k.read()
    finally:
        with capture_logs():
            k.close()
    assert len(events) == 1
    ev = events[0]
    assert (ev["kind"], ev["event"], ev["local"], ev["remote"], ev["state"]) == \
        ("kernel", "retransmit_skb", f"{IP}:{PORT}", "10.90.0.2:40000", "ESTABLISHED")
    assert ev["t_ns"] == 5_000 + 1 + k.offset_ns


def test_a_kernel_tracepoint_without_a_needed_field_is_left_out(tmp_path):
    text = "".join(line for line in (REAL / "tcp_receive_reset.format").read_text().splitlines(True)
                   if "sport" not in line)
    inst = tree(tmp_path, replace={"tcp/tcp_receive_reset": text})
    with capture_logs() as logs:
        k = KernelStates(HOST, PORT, IP, root=tmp_path).open()
        k.close()
    assert not (inst / "events/tcp/tcp_receive_reset/enable").exists()
    assert (inst / "events/sock/inet_sock_set_state/enable").read_text().strip() == "1"
    assert [e["missing"] for e in logs if e["event"] == "tracepoint_unusable"] == [["sport"]]


def test_a_state_tracepoint_without_newstate_is_a_typed_error(tmp_path):
    text = "".join(line for line in (REAL / "inet_sock_set_state.format").read_text().splitlines(True)
                   if "newstate" not in line)
    tree(tmp_path, replace={"sock/inet_sock_set_state": text})
    with pytest.raises(KStatesError, match="newstate"), capture_logs():
        KernelStates(HOST, PORT, IP, root=tmp_path).open()


def test_an_unreadable_header_page_is_a_typed_error(tmp_path):
    tree(tmp_path)
    (tmp_path / "events" / "header_page").write_text("nothing here\n")
    with pytest.raises(KStatesError, match="header_page"), capture_logs():
        KernelStates(HOST, PORT, IP, root=tmp_path).open()
