import pytest

from tcplab import tcpstates


def test_kernel_numbers_map_to_the_seed_names():
    assert [tcpstates.name(n) for n in (10, 2, 3, 12, 1, 4, 5, 8, 9, 6, 7, 11)] == [
        "LISTEN", "SYN_SENT", "SYN_RECEIVED", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2",
        "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSED", "CLOSING"]


def test_tracepoint_and_netstat_spellings():
    assert tcpstates.name("TCP_SYN_RECV") == "SYN_RECEIVED"
    assert tcpstates.name("TCP_CLOSE") == "CLOSED"
    assert tcpstates.netstat_name("SYN_RECEIVED") == "SYN_RECV"
    assert tcpstates.netstat_name("ESTABLISHED") == "ESTABLISHED"


def test_unknown_states_raise():
    with pytest.raises(ValueError):
        tcpstates.name(99)
    with pytest.raises(ValueError):
        tcpstates.name("HALF_OPEN")
