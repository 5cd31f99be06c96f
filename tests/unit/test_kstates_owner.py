"""Whose socket a tracepoint event is (probe/kstates.py), decoded from raw records as the kernel
writes them: a listener's event is this host's by its task or by its ``skaddr``, and the address
vouches only from the time it became a socket of this host's."""

from __future__ import annotations

import socket
import struct
import time

from probe.kstates import KernelStates, parse_format

# sock/inet_sock_set_state's format file on Linux 6.18 (the fields the decoder reads)
FORMAT = """name: inet_sock_set_state
ID: 2287
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;
"""
CLOSE, SYN_SENT, LISTEN = 7, 2, 10
NC_PID, OTHER_HOSTS_NC = 111, 999
SK = 0xFFFF8880_12345000


def record(pid: int, sk: int, old: int, new: int, saddr: str, sport: int, daddr: str = "0.0.0.0", dport: int = 0):
    return (struct.pack("<HBBiQiiHHHH", 2287, 0, 0, pid, sk, old, new, sport, dport, socket.AF_INET,
                        socket.IPPROTO_TCP)
            + socket.inet_aton(saddr) + socket.inet_aton(daddr) + b"\0" * 32)


def client_probe() -> KernelStates:
    k = KernelStates("raspberrypi", 9090, "10.90.0.2", owned_pids=lambda: {NC_PID})
    ev_id, fmt = parse_format(FORMAT, "sock/inet_sock_set_state")
    k._formats[ev_id], k._kinds[ev_id] = fmt, "state"
    return k


def test_another_hosts_listener_is_not_ours_when_our_next_socket_gets_its_address():
    k = client_probe()
    t0 = time.monotonic_ns()
    # the server's nc ends: its listener closes in the server's nc (not a task of ours): undecided
    assert k._decide([(t0, record(OTHER_HOSTS_NC, SK, LISTEN, CLOSE, "0.0.0.0", 9090))]) == []
    # our next nc connects; the kernel gave its socket the freed listener's memory
    out = k._decide([(t0 + 300_000_000, record(NC_PID, SK, CLOSE, SYN_SENT, "10.90.0.2", 0, "10.90.0.1", 9090))])
    assert [(e["local"], e["to"]) for e in out] == [("10.90.0.2:0", "SYN_SENT")]
    # the listener's event, decided again, is still not ours
    assert k._decide([]) == []


def test_our_listener_stays_ours_by_its_address_whoever_closes_it():
    k = client_probe()
    t0 = time.monotonic_ns()
    out = k._decide([(t0, record(NC_PID, SK, CLOSE, LISTEN, "0.0.0.0", 9090)),
                     (t0 + 1000, record(4242, SK, LISTEN, CLOSE, "0.0.0.0", 9090))])
    assert [(e["local"], e["remote"], e["to"], e["owned"]) for e in out] == [
        ("0.0.0.0:9090", "0.0.0.0:*", "LISTEN", True), ("0.0.0.0:9090", "0.0.0.0:*", "CLOSED", True)]
