"""The kernel filter program (pure part of probe.pktring): libpcap's, accepting whole 64 KiB frames."""

import struct

import pytest

from probe.pktring import BPF_RET_K, SNAPLEN, compile_bpf


def test_tcp_port_filter_accepts_whole_frames():
    n, code = compile_bpf("tcp port 9090")
    insns = [struct.unpack_from("HBBI", code, i * 8) for i in range(n)]
    assert len(code) == 8 * n and n > 5
    returns = {k for op, _, _, k in insns if op == BPF_RET_K}
    assert returns == {0, SNAPLEN}  # reject, or accept up to tcpdump's snapshot length
    assert any(k == 9090 for _, _, _, k in insns)


def test_a_bad_filter_is_refused():
    with pytest.raises(Exception):
        compile_bpf("tcp port nine")
