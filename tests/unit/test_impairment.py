"""The one impairment value: its bounds, the rules across its parameters, its words."""

from __future__ import annotations

import pytest

from tcplab.impairment import Impairment, ImpairmentError, of_record, rate_kbit


@pytest.mark.parametrize("value, kbit", [(64, 64), ("64kbit", 64), ("2mbit", 2000), ("1gbit", 1_000_000),
                                         ("1.5mbit", 1500), (" 10 kbit ", 10)])
def test_a_rate_is_kbit_or_tcs_words(value, kbit):
    assert rate_kbit(value) == kbit


@pytest.mark.parametrize("value", ["fast", "64KBIT", "64kbps", True, 1.5, "0.5kbit", ""])
def test_a_rate_that_is_not_one_is_refused(value):
    with pytest.raises(ValueError):
        rate_kbit(value)


@pytest.mark.parametrize("kw, field", [
    ({"delay_ms": -1}, "delay_ms"), ({"delay_ms": 1.5}, "delay_ms"), ({"loss_pct": 100.5}, "loss_pct"),
    ({"delay_ms": 10, "jitter_ms": 11}, "jitter_ms"), ({"reorder_pct": 5}, "reorder_pct"),
    ({"rate_kbit": 10_000_001}, "rate_kbit"), ({"corrupt_pct": True}, "corrupt_pct"),
])
def test_what_cannot_be_is_refused_naming_the_parameter(kw, field):
    with pytest.raises(ImpairmentError) as err:
        Impairment(**kw)
    assert err.value.field == field and field in str(err.value)


def test_the_wire_form_carries_what_is_set_and_reads_back_equal():
    imp = Impairment(200, jitter_ms=20, loss_pct=5, rate_kbit=64)
    assert imp.args() == {"delay_ms": 200, "jitter_ms": 20, "loss_pct": 5, "rate_kbit": 64}
    assert Impairment.from_args(imp.args()) == imp
    assert Impairment().args() == {"delay_ms": 0}


def test_words_for_a_label_and_for_a_sentence():
    imp = Impairment(3000, jitter_ms=200, loss_pct=5, duplicate_pct=1, reorder_pct=25, corrupt_pct=2, rate_kbit=64)
    assert imp.words() == ("3000 ms ± 200 ms delay, 5 % loss, 1 % duplicated, 25 % reordered, 2 % corrupted, "
                           "64 kbit/s")
    assert imp.doing() == ["give or take 200 ms", "dropping 5 % of them", "sending 1 % twice",
                           "sending 25 % at once, ahead of the delayed ones",
                           "flipping a bit in 2 % (their checksum fails)", "at most 64 kbit/s"]
    assert Impairment(3000).doing() == []


def test_a_shaper_record_gives_its_impairment():
    assert of_record({"backend": None, "delay_ms": 0}) is None
    rec = {"backend": "netem", "delay_ms": 300, "loss_pct": 10, "jitter_ms": 30, "accepted": {"delay_ms": 300.0}}
    assert of_record(rec) == Impairment(300, jitter_ms=30, loss_pct=10)
    # a record no impairment fits (an edited trace) is read for its delay
    assert of_record({"backend": "nfqueue", "delay_ms": 100, "jitter_ms": 500}) == Impairment(100)
    assert of_record({"backend": "nfqueue", "delay_ms": "x"}) == Impairment(0)
