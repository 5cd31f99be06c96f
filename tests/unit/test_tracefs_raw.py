"""probe/tracefs_raw.py: the page header comes from events/header_page (never a fixed 64-bit layout),
and an event's fields from its own format file (6.1's tcp_retransmit_skb has no err)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from probe.tracefs_raw import (HEADER_64, TCP_EVENTS, FormatError, PageHeader, parse_format, parse_header_page,
                               parse_page)

DATA = Path(__file__).resolve().parents[1] / "data" / "tracefs"
REAL = DATA / "linux-6.18-x86_64"


def body() -> bytes:
    def hdr(type_len, delta):
        return struct.pack("<I", (delta << 5) | type_len)
    rec = b"\x01\x00" + b"\x00" * 6
    return (hdr(2, 10) + rec + hdr(30, 5) + struct.pack("<I", 1) + hdr(0, 3) + struct.pack("<I", 12) + rec
            + hdr(2, 2) + rec)


EXPECTED_TIMES = [1010, 1010 + (1 << 27) + 5 + 3, 1010 + (1 << 27) + 5 + 3 + 2]


def test_this_machines_header_page_is_the_64_bit_layout():
    assert parse_header_page((REAL / "header_page").read_text()) == HEADER_64 == PageHeader(0, 8, 8, 8, 16)


def test_a_32_bit_kernels_header_page_has_a_4_byte_commit_and_data_at_12():
    hp = parse_header_page((DATA / "linux-armhf-style-header_page").read_text())
    assert (hp.commit_size, hp.data_offset) == (4, 12)


def test_a_page_decodes_the_same_under_either_header_layout():
    b = body()
    page64 = struct.pack("<QQ", 1000, len(b)) + b + b"\0" * 64
    hp32 = parse_header_page((DATA / "linux-armhf-style-header_page").read_text())
    page32 = struct.pack("<QI", 1000, len(b)) + b + b"\0" * 64
    out64, _ = parse_page(page64)
    out32, missed = parse_page(page32, hp32)
    assert [t for t, _ in out32] == [t for t, _ in out64] == EXPECTED_TIMES
    assert [d for _, d in out32] == [d for _, d in out64] and not missed
    # read with the 64-bit layout, the 32-bit page is garbage: the header matters
    wrong, _ = parse_page(page32)
    assert [t for t, _ in wrong] != EXPECTED_TIMES


def test_a_discarded_event_is_skipped_and_its_delta_counted():
    def hdr(type_len, delta):
        return struct.pack("<I", (delta << 5) | type_len)
    rec = b"\x01\x00" + b"\x00" * 6
    discarded = struct.pack("<I", 12) + b"\xee" * 8  # 12 bytes, counted from array[0] itself
    # data (+10), a discarded event (+1000), a discarded one whose delta was 0 (marked 1), data (+5)
    b = hdr(2, 10) + rec + hdr(29, 1000) + discarded + hdr(29, 1) + discarded + hdr(2, 5) + rec + hdr(29, 0)
    out, _ = parse_page(struct.pack("<QQ", 1000, len(b)) + b + b"\0" * 64)
    assert out == [(1010, rec), (2015, rec)]  # the writer's clock went on through the discard


def test_missed_events_flag_in_a_4_byte_commit():
    b = body()
    hp32 = parse_header_page((DATA / "linux-armhf-style-header_page").read_text())
    out, missed = parse_page(struct.pack("<QI", 1000, len(b) | (1 << 31)) + b, hp32)
    assert missed and [t for t, _ in out] == EXPECTED_TIMES


def test_a_header_page_without_commit_is_refused():
    text = "\n".join(line for line in (REAL / "header_page").read_text().splitlines() if "commit" not in line)
    with pytest.raises(FormatError, match="commit"):
        parse_header_page(text)


@pytest.mark.parametrize("event", sorted(TCP_EVENTS))
def test_every_real_format_has_the_fields_the_decoder_needs(event):
    ev_id, fmt = parse_format((REAL / (event.split("/")[1] + ".format")).read_text(), event)
    assert ev_id > 0 and fmt.missing(TCP_EVENTS[event][1]) == []
    assert fmt.fields["common_pid"] == (4, 4) and "common_pid" in fmt.signed


def test_linux_6_1_retransmit_skb_has_no_err_and_still_decodes():
    _, new = parse_format((REAL / "tcp_retransmit_skb.format").read_text(), "tcp/tcp_retransmit_skb")
    _, old = parse_format((DATA / "linux-6.1-style" / "tcp_retransmit_skb.format").read_text(),
                          "tcp/tcp_retransmit_skb")
    assert "err" in new.fields and "err" not in old.fields
    assert old.missing(TCP_EVENTS["tcp/tcp_retransmit_skb"][1]) == []
    rec = bytearray(80)
    struct.pack_into("<i", rec, 76, -110)  # err = -ETIMEDOUT where the field exists
    assert new.get(bytes(rec), "err") == -110 and old.get(bytes(rec), "err") is None


def test_a_format_without_common_fields_is_refused():
    with pytest.raises(FormatError):
        parse_format("name: x\nID: 5\nformat:\n\tfield:int a;\toffset:8;\tsize:4;\tsigned:1;\n", "x/x")
