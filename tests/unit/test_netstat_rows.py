"""netstat -nao rows, timers and state diffs from inet_diag messages (pure parts of probe.sockets)."""

from probe.sockets import diff, row_of, snapshot


class Msg(dict):
    """An inet_diag message as pyroute2 decodes it: fields by key, attributes by get_attr."""

    def __init__(self, attrs=None, **fields):
        base = dict(idiag_state=1, idiag_timer=0, idiag_retrans=0, idiag_src="10.90.0.1", idiag_sport=9090,
                    idiag_dst="10.90.0.2", idiag_dport=40370, idiag_expires=0, idiag_rqueue=0, idiag_wqueue=0)
        base.update(fields)
        super().__init__(base)
        self.attrs = attrs or {}

    def get_attr(self, name):
        return self.attrs.get(name)


def info(retransmits=0, probes=0):
    return {"INET_DIAG_INFO": {"tcpi_retransmits": retransmits, "tcpi_probes": probes}}


LISTENER = Msg(info(), idiag_state=10, idiag_src="0.0.0.0", idiag_dst="0.0.0.0", idiag_dport=0,
               idiag_wqueue=128)


def test_listener_row_is_what_netstat_prints():
    assert row_of(LISTENER) == {"proto": "tcp", "recv_q": 0, "send_q": 0, "local": "0.0.0.0:9090",
                                "foreign": "0.0.0.0:*", "state": "LISTEN", "timer": "off (0.00/0/0)"}


def test_timers_follow_netstat_expires_retransmits_probes():
    syn_recv = Msg(idiag_state=3, idiag_timer=1, idiag_expires=497, idiag_retrans=1)  # request socket
    retrans = Msg(info(retransmits=2), idiag_timer=1, idiag_expires=209, idiag_retrans=2)
    probe0 = Msg(info(probes=3), idiag_timer=4, idiag_expires=2459, idiag_retrans=3)
    keepalive = Msg(info(), idiag_timer=2, idiag_expires=7190019)
    timewait = Msg(idiag_state=6, idiag_timer=3, idiag_expires=59876)
    fin_wait2_tw = Msg(idiag_state=5, idiag_timer=3, idiag_expires=59840)
    assert [row_of(m)["timer"] for m in (syn_recv, retrans, probe0, keepalive, timewait, fin_wait2_tw)] == [
        "on (0.49/1/0)", "on (0.20/2/0)", "probe (2.45/0/3)", "keepalive (7190.01/0/0)",
        "timewait (59.87/0/0)", "timewait (59.84/0/0)"]
    assert [row_of(m)["state"] for m in (syn_recv, timewait, fin_wait2_tw)] == ["SYN_RECV", "TIME_WAIT",
                                                                              "FIN_WAIT2"]


def netstat_fields(row: dict) -> list[str]:
    """A row's columns as netstat prints them (the controller's film renders the rows; the probe only reads)."""
    return [row["proto"], str(row["recv_q"]), str(row["send_q"]), row["local"], row["foreign"], row["state"],
            row["timer"]]


def test_rows_match_real_netstat_lines():
    # Lines captured from `netstat -nao` (net-tools 2.10) in a lab namespace.
    rows = [row_of(LISTENER),
            row_of(Msg(info(), idiag_timer=4, idiag_expires=2459, idiag_wqueue=181528)),
            row_of(Msg(idiag_state=3, idiag_timer=1, idiag_expires=500)),
            row_of(Msg(idiag_src="10.90.0.2", idiag_sport=40370, idiag_dst="10.90.0.1", idiag_dport=9090,
                       idiag_rqueue=118472))]
    assert [netstat_fields(r) for r in rows] == [line.split(None, 6) for line in [
        "tcp        0      0 0.0.0.0:9090            0.0.0.0:*               LISTEN      off (0.00/0/0)",
        "tcp        0 181528 10.90.0.1:9090          10.90.0.2:40370         ESTABLISHED probe (2.45/0/0)",
        "tcp        0      0 10.90.0.1:9090          10.90.0.2:40370         SYN_RECV    on (0.50/0/0)",
        "tcp   118472      0 10.90.0.2:40370         10.90.0.1:9090          ESTABLISHED off (0.00/0/0)",
    ]]


def _snap(*msgs):
    return snapshot(list(msgs), [row_of(m) for m in msgs])


def test_first_seen_sockets_come_from_closed_or_from_the_listener():
    syn_recv = Msg(idiag_state=3, idiag_timer=1)
    changes = diff({}, _snap(LISTENER, syn_recv), 7)
    assert [(c["local"], c["remote"], c["from"], c["to"]) for c in changes] == [
        ("0.0.0.0:9090", "0.0.0.0:*", "CLOSED", "LISTEN"),
        ("10.90.0.1:9090", "10.90.0.2:40370", "LISTEN", "SYN_RECEIVED")]
    assert changes[0] == {"kind": "state", "t_ns": 7, "local": "0.0.0.0:9090", "remote": "0.0.0.0:*",
                          "from": "CLOSED", "to": "LISTEN", "source": "inet_diag"}
    # without a listener (it closed already) a SYN_RECEIVED socket comes from CLOSED
    assert diff({}, _snap(syn_recv), 8)[0]["from"] == "CLOSED"


def test_transitions_and_disappearance():
    conn = ("10.90.0.1:9090", "10.90.0.2:40370")
    known = {conn: "FIN_WAIT2", ("0.0.0.0:9090", "0.0.0.0:*"): "LISTEN"}
    changes = diff(known, _snap(Msg(idiag_state=6, idiag_timer=3)), 9)
    assert [(c["from"], c["to"]) for c in changes] == [("FIN_WAIT2", "TIME_WAIT"), ("LISTEN", "CLOSED")]
    assert diff({conn: "TIME_WAIT"}, {}, 10)[0]["to"] == "CLOSED"
    assert diff({conn: "TIME_WAIT"}, _snap(Msg(idiag_state=6)), 11) == []


def test_kernel_close_state_counts_as_gone():
    assert _snap(Msg(idiag_state=7)) == {}
